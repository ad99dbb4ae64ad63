//! Cluster operations on a real multi-process cluster configured from a real etcd: online scale-out
//! from 3 store nodes to 6 under a continuous read/write/INCR load through two proxies (with the
//! redistribution killed halfway and resumed), scale-in back to 3, and zone maintenance (a zone taken
//! down, its node killed and brought back, the zone put back up and repaired).
//!
//! What must hold throughout: no request fails beyond retryable errors, every acknowledged write reads
//! back, every counter equals the number of acknowledged INCRs, and the map change reaches every proxy
//! and store node.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{call, error_text, is_retryable_error, try_call, Proc};
use redis::aio::MultiplexedConnection;
use redis::Value;
use vesta_cluster::etcd::ClusterStore;
use vesta_cluster::redistribution::{progress_leaf, Phase};
use vesta_proto::client::NodeConnection;
use vesta_proto::{Pong, Request, Response};

/// How long after losing a shard a store node deletes it, in these tests.
const DROP_GRACE_MS: u64 = 1500;
const COUNTERS: usize = 4;

struct EtcdCluster {
    etcd: Etcd,
    name: String,
    dir: tempfile::TempDir,
    /// Store nodes by name: address and process (None while down).
    stores: BTreeMap<String, (SocketAddr, Option<Proc>)>,
    proxies: Vec<Proc>,
    /// Extra flags of every store node.
    store_args: Vec<String>,
}

impl EtcdCluster {
    /// `vesta admin init` of 3 zones × 1 node, the three stores, and two proxies, all from etcd.
    fn start(name: &str) -> EtcdCluster {
        Self::start_with(name, &[])
    }

    /// [`EtcdCluster::start`], every store node with `store_args` too.
    fn start_with(name: &str, store_args: &[&str]) -> EtcdCluster {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().unwrap();
        let store_args = store_args.iter().map(|a| a.to_string()).collect();
        let mut cluster =
            EtcdCluster { etcd, name: name.into(), dir, stores: BTreeMap::new(), proxies: Vec::new(), store_args };
        let mut spec = format!("name = \"{name}\"\nshards = {}\nwrite_quorum = 2\nread_quorum = 2\n", common::SHARDS);
        for z in 1..=3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
            spec += &format!("\n[[zones]]\nname = \"zone{z}\"\n[[zones.nodes]]\nname = \"z{z}a\"\naddr = \"{addr}\"\n");
            cluster.stores.insert(format!("z{z}a"), (addr, None));
        }
        let spec_path = cluster.dir.path().join("cluster.toml");
        std::fs::write(&spec_path, spec).unwrap();
        assert!(cluster.admin(&["init", "--spec", spec_path.to_str().unwrap()]).status.success());
        for z in 1..=3 {
            cluster.start_store(&format!("z{z}a"));
        }
        for i in 0..2 {
            let cache = cluster.dir.path().join(format!("proxy{i}-map.json"));
            let args = [
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--etcd",
                &cluster.etcd.url,
                "--cluster",
                name,
                "--map-cache",
                cache.to_str().unwrap(),
            ];
            cluster.proxies.push(Proc::spawn(&format!("proxy{i}"), &args).unwrap_or_else(|e| panic!("{e}")));
        }
        cluster
    }

    /// Adds a store node that is not in the map yet (it waits for `add-node`).
    fn add_store(&mut self, node: &str) -> SocketAddr {
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
        self.stores.insert(node.into(), (addr, None));
        self.start_store(node);
        addr
    }

    /// Starts (or restarts, on the same data) a store node.
    fn start_store(&mut self, node: &str) {
        let data: PathBuf = self.dir.path().join(node);
        let addr = self.stores[node].0;
        let (listen, drop_grace) = (addr.to_string(), DROP_GRACE_MS.to_string());
        let mut args = vesta_testkit::store_args(node, &listen, data.to_str().unwrap());
        args.extend(["--etcd", &self.etcd.url, "--cluster", &self.name, "--drop-grace-ms", &drop_grace]);
        args.extend(self.store_args.iter().map(String::as_str));
        let proc = Proc::spawn(node, &args).unwrap_or_else(|e| panic!("{e}"));
        self.stores.get_mut(node).unwrap().1 = Some(proc);
    }

    fn kill_store(&mut self, node: &str) {
        let proc = self.stores.get_mut(node).unwrap().1.take().expect("store running");
        proc.signal("KILL");
        drop(proc);
    }

    /// `kill -SIG` a running store node (`STOP`: it keeps its connections and answers nothing).
    fn signal_store(&self, node: &str, sig: &str) {
        self.stores[node].1.as_ref().expect("store running").signal(sig);
    }

    fn store_addr(&self, node: &str) -> SocketAddr {
        self.stores[node].0
    }

    fn proxy_addrs(&self) -> Vec<SocketAddr> {
        self.proxies.iter().map(|p| p.addr()).collect()
    }

    fn admin(&self, args: &[&str]) -> Output {
        common::etcd::admin(&self.etcd, &self.name, args)
    }

    /// `vesta admin ARGS` running in the background (to be killed halfway).
    fn admin_background(&self, args: &[&str]) -> std::process::Child {
        let mut cmd = Command::new(vesta_testkit::vesta_bin());
        cmd.args(["admin", "--etcd", &self.etcd.url, "--cluster", &self.name]).args(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        vesta_testkit::spawn(cmd).expect("spawn vesta admin")
    }

    /// [`EtcdCluster::admin_background`], its stdout and stderr going to `log`.
    fn admin_logged(&self, args: &[&str], log: &std::path::Path) -> std::process::Child {
        let mut cmd = Command::new(vesta_testkit::vesta_bin());
        cmd.args(["admin", "--etcd", &self.etcd.url, "--cluster", &self.name]).args(args);
        let file = std::fs::File::create(log).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        vesta_testkit::spawn(cmd).expect("spawn vesta admin")
    }

    async fn etcd_store(&self) -> ClusterStore {
        ClusterStore::connect(std::slice::from_ref(&self.etcd.url), &self.name).await.unwrap()
    }
}

async fn ping(addr: SocketAddr) -> Option<Pong> {
    let conn = NodeConnection::connect(addr).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), conn.call(Request::Ping)).await {
        Ok(Ok(Response::Pong(p))) => Some(p),
        _ => None,
    }
}

/// Records per shard on a store node, owned or not.
async fn inventory(addr: SocketAddr) -> HashMap<u32, u64> {
    let conn = NodeConnection::connect(addr).await.unwrap();
    match conn.call(Request::Inventory).await.unwrap() {
        Response::Inventory(counts) => counts.into_iter().collect(),
        other => panic!("inventory of {addr}: {other:?}"),
    }
}

/// A proxy's `INFO cluster` field.
async fn proxy_info(addr: SocketAddr, field: &str) -> String {
    let mut c = common::connect(addr, false).await;
    let info = common::text(&call(&mut c, &["INFO", "cluster"]).await);
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_default().trim().to_string()
}

/// Waits (bounded) until every proxy reports `field` = `want`.
async fn until_proxies(cluster: &EtcdCluster, field: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for addr in cluster.proxy_addrs() {
        loop {
            let got = proxy_info(addr, field).await;
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "proxy {addr}: {field} is {got:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------------

/// What one load worker saw.
#[derive(Default)]
struct Report {
    /// Every acknowledged SET: key → value.
    acked: HashMap<String, String>,
    /// Acknowledged INCRs per counter.
    incrs: [u64; COUNTERS],
    /// INCRs whose outcome the proxy could not tell (may or may not have applied).
    unknown: u64,
    /// Retryable errors seen (and retried).
    retried: u64,
    /// Anything else: a wrong value, a non-retryable error.
    failures: Vec<String>,
    ops: u64,
}

struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Report>>,
}

impl Load {
    /// `workers` clients, each alternating between the proxies: SET of a new key, INCR of a shared
    /// counter, and a GET (through the other proxy) of the key it wrote last.
    fn start(proxies: Vec<SocketAddr>, workers: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let (stop, proxies, tag) = (stop.clone(), proxies.clone(), tag.to_string());
                tokio::spawn(async move { worker(w, tag, proxies, stop).await })
            })
            .collect();
        Load { stop, workers }
    }

    async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Report::default();
        for w in self.workers {
            let r = w.await.expect("load worker panicked");
            total.acked.extend(r.acked);
            for (t, n) in total.incrs.iter_mut().zip(r.incrs) {
                *t += n;
            }
            total.unknown += r.unknown;
            total.retried += r.retried;
            total.failures.extend(r.failures);
            total.ops += r.ops;
        }
        total
    }
}

enum Outcome {
    Done(Value),
    /// The write may or may not have applied.
    Unknown,
    Failed(String),
}

/// Runs a command, retrying retryable errors (they mean nothing was applied, except an unknown
/// outcome, which is returned as such) for up to 30 s.
async fn run(c: &mut MultiplexedConnection, args: &[&str], report: &mut Report) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_call(c, args).await {
            Ok(v) if error_text(&v).is_some_and(|e| e.contains("outcome unknown")) => return Outcome::Unknown,
            Ok(v) if is_retryable_error(&v) && Instant::now() < deadline => {
                report.retried += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(v) if error_text(&v).is_some() => return Outcome::Failed(format!("{args:?}: {v:?}")),
            Ok(v) => return Outcome::Done(v),
            Err(e) => return Outcome::Failed(format!("{args:?}: connection error {e}")),
        }
    }
}

async fn worker(id: usize, tag: String, proxies: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> Report {
    let mut conns = Vec::new();
    for p in &proxies {
        conns.push(common::connect(*p, false).await);
    }
    let mut r = Report::default();
    let mut last: Option<(String, String)> = None;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) && i < 100_000 {
        let (here, there) = (i % conns.len(), (i + 1) % conns.len());
        let key = format!("{tag}:{id}:{i}");
        let value = format!("value-{id}-{i}-{}", "x".repeat(i % 50));
        match run(&mut conns[here], &["SET", &key, &value], &mut r).await {
            Outcome::Done(_) => {
                r.acked.insert(key.clone(), value.clone());
            }
            // A SET is idempotent: the checks below only ask acknowledged keys.
            Outcome::Unknown => {}
            Outcome::Failed(e) => r.failures.push(e),
        }
        let counter = format!("{tag}:counter:{}", i % COUNTERS);
        match run(&mut conns[here], &["INCR", &counter], &mut r).await {
            Outcome::Done(Value::Int(_)) => r.incrs[i % COUNTERS] += 1,
            Outcome::Done(v) => r.failures.push(format!("INCR {counter}: {v:?}")),
            Outcome::Unknown => r.unknown += 1,
            Outcome::Failed(e) => r.failures.push(e),
        }
        if let Some((k, v)) = &last {
            match run(&mut conns[there], &["GET", k], &mut r).await {
                Outcome::Done(got) if got == common::bulk(v) => {}
                Outcome::Done(got) => r.failures.push(format!("GET {k}: {got:?}, acknowledged {v:?}")),
                Outcome::Unknown => r.failures.push(format!("GET {k}: outcome unknown?")),
                Outcome::Failed(e) => r.failures.push(e),
            }
        }
        if r.acked.contains_key(&key) {
            last = Some((key, value));
        }
        r.ops += 3;
        i += 1;
    }
    r
}

/// Every acknowledged write reads back through every proxy, and each counter equals its acknowledged
/// INCRs.
async fn verify(cluster: &EtcdCluster, report: &Report, tag: &str) {
    check(cluster, report, tag, false).await
}

/// [`verify`] after a node froze mid-load: an INCR whose commit met the frozen node may end with an
/// unknown outcome (as after a timeout from Redis), so a counter may also hold those.
async fn verify_after_a_freeze(cluster: &EtcdCluster, report: &Report, tag: &str) {
    check(cluster, report, tag, true).await
}

async fn check(cluster: &EtcdCluster, report: &Report, tag: &str, unknown_allowed: bool) {
    assert!(
        report.failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    if !unknown_allowed {
        assert_eq!(report.unknown, 0, "INCRs with an unknown outcome");
    }
    assert!(report.acked.len() > 100, "the load did too little: {} writes", report.acked.len());
    for addr in cluster.proxy_addrs() {
        let mut c = common::connect(addr, false).await;
        let mut scratch = Report::default();
        for (k, v) in &report.acked {
            match run(&mut c, &["GET", k], &mut scratch).await {
                Outcome::Done(got) => assert_eq!(got, common::bulk(v), "acknowledged {k} via {addr}"),
                _ => panic!("GET {k} via {addr} failed"),
            }
        }
        for (n, want) in report.incrs.iter().enumerate() {
            let counter = format!("{tag}:counter:{n}");
            match run(&mut c, &["GET", &counter], &mut scratch).await {
                Outcome::Done(got) if unknown_allowed => {
                    let n: u64 = common::text(&got).parse().unwrap_or_else(|_| panic!("{counter}: {got:?}"));
                    assert!(
                        (*want..=want + report.unknown).contains(&n),
                        "{counter} via {addr}: {n}, acknowledged {want} (+ {} unknown)",
                        report.unknown
                    );
                }
                Outcome::Done(got) => assert_eq!(got, common::bulk(&want.to_string()), "{counter} via {addr}"),
                _ => panic!("GET {counter} via {addr} failed"),
            }
        }
    }
    eprintln!(
        "verified {} acknowledged writes and {} INCRs ({} ops, {} retryable errors retried, {} unknown outcomes)",
        report.acked.len(),
        report.incrs.iter().sum::<u64>(),
        report.ops,
        report.retried,
        report.unknown
    );
}

/// Preloads `n` keys so that the copy has something to move.
async fn preload(cluster: &EtcdCluster, n: usize) -> HashMap<String, String> {
    let mut c = common::connect(cluster.proxy_addrs()[0], false).await;
    let mut written = HashMap::new();
    for i in 0..n {
        let (k, v) = (format!("pre:{i}"), format!("{i}:{}", "p".repeat(200)));
        assert_eq!(call(&mut c, &["SET", &k, &v]).await, Value::Okay);
        written.insert(k, v);
    }
    written
}

/// The shards a store node holds any record of.
async fn held_shards(addr: SocketAddr) -> Vec<u32> {
    let mut s: Vec<u32> = inventory(addr).await.into_keys().collect();
    s.sort();
    s
}

/// Waits (bounded) until each store node holds records of no shard outside the ones it owns.
async fn until_dropped(addrs: &[(String, SocketAddr, Vec<u32>)]) {
    let deadline = Instant::now() + Duration::from_millis(DROP_GRACE_MS) + Duration::from_secs(20);
    for (name, addr, owned) in addrs {
        loop {
            let stray: Vec<u32> = held_shards(*addr).await.into_iter().filter(|s| !owned.contains(s)).collect();
            if stray.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{name} still holds records of shards it gave away: {stray:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The shards a store node serves to proxies now: those a one-record scan is not refused for.
async fn served_shards(addr: SocketAddr) -> Vec<u32> {
    let conn = NodeConnection::connect(addr).await.unwrap();
    let mut served = Vec::new();
    for shard in 0..common::SHARDS {
        let scan = Request::Scan(vesta_proto::Scan {
            shard_from: shard,
            shard_to: shard + 1,
            after: None,
            limit: 1,
            namespace: None,
            include_dead: false,
            want_values: false,
        });
        if matches!(conn.call(scan).await.unwrap(), Response::Scan(_)) {
            served.push(shard);
        }
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_under_load_with_a_resumed_redistribution_then_scale_in() {
    let mut cluster = EtcdCluster::start("scale");
    let preloaded = preload(&cluster, 3000).await;
    let old: Vec<String> = (1..=3).map(|z| format!("z{z}a")).collect();
    let before: Vec<Vec<u32>> =
        futures::future::join_all(old.iter().map(|n| served_shards(cluster.store_addr(n)))).await;
    assert!(before.iter().all(|s| s.len() == common::SHARDS as usize), "one node per zone serves every shard");

    let load = Load::start(cluster.proxy_addrs(), 4, "out");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Three new nodes, one per zone; they serve nothing until the redistribution hands them shards.
    let mut new_nodes = Vec::new();
    for z in 1..=3 {
        let name = format!("z{z}b");
        let addr = cluster.add_store(&name);
        assert!(served_shards(addr).await.is_empty(), "{name} serves nothing before add-node");
        new_nodes.push(format!("zone{z}/{name}@{addr}"));
    }
    let mut add_args: Vec<&str> = vec!["add-node"];
    add_args.extend(new_nodes.iter().map(String::as_str));
    let dry = cluster.admin(&[&add_args[..], &["--dry-run"]].concat());
    assert!(dry.status.success() && stdout(&dry).contains("96 shard replicas to move"), "{}", stdout(&dry));

    // Slowly, so that it can be killed halfway.
    let mut slow = cluster.admin_background(&[&add_args[..], &["--max-rate-kb", "40", "--parallel", "2"]].concat());
    let deadline = Instant::now() + Duration::from_secs(60);
    let halfway = loop {
        let status = stdout(&cluster.admin(&["status"]));
        // The progress line: `[###---] DONE/TOTAL shards  …`.
        let copied = status.lines().find_map(|l| {
            let (done, rest) = l.strip_prefix('[')?.split_once("] ")?.1.split_once('/')?;
            Some((done.parse::<u64>().ok()?, rest.split_whitespace().next()?.parse::<u64>().ok()?))
        });
        if let Some((done, total)) = copied {
            if done >= total / 4 && done < total {
                break done;
            }
        }
        assert!(Instant::now() < deadline, "the copy never got a quarter done: {status}");
        assert!(slow.try_wait().unwrap().is_none(), "the rate-limited add-node finished too early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    slow.kill().unwrap();
    slow.wait().unwrap();
    eprintln!("killed add-node after {halfway} of 96 shard replicas");
    let status = stdout(&cluster.admin(&["status"]));
    assert!(status.contains("phase: copying"), "{status}");
    let show = stdout(&cluster.admin(&["show"]));
    assert!(show.contains("redistribution running"), "{show}");

    // Resumed with the same arguments: it carries on from the checkpoints.
    let resumed = cluster.admin(&add_args);
    assert!(resumed.status.success(), "resumed add-node failed");
    let out = stdout(&resumed);
    assert!(out.contains("resuming the running redistribution"), "{out}");
    assert!(out.contains("published shard map version 2"), "{out}");

    // The map change reached every proxy and every store node.
    until_proxies(&cluster, "vesta_map_version", "2").await;
    for (name, (addr, _)) in &cluster.stores {
        let pong = ping(*addr).await.unwrap_or_else(|| panic!("{name} does not answer"));
        assert_eq!(pong.map_version, 2, "{name}");
    }
    let show = stdout(&cluster.admin(&["show"]));
    assert!(show.contains("map version 2") && !show.contains("redistribution running"), "{show}");

    // Each zone is split in two; the new nodes serve their half, the old ones no longer do and, after
    // their grace period, hold nothing of it.
    let mut owners = Vec::new();
    for z in 1..=3 {
        let (a, b) = (format!("z{z}a"), format!("z{z}b"));
        let (sa, sb) = (served_shards(cluster.store_addr(&a)).await, served_shards(cluster.store_addr(&b)).await);
        assert_eq!(sa.len() + sb.len(), common::SHARDS as usize, "zone{z}: {sa:?} / {sb:?}");
        assert_eq!((sa.len(), sb.len()), (32, 32), "zone{z} is balanced");
        assert!(sa.iter().all(|s| !sb.contains(s)));
        owners.push((a.clone(), cluster.store_addr(&a), sa));
        owners.push((b.clone(), cluster.store_addr(&b), sb));
    }
    until_dropped(&owners).await;
    for (name, addr, owned) in owners.iter().filter(|(n, _, _)| n.ends_with('b')) {
        let held = held_shards(*addr).await;
        assert!(held.len() >= owned.len() * 9 / 10, "{name} received its shards' records: holds {held:?}");
    }
    // Preloaded records of moved shards are on the new nodes, read directly.
    for (k, v) in preloaded.iter().take(300) {
        let shard = vesta_proto::shard::shard_of(k.as_bytes(), common::SHARDS);
        for (name, addr, owned) in &owners {
            if owned.contains(&shard) {
                let got = common::read_node(*addr, b"0", k.as_bytes()).await.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(got.map(|r| r.value), Some(bytes::Bytes::from(v.clone())), "{k} on {name}");
            }
        }
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    // Scale in: the new nodes leave again; their shards go back.
    let removed = cluster.admin(&["remove-node", "z1b", "z2b", "z3b"]);
    assert!(removed.status.success(), "remove-node failed");
    assert!(stdout(&removed).contains("published shard map version 3"));
    until_proxies(&cluster, "vesta_map_version", "3").await;
    for name in &old {
        assert_eq!(
            served_shards(cluster.store_addr(name)).await.len(),
            common::SHARDS as usize,
            "{name} serves all again"
        );
    }
    let gone: Vec<(String, SocketAddr, Vec<u32>)> =
        (1..=3).map(|z| (format!("z{z}b"), cluster.store_addr(&format!("z{z}b")), Vec::new())).collect();
    until_dropped(&gone).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = load.stop().await;
    verify(&cluster, &report, "out").await;
    let mut c = common::connect(cluster.proxy_addrs()[1], false).await;
    for (k, v) in preloaded.iter().step_by(7) {
        assert_eq!(call(&mut c, &["GET", k]).await, common::bulk(v), "preloaded {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zone_maintenance_under_load() {
    let mut cluster = EtcdCluster::start("maint");
    let load = Load::start(cluster.proxy_addrs(), 4, "zm");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let down = cluster.admin(&["zone", "down", "zone2"]);
    assert!(down.status.success());
    until_proxies(&cluster, "vesta_zones_down", "zone2").await;
    // The proxies no longer send to zone2: its node can go away without a single failed request.
    cluster.kill_store("z2a");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let show = stdout(&cluster.admin(&["show", "--timeout-ms", "300"]));
    assert!(show.contains("zone zone2 (down)") && show.contains("DOWN"), "{show}");

    // Everything acknowledged while zone2 was away must end up on it after `zone up`'s repair.
    let mid = Load::start(cluster.proxy_addrs(), 2, "zm-mid");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let while_down = mid.stop().await;
    cluster.start_store("z2a");
    let up = cluster.admin(&["zone", "up", "zone2"]);
    assert!(up.status.success(), "zone up failed");
    assert!(stdout(&up).contains("zone zone2 repaired"), "{}", stdout(&up));
    until_proxies(&cluster, "vesta_zones_down", "").await;
    let dry = stdout(&cluster.admin(&["repair", "zone2", "--dry-run"]));
    assert!(dry.contains(&format!("would repair zone zone2: {} shards", common::SHARDS)), "{dry}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = load.stop().await;
    verify(&cluster, &report, "zm").await;
    verify(&cluster, &while_down, "zm-mid").await;
    let z2 = cluster.store_addr("z2a");
    let mut missing = Vec::new();
    for (k, v) in &while_down.acked {
        match common::read_node(z2, b"0", k.as_bytes()).await {
            Ok(Some(r)) if r.value == v.as_bytes() => {}
            other => missing.push(format!("{k}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "zone2 was not repaired: {} keys, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}

/// A source node falls silent (here: SIGSTOP, as a partition from etcd and from `vesta admin` would)
/// right after its shards were copied, while the copy of another zone goes on: its last view of the
/// redistribution says "copying", so it would go on serving the moving shards if it could. `vesta
/// admin` must not publish the new map while the node is registered in etcd, and goes on once the
/// registration expired; the node, back, serves none of the moved shards from its stale view (its
/// fence closed long ago, and it reads the cluster again before serving them). Under load through two
/// proxies, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_source_holds_up_the_publish_until_its_registration_expires() {
    // The registration must outlive the rest of the copy and a ping timeout (2 s) by a margin, so that
    // the admin meets it: a keep-alive goes out every (8 − 0.8 − 0.6)/3 = 2.2 s, so it lasts at least
    // 5.8 s after the stop.
    let mut cluster = EtcdCluster::start_with("silent", &["--ownership-ttl-ms", "8000"]);
    let preloaded = preload(&cluster, 2000).await;
    let load = Load::start(cluster.proxy_addrs(), 4, "sil");
    let (z1b, z2b) = (cluster.add_store("z1b"), cluster.add_store("z2b"));
    let log = cluster.dir.path().join("add-node.log");
    let (n1, n2) = (format!("zone1/z1b@{z1b}"), format!("zone2/z2b@{z2b}"));
    // One shard at a time and slowly: zone1's moves come first, zone2's take a second or so after them.
    let mut add = cluster.admin_logged(&["add-node", &n1, &n2, "--max-rate-kb", "200", "--parallel", "1"], &log);
    let admin_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The moment z1a's shards are all copied and zone2's are not: z1a falls silent.
    let mut etcd = cluster.etcd_store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let plan = loop {
        let state = etcd.load().await.unwrap().unwrap();
        if let Some(plan) = state.redistribution.filter(|p| p.phase == Phase::Copying) {
            let progress = etcd.progress().await.unwrap();
            let done = |m: &&vesta_cluster::shard_map::Move| progress.get(&progress_leaf(m)).is_some_and(|p| p.done);
            if plan.moves.iter().filter(|m| m.from == "z1a").all(|m| done(&m)) {
                assert!(!plan.moves.iter().all(|m| done(&m)), "zone2's copy ended too soon: slow it down");
                break plan;
            }
        }
        assert!(Instant::now() < deadline, "z1a's shards were never copied:\n{}", admin_log());
        assert!(add.try_wait().unwrap().is_none(), "add-node ended early:\n{}", admin_log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.signal_store("z1a", "STOP");
    let stopped = Instant::now();
    eprintln!("z1a stopped with its shards copied; zone2 still copying");

    // One read per round, so the map and the registrations are seen at one etcd revision.
    let mut waited_on_registered = false;
    loop {
        let state = etcd.load().await.unwrap().unwrap();
        let registered = state.alive.contains_key("z1a");
        if state.map.version == 2 {
            assert!(!registered, "the map was published while z1a was still registered (it may still serve)");
            break;
        }
        waited_on_registered |= registered && state.redistribution.is_some_and(|p| p.phase == Phase::Handoff);
        assert!(stopped.elapsed() < Duration::from_secs(60), "never published:\n{}", admin_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("published {:?} after z1a stopped", stopped.elapsed());
    assert!(waited_on_registered, "the handoff never had to wait for a registered z1a (copy too slow?)");

    // z1a comes back. Its view still says "copying" (it serves the moving shards and forwards them),
    // but not one of them may be served from it: not while it is fenced, not after it has read the
    // new map.
    let z1a = cluster.store_addr("z1a");
    let moved: Vec<(String, u32)> = preloaded
        .keys()
        .map(|k| (k.clone(), vesta_proto::shard::shard_of(k.as_bytes(), common::SHARDS)))
        .filter(|(_, shard)| plan.moves.iter().any(|m| m.from == "z1a" && m.shard == *shard))
        .take(20)
        .collect();
    assert!(!moved.is_empty());
    let conn = NodeConnection::connect(z1a).await.unwrap();
    cluster.signal_store("z1a", "CONT");
    let resumed = Instant::now();
    loop {
        for (key, shard) in &moved {
            let target = vesta_proto::KeyRef {
                shard: *shard,
                namespace: bytes::Bytes::from_static(b"0"),
                key: bytes::Bytes::from(key.clone()),
            };
            let read = Request::Read(vesta_proto::Read { target, want_value: true });
            let got = tokio::time::timeout(Duration::from_secs(10), conn.call(read)).await.unwrap().unwrap();
            assert_eq!(got.status(), vesta_proto::Status::NotOwner, "z1a served {key} of moved shard {shard}: {got:?}");
        }
        if ping(z1a).await.is_some_and(|p| p.map_version == 2) {
            break;
        }
        assert!(resumed.elapsed() < Duration::from_secs(30), "z1a never took up map version 2");
    }
    // It serves the shards it kept.
    let kept = preloaded
        .iter()
        .find(|(k, _)| plan.moves.iter().all(|m| m.shard != vesta_proto::shard::shard_of(k.as_bytes(), common::SHARDS)))
        .expect("a key in a shard that stays");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match common::read_node(z1a, b"0", kept.0.as_bytes()).await {
            Ok(Some(r)) if r.value == kept.1.as_bytes() => break,
            other => assert!(Instant::now() < deadline, "z1a does not serve {} it kept: {other:?}", kept.0),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = add.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "add-node does not end:\n{}", admin_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = admin_log();
    eprintln!("$ vesta admin add-node …\n{out}");
    assert!(status.success(), "add-node failed:\n{out}");
    assert!(out.contains("still registered in etcd"), "{out}");
    assert!(out.contains("its etcd registration has expired"), "{out}");
    assert!(out.contains("published shard map version 2"), "{out}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    verify_after_a_freeze(&cluster, &report, "sil").await;
    let mut c = common::connect(cluster.proxy_addrs()[1], false).await;
    for (k, v) in preloaded.iter().step_by(5) {
        assert_eq!(call(&mut c, &["GET", k]).await, common::bulk(v), "preloaded {k}");
    }
}
