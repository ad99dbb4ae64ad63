//! Migration in from Redis, against a real redis-server (Debian's, started here on a loopback port with a
//! temp dir) and a real `vesta dev`: DUMP/RESTORE payloads cross between the two in both directions; an
//! RDB file of 100k strings (TTLs, several databases, keys of other types) imports with every string and
//! TTL equal, also when interrupted and resumed; and a live import (`--from`) of a Redis under write
//! load ends with both equal, key by key.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, Proc};
use redis::{Commands, Connection, Value};

/// A redis-server of its own: loopback, a free port, its files in a temp dir; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// `None` (and a visible skip) where redis-server is not installed.
    fn start() -> Option<RedisServer> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            eprintln!("SKIP: redis-server is not installed");
            return None;
        }
        // The port is chosen before redis-server binds it: another attempt if it was taken meanwhile.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--dir", dir.path().to_str().expect("utf-8 temp dir"), "--enable-debug-command", "local"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = vesta_testkit::spawn(cmd).expect("start redis-server");
            let server = RedisServer { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(mut c) = server.connect(0) {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return Some(server);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("redis-server did not start");
    }

    fn connect(&self, db: u32) -> redis::RedisResult<Connection> {
        connect_to(&format!("127.0.0.1:{}", self.port), db)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect_to(addr: &str, db: u32) -> redis::RedisResult<Connection> {
    let c = redis::Client::open(format!("redis://{addr}/{db}"))?;
    let c = c.get_connection_with_timeout(Duration::from_secs(10))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(c)
}

/// `vesta dev` in memory on a port of its own; its proxy's address.
fn vesta_dev() -> (Proc, String) {
    vesta_dev_with(&[])
}

fn vesta_dev_with(flags: &[&str]) -> (Proc, String) {
    for _ in 0..3 {
        let port = free_port().to_string();
        let mut args = vec!["dev", "--port", &port, "--memory"];
        args.extend_from_slice(flags);
        if let Ok(dev) = Proc::spawn("dev", &args) {
            return (dev, format!("127.0.0.1:{port}"));
        }
    }
    panic!("vesta dev did not start");
}

/// `vesta admin import ARGS`, bounded: its exit status, stdout and stderr.
fn import(args: &[&str], limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(vesta_testkit::vesta_bin());
    cmd.arg("admin").arg("import").args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = vesta_testkit::spawn(cmd).expect("start vesta admin import");
    let mut running = Running::new(child);
    let status = running.wait(limit).unwrap_or_else(|| panic!("import {args:?} did not end within {limit:?}"));
    let (out, err) = running.output();
    (status, out, err)
}

/// A child whose stdout and stderr are collected by threads (it never blocks on a full pipe).
struct Running {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Running {
    fn new(mut child: Child) -> Running {
        let collect = |r: Box<dyn std::io::Read + Send>, echo: bool| {
            std::thread::spawn(move || {
                let mut all = String::new();
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[import] {line}");
                    }
                    all.push_str(&line);
                    all.push('\n');
                }
                all
            })
        };
        let out = collect(Box::new(child.stdout.take().expect("piped")), false);
        let err = collect(Box::new(child.stderr.take().expect("piped")), true);
        Running { child, out, err }
    }

    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig}");
    }

    fn output(self) -> (String, String) {
        let Running { mut child, out, err } = self;
        let _ = child.kill();
        let _ = child.wait();
        (out.join().unwrap_or_default(), err.join().unwrap_or_default())
    }
}

/// Every string key of database `db` of both servers: (value, PEXPIRETIME), read in batches.
fn strings_of(c: &mut Connection) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<Vec<u8>>) =
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query(c).expect("SCAN");
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut all = BTreeMap::new();
    for chunk in keys.chunks(500) {
        // Types first: GET of another type is an error, which fails a whole pipeline.
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("TYPE").arg(k);
        }
        let types: Vec<String> = p.query(c).expect("TYPE");
        let strings: Vec<&Vec<u8>> = chunk.iter().zip(types).filter(|(_, t)| t == "string").map(|(k, _)| k).collect();
        if strings.is_empty() {
            continue;
        }
        let mut p = redis::pipe();
        for k in &strings {
            p.cmd("GET").arg(*k).cmd("PEXPIRETIME").arg(*k);
        }
        let replies: Vec<Value> = p.query(c).expect("GET/PEXPIRETIME");
        for (k, r) in strings.into_iter().zip(replies.chunks(2)) {
            if let [Value::BulkString(v), Value::Int(at)] = r {
                all.insert(k.clone(), (v.clone(), *at));
            }
        }
    }
    all
}

fn assert_same_strings(redis: &RedisServer, vesta: &str, dbs: &[u32]) -> usize {
    let mut total = 0;
    for &db in dbs {
        let expected = strings_of(&mut redis.connect(db).expect("redis"));
        let got = strings_of(&mut connect_to(vesta, db).expect("vesta"));
        let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
        let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
        let differ: Vec<_> = expected.iter().filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v)).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && differ.is_empty(),
            "db {db}: {} strings in Redis, {} in Vesta; missing {missing:?}, extra {extra:?}, differing {differ:?}",
            expected.len(),
            got.len()
        );
        total += expected.len();
    }
    total
}

fn err_text(r: redis::RedisResult<Value>) -> String {
    match r {
        Err(e) => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or_default()),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn dump_and_restore_cross_between_redis_and_vesta() {
    let Some(redis) = RedisServer::start() else { return };
    let (_dev, vesta) = vesta_dev();
    let mut r = redis.connect(0).expect("redis");
    let mut v = connect_to(&vesta, 0).expect("vesta");
    // Raw, int-encoded, and long enough for Redis to LZF-compress it.
    let values: Vec<(String, Vec<u8>)> = vec![
        ("raw".into(), b"hello world".to_vec()),
        ("int".into(), b"-1234567".to_vec()),
        ("lzf".into(), "abcabcabc".repeat(200).into_bytes()),
        ("binary".into(), (0..=255u8).collect()),
    ];
    for (k, value) in &values {
        let _: () = r.set(k, value).expect("SET on redis");
        let _: () = v.set(k, value).expect("SET on vesta");
        // Redis → Vesta.
        let payload: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut r).expect("DUMP on redis");
        let copy = format!("{k}:from-redis");
        let ok: Value = redis::cmd("RESTORE").arg(&copy).arg(0).arg(&payload).query(&mut v).expect("RESTORE on vesta");
        assert_eq!(ok, Value::Okay);
        assert_eq!(v.get::<_, Vec<u8>>(&copy).expect("GET"), *value, "{k} restored on Vesta");
        // Vesta → Redis.
        let payload: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut v).expect("DUMP on vesta");
        let copy = format!("{k}:from-vesta");
        let ok: Value =
            redis::cmd("RESTORE").arg(&copy).arg(60_000).arg(&payload).query(&mut r).expect("RESTORE on redis");
        assert_eq!(ok, Value::Okay);
        assert_eq!(r.get::<_, Vec<u8>>(&copy).expect("GET"), *value, "{k} restored on Redis");
        let ttl: i64 = r.pttl(&copy).expect("PTTL");
        assert!((50_000..=60_000).contains(&ttl), "TTL of {copy}: {ttl}");
    }

    // The same errors, word for word.
    let payload: Vec<u8> = redis::cmd("DUMP").arg("raw").query(&mut r).expect("DUMP");
    let mut damaged = payload.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x55;
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("busy", vec![b"raw".to_vec(), b"0".to_vec(), payload.clone()]),
        ("negative ttl", vec![b"fresh".to_vec(), b"-5".to_vec(), payload.clone()]),
        ("damaged", vec![b"fresh".to_vec(), b"0".to_vec(), damaged]),
        ("garbage", vec![b"fresh".to_vec(), b"0".to_vec(), b"garbage".to_vec()]),
        ("bad idletime", vec![b"fresh".to_vec(), b"0".to_vec(), payload.clone(), b"IDLETIME".to_vec(), b"-1".to_vec()]),
        ("bad freq", vec![b"fresh".to_vec(), b"0".to_vec(), payload.clone(), b"FREQ".to_vec(), b"300".to_vec()]),
        ("unknown option", vec![b"fresh".to_vec(), b"0".to_vec(), payload.clone(), b"NOPE".to_vec()]),
    ];
    for (what, args) in cases {
        let on = |c: &mut Connection| err_text(redis::cmd("RESTORE").arg(&args).query(c));
        let (from_redis, from_vesta) = (on(&mut r), on(&mut v));
        assert_eq!(from_vesta, from_redis, "{what}");
    }
    assert_eq!(redis::cmd("DUMP").arg("missing").query::<Value>(&mut v).expect("DUMP"), Value::Nil);

    // ABSTTL in the past: OK, and no key (REPLACE removes the old one).
    let past = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() - 1000)
        .to_string();
    for c in [&mut r, &mut v] {
        let ok: Value = redis::cmd("RESTORE")
            .arg("raw")
            .arg(&past)
            .arg(&payload)
            .arg("ABSTTL")
            .arg("REPLACE")
            .query(c)
            .expect("RESTORE");
        assert_eq!(ok, Value::Okay);
        assert_eq!(c.exists::<_, i64>("raw").expect("EXISTS"), 0);
    }

    // A list's payload restores on Redis; Vesta, which stores only strings, says so.
    let _: () = r.rpush("list", &["a", "b"]).expect("RPUSH");
    let list: Vec<u8> = redis::cmd("DUMP").arg("list").query(&mut r).expect("DUMP");
    let refused = err_text(redis::cmd("RESTORE").arg("list").arg(0).arg(&list).query(&mut v));
    assert!(refused.contains("list") && refused.contains("only strings"), "{refused}");
}

/// Fills Redis with 100k strings (a tenth with TTLs; databases 0, 1 and 5), a few keys of other types
/// and a few strings already expired, and saves it to `dump.rdb` in its dir.
fn fill_and_save(redis: &RedisServer) -> std::path::PathBuf {
    let mut c = redis.connect(0).expect("redis");
    let far = 4_000_000_000_000u64; // unix ms in 2096: no key expires during the test
    for (db, count) in [(0u32, 90_000u32), (1, 6_000), (5, 4_000)] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).expect("SELECT");
        for chunk in (0..count).collect::<Vec<_>>().chunks(2000) {
            let mut p = redis::pipe();
            for &i in chunk {
                let key = format!("db{db}:key:{i}");
                let value = match i % 4 {
                    0 => i.to_string(),
                    1 => format!("value-{i}").repeat(1 + (i as usize % 9)),
                    2 => "z".repeat(100 + i as usize % 300),
                    _ => format!("{i}\u{0}\r\nbinary"),
                };
                if i % 10 == 0 {
                    p.cmd("SET").arg(&key).arg(value).arg("PXAT").arg(far + u64::from(i)).ignore();
                } else {
                    p.cmd("SET").arg(&key).arg(value).ignore();
                }
            }
            let _: () = p.query(&mut c).expect("SET batch");
        }
    }
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).expect("SELECT");
    let _: () = c.hset_multiple("hash:1", &[("f", "v"), ("g", "w")]).expect("HSET");
    let _: () = c.hset("hash:2", "f", "x".repeat(100)).expect("HSET");
    let _: () = c.rpush("list:1", &["a", "b", "c"]).expect("RPUSH");
    let _: () = c.rpush("list:2", (0..500).collect::<Vec<i32>>()).expect("RPUSH");
    let _: () = c.sadd("set:1", &[1, 2, 3]).expect("SADD");
    let _: () = c.zadd("zset:1", "m", 1.5).expect("ZADD");
    let _: () = redis::cmd("XADD").arg("stream:1").arg("*").arg("f").arg("v").query(&mut c).expect("XADD");
    // Strings whose TTL passes before the import: saved with active expiry off, then expired.
    let _: () = redis::cmd("DEBUG").arg("SET-ACTIVE-EXPIRE").arg(0).query(&mut c).expect("DEBUG");
    for i in 0..7 {
        let _: () = c.pset_ex(format!("expired:{i}"), "gone", 1).expect("PSETEX");
    }
    std::thread::sleep(Duration::from_millis(20));
    let _: () = redis::cmd("SAVE").query(&mut c).expect("SAVE");
    let _: () = redis::cmd("DEBUG").arg("SET-ACTIVE-EXPIRE").arg(1).query(&mut c).expect("DEBUG");
    redis.dir.path().join("dump.rdb")
}

fn line_with<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

#[test]
fn an_rdb_of_100k_strings_imports_with_ttls_resumes_and_reports_other_types() {
    let Some(redis) = RedisServer::start() else { return };
    let rdb = fill_and_save(&redis);
    let (_dev, vesta) = vesta_dev();
    let work = tempfile::tempdir().expect("temp dir");
    let checkpoint = work.path().join("import.checkpoint");
    let (rdb_path, checkpoint_path) = (path(&rdb), path(&checkpoint));

    // A slow first run, stopped part-way by SIGTERM.
    let mut cmd = Command::new(vesta_testkit::vesta_bin());
    cmd.args(["admin", "import", "--rdb", &rdb_path, "--proxy", &vesta, "--resume-file", &checkpoint_path])
        .args(["--rate", "20000/s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut first = Running::new(vesta_testkit::spawn(cmd).expect("start the import"));
    std::thread::sleep(Duration::from_millis(1500));
    first.signal("TERM");
    let status = first.wait(Duration::from_secs(30)).expect("the import stops on SIGTERM");
    let (out, err) = first.output();
    assert!(!status.success(), "an interrupted import says so with its exit status:\n{out}{err}");
    assert!(err.contains("interrupted"), "{err}");
    let done: u64 = std::fs::read_to_string(&checkpoint)
        .expect("the checkpoint is written")
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .expect("a count of keys done");
    assert!(done > 0 && done < 100_000, "stopped part-way: {done} keys done");

    // The rerun carries on after the checkpoint.
    let (status, out, err) =
        import(&["--rdb", &rdb_path, "--proxy", &vesta, "--resume-file", &checkpoint_path], Duration::from_secs(300));
    assert!(status.success(), "import failed:\n{out}{err}");
    let count = |line: &str, prefix: &str| -> u64 {
        line.strip_prefix(prefix)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line:?}"))
    };
    let resumed = count(
        line_with(&out, "strings before the resume point"),
        "strings before the resume point (done by an earlier run): ",
    );
    let imported = count(line_with(&out, "strings imported: "), "strings imported: ");
    let expired = count(line_with(&out, "strings skipped, already expired: "), "strings skipped, already expired: ");
    assert!(resumed >= done.saturating_sub(7 + 10), "the rerun skipped what the first run did: {out}");
    // Each of the 100k live strings and the 7 expired ones is accounted for once over the rerun.
    assert_eq!(resumed + imported + expired, 100_007, "{out}");
    assert!(imported > 0 && imported < 100_000, "{out}");
    assert_eq!(
        line_with(&out, "keys of other types"),
        "keys of other types NOT imported (Vesta stores only strings): 7 (hash 2, list 2, set 1, stream 1, zset 1)",
        "{out}"
    );

    // Every string equal, with its expiry to the millisecond; nothing else in Vesta.
    let compared = assert_same_strings(&redis, &vesta, &[0, 1, 5]);
    assert_eq!(compared, 100_000);
    let mut v = connect_to(&vesta, 0).expect("vesta");
    assert_eq!(v.exists::<_, i64>("expired:0").expect("EXISTS"), 0);
    assert_eq!(v.exists::<_, i64>("hash:1").expect("EXISTS"), 0);
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Redis's view of its replica (our import): the offset it acknowledged.
fn replica_offset(c: &mut Connection) -> Option<(u64, u64)> {
    let info: String = redis::cmd("INFO").arg("replication").query(c).ok()?;
    let master: u64 = info.lines().find_map(|l| l.strip_prefix("master_repl_offset:"))?.trim().parse().ok()?;
    let slave = info.lines().find(|l| l.starts_with("slave0:"))?;
    let acked = slave.split(',').find_map(|f| f.strip_prefix("offset="))?.parse().ok()?;
    Some((master, acked))
}

#[test]
fn a_damaged_rdb_fails_on_its_checksum() {
    let Some(redis) = RedisServer::start() else { return };
    let (_dev, vesta) = vesta_dev();
    let mut c = redis.connect(0).expect("redis");
    for i in 0..100 {
        let _: () = c.set(format!("k{i}"), format!("value number {i:08}")).expect("SET");
    }
    let _: () = redis::cmd("SAVE").query(&mut c).expect("SAVE");
    let mut bytes = std::fs::read(redis.dir.path().join("dump.rdb")).expect("read the dump");
    // A digit inside a value: the file still parses, only the checksum can tell.
    let at = bytes.windows(12).position(|w| w == b"value number").expect("a value in the dump") + 13;
    bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
    let work = tempfile::tempdir().expect("temp dir");
    let damaged = work.path().join("damaged.rdb");
    std::fs::write(&damaged, &bytes).expect("write the damaged dump");
    let (status, out, err) = import(&["--rdb", &path(&damaged), "--proxy", &vesta], Duration::from_secs(60));
    assert!(!status.success(), "a damaged dump must fail:\n{out}{err}");
    assert!(err.contains("checksum is wrong"), "{err}");
    // The intact dump imports, here into a proxy that wants AUTH.
    drop(_dev);
    let (_dev, vesta) = vesta_dev_with(&["--requirepass", "s3cret"]);
    let intact = path(&redis.dir.path().join("dump.rdb"));
    let (status, out, err) = import(&["--rdb", &intact, "--proxy", &vesta], Duration::from_secs(60));
    assert!(!status.success() && err.contains("NOAUTH"), "{out}{err}");
    let (status, out, err) =
        import(&["--rdb", &intact, "--proxy", &vesta, "--proxy-password", "s3cret"], Duration::from_secs(60));
    assert!(status.success(), "{out}{err}");
    let mut v = redis::Client::open(format!("redis://:s3cret@{vesta}/0"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(10)))
        .expect("vesta with AUTH");
    let got: Vec<String> = v.mget(&["k0", "k99"]).expect("MGET");
    assert_eq!(got, ["value number 00000000", "value number 00000099"]);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut v).expect("DBSIZE"), 100);
}

/// Starts `vesta admin import --from` the server, runs `load` against Redis meanwhile, waits until the
/// import acknowledged everything, stops it with SIGTERM and returns its stdout.
fn live_import(redis: &RedisServer, vesta: &str, load: impl FnOnce()) -> String {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut cmd = Command::new(vesta_testkit::vesta_bin());
    cmd.args(["admin", "import", "--from", &url, "--proxy", vesta])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut sync = Running::new(vesta_testkit::spawn(cmd).expect("start the live import"));
    load();
    // Caught up: Redis's replica (the import) acknowledged everything the master has.
    let mut c = redis.connect(0).expect("redis");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match replica_offset(&mut c) {
            Some((master, acked)) if acked >= master => break,
            other => {
                assert!(Instant::now() < deadline, "the live import did not catch up: {other:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    sync.signal("TERM");
    let status = sync.wait(Duration::from_secs(30)).expect("the live import stops on SIGTERM");
    let (out, err) = sync.output();
    assert!(status.success(), "live import:\n{out}{err}");
    assert!(err.contains("full resynchronisation"), "{err}");
    assert!(!out.contains("REFUSED"), "{out}");
    out
}

#[test]
fn a_disk_based_full_sync_loads_and_streams_too() {
    let Some(redis) = RedisServer::start() else { return };
    let (_dev, vesta) = vesta_dev();
    let mut c = redis.connect(0).expect("redis");
    // The master sends the RDB as a `$len` bulk from a file, and the stream right behind it.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("repl-diskless-sync").arg("no").query(&mut c).expect("CONFIG SET");
    let mut p = redis::pipe();
    for i in 0..5000 {
        p.cmd("SET").arg(format!("disk:{i}")).arg("v".repeat(i % 50)).ignore();
    }
    let _: () = p.query(&mut c).expect("fill");
    let out = live_import(&redis, &vesta, || {
        let mut w = redis.connect(2).expect("redis");
        for i in 0..3000 {
            let _: () = w.set(format!("after:{i}"), i).expect("SET");
            let _: i64 = w.incr("after:counter", 2).expect("INCRBY");
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    let applied: u64 = line_with(&out, "replication commands applied: ")
        .trim_start_matches("replication commands applied: ")
        .parse()
        .expect("a count");
    // Most of the 6000 writes come through the stream (the first few may be in the RDB already).
    assert!(applied > 5000, "{out}");
    assert_eq!(assert_same_strings(&redis, &vesta, &[0, 2]), 5000 + 3001);
}

#[test]
fn a_live_import_under_write_load_ends_with_both_equal() {
    let Some(redis) = RedisServer::start() else { return };
    let (_dev, vesta) = vesta_dev();
    // What is there before the sync: in the RDB the master sends.
    let mut c = redis.connect(0).expect("redis");
    let mut p = redis::pipe();
    for i in 0..20_000 {
        p.cmd("SET").arg(format!("before:{i}")).arg(i).ignore();
        if i % 7 == 0 {
            p.cmd("PEXPIREAT").arg(format!("before:{i}")).arg(4_000_000_000_000u64 + i).ignore();
        }
    }
    let _: () = p.query(&mut c).expect("fill");
    let _: () = c.hset("before:hash", "f", "v").expect("HSET");

    let out = live_import(&redis, &vesta, || {
        // Writers during the whole sync: before, during and after the full resynchronisation.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let mut c0 = redis.connect(0).expect("redis");
            let mut c1 = redis.connect(1).expect("redis");
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let k = format!("live:{}", i % 5000);
                    let _: () = c0.set(&k, i).expect("SET");
                    let _: () = redis::cmd("SET")
                        .arg(format!("ttl:{}", i % 300))
                        .arg(i)
                        .arg("EX")
                        .arg(100_000)
                        .query(&mut c0)
                        .expect("SET EX");
                    let _: i64 = c0.incr("counter", 1).expect("INCR");
                    let _: i64 = c0.append(format!("log:{}", i % 50), "x").expect("APPEND");
                    if i.is_multiple_of(3) {
                        let _: i64 = c0.del(format!("before:{}", i % 20_000)).expect("DEL");
                    }
                    if i.is_multiple_of(11) {
                        let _: i64 = c0.expire(format!("live:{}", (i + 1) % 5000), 200_000).expect("EXPIRE");
                    }
                    if i.is_multiple_of(13) {
                        let _: () =
                            c0.mset(&[(format!("m:{}", i % 40), i), (format!("n:{}", i % 40), i + 1)]).expect("MSET");
                    }
                    if i.is_multiple_of(5) {
                        let _: i64 = c0.hset("live:hash", i, i).expect("HSET");
                        let _: i64 = c0.lpush("live:list", i).expect("LPUSH");
                    }
                    let _: () = c1.set(format!("one:{}", i % 1000), i).expect("SET db1");
                    i += 1;
                }
                i
            })
        };
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, Ordering::SeqCst);
        let rounds = writer.join().expect("writer");
        assert!(rounds > 100, "the writer made {rounds} rounds");
    });
    let not_applied = line_with(&out, "replication commands NOT applied");
    assert!(not_applied.contains("hset") && not_applied.contains("lpush"), "{out}");

    let compared = assert_same_strings(&redis, &vesta, &[0, 1]);
    assert!(compared > 5000, "{compared} strings compared");
}
