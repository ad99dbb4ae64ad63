//! The `redis` crate (sync `Connection` and async `MultiplexedConnection`, each over RESP2 and RESP3)
//! against a real Vesta cluster. Every case runs against a throwaway redis-server first — so its
//! expectations are proven to be Redis's — then against Vesta, and the two transcripts (reply types
//! included) must match. Cases for commands newer than the Debian redis-server (7.0) run on Vesta only,
//! checked against Redis 8.4's documented semantics.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{
    AsyncCommands, Commands, ErrorKind, ExistenceCheck, ProtocolVersion, RedisResult, ScanOptions, ServerErrorKind,
    SetExpiry, SetOptions, Value, ValueComparison,
};
use vesta_compat_tests::{
    assert_same, async_conn, error_summary, key_prefix, shared_cluster, shared_redis, sync_conn, sync_conn_db, Target,
    Transcript,
};

/// Upper bound of one async case; each call is bounded by the client's response timeout as well.
const CASE_LIMIT: Duration = Duration::from_secs(120);

type SyncCase = fn(&Target, ProtocolVersion, &str, &mut Transcript);

fn compare_sync(test: &str, protocol: ProtocolVersion, case: SyncCase) {
    let prefix = key_prefix(test);
    let redis = shared_redis();
    let mut reference = Transcript::new("redis-server");
    case(&Target::redis(&redis), protocol, &prefix, &mut reference);
    let cluster = shared_cluster();
    let mut tested = Transcript::new("vesta");
    case(&Target::vesta(&cluster), protocol, &prefix, &mut tested);
    assert_same(&reference, &tested);
}

fn vesta_only_sync(test: &str, protocol: ProtocolVersion, case: SyncCase) {
    let cluster = shared_cluster();
    case(&Target::vesta(&cluster), protocol, &key_prefix(test), &mut Transcript::new("vesta"));
}

async fn bounded<F: Future<Output = ()>>(what: &str, f: F) {
    tokio::time::timeout(CASE_LIMIT, f).await.unwrap_or_else(|_| panic!("{what}: not done after {CASE_LIMIT:?}"));
}

/// Starting servers blocks, so it happens off the async workers.
async fn servers() -> (Target, Target) {
    tokio::task::spawn_blocking(|| {
        let redis = shared_redis();
        let cluster = shared_cluster();
        (Target::redis(&redis), Target::vesta(&cluster))
    })
    .await
    .expect("start the servers")
}

macro_rules! compare_async {
    ($test:expr, $protocol:expr, $case:path) => {{
        let prefix = key_prefix($test);
        let (redis, vesta) = servers().await;
        let mut reference = Transcript::new("redis-server");
        bounded("redis-server", $case(&redis, $protocol, &prefix, &mut reference)).await;
        let mut tested = Transcript::new("vesta");
        bounded("vesta", $case(&vesta, $protocol, &prefix, &mut tested)).await;
        assert_same(&reference, &tested);
    }};
}

macro_rules! matrix {
    ($module:ident, $protocol:expr) => {
        mod $module {
            use super::*;
            const P: ProtocolVersion = $protocol;
            fn name(case: &str) -> String {
                format!("{}_{case}", stringify!($module))
            }

            #[test]
            fn sync_handshake() {
                compare_sync(&name("sync_handshake"), P, super::sync_handshake)
            }
            #[test]
            fn sync_strings() {
                compare_sync(&name("sync_strings"), P, super::sync_strings)
            }
            #[test]
            fn sync_pipeline() {
                compare_sync(&name("sync_pipeline"), P, super::sync_pipeline)
            }
            #[test]
            fn sync_errors() {
                compare_sync(&name("sync_errors"), P, super::sync_errors)
            }
            #[test]
            fn sync_multi_exec() {
                compare_sync(&name("sync_multi_exec"), P, super::sync_multi_exec)
            }
            #[test]
            fn sync_scan() {
                compare_sync(&name("sync_scan"), P, super::sync_scan)
            }
            #[test]
            fn sync_watch_transaction() {
                compare_sync(&name("sync_watch_transaction"), P, super::sync_watch_transaction)
            }
            #[test]
            fn sync_scripts() {
                compare_sync(&name("sync_scripts"), P, super::sync_scripts)
            }
            #[test]
            fn sync_unknown_script() {
                compare_sync(&name("sync_unknown_script"), P, super::sync_unknown_script)
            }
            #[test]
            fn sync_keyspace() {
                compare_sync(&name("sync_keyspace"), P, super::sync_keyspace)
            }
            #[test]
            fn sync_client_admin() {
                compare_sync(&name("sync_client_admin"), P, super::sync_client_admin)
            }
            #[test]
            fn sync_compare_and_set() {
                vesta_only_sync(&name("sync_compare_and_set"), P, super::sync_compare_and_set)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_strings() {
                compare_async!(&name("async_strings"), P, super::async_strings)
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_pipeline() {
                compare_async!(&name("async_pipeline"), P, super::async_pipeline)
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_errors() {
                compare_async!(&name("async_errors"), P, super::async_errors)
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_multi_exec() {
                compare_async!(&name("async_multi_exec"), P, super::async_multi_exec)
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_scan() {
                compare_async!(&name("async_scan"), P, super::async_scan)
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_watch() {
                compare_async!(&name("async_watch"), P, super::async_watch)
            }
        }
    };
}

matrix!(resp2, ProtocolVersion::RESP2);
matrix!(resp3, ProtocolVersion::RESP3);

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// `Ok(value)` or the error's kind, code and detail: what a pipeline element or a call came back as.
fn outcome<T: std::fmt::Debug>(r: &RedisResult<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({})", error_summary(e)),
    }
}

fn server_error_kind(e: &redis::RedisError) -> Option<ServerErrorKind> {
    match e.kind() {
        ErrorKind::Server(kind) => Some(kind),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------
// Sync cases
// ---------------------------------------------------------------------------------------------------

fn sync_handshake(target: &Target, protocol: ProtocolVersion, _p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    t.check("PING", redis::cmd("PING").query::<Value>(&mut c).expect("PING"), Value::SimpleString("PONG".into()));
    // The map's values (server name, version, id) differ between servers; its shape and `proto` must not.
    let version = if protocol == ProtocolVersion::RESP3 { 3 } else { 2 };
    let hello: Value = redis::cmd("HELLO").arg(version).query(&mut c).expect("HELLO");
    let pairs: Vec<(Value, Value)> = match hello {
        Value::Map(pairs) => {
            assert_eq!(protocol, ProtocolVersion::RESP3, "[{}] HELLO 2 must answer a flat array", target.name);
            pairs
        }
        Value::Array(items) => {
            assert_eq!(protocol, ProtocolVersion::RESP2, "[{}] HELLO 3 must answer a map", target.name);
            items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
        }
        other => panic!("[{}] HELLO {version}: {other:?}", target.name),
    };
    let keys: Vec<String> = pairs.iter().map(|(k, _)| redis::from_redis_value_ref(k).expect("HELLO key")).collect();
    t.check(
        "HELLO keys",
        keys,
        ["server", "version", "proto", "id", "mode", "role", "modules"].map(String::from).to_vec(),
    );
    let proto = pairs.iter().find(|(k, _)| *k == Value::BulkString(b"proto".to_vec())).map(|(_, v)| v.clone());
    t.check("HELLO proto", proto, Some(Value::Int(version)));
    let id: Value = redis::cmd("CLIENT").arg("ID").query(&mut c).expect("CLIENT ID");
    t.check_that("CLIENT ID", id, |v| matches!(v, Value::Int(n) if *n > 0));
    t.check(
        "CLIENT SETNAME",
        redis::cmd("CLIENT").arg("SETNAME").arg("compat").query::<Value>(&mut c).ok(),
        Some(Value::Okay),
    );
    t.check(
        "CLIENT GETNAME",
        redis::cmd("CLIENT").arg("GETNAME").query::<Option<String>>(&mut c).expect("CLIENT GETNAME"),
        Some("compat".into()),
    );
    t.check("SELECT 0", redis::cmd("SELECT").arg(0).query::<Value>(&mut c).expect("SELECT 0"), Value::Okay);
    t.check("ECHO", redis::cmd("ECHO").arg("hi").query::<String>(&mut c).expect("ECHO"), "hi".into());
}

fn sync_strings(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");

    let () = c.set(k("s"), "v1").expect("SET");
    t.check("GET", c.get::<_, Option<String>>(k("s")).expect("GET"), Some("v1".into()));
    t.check("GET missing", c.get::<_, Option<String>>(k("missing")).expect("GET missing"), None);
    let nx = SetOptions::default().conditional_set(ExistenceCheck::NX);
    t.check(
        "SET NX on existing",
        c.set_options::<_, _, Option<String>>(k("s"), "v2", nx.clone()).expect("SET NX"),
        None,
    );
    let nx_ex = nx.with_expiration(SetExpiry::EX(100));
    t.check(
        "SET NX EX on new",
        c.set_options::<_, _, Option<String>>(k("nx"), "v", nx_ex).expect("SET NX EX"),
        Some("OK".into()),
    );
    t.check_that("TTL after EX 100", c.ttl::<_, i64>(k("nx")).expect("TTL"), |s| (90..=100).contains(s));
    let xx = SetOptions::default().conditional_set(ExistenceCheck::XX);
    t.check(
        "SET XX on missing",
        c.set_options::<_, _, Option<String>>(k("xx"), "v", xx.clone()).expect("SET XX"),
        None,
    );
    t.check("EXISTS after SET XX", c.exists::<_, bool>(k("xx")).expect("EXISTS"), false);
    t.check(
        "SET XX on existing",
        c.set_options::<_, _, Option<String>>(k("s"), "v2", xx).expect("SET XX"),
        Some("OK".into()),
    );
    let get = SetOptions::default().get(true);
    t.check(
        "SET GET",
        c.set_options::<_, _, Option<String>>(k("s"), "v3", get.clone()).expect("SET GET"),
        Some("v2".into()),
    );
    t.check("SET GET on missing", c.set_options::<_, _, Option<String>>(k("g"), "v", get).expect("SET GET"), None);
    let keep = SetOptions::default().with_expiration(SetExpiry::KEEPTTL);
    let () = c.set_options(k("nx"), "w", keep).expect("SET KEEPTTL");
    t.check_that("TTL after KEEPTTL", c.ttl::<_, i64>(k("nx")).expect("TTL"), |s| (90..=100).contains(s));
    let () = c.set(k("nx"), "plain").expect("SET");
    t.check("TTL after plain SET", c.ttl::<_, i64>(k("nx")).expect("TTL"), -1);
    let px = SetOptions::default().with_expiration(SetExpiry::PX(100_000));
    let () = c.set_options(k("px"), "v", px).expect("SET PX");
    t.check_that("PTTL after PX", c.pttl::<_, i64>(k("px")).expect("PTTL"), |ms| (90_000..=100_000).contains(ms));
    let exat = SetOptions::default().with_expiration(SetExpiry::EXAT(unix_secs() + 100));
    let () = c.set_options(k("exat"), "v", exat).expect("SET EXAT");
    t.check_that("TTL after EXAT", c.ttl::<_, i64>(k("exat")).expect("TTL"), |s| (90..=100).contains(s));
    let pxat = SetOptions::default().with_expiration(SetExpiry::PXAT((unix_secs() + 100) * 1000));
    let () = c.set_options(k("pxat"), "v", pxat).expect("SET PXAT");
    t.check_that("TTL after PXAT", c.ttl::<_, i64>(k("pxat")).expect("TTL"), |s| (90..=100).contains(s));
    t.check(
        "SETEX",
        redis::cmd("SETEX").arg(k("setex")).arg(50).arg("v").query::<Value>(&mut c).expect("SETEX"),
        Value::Okay,
    );
    t.check("SETNX existing", c.set_nx::<_, _, bool>(k("setex"), "w").expect("SETNX"), false);

    // Reply types as the client decodes them, compared across servers.
    t.record("raw SET", redis::cmd("SET").arg(k("raw")).arg("x").query::<Value>(&mut c).expect("SET"));
    t.record(
        "raw SET GET",
        redis::cmd("SET").arg(k("raw")).arg("y").arg("GET").query::<Value>(&mut c).expect("SET GET"),
    );
    t.record("raw SET NX", redis::cmd("SET").arg(k("raw")).arg("z").arg("NX").query::<Value>(&mut c).expect("SET NX"));
    t.record("raw GET missing", redis::cmd("GET").arg(k("missing")).query::<Value>(&mut c).expect("GET"));
    t.record("raw TTL", redis::cmd("TTL").arg(k("raw")).query::<Value>(&mut c).expect("TTL"));

    t.check("INCR new", c.incr::<_, _, i64>(k("n"), 1).expect("INCR"), 1);
    t.check("INCRBY", c.incr::<_, _, i64>(k("n"), 10).expect("INCRBY"), 11);
    t.check("DECR", c.decr::<_, _, i64>(k("n"), 1).expect("DECRBY"), 10);
    t.check("DECR", redis::cmd("DECR").arg(k("n")).query::<i64>(&mut c).expect("DECR"), 9);
    t.check("INCRBYFLOAT", c.incr::<_, _, f64>(k("n"), 1.5).expect("INCRBYFLOAT"), 10.5);
    t.check("GET after INCRBYFLOAT", c.get::<_, String>(k("n")).expect("GET"), "10.5".into());

    let () = c.mset(&[(k("m1"), "a"), (k("m2"), "b")]).expect("MSET");
    t.check(
        "MGET",
        c.mget::<_, Vec<Option<String>>>(&[k("m1"), k("missing"), k("m2")]).expect("MGET"),
        vec![Some("a".into()), None, Some("b".into())],
    );
    t.check("EXPIRE", c.expire::<_, bool>(k("m1"), 100).expect("EXPIRE"), true);
    t.check_that("TTL", c.ttl::<_, i64>(k("m1")).expect("TTL"), |s| (90..=100).contains(s));
    t.check("EXPIRE missing", c.expire::<_, bool>(k("missing"), 100).expect("EXPIRE"), false);
    t.check("PERSIST", c.persist::<_, bool>(k("m1")).expect("PERSIST"), true);
    t.check("TTL no expiry", c.ttl::<_, i64>(k("m1")).expect("TTL"), -1);
    t.check("TTL missing", c.ttl::<_, i64>(k("missing")).expect("TTL"), -2);
    t.check("PTTL missing", c.pttl::<_, i64>(k("missing")).expect("PTTL"), -2);
    t.check("EXISTS 3 keys", c.exists::<_, usize>(&[k("m1"), k("m2"), k("missing")]).expect("EXISTS"), 2);
    t.check("DEL", c.del::<_, usize>(&[k("m1"), k("m2"), k("missing")]).expect("DEL"), 2);
    t.check("EXISTS after DEL", c.exists::<_, usize>(&[k("m1"), k("m2")]).expect("EXISTS"), 0);

    let () = c.set(k("str"), "Hello").expect("SET");
    t.check("APPEND", c.append::<_, _, usize>(k("str"), " World").expect("APPEND"), 11);
    t.check("STRLEN", c.strlen::<_, usize>(k("str")).expect("STRLEN"), 11);
    t.check("GETRANGE", c.getrange::<_, String>(k("str"), 0, 4).expect("GETRANGE"), "Hello".into());
    t.check("SETRANGE", c.setrange::<_, _, usize>(k("str"), 6, "Redis").expect("SETRANGE"), 11);
    t.check("TYPE", redis::cmd("TYPE").arg(k("str")).query::<String>(&mut c).expect("TYPE"), "string".into());
    t.check("TYPE missing", redis::cmd("TYPE").arg(k("missing")).query::<String>(&mut c).expect("TYPE"), "none".into());
    t.check("GETDEL", c.get_del::<_, Option<String>>(k("str")).expect("GETDEL"), Some("Hello Redis".into()));
    t.check("GETDEL again", c.get_del::<_, Option<String>>(k("str")).expect("GETDEL"), None);
    let () = c.set(k("gx"), "v").expect("SET");
    t.check(
        "GETEX EX",
        c.get_ex::<_, Option<String>>(k("gx"), redis::Expiry::EX(100)).expect("GETEX"),
        Some("v".into()),
    );
    t.check_that("TTL after GETEX", c.ttl::<_, i64>(k("gx")).expect("TTL"), |s| (90..=100).contains(s));
    t.check(
        "GETEX PERSIST",
        c.get_ex::<_, Option<String>>(k("gx"), redis::Expiry::PERSIST).expect("GETEX"),
        Some("v".into()),
    );
    t.check("TTL after GETEX PERSIST", c.ttl::<_, i64>(k("gx")).expect("TTL"), -1);
    t.check("GETSET", c.getset::<_, _, Option<String>>(k("gx"), "w").expect("GETSET"), Some("v".into()));

    // Binary safety: NUL, CR LF and RESP type bytes inside a value.
    let bin: Vec<u8> = vec![0, 255, b'\r', b'\n', b'$', b'*', b'-', 0];
    let () = c.set(k("bin"), &bin[..]).expect("SET binary");
    t.check("GET binary", c.get::<_, Vec<u8>>(k("bin")).expect("GET binary"), bin);
}

fn sync_pipeline(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    let r: (i64, i64, Option<String>) = redis::pipe()
        .set(k("p"), 5)
        .ignore()
        .incr(k("p"), 1)
        .incr(k("p"), 1)
        .get(k("p"))
        .query(&mut c)
        .expect("pipeline");
    t.check("pipeline", r, (6, 7, Some("7".into())));

    let mut many = redis::pipe();
    for _ in 0..200 {
        many.incr(k("many"), 1);
    }
    t.check("200 pipelined INCR", many.query::<Vec<i64>>(&mut c).expect("pipeline of 200"), (1..=200).collect());

    let mut mixed = redis::pipe();
    mixed.set(k("pe"), "x").incr(k("pe"), 1).get(k("pe"));
    let partial: Vec<RedisResult<Value>> =
        mixed.clone().ignore_errors().query(&mut c).expect("pipeline with ignore_errors");
    t.record("pipeline with an error, ignore_errors", partial.iter().map(outcome).collect::<Vec<_>>());
    let failed = mixed.query::<Value>(&mut c);
    t.check_that("pipeline with an error", &failed, |r| {
        r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError))
    });
    t.record("pipeline with an error", outcome(&failed));
    t.check("PING after", redis::cmd("PING").query::<String>(&mut c).expect("PING"), "PONG".into());

    // Writes of many keys in one pipeline (Vesta runs those that follow nothing on their key as one
    // group): each answered, and applied, as if it ran alone; later commands on a key see the earlier.
    let _: () = redis::pipe()
        .set(k("g-text"), "abc")
        .set(k("g-n"), 10)
        .set(k("g-old"), "old")
        .ignore()
        .query(&mut c)
        .expect("setup");
    let mut group = redis::pipe();
    group
        .set(k("g-new"), "v")
        .cmd("SET")
        .arg(k("g-old"))
        .arg("x")
        .arg("NX")
        .cmd("SETNX")
        .arg(k("g-nx"))
        .arg("1")
        .incr(k("g-n"), 5)
        .cmd("INCR")
        .arg(k("g-text"))
        .cmd("GETSET")
        .arg(k("g-gs"))
        .arg("first")
        .cmd("APPEND")
        .arg(k("g-app"))
        .arg("abc")
        .cmd("SET")
        .arg(k("g-xx"))
        .arg("v")
        .arg("XX")
        .cmd("INCRBYFLOAT")
        .arg(k("g-f"))
        .arg("1.5")
        .cmd("DEL")
        .arg(k("g-old"))
        .cmd("EXPIRE")
        .arg(k("g-new"))
        .arg(100)
        .cmd("GETDEL")
        .arg(k("g-n"))
        .cmd("SET")
        .arg(k("g-old"))
        .arg("again")
        .arg("NX")
        .arg("GET");
    let written: Vec<RedisResult<Value>> = group.ignore_errors().query(&mut c).expect("pipeline of writes");
    t.record("pipelined writes of many keys", written.iter().map(outcome).collect::<Vec<_>>());
    let mut read = redis::pipe();
    for key in ["g-new", "g-old", "g-nx", "g-n", "g-text", "g-gs", "g-app", "g-xx", "g-f"] {
        read.get(k(key));
    }
    read.ttl(k("g-new"));
    let after: Vec<RedisResult<Value>> = read.ignore_errors().query(&mut c).expect("reading them back");
    t.record("the keys after the pipeline", after.iter().map(outcome).collect::<Vec<_>>());
}

fn sync_errors(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    let () = c.set(k("s"), "abc").expect("SET");
    let e = c.incr::<_, _, i64>(k("s"), 1).expect_err("INCR on a non-integer");
    t.check("INCR non-integer kind", e.kind(), ErrorKind::Server(ServerErrorKind::ResponseError));
    t.check("INCR non-integer detail", e.detail(), Some("value is not an integer or out of range"));
    let e = c.incr::<_, _, f64>(k("s"), 1.5).expect_err("INCRBYFLOAT on a non-float");
    t.record("INCRBYFLOAT non-float", error_summary(&e));
    t.check("INCRBYFLOAT non-float detail", e.detail(), Some("value is not a valid float"));
    let e = redis::cmd("NOSUCHCMD").arg("a").arg("b").query::<Value>(&mut c).expect_err("unknown command");
    t.check("unknown command kind", server_error_kind(&e), Some(ServerErrorKind::ResponseError));
    t.check(
        "unknown command detail",
        e.detail(),
        Some("unknown command 'NOSUCHCMD', with args beginning with: 'a' 'b' "),
    );
    let e = redis::cmd("GET").query::<Value>(&mut c).expect_err("GET without a key");
    t.check("arity detail", e.detail(), Some("wrong number of arguments for 'get' command"));
    let e = redis::cmd("SET").arg(k("s")).arg("v").arg("NX").arg("XX").query::<Value>(&mut c).expect_err("SET NX XX");
    t.check("syntax error", e.detail(), Some("syntax error"));
    let e = redis::cmd("EXPIRE").arg(k("s")).arg("soon").query::<Value>(&mut c).expect_err("EXPIRE soon");
    t.check("EXPIRE non-integer", e.detail(), Some("value is not an integer or out of range"));
    let e = redis::cmd("SET").arg(k("s")).arg("v").arg("EX").arg(0).query::<Value>(&mut c).expect_err("SET EX 0");
    t.check("SET EX 0", e.detail(), Some("invalid expire time in 'set' command"));
    let e = redis::cmd("SELECT").arg(99).query::<Value>(&mut c).expect_err("SELECT 99");
    t.check("SELECT 99", e.detail(), Some("DB index is out of range"));
    // A nil converted to an integer fails in the client, the same way for any server.
    let e = c.get::<_, i64>(k("missing")).expect_err("nil as i64");
    t.record("nil as i64", e.kind());
    t.check("PING after errors", redis::cmd("PING").query::<String>(&mut c).expect("PING"), "PONG".into());
}

fn sync_multi_exec(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    let r: (i64, String) =
        redis::pipe().atomic().set(k("t"), 1).ignore().incr(k("t"), 5).get(k("t")).query(&mut c).expect("MULTI/EXEC");
    t.check("atomic pipeline", r, (6, "6".into()));
    let raw: Value = redis::pipe().atomic().set(k("t"), "a").get(k("t")).query(&mut c).expect("MULTI/EXEC raw");
    t.record("atomic pipeline raw", raw);

    // A command failing at run time does not abort the others (Redis has no rollback).
    let mut runtime = redis::pipe();
    runtime.atomic().set(k("rt"), "abc").incr(k("rt"), 1).set(k("rt2"), "after");
    let partial: Vec<RedisResult<Value>> =
        runtime.clone().ignore_errors().query(&mut c).expect("EXEC with a failing command");
    t.record("EXEC with a failing command", partial.iter().map(outcome).collect::<Vec<_>>());
    t.check(
        "command after the failing one ran",
        c.get::<_, Option<String>>(k("rt2")).expect("GET"),
        Some("after".into()),
    );
    t.record("EXEC with a failing command, typed", outcome(&runtime.query::<Value>(&mut c)));

    // A command rejected while queueing aborts the whole transaction: EXECABORT, nothing written.
    let queued = redis::pipe().atomic().set(k("qe"), "1").cmd("NOSUCHCMD").arg("x").query::<Value>(&mut c);
    t.check_that("EXECABORT", &queued, |r| {
        r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort))
    });
    t.record("EXECABORT", outcome(&queued));
    t.check("nothing written after EXECABORT", c.exists::<_, bool>(k("qe")).expect("EXISTS"), false);

    // By hand: MULTI, QUEUED, DISCARD.
    t.check("MULTI", redis::cmd("MULTI").query::<Value>(&mut c).expect("MULTI"), Value::Okay);
    let queued: Value = redis::cmd("SET").arg(k("d")).arg("1").query(&mut c).expect("SET in MULTI");
    t.check("QUEUED", queued, Value::SimpleString("QUEUED".into()));
    let nested = redis::cmd("MULTI").query::<Value>(&mut c).expect_err("nested MULTI");
    t.check("nested MULTI", nested.detail(), Some("MULTI calls can not be nested"));
    t.check("DISCARD", redis::cmd("DISCARD").query::<Value>(&mut c).expect("DISCARD"), Value::Okay);
    t.check("nothing written after DISCARD", c.exists::<_, bool>(k("d")).expect("EXISTS"), false);
    let e = redis::cmd("EXEC").query::<Value>(&mut c).expect_err("EXEC without MULTI");
    t.check("EXEC without MULTI", e.detail(), Some("EXEC without MULTI"));
    let e = redis::cmd("DISCARD").query::<Value>(&mut c).expect_err("DISCARD without MULTI");
    t.check("DISCARD without MULTI", e.detail(), Some("DISCARD without MULTI"));
    // An empty transaction is an empty array.
    t.check("MULTI", redis::cmd("MULTI").query::<Value>(&mut c).expect("MULTI"), Value::Okay);
    t.check("empty EXEC", redis::cmd("EXEC").query::<Value>(&mut c).expect("EXEC"), Value::Array(vec![]));
}

fn sync_scan(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    let expected: Vec<String> = (0..30).map(|i| k(&format!("scan:{i:02}"))).collect();
    let () = c.mset(&expected.iter().map(|key| (key.as_str(), "v")).collect::<Vec<_>>()).expect("MSET");
    let () = c.set(k("other"), "v").expect("SET");

    // SCAN may return a key more than once; every key present throughout must come at least once.
    let mut found: Vec<String> =
        c.scan_match::<_, String>(k("scan:*")).expect("SCAN MATCH").map(|r| r.expect("SCAN item")).collect();
    found.sort();
    found.dedup();
    t.check("scan_match", found, expected.clone());

    let opts = ScanOptions::default().with_pattern(k("scan:1*")).with_count(5).with_type("string");
    let mut found: Vec<String> = c.scan_options::<String>(opts).expect("SCAN").map(|r| r.expect("SCAN item")).collect();
    found.sort();
    found.dedup();
    t.check("scan_options COUNT TYPE string", found, expected[10..20].to_vec());
    let opts = ScanOptions::default().with_pattern(k("scan:*")).with_type("hash");
    let found: Vec<String> = c.scan_options::<String>(opts).expect("SCAN").map(|r| r.expect("SCAN item")).collect();
    t.check("scan_options TYPE hash", found, vec![]);

    // The cursor must be a decimal u64: the crate (and redis-py) parse it as an integer.
    let page: (String, Vec<String>) =
        redis::cmd("SCAN").arg(0).arg("MATCH").arg(k("scan:*")).arg("COUNT").arg(3).query(&mut c).expect("SCAN page");
    t.check_that("SCAN cursor is a u64", &page.0, |s| s.parse::<u64>().is_ok());

    let mut keys: Vec<String> = c.keys(k("scan:0*")).expect("KEYS");
    keys.sort();
    t.check("KEYS", keys, expected[..10].to_vec());
    t.check("KEYS no match", c.keys::<_, Vec<String>>(k("nothing:*")).expect("KEYS"), vec![]);
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    t.check_that("DBSIZE", size, |n| *n >= 31);
}

fn sync_watch_transaction(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let mut other = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    let key = k("w");
    let () = c.set(&key, 10).expect("SET");

    // Another client writes the watched key between WATCH and EXEC: EXEC answers nil, the crate retries.
    let mut attempts = 0;
    let (value,): (i64,) = redis::transaction(&mut c, &[&key], |con, pipe| {
        attempts += 1;
        let current: i64 = con.get(&key)?;
        if attempts == 1 {
            let () = other.set(&key, 100)?;
        }
        pipe.set(&key, current + 1).ignore().get(&key).query(con)
    })
    .expect("WATCH transaction");
    t.check("transaction result", value, 101);
    t.check("transaction attempts", attempts, 2);

    // Nobody interferes: one attempt.
    let mut attempts = 0;
    let (value,): (i64,) = redis::transaction(&mut c, &[&key], |con, pipe| {
        attempts += 1;
        let current: i64 = con.get(&key)?;
        pipe.set(&key, current * 2).ignore().get(&key).query(con)
    })
    .expect("WATCH transaction");
    t.check("uncontended transaction", (value, attempts), (202, 1));

    // By hand: an aborted EXEC is a nil reply.
    t.check("WATCH", redis::cmd("WATCH").arg(&key).query::<Value>(&mut c).expect("WATCH"), Value::Okay);
    let () = other.set(&key, "theirs").expect("SET from another client");
    let aborted: Value = redis::pipe().atomic().set(&key, "mine").query(&mut c).expect("EXEC after a conflict");
    t.check("EXEC after a conflict", aborted, Value::Nil);
    t.check("their write stands", c.get::<_, String>(&key).expect("GET"), "theirs".into());
    // A key that expires or is deleted counts as modified too; UNWATCH forgets everything.
    t.check("WATCH", redis::cmd("WATCH").arg(&key).query::<Value>(&mut c).expect("WATCH"), Value::Okay);
    t.check("UNWATCH", redis::cmd("UNWATCH").query::<Value>(&mut c).expect("UNWATCH"), Value::Okay);
    let () = other.set(&key, "again").expect("SET from another client");
    let r: (String,) = redis::pipe().atomic().set(&key, "mine").ignore().get(&key).query(&mut c).expect("EXEC");
    t.check("EXEC after UNWATCH", r, ("mine".into(),));
    t.check("MULTI", redis::cmd("MULTI").query::<Value>(&mut c).expect("MULTI"), Value::Okay);
    let e = redis::cmd("WATCH").arg(&key).query::<Value>(&mut c).expect_err("WATCH inside MULTI");
    t.check("WATCH inside MULTI", e.detail(), Some("WATCH inside MULTI is not allowed"));
    t.check("DISCARD", redis::cmd("DISCARD").query::<Value>(&mut c).expect("DISCARD"), Value::Okay);
}

fn sync_keyspace(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    t.check(
        "MSETNX all new",
        redis::cmd("MSETNX").arg(k("a")).arg("1").arg(k("b")).arg("2").query::<i64>(&mut c).expect("MSETNX"),
        1,
    );
    t.check(
        "MSETNX one exists",
        redis::cmd("MSETNX").arg(k("b")).arg("x").arg(k("c")).arg("3").query::<i64>(&mut c).expect("MSETNX"),
        0,
    );
    t.check(
        "MSETNX wrote nothing",
        c.mget::<_, Vec<Option<String>>>(&[k("b"), k("c")]).expect("MGET"),
        vec![Some("2".into()), None],
    );

    let () = c.set_options(k("a"), "1", SetOptions::default().with_expiration(SetExpiry::EX(100))).expect("SET EX");
    t.check(
        "RENAME",
        redis::cmd("RENAME").arg(k("a")).arg(k("r")).query::<Value>(&mut c).expect("RENAME"),
        Value::Okay,
    );
    t.check("RENAME source gone", c.exists::<_, bool>(k("a")).expect("EXISTS"), false);
    t.check("RENAME value", c.get::<_, Option<String>>(k("r")).expect("GET"), Some("1".into()));
    t.check_that("RENAME keeps the TTL", c.ttl::<_, i64>(k("r")).expect("TTL"), |s| (90..=100).contains(s));
    let e =
        redis::cmd("RENAME").arg(k("missing")).arg(k("x")).query::<Value>(&mut c).expect_err("RENAME of a missing key");
    t.check("RENAME missing", e.detail(), Some("no such key"));
    t.check(
        "RENAME onto itself",
        redis::cmd("RENAME").arg(k("r")).arg(k("r")).query::<Value>(&mut c).expect("RENAME"),
        Value::Okay,
    );
    t.check("RENAMENX onto an existing key", c.rename_nx::<_, _, bool>(k("r"), k("b")).expect("RENAMENX"), false);
    t.check("RENAMENX", c.rename_nx::<_, _, bool>(k("r"), k("rn")).expect("RENAMENX"), true);

    t.check("COPY", redis::cmd("COPY").arg(k("rn")).arg(k("cp")).query::<i64>(&mut c).expect("COPY"), 1);
    t.check(
        "COPY onto an existing key",
        redis::cmd("COPY").arg(k("rn")).arg(k("b")).query::<i64>(&mut c).expect("COPY"),
        0,
    );
    t.check("b unchanged", c.get::<_, String>(k("b")).expect("GET"), "2".into());
    let replaced =
        redis::cmd("COPY").arg(k("rn")).arg(k("b")).arg("REPLACE").query::<i64>(&mut c).expect("COPY REPLACE");
    t.check("COPY REPLACE", replaced, 1);
    t.check("b replaced", c.get::<_, String>(k("b")).expect("GET"), "1".into());
    t.check_that("COPY keeps the TTL", c.ttl::<_, i64>(k("cp")).expect("TTL"), |s| (90..=100).contains(s));
    t.check("COPY missing", redis::cmd("COPY").arg(k("missing")).arg(k("x")).query::<i64>(&mut c).expect("COPY"), 0);
    let e = redis::cmd("COPY").arg(k("b")).arg(k("b")).query::<Value>(&mut c).expect_err("COPY onto itself");
    t.check("COPY onto itself", e.detail(), Some("source and destination objects are the same"));

    // Another database: one per protocol, because the RESP2 and RESP3 variants run at the same time.
    let db = if protocol == ProtocolVersion::RESP3 { 10 } else { 9 };
    let copied =
        redis::cmd("COPY").arg(k("b")).arg(k("other-db")).arg("DB").arg(db).query::<i64>(&mut c).expect("COPY DB");
    t.check("COPY DB", copied, 1);
    t.check("not in db 0", c.exists::<_, bool>(k("other-db")).expect("EXISTS"), false);
    let mut in_db = sync_conn_db(target.addr, protocol, db);
    t.check("in the other db", in_db.get::<_, Option<String>>(k("other-db")).expect("GET"), Some("1".into()));
    t.check("FLUSHDB", redis::cmd("FLUSHDB").query::<Value>(&mut in_db).expect("FLUSHDB"), Value::Okay);
    t.check("DBSIZE after FLUSHDB", redis::cmd("DBSIZE").query::<i64>(&mut in_db).expect("DBSIZE"), 0);
    t.check("db 0 untouched by FLUSHDB of another", c.get::<_, Option<String>>(k("b")).expect("GET"), Some("1".into()));
}

fn sync_client_admin(target: &Target, protocol: ProtocolVersion, _p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let mut victim = sync_conn(target.addr, protocol);
    let own: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).expect("CLIENT ID");
    let victim_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut victim).expect("CLIENT ID");
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).expect("CLIENT LIST");
    t.check_that("CLIENT LIST names both clients", &list, |l| {
        let has =
            |id: i64| l.lines().any(|line| line.starts_with(&format!("id={id} ")) && line.contains(" addr=127.0.0.1:"));
        has(own) && has(victim_id)
    });
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).expect("CLIENT INFO");
    t.check_that("CLIENT INFO is this client", &info, |l| l.starts_with(&format!("id={own} ")));
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(victim_id).query(&mut c).expect("CLIENT KILL ID");
    t.check("CLIENT KILL ID", killed, 1);
    let after = redis::cmd("PING").query::<String>(&mut victim);
    t.check_that("the killed client's connection is closed", &after, |r| {
        r.as_ref().is_err_and(|e| e.is_io_error() || e.is_connection_dropped())
    });
    t.check(
        "CLIENT KILL ID unknown",
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(999_999_999).query::<i64>(&mut c).expect("CLIENT KILL"),
        0,
    );
    let e = redis::cmd("CLIENT").arg("KILL").arg("1.2.3.4:5").query::<Value>(&mut c).expect_err("CLIENT KILL addr");
    t.check("CLIENT KILL unknown addr", e.detail(), Some("No such client"));
    t.check("PING after", redis::cmd("PING").query::<String>(&mut c).expect("PING"), "PONG".into());
}

/// redis-py's lock scripts, sent through the crate's `Script` (EVALSHA, then SCRIPT LOAD on NOSCRIPT).
/// Vesta does not run Lua; it recognises these exact scripts.
const LOCK_RELEASE: &str = "
        local token = redis.call('get', KEYS[1])
        if not token or token ~= ARGV[1] then
            return 0
        end
        redis.call('del', KEYS[1])
        return 1
    ";

fn sync_scripts(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    let script = redis::Script::new(LOCK_RELEASE);
    t.check("script sha", script.get_hash(), "c3f8721cbb97f72bc19e972846bd7aaf91901658");
    let loaded: String = redis::cmd("SCRIPT").arg("LOAD").arg(LOCK_RELEASE).query(&mut c).expect("SCRIPT LOAD");
    t.check("SCRIPT LOAD", loaded, script.get_hash().to_string());
    let () = c.set(k("lock"), "token-a").expect("SET");
    t.check("release, other token", script.key(k("lock")).arg("token-b").invoke::<i64>(&mut c).expect("EVALSHA"), 0);
    t.check("lock still held", c.get::<_, Option<String>>(k("lock")).expect("GET"), Some("token-a".into()));
    t.check("release, own token", script.key(k("lock")).arg("token-a").invoke::<i64>(&mut c).expect("EVALSHA"), 1);
    t.check("lock gone", c.exists::<_, bool>(k("lock")).expect("EXISTS"), false);
    t.check("release, no lock", script.key(k("lock")).arg("token-a").invoke::<i64>(&mut c).expect("EVALSHA"), 0);
}

/// An unknown SHA is `NOSCRIPT`: that reply is what makes clients (this crate's `Script`, redis-py's
/// `Script`) fall back to `SCRIPT LOAD`.
fn sync_unknown_script(target: &Target, protocol: ProtocolVersion, _p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    for keys in [vec!["k"], vec![], vec!["k1", "k2"]] {
        let e = redis::cmd("EVALSHA").arg(unknown).arg(keys.len()).arg(&keys).query::<Value>(&mut c);
        let e = e.expect_err("EVALSHA of an unknown script");
        t.check(
            &format!("unknown EVALSHA with {} keys: kind", keys.len()),
            e.kind(),
            ErrorKind::Server(ServerErrorKind::NoScript),
        );
        t.check(
            &format!("unknown EVALSHA with {} keys", keys.len()),
            e.detail(),
            Some("No matching script. Please use EVAL."),
        );
    }
}

/// Redis 8.4 compare-and-set (newer than the Debian redis-server, so Vesta only).
fn sync_compare_and_set(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = sync_conn(target.addr, protocol);
    let k = |s: &str| format!("{p}{s}");
    let key = k("cas");
    let set = |c: &mut redis::Connection, v: &str, cmp: ValueComparison| -> Option<String> {
        c.set_options(&key, v, SetOptions::default().value_comparison(cmp)).expect("SET with a value comparison")
    };
    t.check("IFEQ on missing: not created", set(&mut c, "v", ValueComparison::ifeq("x")), None);
    t.check("missing still", c.exists::<_, bool>(&key).expect("EXISTS"), false);
    t.check("IFNE on missing: created", set(&mut c, "v1", ValueComparison::ifne("x")), Some("OK".into()));
    t.check("IFEQ match", set(&mut c, "v2", ValueComparison::ifeq("v1")), Some("OK".into()));
    t.check("IFEQ mismatch", set(&mut c, "v3", ValueComparison::ifeq("v1")), None);
    t.check("IFNE equal", set(&mut c, "v3", ValueComparison::ifne("v2")), None);
    t.check("value", c.get::<_, String>(&key).expect("GET"), "v2".into());

    // The digest is XXH3-64 as 16 hex digits; redis.io's example: "Hello world" → b6acb9d84a38ff74.
    let () = c.set(k("hw"), "Hello world").expect("SET");
    t.check("DIGEST example", c.digest::<_, Option<String>>(k("hw")).expect("DIGEST"), Some("b6acb9d84a38ff74".into()));
    t.check("DIGEST missing", c.digest::<_, Option<String>>(k("missing")).expect("DIGEST"), None);
    let digest = c.digest::<_, String>(&key).expect("DIGEST");
    t.check("DIGEST = crate's XXH3", digest.clone(), redis::calculate_value_digest("v2"));
    t.check("IFDEQ match", set(&mut c, "v4", ValueComparison::ifdeq(&digest)), Some("OK".into()));
    t.check("IFDEQ stale", set(&mut c, "v5", ValueComparison::ifdeq(&digest)), None);
    t.check("IFDNE stale digest", set(&mut c, "v5", ValueComparison::ifdne(&digest)), Some("OK".into()));
    let with_get = SetOptions::default().value_comparison(ValueComparison::ifeq("v5")).get(true);
    t.check(
        "IFEQ GET",
        c.set_options::<_, _, Option<String>>(&key, "v6", with_get).expect("SET IFEQ GET"),
        Some("v5".into()),
    );

    t.check("DELEX IFEQ mismatch", c.del_ex::<_, usize>(&key, ValueComparison::ifeq("nope")).expect("DELEX"), 0);
    t.check("DELEX IFNE equal", c.del_ex::<_, usize>(&key, ValueComparison::ifne("v6")).expect("DELEX"), 0);
    let digest = redis::calculate_value_digest("v6");
    t.check("DELEX IFDEQ", c.del_ex::<_, usize>(&key, ValueComparison::ifdeq(&digest)).expect("DELEX"), 1);
    t.check("DELEX missing", c.del_ex::<_, usize>(&key, ValueComparison::ifne("x")).expect("DELEX"), 0);
    let () = c.set(&key, "plain").expect("SET");
    t.check("DELEX without condition", redis::cmd("DELEX").arg(&key).query::<i64>(&mut c).expect("DELEX"), 1);
}

// ---------------------------------------------------------------------------------------------------
// Async cases (multiplexed connection)
// ---------------------------------------------------------------------------------------------------

async fn async_strings(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = async_conn(target.addr, protocol).await;
    let k = |s: &str| format!("{p}{s}");
    let () = c.set(k("s"), "v1").await.expect("SET");
    t.check("GET", c.get::<_, Option<String>>(k("s")).await.expect("GET"), Some("v1".into()));
    let nx_ex = SetOptions::default().conditional_set(ExistenceCheck::NX).with_expiration(SetExpiry::EX(100));
    t.check(
        "SET NX EX existing",
        c.set_options::<_, _, Option<String>>(k("s"), "v", nx_ex.clone()).await.expect("SET"),
        None,
    );
    t.check(
        "SET NX EX new",
        c.set_options::<_, _, Option<String>>(k("n"), "v", nx_ex).await.expect("SET"),
        Some("OK".into()),
    );
    t.check_that("TTL", c.ttl::<_, i64>(k("n")).await.expect("TTL"), |s| (90..=100).contains(s));
    let get = SetOptions::default().get(true).with_expiration(SetExpiry::PX(50_000));
    t.check(
        "SET GET PX",
        c.set_options::<_, _, Option<String>>(k("s"), "v2", get).await.expect("SET"),
        Some("v1".into()),
    );
    t.check_that("PTTL", c.pttl::<_, i64>(k("s")).await.expect("PTTL"), |ms| (40_000..=50_000).contains(ms));
    t.record(
        "raw SET GET",
        redis::cmd("SET").arg(k("s")).arg("v3").arg("GET").query_async::<Value>(&mut c).await.expect("SET"),
    );
    t.record("raw GET missing", redis::cmd("GET").arg(k("missing")).query_async::<Value>(&mut c).await.expect("GET"));
    t.check("INCR", c.incr::<_, _, i64>(k("i"), 1).await.expect("INCR"), 1);
    t.check("INCRBY", c.incr::<_, _, i64>(k("i"), 41).await.expect("INCRBY"), 42);
    t.check("DECRBY", c.decr::<_, _, i64>(k("i"), 2).await.expect("DECRBY"), 40);
    let () = c.mset(&[(k("a"), "1"), (k("b"), "2")]).await.expect("MSET");
    t.check(
        "MGET",
        c.mget::<_, Vec<Option<String>>>(&[k("a"), k("missing"), k("b")]).await.expect("MGET"),
        vec![Some("1".into()), None, Some("2".into())],
    );
    t.check("EXPIRE", c.expire::<_, bool>(k("a"), 100).await.expect("EXPIRE"), true);
    t.check_that("TTL", c.ttl::<_, i64>(k("a")).await.expect("TTL"), |s| (90..=100).contains(s));
    t.check("TTL none", c.ttl::<_, i64>(k("b")).await.expect("TTL"), -1);
    t.check("TTL missing", c.ttl::<_, i64>(k("missing")).await.expect("TTL"), -2);
    t.check("DEL", c.del::<_, usize>(&[k("a"), k("b"), k("missing")]).await.expect("DEL"), 2);
    t.check("EXISTS", c.exists::<_, usize>(&[k("a"), k("i")]).await.expect("EXISTS"), 1);
    // Concurrent commands on one multiplexed connection come back to their own callers.
    let futures: Vec<_> = (0..50)
        .map(|i| {
            let mut c = c.clone();
            let key = k(&format!("c{}", i % 5));
            async move { c.incr::<_, _, i64>(key, 1).await.expect("concurrent INCR") }
        })
        .collect();
    let mut results = futures::future::join_all(futures).await;
    results.sort();
    t.check("50 concurrent INCR over 5 keys", results, (1..=10).flat_map(|n| [n; 5]).collect());
}

async fn async_pipeline(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = async_conn(target.addr, protocol).await;
    let k = |s: &str| format!("{p}{s}");
    let r: (i64, Option<String>, Vec<Option<String>>) = redis::pipe()
        .set(k("p"), 1)
        .ignore()
        .incr(k("p"), 2)
        .get(k("p"))
        .mget(&[k("p"), k("missing")])
        .query_async(&mut c)
        .await
        .expect("pipeline");
    t.check("pipeline", r, (3, Some("3".into()), vec![Some("3".into()), None]));
    let mut many = redis::pipe();
    for i in 0..300 {
        many.set(k(&format!("k{i}")), i).ignore().get(k(&format!("k{i}")));
    }
    let got: Vec<i64> = many.query_async(&mut c).await.expect("pipeline of 600");
    t.check("300 SET+GET in order", got, (0..300).collect());
    let mut mixed = redis::pipe();
    mixed.set(k("pe"), "x").incr(k("pe"), 1).get(k("pe"));
    let partial: Vec<RedisResult<Value>> = mixed.ignore_errors().query_async(&mut c).await.expect("pipeline");
    t.record("pipeline with an error", partial.iter().map(outcome).collect::<Vec<_>>());
    t.check("PING after", redis::cmd("PING").query_async::<String>(&mut c).await.expect("PING"), "PONG".into());
}

async fn async_errors(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = async_conn(target.addr, protocol).await;
    let k = |s: &str| format!("{p}{s}");
    let () = c.set(k("s"), "abc").await.expect("SET");
    let e = c.incr::<_, _, i64>(k("s"), 1).await.expect_err("INCR on a non-integer");
    t.check("INCR non-integer kind", e.kind(), ErrorKind::Server(ServerErrorKind::ResponseError));
    t.check("INCR non-integer detail", e.detail(), Some("value is not an integer or out of range"));
    let e = redis::cmd("NOSUCHCMD").query_async::<Value>(&mut c).await.expect_err("unknown command");
    t.check("unknown command", e.detail(), Some("unknown command 'NOSUCHCMD', with args beginning with: "));
    let e = redis::cmd("SET").arg(k("s")).query_async::<Value>(&mut c).await.expect_err("SET without a value");
    t.check("arity", e.detail(), Some("wrong number of arguments for 'set' command"));
    let e = redis::cmd("SET").arg(k("s")).arg("v").arg("PX").arg(-5).query_async::<Value>(&mut c).await;
    t.check("SET PX -5", e.expect_err("SET PX -5").detail(), Some("invalid expire time in 'set' command"));
    t.check("PING after errors", redis::cmd("PING").query_async::<String>(&mut c).await.expect("PING"), "PONG".into());
}

async fn async_multi_exec(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = async_conn(target.addr, protocol).await;
    let k = |s: &str| format!("{p}{s}");
    let r: (i64, i64, String) = redis::pipe()
        .atomic()
        .set(k("t"), 10)
        .ignore()
        .incr(k("t"), 1)
        .decr(k("t"), 3)
        .get(k("t"))
        .query_async(&mut c)
        .await
        .expect("MULTI/EXEC");
    t.check("atomic pipeline", r, (11, 8, "8".into()));
    let raw: Value = redis::pipe().atomic().set(k("t"), "a").get(k("t")).query_async(&mut c).await.expect("raw");
    t.record("atomic pipeline raw", raw);
    let queued = redis::pipe().atomic().set(k("qe"), "1").cmd("NOSUCHCMD").query_async::<Value>(&mut c).await;
    t.check_that("EXECABORT", &queued, |r| {
        r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort))
    });
    t.record("EXECABORT", outcome(&queued));
    t.check("nothing written", c.exists::<_, bool>(k("qe")).await.expect("EXISTS"), false);
    t.check("PING after", redis::cmd("PING").query_async::<String>(&mut c).await.expect("PING"), "PONG".into());
}

async fn async_scan(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    let mut c = async_conn(target.addr, protocol).await;
    let k = |s: &str| format!("{p}{s}");
    let expected: Vec<String> = (0..40).map(|i| k(&format!("scan:{i:02}"))).collect();
    let () = c.mset(&expected.iter().map(|key| (key.as_str(), "v")).collect::<Vec<_>>()).await.expect("MSET");
    let mut found = Vec::new();
    {
        let mut iter = c.scan_match::<_, String>(k("scan:*")).await.expect("SCAN MATCH");
        while let Some(item) = iter.next_item().await {
            found.push(item.expect("SCAN item"));
        }
    }
    found.sort();
    found.dedup();
    t.check("scan_match", found, expected.clone());
    let opts = ScanOptions::default().with_pattern(k("scan:3?")).with_count(7);
    let mut found = Vec::new();
    {
        let mut iter = c.scan_options::<String>(opts).await.expect("SCAN");
        while let Some(item) = iter.next_item().await {
            found.push(item.expect("SCAN item"));
        }
    }
    found.sort();
    found.dedup();
    t.check("scan_options", found, expected[30..].to_vec());
}

async fn async_watch(target: &Target, protocol: ProtocolVersion, p: &str, t: &mut Transcript) {
    // WATCH state belongs to the connection, so each client gets its own multiplexed connection.
    let mut c = async_conn(target.addr, protocol).await;
    let mut other = async_conn(target.addr, protocol).await;
    let key = format!("{p}w");
    let () = c.set(&key, 1).await.expect("SET");
    t.check("WATCH", redis::cmd("WATCH").arg(&key).query_async::<Value>(&mut c).await.expect("WATCH"), Value::Okay);
    let current: i64 = c.get(&key).await.expect("GET");
    let () = other.incr(&key, 10).await.expect("INCR from another client");
    let r: Option<(i64,)> =
        redis::pipe().atomic().set(&key, current + 1).ignore().get(&key).query_async(&mut c).await.expect("EXEC");
    t.check("EXEC after a conflict", r, None);
    t.check("their write stands", c.get::<_, i64>(&key).await.expect("GET"), 11);
    t.check("WATCH", redis::cmd("WATCH").arg(&key).query_async::<Value>(&mut c).await.expect("WATCH"), Value::Okay);
    let current: i64 = c.get(&key).await.expect("GET");
    let r: Option<(i64,)> =
        redis::pipe().atomic().set(&key, current + 1).ignore().get(&key).query_async(&mut c).await.expect("EXEC");
    t.check("EXEC without a conflict", r, Some((12,)));
    // EXEC forgets the watch: a later write by someone else does not abort the next transaction.
    let () = other.incr(&key, 1).await.expect("INCR from another client");
    let r: Option<(i64,)> = redis::pipe().atomic().incr(&key, 1).query_async(&mut c).await.expect("EXEC");
    t.check("EXEC after the watch ended", r, Some((14,)));
}
