//! Installing copies made in another site (cross-site replication's apply rule, issue 11) through the
//! coordinator's two-phase commit, on the deterministic cluster of `sim/`: a copy is installed only if
//! newer by the order of copies than every copy of a write quorum — dead ones included — keeps its HLC,
//! origin and writer, is idempotent, and never interleaves with local writes to the key.

mod sim;

use bytes::Bytes;
use sim::{bulk, sleep_ms, Sim, SimOptions, SimProxy, NS};
use vesta_proto::clock::Clock;
use vesta_proto::record::HLC_LOGICAL_BITS;
use vesta_proto::{Flags, Meta, Record, RequestId};
use vesta_proxy::resp::Reply;

/// A copy written in site 2, stamped `ms_from_now` from `p`'s clock.
fn remote(p: &SimProxy, value: &str, ms_from_now: i64, writer: u128) -> Record {
    let wall = p.clock.wall_ms().saturating_add_signed(ms_from_now);
    let meta = Meta {
        version: 1,
        created_at: wall,
        expires_at: 0,
        hlc: wall << HLC_LOGICAL_BITS,
        origin: 2,
        last_writer: RequestId(writer),
        flags: Flags::default(),
        key_id: 0,
    };
    Record::new(meta, Bytes::copy_from_slice(value.as_bytes()))
}

fn tombstone(p: &SimProxy, ms_from_now: i64, writer: u128) -> Record {
    let mut r = remote(p, "", ms_from_now, writer);
    r.meta.flags = Flags::default().with(Flags::TOMBSTONE);
    r.meta.expires_at = r.meta.created_at;
    r
}

async fn install(p: &SimProxy, key: &str, record: &Record) -> bool {
    let key = Bytes::copy_from_slice(key.as_bytes());
    p.coordinator.install_copy(&Bytes::from_static(NS), &key, record.clone()).await.expect("install")
}

/// Every replica's copy of `key` (after background commits and repairs have landed).
async fn copies(sim: &Sim, key: &str) -> Vec<Option<Record>> {
    sleep_ms(50).await;
    let mut out = Vec::new();
    for node in &sim.nodes {
        out.push(node.copy(key).await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_newer_copy_is_installed_on_every_replica_as_it_was_made() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    assert_eq!(p.run(&["SET", "k", "local"]).await, Reply::OK);
    sleep_ms(10).await;
    let copy = remote(&p, "from site 2", 0, 77);
    assert!(install(&p, "k", &copy).await);
    assert_eq!(p.run(&["GET", "k"]).await, bulk("from site 2"));
    for (zone, c) in copies(&sim, "k").await.into_iter().enumerate() {
        let c = c.unwrap_or_else(|| panic!("zone {zone} has no copy"));
        assert_eq!(c.meta.order(), copy.meta.order(), "zone {zone}: HLC, origin and writer kept");
        assert_eq!(c.value, copy.value);
    }
    // A later local write orders after it.
    assert_eq!(p.run(&["INCR", "n"]).await, Reply::Int(1));
    assert_eq!(p.run(&["SET", "k", "later"]).await, Reply::OK);
    assert_eq!(p.run(&["GET", "k"]).await, bulk("later"));
}

#[tokio::test(start_paused = true)]
async fn an_older_copy_changes_nothing_and_a_replay_neither() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    let copy = remote(&p, "v1", 0, 1);
    assert!(install(&p, "k", &copy).await);
    let before = copies(&sim, "k").await;
    assert!(!install(&p, "k", &copy).await, "the same copy again: already there");
    assert_eq!(copies(&sim, "k").await, before, "a replay changes nothing");
    sleep_ms(10).await;
    assert_eq!(p.run(&["SET", "k", "local"]).await, Reply::OK);
    assert!(!install(&p, "k", &remote(&p, "stale", -1_000, 2)).await, "older than the local write");
    assert_eq!(p.run(&["GET", "k"]).await, bulk("local"));
}

/// A DEL in one site and an older SET in another converge to deleted, whichever arrives first.
#[tokio::test(start_paused = true)]
async fn a_delete_and_an_older_set_converge_to_deleted() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    let older_set = remote(&p, "v", -50, 1);
    let delete = tombstone(&p, 0, 2);
    assert!(install(&p, "a", &delete).await);
    assert!(!install(&p, "a", &older_set).await);
    assert!(install(&p, "b", &older_set).await);
    assert!(install(&p, "b", &delete).await);
    for key in ["a", "b"] {
        assert_eq!(p.run(&["GET", key]).await, Reply::Nil, "{key}");
        for c in copies(&sim, key).await {
            assert!(c.is_some_and(|c| c.meta.flags.tombstone()), "{key}: every replica holds the tombstone");
        }
    }
}

/// A local key that expired keeps its place: a copy from another site stamped before that write does
/// not bring the key back.
#[tokio::test(start_paused = true)]
async fn an_expired_key_does_not_come_back_through_an_older_copy() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    let older = remote(&p, "old", -10, 5);
    assert_eq!(p.run(&["SET", "k", "v", "PX", "100"]).await, Reply::OK);
    sleep_ms(200).await;
    assert!(!install(&p, "k", &older).await);
    assert_eq!(p.run(&["GET", "k"]).await, Reply::Nil);
}

/// Installs and local writes to one key, from two proxies at once: they take turns under the leases,
/// and every replica ends with the same copy, the newest by the order of copies.
#[tokio::test(start_paused = true)]
async fn installs_and_local_writes_to_one_key_converge() {
    let mut sim = Sim::new(SimOptions::default());
    let local = sim.proxy(0);
    let receiver = sim.proxy(0);
    for round in 0..20u128 {
        let copy = remote(&receiver, &format!("r{round}"), (round as i64 % 3) - 1, 100 + round);
        let (installed, incr) = tokio::join!(install(&receiver, "k", &copy), local.run(&["SET", "k", "l"]));
        assert!(matches!(incr, Reply::Status(_)), "round {round}: {incr:?}");
        let _ = installed;
        let all = copies(&sim, "k").await;
        let orders: Vec<_> = all.iter().map(|c| c.as_ref().map(|c| c.meta.order())).collect();
        assert!(orders.windows(2).all(|w| w[0] == w[1]), "round {round}: replicas differ: {orders:?}");
        sleep_ms(5).await;
    }
}

/// The local copy of `key` (zone 0), which must be a counter.
async fn local_counter(sim: &Sim, key: &str) -> (Record, vesta_proto::counter::Counter) {
    let copy = copies(sim, key).await.remove(0).expect("a copy");
    let counter = copy.counter.as_deref().cloned().expect("a counter");
    (copy, counter)
}

/// A counter copy made in site 2 on `start` (a counter's reset and base), with site 2's contribution
/// `by` at `version`, stamped `ms_from_now`.
fn remote_counter(
    p: &SimProxy,
    start: &vesta_proto::counter::Counter,
    by: i64,
    version: u64,
    ms_from_now: i64,
    writer: u128,
) -> Record {
    let mut c = vesta_proto::counter::Counter::on(start.reset, start.base.clone());
    for _ in 0..version {
        c.add(2, 0, 0.0);
    }
    c.add(2, by, 0.0);
    if let Some(last) = c.sites.last_mut() {
        last.version = version;
    }
    let mut r = remote(p, "", ms_from_now, writer);
    r.value = c.total(|f| f.to_string()).expect("a number");
    r.counter = Some(Box::new(c));
    r
}

#[tokio::test(start_paused = true)]
async fn counter_copies_of_two_sites_on_the_same_start_add_up() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    assert_eq!(p.run(&["SET", "c", "10"]).await, Reply::OK);
    assert_eq!(p.run(&["INCRBY", "c", "5"]).await, Reply::Int(15));
    let (_, start) = local_counter(&sim, "c").await;
    assert_eq!((start.base.as_ref(), start.sites.len()), (&b"10"[..], 1), "{start:?}");

    // Site 2 incremented concurrently; its copy is older than ours: merged, and committed with a fresh
    // stamp over ours.
    let theirs = remote_counter(&p, &start, 7, 1, -5, 91);
    assert!(install(&p, "c", &theirs).await);
    assert_eq!(p.run(&["GET", "c"]).await, bulk("22"));
    assert!(!install(&p, "c", &theirs).await, "the same copy again: nothing new");
    let (merged, _) = local_counter(&sim, "c").await;
    assert_eq!(merged.meta.origin, 2, "a merge keeps the incoming origin: not logged here, never sent on");

    // A newer copy of site 2 (it incremented again): installed with every contribution.
    let newer = remote_counter(&p, &start, 9, 2, 20, 92);
    assert!(install(&p, "c", &newer).await);
    assert_eq!(p.run(&["GET", "c"]).await, bulk("24"));
    // An older version of site 2's contribution changes nothing.
    assert!(!install(&p, "c", &remote_counter(&p, &start, 7, 1, 30, 93)).await);
    assert_eq!(p.run(&["INCR", "c"]).await, Reply::Int(25), "this site's increments go on adding");
    for (zone, c) in copies(&sim, "c").await.into_iter().enumerate() {
        assert_eq!(c.map(|c| c.value), Some(Bytes::from_static(b"25")), "zone {zone}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reset_and_concurrent_increments_resolve_by_the_order_of_copies() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    assert_eq!(p.run(&["SET", "c", "10"]).await, Reply::OK);
    assert_eq!(p.run(&["INCR", "c"]).await, Reply::Int(11));
    let (_, start) = local_counter(&sim, "c").await;
    sleep_ms(10).await;

    // A SET in site 2, newer than our increment: a reset, installed whole.
    let reset = remote(&p, "100", 0, 50);
    assert!(install(&p, "c", &reset).await);
    assert_eq!(p.run(&["GET", "c"]).await, bulk("100"));
    assert!(copies(&sim, "c").await[0].as_ref().is_some_and(|c| c.counter.is_none()), "a plain value again");

    // Site 2's increments on the old start, stamped before that reset (50 ms have passed reading the
    // copies): lost to it.
    assert!(!install(&p, "c", &remote_counter(&p, &start, 3, 1, -100, 51)).await);
    assert_eq!(p.run(&["GET", "c"]).await, bulk("100"));
    // Stamped after it: they win whole (the concurrent reset is lost, as any concurrent write).
    assert!(install(&p, "c", &remote_counter(&p, &start, 3, 1, 10, 52)).await);
    assert_eq!(p.run(&["GET", "c"]).await, bulk("13"));

    // An increment after the reset builds on it, and a DEL is a reset too.
    assert_eq!(p.run(&["DEL", "c"]).await, Reply::Int(1));
    assert_eq!(p.run(&["INCRBY", "c", "4"]).await, Reply::Int(4));
    let (_, after_del) = local_counter(&sim, "c").await;
    assert!(after_del.reset > start.reset && after_del.base.is_empty(), "{after_del:?}");
}

#[tokio::test(start_paused = true)]
async fn increments_of_one_transaction_add_up_and_expiry_keeps_the_counter() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    assert_eq!(p.run(&["INCRBY", "c", "2"]).await, Reply::Int(2));
    assert_eq!(p.run(&["PEXPIRE", "c", "600000"]).await, Reply::Int(1));
    assert_eq!(p.run(&["INCRBY", "c", "3"]).await, Reply::Int(5));
    let (copy, counter) = local_counter(&sim, "c").await;
    assert!(copy.meta.expires_at > 0);
    assert_eq!((counter.sites[0].int, counter.sites[0].version), (5, 2), "{counter:?}");
    assert_eq!(p.run(&["APPEND", "c", "0"]).await, Reply::Int(2));
    assert!(copies(&sim, "c").await[0].as_ref().is_some_and(|c| c.counter.is_none()), "APPEND: a plain value");
}
