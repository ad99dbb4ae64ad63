//! `vesta admin` against a real etcd (Debian's `etcd-server`, started by the test on loopback ports and
//! killed at the end) and real store nodes: init, refusal to overwrite, dry runs, show with node health
//! and under-replicated shards, zone maintenance with its quorum guard; every redistribution transition
//! a compare-and-swap; store nodes fencing the shards they move while etcd cannot confirm their lease.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::etcd::{admin, Etcd};
use vesta_cluster::etcd::{ClusterState, ClusterStore, StoreError};
use vesta_cluster::redistribution::{MoveProgress, Phase, Redistribution};
use vesta_cluster::shard_map::ShardMap;
use vesta_cluster::spec::{ClusterSpec, NodeSpec};
use vesta_proto::client::NodeConnection;
use vesta_proto::{Abort, KeyRef, Prepare, PrepareKind, Read, Request, RequestId, Response, Status};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_spec(path: &Path, cluster: &common::Cluster) {
    let mut text = format!("name = \"it\"\nshards = {}\nwrite_quorum = 2\nread_quorum = 2\n", common::SHARDS);
    for zone in 0..3 {
        text += &format!(
            "\n[[zones]]\nname = \"zone{z}\"\n[[zones.nodes]]\nname = \"zone{z}\"\naddr = \"{}\"\n",
            cluster.store_addr(zone),
            z = zone + 1
        );
    }
    std::fs::write(path, text).expect("write spec");
}

#[test]
fn admin_init_show_and_zone_maintenance() {
    let etcd = Etcd::start();
    let mut cluster = common::Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cluster.toml");
    write_spec(&spec, &cluster);
    let spec = spec.to_str().unwrap();

    let dry = admin(&etcd, "it", &["init", "--spec", spec, "--dry-run"]);
    assert!(dry.status.success());
    assert!(stdout(&dry).contains("dry run"));
    let missing = admin(&etcd, "it", &["show"]);
    assert_eq!(missing.status.code(), Some(2), "a dry run writes nothing");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));

    let init = admin(&etcd, "it", &["init", "--spec", spec]);
    assert!(init.status.success());
    assert!(stdout(&init).contains("shard map version 1"));
    let again = admin(&etcd, "it", &["init", "--spec", spec]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let show = stdout(&admin(&etcd, "it", &["show"]));
    assert!(show.contains("map version 1"), "{show}");
    assert_eq!(show.matches("  up").count(), 3, "{show}");
    assert_eq!(show.matches("not registered in etcd").count(), 3, "stores without --etcd: {show}");
    assert!(show.contains(&format!("{} fully replicated, 0 under-replicated", common::SHARDS)), "{show}");

    cluster.kill_store(2);
    let show = stdout(&admin(&etcd, "it", &["show", "--timeout-ms", "300"]));
    assert!(show.contains("DOWN"), "{show}");
    assert!(show.contains(&format!("{} under-replicated, 0 below the write quorum", common::SHARDS)), "{show}");

    assert!(admin(&etcd, "it", &["zone", "down", "zone3", "--dry-run"]).status.success());
    assert!(stdout(&admin(&etcd, "it", &["show"])).contains("zone zone3 (up)"), "a dry run writes nothing");
    assert!(admin(&etcd, "it", &["zone", "down", "zone3"]).status.success());
    assert!(stdout(&admin(&etcd, "it", &["show"])).contains("zone zone3 (down)"));
    let second = admin(&etcd, "it", &["zone", "down", "zone2"]);
    assert_eq!(second.status.code(), Some(2), "two zones down leave no write quorum");
    assert!(String::from_utf8_lossy(&second.stderr).contains("fewer than the write quorum"));
    assert!(admin(&etcd, "it", &["zone", "up", "zone3"]).status.success());
    assert!(stdout(&admin(&etcd, "it", &["show"])).contains("zone zone3 (up)"));
    assert_eq!(admin(&etcd, "it", &["zone", "down", "nosuch"]).status.code(), Some(2));
}

/// Store nodes and proxies configured from etcd: `vesta admin init`, three stores that take their
/// shards from the map, two proxies serving the same data; then etcd goes away and a proxy started
/// afterwards serves from the map cache another proxy wrote, while one without a cache refuses to start.
#[tokio::test]
async fn stores_and_proxies_from_etcd_and_the_map_cache() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let mut text = "name = \"live\"\nshards = 64\nwrite_quorum = 2\nread_quorum = 2\n".to_string();
    for (z, port) in ports.iter().enumerate() {
        text +=
            &format!("\n[[zones]]\nname = \"z{z}\"\n[[zones.nodes]]\nname = \"s{z}\"\naddr = \"127.0.0.1:{port}\"\n");
    }
    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, text).unwrap();
    assert!(admin(&etcd, "live", &["init", "--spec", spec.to_str().unwrap()]).status.success());

    let mut stores = Vec::new();
    for (z, port) in ports.iter().enumerate() {
        let data = dir.path().join(format!("s{z}"));
        let (name, listen) = (format!("s{z}"), format!("127.0.0.1:{port}"));
        let mut args = vesta_testkit::store_args(&name, &listen, data.to_str().unwrap());
        args.extend(["--etcd", &etcd.url, "--cluster", "live"]);
        stores.push(common::Proc::spawn(&format!("s{z}"), &args).unwrap_or_else(|e| panic!("{e}")));
    }
    let cache = dir.path().join("map-cache.json");
    let url = etcd.url.clone();
    let proxy = |name: &str, cache: Option<&Path>| {
        let mut args = vec!["proxy", "--listen", "127.0.0.1:0", "--etcd", &url, "--cluster", "live"];
        if let Some(c) = cache {
            args.extend(["--map-cache", c.to_str().unwrap()]);
        }
        common::Proc::spawn(name, &args)
    };
    let (p1, p2) = (proxy("proxy1", Some(&cache)).unwrap(), proxy("proxy2", None).unwrap());
    let (mut c1, mut c2) = (common::connect(p1.addr(), false).await, common::connect(p2.addr(), true).await);
    common::call(&mut c1, &["SET", "etcd:k", "v"]).await;
    assert_eq!(common::call(&mut c2, &["GET", "etcd:k"]).await, common::bulk("v"));
    for _ in 0..10 {
        common::call(&mut c1, &["INCR", "etcd:n"]).await;
        common::call(&mut c2, &["INCR", "etcd:n"]).await;
    }
    assert_eq!(common::call(&mut c1, &["GET", "etcd:n"]).await, common::bulk("20"));
    assert!(cache.exists(), "a proxy with --map-cache keeps the map it read");

    drop(etcd);
    let p3 = proxy("proxy3", Some(&cache)).unwrap_or_else(|e| panic!("a proxy with a cache starts without etcd: {e}"));
    let mut c3 = common::connect(p3.addr(), false).await;
    assert_eq!(common::call(&mut c3, &["GET", "etcd:n"]).await, common::bulk("20"));
    assert!(proxy("proxy4", None).is_err(), "without etcd and without a cache there is no map to serve");
}

/// A spec of three zones of one node each (`s0`, `s1`, `s2` in `z0`, `z1`, `z2`) at `addrs`.
fn three_zones(name: &str, addrs: &[SocketAddr]) -> ClusterSpec {
    let mut text = format!("name = \"{name}\"\nshards = {}\nwrite_quorum = 2\nread_quorum = 2\n", common::SHARDS);
    for (z, addr) in addrs.iter().enumerate() {
        text += &format!("\n[[zones]]\nname = \"z{z}\"\n[[zones.nodes]]\nname = \"s{z}\"\naddr = \"{addr}\"\n");
    }
    ClusterSpec::from_toml(&text).unwrap()
}

/// The plan `vesta admin add-node ZONE/NAME@ADDR` writes (phase announced), built with the cluster crate
/// so that a test can drive the etcd transitions itself, in any order.
fn add_node_plan(state: &ClusterState, zone: &str, name: &str, addr: SocketAddr) -> Redistribution {
    let mut spec = state.spec.clone();
    let node = NodeSpec { name: name.into(), addr: addr.to_string() };
    spec.zones.iter_mut().find(|z| z.name == zone).expect("zone").nodes.push(node);
    let mut map = state.map.with_node_added(zone, name).unwrap();
    map.version = state.map.version + 1;
    let moves = state.map.moves(&map);
    let mut addrs: BTreeMap<String, String> =
        state.spec.zones.iter().flat_map(|z| &z.nodes).map(|n| (n.name.clone(), n.addr.clone())).collect();
    addrs.insert(name.into(), addr.to_string());
    let action = format!("add-node {zone}/{name}@{addr}");
    Redistribution { id: map.version, action, spec, map, moves, phase: Phase::Announced, addrs }
}

async fn load(store: &mut ClusterStore) -> ClusterState {
    store.load().await.unwrap().expect("the cluster exists")
}

/// Each transition of a redistribution is refused when the plan is no longer the one its caller read,
/// so interleavings of two `vesta admin` runs and an abort cannot bring an aborted plan back, publish
/// its map, or leave its copy progress behind. The calls are made in the racy order one after the
/// other, with the revisions read before, so the test is deterministic.
#[tokio::test]
async fn plan_transitions_are_compare_and_swap() {
    let etcd = Etcd::start();
    let addrs: Vec<SocketAddr> = (1..=3).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
    let spec = three_zones("cas", &addrs);
    let mut store = ClusterStore::connect(std::slice::from_ref(&etcd.url), "cas").await.unwrap();
    store.init(&spec, &ShardMap::initial(&spec)).await.unwrap();
    let state = load(&mut store).await;
    let new_node = SocketAddr::from(([127, 0, 0, 1], 4));
    let mut plan = add_node_plan(&state, "z0", "n", new_node);
    let begun = store.begin_redistribution(state.map_revision, &plan).await.unwrap();
    assert_eq!(load(&mut store).await.plan_revision, begun);

    // Two runs read the plan at the same revision; the first moves it on, the second (still on the old
    // revision) is refused instead of writing back the phase it saw.
    plan.phase = Phase::Copying;
    let copying = store.update_redistribution(&plan, begun).await.unwrap();
    let stale = Redistribution { phase: Phase::Announced, ..plan.clone() };
    let refused = store.update_redistribution(&stale, begun).await;
    assert!(matches!(refused, Err(StoreError::PlanChanged)), "a stale phase update: {refused:?}");
    assert_eq!(load(&mut store).await.redistribution.map(|p| p.phase), Some(Phase::Copying));

    // Progress is checkpointed under the current revision.
    let m = plan.moves[0].clone();
    let half = MoveProgress { cursor: Some(b"cursor".to_vec()), done: false, keys: 5, bytes: 50 };
    store.save_progress(&m, &half, copying).await.unwrap();
    assert_eq!(store.progress().await.unwrap().len(), 1);

    // An abort names the revision its operator saw: on a stale one it aborts nothing.
    let refused = store.abort_redistribution(begun).await;
    assert!(matches!(refused, Err(StoreError::PlanChanged)), "a stale abort: {refused:?}");
    let before_abort = load(&mut store).await;
    assert_eq!((before_abort.plan_revision, before_abort.map.version), (copying, 1));
    store.abort_redistribution(copying).await.unwrap();

    // A run that read the plan before the abort: its publish is refused and the map stays…
    let publish = store.finish_redistribution(before_abort.map_revision, before_abort.plan_revision, &plan).await;
    assert!(matches!(publish, Err(StoreError::NoRedistribution)), "publish after an abort: {publish:?}");
    // …its next phase does not bring the plan back…
    plan.phase = Phase::Handoff;
    let update = store.update_redistribution(&plan, copying).await;
    assert!(matches!(update, Err(StoreError::NoRedistribution)), "update after an abort: {update:?}");
    // …and neither does a late checkpoint.
    let late = store.save_progress(&m, &half, copying).await;
    assert!(matches!(late, Err(StoreError::NoRedistribution)), "checkpoint after an abort: {late:?}");
    let after = load(&mut store).await;
    assert_eq!(after.map.version, 1, "the aborted plan's map was published");
    assert!(after.redistribution.is_none(), "the aborted plan came back: {:?}", after.redistribution);
    assert!(store.progress().await.unwrap().is_empty(), "a checkpoint of the aborted plan landed");

    // A new plan moving the same shards starts from scratch: a late checkpoint of the aborted one cannot
    // land in it (it would resume after that cursor and skip every record before it).
    let plan2 = add_node_plan(&after, "z0", "n", new_node);
    let begun2 = store.begin_redistribution(after.map_revision, &plan2).await.unwrap();
    let late = store.save_progress(&m, &half, copying).await;
    assert!(matches!(late, Err(StoreError::PlanChanged)), "old checkpoint into a new plan: {late:?}");
    assert!(store.progress().await.unwrap().is_empty(), "a checkpoint of the aborted plan landed in the new one");
    // The new plan publishes under its own revisions, and only once.
    store.finish_redistribution(after.map_revision, begun2, &plan2).await.unwrap();
    let done = load(&mut store).await;
    assert_eq!((done.map.version, done.redistribution.is_none()), (2, true));
    let again = store.finish_redistribution(after.map_revision, begun2, &plan2).await;
    assert!(again.is_err(), "published twice: {again:?}");
}

/// One request straight to a store node.
async fn node_call(addr: SocketAddr, request: Request) -> Response {
    let conn = NodeConnection::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tokio::time::timeout(Duration::from_secs(10), conn.call(request))
        .await
        .unwrap_or_else(|_| panic!("{addr} did not answer"))
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn target_in(shard: u32, tag: &str) -> KeyRef {
    let key = (0..)
        .map(|i| format!("{tag}:{i}"))
        .find(|k| vesta_proto::shard::shard_of(k.as_bytes(), common::SHARDS) == shard);
    let key = key.expect("some key falls in every shard");
    KeyRef { shard, namespace: Bytes::from_static(b"0"), key: key.into() }
}

fn read(target: &KeyRef) -> Request {
    Request::Read(Read { target: target.clone(), want_value: false })
}

fn prepare(target: &KeyRef, req: u128) -> Request {
    let target = target.clone();
    Request::Prepare(Prepare {
        req: RequestId(req),
        target,
        kind: PrepareKind::Set,
        condition: None,
        want_value: false,
    })
}

fn status(response: &Response) -> (Status, String) {
    match response {
        Response::Reply(r) => (r.status, r.message.clone()),
        other => (other.status(), String::new()),
    }
}

async fn pong(addr: SocketAddr) -> vesta_proto::Pong {
    match node_call(addr, Request::Ping).await {
        Response::Pong(p) => p,
        other => panic!("ping {addr}: {other:?}"),
    }
}

/// GET /metrics over plain HTTP/1.0.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read as _, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A store node in a redistribution serves its moving shards only while etcd confirms its lease: with
/// etcd stopped it refuses reads and prepares of them (`not-owner`, saying why) within the lease's
/// window, while it goes on serving its other shards — and so does a node outside the redistribution —
/// and it serves them again once etcd is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_etcd_refuses_the_shards_it_is_moving() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..4).map(|_| SocketAddr::from(([127, 0, 0, 1], common::free_port()))).collect();
    let spec = three_zones("fence", &addrs[..3]);
    let mut store = ClusterStore::connect(std::slice::from_ref(&etcd.url), "fence").await.unwrap();
    store.init(&spec, &ShardMap::initial(&spec)).await.unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let name = if i < 3 { format!("s{i}") } else { "n".to_string() };
        let data = dir.path().join(&name);
        let (listen, metrics) = (addr.to_string(), metrics.to_string());
        let mut args = vesta_testkit::store_args(&name, &listen, data.to_str().unwrap());
        args.extend(["--etcd", &etcd.url, "--cluster", "fence", "--ownership-ttl-ms", "2000"]);
        if i == 0 {
            args.extend(["--metrics-listen", &metrics]);
        }
        nodes.push(common::Proc::spawn(&name, &args).unwrap_or_else(|e| panic!("{e}")));
    }
    let state = load(&mut store).await;
    assert_eq!(state.alive.len(), 4, "every node registers before it is ready: {:?}", state.alive);
    assert_eq!(state.alive["s0"].ttl_ms, 2000);
    let show = stdout(&admin(&etcd, "fence", &["show"]));
    assert_eq!(show.matches(", registered").count(), 3, "{show}");

    // Node n joins zone z0: s0 forwards the moving shards (phase copying).
    let mut plan = add_node_plan(&state, "z0", "n", addrs[3]);
    let begun = store.begin_redistribution(state.map_revision, &plan).await.unwrap();
    plan.phase = Phase::Copying;
    store.update_redistribution(&plan, begun).await.unwrap();
    let s0 = addrs[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    while pong(s0).await.redistribution != plan.id {
        assert!(Instant::now() < deadline, "s0 never took up the redistribution");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moving = target_in(plan.moves[0].shard, "moving");
    let staying = (0..common::SHARDS).find(|s| plan.moves.iter().all(|m| m.shard != *s)).unwrap();
    let staying = target_in(staying, "staying");
    assert_eq!(status(&node_call(s0, read(&moving)).await).0, Status::Absent, "served under the lease");
    assert_eq!(status(&node_call(s0, prepare(&moving, 1)).await).0, Status::Ok, "prepared under the lease");
    node_call(s0, Request::Abort(Abort { req: RequestId(1), target: moving.clone() })).await;

    etcd.signal("STOP");
    let stopped = Instant::now();
    let refusal = loop {
        let (got, message) = status(&node_call(s0, read(&moving)).await);
        if got == Status::NotOwner {
            break message;
        }
        assert_eq!(got, Status::Absent);
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "s0 still serves its moving shard 20 s after etcd stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refusal.contains("cannot confirm its ownership with etcd"), "{refusal}");
    assert_eq!(status(&node_call(s0, prepare(&moving, 2)).await).0, Status::NotOwner, "prepare of a moving shard");
    assert!(pong(s0).await.fenced);
    // Everything else is served on: shards that do not move, and every shard of a node outside the move.
    assert_eq!(status(&node_call(s0, read(&staying)).await).0, Status::Absent);
    assert_eq!(status(&node_call(s0, prepare(&staying, 3)).await).0, Status::Ok);
    // s1 cannot confirm its lease either, but it moves nothing: it serves on.
    while !pong(addrs[1]).await.fenced {
        assert!(stopped.elapsed() < Duration::from_secs(20), "s1 still confirms its lease with etcd stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&node_call(addrs[1], prepare(&moving, 4)).await).0, Status::Ok);
    assert_eq!(status(&node_call(addrs[1], read(&moving)).await).0, Status::Absent);
    let text = scrape(metrics);
    assert!(text.contains("vesta_store_fenced 1"), "{text}");
    let refusals = text.lines().find_map(|l| l.strip_prefix("vesta_store_fenced_refusals_total "));
    assert!(refusals.is_some_and(|n| n.trim().parse::<f64>().unwrap_or(0.0) >= 2.0), "{text}");

    // Long enough for etcd to expire the lease once it runs again: the node must register anew (a new
    // lease, then the cluster's state) before it serves the moving shard.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed())).await;
    etcd.signal("CONT");
    let resumed = Instant::now();
    loop {
        let (got, message) = status(&node_call(s0, read(&moving)).await);
        if got == Status::Absent {
            break;
        }
        assert_eq!(got, Status::NotOwner, "{message}");
        assert!(resumed.elapsed() < Duration::from_secs(30), "s0 does not serve its moving shard again: {message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!pong(s0).await.fenced);
    assert!(scrape(metrics).contains("vesta_store_fenced 0"));
    assert!(load(&mut store).await.alive.contains_key("s0"), "registered again");

    // A clean shutdown ends the registration at once (a running `vesta admin` need not wait for it).
    let s0 = nodes.remove(0);
    s0.signal("TERM");
    assert!(s0.wait_exit(Duration::from_secs(20)).is_some_and(|status| status.success()), "s0 stops on SIGTERM");
    assert!(!load(&mut store).await.alive.contains_key("s0"), "s0 stopped but is still registered");
    drop(nodes);
}
