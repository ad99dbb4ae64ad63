//! The coordinator under faults, deterministically: two or more proxies over three in-process store
//! nodes, with delays, drops, lease expiry and clock offsets scheduled per link (see `sim/mod.rs`).
//! Each test is one way an acknowledged write could be lost, or a deleted or expired key come back
//! (issue 10, items 1–5), played out step by step in simulated time.

mod sim;

use std::time::Duration;

use sim::{bulk, sleep_ms, Fault, Rule, Sim, SimOptions};
use vesta_proto::Status;
use vesta_proxy::resp::Reply;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn int(n: i64) -> Reply {
    Reply::Int(n)
}

fn is_error(r: &Reply, prefix: &str) -> bool {
    matches!(r, Reply::Error(e) if e.starts_with(prefix))
}

// -------------------------------------------------------------------------------------------------
// Item 1: a commit refused for want of its lease is never followed by a repair with that write.
// -------------------------------------------------------------------------------------------------

/// Proxy A's commits to zones 2 and 3 arrive after A's leases there expired: they are refused
/// (`NoLease`), A's write reaches one replica only and its outcome is unknown. Nothing of A's write may
/// then be installed on zones 2 and 3 by repair: another request may own the key there by now.
#[tokio::test(start_paused = true)]
async fn no_repair_after_a_refused_commit() {
    let mut sim = Sim::new(SimOptions { node_timeout: ms(1_000), ..SimOptions::default() });
    let a = sim.proxy(0);
    assert_eq!(a.run(&["SET", "k", "1"]).await, Reply::OK);
    for zone in [1, 2] {
        a.fault(zone, Rule::on("commit", Fault::DelayRequest(ms(700))).times(1));
    }
    let got = a.run(&["INCRBY", "k", "10"]).await;
    assert!(is_error(&got, "CLUSTERDOWN write outcome unknown"), "{got:?}");
    sleep_ms(2_000).await; // any background repair has long finished
    for zone in [1, 2] {
        let node = sim.node(zone);
        let commits = node.received(0, "commit");
        assert_eq!(commits.last().map(|d| d.status), Some(Status::NoLease), "zone{} commits: {commits:?}", zone + 1);
        let repairs = node.received(0, "repair");
        assert!(repairs.is_empty(), "zone{} got a repair after refusing the commit: {repairs:?}", zone + 1);
    }
}

/// The consequence the rule prevents: A's refused INCRBY, once repaired onto the replicas that refused
/// it, overwrote B's acknowledged INCRBY there (A stamped its write later than B, its clock being
/// ahead). Whatever A's outcome, B's acknowledged increment must survive.
#[tokio::test(start_paused = true)]
async fn a_refused_write_never_overwrites_an_acknowledged_one() {
    let mut sim = Sim::new(SimOptions { node_timeout: ms(1_000), ..SimOptions::default() });
    let a = sim.proxy(5_000);
    let b = sim.proxy(0);
    assert_eq!(b.run(&["SET", "k", "1"]).await, Reply::OK);
    // A's commits to zones 2 and 3 are held in the network past A's leases; B's prepare to zone 1 is
    // slow, so B decides on zones 2 and 3 — which A's write has not reached.
    for zone in [1, 2] {
        a.fault(zone, Rule::on("commit", Fault::DelayRequest(ms(900))).times(1));
    }
    b.fault(0, Rule::on("prepare", Fault::DelayRequest(ms(300))));
    let a_run = tokio::spawn(async move { a.run(&["INCRBY", "k", "10"]).await });
    sleep_ms(650).await; // A's leases on zones 2 and 3 are over
    assert_eq!(b.run(&["INCRBY", "k", "100"]).await, int(101));
    let a_reply = a_run.await.unwrap();
    sleep_ms(2_000).await;
    b.heal(0);
    // B's increment is there whatever became of A's: 101 (A lost) or 111 (A after B), never 11.
    let now = b.run(&["GET", "k"]).await;
    assert!(now == bulk("101") || now == bulk("111"), "A answered {a_reply:?}; GET k = {now:?}");
}

// -------------------------------------------------------------------------------------------------
// Item 2: a coordinator whose leases are (nearly) over does not commit.
// -------------------------------------------------------------------------------------------------

/// The prepare replies of zones 2 and 3 come back after the leases they carry are over (a stalled
/// coordinator sees the same). Committing then is refused by the nodes (outcome unknown at best); the
/// coordinator must abort and start over instead — and succeed.
#[tokio::test(start_paused = true)]
async fn a_late_decision_starts_over() {
    let mut sim = Sim::new(SimOptions { node_timeout: ms(1_000), ..SimOptions::default() });
    let a = sim.proxy(0);
    assert_eq!(a.run(&["SET", "k", "1"]).await, Reply::OK);
    for zone in [1, 2] {
        a.fault(zone, Rule::on("prepare", Fault::DelayReply(ms(650))).times(1));
    }
    a.fault(0, Rule::on("prepare", Fault::DelayReply(ms(650))).times(1));
    assert_eq!(a.run(&["INCR", "k"]).await, int(2));
    assert_eq!(a.run(&["GET", "k"]).await, bulk("2"));
}

/// Replies that leave a lease too little time (but not none) are not committed on either: the lease
/// must outlast the decision by the clock-drift guard, or a later writer could order before this one.
#[tokio::test(start_paused = true)]
async fn a_nearly_expired_lease_is_not_committed_on() {
    let mut sim = Sim::new(SimOptions { node_timeout: ms(1_000), ..SimOptions::default() });
    let a = sim.proxy(0);
    assert_eq!(a.run(&["SET", "k", "1"]).await, Reply::OK);
    for zone in 0..3 {
        a.fault(zone, Rule::on("prepare", Fault::DelayReply(ms(450))).times(1));
    }
    assert_eq!(a.run(&["INCR", "k"]).await, int(2));
    // The first attempt's prepares were aborted everywhere; only the second attempt committed.
    for zone in 0..3 {
        let prepares = sim.node(zone).received(0, "prepare");
        let commits = sim.node(zone).received(0, "commit");
        let first = prepares.iter().rev().nth(1).and_then(|d| d.req).expect("two prepares");
        assert!(commits.iter().all(|c| c.req != Some(first)), "zone{}: the late attempt committed", zone + 1);
    }
}

/// A client pipelines large GETs and an INCR, then does not read its replies for a while: the proxy's
/// connection blocks writing the GET replies. The INCR's two-phase commit must go on meanwhile (it used
/// to be polled by the connection's task, so it sat on its leases until they expired, and was then
/// committed on a stale picture — refused, and repaired over a later writer's acknowledged INCR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_stall_its_commands() {
    use redis_protocol::resp2::decode::decode;
    use redis_protocol::resp2::types::OwnedFrame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Real time here (real sockets): generous per-node timeouts, so that a loaded machine does not turn
    // the big reads into errors.
    let mut sim = Sim::new(SimOptions { node_timeout: ms(2_000), deadline: ms(5_000), ..SimOptions::default() });
    let (addr, slow_side, _stop) = sim.resp_server().await;
    let other = sim.proxy(0);
    let big = "x".repeat(2 << 20);
    assert_eq!(other.run(&["SET", "big", &big]).await, Reply::OK);
    // The INCR's prepare replies come back after the GET replies have filled the socket.
    for zone in 0..3 {
        slow_side.fault(zone, Rule::on("prepare", Fault::DelayReply(ms(50))).key("k"));
    }
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut pipeline = Vec::new();
    const GETS: usize = 48;
    for _ in 0..GETS {
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    pipeline.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n");
    client.write_all(&pipeline).await.unwrap();
    // Not reading, for well over a lease; another proxy increments the same key meanwhile.
    tokio::time::sleep(ms(1_500)).await;
    let theirs = other.run(&["INCR", "k"]).await;
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while replies.len() < GETS + 1 {
        while let Some((frame, used)) = decode(&buf).expect("RESP from the proxy") {
            buf.drain(..used);
            replies.push(frame);
        }
        if replies.len() == GETS + 1 {
            break;
        }
        let mut chunk = vec![0u8; 1 << 20];
        let Ok(read) = tokio::time::timeout_at(deadline, client.read(&mut chunk)).await else {
            panic!("only {} of {} replies", replies.len(), GETS + 1);
        };
        let n = read.unwrap();
        assert!(n > 0, "the proxy closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    let mine = replies.pop().unwrap();
    assert!(
        matches!(mine, OwnedFrame::Integer(1 | 2)),
        "the slow client's INCR answered {mine:?} (the other proxy's {theirs:?})"
    );
    let total = other.run(&["GET", "k"]).await;
    assert_eq!(total, bulk("2"), "both increments count (theirs answered {theirs:?}, mine {mine:?})");
}

// -------------------------------------------------------------------------------------------------
// Item 3: a late prepare's commit never rolls a replica back.
// -------------------------------------------------------------------------------------------------

/// A's prepare to zone 3 is delayed in the network; A commits on zones 1 and 2. Meanwhile B writes on
/// all three. A's prepare then reaches zone 3 and takes its lease after B's commit: committing A's
/// (older) record there would roll zone 3 back.
#[tokio::test(start_paused = true)]
async fn a_late_prepare_does_not_roll_a_replica_back() {
    let mut sim = Sim::new(SimOptions::default());
    let a = sim.proxy(0);
    let b = sim.proxy(0);
    a.fault(2, Rule::on("prepare", Fault::DelayRequest(ms(50))).times(1));
    assert_eq!(a.run(&["SET", "k", "from-a"]).await, Reply::OK);
    sleep_ms(10).await;
    assert_eq!(b.run(&["SET", "k", "from-b"]).await, Reply::OK);
    sleep_ms(500).await;
    let zone3 = sim.node(2).copy("k").await.expect("zone 3 has a copy");
    assert_eq!(&zone3.value[..], b"from-b", "zone 3 was rolled back to an older write");
    assert_eq!(b.run(&["GET", "k"]).await, bulk("from-b"));
}

// -------------------------------------------------------------------------------------------------
// Item 4: expiry and deletion keep their place in the order of copies.
// -------------------------------------------------------------------------------------------------

/// The example: `SET k 5`; zone 3 misses `PEXPIRE k 100`; later a read asks zone 3 and an
/// up-to-date zone. The key must stay expired — and an INCR must start from nothing, not from 5.
#[tokio::test(start_paused = true)]
async fn a_missed_expiry_does_not_bring_the_key_back() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    assert_eq!(p.run(&["SET", "k", "5"]).await, Reply::OK);
    p.cut(2);
    assert_eq!(p.run(&["PEXPIRE", "k", "100"]).await, int(1));
    sleep_ms(300).await;
    // Zone 3 is back, zone 1 away: the read quorum is zones 2 (expired copy) and 3 (stale live copy).
    p.heal(2).cut(0);
    assert_eq!(p.run(&["GET", "k"]).await, Reply::Nil);
    assert_eq!(p.run(&["EXISTS", "k"]).await, int(0));
    p.heal(0);
    assert_eq!(p.run(&["INCR", "k"]).await, int(1), "the expired value came back");
}

/// The same for a delete of a key whose expiry zone 3 also missed: the tombstone must outlive the
/// deleted record's own expiry (it used to live only that long).
#[tokio::test(start_paused = true)]
async fn a_missed_delete_does_not_bring_the_key_back() {
    let mut sim = Sim::new(SimOptions::default());
    let p = sim.proxy(0);
    assert_eq!(p.run(&["SET", "k", "5"]).await, Reply::OK);
    p.cut(2);
    assert_eq!(p.run(&["PEXPIRE", "k", "100"]).await, int(1));
    assert_eq!(p.run(&["DEL", "k"]).await, int(1));
    sleep_ms(300).await;
    p.heal(2).cut(0);
    assert_eq!(p.run(&["GET", "k"]).await, Reply::Nil);
    p.heal(0);
    assert_eq!(p.run(&["INCR", "k"]).await, int(1), "the deleted value came back");
    let zone3 = sim.node(2).copy("k").await;
    assert!(zone3.is_some_and(|r| &r.value[..] == b"1"), "zone 3 still holds the old value");
}

/// An expired copy orders against copies written later by a proxy whose clock is behind: the later
/// write must still be stamped after it. (The old code never showed expired copies, so a later write
/// could be stamped earlier; harmless there, but now that dead copies order copies, a replica that kept
/// the expired copy would win a read repair against the acknowledged write.) Passes on the old code too:
/// it guards the new rule.
#[tokio::test(start_paused = true)]
async fn a_write_after_an_expiry_orders_after_it() {
    let mut sim = Sim::new(SimOptions::default());
    let ahead = sim.proxy(40);
    let behind = sim.proxy(-40);
    assert_eq!(ahead.run(&["SET", "k", "old", "PX", "10"]).await, Reply::OK);
    sleep_ms(60).await; // expired by the stores' clocks; the behind proxy's clock is still before the write
    behind.cut(2); // zone 3 keeps the expired copy
    assert_eq!(behind.run(&["SET", "k", "new"]).await, Reply::OK);
    behind.heal(2).cut(0); // reads meet zone 3's expired copy and one copy of the new write
    assert_eq!(behind.run(&["GET", "k"]).await, bulk("new"));
    assert_eq!(ahead.run(&["GET", "k"]).await, bulk("new"));
}

/// A replica out of service for longer than the grace period serves nothing until rebuilt: the dead
/// copies that would have stopped its stale ones may be purged by now.
#[tokio::test(start_paused = true)]
async fn a_replica_away_longer_than_the_grace_is_refused() {
    let mut sim = Sim::new(SimOptions { grace_ms: 2_000, ..SimOptions::default() });
    let p = sim.proxy(0);
    assert_eq!(p.run(&["SET", "k", "5"]).await, Reply::OK);
    sim.node(2).store.set_in_service(false); // zone 3 in maintenance
    p.cut(2);
    assert_eq!(p.run(&["DEL", "k"]).await, int(1));
    sleep_ms(3_000).await;
    p.heal(2);
    sim.node(2).store.set_in_service(true);
    let why = sim.node(2).store.needs_repair().expect("zone 3 must need a full repair");
    assert!(why.contains("grace"), "{why}");
    // Proxies treat it as down: reads and writes go on with the other two, and never see its copy.
    p.cut(0);
    let got = p.run(&["GET", "k"]).await;
    assert!(got == Reply::Nil || is_error(&got, "CLUSTERDOWN"), "{got:?}");
    p.heal(0);
    assert_eq!(p.run(&["GET", "k"]).await, Reply::Nil);
    assert_eq!(p.run(&["INCR", "k"]).await, int(1));
}

// -------------------------------------------------------------------------------------------------
// Item 5: clocks.
// -------------------------------------------------------------------------------------------------

/// A proxy whose clock runs an hour ahead is refused (with a clear error), and does not drag the
/// timestamps of the other proxies' writes an hour ahead.
#[tokio::test(start_paused = true)]
async fn a_proxy_far_ahead_is_refused_and_drags_nobody() {
    let mut sim = Sim::new(SimOptions::default());
    let ahead = sim.proxy(3_600_000);
    let good = sim.proxy(0);
    assert_eq!(good.run(&["SET", "k", "1"]).await, Reply::OK);
    let got = ahead.run(&["SET", "k", "2"]).await;
    assert!(is_error(&got, "CLUSTERDOWN clock skew"), "{got:?}");
    // Nor does it read: it would judge expiry an hour early.
    let got = ahead.run(&["GET", "k"]).await;
    assert!(is_error(&got, "CLUSTERDOWN clock skew"), "{got:?}");
    assert_eq!(good.run(&["INCR", "k"]).await, int(2));
    let copy = sim.node(0).copy("k").await.expect("a copy");
    let stamped = vesta_proto::hlc_ms(copy.meta.hlc);
    let wall = vesta_proto::clock::Clock::wall_ms(good.clock.as_ref());
    assert!(stamped <= wall + 100, "a write of the accurate proxy is stamped {} ms ahead", stamped - wall);
}

/// A proxy an hour behind finds copies stamped an hour ahead of its clock: following them would pull
/// its timestamps forward by an hour. It refuses instead.
#[tokio::test(start_paused = true)]
async fn a_proxy_far_behind_refuses_to_be_pulled_forward() {
    let mut sim = Sim::new(SimOptions::default());
    let good = sim.proxy(0);
    let behind = sim.proxy(-3_600_000);
    assert_eq!(good.run(&["SET", "k", "1"]).await, Reply::OK);
    let got = behind.run(&["INCR", "k"]).await;
    assert!(is_error(&got, "CLUSTERDOWN clock skew"), "{got:?}");
    // Nor does it read: it would serve keys an hour past their expiry.
    assert_eq!(good.run(&["SET", "t", "v", "PX", "100"]).await, Reply::OK);
    sleep_ms(200).await;
    let got = behind.run(&["GET", "t"]).await;
    assert!(is_error(&got, "CLUSTERDOWN clock skew"), "{got:?}");
    assert_eq!(good.run(&["GET", "k"]).await, bulk("1"));
}

/// Offsets within the bound (`max_clock_drift_ms` is the most any two clocks may differ) are fine.
#[tokio::test(start_paused = true)]
async fn small_offsets_are_fine() {
    let mut sim = Sim::new(SimOptions::default());
    let a = sim.proxy(45);
    let b = sim.proxy(-45);
    for i in 0..10 {
        let p = if i % 2 == 0 { &a } else { &b };
        assert_eq!(p.run(&["INCR", "c"]).await, int(i + 1));
    }
}
