//! The change log for cross-site replication, end to end: a cluster of processes (three RocksDB stores
//! with `--changelog-origin 1`, two proxies, N=3, W=2) takes SET, INCR, DEL and PEXPIRE from clients
//! spread over both proxies while one store is `kill -9`ed and restarted; then a shard feed per shard
//! (`vesta-repl`, over the internal protocol) reads the stores' logs. Every acknowledged write is there,
//! none twice, each key's writes in order — what a sender to another site would ship.
//!
//! Each key is written by two clients on different proxies (they meet at the store leases), never by two
//! clients of one proxy: those would queue on the proxy, and the write whose turn it is takes the others
//! along in its own commit (`key_queue.rs`), so only the last value of such a round is a record — and a
//! log entry. `proxy_concurrency.rs` checks what those rounds answer.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{error_text, try_call, Cluster, ClusterOptions, SHARDS};
use redis::Value;
use vesta_proto::client::NodeConnection;
use vesta_repl::ShardFeed;

/// What a client was told had happened.
#[derive(Default)]
struct Acknowledged {
    /// (key, value) of every acknowledged SET, and every INCR's result.
    values: Vec<(String, String)>,
    /// Keys whose DEL answered 1.
    deleted: Vec<String>,
    /// Keys whose PEXPIRE answered 1.
    expiring: Vec<String>,
}

async fn client(addr: std::net::SocketAddr, id: usize, until: Instant, acked: Arc<Mutex<Acknowledged>>) -> u64 {
    let mut c = common::connect(addr, false).await;
    let mut n = 0u64;
    // Clients 2j and 2j+1 (on different proxies) share keys.
    let pair = id / 2;
    while Instant::now() < until {
        n += 1;
        let key = format!("k{pair}-{}", n % 10);
        let (args, what): (Vec<String>, u8) = match n % 4 {
            0 => (vec!["SET".into(), key.clone(), format!("c{id}-{n}")], 0),
            1 => (vec!["INCR".into(), format!("counter{pair}-{}", n % 3)], 1),
            2 => (vec!["DEL".into(), format!("gone-{id}-{}", n - 1)], 2),
            // A key this client's SETs write (those run at n ≡ 0 mod 4).
            _ => (vec!["PEXPIRE".into(), format!("k{pair}-{}", (n - 3) % 10), "600000".into()], 3),
        };
        if what == 2 {
            // Something to delete first.
            let set = ["SET", &args[1], "doomed"];
            if !matches!(try_call(&mut c, &set).await, Ok(Value::Okay)) {
                continue;
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = match try_call(&mut c, &refs).await {
            Ok(v) if error_text(&v).is_none() => v,
            // Refused, or outcome unknown (a store was killed): not acknowledged.
            Ok(_) => continue,
            Err(e) => panic!("client {id}: connection-level error: {e}"),
        };
        let mut a = acked.lock().unwrap();
        match (what, reply) {
            (0, Value::Okay) => a.values.push((args[1].clone(), args[2].clone())),
            (1, Value::Int(v)) => a.values.push((args[1].clone(), v.to_string())),
            (2, Value::Int(1)) => a.deleted.push(args[1].clone()),
            (3, Value::Int(1)) => a.expiring.push(args[1].clone()),
            (_, other) if what == 0 || what == 1 => panic!("{refs:?}: {other:?}"),
            _ => {}
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_reaches_the_change_log_once_and_in_order() {
    let options = ClusterOptions {
        proxies: 2,
        store_flags: vec!["--changelog-origin".into(), "1".into()],
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_with(options);
    let acked: Arc<Mutex<Acknowledged>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> =
        (0..6).map(|i| tokio::spawn(client(cluster.proxy_addr_for(i), i, until, acked.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    cluster.kill_store(1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.restart_store(1);
    let mut sent = 0;
    for c in clients {
        sent += c.await.unwrap();
    }
    // Long enough for every log to close past the last write (about 200 ms behind the clock).
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let mut conns = Vec::new();
    for i in 0..cluster.store_count() {
        conns.push(NodeConnection::connect(cluster.store_addr(i)).await.unwrap());
    }
    let mut entries = Vec::new();
    for shard in 0..SHARDS {
        let mut feed = ShardFeed::new(shard, conns.clone(), 2);
        let shipment = feed.poll().await.unwrap_or_else(|e| panic!("shard {shard}: {e}"));
        entries.extend(shipment.entries);
    }

    let mut once = HashSet::new();
    let mut last_hlc: HashMap<Vec<u8>, u64> = HashMap::new();
    let (mut values, mut tombstones, mut with_ttl) = (HashSet::new(), HashSet::new(), HashSet::new());
    for e in &entries {
        assert!(once.insert((e.record.meta.order(), e.key.clone())), "handed on twice: {e:?}");
        let previous = last_hlc.insert(e.key.to_vec(), e.record.meta.hlc).unwrap_or(0);
        assert!(e.record.meta.hlc > previous, "{:?} out of order", e.key);
        let key = String::from_utf8(e.key.to_vec()).unwrap();
        if e.record.meta.flags.tombstone() {
            tombstones.insert(key);
        } else {
            if e.record.meta.expires_at != 0 {
                with_ttl.insert(key.clone());
            }
            values.insert((key, String::from_utf8(e.record.value.to_vec()).unwrap()));
        }
    }
    let acked = acked.lock().unwrap();
    for (key, value) in &acked.values {
        assert!(values.contains(&(key.clone(), value.clone())), "acknowledged {key} = {value} is not in the log");
    }
    for key in &acked.deleted {
        assert!(tombstones.contains(key), "acknowledged DEL {key} is not in the log");
    }
    for key in &acked.expiring {
        assert!(with_ttl.contains(key), "acknowledged PEXPIRE {key} is not in the log");
    }
    assert!(acked.values.len() > 100, "the load ran ({} acknowledged values of {sent} commands)", acked.values.len());
    assert!(!acked.deleted.is_empty() && !acked.expiring.is_empty(), "deletes and expiries were acknowledged");
    eprintln!(
        "{sent} commands; {} acknowledged values, {} deletes, {} expiries all in the change log ({} entries)",
        acked.values.len(),
        acked.deleted.len(),
        acked.expiring.len(),
        entries.len()
    );
}
