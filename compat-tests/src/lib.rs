//! Harness of the client-compatibility tests: a real Vesta cluster of processes (three `vesta store` on
//! RocksDB and one `vesta proxy`, all on 127.0.0.1 ephemeral ports, data in temp directories), a throwaway
//! Debian `redis-server` to compare answers with, bounded subprocess runs, Python venvs with redis-py, and
//! a transcript type that records what a client saw so that the two servers' transcripts can be compared.
//!
//! Every child process is killed by pid when its handle is dropped (also during a panic). The clusters
//! shared by the tests of one binary live in statics, which Rust never drops, so they are dropped by an
//! `atexit` hook; and every child is started with `PR_SET_PDEATHSIG = SIGKILL` from a thread that lives as
//! long as the test process, so nothing outlives a test binary that is itself killed.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Per-call client timeout: far above the proxy's 1 s deadline, so only a hung server trips it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shard count of the test cluster (stores and topology must agree); small, so RocksDB opens fast.
const SHARDS: u32 = 64;

// The process machinery (PDEATHSIG spawning, shared values dropped at exit, `Proc`) is `vesta-testkit`'s.
pub use vesta_testkit::{spawn, vesta_bin, Proc, Shared, START_TIMEOUT};

/// Three zones with one RocksDB store each (N=3, W=2, R=2) and one proxy, configured by TOML files as a
/// deployment would be.
pub struct Cluster {
    // Drop order is field order: the proxy goes first, then the stores, then their directories.
    proxy: Proc,
    stores: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir =
            tempfile::Builder::new().prefix("vesta-compat-").tempdir().expect("create a temp dir for the cluster");
        let mut stores = Vec::new();
        for zone in 1..=3 {
            let name = format!("zone{zone}");
            let data = dir.path().join(&name);
            let config = dir.path().join(format!("store-{name}.toml"));
            // `sync = "off"`: durability is not under test here, and fsyncs would only slow the suite.
            let toml = format!(
                "node = \"{name}\"\nlisten = \"127.0.0.1:0\"\nengine = \"rocksdb\"\ndata_dir = {data:?}\n\
                 sync = \"off\"\nshards = {SHARDS}\nblock_cache_mb = 8\nwrite_buffer_mb = 8\n",
                data = path_str(&data),
            );
            std::fs::write(&config, toml).expect("write a store config");
            let proc = Proc::spawn(&name, &["store", "--config", &path_str(&config)]).unwrap_or_else(|e| panic!("{e}"));
            stores.push(proc);
        }
        let mut topology = format!("shards = {SHARDS}\nwrite_quorum = 2\nread_quorum = 2\n");
        for s in &stores {
            topology.push_str(&format!("\n[[zone]]\nname = \"{}\"\nnodes = [\"{}\"]\n", s.name(), s.addr()));
        }
        let topology_path = dir.path().join("topology.toml");
        std::fs::write(&topology_path, topology).expect("write the topology");
        let proxy_config = dir.path().join("proxy.toml");
        std::fs::write(&proxy_config, format!("listen = \"127.0.0.1:0\"\ntopology = {:?}\n", path_str(&topology_path)))
            .expect("write the proxy config");
        let proxy =
            Proc::spawn("proxy", &["proxy", "--config", &path_str(&proxy_config)]).unwrap_or_else(|e| panic!("{e}"));
        Cluster { proxy, stores, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn store_pids(&self) -> Vec<u32> {
        self.stores.iter().map(Proc::pid).collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The cluster shared by the tests of this test binary. Tests must keep to keys of their own
/// ([`key_prefix`]).
pub fn shared_cluster() -> Arc<Cluster> {
    static CLUSTER: Shared<Cluster> = Shared::new();
    CLUSTER.get("Vesta cluster", Cluster::start)
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

// ---------------------------------------------------------------------------------------------------
// A throwaway redis-server to compare with
// ---------------------------------------------------------------------------------------------------

/// Debian's `redis-server` on loopback, without persistence, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        // redis-server cannot listen on port 0 and report the port, so a free port is picked and the start
        // retried on the (unlikely) chance that someone took it in between.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_start(free_port()) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn try_start(port: u16) -> Result<RedisServer, String> {
        let dir =
            tempfile::Builder::new().prefix("redis-compat-").tempdir().expect("create a temp dir for redis-server");
        let log = dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir", &path_str(dir.path()), "--logfile", &path_str(&log)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn(cmd).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                "redis-server is not installed (Debian: apt-get install redis-server)".to_string()
            } else {
                format!("spawn redis-server: {e}")
            }
        })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server on port {port} exited ({status}): {log}"));
            }
            if ping(port) {
                return Ok(RedisServer { child, port, _dir: dir });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server on port {port} not answering PING after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The redis-server shared by the tests of this test binary (keys of their own, as on the cluster).
pub fn shared_redis() -> Arc<RedisServer> {
    static REDIS: Shared<RedisServer> = Shared::new();
    REDIS.get("redis-server", RedisServer::start)
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

pub use vesta_testkit::free_port;

/// Which server a client talks to, in test output.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
}

impl Target {
    pub fn vesta(cluster: &Cluster) -> Target {
        Target { name: "vesta", addr: cluster.addr() }
    }

    pub fn redis(server: &RedisServer) -> Target {
        Target { name: "redis-server", addr: server.addr() }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

// ---------------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------------

/// A tag unique to this test-binary run, so that reruns against a reused server never see old keys.
pub fn run_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{}-{}", std::process::id(), nanos % 1_000_000_000)
    })
}

/// The prefix of every key a test uses, unique per test and run: tests share one server concurrently.
pub fn key_prefix(test: &str) -> String {
    format!("compat:{}:{test}:", run_tag())
}

// ---------------------------------------------------------------------------------------------------
// redis crate connections
// ---------------------------------------------------------------------------------------------------

pub fn connection_info(addr: SocketAddr, protocol: redis::ProtocolVersion) -> redis::ConnectionInfo {
    use redis::IntoConnectionInfo;
    redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
        .into_connection_info()
        .expect("a TCP address is a valid connection info")
        .set_redis_settings(redis::RedisConnectionInfo::default().set_protocol(protocol))
}

/// A sync connection with read and write timeouts, configured through `ConnectionInfo`.
pub fn sync_conn(addr: SocketAddr, protocol: redis::ProtocolVersion) -> redis::Connection {
    sync_conn_db(addr, protocol, 0)
}

/// [`sync_conn`] to database `db` (the crate sends `SELECT db` on connect).
pub fn sync_conn_db(addr: SocketAddr, protocol: redis::ProtocolVersion, db: i64) -> redis::Connection {
    let mut info = connection_info(addr, protocol);
    info = info.clone().set_redis_settings(info.redis_settings().clone().set_db(db));
    let client = redis::Client::open(info).expect("redis client");
    let con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} ({protocol:?}): {e}"));
    con.set_read_timeout(Some(RESPONSE_TIMEOUT)).expect("set read timeout");
    con.set_write_timeout(Some(RESPONSE_TIMEOUT)).expect("set write timeout");
    con
}

/// A multiplexed async connection, configured through a URL (`?protocol=resp3`), the way most applications
/// configure the crate.
pub async fn async_conn(addr: SocketAddr, protocol: redis::ProtocolVersion) -> redis::aio::MultiplexedConnection {
    let url = match protocol {
        redis::ProtocolVersion::RESP3 => format!("redis://{addr}/?protocol=resp3"),
        _ => format!("redis://{addr}/"),
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT));
    redis::Client::open(url.as_str())
        .expect("redis client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Kind, code and detail of a client-side error result, for comparing errors across servers.
pub fn error_summary(e: &redis::RedisError) -> String {
    format!("kind={:?} code={:?} detail={:?}", e.kind(), e.code(), e.detail())
}

// ---------------------------------------------------------------------------------------------------
// Transcripts: what a client saw, checked on the spot and compared across servers afterwards
// ---------------------------------------------------------------------------------------------------

/// Observations of one client run against one server. `check` asserts a value on the spot (the same
/// expectation must hold on redis-server, which proves the expectation right); `record` only notes it, and
/// [`assert_same`] then demands that redis-server and Vesta noted the same thing — reply types included.
pub struct Transcript {
    pub server: String,
    pub entries: Vec<(String, String)>,
}

impl Transcript {
    pub fn new(server: &str) -> Transcript {
        Transcript { server: server.to_string(), entries: Vec::new() }
    }

    pub fn record(&mut self, label: &str, value: impl Debug) {
        self.entries.push((label.to_string(), format!("{value:?}")));
    }

    #[track_caller]
    pub fn check<T: PartialEq + Debug>(&mut self, label: &str, got: T, expected: T) {
        assert!(got == expected, "[{}] {label}: got {got:?}, expected {expected:?}", self.server);
        self.record(label, got);
    }

    #[track_caller]
    pub fn check_that<T: Debug>(&mut self, label: &str, got: T, ok: impl FnOnce(&T) -> bool) {
        assert!(ok(&got), "[{}] {label}: unexpected {got:?}", self.server);
    }
}

/// Where two transcripts differ (labels and values, in order), or `None` when they agree.
pub fn transcript_diff(reference: &Transcript, tested: &Transcript) -> Option<String> {
    let mut diffs = Vec::new();
    for i in 0..reference.entries.len().max(tested.entries.len()) {
        let a = reference.entries.get(i);
        let b = tested.entries.get(i);
        if a != b {
            let show = |e: Option<&(String, String)>| e.map_or("<nothing>".to_string(), |(l, v)| format!("{l} = {v}"));
            diffs.push(format!("  #{i}\n    {}: {}\n    {}: {}", reference.server, show(a), tested.server, show(b)));
        }
    }
    (!diffs.is_empty()).then(|| format!("{} differs from {}:\n{}", tested.server, reference.server, diffs.join("\n")))
}

/// Both transcripts must hold the same labels with the same values, in the same order.
#[track_caller]
pub fn assert_same(reference: &Transcript, tested: &Transcript) {
    if let Some(diff) = transcript_diff(reference, tested) {
        panic!("{diff}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Bounded subprocess runs
// ---------------------------------------------------------------------------------------------------

/// The outcome of a finished subprocess.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Both streams, for assertion messages.
    pub fn output(&self) -> String {
        format!("exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `cmd` with `stdin` as its input, killing it (and failing the test with what it printed so far) if
/// it is not done within `limit`.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Ran {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(cmd).unwrap_or_else(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            panic!("{what}: program not found (redis-cli and redis-benchmark: apt-get install redis-tools)")
        }
        panic!("{what}: spawn: {e}")
    });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input); // dropping the pipe closes it: the child sees EOF
        });
    }
    let out = collect(child.stdout.take().expect("piped stdout"));
    let err = collect(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let (stdout, stderr) = (drain(out), drain(err));
                panic!(
                    "{what}: still running after {limit:?}; killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
                );
            }
            Err(e) => panic!("{what}: wait: {e}"),
        }
    };
    Ran { status, stdout: drain(out), stderr: drain(err) }
}

fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// What a reader thread collected; bounded, because a grandchild may still hold the pipe open.
fn drain(rx: mpsc::Receiver<Vec<u8>>) -> String {
    let bytes = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| b"<output not closed>".to_vec());
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------------
// Python: venvs with redis-py and the scripts in compat-tests/python
// ---------------------------------------------------------------------------------------------------

/// `compat-tests/python/NAME`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// The Python of `$HOME/.cache/vesta/venvs/redis-py-MAJOR`, created (`python3 -m venv`, `pip install
/// 'redis>=MAJOR,<MAJOR+1'`) when missing or holding another major version, reused otherwise.
pub fn redis_py(major: u32) -> PathBuf {
    // Tests of one binary may ask concurrently; one of them builds, the others wait and reuse.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let home = std::env::var_os("HOME").expect("HOME is set");
    let venv = Path::new(&home).join(".cache/vesta/venvs").join(format!("redis-py-{major}"));
    let python = venv.join("bin/python");
    let check = format!("import redis, sys; sys.exit(0 if redis.__version__.split('.')[0] == '{major}' else 1)");
    let has_it = || python.is_file() && run(py_cmd(&python, ["-c", &check]), None, Duration::from_secs(60)).success();
    if has_it() {
        return python;
    }
    std::fs::create_dir_all(venv.parent().expect("venv has a parent")).expect("create the venvs directory");
    let made = run(py_cmd(Path::new("python3"), ["-m", "venv", &path_str(&venv)]), None, Duration::from_secs(120));
    assert!(made.success(), "python3 -m venv {}: {}", venv.display(), made.output());
    let spec = format!("redis>={major},<{}", major + 1);
    let pip = run(
        py_cmd(&python, ["-m", "pip", "install", "--disable-pip-version-check", "-q", &spec]),
        None,
        Duration::from_secs(600),
    );
    assert!(pip.success(), "pip install '{spec}' into {}: {}", venv.display(), pip.output());
    assert!(has_it(), "{} still has no redis-py {major}.x after pip install", venv.display());
    python
}

fn py_cmd<'a>(python: &Path, args: impl IntoIterator<Item = &'a str>) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(args).env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs `python SCRIPT ARGS` (bounded) and returns what it did.
pub fn run_python(python: &Path, script: &str, args: &[String], limit: Duration) -> Ran {
    let script = python_script(script);
    let mut cmd = py_cmd(python, [path_str(&script).as_str()]);
    cmd.args(args);
    run(cmd, None, limit)
}

/// A transcript out of a script's output: every line `MARKERlabel = value`, in order.
pub fn transcript_from_output(server: &str, text: &str, marker: &str) -> Transcript {
    let mut t = Transcript::new(server);
    for line in text.lines().filter_map(|l| l.strip_prefix(marker)) {
        let (label, value) = line.split_once(" = ").unwrap_or((line, ""));
        t.entries.push((label.to_string(), value.to_string()));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_differing_in_a_value_or_a_length_are_reported() {
        let mut a = Transcript::new("a");
        let mut b = Transcript::new("b");
        a.record("x", 1);
        b.record("x", 1);
        assert_eq!(transcript_diff(&a, &b), None);
        b.record("y", "z");
        assert!(transcript_diff(&a, &b).expect("a missing entry").contains("<nothing>"));
        a.record("y", "w");
        assert!(transcript_diff(&a, &b).expect("a different value").contains("y = \"z\""));
    }

    #[test]
    fn script_transcripts_keep_order_and_values() {
        let t = transcript_from_output("s", "noise\nT a = 1\nT b c = [1, 2]\nDONE\n", "T ");
        assert_eq!(t.entries, vec![("a".into(), "1".into()), ("b c".into(), "[1, 2]".into())]);
    }
}
