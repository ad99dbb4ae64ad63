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
    Record { meta, value: Bytes::copy_from_slice(value.as_bytes()) }
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
