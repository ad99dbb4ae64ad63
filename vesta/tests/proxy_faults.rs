//! Store failures behind `vesta proxy` (all Vesta-only: they kill, stop and inspect store processes).
//!
//! Cluster: three zones, one RocksDB store each, N=3, W=2, R=2, default proxy timeouts (per node 100 ms,
//! deadline 1 s). While the proxy is alive, a client may only ever see correct replies or a retryable
//! error reply (`TRYAGAIN …` / `CLUSTERDOWN …`); a connection-level error fails the test.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bulk, call, error_text, int, is_retryable_error, try_call, Cluster};
use redis::aio::MultiplexedConnection;
use redis::Value;

/// Hang protection only.
const WATCHDOG: Duration = Duration::from_secs(600);

/// Sends a command whose reply must be a value or a retryable error (never a connection-level error,
/// never another error).
async fn call_tolerant(c: &mut MultiplexedConnection, args: &[&str]) -> Value {
    let v = try_call(c, args).await.unwrap_or_else(|e| panic!("{}: connection-level error: {e}", args.join(" ")));
    if let Some(e) = error_text(&v) {
        assert!(is_retryable_error(&v), "{}: non-retryable error {e:?}", args.join(" "));
    }
    v
}

/// Retries a command while it answers a retryable error (bounded); returns the first other reply.
async fn call_until_served(c: &mut MultiplexedConnection, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = call_tolerant(c, args).await;
        if !is_retryable_error(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{}: still {v:?} after 60 s", args.join(" "));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn key(test: &str, name: &str) -> String {
    format!("{test}:{}:{name}", common::run_id())
}

// ---------------------------------------------------------------------------------------------------
// a. kill -9 of one store under load
// ---------------------------------------------------------------------------------------------------

/// What a key may read as: its last acknowledged value, or any write attempted after it whose outcome is
/// unknown (it failed with a retryable error, or was in flight).
#[derive(Default, Debug)]
struct KeyState {
    acked: Option<u64>,
    unknown: Vec<u64>,
}

impl KeyState {
    fn allows(&self, v: &Value) -> bool {
        match v {
            Value::Nil => self.acked.is_none(),
            Value::BulkString(b) => {
                let Some(n) = std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok()) else { return false };
                self.acked == Some(n) || self.unknown.contains(&n)
            }
            _ => false,
        }
    }
}

#[derive(Default)]
struct Load {
    keys: Mutex<HashMap<String, KeyState>>,
    stop: AtomicBool,
    acks: AtomicU64,
    retryable: AtomicU64,
}

/// One writer: rewrites its own 25 keys round-robin with increasing values, reading each back at once.
async fn writer(addr: SocketAddr, w: usize, load: Arc<Load>) {
    let mut c = common::connect(addr, w % 2 == 1).await;
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        n += 1;
        let k = key("kill_9", &format!("w{w}:k{}", n % 25));
        let value = n.to_string();
        load.keys.lock().unwrap().entry(k.clone()).or_default().unknown.push(n);
        let reply = call_tolerant(&mut c, &["SET", &k, &value]).await;
        match reply {
            Value::Okay => {
                let mut keys = load.keys.lock().unwrap();
                let state = keys.get_mut(&k).unwrap();
                state.acked = Some(n);
                state.unknown.clear(); // a later acknowledged write supersedes every earlier one
                load.acks.fetch_add(1, Ordering::Relaxed);
            }
            v if is_retryable_error(&v) => {
                load.retryable.fetch_add(1, Ordering::Relaxed);
                continue; // outcome unknown: `n` stays possible
            }
            other => panic!("SET {k} {value}: {other:?}"),
        }
        // Nobody else writes this key: a read after an acknowledged write returns exactly that write.
        let read = call_tolerant(&mut c, &["GET", &k]).await;
        if is_retryable_error(&read) {
            load.retryable.fetch_add(1, Ordering::Relaxed);
        } else {
            assert_eq!(read, bulk(&value), "GET {k} right after its acknowledged SET");
        }
    }
}

async fn wait_for_acks(load: &Load, at_least: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while load.acks.load(Ordering::Relaxed) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} acknowledged writes (want {at_least}); retryable errors {}",
            load.acks.load(Ordering::Relaxed),
            load.retryable.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_store_under_load_loses_nothing() {
    let mut cluster = Cluster::start();
    let addr = cluster.proxy_addr();
    tokio::time::timeout(WATCHDOG, async {
        let load = Arc::new(Load::default());
        let writers: Vec<_> = (0..6).map(|w| tokio::spawn(writer(addr, w, load.clone()))).collect();

        wait_for_acks(&load, 300, "before the kill").await;
        let before = load.acks.load(Ordering::Relaxed);
        cluster.kill_store(1); // SIGKILL mid-load
                               // N - W = 1 store down: writes and reads go on.
        wait_for_acks(&load, before + 500, "after kill -9 of one store").await;
        load.stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer failed");
        }
        eprintln!(
            "{} writes acknowledged ({before} before the kill), {} retryable errors",
            load.acks.load(Ordering::Relaxed),
            load.retryable.load(Ordering::Relaxed)
        );

        // Every acknowledged write reads back (or a later write whose outcome was unknown).
        let mut c = cluster.conn(false).await;
        let keys = std::mem::take(&mut *load.keys.lock().unwrap());
        for (k, state) in &keys {
            let got = call_until_served(&mut c, &["GET", k]).await;
            assert!(state.allows(&got), "{k}: read {got:?}, expected {state:?}");
        }
        assert!(keys.len() >= 100, "{} keys checked", keys.len());
    })
    .await
    .expect("watchdog: the test hung");
}

// ---------------------------------------------------------------------------------------------------
// b. two of three stores down
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_down_refuse_writes_and_never_read_stale() {
    let mut cluster = Cluster::start();
    tokio::time::timeout(WATCHDOG, async {
        let mut c = cluster.conn(false).await;
        let keys: Vec<String> = (0..20).map(|i| key("two_down", &format!("k{i}"))).collect();
        for k in &keys {
            assert_eq!(call(&mut c, &["SET", k, "v1"]).await, Value::Okay);
        }
        // Store 0 misses the second version of every key...
        cluster.kill_store(0);
        for k in &keys {
            assert_eq!(call_until_served(&mut c, &["SET", k, "v2"]).await, Value::Okay);
        }
        // ...comes back stale (nothing read these keys through the proxy since)...
        cluster.restart_store(0);
        let counter = key("two_down", "counter");
        assert_eq!(call_until_served(&mut c, &["INCR", &counter]).await, int(1));
        // ...and is then the only store up.
        cluster.kill_store(1);
        cluster.kill_store(2);
        let mut stale = 0;
        for k in &keys {
            if let Ok(Some(r)) = cluster.read_store(0, k.as_bytes()).await {
                stale += (!r.meta.flags.encrypted() && &r.value[..] == b"v1") as usize;
            }
        }
        eprintln!("{stale} of {} keys are stale (v1) on the only store up", keys.len());
        // Without a stale replica the reads below would prove nothing.
        assert!(stale > 0, "store 0 was expected to hold v1 of the keys it missed");

        for round in 0..3 {
            for k in &keys {
                // A read quorum cannot be formed: an error, or the newest value — never v1, never nil.
                let got = call_tolerant(&mut c, &["GET", k]).await;
                assert!(is_retryable_error(&got) || got == bulk("v2"), "round {round}: GET {k} -> {got:?}");
                let got = call_tolerant(&mut c, &["EXISTS", k]).await;
                assert!(is_retryable_error(&got) || got == int(1), "round {round}: EXISTS {k} -> {got:?}");
                // A write quorum cannot be formed: refused with an error reply.
                for cmd in [&["SET", k.as_str(), "v3"][..], &["DEL", k], &["APPEND", k, "x"], &["EXPIRE", k, "1"]] {
                    let got = call_tolerant(&mut c, cmd).await;
                    assert!(is_retryable_error(&got), "round {round}: {} -> {got:?}", cmd.join(" "));
                }
            }
            let got = call_tolerant(&mut c, &["INCR", &counter]).await;
            assert!(is_retryable_error(&got), "INCR with one store up -> {got:?}");
        }

        // Nothing refused above was written: once the stores are back, every key reads v2, without TTL.
        cluster.restart_store(1);
        cluster.restart_store(2);
        for k in &keys {
            assert_eq!(call_until_served(&mut c, &["GET", k]).await, bulk("v2"), "{k}");
            assert_eq!(call_until_served(&mut c, &["TTL", k]).await, int(-1), "{k}");
        }
        assert_eq!(call_until_served(&mut c, &["GET", &counter]).await, bulk("1"));
    })
    .await
    .expect("watchdog: the test hung");
}

// ---------------------------------------------------------------------------------------------------
// b2. a zone that missed an expiry or a delete cannot bring the key back
// ---------------------------------------------------------------------------------------------------

/// Issue 10's example, with real processes: `SET k 5`; store 2 is down while `PEXPIRE k 300` (and, for
/// a second key, a `DEL`) are acknowledged by stores 0 and 1; once the expiry has passed, store 2 comes
/// back with its live copy of 5 and store 0 goes away, so every read quorum is store 1 (expired or
/// deleted copy) and store 2 (stale live copy). The key must stay gone, and an INCR must start from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_that_missed_an_expiry_or_delete_cannot_bring_the_key_back() {
    let mut cluster = Cluster::start();
    tokio::time::timeout(WATCHDOG, async {
        let mut c = cluster.conn(false).await;
        let (expiring, deleted) = (key("missed", "expiring"), key("missed", "deleted"));
        for k in [&expiring, &deleted] {
            assert_eq!(call(&mut c, &["SET", k, "5", "EX", "100"]).await, Value::Okay);
        }
        // An acknowledgement needs two replicas: wait until the third commit has landed on store 2 too.
        let deadline = Instant::now() + Duration::from_secs(10);
        for k in [&expiring, &deleted] {
            while cluster.read_store(2, k.as_bytes()).await.unwrap().is_none_or(|r| &r.value[..] != b"5") {
                assert!(Instant::now() < deadline, "store 2 never got {k}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        cluster.kill_store(2);
        assert_eq!(call_until_served(&mut c, &["PEXPIRE", &expiring, "300"]).await, int(1));
        assert_eq!(call_until_served(&mut c, &["PEXPIRE", &deleted, "300"]).await, int(1));
        assert_eq!(call_until_served(&mut c, &["DEL", &deleted]).await, int(1));
        tokio::time::sleep(Duration::from_millis(600)).await;
        cluster.restart_store(2);
        for k in [&expiring, &deleted] {
            let stale = cluster.read_store(2, k.as_bytes()).await.unwrap();
            assert!(stale.is_some_and(|r| &r.value[..] == b"5"), "store 2 must still hold the old copy of {k}");
        }
        cluster.kill_store(0);
        for k in [&expiring, &deleted] {
            assert_eq!(call_until_served(&mut c, &["GET", k]).await, Value::Nil, "{k} came back");
            assert_eq!(call_until_served(&mut c, &["EXISTS", k]).await, int(0), "{k} came back");
        }
        cluster.restart_store(0);
        for k in [&expiring, &deleted] {
            assert_eq!(call_until_served(&mut c, &["INCR", k]).await, int(1), "{k}: INCR continued the old value");
        }
    })
    .await
    .expect("watchdog: the test hung");
}

// ---------------------------------------------------------------------------------------------------
// c. read repair of a restarted store
// ---------------------------------------------------------------------------------------------------

/// Whether store 0's copy of `k` is the newest copy held by stores 1 and 2 (`None` expected: deleted).
async fn repaired(cluster: &Cluster, k: &str, deleted: bool) -> Result<bool, String> {
    let mine = cluster.read_store(0, k.as_bytes()).await?;
    if deleted {
        return Ok(mine.is_none());
    }
    let (a, b) = (cluster.read_store(1, k.as_bytes()).await?, cluster.read_store(2, k.as_bytes()).await?);
    let newest = match (a, b) {
        (Some(a), Some(b)) => Some(if b.meta.newer_than(&a.meta) { b } else { a }),
        (a, b) => a.or(b),
    };
    let Some(newest) = newest else { return Err(format!("{k}: no copy on stores 1 and 2")) };
    Ok(match mine {
        Some(mine) => {
            let plain_ok = mine.meta.flags.encrypted() || &mine.value[..] == b"new";
            !newest.meta.newer_than(&mine.meta) && mine.value == newest.value && plain_ok
        }
        None => false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_store_is_read_repaired() {
    let mut cluster = Cluster::start();
    tokio::time::timeout(WATCHDOG, async {
        let mut c = cluster.conn(true).await;
        let updated: Vec<String> = (0..20).map(|i| key("repair", &format!("updated{i}"))).collect();
        let created: Vec<String> = (0..20).map(|i| key("repair", &format!("created{i}"))).collect();
        let deleted: Vec<String> = (0..10).map(|i| key("repair", &format!("deleted{i}"))).collect();
        for k in updated.iter().chain(&deleted) {
            assert_eq!(call(&mut c, &["SET", k, "old"]).await, Value::Okay);
        }

        cluster.kill_store(0);
        for k in updated.iter().chain(&created) {
            assert_eq!(call_until_served(&mut c, &["SET", k, "new"]).await, Value::Okay);
        }
        for k in &deleted {
            assert_eq!(call_until_served(&mut c, &["DEL", k]).await, int(1));
        }
        cluster.restart_store(0);
        // Store 0 really is behind before anything reads through the proxy.
        assert!(cluster.read_store(0, created[0].as_bytes()).await.unwrap().is_none());

        // Reads through the proxy see the newest values; a delete is never undone by the stale copy.
        for k in updated.iter().chain(&created) {
            assert_eq!(call_until_served(&mut c, &["GET", k]).await, bulk("new"), "{k}");
        }
        for k in &deleted {
            assert_eq!(call_until_served(&mut c, &["GET", k]).await, Value::Nil, "{k} resurrected");
            assert_eq!(call_until_served(&mut c, &["EXISTS", k]).await, int(0), "{k} resurrected");
        }

        // Afterwards store 0 holds the newest copy of every key read (repair may finish in the background:
        // keep reading through the proxy, bounded).
        let mut pending: Vec<(String, bool)> = updated
            .iter()
            .chain(&created)
            .map(|k| (k.clone(), false))
            .chain(deleted.iter().map(|k| (k.clone(), true)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut still = Vec::new();
            for (k, is_deleted) in pending {
                if !repaired(&cluster, &k, is_deleted).await.unwrap() {
                    still.push((k, is_deleted));
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "not repaired on the restarted store after 30 s: {pending:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (k, is_deleted) in &pending {
                let want = if *is_deleted { Value::Nil } else { bulk("new") };
                assert_eq!(call_until_served(&mut c, &["GET", k]).await, want, "{k}");
            }
        }
    })
    .await
    .expect("watchdog: the test hung");
}

// ---------------------------------------------------------------------------------------------------
// d. a stalled store
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_store_does_not_stop_reads_and_writes() {
    let cluster = Cluster::start();
    tokio::time::timeout(WATCHDOG, async {
        let mut c = cluster.conn(false).await;
        let before = key("stalled", "before");
        assert_eq!(call(&mut c, &["SET", &before, "b"]).await, Value::Okay);

        cluster.stop_store(2); // SIGSTOP: connections stay open, nothing is answered
                               // Each command may wait for the per-node timeout on the stalled store, but all succeed.
        let counter = key("stalled", "counter");
        for i in 0..30 {
            let k = key("stalled", &format!("k{i}"));
            let v = format!("v{i}");
            assert_eq!(call(&mut c, &["SET", &k, &v]).await, Value::Okay, "SET {k} while store 2 is stopped");
            assert_eq!(call(&mut c, &["GET", &k]).await, bulk(&v), "GET {k} while store 2 is stopped");
            assert_eq!(call(&mut c, &["INCR", &counter]).await, int(i + 1));
            assert_eq!(call(&mut c, &["SET", &k, "x", "NX"]).await, Value::Nil);
        }
        assert_eq!(call(&mut c, &["GET", &before]).await, bulk("b"));
        assert_eq!(call(&mut c, &["DEL", &before]).await, int(1));

        cluster.cont_store(2);
        // Once it answers again (with a backlog of stale requests), everything still works.
        for i in 0..30 {
            let k = key("stalled", &format!("k{i}"));
            assert_eq!(call(&mut c, &["GET", &k]).await, bulk(&format!("v{i}")));
            assert_eq!(call(&mut c, &["SET", &k, "after"]).await, Value::Okay);
            assert_eq!(call(&mut c, &["GET", &k]).await, bulk("after"));
        }
        assert_eq!(call(&mut c, &["GET", &counter]).await, bulk("30"));
        assert_eq!(call(&mut c, &["EXISTS", &before]).await, int(0));
    })
    .await
    .expect("watchdog: the test hung");
}
