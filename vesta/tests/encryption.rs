//! Encryption at rest (docs/security.md), on real processes: no value byte reaches a store node's disk
//! (RocksDB files, WAL, change log — also in a second site fed by replication), rotation plus
//! `vesta admin reencrypt` moves every record to the new key, and a tampered header or a value moved to
//! another key is refused with a clear error that INFO and the metrics count.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::*;
use redis::Value;
use vesta_proto::client::NodeConnection;
use vesta_proto::{Flags, KeyRef, Record, Repair, Request, RequestId};

const MARKER: &str = "QX7-VALUE-MARKER-93kd";

fn key_line(id: u32) -> String {
    let key: Vec<u8> = (0..32u8).map(|b| b.wrapping_mul(7).wrapping_add(id as u8 * 31)).collect();
    format!("{id}:{}\n", base64::engine::general_purpose::STANDARD.encode(key))
}

fn keys_file(dir: &Path, ids: &[u32]) -> String {
    let path = dir.join("keys");
    std::fs::write(&path, ids.iter().map(|&id| key_line(id)).collect::<String>()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Files under `dir` (recursively) whose bytes contain `needle`, and how many files were read.
fn files_containing(dir: &Path, needle: &[u8]) -> (Vec<String>, usize) {
    let (mut found, mut read) = (Vec::new(), 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                read += 1;
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    (found, read)
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
}

async fn info(c: &mut redis::aio::MultiplexedConnection) -> String {
    text(&call(c, &["INFO", "encryption"]).await)
}

/// Writes values holding the marker through every kind of write: SET, SET EX, MSET, APPEND,
/// a MULTI/EXEC, and counters (INCRBY) whose per-site sums are sealed with them.
async fn write_marked(c: &mut redis::aio::MultiplexedConnection, prefix: &str, n: usize) {
    // Pipelined, so that the proxy seals them as groups of writes too (see `server/gather.rs`).
    let mut pipe = redis::pipe();
    for i in 0..n {
        let value = format!("{MARKER}-{i}-{}", "x".repeat(i % 50));
        pipe.cmd("SET").arg(format!("{prefix}:set:{i}")).arg(value);
    }
    let replies: Vec<Value> = pipe.query_async(c).await.expect("pipelined SETs");
    assert!(replies.iter().all(|r| *r == Value::Okay), "{replies:?}");
    call(c, &["SET", &format!("{prefix}:ttl"), &format!("{MARKER}-ttl"), "EX", "1000"]).await;
    call(c, &["MSET", &format!("{prefix}:m1"), &format!("{MARKER}-m1"), &format!("{prefix}:m2"), MARKER]).await;
    call(c, &["APPEND", &format!("{prefix}:app"), MARKER]).await;
    call(c, &["APPEND", &format!("{prefix}:app"), MARKER]).await;
    call(c, &["MULTI"]).await;
    call(c, &["SET", &format!("{prefix}:tx"), &format!("{MARKER}-tx")]).await;
    call(c, &["EXEC"]).await;
    for _ in 0..3 {
        call(c, &["INCRBY", &format!("{prefix}:counter"), "5"]).await;
    }
}

async fn check_marked(c: &mut redis::aio::MultiplexedConnection, prefix: &str, n: usize, counter: i64) {
    // One pipeline of GETs (read as a group, each copy opened), and a few alone.
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("GET").arg(format!("{prefix}:set:{i}"));
    }
    let values: Vec<Value> = pipe.query_async(c).await.expect("pipelined GETs");
    for (i, got) in values.iter().enumerate() {
        assert_eq!(*got, bulk(&format!("{MARKER}-{i}-{}", "x".repeat(i % 50))), "{prefix}:set:{i}");
    }
    for i in (0..n).step_by(7) {
        let value = format!("{MARKER}-{i}-{}", "x".repeat(i % 50));
        assert_eq!(call(c, &["GET", &format!("{prefix}:set:{i}")]).await, bulk(&value));
    }
    assert_eq!(call(c, &["GET", &format!("{prefix}:app")]).await, bulk(&format!("{MARKER}{MARKER}")));
    assert_eq!(call(c, &["GET", &format!("{prefix}:tx")]).await, bulk(&format!("{MARKER}-tx")));
    assert_eq!(call(c, &["GET", &format!("{prefix}:counter")]).await, bulk(&counter.to_string()));
}

/// Every copy of `key` on every store of `cluster`.
async fn stored_copies(cluster: &Cluster, key: &str) -> Vec<Record> {
    let mut copies = Vec::new();
    for i in 0..cluster.store_count() {
        if let Ok(Some(r)) = cluster.read_store(i, key.as_bytes()).await {
            copies.push(r);
        }
    }
    copies
}

/// Installs `record` at `key` on every store node directly (the internal protocol's repair: it
/// installs a copy newer than the node's), as someone with access to the store nodes could.
async fn plant(cluster: &Cluster, key: &str, record: &Record) {
    for i in 0..cluster.store_count() {
        let conn = NodeConnection::connect(cluster.store_addr(i)).await.unwrap();
        let target = KeyRef {
            shard: vesta_proto::shard::shard_of(key.as_bytes(), SHARDS),
            namespace: Bytes::from_static(b"0"),
            key: Bytes::copy_from_slice(key.as_bytes()),
        };
        let repair = Request::Repair(Repair { req: RequestId(rand::random()), target, record: record.clone() });
        let answer = tokio::time::timeout(Duration::from_secs(10), conn.call(repair)).await.unwrap().unwrap();
        assert_eq!(answer.status(), vesta_proto::Status::Ok, "plant on store {i}");
    }
}

/// The newest stored copy of `key`, made one tick newer and changed by `change`.
async fn tampered(cluster: &Cluster, key: &str, change: impl Fn(&mut Record)) -> Record {
    let copies = stored_copies(cluster, key).await;
    let mut r = copies.into_iter().max_by_key(|r| r.meta.order()).expect("a stored copy");
    r.meta.hlc += 1;
    change(&mut r);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_byte_reaches_a_store_nodes_disk_in_either_site() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &[1]);
    // Two sites shipping to each other, their stores logging commits for replication.
    let ports = [free_port(), free_port()];
    let sites: Vec<Cluster> = (0..2)
        .map(|i| {
            let origin = (i + 1).to_string();
            let peer = 1 - i;
            Cluster::start_with(ClusterOptions {
                proxies: 2,
                store_flags: vec!["--changelog-origin".into(), origin.clone()],
                proxy_flags: vec!["--origin".into(), origin, "--encryption-keys-file".into(), keys.clone()],
                first_proxy_flags: vec![
                    "--repl-listen".into(),
                    format!("127.0.0.1:{}", ports[i]),
                    "--repl-ship".into(),
                    "--repl-peer".into(),
                    format!("site{}={}@127.0.0.1:{}", peer + 1, peer + 1, ports[peer]),
                ],
                ..ClusterOptions::default()
            })
        })
        .collect();
    let mut a = connect(sites[0].proxy_addr_for(1), false).await;
    let n = 300;
    write_marked(&mut a, "enc", n).await;
    // A key is visible by design: the same marker in a key shows that the scan finds what is there.
    let key_marker = format!("KEY-{MARKER}");
    call(&mut a, &["SET", &key_marker, "v"]).await;
    check_marked(&mut a, "enc", n, 15).await;

    // The second site gets every write through replication (installed, so opened and sealed there).
    let mut b = connect(sites[1].proxy_addr(), false).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let keys = call(&mut a, &["DBSIZE"]).await;
    assert_eq!(keys, int(n as i64 + 7));
    loop {
        let there = call(&mut b, &["DBSIZE"]).await;
        let counter = call(&mut b, &["GET", "enc:counter"]).await;
        if there == keys && counter == bulk("15") {
            break;
        }
        assert!(Instant::now() < deadline, "site 2 did not receive the writes: {there:?} keys, counter {counter:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_marked(&mut b, "enc", n, 15).await;
    // Site 2's counter keeps counting on what came from site 1.
    assert_eq!(call(&mut b, &["INCR", "enc:counter"]).await, int(16));

    for (s, site) in sites.iter().enumerate() {
        // Stored copies are sealed: flag, key id, no marker in the value.
        let copies = stored_copies(site, "enc:set:5").await;
        assert!(copies.len() >= 2, "site {s}: copies on a write quorum");
        for r in &copies {
            assert!(r.meta.flags.encrypted() && r.meta.key_id == 1, "site {s}: {:?}", r.meta);
            assert!(!r.value.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
            assert!(r.counter.is_none());
        }
        let counter = stored_copies(site, "enc:counter").await;
        assert!(counter.iter().all(|r| r.counter.is_none() && r.meta.flags.encrypted()), "counter sealed too");
        for i in 0..site.store_count() {
            let dir = site.store_dir(i);
            let (found, read) = files_containing(dir, MARKER.as_bytes());
            let (with_key, _) = files_containing(dir, key_marker.as_bytes());
            assert!(read > 0, "site {s} store {i}: no file read under {}", dir.display());
            assert!(!with_key.is_empty(), "site {s} store {i}: the key marker is on disk, the scan must find it");
            // Files holding the marker must hold it only as part of the key.
            for f in &found {
                let bytes = std::fs::read(f).unwrap();
                let as_value = bytes
                    .windows(MARKER.len())
                    .enumerate()
                    .filter(|(_, w)| *w == MARKER.as_bytes())
                    .any(|(at, _)| at < 4 || &bytes[at - 4..at] != b"KEY-");
                assert!(!as_value, "site {s} store {i}: a value's marker is in {f}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_reencrypt_move_every_record_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &[1]);
    let mut cluster = Cluster::start_with(ClusterOptions {
        proxies: 2,
        proxy_flags: vec!["--encryption-keys-file".into(), keys.clone()],
        ..ClusterOptions::default()
    });
    let mut c = connect(cluster.proxy_addr_for(0), false).await;
    let n = 120;
    write_marked(&mut c, "rot", n).await;
    assert_eq!(stored_copies(&cluster, "rot:set:3").await[0].meta.key_id, 1);

    // Rotation: key 2 joins the ring (the highest id is current); every proxy restarts with it.
    keys_file(dir.path(), &[1, 2]);
    for i in 0..cluster.proxy_count() {
        cluster.kill_proxy(i);
        cluster.restart_proxy(i);
    }
    let mut c = connect(cluster.proxy_addr_for(1), false).await;
    check_marked(&mut c, "rot", n, 15).await; // old records still open with key 1
    call(&mut c, &["SET", "rot:new", "after rotation"]).await;
    assert_eq!(stored_copies(&cluster, "rot:new").await[0].meta.key_id, 2, "new writes use the new key");
    let info = info(&mut c).await;
    assert_eq!(info_field(&info, "encryption_current_key_id").as_deref(), Some("2"), "{info}");

    let state = dir.path().join("reencrypt.state");
    let admin = |extra: &[&str]| {
        let mut args =
            vec!["admin".to_string(), "reencrypt".into(), "--proxy".into(), cluster.proxy_addr().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vesta")).args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let before = admin(&["--usage-only"]);
    assert!(before.contains("still in use"), "key 1 is in use before reencrypt:\n{before}");
    let out = admin(&["--rate", "0", "--batch", "50", "--state", state.to_str().unwrap()]);
    assert!(out.contains("every record is under key 2"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("key    1") && l.contains(" 0 records") && l.contains("may be retired")),
        "{out}"
    );
    // The state file says the run finished: running again resumes at the end and rewrites nothing.
    let again = admin(&["--state", state.to_str().unwrap()]);
    assert!(again.contains("rewrote 0 record(s)"), "{again}");

    check_marked(&mut c, "rot", n, 15).await;
    assert_eq!(call(&mut c, &["INCR", "rot:counter"]).await, int(16), "the counter survived the rewrite");
    for key in ["rot:set:0", "rot:set:77", "rot:ttl", "rot:app", "rot:counter", "rot:m2"] {
        let copies = stored_copies(&cluster, key).await;
        let newest = copies.iter().max_by_key(|r| r.meta.order()).unwrap();
        assert_eq!(newest.meta.key_id, 2, "{key}: {:?}", newest.meta);
    }
    let ttl = call(&mut c, &["TTL", "rot:ttl"]).await;
    assert!(matches!(ttl, Value::Int(t) if t > 900), "the expiry was kept: {ttl:?}");

    // Key 1 is retired: the proxies restart without it, and everything still reads.
    keys_file(dir.path(), &[2]);
    for i in 0..cluster.proxy_count() {
        cluster.kill_proxy(i);
        cluster.restart_proxy(i);
    }
    let mut c = connect(cluster.proxy_addr_for(0), false).await;
    check_marked(&mut c, "rot", n, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_header_or_a_moved_value_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &[1, 2]);
    let metrics_port = free_port();
    let cluster = Cluster::start_with(ClusterOptions {
        proxies: 2,
        metrics_port: Some(metrics_port),
        proxy_flags: vec!["--encryption-keys-file".into(), keys],
        first_proxy_flags: vec!["--encryption-refuse-clear".into()],
        ..ClusterOptions::default()
    });
    let mut c = connect(cluster.proxy_addr(), false).await;
    for k in ["t:key-id", "t:flags", "t:value", "t:unknown", "t:src", "t:dst", "t:clear"] {
        call(&mut c, &["SET", k, &format!("{MARKER}-{k}")]).await;
    }
    call(&mut c, &["INCRBY", "t:counter", "7"]).await;

    // The header names another key of the ring.
    plant(&cluster, "t:key-id", &tampered(&cluster, "t:key-id", |r| r.meta.key_id = 1).await).await;
    // An unknown flag bit is set.
    plant(&cluster, "t:flags", &tampered(&cluster, "t:flags", |r| r.meta.flags = r.meta.flags.with(0x40)).await).await;
    // One ciphertext byte flipped.
    let flip = |r: &mut Record| {
        let mut v = r.value.to_vec();
        v[40] ^= 1;
        r.value = v.into();
    };
    plant(&cluster, "t:value", &tampered(&cluster, "t:value", flip).await).await;
    // A key id no proxy holds.
    plant(&cluster, "t:unknown", &tampered(&cluster, "t:unknown", |r| r.meta.key_id = 99).await).await;
    // The value of another key, newer than this key's copy.
    let dst = stored_copies(&cluster, "t:dst").await.into_iter().map(|r| r.meta.order()).max().unwrap();
    let mut moved = tampered(&cluster, "t:src", |_| {}).await;
    moved.meta.hlc = moved.meta.hlc.max(dst.hlc) + 1;
    plant(&cluster, "t:dst", &moved).await;
    // The encrypted flag cleared: ciphertext posing as a value in the clear.
    let clear = tampered(&cluster, "t:clear", |r| r.meta.flags = Flags(r.meta.flags.0 & !Flags::ENCRYPTED)).await;
    plant(&cluster, "t:clear", &clear).await;

    let refused = |key: &str, v: &Value| {
        let e = error_text(v).unwrap_or_else(|| panic!("{key}: expected an error, got {v:?}"));
        assert!(e.starts_with(&format!("ERR value of key '{key}' failed to decrypt (key id")), "{key}: {e}");
        e
    };
    for key in ["t:key-id", "t:flags", "t:value", "t:dst"] {
        let e = refused(key, &call(&mut c, &["GET", key]).await);
        assert!(e.ends_with("tampered or wrong key"), "{e}");
    }
    let e = refused("t:unknown", &call(&mut c, &["GET", "t:unknown"]).await);
    assert!(e.contains("(key id 99): no key with this id"), "{e}");
    // A write that needs the old value is refused too (nothing built on garbage).
    refused("t:value", &call(&mut c, &["APPEND", "t:value", "x"]).await);
    let e = refused("t:clear", &call(&mut c, &["GET", "t:clear"]).await);
    assert!(e.contains("stored in the clear"), "{e}");
    // Untouched keys still read, and a plain SET replaces a refused value.
    assert_eq!(call(&mut c, &["GET", "t:src"]).await, bulk(&format!("{MARKER}-t:src")));
    assert_eq!(call(&mut c, &["INCR", "t:counter"]).await, int(8));
    assert_eq!(call(&mut c, &["SET", "t:value", "fresh"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["GET", "t:value"]).await, bulk("fresh"));

    let info = info(&mut c).await;
    let failures: u64 = info_field(&info, "encryption_decrypt_failures").unwrap().parse().unwrap();
    assert!(failures >= 7, "{info}");
    let metrics = scrape(metrics_port);
    for reason in ["authentication", "unknown_key", "not_encrypted"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("vesta_proxy_decrypt_failures_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason} missing from:\n{metrics}"
        );
    }
}
