//! Redis command semantics through `vesta proxy`: normal replies, Redis 7.0's exact error texts, TTL rules,
//! RESP2 vs RESP3 encodings, pipelining, and `vesta dev`.
//!
//! Every expectation here is Redis 7.0's real behaviour. To check them against a real Redis instead of a
//! Vesta cluster:
//!
//! ```sh
//! redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no &
//! VESTA_TEST_REDIS_ADDR=127.0.0.1:6390 cargo test --release -p vesta --test proxy_commands
//! ```
//!
//! Tests marked **Vesta-only** (they look inside the store nodes, start `vesta dev`, or cover a Redis ≥7.2
//! command) skip themselves in that mode; everything else runs against both. Without the variable the tests
//! share one three-zone cluster (3 × `vesta store` + `vesta proxy`); each test uses keys of its own.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bulk, call, call_bin, error_text, int, simple, text, Cluster, RawConn};
use redis::aio::MultiplexedConnection;
use redis::Value;

// ---------------------------------------------------------------------------------------------------
// Target server and helpers
// ---------------------------------------------------------------------------------------------------

/// What the tests talk to: a real Redis (`VESTA_TEST_REDIS_ADDR`) or a Vesta cluster.
struct Target {
    addr: SocketAddr,
    cluster: Option<Arc<Cluster>>,
}

impl Target {
    fn get() -> Target {
        match std::env::var("VESTA_TEST_REDIS_ADDR") {
            Ok(addr) => Target { addr: addr.parse().expect("VESTA_TEST_REDIS_ADDR=IP:PORT"), cluster: None },
            Err(_) => {
                let cluster = common::shared_cluster();
                Target { addr: cluster.proxy_addr(), cluster: Some(cluster) }
            }
        }
    }

    /// The Vesta cluster, or `None` (after saying so) when running against a real Redis.
    fn vesta_only(&self, test: &str) -> Option<&Cluster> {
        if self.cluster.is_none() {
            eprintln!("{test}: Vesta-only, skipped against {}", self.addr);
        }
        self.cluster.as_deref()
    }

    async fn conn(&self, resp3: bool) -> MultiplexedConnection {
        common::connect(self.addr, resp3).await
    }

    async fn raw(&self) -> RawConn {
        RawConn::connect(self.addr).await
    }
}

/// Key names unique to one test, one protocol and one run.
struct Keys(String);

impl Keys {
    fn new(test: &str, resp3: bool) -> Keys {
        Keys(format!("{test}:{}:{}", if resp3 { "r3" } else { "r2" }, common::run_id()))
    }
    fn k(&self, name: &str) -> String {
        format!("{}:{name}", self.0)
    }
}

#[track_caller]
fn assert_err(v: Value, want: &str) {
    match error_text(&v) {
        Some(got) => assert_eq!(got, want, "wrong error text"),
        None => panic!("expected error {want:?}, got {v:?}"),
    }
}

#[track_caller]
fn as_int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("expected an integer reply, got {other:?}"),
    }
}

/// Runs `$check(&mut conn, &keys)` once over RESP2 and once over RESP3 (after `HELLO 3`).
macro_rules! both_protocols {
    ($($name:ident => $check:ident;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let t = Target::get();
            for resp3 in [false, true] {
                let mut c = t.conn(resp3).await;
                $check(&mut c, &Keys::new(stringify!($name), resp3), resp3).await;
            }
        }
    )*};
}

both_protocols! {
    ping_and_echo => check_ping_and_echo;
    unknown_commands => check_unknown_commands;
    auth => check_auth;
    select => check_select;
    client_subcommands => check_client_subcommands;
    command_introspection => check_command_introspection;
    info_and_config_get => check_info_and_config_get;
    get_and_set => check_get_and_set;
    set_conditions_and_get => check_set_conditions_and_get;
    set_expiry_options => check_set_expiry_options;
    set_syntax_errors => check_set_syntax_errors;
    setnx_setex_psetex => check_setnx_setex_psetex;
    getset_getdel => check_getset_getdel;
    ranges_type_touch_time => check_ranges_type_touch_time;
    getex => check_getex;
    mget_mset => check_mget_mset;
    del_unlink_exists => check_del_unlink_exists;
    ttl_pttl_expiretime_persist => check_ttl_pttl_expiretime_persist;
    expire_family => check_expire_family;
    expire_conditions => check_expire_conditions;
    which_writes_keep_the_ttl => check_which_writes_keep_the_ttl;
    incr_decr => check_incr_decr;
    incr_overflow_and_bad_integers => check_incr_overflow_and_bad_integers;
    incrbyfloat => check_incrbyfloat;
    append_strlen => check_append_strlen;
    arity_errors => check_arity_errors;
}

// ---------------------------------------------------------------------------------------------------
// Connection commands
// ---------------------------------------------------------------------------------------------------

async fn check_ping_and_echo(c: &mut MultiplexedConnection, _k: &Keys, _resp3: bool) {
    assert_eq!(call(c, &["PING"]).await, simple("PONG"));
    assert_eq!(call(c, &["ping", "hello"]).await, bulk("hello"));
    assert_err(call(c, &["PING", "a", "b"]).await, "ERR wrong number of arguments for 'ping' command");
    assert_eq!(call(c, &["ECHO", "hi there"]).await, bulk("hi there"));
    assert_eq!(call(c, &["echo", ""]).await, bulk(""));
    assert_err(call(c, &["ECHO"]).await, "ERR wrong number of arguments for 'echo' command");
    assert_err(call(c, &["ECHO", "a", "b"]).await, "ERR wrong number of arguments for 'echo' command");
}

async fn check_unknown_commands(c: &mut MultiplexedConnection, _k: &Keys, _resp3: bool) {
    assert_err(call(c, &["foo", "a", "b"]).await, "ERR unknown command 'foo', with args beginning with: 'a' 'b' ");
    assert_err(call(c, &["foo"]).await, "ERR unknown command 'foo', with args beginning with: ");
    // The name keeps the client's spelling.
    assert_err(call(c, &["Foo", "Bar"]).await, "ERR unknown command 'Foo', with args beginning with: 'Bar' ");
    // Redis stops listing arguments once the list reaches 128 characters and cuts the name at 128.
    let long = "x".repeat(200);
    assert_err(
        call(c, &["foo", long.as_str(), "b"]).await,
        &format!("ERR unknown command 'foo', with args beginning with: '{}' ", "x".repeat(128)),
    );
    assert_err(
        call(c, &["foo", "a", &"y".repeat(150)]).await,
        &format!("ERR unknown command 'foo', with args beginning with: 'a' '{}' ", "y".repeat(124)),
    );
    assert_err(
        call(c, &[long.as_str()]).await,
        &format!("ERR unknown command '{}', with args beginning with: ", "x".repeat(128)),
    );
    // The connection is still usable.
    assert_eq!(call(c, &["PING"]).await, simple("PONG"));
}

async fn check_auth(c: &mut MultiplexedConnection, _k: &Keys, _resp3: bool) {
    // No password configured (the default): AUTH with a password only is a configuration mistake, the
    // `default` user accepts any password, other users do not exist.
    assert_err(
        call(c, &["AUTH", "secret"]).await,
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?",
    );
    assert_eq!(call(c, &["AUTH", "default", "anything"]).await, Value::Okay);
    assert_err(
        call(c, &["AUTH", "bob", "secret"]).await,
        "WRONGPASS invalid username-password pair or user is disabled.",
    );
    assert_err(call(c, &["AUTH", "a", "b", "c"]).await, "ERR syntax error");
    assert_err(call(c, &["AUTH"]).await, "ERR wrong number of arguments for 'auth' command");
    assert_eq!(call(c, &["PING"]).await, simple("PONG"));
}

async fn check_select(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    assert_err(call(c, &["SELECT", "abc"]).await, "ERR value is not an integer or out of range");
    assert_err(call(c, &["SELECT", "-1"]).await, "ERR DB index is out of range");
    assert_err(call(c, &["SELECT"]).await, "ERR wrong number of arguments for 'select' command");
    assert_err(call(c, &["SELECT", "1", "2"]).await, "ERR wrong number of arguments for 'select' command");

    // Databases are separate keyspaces.
    assert_eq!(call(c, &["SELECT", "0"]).await, Value::Okay);
    assert_eq!(call(c, &["SET", &key, "in-db0"]).await, Value::Okay);
    assert_eq!(call(c, &["SELECT", "1"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, Value::Nil);
    assert_eq!(call(c, &["EXISTS", &key]).await, int(0));
    assert_eq!(call(c, &["SET", &key, "in-db1"]).await, Value::Okay);
    assert_eq!(call(c, &["INCR", &k.k("n")]).await, int(1));
    assert_eq!(call(c, &["SELECT", "15"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, Value::Nil);
    assert_eq!(call(c, &["SELECT", "0"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, bulk("in-db0"));
    assert_eq!(call(c, &["GET", &k.k("n")]).await, Value::Nil);
    assert_eq!(call(c, &["SELECT", "1"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, bulk("in-db1"));
    assert_eq!(call(c, &["DEL", &key]).await, int(1));
    assert_eq!(call(c, &["SELECT", "0"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, bulk("in-db0"));
}

async fn check_client_subcommands(c: &mut MultiplexedConnection, _k: &Keys, resp3: bool) {
    let id = as_int(&call(c, &["CLIENT", "ID"]).await);
    assert!(id > 0);
    assert_eq!(call(c, &["CLIENT", "ID"]).await, int(id), "the id of a connection never changes");
    assert_eq!(call(c, &["CLIENT", "GETNAME"]).await, Value::Nil);
    assert_eq!(call(c, &["CLIENT", "SETNAME", "worker-1"]).await, Value::Okay);
    assert_eq!(call(c, &["client", "getname"]).await, bulk("worker-1"));
    assert_err(
        call(c, &["CLIENT", "SETNAME", "a b"]).await,
        "ERR Client names cannot contain spaces, newlines or special characters.",
    );
    assert_eq!(call(c, &["CLIENT", "GETNAME"]).await, bulk("worker-1"));
    // An empty name removes it.
    assert_eq!(call(c, &["CLIENT", "SETNAME", ""]).await, Value::Okay);
    assert_eq!(call(c, &["CLIENT", "GETNAME"]).await, Value::Nil);
    assert_eq!(call(c, &["CLIENT", "SETNAME", "worker-2"]).await, Value::Okay);

    let info = call(c, &["CLIENT", "INFO"]).await;
    if resp3 {
        assert!(matches!(info, Value::VerbatimString { .. }), "RESP3 CLIENT INFO is a verbatim string: {info:?}");
    } else {
        assert!(matches!(info, Value::BulkString(_)), "CLIENT INFO: {info:?}");
    }
    let info = text(&info);
    assert!(info.starts_with(&format!("id={id} ")), "{info}");
    assert!(info.contains(" name=worker-2 "), "{info}");

    assert_err(call(c, &["CLIENT", "NOSUCH"]).await, "ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP.");
    assert_err(call(c, &["CLIENT"]).await, "ERR wrong number of arguments for 'client' command");
    assert_err(call(c, &["CLIENT", "SETNAME"]).await, "ERR wrong number of arguments for 'client|setname' command");
    assert_err(call(c, &["CLIENT", "ID", "x"]).await, "ERR wrong number of arguments for 'client|id' command");
    assert_eq!(call(c, &["PING"]).await, simple("PONG"));
}

/// Vesta-only: CLIENT SETINFO is Redis 7.2 (Redis 7.0 answers `unknown subcommand`); every modern client
/// sends it on connect.
#[tokio::test]
async fn client_setinfo() {
    let t = Target::get();
    if t.vesta_only("client_setinfo").is_none() {
        return;
    }
    for resp3 in [false, true] {
        let mut c = t.conn(resp3).await;
        assert_eq!(call(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "vesta-tests"]).await, Value::Okay);
        assert_eq!(call(&mut c, &["CLIENT", "SETINFO", "lib-ver", "1.2.3"]).await, Value::Okay);
    }
}

async fn check_command_introspection(c: &mut MultiplexedConnection, _k: &Keys, resp3: bool) {
    let count = as_int(&call(c, &["COMMAND", "COUNT"]).await);
    assert!(count > 0);
    match call(c, &["COMMAND"]).await {
        Value::Array(all) => assert_eq!(all.len() as i64, count, "COMMAND lists COMMAND COUNT commands"),
        other => panic!("COMMAND: {other:?}"),
    }

    // name, arity, flags, first key, last key, step (then ACL categories, tips, key specs, subcommands).
    let infos = match call(c, &["COMMAND", "INFO", "get", "SET", "mget", "mset", "nosuchcmd"]).await {
        Value::Array(infos) => infos,
        other => panic!("COMMAND INFO: {other:?}"),
    };
    assert_eq!(infos.len(), 5);
    for (info, (name, arity, first, last, step)) in
        infos.iter().zip([("get", 2, 1, 1, 1), ("set", -3, 1, 1, 1), ("mget", -2, 1, -1, 1), ("mset", -3, 1, -1, 2)])
    {
        let Value::Array(fields) = info else { panic!("COMMAND INFO {name}: {info:?}") };
        assert_eq!(fields[0], bulk(name));
        assert_eq!(fields[1], int(arity), "arity of {name}");
        let flags = match &fields[2] {
            Value::Array(f) | Value::Set(f) => f.iter().map(text).collect::<Vec<_>>(),
            other => panic!("flags of {name}: {other:?}"),
        };
        if resp3 {
            assert!(matches!(fields[2], Value::Set(_)), "RESP3 flags are a set: {:?}", fields[2]);
        }
        let want = if name == "get" || name == "mget" { "readonly" } else { "write" };
        assert!(flags.iter().any(|f| f == want), "{name} flags {flags:?}");
        assert_eq!(&fields[3..6], &[int(first), int(last), int(step)], "key positions of {name}");
    }
    assert_eq!(infos[4], Value::Nil, "unknown command");

    // COMMAND DOCS: a map (RESP3) or flat array (RESP2) from name to its docs.
    let docs = call(c, &["COMMAND", "DOCS", "get"]).await;
    let pairs: Vec<(Value, Value)> = match docs {
        Value::Map(pairs) => {
            assert!(resp3);
            pairs
        }
        Value::Array(flat) => {
            assert!(!resp3, "RESP3 COMMAND DOCS is a map");
            flat.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
        }
        other => panic!("COMMAND DOCS: {other:?}"),
    };
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].0, bulk("get"));
    let doc_keys: Vec<String> = match &pairs[0].1 {
        Value::Map(d) => d.iter().map(|(k, _)| text(k)).collect(),
        Value::Array(d) => d.iter().step_by(2).map(text).collect(),
        other => panic!("docs of get: {other:?}"),
    };
    for field in ["summary", "since", "group", "complexity"] {
        assert!(doc_keys.iter().any(|k| k == field), "docs of get lack {field}: {doc_keys:?}");
    }

    assert_err(call(c, &["COMMAND", "nosuch"]).await, "ERR unknown subcommand 'nosuch'. Try COMMAND HELP.");
}

async fn check_info_and_config_get(c: &mut MultiplexedConnection, _k: &Keys, resp3: bool) {
    for args in [&["INFO"][..], &["INFO", "server"], &["info", "SERVER"]] {
        let info = call(c, args).await;
        if resp3 {
            assert!(matches!(info, Value::VerbatimString { .. }), "RESP3 INFO is a verbatim string: {info:?}");
        }
        let info = text(&info);
        assert!(info.contains("# Server\r\n"), "{info}");
        let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).expect("redis_version");
        let major: u32 = version.split('.').next().unwrap().parse().unwrap();
        assert!(major >= 7, "clients gate features on redis_version: {version}");
    }
    // An unknown section is an empty string, not an error.
    assert_eq!(text(&call(c, &["INFO", "nosuchsection"]).await), "");

    // CONFIG GET answers a map (RESP3) / flat array (RESP2) of the parameters it knows among those asked.
    let reply = call(c, &["CONFIG", "GET", "save", "appendonly"]).await;
    let names: Vec<String> = match reply {
        Value::Map(pairs) => {
            assert!(resp3, "RESP2 CONFIG GET is an array");
            pairs.iter().map(|(k, _)| text(k)).collect()
        }
        Value::Array(flat) => {
            assert!(!resp3, "RESP3 CONFIG GET is a map");
            assert_eq!(flat.len() % 2, 0);
            flat.iter().step_by(2).map(text).collect()
        }
        other => panic!("CONFIG GET: {other:?}"),
    };
    assert!(names.iter().all(|n| n == "save" || n == "appendonly"), "{names:?}");
    let none = call(c, &["CONFIG", "GET", "no-such-parameter"]).await;
    assert!(
        matches!(&none, Value::Map(m) if m.is_empty()) || matches!(&none, Value::Array(a) if a.is_empty()),
        "{none:?}"
    );
    assert_err(call(c, &["CONFIG", "GET"]).await, "ERR wrong number of arguments for 'config|get' command");
}

/// CONFIG GET/SET of the client-edge parameters that take effect: `timeout` and
/// `client-output-buffer-limit` (Redis's syntax, classes included; refusals are in `redis_errors.rs`).
#[tokio::test]
async fn config_timeout_and_client_output_buffer_limit() {
    let t = Target::get();
    let mut c = t.conn(false).await;
    async fn get(c: &mut MultiplexedConnection, name: &str) -> String {
        match call(c, &["CONFIG", "GET", name]).await {
            Value::Array(pair) if pair.len() == 2 => text(&pair[1]),
            other => panic!("CONFIG GET {name}: {other:?}"),
        }
    }
    assert_eq!(call(&mut c, &["CONFIG", "SET", "timeout", "3600"]).await, Value::Okay);
    assert_eq!(get(&mut c, "timeout").await, "3600");
    assert_eq!(call(&mut c, &["CONFIG", "SET", "timeout", "0"]).await, Value::Okay);
    assert_eq!(get(&mut c, "timeout").await, "0");

    let before = get(&mut c, "client-output-buffer-limit").await;
    assert!(before.starts_with("normal "), "{before}");
    let set = call(&mut c, &["CONFIG", "SET", "client-output-buffer-limit", "normal 512mb 256mb 30"]).await;
    assert_eq!(set, Value::Okay);
    let now = get(&mut c, "client-output-buffer-limit").await;
    assert!(now.starts_with("normal 536870912 268435456 30 slave "), "{now}");
    let set =
        call(&mut c, &["CONFIG", "SET", "client-output-buffer-limit", "replica 1mb 512kb 10 NORMAL 1GB 0 0"]).await;
    assert_eq!(set, Value::Okay);
    let now = get(&mut c, "client-output-buffer-limit").await;
    assert!(now.starts_with("normal 1073741824 0 0 slave 1048576 524288 10 pubsub "), "{now}");
    assert_eq!(call(&mut c, &["CONFIG", "SET", "client-output-buffer-limit", &before]).await, Value::Okay);
    assert_eq!(get(&mut c, "client-output-buffer-limit").await, before);
}

/// HELLO over the wire: the reply's type follows the protocol asked for, and so do later replies.
#[tokio::test]
async fn hello_switches_protocol() {
    let t = Target::get();
    let mut raw = t.raw().await;
    let missing = format!("hello_switches_protocol:{}:missing", common::run_id());

    assert_eq!(raw.call(&["GET", &missing]).await, "$-1\r\n");
    let hello = raw.call(&["HELLO"]).await; // no argument: the current protocol
    assert!(hello.starts_with("*14\r\n"), "RESP2 HELLO is a flat array of 7 pairs: {hello:?}");
    assert!(hello.contains("$5\r\nproto\r\n:2\r\n"), "{hello:?}");

    let hello = raw.call(&["HELLO", "3"]).await;
    assert!(hello.starts_with("%7\r\n"), "RESP3 HELLO is a map of 7 entries: {hello:?}");
    for field in ["$6\r\nserver\r\n", "$7\r\nversion\r\n", "$5\r\nproto\r\n:3\r\n", "$2\r\nid\r\n:"] {
        assert!(hello.contains(field), "{field:?} missing in {hello:?}");
    }
    for field in ["$4\r\nmode\r\n$10\r\nstandalone\r\n", "$4\r\nrole\r\n$6\r\nmaster\r\n", "$7\r\nmodules\r\n*0\r\n"] {
        assert!(hello.contains(field), "{field:?} missing in {hello:?}");
    }
    assert_eq!(raw.call(&["GET", &missing]).await, "_\r\n");
    assert_eq!(raw.call(&["MGET", &missing, &missing]).await, "*2\r\n_\r\n_\r\n");
    assert_eq!(raw.call(&["CLIENT", "GETNAME"]).await, "_\r\n");
    assert!(raw.call(&["HELLO"]).await.starts_with("%7\r\n"));

    // HELLO's id is CLIENT ID.
    let id = hello.split("$2\r\nid\r\n:").nth(1).unwrap().split("\r\n").next().unwrap().to_string();
    assert_eq!(raw.call(&["CLIENT", "ID"]).await, format!(":{id}\r\n"));

    assert_eq!(raw.call(&["HELLO", "4"]).await, "-NOPROTO unsupported protocol version\r\n");
    assert_eq!(raw.call(&["HELLO", "1"]).await, "-NOPROTO unsupported protocol version\r\n");
    assert_eq!(raw.call(&["HELLO", "abc"]).await, "-ERR Protocol version is not an integer or out of range\r\n");
    assert!(raw.call(&["HELLO"]).await.starts_with("%7\r\n"), "a refused HELLO leaves the protocol alone");

    // SETNAME and AUTH (the default user, no password configured) inside HELLO.
    assert_eq!(
        raw.call(&["HELLO", "2", "SETNAME", "a b"]).await,
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        raw.call(&["HELLO", "3", "AUTH", "bob", "secret"]).await,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let hello = raw.call(&["HELLO", "2", "AUTH", "default", "whatever", "SETNAME", "conn-7"]).await;
    assert!(hello.starts_with("*14\r\n"), "{hello:?}");
    assert_eq!(raw.call(&["CLIENT", "GETNAME"]).await, "$6\r\nconn-7\r\n");
    assert_eq!(raw.call(&["GET", &missing]).await, "$-1\r\n");
    assert_eq!(raw.call(&["MGET", &missing]).await, "*1\r\n$-1\r\n");
}

/// The `redis` crate's view of HELLO 3: a map with the fields clients read.
#[tokio::test]
async fn hello_map_through_client() {
    let t = Target::get();
    let mut c = t.conn(true).await;
    let Value::Map(fields) = call(&mut c, &["HELLO", "3"]).await else { panic!("HELLO 3 must be a map") };
    let mut keys: Vec<String> = fields.iter().map(|(k, _)| text(k)).collect();
    keys.sort();
    assert_eq!(keys, ["id", "mode", "modules", "proto", "role", "server", "version"]);
    let get = |name: &str| fields.iter().find(|(k, _)| text(k) == name).unwrap().1.clone();
    assert_eq!(get("proto"), int(3));
    assert_eq!(get("mode"), bulk("standalone"));
    assert_eq!(get("role"), bulk("master"));
    assert_eq!(get("modules"), Value::Array(vec![]));
    assert_eq!(get("id"), call(&mut c, &["CLIENT", "ID"]).await);
}

/// RESP2 vs RESP3 null encodings of every command that can answer nil, byte for byte.
#[tokio::test]
async fn null_encodings() {
    let t = Target::get();
    for resp3 in [false, true] {
        let k = Keys::new("null_encodings", resp3);
        let (missing, present) = (k.k("missing"), k.k("present"));
        let mut raw = t.raw().await;
        if resp3 {
            assert!(raw.call(&["HELLO", "3"]).await.starts_with('%'));
        }
        let null = if resp3 { "_\r\n" } else { "$-1\r\n" };
        assert_eq!(raw.call(&["SET", &present, "p"]).await, "+OK\r\n");
        assert_eq!(raw.call(&["GET", &missing]).await, null);
        assert_eq!(raw.call(&["GETDEL", &missing]).await, null);
        assert_eq!(raw.call(&["GETEX", &missing, "EX", "10"]).await, null);
        assert_eq!(raw.call(&["GETSET", &missing, "x"]).await, null);
        assert_eq!(raw.call(&["DEL", &missing]).await, ":1\r\n");
        assert_eq!(raw.call(&["SET", &missing, "x", "GET"]).await, null);
        assert_eq!(raw.call(&["DEL", &missing]).await, ":1\r\n");
        assert_eq!(raw.call(&["SET", &present, "x", "NX"]).await, null);
        assert_eq!(raw.call(&["SET", &missing, "x", "XX"]).await, null);
        assert_eq!(raw.call(&["MGET", &present, &missing]).await, format!("*2\r\n$1\r\np\r\n{null}"));
        assert_eq!(raw.call(&["GET", &present]).await, "$1\r\np\r\n");
        assert_eq!(raw.call(&["SET", &present, "", "GET"]).await, "$1\r\np\r\n");
        assert_eq!(raw.call(&["GET", &present]).await, "$0\r\n\r\n", "empty string is not nil");
        // Integers and simple strings are the same in both.
        assert_eq!(raw.call(&["EXISTS", &present, &missing]).await, ":1\r\n");
        assert_eq!(raw.call(&["TTL", &missing]).await, ":-2\r\n");
        assert_eq!(raw.call(&["INCRBYFLOAT", &k.k("f"), "1.5"]).await, "$3\r\n1.5\r\n", "a bulk string in both");
    }
}

/// QUIT answers +OK and closes; RESET restores protocol, name and database.
#[tokio::test]
async fn quit_and_reset() {
    let t = Target::get();
    let k = Keys::new("quit_and_reset", false);
    let key = k.k("in-db1");

    let mut raw = t.raw().await;
    assert!(raw.call(&["HELLO", "3"]).await.starts_with('%'));
    assert_eq!(raw.call(&["SELECT", "1"]).await, "+OK\r\n");
    assert_eq!(raw.call(&["SET", &key, "v"]).await, "+OK\r\n");
    assert_eq!(raw.call(&["CLIENT", "SETNAME", "before-reset"]).await, "+OK\r\n");
    assert_eq!(raw.call(&["RESET"]).await, "+RESET\r\n");
    assert_eq!(raw.call(&["CLIENT", "GETNAME"]).await, "$-1\r\n", "RESP2 again, no name");
    assert_eq!(raw.call(&["GET", &key]).await, "$-1\r\n", "back in db 0");
    assert_eq!(raw.call(&["SELECT", "1"]).await, "+OK\r\n");
    assert_eq!(raw.call(&["GET", &key]).await, "$1\r\nv\r\n");
    assert_eq!(raw.call(&["DEL", &key]).await, ":1\r\n");
    assert_eq!(raw.call(&["RESET", "x"]).await, "-ERR wrong number of arguments for 'reset' command\r\n");

    // QUIT ignores its arguments, answers OK, then closes.
    assert_eq!(raw.call(&["QUIT", "now"]).await, "+OK\r\n");
    assert!(raw.closed_by_server().await, "the server must close the connection after QUIT");

    // Commands pipelined behind QUIT are not executed.
    let mut raw = t.raw().await;
    let after = k.k("after-quit");
    let mut bytes = common::encode_command(&["QUIT"]);
    bytes.extend(common::encode_command(&["SET", &after, "v"]));
    raw.send_raw(&bytes).await;
    assert_eq!(raw.read_reply().await, "+OK\r\n");
    assert!(raw.closed_by_server().await);
    let mut raw = t.raw().await;
    assert_eq!(raw.call(&["EXISTS", &after]).await, ":0\r\n");
}

/// Error replies inside a pipeline keep every later reply in its place; inline commands work too.
#[tokio::test]
async fn errors_do_not_desync_a_pipeline() {
    let t = Target::get();
    let k = Keys::new("errors_do_not_desync_a_pipeline", false);
    let (a, n) = (k.k("a"), k.k("n"));
    let mut raw = t.raw().await;
    let mut bytes = Vec::new();
    for cmd in [
        &["SET", &a, "1"][..],
        &["NOSUCHCMD", "x"],
        &["GET"],
        &["INCR", &n],
        &["SET", &a, "v", "EX", "0"],
        &["INCRBY", &n, "abc"],
        &["GET", &a],
        &["INCR", &n],
    ] {
        bytes.extend(common::encode_command(cmd));
    }
    raw.send_raw(&bytes).await;
    let mut replies = Vec::new();
    for _ in 0..8 {
        replies.push(raw.read_reply().await);
    }
    assert_eq!(
        replies,
        [
            "+OK\r\n",
            "-ERR unknown command 'NOSUCHCMD', with args beginning with: 'x' \r\n",
            "-ERR wrong number of arguments for 'get' command\r\n",
            ":1\r\n",
            "-ERR invalid expire time in 'set' command\r\n",
            "-ERR value is not an integer or out of range\r\n",
            "$1\r\n1\r\n",
            ":2\r\n",
        ]
    );
    // Inline commands (what `telnet` / `nc` users type).
    raw.send_raw(format!("PING\r\nINCR {n}\r\n").as_bytes()).await;
    assert_eq!(raw.read_reply().await, "+PONG\r\n");
    assert_eq!(raw.read_reply().await, ":3\r\n");
}

// ---------------------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------------------

async fn check_get_and_set(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    assert_eq!(call(c, &["GET", &key]).await, Value::Nil);
    assert_eq!(call(c, &["SET", &key, "v1"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, bulk("v1"));
    assert_eq!(call(c, &["set", &key, "v2"]).await, Value::Okay, "commands are case-insensitive");
    assert_eq!(call(c, &["gEt", &key]).await, bulk("v2"));

    // Empty values exist.
    let empty = k.k("empty");
    assert_eq!(call(c, &["SET", &empty, ""]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &empty]).await, bulk(""));
    assert_eq!(call(c, &["EXISTS", &empty]).await, int(1));
    assert_eq!(call(c, &["STRLEN", &empty]).await, int(0));

    // Binary-safe keys and values.
    let bin_key: Vec<u8> = [k.k("bin").as_bytes(), b"\x00\r\n\xff key"].concat();
    let bin_val: Vec<u8> = (0..=255u8).chain(*b"\r\n\x00").collect();
    assert_eq!(call_bin(c, &[b"SET", &bin_key, &bin_val]).await, Value::Okay);
    assert_eq!(call_bin(c, &[b"GET", &bin_key]).await, Value::BulkString(bin_val.clone()));
    assert_eq!(call_bin(c, &[b"STRLEN", &bin_key]).await, int(bin_val.len() as i64));

    // A large value (1 MiB) round-trips.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let big_key = k.k("big");
    assert_eq!(call_bin(c, &[b"SET", big_key.as_bytes(), &big]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &big_key]).await, Value::BulkString(big));
}

async fn check_set_conditions_and_get(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    // NX / XX
    assert_eq!(call(c, &["SET", &key, "a", "XX"]).await, Value::Nil);
    assert_eq!(call(c, &["EXISTS", &key]).await, int(0));
    assert_eq!(call(c, &["SET", &key, "a", "NX"]).await, Value::Okay);
    assert_eq!(call(c, &["SET", &key, "b", "NX"]).await, Value::Nil);
    assert_eq!(call(c, &["GET", &key]).await, bulk("a"));
    assert_eq!(call(c, &["SET", &key, "c", "XX"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, bulk("c"));
    assert_eq!(call(c, &["SET", &key, "d", "nx", "nx"]).await, Value::Nil, "a repeated flag is allowed");

    // GET returns the old value (nil when there was none) and still writes.
    let g = k.k("g");
    assert_eq!(call(c, &["SET", &g, "new", "GET"]).await, Value::Nil);
    assert_eq!(call(c, &["GET", &g]).await, bulk("new"));
    assert_eq!(call(c, &["SET", &g, "newer", "GET"]).await, bulk("new"));
    assert_eq!(call(c, &["GET", &g]).await, bulk("newer"));

    // NX + GET (Redis 7.0): the old value, and no write when there was one.
    assert_eq!(call(c, &["SET", &g, "x", "NX", "GET"]).await, bulk("newer"));
    assert_eq!(call(c, &["GET", &g]).await, bulk("newer"));
    let ng = k.k("nx-get");
    assert_eq!(call(c, &["SET", &ng, "x", "NX", "GET"]).await, Value::Nil);
    assert_eq!(call(c, &["GET", &ng]).await, bulk("x"));

    // XX + GET: the old value and a write; nil and no write when absent.
    assert_eq!(call(c, &["SET", &ng, "y", "XX", "GET"]).await, bulk("x"));
    assert_eq!(call(c, &["GET", &ng]).await, bulk("y"));
    let xg = k.k("xx-get");
    assert_eq!(call(c, &["SET", &xg, "y", "XX", "GET"]).await, Value::Nil);
    assert_eq!(call(c, &["EXISTS", &xg]).await, int(0));
}

async fn check_set_expiry_options(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    assert_eq!(call(c, &["SET", &key, "v", "EX", "100"]).await, Value::Okay);
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=100).contains(&ttl), "TTL after EX 100: {ttl}");

    assert_eq!(call(c, &["SET", &key, "v", "PX", "100000"]).await, Value::Okay);
    let pttl = as_int(&call(c, &["PTTL", &key]).await);
    assert!((1..=100_000).contains(&pttl), "PTTL after PX 100000: {pttl}");

    // EXAT / PXAT set the absolute time, seen again by EXPIRETIME (year 2100).
    assert_eq!(call(c, &["SET", &key, "v", "EXAT", "4102444800"]).await, Value::Okay);
    assert_eq!(call(c, &["EXPIRETIME", &key]).await, int(4102444800));
    assert_eq!(call(c, &["SET", &key, "v", "PXAT", "4102444800123"]).await, Value::Okay);
    assert_eq!(call(c, &["EXPIRETIME", &key]).await, int(4102444800));
    // EXPIRETIME rounds to the nearest second, as TTL does.
    assert_eq!(call(c, &["SET", &key, "v", "PXAT", "4102444800800"]).await, Value::Okay);
    assert_eq!(call(c, &["EXPIRETIME", &key]).await, int(4102444801));

    // An absolute time in the past: OK, and the key is gone at once.
    let past = k.k("past");
    assert_eq!(call(c, &["SET", &past, "v", "EXAT", "1"]).await, Value::Okay);
    assert_eq!(call(c, &["EXISTS", &past]).await, int(0));
    assert_eq!(call(c, &["GET", &past]).await, Value::Nil);
    assert_eq!(call(c, &["SET", &past, "v", "PXAT", "1"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &past]).await, Value::Nil);

    // Option names are case-insensitive; a repeated option is allowed.
    assert_eq!(call(c, &["SET", &key, "v", "ex", "50", "EX", "60"]).await, Value::Okay);
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=60).contains(&ttl), "{ttl}");

    // KEEPTTL keeps it; a plain SET clears it.
    assert_eq!(call(c, &["SET", &key, "v2", "EX", "100"]).await, Value::Okay);
    assert_eq!(call(c, &["SET", &key, "v3", "KEEPTTL"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &key]).await, bulk("v3"));
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=100).contains(&ttl), "TTL after KEEPTTL: {ttl}");
    assert_eq!(call(c, &["SET", &key, "v4"]).await, Value::Okay);
    assert_eq!(call(c, &["TTL", &key]).await, int(-1), "a plain SET clears the TTL");
    // KEEPTTL on a key without TTL, and on a missing key: no TTL.
    assert_eq!(call(c, &["SET", &key, "v5", "KEEPTTL"]).await, Value::Okay);
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
    let fresh = k.k("fresh");
    assert_eq!(call(c, &["SET", &fresh, "v", "KEEPTTL"]).await, Value::Okay);
    assert_eq!(call(c, &["TTL", &fresh]).await, int(-1));

    // SET ... GET with EX: old value back, new TTL set.
    assert_eq!(call(c, &["SET", &key, "v6", "EX", "100", "GET"]).await, bulk("v5"));
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=100).contains(&ttl), "{ttl}");
    // XX + EX on an existing key updates value and TTL.
    assert_eq!(call(c, &["SET", &key, "v7", "XX", "PX", "50000"]).await, Value::Okay);
    let pttl = as_int(&call(c, &["PTTL", &key]).await);
    assert!((1..=50_000).contains(&pttl), "{pttl}");
}

async fn check_set_syntax_errors(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    assert_eq!(call(c, &["SET", &key, "original"]).await, Value::Okay);
    for args in [
        &["NX", "XX"][..],
        &["EX", "10", "PX", "10"],
        &["EX", "10", "KEEPTTL"],
        &["KEEPTTL", "EX", "10"],
        &["PX", "100", "EXAT", "5"],
        &["EXAT", "4102444800", "PXAT", "4102444800000"],
        &["BOGUS"],
        &["EX"],
        &["EXAT"],
        &["GET", "GET", "NX", "XX"],
    ] {
        let cmd: Vec<&str> = ["SET", key.as_str(), "v"].into_iter().chain(args.iter().copied()).collect();
        assert_err(call(c, &cmd).await, "ERR syntax error");
    }
    for args in
        [&["EX", "0"][..], &["EX", "-1"], &["PX", "0"], &["EXAT", "0"], &["PXAT", "-5"], &["EX", "9999999999999999"]]
    {
        let cmd: Vec<&str> = ["SET", key.as_str(), "v"].into_iter().chain(args.iter().copied()).collect();
        assert_err(call(c, &cmd).await, "ERR invalid expire time in 'set' command");
    }
    for args in [&["EX", "abc"][..], &["PX", "1.5"], &["EXAT", "10x"]] {
        let cmd: Vec<&str> = ["SET", key.as_str(), "v"].into_iter().chain(args.iter().copied()).collect();
        assert_err(call(c, &cmd).await, "ERR value is not an integer or out of range");
    }
    assert_eq!(call(c, &["GET", &key]).await, bulk("original"), "a refused SET writes nothing");
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
}

async fn check_setnx_setex_psetex(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("nx");
    assert_eq!(call(c, &["SETNX", &key, "1"]).await, int(1));
    assert_eq!(call(c, &["SETNX", &key, "2"]).await, int(0));
    assert_eq!(call(c, &["GET", &key]).await, bulk("1"));

    // SETNX on a key with a TTL keeps it untouched.
    let ex = k.k("ex");
    assert_eq!(call(c, &["SETEX", &ex, "100", "v"]).await, Value::Okay);
    assert_eq!(call(c, &["GET", &ex]).await, bulk("v"));
    let ttl = as_int(&call(c, &["TTL", &ex]).await);
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(call(c, &["SETNX", &ex, "other"]).await, int(0));
    let ttl = as_int(&call(c, &["TTL", &ex]).await);
    assert!((1..=100).contains(&ttl), "{ttl}");

    let px = k.k("px");
    assert_eq!(call(c, &["PSETEX", &px, "100000", "v"]).await, Value::Okay);
    let pttl = as_int(&call(c, &["PTTL", &px]).await);
    assert!((1..=100_000).contains(&pttl), "{pttl}");

    assert_err(call(c, &["SETEX", &ex, "0", "v"]).await, "ERR invalid expire time in 'setex' command");
    assert_err(call(c, &["SETEX", &ex, "-5", "v"]).await, "ERR invalid expire time in 'setex' command");
    assert_err(call(c, &["SETEX", &ex, "abc", "v"]).await, "ERR value is not an integer or out of range");
    assert_err(call(c, &["PSETEX", &px, "0", "v"]).await, "ERR invalid expire time in 'psetex' command");
    assert_err(call(c, &["SETEX", &ex, "10"]).await, "ERR wrong number of arguments for 'setex' command");
    assert_err(call(c, &["SETNX", &key]).await, "ERR wrong number of arguments for 'setnx' command");
    assert_eq!(call(c, &["GET", &ex]).await, bulk("v"));
}

async fn check_ranges_type_touch_time(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let (key, other, missing) = (k.k("s"), k.k("o"), k.k("missing"));
    assert_eq!(call(c, &["SET", &key, "This is a string"]).await, Value::Okay);
    for (start, end, want) in [
        ("0", "3", "This"),
        ("-3", "-1", "ing"),
        ("0", "-1", "This is a string"),
        ("10", "100", "string"),
        ("5", "3", ""),
        ("-1", "-5", ""),
        ("-100", "2", "Thi"),
    ] {
        assert_eq!(call(c, &["GETRANGE", &key, start, end]).await, bulk(want), "GETRANGE {start} {end}");
        assert_eq!(call(c, &["SUBSTR", &key, start, end]).await, bulk(want), "SUBSTR {start} {end}");
    }
    assert_eq!(call(c, &["GETRANGE", &missing, "0", "-1"]).await, bulk(""));
    assert_err(call(c, &["GETRANGE", &key, "a", "1"]).await, "ERR value is not an integer or out of range");
    assert_err(call(c, &["GETRANGE", &key, "0"]).await, "ERR wrong number of arguments for 'getrange' command");

    // SETRANGE pads with zero bytes, keeps the TTL, and creates nothing for an empty value.
    assert_eq!(call(c, &["EXPIRE", &key, "100"]).await, int(1));
    assert_eq!(call(c, &["SETRANGE", &key, "10", "STRING"]).await, int(16));
    assert_eq!(call(c, &["GET", &key]).await, bulk("This is a STRING"));
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=100).contains(&ttl), "SETRANGE keeps the TTL: {ttl}");
    assert_eq!(call(c, &["SETRANGE", &other, "3", "ab"]).await, int(5));
    assert_eq!(call(c, &["GET", &other]).await, Value::BulkString(b"\0\0\0ab".to_vec()));
    assert_eq!(call(c, &["SETRANGE", &missing, "5", ""]).await, int(0));
    assert_eq!(call(c, &["EXISTS", &missing]).await, int(0));
    assert_eq!(call(c, &["SETRANGE", &other, "1", ""]).await, int(5));
    assert_err(call(c, &["SETRANGE", &other, "-1", "x"]).await, "ERR offset is out of range");
    assert_err(
        call(c, &["SETRANGE", &other, "536870911", "xx"]).await,
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
    );

    assert_eq!(call(c, &["TYPE", &key]).await, simple("string"));
    assert_eq!(call(c, &["TYPE", &missing]).await, simple("none"));
    assert_eq!(call(c, &["TOUCH", &key, &other, &missing, &key]).await, int(3));

    let Value::Array(time) = call(c, &["TIME"]).await else { panic!("TIME is an array") };
    assert_eq!(time.len(), 2);
    let secs: u64 = text(&time[0]).parse().unwrap();
    let micros: u64 = text(&time[1]).parse().unwrap();
    assert!(secs > 1_700_000_000 && micros < 1_000_000, "{secs} {micros}");
}

async fn check_getset_getdel(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    assert_eq!(call(c, &["GETSET", &key, "1"]).await, Value::Nil);
    assert_eq!(call(c, &["GETSET", &key, "2"]).await, bulk("1"));
    assert_eq!(call(c, &["GET", &key]).await, bulk("2"));
    // GETSET is a SET: it clears the TTL.
    assert_eq!(call(c, &["EXPIRE", &key, "100"]).await, int(1));
    assert_eq!(call(c, &["GETSET", &key, "3"]).await, bulk("2"));
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));

    assert_eq!(call(c, &["GETDEL", &key]).await, bulk("3"));
    assert_eq!(call(c, &["GETDEL", &key]).await, Value::Nil);
    assert_eq!(call(c, &["EXISTS", &key]).await, int(0));
    assert_err(call(c, &["GETDEL"]).await, "ERR wrong number of arguments for 'getdel' command");
    assert_err(call(c, &["GETSET", &key]).await, "ERR wrong number of arguments for 'getset' command");
}

async fn check_getex(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    assert_eq!(call(c, &["GETEX", &key]).await, Value::Nil);
    assert_eq!(call(c, &["GETEX", &key, "EX", "10"]).await, Value::Nil);
    assert_eq!(call(c, &["EXISTS", &key]).await, int(0), "GETEX never creates");

    assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
    assert_eq!(call(c, &["GETEX", &key]).await, bulk("v"));
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
    assert_eq!(call(c, &["GETEX", &key, "EX", "100"]).await, bulk("v"));
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(call(c, &["GETEX", &key]).await, bulk("v"), "no option: TTL untouched");
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(call(c, &["GETEX", &key, "PERSIST"]).await, bulk("v"));
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
    assert_eq!(call(c, &["GETEX", &key, "PX", "50000"]).await, bulk("v"));
    let pttl = as_int(&call(c, &["PTTL", &key]).await);
    assert!((1..=50_000).contains(&pttl), "{pttl}");
    assert_eq!(call(c, &["GETEX", &key, "EXAT", "4102444800"]).await, bulk("v"));
    assert_eq!(call(c, &["EXPIRETIME", &key]).await, int(4102444800));
    assert_eq!(call(c, &["GETEX", &key, "persist", "PERSIST"]).await, bulk("v"));
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));

    assert_err(call(c, &["GETEX", &key, "EX", "0"]).await, "ERR invalid expire time in 'getex' command");
    assert_err(call(c, &["GETEX", &key, "EX", "-1"]).await, "ERR invalid expire time in 'getex' command");
    assert_err(call(c, &["GETEX", &key, "EXAT", "0"]).await, "ERR invalid expire time in 'getex' command");
    assert_err(call(c, &["GETEX", &key, "PX", "abc"]).await, "ERR value is not an integer or out of range");
    assert_err(call(c, &["GETEX", &key, "EX", "10", "PX", "10"]).await, "ERR syntax error");
    assert_err(call(c, &["GETEX", &key, "PERSIST", "EX", "10"]).await, "ERR syntax error");
    assert_err(call(c, &["GETEX", &key, "BOGUS"]).await, "ERR syntax error");
    assert_err(call(c, &["GETEX", &key, "EX"]).await, "ERR syntax error");
    assert_err(call(c, &["GETEX"]).await, "ERR wrong number of arguments for 'getex' command");
    assert_eq!(call(c, &["TTL", &key]).await, int(-1), "a refused GETEX changes nothing");

    // An absolute time in the past: the value is returned and the key deleted.
    assert_eq!(call(c, &["GETEX", &key, "PXAT", "1"]).await, bulk("v"));
    assert_eq!(call(c, &["EXISTS", &key]).await, int(0));
}

async fn check_mget_mset(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    // Keys spread over many shards.
    let keys: Vec<String> = (0..20).map(|i| k.k(&format!("m{i}"))).collect();
    let mut mset = vec!["MSET".to_string()];
    for (i, key) in keys.iter().enumerate() {
        mset.push(key.clone());
        mset.push(format!("value-{i}"));
    }
    assert_eq!(call(c, &mset.iter().map(String::as_str).collect::<Vec<_>>()).await, Value::Okay);
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().cloned());
    mget.insert(5, k.k("missing"));
    let mut want: Vec<Value> = (0..20).map(|i| bulk(&format!("value-{i}"))).collect();
    want.insert(4, Value::Nil);
    assert_eq!(call(c, &mget.iter().map(String::as_str).collect::<Vec<_>>()).await, Value::Array(want));

    // MSET overwrites and, like SET, clears the TTL. A repeated key: the last value wins.
    assert_eq!(call(c, &["EXPIRE", &keys[0], "100"]).await, int(1));
    assert_eq!(call(c, &["MSET", &keys[0], "a", &keys[1], "b", &keys[0], "c"]).await, Value::Okay);
    assert_eq!(
        call(c, &["MGET", &keys[0], &keys[1], &keys[0]]).await,
        Value::Array(vec![bulk("c"), bulk("b"), bulk("c")])
    );
    assert_eq!(call(c, &["TTL", &keys[0]]).await, int(-1));

    assert_err(call(c, &["MSET", &keys[0], "a", &keys[1]]).await, "ERR wrong number of arguments for 'mset' command");
    assert_err(call(c, &["MSET"]).await, "ERR wrong number of arguments for 'mset' command");
    assert_err(call(c, &["MSET", &keys[0]]).await, "ERR wrong number of arguments for 'mset' command");
    assert_err(call(c, &["MGET"]).await, "ERR wrong number of arguments for 'mget' command");
    assert_eq!(call(c, &["GET", &keys[1]]).await, bulk("b"), "a refused MSET writes nothing");
}

async fn check_del_unlink_exists(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let (a, b, zz) = (k.k("a"), k.k("b"), k.k("zz"));
    assert_eq!(call(c, &["SET", &a, "1"]).await, Value::Okay);
    assert_eq!(call(c, &["SET", &b, "1"]).await, Value::Okay);
    // EXISTS counts a key once per mention.
    assert_eq!(call(c, &["EXISTS", &a, &a, &b, &zz]).await, int(3));
    assert_eq!(call(c, &["EXISTS", &zz]).await, int(0));
    // DEL counts the keys it removed (a repeated key once).
    assert_eq!(call(c, &["DEL", &a, &b, &zz, &a]).await, int(2));
    assert_eq!(call(c, &["EXISTS", &a, &b]).await, int(0));
    assert_eq!(call(c, &["DEL", &a]).await, int(0));
    assert_eq!(call(c, &["GET", &a]).await, Value::Nil);

    assert_eq!(call(c, &["SET", &a, "1"]).await, Value::Okay);
    assert_eq!(call(c, &["UNLINK", &a, &zz]).await, int(1));
    assert_eq!(call(c, &["EXISTS", &a]).await, int(0));
    // A deleted key can be written again, from scratch (no TTL, INCR starts at 0).
    assert_eq!(call(c, &["SET", &a, "5", "EX", "100"]).await, Value::Okay);
    assert_eq!(call(c, &["DEL", &a]).await, int(1));
    assert_eq!(call(c, &["INCR", &a]).await, int(1));
    assert_eq!(call(c, &["TTL", &a]).await, int(-1));

    assert_err(call(c, &["DEL"]).await, "ERR wrong number of arguments for 'del' command");
    assert_err(call(c, &["UNLINK"]).await, "ERR wrong number of arguments for 'unlink' command");
    assert_err(call(c, &["EXISTS"]).await, "ERR wrong number of arguments for 'exists' command");
}

// ---------------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------------

async fn check_ttl_pttl_expiretime_persist(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let (key, missing) = (k.k("k"), k.k("missing"));
    for cmd in ["TTL", "PTTL", "EXPIRETIME"] {
        assert_eq!(call(c, &[cmd, missing.as_str()]).await, int(-2), "{cmd} of a missing key");
    }
    assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
    for cmd in ["TTL", "PTTL", "EXPIRETIME"] {
        assert_eq!(call(c, &[cmd, key.as_str()]).await, int(-1), "{cmd} of a key without TTL");
    }
    assert_eq!(call(c, &["PERSIST", &key]).await, int(0), "nothing to remove");
    assert_eq!(call(c, &["PERSIST", &missing]).await, int(0));

    assert_eq!(call(c, &["EXPIRE", &key, "100"]).await, int(1));
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=100).contains(&ttl), "{ttl}");
    let pttl = as_int(&call(c, &["PTTL", &key]).await);
    assert!((1..=100_000).contains(&pttl), "{pttl}");
    let at = as_int(&call(c, &["EXPIRETIME", &key]).await);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(at > now - 60 && at <= now + 160, "EXPIRETIME {at} vs now {now}"); // clocks of one machine

    assert_eq!(call(c, &["PERSIST", &key]).await, int(1));
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
    assert_eq!(call(c, &["PERSIST", &key]).await, int(0));
    assert_eq!(call(c, &["GET", &key]).await, bulk("v"));

    assert_err(call(c, &["TTL"]).await, "ERR wrong number of arguments for 'ttl' command");
    assert_err(call(c, &["TTL", "a", "b"]).await, "ERR wrong number of arguments for 'ttl' command");
    assert_err(call(c, &["PTTL"]).await, "ERR wrong number of arguments for 'pttl' command");
    assert_err(call(c, &["EXPIRETIME"]).await, "ERR wrong number of arguments for 'expiretime' command");
    assert_err(call(c, &["PERSIST"]).await, "ERR wrong number of arguments for 'persist' command");
}

async fn check_expire_family(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let (key, missing) = (k.k("k"), k.k("missing"));
    for cmd in ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"] {
        assert_eq!(call(c, &[cmd, missing.as_str(), "4102444800"]).await, int(0), "{cmd} on a missing key");
    }
    assert_eq!(call(c, &["EXISTS", &missing]).await, int(0));

    assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
    assert_eq!(call(c, &["PEXPIRE", &key, "100000"]).await, int(1));
    let pttl = as_int(&call(c, &["PTTL", &key]).await);
    assert!((1..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(call(c, &["EXPIREAT", &key, "4102444800"]).await, int(1));
    assert_eq!(call(c, &["EXPIRETIME", &key]).await, int(4102444800));
    assert_eq!(call(c, &["PEXPIREAT", &key, "4102444801500"]).await, int(1));
    assert_eq!(call(c, &["EXPIRETIME", &key]).await, int(4102444802));
    assert_eq!(call(c, &["GET", &key]).await, bulk("v"), "EXPIRE* never touch the value");

    // A time in the past (or a non-positive relative time) deletes the key and answers 1.
    for (cmd, when) in
        [("EXPIRE", "-1"), ("EXPIRE", "0"), ("PEXPIRE", "-100"), ("EXPIREAT", "1"), ("PEXPIREAT", "1000")]
    {
        assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
        assert_eq!(call(c, &[cmd, key.as_str(), when]).await, int(1), "{cmd} {when}");
        assert_eq!(call(c, &["EXISTS", &key]).await, int(0), "{cmd} {when} deletes");
        assert_eq!(call(c, &["GET", &key]).await, Value::Nil);
        assert_eq!(call(c, &["TTL", &key]).await, int(-2));
    }

    assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
    assert_err(call(c, &["EXPIRE", &key, "abc"]).await, "ERR value is not an integer or out of range");
    assert_err(call(c, &["EXPIRE", &key, "10.5"]).await, "ERR value is not an integer or out of range");
    assert_err(call(c, &["EXPIRE", &key, "9223372036854775807"]).await, "ERR invalid expire time in 'expire' command");
    assert_err(
        call(c, &["PEXPIRE", &key, "9223372036854775807"]).await,
        "ERR invalid expire time in 'pexpire' command",
    );
    assert_err(
        call(c, &["EXPIREAT", &key, "9223372036854775807"]).await,
        "ERR invalid expire time in 'expireat' command",
    );
    assert_err(call(c, &["EXPIRE", &key]).await, "ERR wrong number of arguments for 'expire' command");
    assert_err(call(c, &["PEXPIREAT", &key]).await, "ERR wrong number of arguments for 'pexpireat' command");
    assert_eq!(call(c, &["TTL", &key]).await, int(-1), "a refused EXPIRE changes nothing");
}

async fn check_expire_conditions(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    // Values are far apart so that milliseconds elapsing between commands never matter.
    let (key, missing) = (k.k("k"), k.k("missing"));
    for opt in ["NX", "XX", "GT", "LT"] {
        assert_eq!(call(c, &["EXPIRE", missing.as_str(), "100", opt]).await, int(0), "{opt} on a missing key");
    }

    // No TTL yet: it counts as an infinite TTL for GT/LT.
    assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
    assert_eq!(call(c, &["EXPIRE", &key, "1000", "XX"]).await, int(0));
    assert_eq!(call(c, &["EXPIRE", &key, "1000", "GT"]).await, int(0));
    assert_eq!(call(c, &["EXPIRE", &key, "0", "GT"]).await, int(0), "refused before the past time deletes");
    assert_eq!(call(c, &["EXISTS", &key]).await, int(1));
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
    assert_eq!(call(c, &["EXPIRE", &key, "1000", "LT"]).await, int(1));
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((1..=1000).contains(&ttl), "{ttl}");

    assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
    assert_eq!(call(c, &["EXPIRE", &key, "1000", "nx"]).await, int(1));
    assert_eq!(call(c, &["EXPIRE", &key, "2000", "NX"]).await, int(0));
    assert_eq!(call(c, &["EXPIRE", &key, "500", "GT"]).await, int(0));
    assert_eq!(call(c, &["EXPIRE", &key, "2000", "GT"]).await, int(1));
    assert_eq!(call(c, &["EXPIRE", &key, "3000", "LT"]).await, int(0));
    assert_eq!(call(c, &["EXPIRE", &key, "500", "LT"]).await, int(1));
    assert_eq!(call(c, &["EXPIRE", &key, "1000", "XX", "GT"]).await, int(1));
    let ttl = as_int(&call(c, &["TTL", &key]).await);
    assert!((501..=1000).contains(&ttl), "{ttl}");
    assert_eq!(call(c, &["PEXPIRE", &key, "100000", "LT"]).await, int(1));
    let pttl = as_int(&call(c, &["PTTL", &key]).await);
    assert!((1..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(call(c, &["EXPIREAT", &key, "4102444800", "GT"]).await, int(1));
    assert_eq!(call(c, &["EXPIRETIME", &key]).await, int(4102444800));
    assert_eq!(call(c, &["PEXPIREAT", &key, "1", "GT"]).await, int(0), "past time refused by GT: key kept");
    assert_eq!(call(c, &["EXISTS", &key]).await, int(1));
    assert_eq!(call(c, &["PEXPIREAT", &key, "1", "LT"]).await, int(1), "past time accepted by LT: key deleted");
    assert_eq!(call(c, &["EXISTS", &key]).await, int(0));

    assert_eq!(call(c, &["SET", &key, "v"]).await, Value::Okay);
    let incompatible = "ERR NX and XX, GT or LT options at the same time are not compatible";
    assert_err(call(c, &["EXPIRE", &key, "100", "NX", "XX"]).await, incompatible);
    assert_err(call(c, &["EXPIRE", &key, "100", "NX", "GT"]).await, incompatible);
    assert_err(call(c, &["PEXPIREAT", &key, "100", "LT", "NX"]).await, incompatible);
    assert_err(
        call(c, &["EXPIRE", &key, "100", "GT", "LT"]).await,
        "ERR GT and LT options at the same time are not compatible",
    );
    assert_err(call(c, &["EXPIRE", &key, "100", "bogus"]).await, "ERR Unsupported option bogus");
    assert_err(call(c, &["EXPIRE", &key, "100", "BOGUS"]).await, "ERR Unsupported option BOGUS");
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
}

async fn check_which_writes_keep_the_ttl(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("k");
    let has_ttl = |v: Value| {
        let ttl = as_int(&v);
        assert!((1..=100).contains(&ttl), "TTL should still be set: {ttl}");
    };
    // Modifying the value in place keeps the TTL...
    assert_eq!(call(c, &["SET", &key, "10", "EX", "100"]).await, Value::Okay);
    assert_eq!(call(c, &["INCR", &key]).await, int(11));
    has_ttl(call(c, &["TTL", &key]).await);
    assert_eq!(call(c, &["DECRBY", &key, "1"]).await, int(10));
    has_ttl(call(c, &["TTL", &key]).await);
    assert_eq!(call(c, &["APPEND", &key, "5"]).await, int(3));
    has_ttl(call(c, &["TTL", &key]).await);
    assert_eq!(call(c, &["INCRBYFLOAT", &key, "1"]).await, bulk("106"));
    has_ttl(call(c, &["TTL", &key]).await);
    assert_eq!(call(c, &["SETNX", &key, "x"]).await, int(0));
    has_ttl(call(c, &["TTL", &key]).await);
    assert_eq!(call(c, &["SET", &key, "x", "NX"]).await, Value::Nil);
    has_ttl(call(c, &["TTL", &key]).await);
    assert_eq!(call(c, &["GETEX", &key]).await, bulk("106"));
    has_ttl(call(c, &["TTL", &key]).await);
    // ...replacing it does not.
    assert_eq!(call(c, &["SET", &key, "x", "GET"]).await, bulk("106"));
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
    assert_eq!(call(c, &["SET", &key, "x", "EX", "100"]).await, Value::Okay);
    assert_eq!(call(c, &["SET", &key, "y", "XX"]).await, Value::Okay);
    assert_eq!(call(c, &["TTL", &key]).await, int(-1));
}

/// A key set with a short TTL disappears by itself (polled, bounded).
#[tokio::test]
async fn keys_expire() {
    let t = Target::get();
    let mut c = t.conn(false).await;
    let k = Keys::new("keys_expire", false);
    let (a, b) = (k.k("a"), k.k("b"));
    assert_eq!(call(&mut c, &["SET", &a, "v", "PX", "300"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SET", &b, "v"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["PEXPIRE", &b, "300"]).await, int(1));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let gone = call(&mut c, &["EXISTS", &a, &b]).await == int(0);
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "keys with a 300 ms TTL still exist after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(&mut c, &["GET", &a]).await, Value::Nil);
    assert_eq!(call(&mut c, &["TTL", &b]).await, int(-2));
    assert_eq!(call(&mut c, &["INCR", &a]).await, int(1), "an expired key is absent for writes too");
    assert_eq!(call(&mut c, &["TTL", &a]).await, int(-1));
    assert_eq!(call(&mut c, &["SET", &b, "new", "NX"]).await, Value::Okay);
}

// ---------------------------------------------------------------------------------------------------
// Counters, APPEND, STRLEN
// ---------------------------------------------------------------------------------------------------

async fn check_incr_decr(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("n");
    assert_eq!(call(c, &["INCR", &key]).await, int(1), "a missing key counts as 0");
    assert_eq!(call(c, &["INCR", &key]).await, int(2));
    assert_eq!(call(c, &["INCRBY", &key, "10"]).await, int(12));
    assert_eq!(call(c, &["INCRBY", &key, "-20"]).await, int(-8));
    assert_eq!(call(c, &["DECR", &key]).await, int(-9));
    assert_eq!(call(c, &["DECRBY", &key, "-9"]).await, int(0));
    assert_eq!(call(c, &["DECRBY", &key, "5"]).await, int(-5));
    assert_eq!(call(c, &["GET", &key]).await, bulk("-5"), "stored as its decimal string");
    assert_eq!(call(c, &["SET", &key, "41"]).await, Value::Okay);
    assert_eq!(call(c, &["INCR", &key]).await, int(42));
    let fresh = k.k("fresh");
    assert_eq!(call(c, &["DECR", &fresh]).await, int(-1));
    let by = k.k("by");
    assert_eq!(call(c, &["INCRBY", &by, "9223372036854775807"]).await, int(i64::MAX));
    assert_eq!(call(c, &["SET", &by, "-9223372036854775808"]).await, Value::Okay);
    assert_eq!(call(c, &["INCRBY", &by, "0"]).await, int(i64::MIN));
}

async fn check_incr_overflow_and_bad_integers(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let (max, min) = (k.k("max"), k.k("min"));
    let overflow = "ERR increment or decrement would overflow";
    assert_eq!(call(c, &["SET", &max, "9223372036854775807"]).await, Value::Okay);
    assert_err(call(c, &["INCR", &max]).await, overflow);
    assert_err(call(c, &["INCRBY", &max, "1"]).await, overflow);
    assert_err(call(c, &["DECRBY", &max, "-1"]).await, overflow);
    assert_eq!(call(c, &["GET", &max]).await, bulk("9223372036854775807"), "unchanged");
    assert_eq!(call(c, &["SET", &min, "-9223372036854775808"]).await, Value::Okay);
    assert_err(call(c, &["DECR", &min]).await, overflow);
    assert_err(call(c, &["INCRBY", &min, "-1"]).await, overflow);
    assert_err(call(c, &["INCRBY", &min, "-9223372036854775808"]).await, overflow);
    // DECRBY cannot negate i64::MIN: its own message.
    assert_err(call(c, &["DECRBY", &min, "-9223372036854775808"]).await, "ERR decrement would overflow");
    assert_eq!(call(c, &["GET", &min]).await, bulk("-9223372036854775808"));

    // Stored values Redis does not accept as integers (string2ll is strict).
    let v = k.k("v");
    for bad in ["abc", " 1", "1 ", "+1", "01", "-0", "1.0", "1e3", "", "99999999999999999999", "0x10"] {
        assert_eq!(call(c, &["SET", &v, bad]).await, Value::Okay);
        assert_err(call(c, &["INCR", &v]).await, "ERR value is not an integer or out of range");
        assert_eq!(call(c, &["GET", &v]).await, bulk(bad), "unchanged after a refused INCR of {bad:?}");
    }
    // Increments Redis does not accept.
    assert_eq!(call(c, &["SET", &v, "0"]).await, Value::Okay);
    for bad in ["abc", "+5", "05", "1.5", "", "9223372036854775808"] {
        assert_err(call(c, &["INCRBY", &v, bad]).await, "ERR value is not an integer or out of range");
        assert_err(call(c, &["DECRBY", &v, bad]).await, "ERR value is not an integer or out of range");
    }
    assert_eq!(call(c, &["GET", &v]).await, bulk("0"));
}

async fn check_incrbyfloat(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("f");
    // The examples of the Redis documentation.
    assert_eq!(call(c, &["SET", &key, "10.50"]).await, Value::Okay);
    assert_eq!(call(c, &["INCRBYFLOAT", &key, "0.1"]).await, bulk("10.6"));
    assert_eq!(call(c, &["INCRBYFLOAT", &key, "-5"]).await, bulk("5.6"));
    assert_eq!(call(c, &["GET", &key]).await, bulk("5.6"));
    assert_eq!(call(c, &["SET", &key, "5.0e3"]).await, Value::Okay);
    assert_eq!(call(c, &["INCRBYFLOAT", &key, "2.0e2"]).await, bulk("5200"));
    assert_eq!(call(c, &["GET", &key]).await, bulk("5200"));
    let fresh = k.k("fresh");
    assert_eq!(call(c, &["INCRBYFLOAT", &fresh, "1.5"]).await, bulk("1.5"), "a missing key counts as 0");
    assert_eq!(call(c, &["INCRBYFLOAT", &fresh, "+1.5"]).await, bulk("3"));
    assert_eq!(call(c, &["INCRBYFLOAT", &fresh, "1e2"]).await, bulk("103"));
    assert_eq!(call(c, &["INCRBYFLOAT", &fresh, "-103"]).await, bulk("0"));
    // Integers are floats too, and the result is stored as its string.
    let i = k.k("i");
    assert_eq!(call(c, &["SET", &i, "7"]).await, Value::Okay);
    assert_eq!(call(c, &["INCRBYFLOAT", &i, "0.25"]).await, bulk("7.25"));
    assert_err(call(c, &["INCR", &i]).await, "ERR value is not an integer or out of range");

    let bad_float = "ERR value is not a valid float";
    for bad in ["abc", " 1", "1 ", "nan", "", "1.5.5"] {
        assert_err(call(c, &["INCRBYFLOAT", &key, bad]).await, bad_float);
    }
    let s = k.k("s");
    for stored in ["abc", "nan", " 1"] {
        assert_eq!(call(c, &["SET", &s, stored]).await, Value::Okay);
        assert_err(call(c, &["INCRBYFLOAT", &s, "1"]).await, bad_float);
    }
    assert_err(call(c, &["INCRBYFLOAT", &key, "inf"]).await, "ERR increment would produce NaN or Infinity");
    assert_eq!(call(c, &["GET", &key]).await, bulk("5200"), "unchanged after refusals");
    assert_err(call(c, &["INCRBYFLOAT", &key]).await, "ERR wrong number of arguments for 'incrbyfloat' command");
}

async fn check_append_strlen(c: &mut MultiplexedConnection, k: &Keys, _resp3: bool) {
    let key = k.k("s");
    assert_eq!(call(c, &["STRLEN", &key]).await, int(0));
    assert_eq!(call(c, &["APPEND", &key, "hello"]).await, int(5), "APPEND creates");
    assert_eq!(call(c, &["APPEND", &key, " world"]).await, int(11));
    assert_eq!(call(c, &["GET", &key]).await, bulk("hello world"));
    assert_eq!(call(c, &["STRLEN", &key]).await, int(11));
    assert_eq!(call(c, &["APPEND", &key, ""]).await, int(11));
    let utf8 = k.k("utf8");
    assert_eq!(call(c, &["SET", &utf8, "héllo"]).await, Value::Okay);
    assert_eq!(call(c, &["STRLEN", &utf8]).await, int(6), "bytes, not characters");
    // APPEND on a counter: it is just a string.
    let n = k.k("n");
    assert_eq!(call(c, &["INCRBY", &n, "12"]).await, int(12));
    assert_eq!(call(c, &["APPEND", &n, "3"]).await, int(3));
    assert_eq!(call(c, &["INCR", &n]).await, int(124));
    assert_err(call(c, &["APPEND", &key]).await, "ERR wrong number of arguments for 'append' command");
    assert_err(call(c, &["STRLEN"]).await, "ERR wrong number of arguments for 'strlen' command");
    assert_err(call(c, &["STRLEN", &key, &key]).await, "ERR wrong number of arguments for 'strlen' command");
}

async fn check_arity_errors(c: &mut MultiplexedConnection, _k: &Keys, _resp3: bool) {
    // The name in the message is Redis's lower-case name, whatever the client's spelling.
    for (args, name) in [
        (&["GET"][..], "get"),
        (&["get", "a", "b"][..], "get"),
        (&["SET"][..], "set"),
        (&["SET", "k"][..], "set"),
        (&["Incr"][..], "incr"),
        (&["DECR", "a", "b"][..], "decr"),
        (&["INCRBY", "x", "1", "2"][..], "incrby"),
        (&["DECRBY", "x"][..], "decrby"),
        (&["GETEX"][..], "getex"),
        (&["SETEX", "k", "10"][..], "setex"),
        (&["PSETEX", "a", "1"][..], "psetex"),
        (&["PEXPIRE", "a"][..], "pexpire"),
        (&["EXPIREAT", "a"][..], "expireat"),
        (&["PTTL", "a", "b"][..], "pttl"),
        (&["EXPIRETIME", "a", "b"][..], "expiretime"),
        (&["SELECT"][..], "select"),
    ] {
        assert_err(call(c, args).await, &format!("ERR wrong number of arguments for '{name}' command"));
    }
}

// ---------------------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------------------

/// 1,000 commands in one pipeline on one connection: every reply in order, each command seeing the effects
/// of the earlier commands on the same key.
#[tokio::test]
async fn pipeline_of_1000_commands_answered_in_order() {
    let t = Target::get();
    for resp3 in [false, true] {
        let k = Keys::new("pipeline_1000", resp3);
        let mut c = t.conn(resp3).await;
        let counter = k.k("counter");
        let mut pipe = redis::pipe();
        // The expected reply of each command: a value, or an error text.
        let mut want: Vec<Result<Value, &str>> = Vec::new();
        let mut n = 0;
        for i in 0..1000 {
            let slot = k.k(&format!("p{}", (i / 4) % 25));
            match i % 4 {
                0 => {
                    pipe.cmd("SET").arg(&slot).arg(format!("v{i}"));
                    want.push(Ok(Value::Okay));
                }
                1 => {
                    n += 1;
                    pipe.cmd("INCR").arg(&counter);
                    want.push(Ok(int(n)));
                }
                2 => {
                    pipe.cmd("GET").arg(&slot);
                    want.push(Ok(bulk(&format!("v{}", i - 2))));
                }
                _ if i % 40 == 39 => {
                    pipe.cmd("INCRBY").arg(&counter).arg("abc");
                    want.push(Err("ERR value is not an integer or out of range"));
                }
                _ => {
                    pipe.cmd("GET").arg(&counter);
                    want.push(Ok(bulk(&n.to_string())));
                }
            }
        }
        let replies = c.send_packed_commands(&pipe, 0, 1000).await.expect("pipeline");
        assert_eq!(replies.len(), 1000);
        for (i, (got, want)) in replies.iter().zip(&want).enumerate() {
            match want {
                Ok(v) => assert_eq!(got, v, "reply {i} (resp3: {resp3})"),
                Err(e) => assert_eq!(error_text(got).as_deref(), Some(*e), "reply {i} (resp3: {resp3})"),
            }
        }
        assert_eq!(call(&mut c, &["GET", &counter]).await, bulk(&n.to_string()));
    }
}

// ---------------------------------------------------------------------------------------------------
// Vesta-only
// ---------------------------------------------------------------------------------------------------

/// Vesta-only: `SELECT n` writes under namespace `n` on the store nodes (db 0 is namespace "0").
#[tokio::test]
async fn select_maps_to_store_namespaces() {
    let t = Target::get();
    let Some(cluster) = t.vesta_only("select_maps_to_store_namespaces") else { return };
    let mut c = t.conn(false).await;
    let k = Keys::new("select_maps_to_store_namespaces", false);
    let (k0, k3) = (k.k("in-db0"), k.k("in-db3"));
    assert_eq!(call(&mut c, &["SET", &k0, "zero"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SELECT", "3"]).await, Value::Okay);
    assert_eq!(call(&mut c, &["SET", &k3, "three"]).await, Value::Okay);

    // A write is acknowledged after W=2 of 3 replicas; count the replicas that hold it.
    let mut holders = (0, 0);
    for i in 0..cluster.store_count() {
        let zero = cluster.read_store_ns(i, b"0", k0.as_bytes()).await.unwrap();
        let three = cluster.read_store_ns(i, b"3", k3.as_bytes()).await.unwrap();
        assert!(cluster.read_store_ns(i, b"3", k0.as_bytes()).await.unwrap().is_none());
        assert!(cluster.read_store_ns(i, b"0", k3.as_bytes()).await.unwrap().is_none());
        holders.0 += zero.is_some() as usize;
        holders.1 += three.is_some() as usize;
    }
    assert!(holders.0 >= 2 && holders.1 >= 2, "replicas holding the writes: {holders:?}");
}

/// Vesta-only: `vesta dev` starts three stores and a proxy in one process on the port given.
#[tokio::test]
async fn vesta_dev_serves_redis_on_its_port() {
    if std::env::var("VESTA_TEST_REDIS_ADDR").is_ok() {
        eprintln!("vesta_dev_serves_redis_on_its_port: Vesta-only, skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    // The port is chosen before `vesta dev` binds it: retry a few times in case another process took it.
    let mut attempt = 0;
    let (dev, port) = loop {
        let port = common::free_port();
        match common::Proc::spawn("dev", &["dev", "--port", &port.to_string(), "--data-dir", &data, "--memory"]) {
            Ok(dev) => break (dev, port),
            Err(e) if attempt < 3 => {
                attempt += 1;
                eprintln!("vesta dev did not start, retrying: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(dev.addrs.len() >= 4, "one `listening on` line per component: {:?}", dev.addrs);
    assert!(dev.addrs.iter().any(|a| a.port() == port), "nothing listens on the port asked for: {:?}", dev.addrs);

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for resp3 in [false, true] {
        let mut c = common::connect(addr, resp3).await;
        let key = format!("dev:{resp3}");
        assert_eq!(call(&mut c, &["SET", &key, "hello"]).await, Value::Okay);
        assert_eq!(call(&mut c, &["GET", &key]).await, bulk("hello"));
        assert_eq!(call(&mut c, &["INCR", "dev:counter"]).await, int(if resp3 { 2 } else { 1 }));
        assert_eq!(call(&mut c, &["SET", &key, "x", "NX"]).await, Value::Nil);
    }
    drop(dev);
}
