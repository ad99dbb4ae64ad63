//! The docker-compose cluster (`docker-compose.yml`) under faults: its images are built by
//! `scripts/docker-build.sh` from this test's `vesta` binary, the stack is started under a unique project
//! name with its two proxies on free loopback ports, and a SET/GET/INCR workload runs through both proxies
//! while one store node is killed and another zone is cut off its network. Afterwards every acknowledged
//! SET must read back, and every counter must hold its acknowledged INCRs (plus at most the INCRs that
//! failed, whose outcome is unknown). The stack's Prometheus must report every proxy and store node as an
//! `up` target, before the faults and again once they are healed, and must have scraped the workload's
//! commands. The stack, its networks, volumes and images are removed at the end, also when the test fails.
//!
//! Skipped (with a message, passing) when Docker, docker compose / docker-compose, etcd or prometheus is
//! missing.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;

const PROJECT_PREFIX: &str = "vesta-compose-test-";
/// In the project names of the two-site stack (after the pid).
const TWO_SITES: &str = "-sites-";
/// One stack at a time: the machine builds and runs them, and two at once would only slow both.
static ONE_STACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
const COUNTERS: usize = 4;
/// Client tasks per proxy.
const WORKERS_PER_PROXY: usize = 2;
/// How long a SET may keep failing (retried) before the test gives up: the faults last about 10 s.
const SET_DEADLINE: Duration = Duration::from_secs(60);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------
// Running commands with a time limit
// ---------------------------------------------------------------------------------------------------

/// Runs a command to completion within `limit` (killed beyond it), capturing its output.
fn run_for(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: still running after {limit:?}, killed"));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
fn must(cmd: &mut Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let out = run_for(cmd, limit).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{what}: {}\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    run_for(Command::new(program).args(args), Duration::from_secs(30)).is_ok_and(|o| o.status.success())
}

// ---------------------------------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `docker compose` when the v2 plugin is there, else `docker-compose`; `None` when neither works.
fn compose_program() -> Option<Vec<&'static str>> {
    if succeeds("docker", &["compose", "version"]) {
        Some(vec!["docker", "compose"])
    } else if succeeds("docker-compose", &["version"]) {
        Some(vec!["docker-compose"])
    } else {
        None
    }
}

/// One compose project: torn down with its volumes, networks and images when dropped.
struct Stack {
    compose: Vec<&'static str>,
    /// The compose file, in the repository's root.
    file: &'static str,
    project: String,
    env: Vec<(String, String)>,
    images: Vec<String>,
    /// The stack's CA and certificates (made by its `pki` service).
    pki: tempfile::TempDir,
}

impl Stack {
    fn of_file(compose: Vec<&'static str>, project: &str, file: &'static str) -> Stack {
        let images =
            vec![format!("vesta:{project}"), format!("vesta-etcd:{project}"), format!("vesta-prometheus:{project}")];
        let pki = tempfile::tempdir().expect("a directory for the stack's certificates");
        let mut env = vec![
            ("VESTA_IMAGE".to_string(), images[0].clone()),
            ("VESTA_ETCD_IMAGE".to_string(), images[1].clone()),
            ("VESTA_PROMETHEUS_IMAGE".to_string(), images[2].clone()),
            ("VESTA_PKI_DIR".to_string(), pki.path().to_str().expect("utf-8 temp path").to_string()),
        ];
        // A free loopback port each (`docker compose port` tells which).
        for published in [
            "VESTA_PROXY1_ADDR",
            "VESTA_PROXY2_ADDR",
            "VESTA_SITE_A_ADDR",
            "VESTA_SITE_B_ADDR",
            "VESTA_PROMETHEUS_ADDR",
        ] {
            env.push((published.to_string(), "127.0.0.1:".to_string()));
        }
        Stack { compose, file, project: project.to_string(), env, images, pki }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.compose[0]);
        cmd.args(&self.compose[1..])
            .arg("-f")
            .arg(repo_root().join(self.file))
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn must(&self, args: &[&str], limit: Duration) -> String {
        must(&mut self.cmd(args), limit)
    }

    fn container(&self, service: &str) -> String {
        let id = self.must(&["ps", "-q", service], Duration::from_secs(60)).trim().to_string();
        assert!(!id.is_empty(), "no container for service {service}");
        id
    }

    /// The loopback address a proxy's RESP port is published on.
    fn published(&self, service: &str) -> String {
        self.published_port(service, 6379)
    }

    fn published_port(&self, service: &str, port: u16) -> String {
        let addr = self.must(&["port", service, &port.to_string()], Duration::from_secs(60)).trim().to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{service} is published on {addr:?}, not on loopback only");
        addr
    }

    /// `vesta admin show` inside the stack: node name → up.
    fn node_health(&self) -> Result<HashMap<String, bool>, String> {
        let out =
            run_for(&mut self.cmd(&["run", "--rm", "-T", "init", "vesta", "admin", "show"]), Duration::from_secs(120))?;
        if !out.status.success() {
            return Err(format!("admin show: {}\n{}{}", out.status, text(&out.stdout), text(&out.stderr)));
        }
        // "  zone1-a          zone1-a:7100              512 shards  up, map v1" (or "… shards  DOWN")
        let health = text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("  ") && l.contains(" shards"))
            .filter_map(|l| {
                let (node, state) = l.trim_start().split_once(' ')?;
                let state = state.split(" shards").nth(1)?.trim();
                Some((node.to_string(), state.starts_with("up")))
            })
            .collect::<HashMap<_, _>>();
        if health.len() != 6 {
            return Err(format!("admin show lists {} nodes:\n{}", health.len(), text(&out.stdout)));
        }
        Ok(health)
    }

    fn down(&self) {
        match run_for(&mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "5"]), Duration::from_secs(180)) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("compose down failed: {}\n{}", o.status, text(&o.stderr)),
            Err(e) => eprintln!("compose down: {e}"),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(o) = run_for(&mut self.cmd(&["logs", "--no-color", "--tail", "40"]), Duration::from_secs(60)) {
                eprintln!("---- compose logs (last 40 lines per service) ----\n{}", text(&o.stdout));
            }
        }
        self.down();
        for image in &self.images {
            let _ = run_for(Command::new("docker").args(["rmi", "-f", image]), Duration::from_secs(60));
        }
    }
}

/// Projects, networks, volumes and images left by a run of this test that was killed (its pid is gone).
fn remove_stale_runs(compose: &[&'static str]) {
    let pid_alive = |name: &str| {
        let pid = name.strip_prefix(PROJECT_PREFIX).and_then(|rest| rest.split('-').next()).unwrap_or("");
        pid.parse::<u32>().is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists())
    };
    let mut projects = std::collections::BTreeSet::new();
    for kind in [&["ps", "-a"][..], &["network", "ls"], &["volume", "ls"]] {
        let out = run_for(
            Command::new("docker").args(kind).args(["--format", "{{.Label \"com.docker.compose.project\"}}"]),
            Duration::from_secs(60),
        );
        if let Ok(o) = out {
            projects.extend(text(&o.stdout).lines().filter(|p| p.starts_with(PROJECT_PREFIX)).map(str::to_string));
        }
    }
    for project in projects.into_iter().filter(|p| !pid_alive(p)) {
        eprintln!("removing the stale compose project {project}");
        let file = if project.contains(TWO_SITES) { "docker-compose.two-sites.yml" } else { "docker-compose.yml" };
        let stack = Stack::of_file(compose.to_vec(), &project, file);
        drop(stack); // down -v, and its images
    }
    if let Ok(o) = run_for(
        Command::new("docker").args(["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        Duration::from_secs(60),
    ) {
        for image in text(&o.stdout).lines() {
            let tag = image.split_once(':').map_or("", |(_, t)| t);
            if ["vesta:", "vesta-etcd:", "vesta-prometheus:"].iter().any(|repo| image.starts_with(repo))
                && tag.starts_with(PROJECT_PREFIX)
                && !pid_alive(tag)
            {
                let _ = run_for(Command::new("docker").args(["rmi", "-f", image]), Duration::from_secs(60));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Redis clients
// ---------------------------------------------------------------------------------------------------

async fn connect(addr: &str) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    redis::Client::open(format!("redis://{addr}/"))?.get_multiplexed_async_connection_with_config(&config).await
}

/// The proxies serve TLS only: the test's Redis clients reach one through a local forwarder that speaks
/// TLS to it, verifying its certificate against the stack's CA — on the wire, client → proxy is TLS.
async fn tls_forwarder(target: String, ca: PathBuf) -> String {
    use vesta_tls::tokio_rustls::{rustls, TlsConnector};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    for cert in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(cert.expect("a PEM certificate")).expect("a CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address").to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let (connector, target) = (connector.clone(), target.clone());
            tokio::spawn(async move {
                let Ok(tcp) = tokio::net::TcpStream::connect(&target).await else { return };
                let Ok(name) = vesta_tls::client::server_name(&target) else { return };
                match connector.connect(name, tcp).await {
                    Ok(mut tls) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut tls).await;
                    }
                    Err(e) => eprintln!("TLS to {target} failed: {e}"),
                }
            });
        }
    });
    addr
}

/// Connects, retrying for up to `limit`.
async fn connect_within(addr: &str, limit: Duration) -> MultiplexedConnection {
    let deadline = Instant::now() + limit;
    loop {
        match connect(addr).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One command; an error reply is `Ok(Value::ServerError)`, `Err` is a connection-level failure.
async fn call(c: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    c.send_packed_command(&cmd).await
}

fn is_retryable(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "TRYAGAIN" || e.code() == "CLUSTERDOWN")
}

/// Sends a command until it is served (no connection error, no retryable error reply), within `limit`.
async fn call_until_served(addr: &str, c: &mut MultiplexedConnection, args: &[&str], limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let last = match call(c, args).await {
            Ok(v) if !is_retryable(&v) => return v,
            Ok(v) => format!("{v:?}"),
            Err(e) => {
                if let Ok(fresh) = connect(addr).await {
                    *c = fresh;
                }
                e.to_string()
            }
        };
        assert!(Instant::now() < deadline, "{} via {addr}: not served within {limit:?}: {last}", args.join(" "));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------------------

/// What docker/prometheus.yml scrapes: both proxies and the six store nodes.
const SCRAPE_TARGETS: usize = 8;

/// One GET of the stack's Prometheus HTTP API (`addr` is its published port); the JSON reply's `data`.
fn prometheus_api(addr: &str, path_and_query: &str) -> Result<serde_json::Value, String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect to Prometheus on {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path_and_query}: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).map_err(|e| format!("GET {path_and_query}: {e}"))?;
    let reply = text(&reply);
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(|| format!("GET {path_and_query}: {reply:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path_and_query}: {head}\n{body}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("GET {path_and_query}: {e} in {body:?}"))?;
    match json.get("status").and_then(|s| s.as_str()) {
        Some("success") => Ok(json["data"].clone()),
        _ => Err(format!("GET {path_and_query}: {json}")),
    }
}

/// Prometheus's active scrape targets: (instance, health, last error).
fn scrape_targets(addr: &str) -> Result<Vec<(String, String, String)>, String> {
    let data = prometheus_api(addr, "/api/v1/targets?state=active")?;
    let targets = data["activeTargets"].as_array().ok_or_else(|| format!("no activeTargets in {data}"))?;
    Ok(targets
        .iter()
        .map(|t| {
            let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (field(&t["labels"]["instance"]), field(&t["health"]), field(&t["lastError"]))
        })
        .collect())
}

/// Waits until Prometheus scrapes every proxy and store node successfully (`health: up`).
fn every_target_up(addr: &str, limit: Duration) -> Vec<(String, String, String)> {
    targets_reach(addr, &|_| true, limit)
}

/// Waits until Prometheus's last scrape of each of its targets succeeded exactly where `up(instance)`.
fn targets_reach(addr: &str, up: &dyn Fn(&str) -> bool, limit: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match scrape_targets(addr) {
            Ok(t)
                if t.len() == SCRAPE_TARGETS
                    && t.iter().all(|(instance, health, _)| (health == "up") == up(instance)) =>
            {
                return t
            }
            Ok(t) => format!("{t:#?}"),
            Err(e) => e,
        };
        assert!(Instant::now() < deadline, "Prometheus's targets are not as expected after {limit:?}: {last}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The value of a PromQL query that yields one sample (`None` while it yields none).
fn prometheus_value(addr: &str, query: &str) -> Result<Option<f64>, String> {
    let data = prometheus_api(addr, &format!("/api/v1/query?query={query}"))?;
    let Some(sample) = data["result"].as_array().and_then(|r| r.first()) else { return Ok(None) };
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| format!("{query}: no value in {sample}"))
}

// ---------------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------------

/// What one client task saw.
#[derive(Default)]
struct Tally {
    /// Acknowledged SETs: key, value.
    sets: Vec<(String, String)>,
    /// SET attempts answered with a retryable error (then retried).
    set_retries: u64,
    incr_acked: [u64; COUNTERS],
    /// INCRs answered with an error or lost with the connection: applied or not.
    incr_failed: [u64; COUNTERS],
    /// GETs of an acknowledged key that answered its value.
    reads_ok: u64,
    /// GETs that answered a retryable error.
    reads_failed: u64,
    connection_errors: u64,
    /// Replies that must never happen.
    violations: Vec<String>,
}

fn counter_key(run: &str, c: usize) -> String {
    format!("{run}:counter:{c}")
}

async fn worker(addr: String, id: usize, run: String, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let mut conn = connect_within(&addr, Duration::from_secs(30)).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // SET a fresh key: idempotent, so retried until acknowledged.
        let (key, value) = (format!("{run}:w{id}:k{n}"), format!("value-{id}-{n}-{}", n * 7919 % 1000));
        let deadline = Instant::now() + SET_DEADLINE;
        loop {
            match call(&mut conn, &["SET", &key, &value]).await {
                Ok(Value::Okay) => {
                    t.sets.push((key.clone(), value.clone()));
                    break;
                }
                Ok(v) if is_retryable(&v) => t.set_retries += 1,
                Ok(v) => {
                    t.violations.push(format!("SET {key} via {addr}: {v:?}"));
                    break;
                }
                Err(e) => {
                    t.connection_errors += 1;
                    eprintln!("worker {id} ({addr}): SET {key}: connection error {e}; reconnecting");
                    conn = connect_within(&addr, Duration::from_secs(30)).await;
                }
            }
            if Instant::now() > deadline {
                t.violations.push(format!("SET {key} via {addr}: not acknowledged within {SET_DEADLINE:?}"));
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // INCR a shared counter once, whatever the reply.
        let c = (n as usize + id) % COUNTERS;
        match call(&mut conn, &["INCR", &counter_key(&run, c)]).await {
            Ok(Value::Int(_)) => t.incr_acked[c] += 1,
            Ok(v) if is_retryable(&v) => t.incr_failed[c] += 1,
            Ok(v) => {
                t.incr_failed[c] += 1;
                t.violations.push(format!("INCR via {addr}: {v:?}"));
            }
            Err(e) => {
                t.incr_failed[c] += 1;
                t.connection_errors += 1;
                eprintln!("worker {id} ({addr}): INCR: connection error {e}; reconnecting");
                conn = connect_within(&addr, Duration::from_secs(30)).await;
            }
        }
        // Read back an earlier acknowledged key: its value, or a retryable error — never an older state.
        if n.is_multiple_of(3) && !t.sets.is_empty() {
            let (key, value) = t.sets[(n as usize * 31) % t.sets.len()].clone();
            match call(&mut conn, &["GET", &key]).await {
                Ok(Value::BulkString(b)) if b == value.as_bytes() => t.reads_ok += 1,
                Ok(v) if is_retryable(&v) => t.reads_failed += 1,
                Ok(v) => t.violations.push(format!("GET {key} via {addr}: {v:?}, expected {value:?}")),
                Err(e) => {
                    t.connection_errors += 1;
                    eprintln!("worker {id} ({addr}): GET: connection error {e}; reconnecting");
                    conn = connect_within(&addr, Duration::from_secs(30)).await;
                }
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------------

fn step(start: Instant, what: &str) {
    eprintln!("[compose {:>6.1} s] {what}", start.elapsed().as_secs_f64());
}

/// The compose program, once Docker, compose and etcd are known to be there; `None` (with a visible
/// SKIPPED line) otherwise.
fn prerequisites(test: &str) -> Option<Vec<&'static str>> {
    if !succeeds("docker", &["info"]) {
        eprintln!("SKIPPED {test}: `docker info` fails (no Docker engine reachable)");
        return None;
    }
    let Some(compose) = compose_program() else {
        eprintln!("SKIPPED {test}: neither `docker compose` nor `docker-compose` works");
        return None;
    };
    if !succeeds("etcd", &["--version"]) {
        eprintln!("SKIPPED {test}: no etcd binary to put in the etcd image (Debian: etcd-server)");
        return None;
    }
    if !succeeds("prometheus", &["--version"]) {
        eprintln!("SKIPPED {test}: no prometheus binary to put in the Prometheus image (Debian: prometheus)");
        return None;
    }
    Some(compose)
}

/// A stack of `file` under a fresh project name, its images built from this test's `vesta` binary.
fn build_stack(start: Instant, compose: Vec<&'static str>, file: &'static str, kind: &str) -> (Stack, u128) {
    step(start, &format!("using {}", compose.join(" ")));
    remove_stale_runs(&compose);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let project = format!("{PROJECT_PREFIX}{}{kind}{}", std::process::id(), nanos % 1_000_000_000);
    let stack = Stack::of_file(compose, &project, file);
    step(start, "building the images (scripts/docker-build.sh)");
    must(
        Command::new(repo_root().join("scripts/docker-build.sh"))
            .env("VESTA_BIN", env!("CARGO_BIN_EXE_vesta"))
            .envs(stack.env.iter().map(|(k, v)| (k, v))),
        Duration::from_secs(600),
    );
    (stack, nanos)
}

#[test]
fn compose_cluster_survives_a_killed_node_and_a_cut_zone() {
    let _one = ONE_STACK.lock().unwrap_or_else(|p| p.into_inner());
    let start = Instant::now();
    let Some(compose) = prerequisites("compose test") else { return };
    let (stack, nanos) = build_stack(start, compose, "docker-compose.yml", "-");
    let project = stack.project.clone();

    step(start, &format!("up -d (project {project})"));
    stack.must(&["up", "-d"], Duration::from_secs(300));
    let published = [stack.published("proxy1"), stack.published("proxy2")];
    step(start, &format!("proxies published on {published:?} (TLS only)"));

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ca = stack.pki.path().join("ca.crt");
    let proxies = runtime.block_on(async {
        [tls_forwarder(published[0].clone(), ca.clone()).await, tls_forwarder(published[1].clone(), ca.clone()).await]
    });
    let run = format!("r{}", nanos % 1_000_000_000);

    // Both proxies answer PING, and a write through each is acknowledged (the stores are up).
    runtime.block_on(async {
        for addr in &proxies {
            let mut c = connect_within(addr, Duration::from_secs(60)).await;
            let pong = call_until_served(addr, &mut c, &["PING"], Duration::from_secs(60)).await;
            assert_eq!(pong, Value::SimpleString("PONG".into()), "PING via {addr}");
            let probe = format!("{run}:probe:{addr}");
            let ok = call_until_served(addr, &mut c, &["SET", &probe, "1"], Duration::from_secs(90)).await;
            assert_eq!(ok, Value::Okay, "SET via {addr}");
        }
    });
    // The proxy that just served over TLS gives plaintext nothing: every hop of this stack is TLS.
    let plain = runtime.block_on(async { call(&mut connect(&published[0]).await?, &["PING"]).await });
    assert!(plain.is_err(), "plaintext PING answered on a TLS-only port: {plain:?}");
    // And the values it wrote went to the store nodes sealed.
    let info = runtime.block_on(async {
        let mut c = connect_within(&proxies[0], Duration::from_secs(30)).await;
        call(&mut c, &["INFO", "encryption"]).await
    });
    let info = match info {
        Ok(Value::BulkString(b)) => text(&b),
        other => panic!("INFO encryption: {other:?}"),
    };
    let sealed = info
        .lines()
        .find_map(|l| l.strip_prefix("encryption_values_sealed:"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(info.contains("encryption_enabled:1") && sealed.is_some_and(|n| n > 0), "encryption is on: {info}");
    // Prometheus scrapes both proxies and all six store nodes.
    let prometheus = stack.published_port("prometheus", 9090);
    let targets = every_target_up(&prometheus, Duration::from_secs(90));
    step(start, &format!("Prometheus on {prometheus}: {} targets up", targets.len()));
    step(start, "both proxies serve; starting the workload");

    // zone2's store containers and their one network, to cut and heal later.
    let zone2: Vec<(String, String, String)> = ["zone2-a", "zone2-b"]
        .iter()
        .map(|service| {
            let id = stack.container(service);
            let nets = must(
                Command::new("docker").args([
                    "inspect",
                    "-f",
                    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                    &id,
                ]),
                Duration::from_secs(30),
            );
            let nets: Vec<&str> = nets.split_whitespace().collect();
            assert_eq!(nets.len(), 1, "{service} should be on its zone's network only: {nets:?}");
            assert!(nets[0].ends_with("_zone2"), "{service} is on {nets:?}");
            (service.to_string(), id, nets[0].to_string())
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2 * WORKERS_PER_PROXY)
        .map(|id| runtime.spawn(worker(proxies[id % 2].clone(), id, run.clone(), stop.clone())))
        .collect();
    std::thread::sleep(Duration::from_secs(3));

    // Faults: zone1-a killed, zone2 cut off its network. Shards on zone1-a are then left with zone3
    // alone (below the write quorum) until one of the two comes back; the rest keep a quorum.
    step(start, "kill zone1-a");
    stack.must(&["kill", "zone1-a"], Duration::from_secs(60));
    for (service, id, net) in &zone2 {
        step(start, &format!("disconnect {service} from {net}"));
        must(Command::new("docker").args(["network", "disconnect", net, id]), Duration::from_secs(60));
    }
    // The cut is real: `vesta admin show` inside the stack sees zone1-a and zone2 down, the rest up.
    let health = stack.node_health().unwrap_or_else(|e| panic!("{e}"));
    step(start, &format!("admin show during the faults: {health:?}"));
    for (node, up) in &health {
        let expect_up = !(node == "zone1-a" || node.starts_with("zone2-"));
        assert_eq!(*up, expect_up, "node {node} during the faults: {health:?}");
    }
    // Prometheus sees the same three nodes down (a failed scrape each), the other five up.
    let faulted = ["zone1-a:9101", "zone2-a:9101", "zone2-b:9101"];
    let targets = targets_reach(&prometheus, &|instance| !faulted.contains(&instance), Duration::from_secs(30));
    let down: Vec<_> = targets.iter().filter(|(_, h, _)| h != "up").map(|(i, _, e)| format!("{i}: {e}")).collect();
    step(start, &format!("Prometheus during the faults: {down:?} down"));
    std::thread::sleep(Duration::from_secs(3));

    for (service, id, net) in &zone2 {
        step(start, &format!("reconnect {service} to {net}"));
        // The service name is the node's address in the spec: it must resolve again.
        must(Command::new("docker").args(["network", "connect", "--alias", service, net, id]), Duration::from_secs(60));
    }
    step(start, "start zone1-a");
    stack.must(&["start", "zone1-a"], Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(6));
    step(start, "stopping the workload");
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = runtime.block_on(async {
        let mut tallies = Vec::new();
        for w in workers {
            tallies
                .push(tokio::time::timeout(Duration::from_secs(120), w).await.expect("worker hung").expect("worker"));
        }
        tallies
    });

    let violations: Vec<&String> = tallies.iter().flat_map(|t| &t.violations).collect();
    let sets: Vec<&(String, String)> = tallies.iter().flat_map(|t| &t.sets).collect();
    let sum = |f: &dyn Fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    step(
        start,
        &format!(
            "workload: {} SETs acknowledged ({} retried), {} INCRs acknowledged, {} failed, {} reads ok, {} read errors, {} connection errors",
            sets.len(),
            sum(&|t| t.set_retries),
            sum(&|t| t.incr_acked.iter().sum()),
            sum(&|t| t.incr_failed.iter().sum()),
            sum(&|t| t.reads_ok),
            sum(&|t| t.reads_failed),
            sum(&|t| t.connection_errors),
        ),
    );
    assert!(violations.is_empty(), "wrong replies during the workload: {violations:#?}");
    // The proxies themselves were never faulted: a lost client connection means one of them failed.
    assert_eq!(sum(&|t| t.connection_errors), 0, "client connections to the proxies failed");
    assert!(sets.len() >= 20, "too few writes were acknowledged to judge anything: {}", sets.len());

    // Every acknowledged SET reads back, through either proxy; every counter holds its acknowledged INCRs.
    runtime.block_on(async {
        let mut conns = Vec::new();
        for addr in &proxies {
            conns.push((addr.clone(), connect_within(addr, Duration::from_secs(30)).await));
        }
        for (i, chunk) in sets.chunks(50).enumerate() {
            let (addr, c) = &mut conns[i % 2];
            let mut args = vec!["MGET"];
            args.extend(chunk.iter().map(|(k, _)| k.as_str()));
            let reply = call_until_served(addr, c, &args, Duration::from_secs(60)).await;
            let Value::Array(values) = reply else { panic!("MGET via {addr}: {reply:?}") };
            for ((key, value), got) in chunk.iter().zip(values) {
                assert_eq!(got, Value::BulkString(value.as_bytes().to_vec()), "acknowledged SET {key} via {addr}");
            }
        }
        for c in 0..COUNTERS {
            let acked: u64 = tallies.iter().map(|t| t.incr_acked[c]).sum();
            let failed: u64 = tallies.iter().map(|t| t.incr_failed[c]).sum();
            for (addr, conn) in &mut conns {
                let key = counter_key(&run, c);
                let got = match call_until_served(addr, conn, &["GET", &key], Duration::from_secs(60)).await {
                    Value::BulkString(b) => String::from_utf8_lossy(&b).parse::<u64>().expect("counter value"),
                    Value::Nil => 0,
                    v => panic!("GET {key} via {addr}: {v:?}"),
                };
                assert!(
                    acked <= got && got <= acked + failed,
                    "counter {key} via {addr} is {got}: {acked} INCRs acknowledged, {failed} failed"
                );
            }
            step(start, &format!("counter {c}: {acked} acknowledged, {failed} failed: ok"));
        }
    });
    step(start, &format!("all {} acknowledged SETs read back", sets.len()));

    // Every node is reachable again (zone2 by its name on the reconnected network, zone1-a restarted).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match stack.node_health() {
            Ok(h) if h.values().all(|up| *up) => break,
            other => assert!(Instant::now() < deadline, "not every node is up again: {other:?}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    step(start, "admin show: every node up");

    // Prometheus scrapes them all again (zone2 reconnected, zone1-a restarted), and it saw the workload:
    // more commands through the proxies than the SETs acknowledged.
    every_target_up(&prometheus, Duration::from_secs(90));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let commands =
            prometheus_value(&prometheus, "sum(vesta_proxy_commands_total)").unwrap_or_else(|e| panic!("{e}"));
        if commands.is_some_and(|n| n >= sets.len() as f64) {
            step(start, &format!("Prometheus: every target up again; {commands:?} proxy commands scraped"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus's sum(vesta_proxy_commands_total) is {commands:?}, below {} SETs",
            sets.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // `up` again on the running stack: the init service finds the cluster and succeeds.
    stack.must(&["up", "-d"], Duration::from_secs(300));
    let logs = stack.must(&["logs", "--no-color", "init"], Duration::from_secs(60));
    assert!(logs.contains("already exists"), "init's second run: {logs}");
    step(start, "second `up -d`: init found the existing cluster");
    drop(stack);
    step(start, "stack removed");
}

#[test]
fn two_site_compose_replicates_both_ways() {
    let _one = ONE_STACK.lock().unwrap_or_else(|p| p.into_inner());
    let start = Instant::now();
    let Some(compose) = prerequisites("two-site compose test") else { return };
    let (stack, nanos) = build_stack(start, compose, "docker-compose.two-sites.yml", TWO_SITES);
    step(start, &format!("up -d (project {})", stack.project));
    stack.must(&["up", "-d"], Duration::from_secs(300));
    let published = |service: &str| stack.published(service);
    let (a, b) = (published("a-proxy"), published("b-proxy"));
    step(start, &format!("site a on {a}, site b on {b}"));

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let run = format!("r{}", nanos % 1_000_000_000);
    runtime.block_on(async {
        let mut in_a = connect_within(&a, Duration::from_secs(60)).await;
        let mut in_b = connect_within(&b, Duration::from_secs(60)).await;
        let key = format!("{run}:hello");
        let ok = call_until_served(&a, &mut in_a, &["SET", &key, "from a"], Duration::from_secs(90)).await;
        assert_eq!(ok, Value::Okay);
        let counter = format!("{run}:n");
        let _ = call_until_served(&b, &mut in_b, &["PING"], Duration::from_secs(90)).await;
        // Both sites increment one counter: each ends at the sum.
        for i in 0..10 {
            let (site, c) = if i % 2 == 0 { (&a, &mut in_a) } else { (&b, &mut in_b) };
            let v = call_until_served(site, c, &["INCRBY", &counter, "3"], Duration::from_secs(30)).await;
            assert!(matches!(v, Value::Int(_)), "INCRBY via {site}: {v:?}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got_b = call(&mut in_b, &["GET", &key]).await;
            let n_a = call(&mut in_a, &["GET", &counter]).await;
            let n_b = call(&mut in_b, &["GET", &counter]).await;
            let thirty = Value::BulkString(b"30".to_vec());
            if matches!(&got_b, Ok(Value::BulkString(v)) if v.as_slice() == b"from a")
                && n_a.as_ref().ok() == Some(&thirty)
                && n_b.as_ref().ok() == Some(&thirty)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not replicated after 60 s: b has {got_b:?}; counters {n_a:?} / {n_b:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    step(start, "a write in site a is read in site b; increments in both sites add up in both");

    let diff = stack.must(
        &[
            "run",
            "--rm",
            "-T",
            "a-init",
            "vesta",
            "admin",
            "repl",
            "diff",
            "--site",
            "a=a-proxy:6379",
            "--site",
            "b=b-proxy:6379",
        ],
        Duration::from_secs(120),
    );
    assert!(diff.contains("in 2 sites: 0 differ"), "{diff}");
    step(start, &format!("admin repl diff: {}", diff.trim()));
    drop(stack);
    step(start, "stack removed");
}
