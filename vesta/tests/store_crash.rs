//! `vesta store` as its own process on RocksDB (sync = every-write): many requests in flight over TCP,
//! kill -9 mid-load, restart on the same directory — every acknowledged commit is there, and (with the
//! change log for cross-site replication on) in the change log too.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Mutex;
use vesta_proto::client::NodeConnection;
use vesta_proto::*;

const SHARDS: u32 = 64;

struct StoreProcess {
    child: Child,
    addr: String,
}

impl StoreProcess {
    fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vesta"))
            .args(["store", "--node", "crash-test", "--listen", "127.0.0.1:0", "--sync", "every-write"])
            .args(extra)
            .args(["--shards", &SHARDS.to_string(), "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vesta store");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(Instant::now() < deadline, "store did not start");
            let line = lines.next().expect("store exited before listening").unwrap();
            if let Some(addr) = line.split(" listening on ").nth(1) {
                break addr.trim().to_string();
            }
        };
        // Keep draining stdout so the node never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        StoreProcess { child, addr }
    }
}

impl Drop for StoreProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn target(key: &str) -> KeyRef {
    KeyRef {
        shard: shard::shard_of(key.as_bytes(), SHARDS),
        namespace: Bytes::from_static(b"0"),
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

/// What a key may hold after the crash: its last acknowledged value, or the write in flight at the kill
/// (an unacknowledged commit may or may not have landed — both are correct).
#[derive(Default, Clone)]
struct Expect {
    acked: Option<String>,
    in_flight: Option<String>,
}

async fn write(conn: &NodeConnection, req: u128, key: &str, value: &str, hlc: u64) -> Result<bool, ()> {
    let p = Prepare {
        req: RequestId(req),
        target: target(key),
        kind: PrepareKind::Set,
        condition: None,
        want_value: false,
    };
    match conn.call(Request::Prepare(p)).await {
        Ok(r) if r.status().holds_lease() => {}
        Ok(_) => return Ok(false),
        Err(_) => return Err(()),
    }
    let meta = Meta { version: hlc, created_at: 1, hlc, origin: 1, last_writer: RequestId(req), ..Meta::default() };
    let record = Record::new(meta, Bytes::copy_from_slice(value.as_bytes()));
    match conn
        .call(Request::Commit(Commit { req: RequestId(req), target: target(key), record, keep_writer: false }))
        .await
    {
        Ok(r) => Ok(r.status() == Status::Ok),
        Err(_) => Err(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let logging = ["--changelog-origin", "1"];
    let store = StoreProcess::start_with(dir.path(), &logging);

    let expect: Arc<Mutex<HashMap<String, Expect>>> = Arc::default();
    let every_ack: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(NodeConnection::connect(&store.addr).await.unwrap());
    }
    // 256 writers, 64 per connection, each rewriting its own 20 keys round-robin until the kill.
    let mut writers = Vec::new();
    for w in 0..256u128 {
        let (conn, expect, every_ack) = (conns[(w % 4) as usize].clone(), expect.clone(), every_ack.clone());
        writers.push(tokio::spawn(async move {
            let (mut acked, mut hlc) = (0u64, 0u64);
            for n in 0..100_000u64 {
                // Stamped by the clock, as a coordinator does (the change log refuses a commit stamped
                // before its lease), and rising for each writer's keys.
                hlc = (now_ms() << vesta_proto::record::HLC_LOGICAL_BITS).max(hlc + 1);
                let key = format!("w{w}:k{}", n % 20);
                let value = format!("w{w}:n{n}");
                expect.lock().await.entry(key.clone()).or_default().in_flight = Some(value.clone());
                match write(&conn, (w << 64) | n as u128, &key, &value, hlc).await {
                    Ok(true) => {
                        let mut e = expect.lock().await;
                        let slot = e.get_mut(&key).unwrap();
                        slot.acked = slot.in_flight.take();
                        every_ack.lock().unwrap().push((key, value));
                        acked += 1;
                    }
                    Ok(false) => panic!("write refused on an uncontended key"),
                    Err(()) => return acked, // the connection died with the process
                }
            }
            acked
        }));
    }

    // Let the load run, then kill -9 in the middle of it.
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked = expect.lock().await.values().filter(|e| e.acked.is_some()).count();
        if acked >= 5_000 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let mut store = store;
    // Every write was stamped before this (writers stamp with this process's clock).
    let killed_ms = now_ms();
    store.child.kill().unwrap(); // SIGKILL
    store.child.wait().unwrap();
    drop(store);
    let mut total_acked = 0;
    for w in writers {
        total_acked += w.await.unwrap();
    }
    assert!(total_acked > 1_000, "the load should have been running ({total_acked} acks)");

    let store = StoreProcess::start_with(dir.path(), &logging);
    let conn = NodeConnection::connect(&store.addr).await.unwrap();
    let expect = expect.lock().await.clone();
    let mut checked = 0;
    for (key, e) in &expect {
        let Some(acked) = &e.acked else { continue };
        let r = conn.call(Request::Read(Read { target: target(key), want_value: true })).await.unwrap();
        let Response::Reply(Reply { status: Status::Ok, copy: Some(rec), .. }) = r else {
            panic!("{key}: acknowledged value {acked} lost: {r:?}");
        };
        let got = String::from_utf8(rec.value.to_vec()).unwrap();
        assert!(
            &got == acked || e.in_flight.as_ref() == Some(&got),
            "{key}: read {got}, acknowledged {acked}, in flight {:?}",
            e.in_flight
        );
        checked += 1;
    }
    assert!(checked >= 1_000, "checked {checked} keys");

    // Every acknowledged commit — not only each key's last — is in its shard's change log. A log is read
    // only up to its closed timestamp, which trails the clock (by about a lease after a restart): wait
    // until it is past every write, or the last writes before the kill are not readable yet.
    let closed_past = (killed_ms + 1) << vesta_proto::record::HLC_LOGICAL_BITS;
    let waiting = Instant::now();
    loop {
        let read = Request::ReadLog(ReadLog { shard: 0, after: None, since_hlc: 0, limit: 1 });
        let Response::Log(page) = conn.call(read).await.unwrap() else { panic!("read_log of shard 0") };
        if page.closed_hlc >= closed_past {
            break;
        }
        assert!(waiting.elapsed() < Duration::from_secs(30), "the change log never closed past the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut logged = std::collections::HashSet::new();
    for shard in 0..SHARDS {
        let mut after = None;
        loop {
            let read = Request::ReadLog(ReadLog { shard, after: after.take(), since_hlc: 0, limit: 10_000 });
            let Response::Log(page) = conn.call(read).await.unwrap() else { panic!("read_log of shard {shard}") };
            for e in page.entries {
                logged.insert((e.key, e.record.value));
            }
            after = page.next;
            if !page.more {
                break;
            }
        }
    }
    let every_ack = every_ack.lock().unwrap().clone();
    for (key, value) in &every_ack {
        let entry = (Bytes::copy_from_slice(key.as_bytes()), Bytes::copy_from_slice(value.as_bytes()));
        assert!(logged.contains(&entry), "acknowledged commit {key} = {value} is missing from the change log");
    }
    eprintln!(
        "{total_acked} commits acknowledged before kill -9; {checked} keys verified after restart; all {} \
         acknowledged commits in the change log ({} entries)",
        every_ack.len(),
        logged.len()
    );
}

/// GET /metrics over plain HTTP/1.0.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test]
async fn metrics_sigterm_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    // A free port for the metrics endpoint (the exporter cannot report one it picked itself).
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut store = StoreProcess::start_with(dir.path(), &["--metrics-listen", &metrics_addr]);
    let conn = NodeConnection::connect(&store.addr).await.unwrap();
    assert!(matches!(conn.call(Request::Ping).await.unwrap(), Response::Pong(_)));
    assert!(write(&conn, 1, "m", "v", 1).await.unwrap());
    let p =
        Prepare { req: RequestId(2), target: target("m"), kind: PrepareKind::Set, condition: None, want_value: false };
    assert_eq!(conn.call(Request::Prepare(p)).await.unwrap().status(), Status::Ok);
    let p =
        Prepare { req: RequestId(3), target: target("m"), kind: PrepareKind::Set, condition: None, want_value: false };
    assert_eq!(conn.call(Request::Prepare(p)).await.unwrap().status(), Status::Locked);
    let metrics = scrape(&metrics_addr);
    for want in [
        r#"vesta_store_operations_total{op="ping",status="ok"} 1"#,
        r#"vesta_store_operations_total{op="commit",status="ok"} 1"#,
        r#"vesta_store_operations_total{op="prepare",status="locked"} 1"#,
        "vesta_store_lock_conflicts_total 1",
        r#"vesta_store_operation_seconds_bucket{op="prepare",le="#,
        "vesta_store_group_commit_jobs_bucket",
        "vesta_store_connections 1",
    ] {
        assert!(metrics.contains(want), "missing {want} in:\n{metrics}");
    }
    let pid = store.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = store.child.wait().unwrap();
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_vesta"))
        .args(["store", "--lease-ms", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("lease_ms must be at least 1"), "{err}");
}
