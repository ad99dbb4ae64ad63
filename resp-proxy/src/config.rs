//! `proxy.toml`: every key has a default and can be overridden by a flag or an environment variable
//! (`--node-timeout-ms 200` / `VESTA_PROXY_NODE_TIMEOUT_MS=200`); flags win over the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The RESP port.
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// The topology file (zones, nodes, shards, quorums), when the cluster is not kept in etcd.
    pub topology: PathBuf,
    /// etcd endpoints holding the cluster's spec and shard map; when set, `topology` is not read.
    pub etcd: Vec<String>,
    /// The cluster's name in etcd.
    pub cluster: String,
    /// Where the last shard map read from etcd is kept, so that the proxy can start while etcd is down.
    pub map_cache: Option<PathBuf>,
    /// How long one store node may take to answer one request.
    pub node_timeout_ms: u64,
    /// How long a client command may take, retries on contention included.
    pub deadline_ms: u64,
    /// This data centre's id.
    pub origin: u32,
    pub max_clients: usize,
    /// Commands of one connection executing at once; reading pauses beyond it.
    pub max_pipeline: usize,
    /// How far apart this proxy's clock, the store nodes' clocks and the timestamps of the copies it
    /// reads may be before it refuses to write (see README → Guarantees). Keep it below a third of the
    /// stores' lease.
    pub max_clock_drift_ms: u64,
    /// Test-only: run this proxy's wall clock this many ms ahead (negative: behind) of the machine's,
    /// to show what clock skew does. Never set it in production.
    pub clock_offset_ms: i64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6379)),
            metrics_listen: None,
            topology: PathBuf::from("topology.toml"),
            etcd: Vec::new(),
            cluster: "vesta".into(),
            map_cache: None,
            node_timeout_ms: 100,
            deadline_ms: 1000,
            origin: 1,
            max_clients: 10_000,
            max_pipeline: 1024,
            max_clock_drift_ms: 100,
            clock_offset_ms: 0,
        }
    }
}

impl ProxyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.node_timeout_ms == 0 || self.deadline_ms == 0 {
            return Err("node_timeout_ms and deadline_ms must be at least 1".into());
        }
        if self.max_clients == 0 || self.max_pipeline == 0 {
            return Err("max_clients and max_pipeline must be at least 1".into());
        }
        if self.max_clock_drift_ms == 0 {
            return Err("max_clock_drift_ms must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Default, clap::Args)]
pub struct ProxyFlags {
    /// TOML configuration file.
    #[arg(long, env = "VESTA_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "VESTA_PROXY_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "VESTA_PROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[arg(long, env = "VESTA_PROXY_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// etcd endpoints (comma-separated): read the cluster from etcd instead of a topology file.
    #[arg(long, env = "VESTA_PROXY_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    #[arg(long, env = "VESTA_PROXY_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long, env = "VESTA_PROXY_MAP_CACHE")]
    pub map_cache: Option<PathBuf>,
    #[arg(long, env = "VESTA_PROXY_NODE_TIMEOUT_MS")]
    pub node_timeout_ms: Option<u64>,
    #[arg(long, env = "VESTA_PROXY_DEADLINE_MS")]
    pub deadline_ms: Option<u64>,
    #[arg(long, env = "VESTA_PROXY_ORIGIN")]
    pub origin: Option<u32>,
    #[arg(long, env = "VESTA_PROXY_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    #[arg(long, env = "VESTA_PROXY_MAX_PIPELINE")]
    pub max_pipeline: Option<usize>,
    #[arg(long, env = "VESTA_PROXY_MAX_CLOCK_DRIFT_MS")]
    pub max_clock_drift_ms: Option<u64>,
    /// Test-only: shift this proxy's wall clock by this many ms.
    #[arg(long, env = "VESTA_PROXY_CLOCK_OFFSET_MS", hide = true, allow_negative_numbers = true)]
    pub clock_offset_ms: Option<i64>,
}

impl ProxyFlags {
    pub fn resolve(self) -> Result<ProxyConfig, String> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => ProxyConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        set!(
            listen,
            topology,
            etcd,
            cluster,
            node_timeout_ms,
            deadline_ms,
            origin,
            max_clients,
            max_pipeline,
            max_clock_drift_ms,
            clock_offset_ms
        );
        if self.metrics_listen.is_some() {
            c.metrics_listen = self.metrics_listen;
        }
        if self.map_cache.is_some() {
            c.map_cache = self.map_cache;
        }
        c.validate()?;
        Ok(c)
    }
}
