//! The cluster a schedule runs against, as separate processes: a real etcd, `vesta store` nodes on
//! RocksDB (three zones, one node each, plus a spare node that redistribution adds), and `vesta proxy`
//! processes, all on loopback ports, each killed when the cluster is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use vesta_testkit::etcd::Etcd;
use vesta_testkit::{free_port, vesta_bin, Proc};

/// Shards of the chaos cluster: few, so that a redistribution moves a whole zone's worth in seconds.
pub const SHARDS: u32 = 32;
/// The node `add-node` brings in.
pub const SPARE: &str = "z1b";

pub struct Store {
    pub addr: SocketAddr,
    dir: PathBuf,
    proc: Option<Proc>,
    stopped: bool,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub clock_offset_ms: i64,
    proc: Option<Proc>,
}

pub struct Cluster {
    // Dropped in field order: proxies first, then stores, etcd and the directories.
    pub proxies: Vec<Proxy>,
    pub stores: BTreeMap<String, Store>,
    pub etcd: Etcd,
    pub name: String,
    dir: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Start(String),
    #[error("vesta admin {args}: {output}")]
    Admin { args: String, output: String },
}

impl Cluster {
    /// etcd, three zones of one store node each (and the spare node, not yet in the map), and one proxy
    /// per clock offset in `proxy_offsets_ms`.
    pub fn start(proxy_offsets_ms: &[i64]) -> Result<Cluster, ClusterError> {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().map_err(|e| ClusterError::Start(e.to_string()))?;
        let name = "chaos".to_string();
        let mut cluster = Cluster { proxies: Vec::new(), stores: BTreeMap::new(), etcd, name: name.clone(), dir };
        let mut spec = format!("name = \"{name}\"\nshards = {SHARDS}\nwrite_quorum = 2\nread_quorum = 2\n");
        for z in 1..=3 {
            let node = format!("z{z}a");
            let addr = cluster.new_store(&node);
            spec +=
                &format!("\n[[zones]]\nname = \"zone{z}\"\n[[zones.nodes]]\nname = \"{node}\"\naddr = \"{addr}\"\n");
        }
        cluster.new_store(SPARE);
        let spec_path = cluster.dir.path().join("cluster.toml");
        std::fs::write(&spec_path, spec).map_err(|e| ClusterError::Start(e.to_string()))?;
        cluster.admin(&["init", "--spec", &spec_path.to_string_lossy()])?;
        let names: Vec<String> = cluster.stores.keys().cloned().collect();
        for node in names {
            cluster.start_store(&node)?;
        }
        for &offset in proxy_offsets_ms {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            cluster.proxies.push(Proxy { addr, clock_offset_ms: offset, proc: None });
            cluster.start_proxy(cluster.proxies.len() - 1)?;
        }
        Ok(cluster)
    }

    fn new_store(&mut self, node: &str) -> SocketAddr {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dir = self.dir.path().join(node);
        self.stores.insert(node.to_string(), Store { addr, dir, proc: None, stopped: false });
        addr
    }

    /// Runs `vesta admin ARGS` against the cluster's etcd.
    pub fn admin(&self, args: &[&str]) -> Result<String, ClusterError> {
        admin(&self.etcd.url, &self.name, args)
    }

    /// Starts (or restarts, on its old port and data) a store node, retrying while its port is still
    /// held by the process just killed.
    pub fn start_store(&mut self, node: &str) -> Result<(), ClusterError> {
        let (etcd, name) = (self.etcd.url.clone(), self.name.clone());
        let store = self.stores.get_mut(node).ok_or_else(|| ClusterError::Start(format!("no store {node}")))?;
        let (listen, dir) = (store.addr.to_string(), store.dir.to_string_lossy().into_owned());
        let mut args = vesta_testkit::store_args(node, &listen, &dir);
        args.extend(["--etcd", &etcd, "--cluster", &name, "--drop-grace-ms", "2000"]);
        store.proc = Some(Proc::spawn_retrying(node, &args).map_err(ClusterError::Start)?);
        store.stopped = false;
        Ok(())
    }

    pub fn start_proxy(&mut self, i: usize) -> Result<(), ClusterError> {
        let cache = self.dir.path().join(format!("proxy{i}-map.json")).to_string_lossy().into_owned();
        let (etcd, name) = (self.etcd.url.clone(), self.name.clone());
        let proxy = &mut self.proxies[i];
        let (listen, offset) = (proxy.addr.to_string(), proxy.clock_offset_ms.to_string());
        let args = [
            "proxy",
            "--listen",
            &listen,
            "--etcd",
            &etcd,
            "--cluster",
            &name,
            "--map-cache",
            &cache,
            "--clock-offset-ms",
            &offset,
        ];
        proxy.proc = Some(Proc::spawn_retrying(&format!("proxy{i}"), &args).map_err(ClusterError::Start)?);
        Ok(())
    }

    /// `kill -9` a store node.
    pub fn kill_store(&mut self, node: &str) {
        if let Some(store) = self.stores.get_mut(node) {
            if let Some(proc) = store.proc.take() {
                proc.kill();
            }
        }
    }

    /// SIGSTOP (`stop`) or SIGCONT a store node.
    pub fn pause_store(&mut self, node: &str, stop: bool) {
        if let Some(store) = self.stores.get_mut(node) {
            if let Some(proc) = &store.proc {
                proc.signal(if stop { "STOP" } else { "CONT" });
                store.stopped = stop;
            }
        }
    }

    pub fn kill_proxy(&mut self, i: usize) {
        if let Some(proc) = self.proxies[i].proc.take() {
            proc.kill();
        }
    }

    /// Every process running again and none stopped.
    pub fn heal(&mut self) -> Result<(), ClusterError> {
        let names: Vec<String> = self.stores.keys().cloned().collect();
        for node in names {
            let store = &self.stores[&node];
            if store.stopped {
                self.pause_store(&node, false);
            }
            if self.stores[&node].proc.is_none() {
                self.start_store(&node)?;
            }
        }
        for i in 0..self.proxies.len() {
            if self.proxies[i].proc.is_none() {
                self.start_proxy(i)?;
            }
        }
        Ok(())
    }

    /// The spare node's `zone/name@addr`, as `add-node` takes it.
    pub fn spare_spec(&self) -> String {
        format!("zone1/{SPARE}@{}", self.stores[SPARE].addr)
    }
}

/// Runs `vesta admin ARGS` against the cluster `cluster` in the etcd at `etcd`; its output.
pub fn admin(etcd: &str, cluster: &str, args: &[&str]) -> Result<String, ClusterError> {
    let output = Command::new(vesta_bin())
        .args(["admin", "--etcd", etcd, "--cluster", cluster])
        .args(args)
        .output()
        .map_err(|e| ClusterError::Start(format!("run vesta admin: {e}")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        Err(ClusterError::Admin { args: args.join(" "), output: text })
    }
}
