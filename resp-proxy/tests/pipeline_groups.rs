//! A pipeline's single-key commands as groups. Writes (`Coordinator::write_group`): one batch of
//! prepares and one of commits per store node, each write still answered — and stored — as if it had
//! run alone, under the faults of `coordinator_faults.rs`: a slow or dead node, a key another write
//! holds, a key contended by another proxy, commits that go unanswered. Reads
//! (`Coordinator::read_group`): one batch per replica asked; a key whose replicas disagree is settled
//! (read alone, repaired) before it is answered.

mod sim;

use std::time::Duration;

use sim::{bulk, sleep_ms, Fault, Rule, Sim, SimOptions};
use vesta_proto::Status;
use vesta_proxy::resp::Reply;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn is_error(r: &Reply, prefix: &str) -> bool {
    matches!(r, Reply::Error(e) if e.starts_with(prefix))
}

/// Requests of `op` that reached `zone` from proxy 0 inside batches.
fn batched(sim: &Sim, zone: usize, op: &str) -> usize {
    sim.node(zone).received(0, op).iter().filter(|d| d.batched).count()
}

#[tokio::test(start_paused = true)]
async fn a_group_is_one_batch_of_prepares_and_one_of_commits_per_node() {
    let mut sim = Sim::new(SimOptions::default());
    let a = sim.proxy(0);
    assert_eq!(a.run(&["SET", "n", "41"]).await, Reply::OK);
    assert_eq!(a.run(&["SET", "s", "text"]).await, Reply::OK);
    let replies = a
        .run_group(&[
            &["SET", "a", "1"],
            &["INCR", "n"],
            &["SET", "b", "2", "NX"],
            &["INCR", "s"],
            &["GETSET", "a2", "x"],
            &["SET", "s2", "v", "XX"],
        ])
        .await;
    assert_eq!(
        replies,
        vec![
            Reply::OK,
            Reply::Int(42),
            Reply::OK,
            Reply::error("ERR value is not an integer or out of range"),
            Reply::Nil,
            Reply::Nil,
        ]
    );
    sleep_ms(100).await; // the third replica's late batch has been settled
    for zone in 0..3 {
        let batches = sim.node(zone).received(0, "batch");
        assert_eq!(batches.len(), 2, "zone{}: one batch per phase: {batches:?}", zone + 1);
        assert_eq!(batched(&sim, zone, "prepare"), 6, "zone{}", zone + 1);
        // Four writes commit; INCR on text and SET XX on nothing write nothing and abort.
        assert_eq!(batched(&sim, zone, "commit"), 4, "zone{}", zone + 1);
        assert_eq!(batched(&sim, zone, "abort"), 2, "zone{}", zone + 1);
        // Every replica holds every write, the late one included.
        assert_eq!(sim.node(zone).copy("n").await.map(|r| r.value), Some("42".into()), "zone{}", zone + 1);
        assert_eq!(sim.node(zone).copy("a2").await.map(|r| r.value), Some("x".into()), "zone{}", zone + 1);
    }
    assert_eq!(a.run(&["GET", "a"]).await, bulk("1"));
    assert_eq!(a.run(&["GET", "b"]).await, bulk("2"));
    assert_eq!(a.run(&["EXISTS", "s2"]).await, Reply::Int(0));
}

/// With one zone cut off, the group commits on the two others at once: it waits for W leases per
/// write, not for the dead node's timeout.
#[tokio::test(start_paused = true)]
async fn a_dead_node_does_not_hold_the_group() {
    let mut sim = Sim::new(SimOptions { node_timeout: ms(1_000), ..SimOptions::default() });
    let a = sim.proxy(0);
    a.cut(2);
    let started = tokio::time::Instant::now();
    let replies = a.run_group(&[&["SET", "a", "1"], &["INCRBY", "b", "5"], &["SET", "c", "3"]]).await;
    assert_eq!(replies, vec![Reply::OK, Reply::Int(5), Reply::OK]);
    assert!(started.elapsed() < ms(1_000), "the group waited for the dead node: {:?}", started.elapsed());
    a.heal(2);
    assert_eq!(a.run(&["GET", "b"]).await, bulk("5"));
}

/// A write whose key another write of this proxy holds goes alone, after it; the rest of the group does
/// not wait for it.
#[tokio::test(start_paused = true)]
async fn a_write_on_a_held_key_goes_alone_after_the_holder() {
    let mut sim = Sim::new(SimOptions { node_timeout: ms(1_000), ..SimOptions::default() });
    let a = sim.proxy(0);
    // The first INCR's prepares are slow: it holds the key's turn meanwhile.
    for zone in 0..3 {
        a.fault(zone, Rule::on("prepare", Fault::DelayRequest(ms(200))).key("k").times(1));
    }
    let a = std::sync::Arc::new(a);
    let first = {
        let a = a.clone();
        tokio::spawn(async move { a.run(&["INCR", "k"]).await })
    };
    sleep_ms(10).await;
    let started = tokio::time::Instant::now();
    let replies = a.run_group(&[&["SET", "x", "1"], &["INCR", "k"], &["SET", "y", "2"]]).await;
    assert_eq!(first.await.unwrap(), Reply::Int(1));
    assert_eq!(replies, vec![Reply::OK, Reply::Int(2), Reply::OK], "the INCR after the held one sees it");
    assert!(started.elapsed() >= ms(150), "k's INCR waited for the holder");
    // x and y went as a group of two, in batches; k's INCR alone.
    assert_eq!(batched(&sim, 0, "prepare"), 2);
    assert_eq!(a.run(&["GET", "k"]).await, bulk("2"));
}

/// Another proxy holds leases on one key of the group: that write finds it locked, retries alone and
/// lands after the other proxy's; the others commit in the group.
#[tokio::test(start_paused = true)]
async fn a_contended_write_retries_alone_and_the_others_commit() {
    let mut sim = Sim::new(SimOptions::default());
    let a = sim.proxy(0);
    let b = sim.proxy(0);
    assert_eq!(b.run(&["SET", "k", "10"]).await, Reply::OK);
    // B's commits of k are held back: B sits on k's leases meanwhile.
    for zone in 0..3 {
        b.fault(zone, Rule::on("commit", Fault::DelayRequest(ms(100))).key("k").times(1));
    }
    let b_write = tokio::spawn(async move { b.run(&["INCRBY", "k", "5"]).await });
    sleep_ms(10).await;
    let replies = a.run_group(&[&["INCR", "k"], &["SET", "x", "1"], &["SET", "y", "2"]]).await;
    assert_eq!(b_write.await.unwrap(), Reply::Int(15));
    assert_eq!(replies, vec![Reply::Int(16), Reply::OK, Reply::OK]);
    let locked = (0..3)
        .flat_map(|z| sim.node(z).received(0, "prepare"))
        .filter(|d| d.key.as_deref() == Some(b"k".as_slice()) && d.status == Status::Locked)
        .count();
    assert!(locked >= 2, "A's first prepare of k found B's lease");
    assert_eq!(a.run(&["GET", "k"]).await, bulk("16"));
}

/// Commit batches that go unanswered on two zones: no write of the group can be confirmed on a write
/// quorum, and each says its outcome is unknown (never that nothing was written).
#[tokio::test(start_paused = true)]
async fn commits_unanswered_leave_every_outcome_unknown() {
    let mut sim = Sim::new(SimOptions { node_timeout: ms(500), deadline: ms(2_000), ..SimOptions::default() });
    let a = sim.proxy(0);
    // The second batch to each zone is the commits' (the first the prepares').
    for zone in [1, 2] {
        a.fault(zone, Rule::on("batch", Fault::DelayRequest(ms(0))).times(1));
        a.fault(zone, Rule::on("batch", Fault::DropReply));
    }
    a.fault(0, Rule::on("batch", Fault::DelayRequest(ms(5))));
    let replies = a.run_group(&[&["SET", "a", "1"], &["SET", "b", "2"]]).await;
    for reply in &replies {
        assert!(is_error(reply, "CLUSTERDOWN write outcome unknown"), "{replies:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_group_of_reads_is_one_batch_per_replica_asked() {
    let mut sim = Sim::new(SimOptions::default());
    let a = sim.proxy(0);
    assert_eq!(a.run(&["SET", "a", "1"]).await, Reply::OK);
    assert_eq!(a.run(&["SET", "gone", "x", "PX", "50"]).await, Reply::OK);
    assert_eq!(a.run(&["SET", "d", "4"]).await, Reply::OK);
    assert_eq!(a.run(&["DEL", "d"]).await, Reply::Int(1));
    sleep_ms(100).await; // "gone" expired
    let replies = a
        .run_read_group(&[&["GET", "a"], &["GET", "gone"], &["STRLEN", "a"], &["EXISTS", "d"], &["GET", "none"]])
        .await;
    assert_eq!(replies, vec![bulk("1"), Reply::Nil, Reply::Int(1), Reply::Int(0), Reply::Nil]);
    // R = 2 replicas asked, one batch each; nobody read a key alone.
    let batches: usize = (0..3).map(|z| sim.node(z).received(0, "batch").len()).sum();
    assert_eq!(batches, 2);
    let alone: usize = (0..3).map(|z| sim.node(z).received(0, "read").iter().filter(|d| !d.batched).count()).sum();
    assert_eq!(alone, 0);
}

/// A replica missed a write: where the group's replicas disagree on a key, it is read alone, which
/// writes the newest copy back before answering it — a later read, whichever replicas it asks, sees it.
#[tokio::test(start_paused = true)]
async fn a_key_whose_replicas_disagree_is_settled_before_it_is_answered() {
    let mut sim = Sim::new(SimOptions::default());
    let a = sim.proxy(0);
    assert_eq!(a.run(&["SET", "k", "old"]).await, Reply::OK);
    sleep_ms(100).await; // every replica holds "old"
    a.cut(2);
    assert_eq!(a.run(&["SET", "k", "new"]).await, Reply::OK);
    a.heal(2);
    // Whichever two replicas a read asks, at least one holds "new"; the group reads each key from the
    // same two, so run it until it has asked zone 3 (which holds "old") for k.
    for _ in 0..20 {
        let replies = a.run_read_group(&[&["GET", "k"], &["GET", "other"]]).await;
        assert_eq!(replies, vec![bulk("new"), Reply::Nil]);
        if sim.node(2).copy("k").await.map(|r| r.value) == Some("new".into()) {
            break;
        }
    }
    assert_eq!(sim.node(2).copy("k").await.map(|r| r.value), Some("new".into()), "zone 3 was repaired");
    for zone in 0..3 {
        assert_eq!(sim.node(zone).copy("k").await.map(|r| r.value), Some("new".into()), "zone{}", zone + 1);
    }
}
