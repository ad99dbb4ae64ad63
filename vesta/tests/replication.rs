//! Cross-site replication between whole sites made of processes: each site has three RocksDB stores
//! logging their commits (`--changelog-origin`), two proxies with the site's origin, and its first
//! proxy ships to the other sites and receives from them. Clients are spread over both proxies of a
//! site.
//!
//! The sites are compared key by key through their proxies (value, and whether a TTL is set).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{error_text, free_port, try_call, Cluster, ClusterOptions};
use redis::aio::MultiplexedConnection;
use redis::Value;

struct Sites {
    sites: Vec<Cluster>,
    /// Each site's replication listener port.
    ports: Vec<u16>,
}

/// `n` sites, origins 1..=n, each replicating to every other.
fn start_sites(n: usize) -> Sites {
    start_sites_with(n, |_| (Vec::new(), Vec::new()))
}

/// [`start_sites`], with more flags for the stores and for the proxies of site `i` (0-based).
fn start_sites_with(n: usize, extra: impl Fn(usize) -> (Vec<String>, Vec<String>)) -> Sites {
    start_sites_shipping(n, false, extra)
}

/// The first proxy of each site listens; it ships, or (`all_ship`) every proxy of the site is a
/// candidate for shipping and one of them ships at a time.
fn start_sites_shipping(n: usize, all_ship: bool, extra: impl Fn(usize) -> (Vec<String>, Vec<String>)) -> Sites {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let sites = (0..n)
        .map(|i| {
            let origin = (i + 1).to_string();
            let mut shipping = vec!["--repl-ship".to_string()];
            for (j, port) in ports.iter().enumerate().filter(|(j, _)| *j != i) {
                shipping.extend(["--repl-peer".into(), format!("site{}={}@127.0.0.1:{port}", j + 1, j + 1)]);
            }
            let mut first = vec!["--repl-listen".to_string(), format!("127.0.0.1:{}", ports[i])];
            let mut every = Vec::new();
            if all_ship {
                every.extend(shipping);
            } else {
                first.extend(shipping);
            }
            let mut store_flags = vec!["--changelog-origin".into(), origin.clone()];
            let mut proxy_flags = vec!["--origin".into(), origin];
            let (more_store, more_proxy) = extra(i);
            store_flags.extend(more_store);
            proxy_flags.extend(more_proxy);
            proxy_flags.extend(every);
            Cluster::start_with(ClusterOptions {
                proxies: 2,
                store_flags,
                proxy_flags,
                first_proxy_flags: first,
                ..ClusterOptions::default()
            })
        })
        .collect();
    Sites { sites, ports }
}

/// What a key reads as in one site.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyState {
    value: Option<String>,
    has_ttl: bool,
}

async fn scan_keys(c: &mut MultiplexedConnection) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..10_000 {
        let reply = try_call(c, &["SCAN", &cursor, "COUNT", "1000"]).await.expect("scan");
        let Value::Array(parts) = reply else { panic!("SCAN: {reply:?}") };
        let [Value::BulkString(next), Value::Array(found)] = &parts[..] else { panic!("SCAN: {parts:?}") };
        for k in found {
            if let Value::BulkString(k) = k {
                keys.insert(String::from_utf8_lossy(k).into_owned());
            }
        }
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            return keys;
        }
    }
    panic!("SCAN did not finish");
}

async fn key_state(c: &mut MultiplexedConnection, key: &str) -> KeyState {
    let value = match try_call(c, &["GET", key]).await.expect("get") {
        Value::Nil => None,
        Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        other => panic!("GET {key}: {other:?}"),
    };
    let has_ttl = matches!(try_call(c, &["PTTL", key]).await.expect("pttl"), Value::Int(ms) if ms >= 0);
    let has_ttl = has_ttl && value.is_some();
    KeyState { value, has_ttl }
}

/// Keys on which the sites disagree, with each site's state.
async fn differences(addrs: &[SocketAddr]) -> BTreeMap<String, Vec<KeyState>> {
    let mut conns = Vec::new();
    let mut keys = BTreeSet::new();
    for &a in addrs {
        let mut c = common::connect(a, false).await;
        keys.extend(scan_keys(&mut c).await);
        conns.push(c);
    }
    let mut diff = BTreeMap::new();
    for k in keys {
        let mut states = Vec::new();
        for c in conns.iter_mut() {
            states.push(key_state(c, &k).await);
        }
        if states.windows(2).any(|w| w[0] != w[1]) {
            diff.insert(k, states);
        }
    }
    diff
}

/// Waits (bounded) until the sites agree on every key; panics with what still differs.
async fn converge(addrs: &[SocketAddr], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let diff = differences(addrs).await;
        if diff.is_empty() {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let shown: Vec<_> = diff.iter().take(10).collect();
            panic!("{} keys still differ after {limit:?}, e.g. {shown:?}", diff.len());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// SET/INCR/DEL/PEXPIRE on a few keys until `until`; returns how many commands were acknowledged.
async fn load(addr: SocketAddr, id: usize, keys: usize, until: Instant) -> u64 {
    let mut c = common::connect(addr, false).await;
    let mut acked = 0;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let key = format!("k{}", (n as usize * 7 + id) % keys);
        let args: Vec<String> = match n % 5 {
            0 | 1 => vec!["SET".into(), key, format!("c{id}-{n}")],
            2 => vec!["INCR".into(), format!("counter-{id}")],
            3 => vec!["DEL".into(), key],
            _ => vec!["PEXPIRE".into(), key, "600000".into()],
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match try_call(&mut c, &refs).await {
            Ok(v) if error_text(&v).is_none() => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("client {id}: connection-level error: {e}"),
        }
    }
    acked
}

/// `vesta admin repl ARGS`: (exit code, stdout).
fn admin_repl(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(vesta_testkit::vesta_bin())
        .arg("admin")
        .arg("repl")
        .args(args)
        .output()
        .expect("run vesta admin repl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

/// `vesta admin repl diff` over one proxy of each site.
fn repl_diff(sites: &[&Cluster]) -> (i32, String) {
    let mut args = vec!["diff".to_string()];
    for (i, s) in sites.iter().enumerate() {
        args.extend(["--site".to_string(), format!("site{}={}", i + 1, s.proxy_addr())]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    admin_repl(&args)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_one_site_reach_the_other_and_the_sites_converge() {
    let s = start_sites(2);
    let (a, b) = (&s.sites[0], &s.sites[1]);
    let until = Instant::now() + Duration::from_secs(6);
    let clients: Vec<_> = (0..4).map(|i| tokio::spawn(load(a.proxy_addr_for(i), i, 50, until))).collect();

    // A probe: a write in A, then how long until B reads it (through B's other proxy than the receiver).
    let mut in_a = common::connect(a.proxy_addr_for(1), false).await;
    let mut in_b = common::connect(b.proxy_addr_for(1), false).await;
    let mut lags = Vec::new();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let key = format!("probe{n}");
        assert_eq!(try_call(&mut in_a, &["SET", &key, "here"]).await.unwrap(), Value::Okay);
        let written = Instant::now();
        loop {
            if try_call(&mut in_b, &["GET", &key]).await.unwrap() == Value::BulkString(b"here".to_vec()) {
                lags.push(written.elapsed());
                break;
            }
            assert!(written.elapsed() < Duration::from_secs(30), "{key} did not reach site 2 in 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut acked = 0;
    for c in clients {
        acked += c.await.unwrap();
    }
    lags.sort();
    println!(
        "replication lag under load ({acked} commands acknowledged in site 1, {} probes): p50 {:?}, p99 {:?}, max {:?}",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
    let took = converge(&[a.proxy_addr(), b.proxy_addr()], Duration::from_secs(30)).await;
    println!("sites equal {took:?} after the load stopped");
    let (code, out) = repl_diff(&[a, b]);
    assert!(code == 0 && out.contains("in 2 sites: 0 differ"), "exit {code}: {out}");

    let info = match try_call(&mut in_a, &["INFO", "replication"]).await.unwrap() {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    // INFO of the second proxy: it neither ships nor listens.
    assert!(info.contains("role:master"), "{info}");
    let mut shipper = common::connect(a.proxy_addr(), false).await;
    let info = match try_call(&mut shipper, &["INFO", "replication"]).await.unwrap() {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    println!("{info}");
    assert!(info.contains("vesta_repl_origin:1") && info.contains("vesta_repl_shipping:1"), "{info}");
    assert!(info.contains("name=site2,origin=2,state=connected"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_the_same_keys_in_two_sites_converge() {
    let s = start_sites(2);
    let until = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for (site, cluster) in s.sites.iter().enumerate() {
        for i in 0..3 {
            // Same key space in both sites; INCR counters are per client (adding up across sites is a
            // counter's own rule, tested on its own).
            let id = site * 10 + i;
            clients.push(tokio::spawn(load(cluster.proxy_addr_for(i), id, 20, until)));
        }
    }
    for c in clients {
        c.await.unwrap();
    }
    let addrs: Vec<SocketAddr> = s.sites.iter().map(|c| c.proxy_addr()).collect();
    let took = converge(&addrs, Duration::from_secs(30)).await;
    println!("two sites writing the same keys: equal {took:?} after the writes stopped");
    let (code, out) = repl_diff(&[&s.sites[0], &s.sites[1]]);
    assert!(code == 0 && out.contains("0 differ"), "exit {code}: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_the_same_keys_in_three_sites_converge() {
    let s = start_sites(3);
    let until = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for (site, cluster) in s.sites.iter().enumerate() {
        for i in 0..2 {
            clients.push(tokio::spawn(load(cluster.proxy_addr_for(i), site * 10 + i, 20, until)));
        }
    }
    for c in clients {
        c.await.unwrap();
    }
    let addrs: Vec<SocketAddr> = s.sites.iter().map(|c| c.proxy_addr()).collect();
    let took = converge(&addrs, Duration::from_secs(30)).await;
    let sites: Vec<&Cluster> = s.sites.iter().collect();
    let (code, out) = repl_diff(&sites);
    assert!(code == 0 && out.contains("in 3 sites: 0 differ"), "exit {code}: {out}");
    println!("three sites writing the same keys: equal {took:?} after the writes stopped; {}", out.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_nx_can_win_in_two_sites_and_both_converge_to_one_winner() {
    let s = start_sites(2);
    let shippers: Vec<String> = s.sites.iter().map(|c| c.proxy_addr().to_string()).collect();
    for p in &shippers {
        assert_eq!(admin_repl(&["pause", "--proxy", p]).0, 0);
    }
    // Within the replication lag (here: paused), each site has its own NX winner.
    let mut winners = Vec::new();
    for (i, site) in s.sites.iter().enumerate() {
        let mut c = common::connect(site.proxy_addr_for(1), false).await;
        let owner = format!("client in site {}", i + 1);
        assert_eq!(try_call(&mut c, &["SET", "lock", &owner, "NX"]).await.unwrap(), Value::Okay);
        // Within one site, NX has one winner.
        assert_eq!(try_call(&mut c, &["SET", "lock", "another", "NX"]).await.unwrap(), Value::Nil);
        winners.push(owner);
    }
    for p in &shippers {
        assert_eq!(admin_repl(&["resume", "--proxy", p]).0, 0);
    }
    let addrs: Vec<SocketAddr> = s.sites.iter().map(|c| c.proxy_addr()).collect();
    converge(&addrs, Duration::from_secs(30)).await;
    let mut c = common::connect(addrs[0], false).await;
    let held = try_call(&mut c, &["GET", "lock"]).await.unwrap();
    assert!(winners.iter().any(|w| held == Value::BulkString(w.clone().into_bytes())), "{held:?}");
    println!("both sites' SET NX succeeded; both now hold {held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_paused_and_resumed_and_diff_shows_what_differs() {
    let mut s = start_sites(2);
    let shipper = s.sites[0].proxy_addr().to_string();
    let (code, out) = admin_repl(&["pause", "--proxy", &shipper, "--peer", "site2"]);
    assert_eq!((code, out.trim()), (0, "paused shipping to 1 peer site(s)"));
    let (code, _) = admin_repl(&["pause", "--proxy", &shipper, "--peer", "nowhere"]);
    assert_ne!(code, 0, "no such peer");

    let mut in_a = common::connect(s.sites[0].proxy_addr_for(1), false).await;
    for i in 0..20 {
        assert_eq!(try_call(&mut in_a, &["SET", &format!("p{i}"), "v"]).await.unwrap(), Value::Okay);
    }
    assert_eq!(try_call(&mut in_a, &["SET", "ttl", "v", "PX", "600000"]).await.unwrap(), Value::Okay);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, status) = admin_repl(&["status", "--proxy", &shipper]);
    assert!(code == 0 && status.contains("state=paused") && status.contains("name=site2"), "{status}");
    let (code, out) = repl_diff(&[&s.sites[0], &s.sites[1]]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("21 keys compared in 2 sites: 21 differ"), "{out}");
    assert!(out.contains("ttl: site1 \"v\" (ttl ") && out.contains("| site2 absent"), "{out}");

    // A pause outlives the shipping proxy: restarted, it stays paused.
    s.sites[0].kill_proxy(0);
    s.sites[0].restart_proxy(0);
    let shipper = s.sites[0].proxy_addr().to_string();
    // It ships again once the killed process's shipping lease has run out (5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, status) = admin_repl(&["status", "--proxy", &shipper]);
        if status.contains("state=") {
            break status;
        }
        assert!(Instant::now() < deadline, "the restarted proxy never ships: {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(status.contains("state=paused"), "{status}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, out) = repl_diff(&[&s.sites[0], &s.sites[1]]);
    assert!(code == 1 && out.contains("21 differ"), "{out}");

    let (a, b) = (&s.sites[0], &s.sites[1]);
    let (code, _) = admin_repl(&["resume", "--proxy", &shipper]);
    assert_eq!(code, 0);
    converge(&[a.proxy_addr(), b.proxy_addr()], Duration::from_secs(30)).await;
    let (code, out) = repl_diff(&[a, b]);
    assert!(code == 0 && out.contains("0 differ"), "exit {code}: {out}");
    let (_, status) = admin_repl(&["status", "--proxy", &shipper]);
    assert!(status.contains("state=connected"), "{status}");
}

/// What clients were told: the last acknowledged value per key (each key has one writer).
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

async fn writer(addr: SocketAddr, id: usize, until: Instant, acked: Acked) {
    let mut n = 0u64;
    let mut c = common::connect(addr, false).await;
    while Instant::now() < until {
        n += 1;
        let key = format!("w{id}-{}", n % 40);
        let value = format!("{n}");
        match try_call(&mut c, &["SET", &key, &value]).await {
            Ok(Value::Okay) => {
                acked.lock().unwrap().insert(key, value);
            }
            // Refused or outcome unknown (a store was killed): not acknowledged.
            Ok(_) => {}
            // The proxy this client used was killed: carry on through another one.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(again) = common::try_connect(addr, false).await {
                    c = again;
                }
            }
        }
    }
}

/// Waits (bounded by `limit` from now) until `site` reads every acknowledged value.
async fn all_acknowledged_in(site: &Cluster, acked: &BTreeMap<String, String>, limit: Duration) {
    let mut c = common::connect(site.proxy_addr_for(1), false).await;
    let deadline = Instant::now() + limit;
    for (key, value) in acked {
        loop {
            let got = try_call(&mut c, &["GET", key]).await.unwrap();
            if got == Value::BulkString(value.clone().into_bytes()) {
                break;
            }
            assert!(Instant::now() < deadline, "the other site has {got:?} for {key}; {value} was acknowledged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_shipping_proxy_and_a_store_are_killed() {
    let mut s = start_sites(2);
    let acked: Acked = Arc::default();
    // Writers on site 1's second proxy (the first one, which ships, is killed).
    let run = |until| {
        let addr = s.sites[0].proxy_addr_for(1);
        (0..3).map(|i| tokio::spawn(writer(addr, i, until, acked.clone()))).collect::<Vec<_>>()
    };
    let writers = run(Instant::now() + Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.sites[0].kill_proxy(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.sites[0].kill_store(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.sites[0].restart_proxy(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.sites[0].restart_store(1);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "too few writes acknowledged: {}", acked.len());
    all_acknowledged_in(&s.sites[1], &acked, Duration::from_secs(30)).await;
    let addrs: Vec<SocketAddr> = s.sites.iter().map(|c| c.proxy_addr()).collect();
    converge(&addrs, Duration::from_secs(30)).await;
    println!("{} acknowledged keys, all in site 2", acked.len());
}

/// INCRBY on `keys` counters `rounds` times; returns what it added to each.
async fn incrementer(addr: SocketAddr, id: usize, keys: usize, rounds: usize) -> Vec<i64> {
    let mut c = common::connect(addr, false).await;
    let mut added = vec![0i64; keys];
    for n in 0..rounds {
        for (k, sum) in added.iter_mut().enumerate() {
            let by = ((id * 31 + n * 7 + k) % 19) as i64 - 6;
            let reply = try_call(&mut c, &["INCRBY", &format!("total{k}"), &by.to_string()]).await.unwrap();
            // Without faults every increment is acknowledged; one that is not would make the sum unknowable.
            assert!(matches!(reply, Value::Int(_)), "client {id}: INCRBY answered {reply:?}");
            *sum += by;
        }
    }
    added
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_in_three_sites_at_once_add_up_everywhere() {
    let s = start_sites(3);
    const KEYS: usize = 3;
    // A starting value set in site 1 and replicated before the increments begin: they build on it.
    let mut first = common::connect(s.sites[0].proxy_addr(), false).await;
    for k in 0..KEYS {
        assert_eq!(try_call(&mut first, &["SET", &format!("total{k}"), "1000"]).await.unwrap(), Value::Okay);
    }
    let addrs: Vec<SocketAddr> = s.sites.iter().map(|c| c.proxy_addr()).collect();
    converge(&addrs, Duration::from_secs(30)).await;

    let mut clients = Vec::new();
    for site in &s.sites {
        for i in 0..20 {
            clients.push(tokio::spawn(incrementer(site.proxy_addr_for(i), clients.len(), KEYS, 15)));
        }
    }
    let mut expected = [1000i64; KEYS];
    for c in clients {
        for (k, added) in c.await.unwrap().into_iter().enumerate() {
            expected[k] += added;
        }
    }
    let took = converge(&addrs, Duration::from_secs(30)).await;
    for (i, &addr) in addrs.iter().enumerate() {
        let mut c = common::connect(addr, false).await;
        for (k, want) in expected.iter().enumerate() {
            let got = try_call(&mut c, &["GET", &format!("total{k}")]).await.unwrap();
            assert_eq!(got, Value::BulkString(want.to_string().into_bytes()), "site {} total{k}", i + 1);
        }
    }
    println!("60 clients in three sites: every site holds the sums {expected:?}, {took:?} after the last increment");
}

/// How long site 2 is away in the outage test: `VESTA_REPL_OUTAGE_SECS` (the figure is 600; the
/// suite uses 15).
fn outage() -> Duration {
    let secs = std::env::var("VESTA_REPL_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15u64);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_away_while_the_other_takes_writes_and_loses_processes_misses_nothing() {
    let mut s = start_sites(2);
    let away = outage();
    // Site 2 goes away whole: every process killed.
    for i in 0..s.sites[1].proxy_count() {
        s.sites[1].kill_proxy(i);
    }
    for i in 0..s.sites[1].store_count() {
        s.sites[1].kill_store(i);
    }
    let acked: Acked = Arc::default();
    let until = Instant::now() + away;
    let addr = s.sites[0].proxy_addr_for(1);
    let writers: Vec<_> = (0..3).map(|i| tokio::spawn(writer(addr, i, until, acked.clone()))).collect();
    let counting = tokio::spawn(incrementer(addr, 99, 2, 40));
    // Meanwhile site 1 loses its shipping proxy, then a store node, each `kill -9`ed and restarted.
    tokio::time::sleep(away / 3).await;
    s.sites[0].kill_proxy(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.sites[0].restart_proxy(0);
    tokio::time::sleep(away / 3).await;
    s.sites[0].kill_store(2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.sites[0].restart_store(2);
    for w in writers {
        w.await.unwrap();
    }
    let added = counting.await.unwrap();

    for i in 0..s.sites[1].store_count() {
        s.sites[1].restart_store(i);
    }
    for i in 0..s.sites[1].proxy_count() {
        s.sites[1].restart_proxy(i);
    }
    let back = Instant::now();
    let acked = acked.lock().unwrap().clone();
    all_acknowledged_in(&s.sites[1], &acked, Duration::from_secs(60)).await;
    let mut in_b = common::connect(s.sites[1].proxy_addr_for(1), false).await;
    for (k, sum) in added.iter().enumerate() {
        let got = try_call(&mut in_b, &["GET", &format!("total{k}")]).await.unwrap();
        assert_eq!(got, Value::BulkString(sum.to_string().into_bytes()), "total{k} in site 2");
    }
    let caught_up = back.elapsed();
    let (code, out) = repl_diff(&[&s.sites[0], &s.sites[1]]);
    assert!(code == 0 && out.contains("0 differ"), "exit {code}: {out}");
    println!(
        "site 2 away {away:?}: {} acknowledged keys, every one there {caught_up:?} after it returned; diff: {}",
        acked.len(),
        out.trim()
    );
}

/// GET until it answers `want` (bounded); how long it took.
async fn read_until(c: &mut MultiplexedConnection, key: &str, want: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = try_call(c, &["GET", key]).await.unwrap();
        if got == Value::BulkString(want.as_bytes().to_vec()) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{key}: {got:?} after {limit:?}, waiting for {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_follows_another_wins_everywhere_though_one_site_runs_5_s_ahead() {
    // Site 1's clocks — proxies and stores — run 5 s ahead of site 2's.
    let s = start_sites_with(2, |i| {
        let ahead = if i == 0 { vec!["--clock-offset-ms".to_string(), "5000".into()] } else { vec![] };
        (ahead.clone(), ahead)
    });
    let mut in_a = common::connect(s.sites[0].proxy_addr_for(1), false).await;
    let mut in_b = common::connect(s.sites[1].proxy_addr_for(1), false).await;
    assert_eq!(try_call(&mut in_a, &["SET", "k", "first, in site 1"]).await.unwrap(), Value::Okay);
    // Stamped 5 s ahead of site 2's clocks: site 2's stores take it once their clocks are near the stamp.
    let arrived = read_until(&mut in_b, "k", "first, in site 1", Duration::from_secs(30)).await;

    // Read in site 2, then written in site 2: stamped after what was read, though site 2's clock is behind.
    let started = Instant::now();
    loop {
        match try_call(&mut in_b, &["SET", "k", "second, in site 2"]).await.unwrap() {
            Value::Okay => break,
            // Refused while the copy read is stamped further ahead than the drift bound; nothing written.
            v if error_text(&v).is_some_and(|e| e.contains("clock skew")) => {
                assert!(started.elapsed() < Duration::from_secs(30), "still refused: {v:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("SET in site 2: {other:?}"),
        }
    }
    let written_after = started.elapsed();
    let in_b_took = read_until(&mut in_b, "k", "second, in site 2", Duration::from_secs(30)).await;
    let in_a_took = read_until(&mut in_a, "k", "second, in site 2", Duration::from_secs(30)).await;
    let (code, out) = repl_diff(&[&s.sites[0], &s.sites[1]]);
    assert!(code == 0 && out.contains("0 differ"), "exit {code}: {out}");
    println!(
        "site 1 5 s ahead: its write reached site 2 after {arrived:?}; site 2's write went through after {written_after:?} \
         and won in site 2 ({in_b_took:?}) and in site 1 ({in_a_took:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_away_past_the_logs_bound_gets_a_full_sync() {
    // Site 1's logs keep 10 s of writes.
    let mut s = start_sites_with(2, |i| {
        let bound = if i == 0 { vec!["--repl-max-backlog-secs".to_string(), "10".into()] } else { vec![] };
        (Vec::new(), bound)
    });
    let shipper = s.sites[0].proxy_addr().to_string();
    let mut in_a = common::connect(s.sites[0].proxy_addr_for(1), false).await;
    for i in 0..50 {
        assert_eq!(try_call(&mut in_a, &["SET", &format!("k{i}"), "before"]).await.unwrap(), Value::Okay);
    }
    converge(&[s.sites[0].proxy_addr(), s.sites[1].proxy_addr()], Duration::from_secs(30)).await;

    // Site 2 goes away; site 1 overwrites half the keys, deletes the other half, adds more.
    for i in 0..s.sites[1].proxy_count() {
        s.sites[1].kill_proxy(i);
    }
    for i in 0..s.sites[1].store_count() {
        s.sites[1].kill_store(i);
    }
    for i in 0..50 {
        let k = format!("k{i}");
        let reply = if i < 25 {
            try_call(&mut in_a, &["SET", &k, "while away"]).await
        } else {
            try_call(&mut in_a, &["DEL", &k]).await
        };
        assert!(error_text(&reply.unwrap()).is_none());
        assert_eq!(try_call(&mut in_a, &["SET", &format!("new{i}"), "v"]).await.unwrap(), Value::Okay);
    }
    assert_eq!(try_call(&mut in_a, &["INCRBY", "count", "7"]).await.unwrap(), Value::Int(7));
    // Past the bound: the logs are trimmed without site 2's confirmation, and it needs a full sync.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, status) = admin_repl(&["status", "--proxy", &shipper]);
        if status.contains("state=needs_full_sync") {
            break;
        }
        assert!(Instant::now() < deadline, "site 2 never marked as needing a full sync: {status}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    for i in 0..s.sites[1].store_count() {
        s.sites[1].restart_store(i);
    }
    for i in 0..s.sites[1].proxy_count() {
        s.sites[1].restart_proxy(i);
    }
    let back = Instant::now();
    loop {
        let (_, status) = admin_repl(&["status", "--proxy", &shipper]);
        // The first full sync was site 2's first contact (a new peer starts with one); this is the second.
        if status.contains("full_syncs=2") && status.contains("state=connected") {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(90), "no full sync: {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let synced = back.elapsed();
    // Writes after the sync go through the logs again.
    assert_eq!(try_call(&mut in_a, &["SET", "after", "sync"]).await.unwrap(), Value::Okay);
    converge(&[s.sites[0].proxy_addr(), s.sites[1].proxy_addr()], Duration::from_secs(30)).await;
    let mut in_b = common::connect(s.sites[1].proxy_addr_for(1), false).await;
    assert_eq!(try_call(&mut in_b, &["GET", "k30"]).await.unwrap(), Value::Nil, "a delete made while away");
    assert_eq!(try_call(&mut in_b, &["GET", "k3"]).await.unwrap(), Value::BulkString(b"while away".to_vec()));
    assert_eq!(try_call(&mut in_b, &["GET", "count"]).await.unwrap(), Value::BulkString(b"7".to_vec()));
    let (code, out) = repl_diff(&[&s.sites[0], &s.sites[1]]);
    assert!(code == 0 && out.contains("0 differ"), "exit {code}: {out}");
    println!("site 2 back past the logs' bound: full sync done {synced:?} after it returned; {}", out.trim());
}

/// INFO replication of proxy `i` of `site`.
async fn replication_info(site: &Cluster, i: usize) -> String {
    let mut c = common::connect(site.proxy_addr_for(i), false).await;
    match try_call(&mut c, &["INFO", "replication"]).await.unwrap() {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_shipping_proxy_dies_another_takes_over_without_a_restart() {
    // Both proxies of site 1 are candidates; one ships.
    let mut s = start_sites_shipping(2, true, |_| (Vec::new(), Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let shipper = loop {
        let mut holders = Vec::new();
        for i in 0..2 {
            if replication_info(&s.sites[0], i).await.contains("vesta_repl_shipping:1") {
                holders.push(i);
            }
        }
        if holders.len() == 1 {
            break holders[0];
        }
        assert!(Instant::now() < deadline, "shipping proxies of site 1: {holders:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let standby = 1 - shipper;
    assert!(replication_info(&s.sites[0], standby).await.contains("vesta_repl_shipping:standby"));

    let acked: Acked = Arc::default();
    let addr = s.sites[0].proxy_addr_for(standby);
    let writers: Vec<_> =
        (0..3).map(|i| tokio::spawn(writer(addr, i, Instant::now() + Duration::from_secs(6), acked.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The shipper dies for good; it is not restarted.
    s.sites[0].kill_proxy(shipper);
    let killed = Instant::now();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    all_acknowledged_in(&s.sites[1], &acked, Duration::from_secs(60)).await;
    assert!(replication_info(&s.sites[0], standby).await.contains("vesta_repl_shipping:1"), "the standby ships now");
    println!("{} acknowledged keys in site 2 {:?} after the shipping proxy was killed", acked.len(), killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_replicate_over_mutual_tls_and_a_listener_refuses_a_sender_without_a_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ran = std::process::Command::new(vesta_testkit::vesta_bin())
        .args(["admin", "certs", "--out", pki.path().to_str().unwrap()])
        .args(["--cert", "store=127.0.0.1", "--cert", "proxy=127.0.0.1"])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let f = |name: &str| pki.path().join(name).to_str().unwrap().to_string();
    let s = start_sites_with(2, |_| {
        let store =
            ["--tls-cert-file", &f("store.crt"), "--tls-key-file", &f("store.key"), "--tls-ca-cert-file", &f("ca.crt")];
        let proxy = [
            "--internal-tls-cert-file",
            &f("proxy.crt"),
            "--internal-tls-key-file",
            &f("proxy.key"),
            "--internal-tls-ca-file",
            &f("ca.crt"),
        ];
        (store.iter().map(|s| s.to_string()).collect(), proxy.iter().map(|s| s.to_string()).collect())
    });
    let (a, b) = (&s.sites[0], &s.sites[1]);
    let mut in_a = common::connect(a.proxy_addr_for(1), false).await;
    let mut in_b = common::connect(b.proxy_addr_for(1), false).await;
    assert_eq!(try_call(&mut in_a, &["SET", "tls:repl", "across"]).await.unwrap(), Value::Okay);
    let took = read_until(&mut in_b, "tls:repl", "across", Duration::from_secs(30)).await;
    println!("a write crossed to the other site over mutual TLS in {took:?}");

    // A sender without the cluster's certificate gets nothing from the listener.
    let plain = vesta_proto::client::NodeConnection::connect(("127.0.0.1", s.ports[1])).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), plain.call(vesta_proto::Request::Ping)).await;
    assert!(!matches!(answer, Ok(Ok(_))), "a plaintext sender must be refused: {answer:?}");
    let info = replication_info(a, 0).await;
    assert!(info.contains("name=site2,origin=2,state=connected"), "{info}");
}
