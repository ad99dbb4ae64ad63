//! Test harness shared by the proxy tests: a three-zone Vesta cluster made of real processes
//! (three `vesta store` on RocksDB + one or more `vesta proxy`), Redis client connections to it, a raw
//! RESP connection for wire-level checks, and direct reads from a store node.
//!
//! Every process is started on 127.0.0.1 with an ephemeral port and killed (SIGKILL + wait) when its
//! handle is dropped, so a panicking test leaves nothing behind.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod etcd;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vesta_proto::client::NodeConnection;
use vesta_proto::{KeyRef, Read, Record, Reply, Request, Response, Status};

/// Shard count of every test cluster (stores and topology must agree).
pub const SHARDS: u32 = 64;
/// How long a process may take to print `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Redis client timeouts: generous, so that a hung proxy fails the test instead of hanging it, while a
/// slow but correct reply (retries up to the proxy's deadline) is never mistaken for a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------

// Child processes (killed on drop, and with the test process) are `vesta-testkit`'s.
#[allow(unused_imports)] // each test file uses a different part
pub use vesta_testkit::{free_port, Proc};

// ---------------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------------

/// Proxy flags; `None` leaves the proxy's default.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    pub node_timeout_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    /// Serve the proxy's Prometheus `/metrics` on this loopback port.
    pub metrics_port: Option<u16>,
    /// How many proxies (0 means 1). Concurrency tests spread their clients over several: writers of
    /// one proxy take turns per key, so only writers on different proxies meet at the store leases.
    pub proxies: usize,
    pub proto_max_bulk_len: Option<usize>,
    pub client_query_buffer_limit: Option<usize>,
    /// The stores' `--lease-ms` (a prepare lease must outlast carrying a large value to the store).
    pub store_lease_ms: Option<u64>,
    /// More `vesta store` flags, the same for every store.
    pub store_flags: Vec<String>,
    /// More `vesta proxy` flags, the same for every proxy.
    pub proxy_flags: Vec<String>,
    /// More `vesta proxy` flags for the first proxy only (e.g. the one that ships to other sites).
    pub first_proxy_flags: Vec<String>,
    /// The proxies' `--listen` (default `127.0.0.1:0`).
    pub listen: Option<String>,
}

/// One store node: its zone, data directory and port survive a kill, so it can be restarted in place.
pub struct StoreNode {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    proc: Option<Proc>,
}

/// Three zones with one RocksDB store each (N=3, W=2, R=2, 64 shards) and one or more proxies.
pub struct Cluster {
    // Field order matters on drop: the proxies go first, then the stores, then the directories.
    proxies: Vec<Option<Proc>>,
    /// Each proxy's arguments, kept for restarts.
    proxy_args: Vec<Vec<String>>,
    stores: Vec<StoreNode>,
    config_dir: tempfile::TempDir,
    /// Extra `vesta store` flags, kept for restarts.
    store_flags: Vec<String>,
}

/// Starts a store node; `retry` keeps trying for a while (a restart on the port of the process just
/// killed).
fn spawn_store(name: &str, dir: &Path, listen: &str, extra: &[String], retry: bool) -> Result<Proc, String> {
    let dir = dir.to_str().expect("utf-8 temp dir");
    let shards = SHARDS.to_string();
    let mut args = vesta_testkit::store_args(name, listen, dir);
    args.extend(["--engine", "rocksdb", "--shards", &shards]);
    args.extend(extra.iter().map(String::as_str));
    if retry {
        Proc::spawn_retrying(name, &args)
    } else {
        Proc::spawn(name, &args)
    }
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(ClusterOptions::default())
    }

    pub fn start_with(options: ClusterOptions) -> Cluster {
        let mut store_flags = Vec::new();
        if let Some(ms) = options.store_lease_ms {
            store_flags.extend(["--lease-ms".to_string(), ms.to_string()]);
        }
        store_flags.extend(options.store_flags.iter().cloned());
        let mut stores = Vec::new();
        for zone in 1..=3 {
            let name = format!("zone{zone}");
            let dir = tempfile::tempdir().unwrap();
            let proc =
                spawn_store(&name, dir.path(), "127.0.0.1:0", &store_flags, false).unwrap_or_else(|e| panic!("{e}"));
            stores.push(StoreNode { name, dir, addr: proc.addr(), proc: Some(proc) });
        }

        let config_dir = tempfile::tempdir().unwrap();
        let topology = config_dir.path().join("topology.toml");
        std::fs::write(&topology, topology_toml(&stores)).unwrap();
        let listen = options.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let mut args: Vec<String> =
            vec!["proxy".into(), "--listen".into(), listen, "--topology".into(), path_str(&topology)];
        if let Some(ms) = options.node_timeout_ms {
            args.extend(["--node-timeout-ms".into(), ms.to_string()]);
        }
        if let Some(ms) = options.deadline_ms {
            args.extend(["--deadline-ms".into(), ms.to_string()]);
        }
        if let Some(bytes) = options.proto_max_bulk_len {
            args.extend(["--proto-max-bulk-len".into(), bytes.to_string()]);
        }
        if let Some(bytes) = options.client_query_buffer_limit {
            args.extend(["--client-query-buffer-limit".into(), bytes.to_string()]);
        }
        args.extend(options.proxy_flags.iter().cloned());
        let mut proxies = Vec::new();
        let mut proxy_args = Vec::new();
        for i in 0..options.proxies.max(1) {
            let mut args = args.clone();
            if let (Some(port), 0) = (options.metrics_port, i) {
                args.extend(["--metrics-listen".into(), format!("127.0.0.1:{port}")]);
            }
            if i == 0 {
                args.extend(options.first_proxy_flags.iter().cloned());
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            proxies.push(Some(Proc::spawn(&format!("proxy{i}"), &argv).unwrap_or_else(|e| panic!("{e}"))));
            proxy_args.push(args);
        }
        Cluster { proxies, proxy_args, stores, config_dir, store_flags }
    }

    fn proxy(&self, i: usize) -> &Proc {
        self.proxies[i].as_ref().unwrap_or_else(|| panic!("proxy {i} is not running"))
    }

    /// `kill -9` proxy `i` and reap it.
    pub fn kill_proxy(&mut self, i: usize) {
        let proc = self.proxies[i].take().unwrap_or_else(|| panic!("proxy {i} is not running"));
        proc.kill();
    }

    /// Starts a killed proxy again with its arguments (its RESP port may change; other listeners named in
    /// its flags keep theirs). Retries for a while in case a port is still briefly unavailable.
    pub fn restart_proxy(&mut self, i: usize) {
        assert!(self.proxies[i].is_none(), "proxy {i} is still running");
        let argv: Vec<&str> = self.proxy_args[i].iter().map(String::as_str).collect();
        let proc =
            Proc::spawn_retrying(&format!("proxy{i}"), &argv).unwrap_or_else(|e| panic!("restart of proxy{i}: {e}"));
        self.proxies[i] = Some(proc);
    }

    /// The first proxy.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy(0).addr()
    }

    /// Proxy `i % proxies` (client `i` of a concurrency test).
    pub fn proxy_addr_for(&self, i: usize) -> SocketAddr {
        self.proxy(i % self.proxies.len()).addr()
    }

    pub fn proxy_count(&self) -> usize {
        self.proxies.len()
    }

    /// The first proxy's process id.
    pub fn proxy_pid(&self) -> u32 {
        self.proxy(0).pid()
    }

    pub fn store_addr(&self, i: usize) -> SocketAddr {
        self.stores[i].addr
    }

    /// Store `i`'s data directory (RocksDB files, WAL, change log).
    pub fn store_dir(&self, i: usize) -> &Path {
        self.stores[i].dir.path()
    }

    pub fn store_count(&self) -> usize {
        self.stores.len()
    }

    pub fn store_is_running(&self, i: usize) -> bool {
        self.stores[i].proc.is_some()
    }

    /// `kill -9` store `i` and reap it.
    pub fn kill_store(&mut self, i: usize) {
        let proc = self.stores[i].proc.take().unwrap_or_else(|| panic!("store {i} is not running"));
        proc.kill();
    }

    /// SIGSTOP store `i`: its connections stay open but nothing is answered.
    pub fn stop_store(&self, i: usize) {
        self.running(i).signal("STOP");
    }

    /// SIGCONT store `i`.
    pub fn cont_store(&self, i: usize) {
        self.running(i).signal("CONT");
    }

    /// Starts a killed store again on its data directory and its old port (the topology names it).
    /// Retries for a while in case the port is still briefly unavailable.
    pub fn restart_store(&mut self, i: usize) {
        assert!(self.stores[i].proc.is_none(), "store {i} is still running");
        let node = &self.stores[i];
        let listen = node.addr.to_string();
        let proc = spawn_store(&node.name, node.dir.path(), &listen, &self.store_flags, true)
            .unwrap_or_else(|e| panic!("restart of {}: {e}", node.name));
        assert_eq!(proc.addr(), node.addr, "restarted store must keep its port");
        self.stores[i].proc = Some(proc);
    }

    fn running(&self, i: usize) -> &Proc {
        self.stores[i].proc.as_ref().unwrap_or_else(|| panic!("store {i} is not running"))
    }

    /// A Redis connection to the proxy (RESP3 when `resp3`, after `HELLO 3`).
    pub async fn conn(&self, resp3: bool) -> MultiplexedConnection {
        connect(self.proxy_addr(), resp3).await
    }

    pub async fn raw(&self) -> RawConn {
        RawConn::connect(self.proxy_addr()).await
    }

    /// Reads `key` of db 0 straight from store `i`: `Ok(Some(record))` for a live copy, `Ok(None)` when the
    /// node reports it absent (missing, expired or tombstone), `Err` for anything else.
    pub async fn read_store(&self, i: usize, key: &[u8]) -> Result<Option<Record>, String> {
        self.read_store_ns(i, b"0", key).await
    }

    pub async fn read_store_ns(&self, i: usize, namespace: &[u8], key: &[u8]) -> Result<Option<Record>, String> {
        read_node(self.store_addr(i), namespace, key).await
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

fn topology_toml(stores: &[StoreNode]) -> String {
    let mut t = format!("shards = {SHARDS}\nwrite_quorum = 2\nread_quorum = 2\n");
    for s in stores {
        t.push_str(&format!("\n[[zone]]\nname = \"{}\"\nnodes = [\"{}\"]\n", s.name, s.addr));
    }
    t
}

/// Reads one key straight from a store node with the internal protocol.
pub async fn read_node(addr: SocketAddr, namespace: &[u8], key: &[u8]) -> Result<Option<Record>, String> {
    let conn = NodeConnection::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let target = KeyRef {
        shard: vesta_proto::shard::shard_of(key, SHARDS),
        namespace: Bytes::copy_from_slice(namespace),
        key: Bytes::copy_from_slice(key),
    };
    let call = conn.call(Request::Read(Read { target, want_value: true }));
    let response = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("read from {addr} timed out"))?
        .map_err(|e| format!("read from {addr}: {e}"))?;
    match response {
        Response::Reply(Reply { status: Status::Ok, copy: Some(record), .. }) => Ok(Some(record)),
        Response::Reply(Reply { status: Status::Absent, .. }) => Ok(None),
        other => Err(format!("read from {addr}: unexpected {other:?}")),
    }
}

/// One cluster (two proxies) shared by every test of a test binary that asks for it: started by the first caller,
/// killed when the last `Arc` is dropped (a later caller then starts a fresh one). Tests sharing it
/// must use keys of their own.
pub fn shared_cluster() -> Arc<Cluster> {
    shared_cluster_with(|| ClusterOptions { proxies: 2, ..ClusterOptions::default() })
}

/// [`shared_cluster`] with proxy options; every test of a binary must ask with the same ones (the first
/// caller's are used).
pub fn shared_cluster_with(options: fn() -> ClusterOptions) -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    // A cluster that cannot start fails every later test at once instead of each waiting for its timeout.
    static START_FAILED: OnceLock<String> = OnceLock::new();
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cluster) = slot.upgrade() {
        return cluster;
    }
    if let Some(e) = START_FAILED.get() {
        panic!("the shared cluster failed to start earlier: {e}");
    }
    match std::panic::catch_unwind(|| Cluster::start_with(options())) {
        Ok(cluster) => {
            let cluster = Arc::new(cluster);
            *slot = Arc::downgrade(&cluster);
            cluster
        }
        Err(panic) => {
            let e = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let _ = START_FAILED.set(e.clone());
            panic!("the shared cluster failed to start: {e}");
        }
    }
}

/// A throwaway Debian `redis-server` on a loopback port (no persistence), killed on drop: the reference
/// that Vesta's replies are compared with.
pub struct RedisServer {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// With extra `redis-server` arguments (`["--proto-max-bulk-len", "32mb"]`). A port picked free can
    /// be taken by another process before redis-server binds it (tests run in parallel): a server that
    /// exits during start-up is retried on a new port.
    pub fn start_with(args: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(args) {
                return server;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    fn try_start(extra: &[&str]) -> Option<RedisServer> {
        use std::process::{Command, Stdio};
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (Debian package redis-server; .ci/run installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            // Listening, and still ours: the port answered while our server runs.
            if std::net::TcpStream::connect(addr).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
                if matches!(child.try_wait(), Ok(None)) {
                    return Some(RedisServer { child, addr });
                }
                return None;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tag unique to this test run, so that keys never collide with a previous run on a reused server.
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("{}-{}", std::process::id(), nanos % 1_000_000_000)
    })
}

// ---------------------------------------------------------------------------------------------------
// Redis clients
// ---------------------------------------------------------------------------------------------------

/// A multiplexed `redis` crate connection (RESP2, or RESP3 via `HELLO 3` when `resp3`).
pub async fn connect(addr: SocketAddr, resp3: bool) -> MultiplexedConnection {
    try_connect(addr, resp3).await.unwrap_or_else(|e| panic!("connect to {addr} (resp3: {resp3}): {e}"))
}

pub async fn try_connect(addr: SocketAddr, resp3: bool) -> redis::RedisResult<MultiplexedConnection> {
    let url = if resp3 { format!("redis://{addr}/?protocol=resp3") } else { format!("redis://{addr}/") };
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT));
    redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await
}

/// Sends one command and returns the reply as is: an error reply is `Ok(Value::ServerError(..))`; `Err` is
/// a connection-level failure (closed, timed out, unparsable).
pub async fn try_call_bin(c: &mut MultiplexedConnection, args: &[&[u8]]) -> redis::RedisResult<Value> {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    c.send_packed_command(&cmd).await
}

pub async fn try_call(c: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<Value> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    try_call_bin(c, &args).await
}

/// [`try_call`] for tests where the connection must not fail.
pub async fn call(c: &mut MultiplexedConnection, args: &[&str]) -> Value {
    match try_call(c, args).await {
        Ok(v) => v,
        Err(e) => panic!("{}: connection-level error: {e}", args.join(" ")),
    }
}

/// [`call`] with binary arguments.
pub async fn call_bin(c: &mut MultiplexedConnection, args: &[&[u8]]) -> Value {
    match try_call_bin(c, args).await {
        Ok(v) => v,
        Err(e) => panic!("{args:?}: connection-level error: {e}"),
    }
}

/// The full text of an error reply (`"ERR syntax error"`), or `None` for any other reply.
pub fn error_text(v: &Value) -> Option<String> {
    match v {
        Value::ServerError(e) => Some(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_string(),
        }),
        _ => None,
    }
}

/// The error kinds a client may see when the cluster cannot currently serve a request: retryable.
pub fn is_retryable_error(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "TRYAGAIN" || e.code() == "CLUSTERDOWN")
}

pub fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

pub fn int(n: i64) -> Value {
    Value::Int(n)
}

pub fn simple(s: &str) -> Value {
    Value::SimpleString(s.to_string())
}

/// Text of a bulk, simple or verbatim string reply.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Okay => "OK".into(),
        other => panic!("expected a string reply, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Raw RESP connection (wire-level checks: exact bytes of nulls, maps, QUIT closing the socket, ...)
// ---------------------------------------------------------------------------------------------------

pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        RawConn { stream, buf: Vec::new() }
    }

    /// [`RawConn::connect`] from a given local address (e.g. 127.0.0.2, to be another client address).
    pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> RawConn {
        let socket = if local.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .expect("socket");
        socket.bind(SocketAddr::new(local, 0)).unwrap_or_else(|e| panic!("bind {local}: {e}"));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr} from {local}: {e}"));
        stream.set_nodelay(true).unwrap();
        RawConn { stream, buf: Vec::new() }
    }

    /// Sends one command as a RESP array of bulk strings (without reading the reply).
    pub async fn send(&mut self, args: &[&str]) {
        self.send_raw(&encode_command(args)).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to server");
    }

    /// Reads exactly one reply and returns its raw bytes as text (lossy UTF-8).
    pub async fn read_reply(&mut self) -> String {
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        loop {
            if let Some(n) = frame_len(&self.buf) {
                let frame: Vec<u8> = self.buf.drain(..n).collect();
                return String::from_utf8_lossy(&frame).into_owned();
            }
            let mut chunk = [0u8; 16 * 1024];
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a reply")
                .expect("read from server");
            assert!(
                n > 0,
                "connection closed while waiting for a reply (have {:?})",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn call(&mut self, args: &[&str]) -> String {
        self.send(args).await;
        self.read_reply().await
    }

    /// True when the server closes the connection (EOF) with nothing more to read, within a bound.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => self.buf.is_empty(),
            Ok(Err(_)) => true, // reset
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

impl RawConn {
    /// Reads and discards until the server closes the connection; the bytes read, or `None` if it is
    /// still open after `limit`.
    pub async fn drain_until_closed(&mut self, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        let mut total = std::mem::take(&mut self.buf).len();
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(total),
                Ok(Ok(n)) => total += n,
                Err(_) => return None,
            }
        }
    }
}

pub fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_bytes();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Length of the first complete RESP2/RESP3 frame in `buf`, or `None` if more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    fn line_end(buf: &[u8], from: usize) -> Option<usize> {
        buf[from..].windows(2).position(|w| w == b"\r\n").map(|p| from + p)
    }
    fn parse(buf: &[u8], at: usize) -> Option<usize> {
        let kind = *buf.get(at)?;
        let end = line_end(buf, at + 1)?;
        let header = std::str::from_utf8(&buf[at + 1..end]).ok()?;
        let after = end + 2;
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after),
            b'$' | b'!' | b'=' => {
                let n: i64 = header.parse().ok()?;
                if n < 0 {
                    return Some(after);
                }
                let stop = after + n as usize + 2;
                (buf.len() >= stop).then_some(stop)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n: i64 = header.parse().ok()?;
                let items = if kind == b'%' || kind == b'|' { n * 2 } else { n };
                let mut pos = after;
                for _ in 0..items.max(0) {
                    pos = parse(buf, pos)?;
                }
                if kind == b'|' {
                    pos = parse(buf, pos)?; // an attribute precedes the actual reply
                }
                Some(pos)
            }
            other => panic!("not a RESP frame (type byte {:?}) in {:?}", other as char, String::from_utf8_lossy(buf)),
        }
    }
    parse(buf, 0)
}

/// The Prometheus text a `/metrics` endpoint on `port` serves (HTTP/1.0, the whole response).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}
