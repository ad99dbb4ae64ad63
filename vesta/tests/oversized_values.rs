//! Oversized values (issue 10, item 7), against three `vesta store` processes and a `vesta proxy`:
//!
//! * a bulk string over `proto-max-bulk-len` gets Redis's protocol error and a closed connection
//!   (compared byte for byte with a Debian `redis-server --proto-max-bulk-len 32mb`), while other
//!   clients' SET/GET/INCR go on without a single error;
//! * a multi-key write whose share for one store node exceeds the 64 MiB internal frame gets a clear
//!   error, writes nothing, and costs other clients nothing (the old proxy sent the frame, the stores
//!   closed the connection every request shares, and everyone got CLUSTERDOWN);
//! * a declared length costs the proxy nothing until its bytes arrive;
//! * APPEND / SETRANGE / SETBIT past the limit get Redis's errors (compared with redis-server);
//! * CONFIG SET proto-max-bulk-len / client-query-buffer-limit take effect for the next request, and a
//!   request over the query-buffer limit closes its connection and is counted.
//!
//! The tests share one cluster and look at the proxy's memory, so they run one at a time. Values of
//! 32 MiB take a while to cross three stores on a loaded 2-core machine (about 0.25 s to read, over 1 s
//! to write here): the proxy gets generous per-node and per-command timeouts and the stores a long
//! prepare lease, so that only the behaviour under test can fail a request.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use redis::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;
/// The proxy's default `proto-max-bulk-len`.
const LIMIT: usize = 32 * MIB;
const BULK_ERROR: &[u8] = b"-ERR Protocol error: invalid bulk length\r\n";
const TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn metrics_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(free_port)
}

fn options() -> ClusterOptions {
    ClusterOptions {
        node_timeout_ms: Some(5_000),
        deadline_ms: Some(20_000),
        metrics_port: Some(metrics_port()),
        store_lease_ms: Some(10_000),
        ..ClusterOptions::default()
    }
}

fn cluster() -> Arc<Cluster> {
    shared_cluster_with(options)
}

/// Writes `bytes` (a write error is fine: the server may close first), then reads until the server
/// closes the connection. Returns what was read and whether it closed within the bound.
async fn send_and_read_to_close(addr: std::net::SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let payload = bytes.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&payload).await;
        wr
    });
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(30), rd.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    };
    writer.abort();
    (got, closed)
}

/// A SET whose value header declares `len` bytes, followed by `send` bytes of it.
fn set_declaring(key: &str, len: usize, send: usize) -> Vec<u8> {
    let mut out = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${len}\r\n", key.len()).into_bytes();
    out.resize(out.len() + send, b'v');
    out
}

// ---------------------------------------------------------------------------------------------------
// Background load: what must not notice anything
// ---------------------------------------------------------------------------------------------------

/// Clients running SET, GET and INCR on keys of their own, each reply checked.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

/// Operations per client at most, so that the load is bounded even if `stop` never comes.
const MAX_OPS_PER_CLIENT: u64 = 200_000;

impl Load {
    async fn start(cluster: &Cluster, tag: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for c in 0..clients {
            let mut conn = cluster.conn(c % 2 == 1).await;
            let (stop, ops) = (stop.clone(), ops.clone());
            let prefix = format!("{tag}:{}:{c}", run_id());
            handles.push(tokio::spawn(async move {
                let mut errors = Vec::new();
                let counter = format!("{prefix}:n");
                for i in 1..=MAX_OPS_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("{prefix}:{}", i % 16);
                    let value = format!("v{i}");
                    let checks = [
                        (vec!["SET", key.as_str(), value.as_str()], Value::Okay),
                        (vec!["GET", key.as_str()], bulk(&value)),
                        (vec!["INCR", counter.as_str()], int(i as i64)),
                    ];
                    for (args, want) in checks {
                        match try_call(&mut conn, &args).await {
                            Ok(got) if got == want => {}
                            other => errors.push(format!("{args:?}: {other:?}")),
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    if errors.len() > 20 {
                        break;
                    }
                }
                errors
            }));
        }
        let load = Load { stop, ops, clients: handles };
        load.wait_for_ops(50).await;
        load
    }

    /// Waits (bounded) until the clients have done `n` more operations.
    async fn wait_for_ops(&self, n: u64) {
        let target = self.ops.load(Ordering::Relaxed) + n;
        for _ in 0..3000 {
            if self.ops.load(Ordering::Relaxed) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the load made no progress");
    }

    /// Stops the load after a few more operations; returns every error any client saw.
    async fn finish(self) -> Vec<String> {
        self.wait_for_ops(50).await;
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for c in self.clients {
            errors.extend(c.await.expect("load client panicked"));
        }
        errors
    }
}

// ---------------------------------------------------------------------------------------------------
// (a) a bulk string over the limit
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_limit_gets_redis_protocol_error_and_other_clients_see_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    let cluster = cluster();
    let redis = RedisServer::start_with(&["--proto-max-bulk-len", "32mb"]);
    let load = Load::start(&cluster, "a", 4).await;

    // The header alone is refused: no byte of the value is waited for.
    let over = set_declaring("a:big", LIMIT + 1, 0);
    let (from_redis, redis_closed) = send_and_read_to_close(redis.addr, &over).await;
    assert_eq!(from_redis, BULK_ERROR, "redis-server's reply");
    assert!(redis_closed);
    let (from_vesta, closed) = send_and_read_to_close(cluster.proxy_addr(), &over).await;
    assert_eq!(String::from_utf8_lossy(&from_vesta), String::from_utf8_lossy(&from_redis));
    assert!(closed, "the proxy keeps a connection that broke the protocol");

    // A client that sends the whole value anyway: the reply can be lost to the connection reset (the
    // proxy closes with unread bytes, as Redis does), but nothing else may come back.
    let (from_vesta, closed) =
        send_and_read_to_close(cluster.proxy_addr(), &set_declaring("a:big", LIMIT + 1, LIMIT + 3)).await;
    assert!(closed);
    assert!(from_vesta.is_empty() || from_vesta == BULK_ERROR, "{:?}", String::from_utf8_lossy(&from_vesta));

    // Exactly at the limit is a value like any other.
    let mut conn = cluster.conn(false).await;
    let value = vec![b'x'; LIMIT];
    assert_eq!(call_bin(&mut conn, &[b"SET", b"a:max", &value]).await, Value::Okay);
    assert_eq!(call_bin(&mut conn, &[b"STRLEN", b"a:max"]).await, int(LIMIT as i64));

    let errors = load.finish().await;
    assert!(errors.is_empty(), "other clients saw {} errors: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert_eq!(call(&mut conn, &["DEL", "a:max"]).await, int(1));
}

// ---------------------------------------------------------------------------------------------------
// (b) a commit batch too large for one internal frame
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_too_large_for_one_frame_is_refused_and_costs_other_clients_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    let cluster = cluster();
    let load = Load::start(&cluster, "b", 4).await;

    // One hash tag: one shard, so each store node gets both values in one commit batch: over 64 MiB.
    let tag = format!("{{b:{}}}", run_id());
    let (ka, kb) = (format!("{tag}a"), format!("{tag}b"));
    let big = vec![b'v'; LIMIT];
    let mut conn = cluster.conn(false).await;
    let reply = call_bin(&mut conn, &[b"MSET", ka.as_bytes(), &big, kb.as_bytes(), &big]).await;
    // The point first: nobody else noticed (the old proxy's stores closed the shared connections).
    let errors = load.finish().await;
    assert!(errors.is_empty(), "other clients saw {} errors: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    let text = error_text(&reply).unwrap_or_else(|| panic!("MSET of 2 x 32 MiB answered {reply:?}"));
    assert!(
        text.starts_with("ERR write too large: ") && text.contains("internal message limit of 67108864 bytes"),
        "{text}"
    );

    // Refused before the commit phase: nothing was written, on any replica.
    assert_eq!(call(&mut conn, &["EXISTS", &ka, &kb]).await, int(0));
    for store in 0..cluster.store_count() {
        assert_eq!(cluster.read_store(store, ka.as_bytes()).await, Ok(None), "store {store}");
    }

    // The same two values in two commands, and a batch under the frame limit, are fine.
    assert_eq!(call_bin(&mut conn, &[b"SET", ka.as_bytes(), &big]).await, Value::Okay);
    let half = vec![b'h'; 16 * MIB];
    assert_eq!(call_bin(&mut conn, &[b"MSET", ka.as_bytes(), &half, kb.as_bytes(), &half]).await, Value::Okay);
    assert_eq!(call(&mut conn, &["STRLEN", &kb]).await, int(16 * MIB as i64));
    assert_eq!(call(&mut conn, &["DEL", &ka, &kb]).await, int(2));
}

// ---------------------------------------------------------------------------------------------------
// (c) memory follows the bytes received, not the lengths declared
// ---------------------------------------------------------------------------------------------------

/// (VmRSS, VmData) of a process, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
        let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB");
        kb * 1024
    };
    (field("VmRSS:"), field("VmData:"))
}

/// `qbuf` and `qbuf-free` of every CLIENT LIST line.
fn query_buffers(list: &str) -> Vec<(usize, usize)> {
    let field = |line: &str, name: &str| -> usize {
        line.split(' ').find_map(|f| f.strip_prefix(name)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    list.lines().map(|l| (field(l, "qbuf="), field(l, "qbuf-free="))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_costs_nothing_until_its_bytes_arrive() {
    let _one_at_a_time = SERIAL.lock().await;
    let cluster = cluster();
    let pid = cluster.proxy_pid();
    let mut admin = cluster.conn(false).await;
    let (rss_before, data_before) = memory_of(pid);

    const CLIENTS: usize = 8;
    const DECLARED: usize = 33_554_000;
    let partial = set_declaring("c:huge", DECLARED, 1000);
    let mut hanging = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = RawConn::connect(cluster.proxy_addr()).await;
        c.send_raw(&partial).await;
        hanging.push(c);
    }
    // Until the proxy has read every byte sent (CLIENT LIST shows each connection's unparsed input).
    let mut holding = Vec::new();
    for _ in 0..300 {
        let list = text(&call(&mut admin, &["CLIENT", "LIST"]).await);
        holding = query_buffers(&list).into_iter().filter(|(qbuf, _)| *qbuf >= partial.len()).collect();
        if holding.len() == CLIENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holding.len(), CLIENTS, "connections holding their {} bytes: {holding:?}", partial.len());
    // The old parser reserved the declared 32 MB per connection at once (a reservation is not resident
    // until written, so it shows in VmData and in the buffer's spare room rather than in VmRSS).
    for (qbuf, free) in &holding {
        assert!(*free < MIB, "a connection holding {qbuf} bytes has {free} bytes of spare room");
    }
    let (rss_after, data_after) = memory_of(pid);
    let declared = (CLIENTS * DECLARED) as u64;
    let bound = declared / 8;
    assert!(
        rss_after.saturating_sub(rss_before) < bound,
        "VmRSS grew by {} for {declared} bytes declared",
        rss_after - rss_before
    );
    assert!(
        data_after.saturating_sub(data_before) < bound,
        "VmData grew by {} for {declared} bytes declared",
        data_after - data_before
    );
    drop(hanging);
    assert_eq!(call(&mut admin, &["PING"]).await, simple("PONG"));
}

// ---------------------------------------------------------------------------------------------------
// (d) strings that would grow past the limit
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_a_string_past_the_limit_gets_redis_errors() {
    let _one_at_a_time = SERIAL.lock().await;
    let cluster = cluster();
    let redis_server = RedisServer::start_with(&["--proto-max-bulk-len", "32mb"]);
    let mut vesta = cluster.conn(false).await;
    let mut redis = connect(redis_server.addr, false).await;

    let key = format!("d:{}", run_id());
    let base = vec![b'x'; 30 * MIB];
    let three = vec![b'y'; 3 * MIB];
    let two = vec![b'z'; 2 * MIB];
    let over_offset = LIMIT.to_string();
    let over_bit = (8 * LIMIT).to_string();
    let k = key.as_bytes();
    let steps: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", k, &base],
        vec![b"APPEND", k, &three],
        vec![b"STRLEN", k],
        vec![b"APPEND", k, &two],
        vec![b"APPEND", k, b"!"],
        vec![b"SETRANGE", k, over_offset.as_bytes(), b"!"],
        vec![b"SETRANGE", b"d:other", over_offset.as_bytes(), b"!"],
        vec![b"SETBIT", b"d:bits", over_bit.as_bytes(), b"1"],
        vec![b"GETBIT", b"d:bits", over_bit.as_bytes()],
        vec![b"STRLEN", k],
        vec![b"CONFIG", b"GET", b"proto-max-bulk-len"],
        vec![b"DEL", k],
    ];
    let mut replies = Vec::new();
    for args in &steps {
        let from_redis = call_bin(&mut redis, args).await;
        let from_vesta = call_bin(&mut vesta, args).await;
        let shown: Vec<String> =
            args.iter().map(|a| String::from_utf8_lossy(&a[..a.len().min(20)]).into_owned()).collect();
        assert_eq!(from_vesta, from_redis, "{shown:?}");
        replies.push(from_vesta);
    }
    // The comparison is only worth something if the growth past the limit was refused.
    assert_eq!(error_text(&replies[1]).as_deref(), Some(TOO_LONG));
    assert_eq!(replies[3], int(LIMIT as i64));
    assert_eq!(error_text(&replies[4]).as_deref(), Some(TOO_LONG));
    assert_eq!(error_text(&replies[5]).as_deref(), Some(TOO_LONG));
    assert_eq!(error_text(&replies[7]).as_deref(), Some("ERR bit offset is not an integer or out of range"));
}

// ---------------------------------------------------------------------------------------------------
// (e) CONFIG SET, and the query-buffer limit
// ---------------------------------------------------------------------------------------------------

/// Restores a CONFIG parameter when dropped (also when the test fails), so later tests see defaults.
struct Restore {
    addr: std::net::SocketAddr,
    name: &'static str,
    value: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let args = ["CONFIG", "SET", self.name, self.value.as_str()];
        if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(&encode_command(&args));
            let mut reply = [0u8; 64];
            let _ = s.read(&mut reply);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_proto_max_bulk_len_applies_to_the_next_request() {
    let _one_at_a_time = SERIAL.lock().await;
    let cluster = cluster();
    let redis_server = RedisServer::start();
    let mut redis = connect(redis_server.addr, false).await;
    let mut conn = cluster.conn(false).await;
    let _restore = Restore { addr: cluster.proxy_addr(), name: "proto-max-bulk-len", value: LIMIT.to_string() };

    assert_eq!(call(&mut conn, &["CONFIG", "SET", "proto-max-bulk-len", "1mb"]).await, Value::Okay);
    let got = call(&mut conn, &["CONFIG", "GET", "proto-max-bulk-len"]).await;
    assert_eq!(got, Value::Array(vec![bulk("proto-max-bulk-len"), bulk("1048576")]));
    let (reply, closed) = send_and_read_to_close(cluster.proxy_addr(), &set_declaring("e:k", MIB + 1, 0)).await;
    assert_eq!(reply, BULK_ERROR);
    assert!(closed);
    assert_eq!(call_bin(&mut conn, &[b"SET", b"e:k", &vec![b'v'; MIB]]).await, Value::Okay);
    assert_eq!(error_text(&call(&mut conn, &["APPEND", "e:k", "v"]).await).as_deref(), Some(TOO_LONG));

    // Refused values leave the setting alone; the texts are Redis's (its upper bound is larger).
    let refused = call(&mut conn, &["CONFIG", "SET", "proto-max-bulk-len", "64mb"]).await;
    assert_eq!(
        error_text(&refused).as_deref(),
        Some(
            "ERR CONFIG SET failed (possibly related to argument 'proto-max-bulk-len') - argument must be \
             between 1048576 and 66060288 inclusive"
        )
    );
    for bad in ["abc", "-1", "1.5mb"] {
        let args = ["CONFIG", "SET", "proto-max-bulk-len", bad];
        assert_eq!(call(&mut conn, &args).await, call(&mut redis, &args).await, "{bad}");
    }
    assert_eq!(call(&mut conn, &["CONFIG", "GET", "proto-max-bulk-len"]).await, got);

    assert_eq!(call(&mut conn, &["CONFIG", "SET", "proto-max-bulk-len", "32mb"]).await, Value::Okay);
    assert_eq!(call_bin(&mut conn, &[b"APPEND", b"e:k", b"v"]).await, int(MIB as i64 + 1));
    assert_eq!(call(&mut conn, &["DEL", "e:k"]).await, int(1));
}

fn metric(name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port())).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_query_buffer_limit_closes_its_connection_and_is_counted() {
    let _one_at_a_time = SERIAL.lock().await;
    let cluster = cluster();
    let mut conn = cluster.conn(false).await;
    let Value::Array(pair) = call(&mut conn, &["CONFIG", "GET", "client-query-buffer-limit"]).await else {
        panic!("CONFIG GET answers an array")
    };
    let automatic = text(&pair[1]);
    assert_eq!(automatic, (4 * LIMIT).to_string(), "the default: four values of the largest size");
    let _restore = Restore { addr: cluster.proxy_addr(), name: "client-query-buffer-limit", value: automatic };
    assert_eq!(call(&mut conn, &["CONFIG", "SET", "client-query-buffer-limit", "2mb"]).await, Value::Okay);
    let counted_before = metric("vesta_proxy_query_buffer_limit_disconnections_total");

    // A request under the limit is served; one over it (each value well under proto-max-bulk-len) is
    // dropped without a reply, as Redis does.
    assert_eq!(call_bin(&mut conn, &[b"SET", b"f:k", &vec![b'v'; MIB + MIB / 2]]).await, Value::Okay);
    let over = set_declaring("f:k", 3 * MIB, 5 * MIB / 2);
    let (reply, closed) = send_and_read_to_close(cluster.proxy_addr(), &over).await;
    assert!(closed, "still open after going over client-query-buffer-limit");
    assert!(reply.is_empty(), "{:?}", String::from_utf8_lossy(&reply));

    assert_eq!(metric("vesta_proxy_query_buffer_limit_disconnections_total"), counted_before + 1);
    let info = text(&call(&mut conn, &["INFO", "stats"]).await);
    assert!(info.contains("client_query_buffer_limit_disconnections:"), "{info}");
    assert_eq!(call(&mut conn, &["GET", "f:k"]).await, bulk(&"v".repeat(MIB + MIB / 2)));
    assert_eq!(call(&mut conn, &["DEL", "f:k"]).await, int(1));
}
