//! MULTI/EXEC/WATCH and Redis 8.4 compare-and-set on a real three-zone cluster (3 × `vesta store` +
//! `vesta proxy`), including the two 50-client increment loops: whatever the interleaving, the counter
//! ends at exactly the number of updates that reported success.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::{bulk, call, error_text, int, simple, text};
use redis::Value;

const CLIENTS: usize = 50;
/// Attempts per client: bounded, so the test ends whatever the contention.
const ATTEMPTS: usize = 20;

/// A retryable error raised before any commit was sent (so nothing was applied). "Outcome unknown" is
/// not one: a healthy cluster must never produce it, and it would make the count ambiguous.
fn before_commit(v: &Value) -> bool {
    common::is_retryable_error(v) && !error_text(v).unwrap_or_default().contains("outcome unknown")
}

fn as_int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => text(other).parse().unwrap_or_else(|_| panic!("not a number: {other:?}")),
    }
}

#[tokio::test]
async fn multi_exec_queues_and_applies_in_order() {
    let cluster = common::shared_cluster();
    let mut c = cluster.conn(false).await;
    assert_eq!(call(&mut c, &["MULTI"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SET", "tx:a", "1"]).await, simple("QUEUED"));
    assert_eq!(call(&mut c, &["INCRBY", "tx:a", "41"]).await, simple("QUEUED"));
    assert_eq!(call(&mut c, &["RENAME", "tx:a", "tx:b"]).await, simple("QUEUED"));
    assert_eq!(call(&mut c, &["GET", "tx:b"]).await, simple("QUEUED"));
    // A run-time error is that command's reply; the others still apply (no rollback, as in Redis).
    assert_eq!(call(&mut c, &["INCR", "tx:missing-then-text"]).await, simple("QUEUED"));
    assert_eq!(call(&mut c, &["APPEND", "tx:missing-then-text", "x"]).await, simple("QUEUED"));
    assert_eq!(call(&mut c, &["INCR", "tx:missing-then-text"]).await, simple("QUEUED"));
    let Value::Array(replies) = call(&mut c, &["EXEC"]).await else { panic!("EXEC array") };
    assert_eq!(replies[..6], [Value::Okay, int(42), Value::Okay, bulk("42"), int(1), int(2)]);
    assert_eq!(error_text(&replies[6]).as_deref(), Some("ERR value is not an integer or out of range"));
    assert_eq!(call(&mut c, &["EXISTS", "tx:a"]).await, int(0));
    assert_eq!(call(&mut c, &["GET", "tx:missing-then-text"]).await, bulk("1x"));
}

#[tokio::test]
async fn queue_time_errors_abort_and_discard_forgets() {
    let cluster = common::shared_cluster();
    let mut c = cluster.conn(false).await;
    call(&mut c, &["MULTI"]).await;
    call(&mut c, &["SET", "txa:k", "v"]).await;
    let unknown = call(&mut c, &["NOSUCHCOMMAND"]).await;
    assert!(error_text(&unknown).unwrap().starts_with("ERR unknown command 'NOSUCHCOMMAND'"));
    let exec = call(&mut c, &["EXEC"]).await;
    assert_eq!(error_text(&exec).as_deref(), Some("EXECABORT Transaction discarded because of previous errors."));
    assert_eq!(call(&mut c, &["EXISTS", "txa:k"]).await, int(0), "nothing of an aborted transaction applies");

    call(&mut c, &["MULTI"]).await;
    call(&mut c, &["SET", "txa:k", "v"]).await;
    assert_eq!(call(&mut c, &["DISCARD"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["EXISTS", "txa:k"]).await, int(0));
    assert_eq!(error_text(&call(&mut c, &["EXEC"]).await).as_deref(), Some("ERR EXEC without MULTI"));
}

#[tokio::test]
async fn watch_fails_exec_after_another_client_writes() {
    let cluster = common::shared_cluster();
    let (mut a, mut b) = (cluster.conn(false).await, cluster.conn(true).await);
    call(&mut a, &["SET", "txw:k", "1"]).await;
    call(&mut a, &["WATCH", "txw:k"]).await;
    call(&mut b, &["SET", "txw:k", "2"]).await;
    call(&mut a, &["MULTI"]).await;
    call(&mut a, &["SET", "txw:k", "3"]).await;
    assert_eq!(call(&mut a, &["EXEC"]).await, Value::Nil, "a watched key changed: EXEC answers nil");
    assert_eq!(call(&mut a, &["GET", "txw:k"]).await, bulk("2"));

    // A delete is a change too; an untouched watch lets EXEC through; UNWATCH forgets.
    call(&mut a, &["WATCH", "txw:k"]).await;
    call(&mut b, &["DEL", "txw:k"]).await;
    call(&mut a, &["MULTI"]).await;
    call(&mut a, &["SET", "txw:k", "4"]).await;
    assert_eq!(call(&mut a, &["EXEC"]).await, Value::Nil);
    call(&mut a, &["WATCH", "txw:k", "txw:never"]).await;
    call(&mut a, &["MULTI"]).await;
    call(&mut a, &["SET", "txw:k", "5"]).await;
    assert_eq!(call(&mut a, &["EXEC"]).await, Value::Array(vec![Value::Okay]));
    call(&mut a, &["WATCH", "txw:k"]).await;
    call(&mut b, &["SET", "txw:k", "6"]).await;
    call(&mut a, &["UNWATCH"]).await;
    call(&mut a, &["MULTI"]).await;
    call(&mut a, &["SET", "txw:k", "7"]).await;
    assert_eq!(call(&mut a, &["EXEC"]).await, Value::Array(vec![Value::Okay]));
}

#[tokio::test]
async fn compare_and_set_commands() {
    let cluster = common::shared_cluster();
    let mut c = cluster.conn(false).await;
    call(&mut c, &["SET", "cas:k", "v1"]).await;
    assert_eq!(call(&mut c, &["SET", "cas:k", "v2", "IFEQ", "v1"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SET", "cas:k", "v3", "IFEQ", "v1"]).await, Value::Nil);
    assert_eq!(call(&mut c, &["SET", "cas:k", "v3", "IFNE", "v2"]).await, Value::Nil);
    assert_eq!(call(&mut c, &["SET", "cas:k", "v3", "IFNE", "zzz", "GET"]).await, bulk("v2"));
    assert_eq!(call(&mut c, &["SET", "cas:absent", "x", "IFEQ", "v"]).await, Value::Nil, "IFEQ never creates");
    assert_eq!(call(&mut c, &["SET", "cas:absent2", "x", "IFNE", "v"]).await, Value::Okay, "IFNE creates");
    let digest = text(&call(&mut c, &["DIGEST", "cas:k"]).await);
    assert_eq!(digest.len(), 16);
    assert_eq!(call(&mut c, &["SET", "cas:k", "v4", "IFDEQ", &digest.to_uppercase()]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SET", "cas:k", "v5", "IFDNE", &digest]).await, Value::Okay);
    assert_eq!(call(&mut c, &["DIGEST", "cas:nothing"]).await, Value::Nil);
    call(&mut c, &["SET", "cas:d", "Hello world"]).await;
    assert_eq!(call(&mut c, &["DIGEST", "cas:d"]).await, bulk("b6acb9d84a38ff74"));
    assert_eq!(call(&mut c, &["DELEX", "cas:d", "IFEQ", "nope"]).await, int(0));
    assert_eq!(call(&mut c, &["DELEX", "cas:d", "IFDEQ", "b6acb9d84a38ff74"]).await, int(1));
    assert_eq!(call(&mut c, &["DELEX", "cas:d"]).await, int(0));
    let syntax = call(&mut c, &["SET", "cas:k", "x", "IFEQ", "a", "NX"]).await;
    assert_eq!(error_text(&syntax).as_deref(), Some("ERR syntax error"));

    assert_eq!(call(&mut c, &["MSETEX", "2", "cas:m1", "a", "cas:m2", "b", "NX", "PX", "60000"]).await, int(1));
    assert_eq!(call(&mut c, &["MSETEX", "2", "cas:m1", "a", "cas:m3", "b", "NX"]).await, int(0));
    assert_eq!(call(&mut c, &["EXISTS", "cas:m3"]).await, int(0), "all keys or none");
    assert!(as_int(&call(&mut c, &["PTTL", "cas:m2"]).await) > 0);
    assert_eq!(call(&mut c, &["MSETEX", "1", "cas:m2", "c", "XX", "KEEPTTL"]).await, int(1));
    assert!(as_int(&call(&mut c, &["PTTL", "cas:m2"]).await) > 0, "KEEPTTL keeps it");
    let bad = call(&mut c, &["MSETEX", "3", "cas:m1", "a"]).await;
    assert!(error_text(&bad).is_some());
}

/// How a client of the increment loops tries one update.
#[derive(Clone, Copy, Debug)]
enum Update {
    /// WATCH / GET / MULTI / SET / EXEC: an array means applied, nil means not.
    Watch,
    /// GET, then `SET key new IFEQ old`: OK means applied, nil means not.
    IfEq,
}

/// One attempt; whether it applied. Any reply other than "applied" / "not applied" fails the test.
async fn try_update(c: &mut redis::aio::MultiplexedConnection, key: &str, how: Update) -> bool {
    let reply = match how {
        Update::Watch => {
            call(c, &["WATCH", key]).await;
            let current = as_int(&call(c, &["GET", key]).await);
            call(c, &["MULTI"]).await;
            call(c, &["SET", key, &(current + 1).to_string()]).await;
            call(c, &["EXEC"]).await
        }
        Update::IfEq => {
            let current = text(&call(c, &["GET", key]).await);
            let next = (current.parse::<i64>().expect("counter") + 1).to_string();
            call(c, &["SET", key, &next, "IFEQ", &current]).await
        }
    };
    match reply {
        Value::Array(r) if r == vec![Value::Okay] => true,
        Value::Okay => true,
        Value::Nil => false,
        // Contention past the deadline, before the commit phase: nothing applied.
        other if before_commit(&other) => false,
        other => panic!("{how:?} update answered {other:?}"),
    }
}

/// 50 clients, each on its own connection (half RESP2, half RESP3), spread over two proxies, increment
/// one counter; it must end at exactly the number of updates that reported success.
async fn fifty_clients_increment(key: &'static str, how: Update) {
    let cluster = common::shared_cluster();
    assert!(cluster.proxy_count() >= 2, "the clients must meet on the store leases, not in one proxy's queue");
    call(&mut cluster.conn(false).await, &["SET", key, "0"]).await;
    let successes = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (addr, successes) = (cluster.proxy_addr_for(i), successes.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = common::connect(addr, i % 2 == 1).await;
            for _ in 0..ATTEMPTS {
                if try_update(&mut c, key, how).await {
                    successes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let final_value = as_int(&call(&mut common::connect(cluster.proxy_addr_for(1), false).await, &["GET", key]).await);
    let successes = successes.load(Ordering::Relaxed);
    eprintln!("{how:?} loop: {successes} of {} updates applied", CLIENTS * ATTEMPTS);
    assert!(successes > 0, "no update succeeded");
    assert_eq!(final_value, successes, "the counter must equal the number of successful updates");
}

#[tokio::test]
async fn fifty_clients_watch_increment_loop_counts_exactly() {
    fifty_clients_increment("loop:watch", Update::Watch).await;
}

#[tokio::test]
async fn fifty_clients_ifeq_increment_loop_counts_exactly() {
    fifty_clients_increment("loop:ifeq", Update::IfEq).await;
}

/// A multi-key write with one zone down still commits (W = 2 of 3), and every replica that took part
/// holds all of its keys, written with one HLC; the returning zone is repaired.
#[tokio::test]
async fn multi_key_write_survives_a_zone_and_lands_whole_on_each_replica() {
    let mut cluster = common::Cluster::start();
    cluster.kill_store(2);
    let mut c = cluster.conn(false).await;
    assert_eq!(call(&mut c, &["MSET", "{acct}:a", "1", "{acct}:b", "2", "{acct}:c", "3"]).await, Value::Okay);
    for store in 0..2 {
        let mut hlcs = Vec::new();
        for key in ["{acct}:a", "{acct}:b", "{acct}:c"] {
            let record = cluster.read_store(store, key.as_bytes()).await.expect("read store").expect("present");
            hlcs.push(record.meta.hlc);
        }
        assert!(hlcs.windows(2).all(|w| w[0] == w[1]), "one transaction, one HLC: {hlcs:?}");
    }
    cluster.restart_store(2);
    // Reads that meet the stale zone write the newest copy back; keep reading until it has all keys.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        call(&mut c, &["MGET", "{acct}:a", "{acct}:b", "{acct}:c"]).await;
        let mut present = 0;
        for key in ["{acct}:a", "{acct}:b", "{acct}:c"] {
            present += cluster.read_store(2, key.as_bytes()).await.expect("read store").is_some() as usize;
        }
        if present == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the returning zone was not repaired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        call(&mut c, &["MGET", "{acct}:a", "{acct}:b", "{acct}:c"]).await,
        Value::Array(vec![bulk("1"), bulk("2"), bulk("3")])
    );
}

/// A command pipelined after FLUSHDB runs after it (the flush cannot delete it), and one pipelined
/// before it is flushed — the order of a single Redis.
#[tokio::test]
async fn pipelined_commands_keep_their_order_around_a_flush() {
    let cluster = common::Cluster::start();
    let mut raw = cluster.raw().await;
    let mut pipeline = Vec::new();
    for i in 0..50 {
        pipeline.extend(common::encode_command(&["SET", &format!("before:{i}"), "x"]));
    }
    pipeline.extend(common::encode_command(&["FLUSHDB"]));
    for i in 0..50 {
        pipeline.extend(common::encode_command(&["SET", &format!("after:{i}"), "y"]));
    }
    pipeline.extend(common::encode_command(&["DBSIZE"]));
    raw.send_raw(&pipeline).await;
    for _ in 0..101 {
        assert_eq!(raw.read_reply().await, "+OK\r\n");
    }
    assert_eq!(raw.read_reply().await, ":50\r\n", "exactly the keys set after FLUSHDB remain");
}
