//! Test machinery shared by Vesta's integration tests (`vesta/tests`) and client-compatibility tests
//! (`compat-tests`): child processes that can never outlive the test process, `vesta` processes started
//! and awaited by their `listening on` / `ready` lines, and values shared by every test of a test binary
//! that are dropped at process exit.
//!
//! Every child is killed by pid when its handle is dropped (also during a panic), and is started with
//! `PR_SET_PDEATHSIG = SIGKILL` from a thread that lives as long as the test process, so nothing outlives
//! a test binary that is itself killed.

pub mod etcd;

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a process may take to print `ready` (RocksDB opening on a loaded 2-core machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------
// Spawning children that cannot outlive the test process
// ---------------------------------------------------------------------------------------------------

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process: libtest runs
/// each test on its own short-lived thread, so children are forked by one thread that never exits.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the child-spawner thread");
        Mutex::new(tx)
    })
}

/// `cmd.spawn()`, except that the child gets SIGKILL when the test process dies.
pub fn spawn(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The test process may have died between fork and prctl: then nobody would kill us later.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner().lock().unwrap_or_else(|p| p.into_inner()).send((cmd, tx)).expect("child-spawner thread is gone");
    rx.recv().expect("child-spawner thread dropped a request")
}

// ---------------------------------------------------------------------------------------------------
// Exit hooks: statics are never dropped, so shared servers are dropped from atexit
// ---------------------------------------------------------------------------------------------------

type ExitHook = Box<dyn FnOnce() + Send>;

fn exit_hooks() -> &'static Mutex<Vec<ExitHook>> {
    static HOOKS: OnceLock<Mutex<Vec<ExitHook>>> = OnceLock::new();
    HOOKS.get_or_init(|| {
        extern "C" fn run_exit_hooks() {
            // A panic must not unwind into libc.
            let _ = std::panic::catch_unwind(|| {
                let hooks = std::mem::take(&mut *exit_hooks().lock().unwrap_or_else(|p| p.into_inner()));
                for hook in hooks {
                    hook();
                }
            });
        }
        // SAFETY: registering a plain extern "C" fn with no arguments.
        unsafe {
            libc::atexit(run_exit_hooks);
        }
        Mutex::new(Vec::new())
    })
}

/// One value shared by every test of a test binary: started by the first caller, dropped at process exit.
pub struct Shared<T: 'static> {
    value: Mutex<Option<Arc<T>>>,
    failed: OnceLock<String>,
}

impl<T: Send + Sync + 'static> Shared<T> {
    pub const fn new() -> Self {
        Shared { value: Mutex::new(None), failed: OnceLock::new() }
    }

    pub fn get(&'static self, what: &str, start: fn() -> T) -> Arc<T> {
        // Held while starting: concurrent tests wait for the one start instead of racing their own.
        let mut slot = self.value.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(value) = slot.as_ref() {
            return value.clone();
        }
        // One failed start fails every later test at once instead of each waiting for its own timeout.
        if let Some(e) = self.failed.get() {
            panic!("the shared {what} failed to start earlier: {e}");
        }
        match std::panic::catch_unwind(start) {
            Ok(value) => {
                let value = Arc::new(value);
                *slot = Some(value.clone());
                exit_hooks().lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(move || {
                    drop(self.value.lock().unwrap_or_else(|p| p.into_inner()).take());
                }));
                value
            }
            Err(panic) => {
                let e = panic_text(&*panic);
                let _ = self.failed.set(e.clone());
                panic!("the shared {what} failed to start: {e}");
            }
        }
    }
}

impl<T: Send + Sync + 'static> Default for Shared<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------
// Vesta processes
// ---------------------------------------------------------------------------------------------------

/// The `vesta` binary: `$VESTA_BIN`, else `target/release/vesta` next to this test binary's `deps/` (or
/// next to this binary itself, for a tool built into `target/release/`).
pub fn vesta_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VESTA_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "VESTA_BIN={} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("path of the running test binary");
    let beside = exe.parent().map(|dir| dir.join("vesta")).filter(|p| p.is_file() && *p != exe);
    let candidate = beside.or_else(|| exe.parent().and_then(Path::parent).map(|dir| dir.join("vesta")));
    match candidate {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "the vesta binary was not found next to {} (expected {}); build it first with \
             `cargo build --release -p vesta` (same CARGO_TARGET_DIR), or point VESTA_BIN at it",
            exe.display(),
            candidate.map(|p| p.display().to_string()).unwrap_or_default()
        ),
    }
}

/// A `vesta` child process, killed (SIGKILL, then reaped) when dropped.
pub struct Proc {
    name: String,
    child: Child,
    /// Every address announced on a `... listening on ADDR` line, in order.
    pub addrs: Vec<SocketAddr>,
}

impl Proc {
    /// Starts `vesta ARGS` and waits for its `ready` line. Its stdout keeps being drained afterwards (a
    /// child must never block on, or die writing to, a full or closed pipe); stderr is forwarded, prefixed
    /// with `name`.
    pub fn spawn(name: &str, args: &[&str]) -> Result<Proc, String> {
        let mut cmd = Command::new(vesta_bin());
        cmd.args(args)
            .env("VESTA_LOG", std::env::var("VESTA_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(cmd).map_err(|e| format!("{name}: spawn vesta {args:?}: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let prefix = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{prefix}] {line}");
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });

        let mut proc = Proc { name: name.to_string(), child, addrs: Vec::new() };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(addr) = line.split(" listening on ").nth(1) {
                        let addr = addr.trim().parse().map_err(|e| format!("{name}: bad address in {line:?}: {e}"))?;
                        proc.addrs.push(addr);
                    } else if line.trim() == "ready" {
                        if proc.addrs.is_empty() {
                            return Err(format!("{name}: `ready` before any `listening on` line"));
                        }
                        return Ok(proc);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{name}: not ready after {START_TIMEOUT:?}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proc.child.wait();
                    return Err(format!("{name}: exited before `ready` ({status:?}); args {args:?}"));
                }
            }
        }
    }

    /// [`Proc::spawn`], retried for up to 30 s: a process restarted on the port of one just killed may
    /// find the port still held for a moment.
    pub fn spawn_retrying(name: &str, args: &[&str]) -> Result<Proc, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Proc::spawn(name, args) {
                Ok(proc) => return Ok(proc),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{name}: start failed, retrying: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// `kill -SIG pid`, e.g. `signal("STOP")`.
    pub fn signal(&self, sig: &str) {
        let status =
            Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{sig} {} ({}) failed", self.pid(), self.name);
    }

    /// Waits (bounded) for the process to exit by itself, e.g. after SIGTERM; SIGKILL if it does not.
    pub fn wait_exit(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None // dropped: SIGKILL and reap
    }

    /// SIGKILL and reap (what dropping the handle does).
    pub fn kill(self) {
        drop(self)
    }
}

/// `vesta store` arguments for a test node: `node` listening on `listen`, its data in `data_dir`, not
/// syncing (tests kill processes, not machines: the OS keeps what was written) and with small caches
/// (many nodes share the machine). Callers add their own flags (`--etcd`, `--cluster`, …).
pub fn store_args<'a>(node: &'a str, listen: &'a str, data_dir: &'a str) -> Vec<&'a str> {
    vec![
        "store",
        "--node",
        node,
        "--listen",
        listen,
        "--data-dir",
        data_dir,
        "--sync",
        "off",
        "--block-cache-mb",
        "8",
        "--write-buffer-mb",
        "8",
    ]
}

/// A free loopback port for a process to listen on soon (bound, then released). It is taken below the
/// kernel's ephemeral range: a port from that range can be taken, before the process listens on it, as
/// the local end of any outgoing connection — a proxy's to a store node, a client's — and the process
/// then fails to start with `Address already in use` (it happened in a chaos schedule).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let high = ephemeral_start().filter(|&h| h > LOW + 1_000).unwrap_or(32_768);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    for _ in 0..1_000 {
        // Successive calls of one process walk a permutation of the range (7919 is prime, so coprime
        // with any range size it does not divide), from a start that differs between processes.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + seed.wrapping_add(n.wrapping_mul(7_919)) % (high - LOW);
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a loopback port").port()
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_start() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?.split_whitespace().next()?.parse().ok()
}
