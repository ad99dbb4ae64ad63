//! The commands that failover tooling, monitoring and client libraries send about the server itself:
//! CLIENT PAUSE/UNPAUSE (a paused write really waits), CLIENT TRACKING and friends, COMMAND LIST /
//! GETKEYS / GETKEYSANDFLAGS, SLOWLOG, LATENCY, CONFIG RESETSTAT, MEMORY USAGE, INFO keyspace and
//! CLUSTER — against real `vesta store` × 3 + `vesta proxy` processes.
//!
//! Validation errors are compared byte for byte with a throwaway `redis-server` given the same
//! requests, so the expectations are Redis's own. Tests that change proxy-wide state (a pause, the
//! slow log's settings, the statistics) get a cluster of their own, so that they cannot disturb the
//! tests sharing the other one.

mod common;

use std::time::{Duration, Instant};

use common::{bulk, call, error_text, int, text, Cluster, RawConn, RedisServer};
use redis::Value;

/// Sends each request on one raw connection to Redis and to Vesta and asserts that the replies are
/// the same bytes — except for a request whose first word is marked `~` (the mark is dropped): its
/// reply names the server (HELLO), so only its being an error or not is compared.
async fn same_as_redis(redis: &RedisServer, vesta: std::net::SocketAddr, requests: &[&[&str]]) {
    let mut r = RawConn::connect(redis.addr).await;
    let mut v = RawConn::connect(vesta).await;
    for request in requests {
        let mut request = request.to_vec();
        let unlike = request[0].starts_with('~');
        request[0] = request[0].trim_start_matches('~');
        let want = r.call(&request).await;
        let got = v.call(&request).await;
        if unlike {
            assert_eq!(got.starts_with('-'), want.starts_with('-'), "{request:?}: Vesta {got:?}, Redis {want:?}");
        } else {
            assert_eq!(got, want, "{request:?}: Vesta answered {got:?}, Redis {want:?}");
        }
    }
}

fn key(name: &str) -> String {
    format!("srvcmd:{}:{name}", common::run_id())
}

#[tokio::test]
async fn validation_errors_are_redis_own() {
    let redis = RedisServer::start();
    let cluster = common::shared_cluster();
    same_as_redis(
        &redis,
        cluster.proxy_addr(),
        &[
            // CLIENT PAUSE / UNPAUSE
            &["CLIENT", "PAUSE"],
            &["CLIENT", "PAUSE", "abc"],
            &["CLIENT", "PAUSE", "-1"],
            &["CLIENT", "PAUSE", "10", "foo"],
            &["CLIENT", "PAUSE", "x", "foo"],
            &["CLIENT", "PAUSE", "10", "write", "extra"],
            &["CLIENT", "UNPAUSE", "x"],
            &["CLIENT", "UNPAUSE"],
            // CLIENT TRACKING and friends (each check leaves tracking off, or turns it off)
            &["CLIENT", "TRACKING"],
            &["CLIENT", "TRACKING", "maybe"],
            &["CLIENT", "TRACKING", "on", "bogus"],
            &["CLIENT", "TRACKING", "on", "prefix", "a"],
            &["CLIENT", "TRACKING", "on", "optin", "optout"],
            &["CLIENT", "TRACKING", "on", "bcast", "optout"],
            &["CLIENT", "TRACKING", "on", "redirect", "abc"],
            &["CLIENT", "TRACKING", "on", "redirect", "987654321"],
            &["CLIENT", "TRACKING", "on", "bcast", "prefix", "ab", "prefix", "a"],
            &["CLIENT", "TRACKINGINFO"],
            &["CLIENT", "GETREDIR"],
            &["CLIENT", "CACHING", "yes"],
            &["CLIENT", "CACHING", "yes", "x"],
            &["CLIENT", "TRACKING", "on", "bcast"],
            &["CLIENT", "TRACKINGINFO"],
            &["CLIENT", "TRACKING", "on", "bcast", "prefix", "a"],
            &["CLIENT", "TRACKING", "on"],
            &["CLIENT", "TRACKING", "off"],
            &["CLIENT", "TRACKING", "on", "optin", "noloop"],
            &["CLIENT", "CACHING", "no"],
            &["CLIENT", "CACHING", "maybe"],
            &["CLIENT", "CACHING", "yes"],
            &["CLIENT", "TRACKINGINFO"],
            &["PING"],
            &["CLIENT", "TRACKINGINFO"],
            &["CLIENT", "GETREDIR"],
            &["CLIENT", "TRACKING", "on", "optout"],
            &["CLIENT", "TRACKING", "off"],
            &["CLIENT", "GETREDIR"],
            &["~HELLO", "3"],
            &["CLIENT", "TRACKINGINFO"],
            &["~HELLO", "2"],
            // CLIENT UNBLOCK: nobody is ever blocked
            &["CLIENT", "UNBLOCK"],
            &["CLIENT", "UNBLOCK", "abc"],
            &["CLIENT", "UNBLOCK", "5", "foo"],
            &["CLIENT", "UNBLOCK", "987654321"],
            &["CLIENT", "UNBLOCK", "987654321", "error"],
            &["CLIENT", "UNBLOCK", "1", "timeout", "x"],
            // COMMAND GETKEYS / GETKEYSANDFLAGS / LIST (not `COMMAND GETKEYS get`: Redis 7.2 answers
            // "Invalid number of arguments", 7.0 — the reference here — a wrong-arity error)
            &["COMMAND", "GETKEYS"],
            &["COMMAND", "GETKEYS", "mset", "a", "1", "b"],
            &["COMMAND", "GETKEYS", "get", "a", "b"],
            &["COMMAND", "GETKEYS", "nosuchcommand", "a"],
            &["COMMAND", "GETKEYS", "ping", "x"],
            &["COMMAND", "GETKEYS", "eval", "return 1", "2", "a", "b", "c"],
            &["COMMAND", "GETKEYS", "eval", "return 1", "3", "a"],
            &["COMMAND", "GETKEYS", "eval", "return 1", "x"],
            &["COMMAND", "GETKEYSANDFLAGS", "set", "a", "b"],
            &["COMMAND", "GETKEYSANDFLAGS", "set", "a", "b", "GET"],
            &["COMMAND", "GETKEYSANDFLAGS", "rename", "a", "b"],
            &["COMMAND", "GETKEYSANDFLAGS", "del", "a", "b"],
            &["COMMAND", "GETKEYSANDFLAGS", "incr", "a"],
            &["COMMAND", "GETKEYSANDFLAGS", "mget", "a", "b"],
            &["COMMAND", "LIST", "foo"],
            &["COMMAND", "LIST", "FILTERBY", "foo", "x"],
            &["COMMAND", "LIST", "FILTERBY", "pattern"],
            &["COMMAND", "LIST", "FILTERBY", "MODULE", "nosuchmodule"],
            &["COMMAND", "LIST", "FILTERBY", "ACLCAT", "nosuchcategory"],
            // SLOWLOG / LATENCY (no successful CONFIG SET here: the cluster is shared)
            &["SLOWLOG"],
            &["SLOWLOG", "FOO"],
            &["SLOWLOG", "LEN", "x"],
            &["SLOWLOG", "GET", "-2"],
            &["SLOWLOG", "GET", "x"],
            &["SLOWLOG", "GET", "1", "2"],
            // Redis 7.2 ends HELP with "Print this help.", 7.0 with "Prints this help.".
            &["~SLOWLOG", "HELP"],
            &["LATENCY", "FOO"],
            &["LATENCY", "HISTORY"],
            &["LATENCY", "HISTORY", "command"],
            &["LATENCY", "LATEST"],
            &["CONFIG", "SET", "slowlog-log-slower-than", "abc"],
            &["CONFIG", "SET", "slowlog-log-slower-than", "-5"],
            &["CONFIG", "SET", "slowlog-max-len", "-1"],
            &["CONFIG", "SET", "latency-monitor-threshold", "-1"],
            &["CONFIG", "SET", "latency-monitor-threshold", "x"],
            &["CONFIG", "GET", "latency-monitor-threshold"],
            // MEMORY
            &["MEMORY", "FOO"],
            &["MEMORY", "USAGE"],
            &["MEMORY", "USAGE", "k", "SAMPLES"],
            &["MEMORY", "USAGE", "k", "SAMPLES", "x"],
            &["MEMORY", "USAGE", "k", "SAMPLES", "-1"],
            &["MEMORY", "USAGE", "k", "FOO", "1"],
            // CLUSTER / READONLY / READWRITE / ASKING, as a standalone Redis
            &["CLUSTER"],
            &["CLUSTER", "INFO"],
            &["CLUSTER", "SLOTS"],
            &["CLUSTER", "SHARDS"],
            &["CLUSTER", "NODES"],
            &["CLUSTER", "MYID"],
            &["CLUSTER", "HELP"],
            &["CLUSTER", "KEYSLOT", "a"],
            &["CLUSTER", "foo"],
            &["CLUSTER", "info", "x"],
            &["READONLY"],
            &["READWRITE"],
            &["ASKING"],
            &["READONLY", "x"],
        ],
    )
    .await;
}

/// MEMORY USAGE reports what Redis 7 reports for the same key and value (a missing key: nil).
#[tokio::test]
async fn memory_usage_matches_redis_figures() {
    let redis = RedisServer::start();
    let cluster = common::shared_cluster();
    let (short, long, number) = (key("mem:short"), key("mem:long"), key("mem:int"));
    let long_value = "x".repeat(300);
    same_as_redis(
        &redis,
        cluster.proxy_addr(),
        &[
            &["MEMORY", "USAGE", &key("mem:missing")],
            &["SET", &short, "hello"],
            &["SET", &long, &long_value],
            &["SET", &number, "12345"],
            &["MEMORY", "USAGE", &short],
            &["MEMORY", "USAGE", &long, "SAMPLES", "0"],
            &["memory", "usage", &number],
        ],
    )
    .await;
}

/// A write sent while the proxy is paused for writes answers only once the pause is lifted; reads go on
/// meanwhile; a pause of every command ends by itself when its timeout passes.
#[tokio::test]
async fn client_pause_holds_writes_until_unpause() {
    let cluster = Cluster::start();
    let addr = cluster.proxy_addr();
    let mut admin = common::connect(addr, false).await;
    let mut reader = common::connect(addr, false).await;
    let k = key("paused");

    assert_eq!(call(&mut admin, &["CLIENT", "PAUSE", "20000", "WRITE"]).await, Value::Okay);
    let mut writer = common::connect(addr, true).await;
    let k2 = k.clone();
    let write = tokio::spawn(async move {
        let sent = Instant::now();
        let reply = call(&mut writer, &["SET", &k2, "after-pause"]).await;
        (reply, sent.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!write.is_finished(), "the SET was answered during a WRITE pause");
    // Redis counts a paused client among the blocked ones.
    let clients = text(&call(&mut admin, &["INFO", "clients"]).await);
    assert!(clients.contains("\r\nblocked_clients:1\r\n"), "{clients}");
    // Reads are not held by a WRITE pause, and the held write has not been applied.
    let read = tokio::time::timeout(Duration::from_secs(5), call(&mut reader, &["GET", &k])).await;
    assert_eq!(read.expect("a GET during a WRITE pause must answer"), Value::Nil);
    assert!(!write.is_finished());
    assert_eq!(call(&mut admin, &["CLIENT", "UNPAUSE"]).await, Value::Okay);
    let (reply, took) =
        tokio::time::timeout(Duration::from_secs(10), write).await.expect("UNPAUSE releases the write").unwrap();
    assert_eq!(reply, Value::Okay);
    assert!(took >= Duration::from_millis(800), "the SET answered after {took:?}");
    assert_eq!(call(&mut reader, &["GET", &k]).await, bulk("after-pause"));
    assert!(text(&call(&mut admin, &["INFO", "clients"]).await).contains("\r\nblocked_clients:0\r\n"));

    // ALL holds every command, and the pause ends when its timeout passes (no UNPAUSE).
    assert_eq!(call(&mut admin, &["CLIENT", "PAUSE", "1500", "ALL"]).await, Value::Okay);
    let sent = Instant::now();
    assert_eq!(call(&mut reader, &["GET", &k]).await, bulk("after-pause"));
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(1000), "a GET during an ALL pause answered after {took:?}");
    assert!(took < Duration::from_secs(15), "the pause did not end by itself: {took:?}");

    // A pipelined read behind a held write waits for it: a connection's commands keep their order.
    let mut raw = RawConn::connect(addr).await;
    assert_eq!(call(&mut admin, &["CLIENT", "PAUSE", "20000", "WRITE"]).await, Value::Okay);
    raw.send(&["SET", &k, "second"]).await;
    raw.send(&["GET", &k]).await;
    let replies = tokio::spawn(async move { (raw.read_reply().await, raw.read_reply().await) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!replies.is_finished(), "a held connection answered during the pause");
    assert_eq!(call(&mut admin, &["CLIENT", "UNPAUSE"]).await, Value::Okay);
    let (set, get) = tokio::time::timeout(Duration::from_secs(10), replies).await.expect("released").unwrap();
    assert_eq!((set.as_str(), get.as_str()), ("+OK\r\n", "$6\r\nsecond\r\n"));
}

/// With `slowlog-log-slower-than 0` every command is logged, as Redis formats entries; the settings take
/// effect at once. The latency monitor, and CONFIG RESETSTAT, on the same proxy.
#[tokio::test]
async fn slowlog_latency_and_resetstat() {
    let cluster = Cluster::start();
    let addr = cluster.proxy_addr();
    let mut c = common::connect(addr, false).await;
    let k = key("slow");
    let value = "v".repeat(200);

    assert_eq!(
        call(&mut c, &["CONFIG", "GET", "slowlog-log-slower-than"]).await,
        Value::Array(vec![bulk("slowlog-log-slower-than"), bulk("10000")])
    );
    assert_eq!(call(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SLOWLOG", "RESET"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["CLIENT", "SETNAME", "slow-tester"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SET", &k, &value]).await, Value::Okay);
    assert_eq!(call(&mut c, &["GET", &k]).await, bulk(&value));
    let addr_of_client = text(&call(&mut c, &["CLIENT", "INFO"]).await)
        .split(' ')
        .find_map(|f| f.strip_prefix("addr=").map(str::to_string))
        .expect("CLIENT INFO addr");
    let Value::Array(entries) = call(&mut c, &["SLOWLOG", "GET", "-1"]).await else { panic!("SLOWLOG GET") };
    assert!(entries.len() >= 4, "SLOWLOG RESET, SETNAME, SET and GET are logged: {entries:?}");
    let set = entries
        .iter()
        .find_map(|e| match e {
            Value::Array(f) if f.len() == 6 && text_args(&f[3]).first().is_some_and(|a| a == "SET") => Some(f.clone()),
            _ => None,
        })
        .expect("the SET is in the slow log");
    assert_eq!(
        text_args(&set[3]),
        vec!["SET".to_string(), k.clone(), format!("{}... (72 more bytes)", "v".repeat(128))],
        "arguments over 128 bytes are cut as Redis cuts them"
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let Value::Int(at) = set[1] else { panic!("{set:?}") };
    assert!((now - at).abs() < 60, "entry time {at}, now {now}");
    assert!(matches!(set[2], Value::Int(us) if us >= 0));
    assert_eq!(set[4], bulk(&addr_of_client));
    assert_eq!(set[5], bulk("slow-tester"));
    let ids: Vec<i64> = entries
        .iter()
        .map(|e| match e {
            Value::Array(f) => match f[0] {
                Value::Int(id) => id,
                _ => panic!(),
            },
            _ => panic!(),
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(matches!(call(&mut c, &["SLOWLOG", "GET", "1"]).await, Value::Array(one) if one.len() == 1));
    assert_eq!(call(&mut c, &["CONFIG", "SET", "slowlog-max-len", "2"]).await, Value::Okay);
    assert!(matches!(call(&mut c, &["SLOWLOG", "LEN"]).await, Value::Int(n) if n <= 2));
    assert_eq!(call(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SLOWLOG", "RESET"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["GET", &k]).await, bulk(&value));
    assert_eq!(call(&mut c, &["SLOWLOG", "LEN"]).await, int(0), "a negative threshold logs nothing");

    // The latency monitor: off by default; with a 1 ms threshold, a two-phase commit over 1000 keys
    // reaches it.
    assert_eq!(call(&mut c, &["LATENCY", "LATEST"]).await, Value::Array(vec![]));
    assert_eq!(call(&mut c, &["CONFIG", "SET", "latency-monitor-threshold", "1"]).await, Value::Okay);
    let pairs: Vec<String> = (0..1000).flat_map(|i| [key(&format!("many{i}")), "x".repeat(100)]).collect();
    let mset: Vec<&str> = std::iter::once("MSET").chain(pairs.iter().map(String::as_str)).collect();
    let mut latest = Vec::new();
    for _ in 0..20 {
        assert_eq!(call(&mut c, &mset).await, Value::Okay);
        if let Value::Array(events) = call(&mut c, &["LATENCY", "LATEST"]).await {
            latest = events;
        }
        if !latest.is_empty() {
            break;
        }
    }
    let Some(Value::Array(event)) = latest.iter().find(|e| matches!(e, Value::Array(f) if f[0] == bulk("command")))
    else {
        panic!("no `command` event after 20 MSETs of 1000 keys: {latest:?}");
    };
    assert!(matches!((&event[2], &event[3]), (Value::Int(last), Value::Int(max)) if *last >= 1 && max >= last));
    assert!(matches!(call(&mut c, &["LATENCY", "HISTORY", "command"]).await, Value::Array(h) if !h.is_empty()));
    assert!(matches!(call(&mut c, &["LATENCY", "RESET"]).await, Value::Int(n) if n >= 1));
    assert_eq!(call(&mut c, &["CONFIG", "SET", "latency-monitor-threshold", "0"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["LATENCY", "LATEST"]).await, Value::Array(vec![]));

    // CONFIG RESETSTAT: INFO stats' counters and commandstats start again.
    let stat = |info: &str, field: &str| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{field} not in {info}"))
    };
    let before = text(&call(&mut c, &["INFO", "stats"]).await);
    assert!(stat(&before, "total_commands_processed") > 20, "{before}");
    assert!(text(&call(&mut c, &["INFO", "commandstats"]).await).contains("cmdstat_get:"));
    assert_eq!(call(&mut c, &["CONFIG", "RESETSTAT"]).await, Value::Okay);
    let after = text(&call(&mut c, &["INFO", "stats"]).await);
    assert!(stat(&after, "total_commands_processed") <= 2, "{after}");
    assert_eq!(stat(&after, "total_connections_received"), 0, "{after}");
    let commandstats = text(&call(&mut c, &["INFO", "commandstats"]).await);
    assert!(!commandstats.contains("cmdstat_get:"), "{commandstats}");
}

fn text_args(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(text).collect(),
        other => panic!("arguments: {other:?}"),
    }
}

/// INFO keyspace reports each non-empty database's keys, keys with a TTL, and their mean TTL.
#[tokio::test]
async fn info_keyspace_counts_the_database() {
    let cluster = common::shared_cluster();
    let mut c = common::connect(cluster.proxy_addr(), false).await;
    // A database no other test of this binary uses, so that its figures are this test's alone.
    assert_eq!(call(&mut c, &["SELECT", "11"]).await, Value::Okay);
    for (i, ttl) in [(1, None), (2, None), (3, Some("100"))] {
        let k = key(&format!("ks{i}"));
        let mut args = vec!["SET", &k, "v"];
        if let Some(ttl) = ttl {
            args.extend(["EX", ttl]);
        }
        assert_eq!(call(&mut c, &args).await, Value::Okay);
    }
    // The figures of a walk are reused for a few seconds: the new keys show within a bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let info = text(&call(&mut c, &["INFO", "keyspace"]).await);
        assert!(info.starts_with("# Keyspace\r\n"), "{info}");
        if let Some(line) = info.lines().find(|l| l.starts_with("db11:")) {
            if line.starts_with("db11:keys=3,expires=1,") {
                break line.to_string();
            }
        }
        assert!(Instant::now() < deadline, "INFO keyspace never showed db11's 3 keys: {info}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let avg_ttl: u64 = line.rsplit_once("avg_ttl=").unwrap().1.parse().unwrap();
    assert!(avg_ttl > 50_000 && avg_ttl <= 100_000, "{line}");
    let default = text(&call(&mut c, &["INFO"]).await);
    assert!(default.contains("# Keyspace\r\n") && default.contains("db11:keys="), "INFO default has the section");
    assert!(!text(&call(&mut c, &["INFO", "server"]).await).contains("# Keyspace"));
}

/// COMMAND LIST and INFO's ACL categories, through a typed client.
#[tokio::test]
async fn command_list_and_categories() {
    let cluster = common::shared_cluster();
    let mut c = common::connect(cluster.proxy_addr(), true).await;
    let names = |v: Value| -> Vec<String> {
        match v {
            Value::Array(a) => a.iter().map(text).collect(),
            other => panic!("COMMAND LIST: {other:?}"),
        }
    };
    let all = names(call(&mut c, &["COMMAND", "LIST"]).await);
    for n in ["get", "set", "client", "client|pause", "slowlog|get", "command|getkeys", "cluster"] {
        assert!(all.iter().any(|x| x == n), "{n} not in COMMAND LIST");
    }
    let strings = names(call(&mut c, &["COMMAND", "LIST", "FILTERBY", "ACLCAT", "string"]).await);
    assert!(strings.contains(&"get".to_string()) && !strings.contains(&"del".to_string()), "{strings:?}");
    let client = names(call(&mut c, &["COMMAND", "LIST", "FILTERBY", "PATTERN", "client|*"]).await);
    assert!(!client.is_empty() && client.iter().all(|n| n.starts_with("client|")), "{client:?}");
    let Value::Array(info) = call(&mut c, &["COMMAND", "INFO", "get", "slowlog"]).await else { panic!() };
    let categories = |entry: &Value| -> Vec<String> {
        match entry {
            Value::Array(f) => match &f[6] {
                Value::Set(s) | Value::Array(s) => s.iter().map(text).collect(),
                other => panic!("categories: {other:?}"),
            },
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(categories(&info[0]), vec!["@read", "@string", "@fast"]);
    assert_eq!(categories(&info[1]), vec!["@slow"]);
    assert!(error_text(&call(&mut c, &["COMMAND", "GETKEYS", "ping"]).await).is_some());
}

/// redis-py's own methods (Debian's python3-redis) against Vesta: CLIENT PAUSE/UNPAUSE, tracking,
/// SLOWLOG GET's parsing, MEMORY USAGE, COMMAND GETKEYS/LIST, INFO keyspace's parsing.
#[tokio::test]
async fn redis_py_methods() {
    let python = "/usr/bin/python3";
    let probe = std::process::Command::new(python).args(["-c", "import redis"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("redis_py_methods: SKIPPED — {python} cannot import redis (install Debian's python3-redis)");
        return;
    }
    let cluster = Cluster::start();
    let port = cluster.proxy_addr().port().to_string();
    let prefix = key("py");
    let script = r#"
import sys, threading, time, redis
port, prefix = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(port=port, socket_timeout=30)
w = redis.Redis(port=port, socket_timeout=30)
assert r.ping()

# CLIENT PAUSE WRITE holds a write until CLIENT UNPAUSE.
assert r.client_pause(20000, all=False) is True
done = {}
def write():
    t = time.time(); w.set(prefix + ":k", "v"); done["took"] = time.time() - t
th = threading.Thread(target=write); th.start()
time.sleep(0.7)
assert "took" not in done, "write answered during the pause"
assert r.get(prefix + ":k") is None
assert r.client_unpause() in (True, b"OK")
th.join(10)
assert done.get("took", 0) >= 0.6, done

# Tracking: accepted, reported, validated.
assert r.client_tracking_on(optin=True) in (True, b"OK")
info = r.client_trackinginfo()
assert info == ["flags", [b"on", b"optin"], "redirect", 0, "prefixes", []], info
assert r.client_getredir() == 0
assert r.client_tracking_off() in (True, b"OK")
assert r.client_getredir() == -1
try:
    r.client_tracking_on(clientid=987654321); raise SystemExit("redirect to a missing client accepted")
except redis.ResponseError as e:
    assert str(e) == "The client ID you want redirect to does not exist", str(e)
assert r.client_unblock(12345) == 0

# SLOWLOG through redis-py's parser.
assert r.config_set("slowlog-log-slower-than", 0) is True
assert r.slowlog_reset() is True
r.set(prefix + ":s", "hello")
entries = r.slowlog_get(100)
assert any(e["command"] == b"SET " + (prefix + ":s").encode() + b" hello" for e in entries), entries
assert r.slowlog_len() >= 2
assert r.config_set("slowlog-log-slower-than", -1) is True

# MEMORY USAGE, COMMAND GETKEYS / LIST.
assert isinstance(r.memory_usage(prefix + ":s"), int)
assert r.memory_usage(prefix + ":missing") is None
assert r.command_getkeys("MSET", "a", "1", "b", "2") == ["a", "b"]
assert b"client|pause" in r.command_list(pattern="client*")

# INFO keyspace through redis-py's parser.
r.set(prefix + ":ttl", "x", ex=1000)
deadline = time.time() + 30
while True:
    ks = r.info("keyspace")
    if ks.get("db0", {}).get("expires", 0) >= 1:
        break
    assert time.time() < deadline, ks
    time.sleep(0.5)
assert ks["db0"]["keys"] >= 3 and 0 < ks["db0"]["avg_ttl"] <= 1000000, ks
assert r.config_resetstat() is True
print("DONE")
"#;
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python).args(["-c", script, &port, &prefix]).output(),
    )
    .await
    .expect("the redis-py script finished within 2 minutes")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("DONE"),
        "redis-py script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
