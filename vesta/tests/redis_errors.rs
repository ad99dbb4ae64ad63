//! Bad input gets byte-identical error replies from Vesta and from Redis 7 (Debian's `redis-server`,
//! started by this test on a loopback port and killed at the end).
//!
//! Two kinds of cases: wrong arity for every command Vesta supports that Redis 7 also has (generated from
//! Vesta's own `COMMAND` table, so a new command is covered without editing this file), and a hand-written
//! list of wrong argument types and syntax errors per command. Each case must be an error on Redis (so the
//! test cannot silently compare successes) and the same bytes on Vesta.
//!
//! Redis ≥ 7.4 commands (DIGEST, DELEX, MSETEX, SET IF*) have no Redis 7 to compare with; their errors are
//! covered by `transactions_and_cas.rs`.

mod common;

use common::{RawConn, RedisServer};

/// Commands of Vesta's table that Redis 7.0 does not have (nothing to compare with).
const NEWER_THAN_REDIS_7: &[&str] = &["digest", "delex", "msetex"];

/// Wrong argument types and syntax errors. Keys: `e:str` holds "abc", `e:int` holds "10".
const CASES: &[&[&str]] = &[
    &["SET", "e:k", "v", "EX", "abc"],
    &["SET", "e:k", "v", "EX", "0"],
    &["SET", "e:k", "v", "PX", "-1"],
    &["SET", "e:k", "v", "EX", "10", "PX", "10"],
    &["SET", "e:k", "v", "NX", "XX"],
    &["SET", "e:k", "v", "KEEPTTL", "EX", "10"],
    &["SET", "e:k", "v", "FOO"],
    &["SET", "e:k", "v", "EX"],
    &["SET", "e:k", "v", "EXAT", "99999999999999999"],
    &["SETEX", "e:k", "abc", "v"],
    &["SETEX", "e:k", "0", "v"],
    &["PSETEX", "e:k", "-5", "v"],
    &["GETEX", "e:str", "EX", "abc"],
    &["GETEX", "e:str", "EX", "0"],
    &["GETEX", "e:str", "PERSIST", "EX", "10"],
    &["GETEX", "e:str", "FOO"],
    &["INCR", "e:str"],
    &["INCRBY", "e:int", "abc"],
    &["INCRBY", "e:int", "1.5"],
    &["INCRBY", "e:int", "9223372036854775807"],
    &["DECRBY", "e:int", "abc"],
    &["DECRBY", "e:int", "-9223372036854775808"],
    &["INCRBYFLOAT", "e:int", "abc"],
    &["INCRBYFLOAT", "e:str", "1"],
    &["INCRBYFLOAT", "e:int", "inf"],
    &["SETRANGE", "e:k", "-1", "v"],
    &["SETRANGE", "e:k", "abc", "v"],
    &["SETRANGE", "e:k", "536870912", "v"],
    &["GETRANGE", "e:str", "a", "1"],
    &["GETRANGE", "e:str", "0", "b"],
    &["MSET", "e:a", "1", "e:b"],
    &["MSETNX", "e:a", "1", "e:b"],
    &["EXPIRE", "e:str", "abc"],
    &["EXPIRE", "e:str", "10", "FOO"],
    &["EXPIRE", "e:str", "10", "NX", "XX"],
    &["EXPIRE", "e:str", "10", "GT", "LT"],
    &["EXPIRE", "e:str", "10", "NX", "GT"],
    &["EXPIRE", "e:str", "9223372036854775807"],
    &["PEXPIREAT", "e:str", "abc"],
    &["EXPIREAT", "e:str", "9223372036854775807"],
    &["EXPIRE", "e:nokey", "9223372036854775807"],
    &["CLIENT", "KILL", "TYPE", "nosuchtype"],
    &["CLIENT", "KILL", "MAXAGE", "abc"],
    &["SELECT", "99"],
    &["SELECT", "abc"],
    &["SELECT", "-1"],
    &["SCAN", "abc"],
    &["SCAN", "0", "COUNT", "0"],
    &["SCAN", "0", "COUNT", "abc"],
    &["SCAN", "0", "MATCH"],
    &["SCAN", "0", "FOO", "bar"],
    &["COPY", "e:str", "e:str"],
    &["COPY", "e:str", "e:b", "DB", "99"],
    &["COPY", "e:str", "e:b", "DB", "abc"],
    &["COPY", "e:str", "e:b", "FOO"],
    &["MOVE", "e:str", "99"],
    &["MOVE", "e:str", "abc"],
    &["MOVE", "e:str", "0"],
    &["RENAME", "e:nokey", "e:b"],
    &["RENAMENX", "e:nokey", "e:b"],
    &["OBJECT", "FOO", "e:str"],
    &["OBJECT", "ENCODING"],
    &["OBJECT", "ENCODING", "e:str", "extra"],
    &["WAIT", "1", "-1"],
    &["WAIT", "abc", "1"],
    &["WAIT", "1", "abc"],
    &["FLUSHDB", "FOO"],
    &["FLUSHALL", "FOO"],
    &["LCS", "e:str", "e:int", "LEN", "IDX"],
    &["LCS", "e:str", "e:int", "FOO"],
    &["LCS", "e:str", "e:int", "MINMATCHLEN", "abc"],
    &["CLIENT", "FOO"],
    &["CLIENT", "SETNAME", "a b"],
    &["CLIENT", "SETNAME", "a", "b"],
    &["CLIENT", "KILL", "1.2.3.4:5"],
    &["CLIENT", "KILL", "ID", "abc"],
    &["CLIENT", "KILL", "ID"],
    &["CLIENT", "KILL", "FOO", "bar"],
    &["CLIENT", "REPLY", "FOO"],
    &["CLIENT", "NO-EVICT", "maybe"],
    &["CLIENT", "LIST", "ID", "abc"],
    &["CLIENT", "LIST", "FOO"],
    &["CLIENT", "GETNAME", "x"],
    &["CONFIG", "FOO"],
    &["CONFIG", "GET"],
    &["CONFIG", "SET", "no-such-parameter", "1"],
    &["CONFIG", "SET", "maxmemory"],
    &["CONFIG", "SET", "timeout", "abc"],
    &["CONFIG", "SET", "timeout", "-1"],
    &["CONFIG", "SET", "timeout", "1.5"],
    &["CONFIG", "SET", "timeout", "99999999999"],
    &["CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 512kb"],
    &["CONFIG", "SET", "client-output-buffer-limit", "foo 1mb 512kb 10"],
    &["CONFIG", "SET", "client-output-buffer-limit", "master 1mb 512kb 10"],
    &["CONFIG", "SET", "client-output-buffer-limit", "normal 1xb 512kb 10"],
    &["CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 512kb -1"],
    &["CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 512kb 1x"],
    &["CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 1mb 1 pubsub 1mb"],
    &["CONFIG", "SET", "maxclients", "0"],
    &["CONFIG", "SET", "maxclients", "abc"],
    &["CONFIG", "SET", "maxclients", "-5"],
    &["COMMAND", "FOO"],
    &["COMMAND", "COUNT", "x"],
    &["HELLO", "4"],
    &["HELLO", "abc"],
    &["HELLO", "3", "FOO"],
    &["HELLO", "3", "AUTH", "a"],
    &["AUTH", "a"],
    &["AUTH", "a", "b"],
    &["PING", "a", "b"],
    &["EXEC"],
    &["DISCARD"],
    &["FUNCTION", "FLUSH", "FOO"],
    &["FUNCTION", "FOO"],
    &["SETBIT", "e:k", "-1", "1"],
    &["SETBIT", "e:k", "4294967296", "1"],
    &["SETBIT", "e:k", "abc", "1"],
    &["SETBIT", "e:k", "1", "2"],
    &["SETBIT", "e:k", "1", "-1"],
    &["GETBIT", "e:str", "abc"],
    &["FOO", "a", "b"],
];

/// Sends `args` to both servers on the given connections and compares the raw replies.
async fn compare(redis: &mut RawConn, vesta: &mut RawConn, args: &[&str], failures: &mut Vec<String>) {
    let expected = redis.call(args).await;
    let got = vesta.call(args).await;
    if !expected.starts_with('-') {
        failures.push(format!("{args:?}: not an error on Redis ({expected:?}); fix the case"));
    } else if got != expected {
        failures.push(format!("{args:?}:\n    redis: {expected:?}\n    vesta: {got:?}"));
    }
}

async fn prepare(conn: &mut RawConn) {
    for args in [&["SET", "e:str", "abc"][..], &["SET", "e:int", "10"]] {
        assert_eq!(conn.call(args).await, "+OK\r\n");
    }
}

#[tokio::test]
async fn errors_are_byte_identical_to_redis() {
    let redis_server = RedisServer::start();
    let cluster = common::shared_cluster();
    let mut redis = RawConn::connect(redis_server.addr).await;
    let mut vesta = cluster.raw().await;
    prepare(&mut redis).await;
    prepare(&mut vesta).await;

    let mut failures = Vec::new();
    for case in CASES {
        compare(&mut redis, &mut vesta, case, &mut failures).await;
    }
    // Transaction-state errors need a sequence on one connection.
    for args in [&["MULTI"][..], &["MULTI"], &["WATCH", "e:str"], &["SET", "e:k"], &["EXEC"]] {
        let (expected, got) = (redis.call(args).await, vesta.call(args).await);
        if got != expected {
            failures.push(format!("in MULTI {args:?}:\n    redis: {expected:?}\n    vesta: {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} replies differ:\n{}", failures.len(), failures.join("\n"));
}

/// Wrong arity, for every command both have: exact arity ±1, or one argument short of the minimum.
#[tokio::test]
async fn arity_errors_are_byte_identical_to_redis_for_every_command() {
    let redis_server = RedisServer::start();
    let cluster = common::shared_cluster();
    let mut redis = RawConn::connect(redis_server.addr).await;
    let mut vesta = cluster.raw().await;

    let mut conn = cluster.conn(false).await;
    let redis::Value::Array(table) = common::call(&mut conn, &["COMMAND"]).await else { panic!("COMMAND array") };
    let mut failures = Vec::new();
    let mut compared = 0;
    for entry in table {
        let redis::Value::Array(fields) = entry else { panic!("COMMAND entry") };
        let name = common::text(&fields[0]);
        let redis::Value::Int(arity) = fields[1] else { panic!("arity of {name}") };
        // Redis has no Vesta commands (`VESTA.REPL`) to compare with.
        if NEWER_THAN_REDIS_7.contains(&name.as_str()) || name.starts_with("vesta.") {
            continue;
        }
        let mut wrong: Vec<usize> = Vec::new();
        if arity > 0 {
            wrong.push(arity as usize + 1);
            if arity > 1 {
                wrong.push(arity as usize - 1);
            }
        } else if -arity > 1 {
            wrong.push((-arity - 1) as usize);
        }
        for argc in wrong {
            // Arguments that are valid where a subcommand is expected, so arity is what fails.
            let mut args = vec![name.as_str()];
            let filler: &[&str] = match name.as_str() {
                "client" => &["id", "x", "y"],
                "config" => &["get", "x", "y"],
                "object" => &["encoding", "x", "y"],
                "function" => &["flush", "x", "y"],
                _ => &["e:a", "1", "e:b", "2", "e:c"],
            };
            args.extend(filler.iter().cycle().take(argc - 1));
            compare(&mut redis, &mut vesta, &args, &mut failures).await;
            compared += 1;
        }
    }
    assert!(compared > 60, "only {compared} arity cases: is COMMAND complete?");
    assert!(failures.is_empty(), "{} of {compared} replies differ:\n{}", failures.len(), failures.join("\n"));
}
