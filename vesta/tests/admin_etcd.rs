//! `vesta admin` against a real etcd (Debian's `etcd-server`, started by the test on loopback ports and
//! killed at the end) and real store nodes: init, refusal to overwrite, dry runs, show with node health
//! and under-replicated shards, zone maintenance with its quorum guard.

mod common;

use std::path::Path;
use std::process::Output;

use common::etcd::{admin, Etcd};

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
        let args = [
            "store",
            "--node",
            &format!("s{z}"),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--sync",
            "off",
            "--etcd",
            &etcd.url,
            "--cluster",
            "live",
        ];
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
