//! A replica out of service for longer than the grace period (a short one here: 2 s) with real etcd,
//! store and proxy processes: it may hold live copies of keys whose tombstones the other replicas have
//! purged since, so it must serve nothing until a full repair — which `zone up` and `repair` run — and
//! the deleted key must not come back.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{call, int, Proc};
use redis::Value;
use vesta_proto::client::NodeConnection;
use vesta_proto::{Pong, Request, Response};

const GRACE_SECS: u64 = 2;

struct Cluster {
    proxy: Option<Proc>,
    stores: Vec<(String, SocketAddr, Option<Proc>)>,
    etcd: Etcd,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().unwrap();
        let mut spec = format!("name = \"fr\"\nshards = {}\nwrite_quorum = 2\nread_quorum = 2\n", common::SHARDS);
        let mut stores = Vec::new();
        for z in 1..=3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
            spec += &format!("\n[[zones]]\nname = \"zone{z}\"\n[[zones.nodes]]\nname = \"z{z}\"\naddr = \"{addr}\"\n");
            stores.push((format!("z{z}"), addr, None));
        }
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, spec).unwrap();
        let mut cluster = Cluster { proxy: None, stores, etcd, dir };
        assert!(cluster.admin(&["init", "--spec", path.to_str().unwrap()]).status.success());
        for i in 0..3 {
            cluster.start_store(i);
        }
        let cache = cluster.dir.path().join("map.json");
        let args = ["proxy", "--listen", "127.0.0.1:0", "--etcd", &cluster.etcd.url, "--cluster", "fr"];
        let mut args: Vec<&str> = args.to_vec();
        let cache = cache.to_str().unwrap().to_string();
        args.extend(["--map-cache", &cache]);
        cluster.proxy = Some(Proc::spawn("proxy", &args).unwrap_or_else(|e| panic!("{e}")));
        cluster
    }

    fn start_store(&mut self, i: usize) {
        let (name, addr) = (self.stores[i].0.clone(), self.stores[i].1);
        let data: PathBuf = self.dir.path().join(&name);
        let grace = GRACE_SECS.to_string();
        let listen = addr.to_string();
        let mut args = vesta_testkit::store_args(&name, &listen, data.to_str().unwrap());
        args.extend(["--etcd", &self.etcd.url, "--cluster", "fr", "--grace-secs", &grace]);
        self.stores[i].2 = Some(Proc::spawn_retrying(&name, &args).unwrap_or_else(|e| panic!("{e}")));
    }

    fn kill_store(&mut self, i: usize) {
        self.stores[i].2.take().expect("running").kill();
    }

    fn admin(&self, args: &[&str]) -> Output {
        common::etcd::admin(&self.etcd, "fr", args)
    }

    fn proxy_addr(&self) -> SocketAddr {
        self.proxy.as_ref().unwrap().addr()
    }
}

async fn ping(addr: SocketAddr) -> Option<Pong> {
    let conn = NodeConnection::connect(addr).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), conn.call(Request::Ping)).await {
        Ok(Ok(Response::Pong(p))) => Some(p),
        _ => None,
    }
}

/// Retries a command while it answers a retryable error (bounded).
async fn served(c: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = call(c, args).await;
        if !common::is_retryable_error(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{args:?}: still {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn skip_without_etcd() -> bool {
    if Etcd::available() {
        return false;
    }
    eprintln!("SKIPPED: etcd is not installed (Debian's etcd-server; .ci/run installs it)");
    true
}

/// Zone 3 in maintenance (its node running) for longer than the grace period while a key is deleted:
/// when the zone comes back, its node must not serve its old copy; `zone up` rebuilds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_back_after_the_grace_period_is_rebuilt_before_it_serves() {
    if skip_without_etcd() {
        return;
    }
    let cluster = Cluster::start();
    let mut c = common::connect(cluster.proxy_addr(), false).await;
    for k in ["deleted", "kept"] {
        assert_eq!(served(&mut c, &["SET", k, "old"]).await, Value::Okay);
    }
    assert!(cluster.admin(&["zone", "down", "zone3"]).status.success());
    tokio::time::sleep(Duration::from_millis(500)).await; // the proxy follows etcd
    assert_eq!(served(&mut c, &["DEL", "deleted"]).await, int(1));
    assert_eq!(served(&mut c, &["SET", "kept", "new"]).await, Value::Okay);
    // Past the grace period the tombstone is forgotten by zones 1 and 2; zone 3 still has "old".
    tokio::time::sleep(Duration::from_secs(GRACE_SECS + 1)).await;
    let z3 = cluster.stores[2].1;
    let pong = ping(z3).await.expect("z3 answers");
    assert!(pong.away_ms > pong.grace_ms, "{pong:?}");
    let up = cluster.admin(&["zone", "up", "zone3"]);
    assert!(up.status.success());
    assert!(String::from_utf8_lossy(&up.stdout).contains("full repair"), "zone up must say it rebuilds");
    let pong = ping(z3).await.expect("z3 answers");
    assert_eq!(pong.needs_repair, None, "serving again after the rebuild");
    // Zone 3 alone with zone 1 cannot bring "deleted" back, and holds "new".
    assert_eq!(common::read_node(z3, b"0", b"deleted").await.unwrap(), None);
    let kept = common::read_node(z3, b"0", b"kept").await.unwrap().expect("kept is on z3");
    assert_eq!(&kept.value[..], b"new");
    assert_eq!(served(&mut c, &["GET", "deleted"]).await, Value::Nil);
    assert_eq!(served(&mut c, &["GET", "kept"]).await, common::bulk("new"));
}

/// A store process down for longer than the grace period refuses to serve when it starts again (with a
/// metric and a reason in its ping), and `vesta admin repair` rebuilds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_the_grace_period_refuses_until_repaired() {
    if skip_without_etcd() {
        return;
    }
    let mut cluster = Cluster::start();
    let mut c = common::connect(cluster.proxy_addr(), false).await;
    assert_eq!(served(&mut c, &["SET", "deleted", "old"]).await, Value::Okay);
    tokio::time::sleep(Duration::from_millis(1_500)).await; // z3 notes it is in service
    cluster.kill_store(2);
    assert_eq!(served(&mut c, &["DEL", "deleted"]).await, int(1));
    tokio::time::sleep(Duration::from_secs(GRACE_SECS + 1)).await;
    cluster.start_store(2);
    let z3 = cluster.stores[2].1;
    let pong = ping(z3).await.expect("z3 answers");
    let why = pong.needs_repair.expect("z3 must refuse to serve");
    assert!(why.contains("grace period"), "{why}");
    let refused = common::read_node(z3, b"0", b"deleted").await.unwrap_err();
    assert!(refused.contains("NeedsRepair"), "{refused}");
    let show = String::from_utf8_lossy(&cluster.admin(&["show"]).stdout).into_owned();
    assert!(show.contains("NEEDS A FULL REPAIR"), "{show}");
    assert!(show.contains("under-replicated"), "{show}");
    // Reads and writes go on with zones 1 and 2 meanwhile.
    assert_eq!(served(&mut c, &["GET", "deleted"]).await, Value::Nil);
    assert!(cluster.admin(&["repair", "zone3"]).status.success());
    assert_eq!(ping(z3).await.expect("z3 answers").needs_repair, None);
    assert_eq!(common::read_node(z3, b"0", b"deleted").await.unwrap(), None);
    assert_eq!(served(&mut c, &["INCR", "deleted"]).await, int(1));
}
