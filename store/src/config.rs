//! `store.toml`: every key has a default, and every key can be overridden by a flag or an environment
//! variable (`--lease-ms 800` / `VESTA_STORE_LEASE_MS=800`); flags win over the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::fence::LeaseTiming;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// RocksDB on disk.
    Rocksdb,
    /// An in-memory ordered map: no disk, the same semantics, gone on exit.
    Memory,
}

/// When a write is forced to stable storage (RocksDB's WAL is always on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPolicy {
    /// fsync the WAL before a commit is acknowledged: nothing acknowledged is lost, even on power loss.
    EveryWrite,
    /// fsync the WAL every `sync_interval_ms`: a process crash loses nothing, a machine crash loses at
    /// most that interval.
    Periodic,
    /// Never fsync: a process crash loses nothing (the WAL is in the OS page cache), a machine crash can
    /// lose whatever the OS had not written back.
    Off,
}

/// Records kept in memory after they were written (see `record_cache_entries`).
pub const DEFAULT_RECORD_CACHE_ENTRIES: usize = 100_000;

/// How far apart the clocks of proxies and store nodes may be (see `max_clock_drift_ms`).
pub const DEFAULT_MAX_CLOCK_DRIFT_MS: u64 = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// This node's name in logs, metrics and pings, e.g. `zone1-node0`.
    pub node: String,
    /// Address of the internal protocol.
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint; none when unset.
    pub metrics_listen: Option<SocketAddr>,
    pub engine: EngineKind,
    pub data_dir: PathBuf,
    pub sync: SyncPolicy,
    pub sync_interval_ms: u64,
    /// How long a prepare's lease lasts; longer than the proxy's per-node timeout.
    pub lease_ms: u64,
    /// Shards in the cluster (fixed at creation).
    pub shards: u32,
    /// Shards this node serves, as ranges like `"0-511"` or single shards; empty means all.
    pub owned_shards: Vec<String>,
    /// etcd endpoints holding the cluster's shard map: when set, `shards` and `owned_shards` come from
    /// the map (the shards it gives the node named `node`).
    pub etcd: Vec<String>,
    /// The cluster's name in etcd.
    pub cluster: String,
    /// With etcd: how long after a shard stopped being this node's its records are deleted. Late
    /// proxies still on the previous map find `not-owner` meanwhile, and an aborted move loses nothing.
    pub drop_grace_ms: u64,
    /// With etcd: the TTL of the lease under which the node registers (`alive/<node>`) and serves the
    /// shards a redistribution is moving. Longer: `vesta admin` waits longer for a participant that
    /// went silent; shorter: more etcd traffic, and an etcd hiccup fences moving shards sooner.
    pub ownership_ttl_ms: u64,
    /// Requests processed at once; beyond it the node answers `Overloaded` at once.
    pub max_in_flight: usize,
    pub max_frame_bytes: usize,
    /// How long a dead copy — a tombstone, or a record past its expiry — keeps its place in the order of
    /// copies before it is purged (Cassandra's `gc_grace_seconds`). A replica out of service for longer
    /// than this serves nothing until a full repair. The same on every node of a cluster.
    #[serde(alias = "tombstone_retention_secs")]
    pub grace_secs: u64,
    /// Refuse to serve after being out of service for longer than `grace_secs` (see the README). `vesta
    /// dev` turns it off: its zones live in one process, so none can fall behind the others while away.
    pub rejoin_check: bool,
    /// Commits stamped (by their HLC) further than this ahead of this node's clock are refused: a proxy
    /// whose clock runs ahead must not drag every later write of the cluster with it.
    pub max_clock_drift_ms: u64,
    /// Cross-site replication: this site's origin id (the proxies' `origin`). When set, every commit of
    /// a write made in this site is also written to the shard's change log, in the same engine batch
    /// (see `changelog.rs`); writes replicated from other sites carry their own origin and are not
    /// logged again. Unset: no change log.
    pub changelog_origin: Option<u32>,
    /// Test-only: run this node's wall clock this many ms ahead (negative: behind) of the machine's, to
    /// show what clock skew does (e.g. a whole site ahead of another). Never set it in production.
    pub clock_offset_ms: i64,
    /// RocksDB block cache.
    pub block_cache_mb: usize,
    /// RocksDB memtable size (three may exist at once).
    pub write_buffer_mb: usize,
    /// How many of the records written last are kept in memory for the prepares and reads that follow
    /// (about 100 bytes plus the value each); 0 turns the cache off.
    pub record_cache_entries: usize,
    /// `[tls]`: mutual TLS on the internal protocol. Proxies, the admin tool and other store nodes must
    /// present a certificate of `ca_file`; this node presents `cert_file` to them and to the nodes it
    /// copies records to.
    pub tls: Option<vesta_tls::InternalTls>,
    /// Without TLS: the only addresses (CIDRs, e.g. `10.1.0.0/16`) that may connect — the proxies and
    /// the admin hosts. Empty: every address.
    pub allowed_peers: Vec<ipnet::IpNet>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            node: "store".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            metrics_listen: None,
            engine: EngineKind::Rocksdb,
            data_dir: PathBuf::from("data/store"),
            sync: SyncPolicy::EveryWrite,
            sync_interval_ms: 100,
            lease_ms: 600,
            shards: 1024,
            owned_shards: Vec::new(),
            etcd: Vec::new(),
            cluster: "vesta".into(),
            drop_grace_ms: 60_000,
            ownership_ttl_ms: 10_000,
            max_in_flight: 10_000,
            max_frame_bytes: vesta_proto::frame::DEFAULT_MAX_FRAME,
            grace_secs: 24 * 3600,
            rejoin_check: true,
            max_clock_drift_ms: DEFAULT_MAX_CLOCK_DRIFT_MS,
            changelog_origin: None,
            clock_offset_ms: 0,
            block_cache_mb: 256,
            write_buffer_mb: 64,
            record_cache_entries: DEFAULT_RECORD_CACHE_ENTRIES,
            tls: None,
            allowed_peers: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
}

impl StoreConfig {
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.shards == 0 || self.shards > crate::key::MAX_SHARDS {
            return bad(format!("shards must be between 1 and {}", crate::key::MAX_SHARDS));
        }
        if self.grace_secs == 0 {
            return bad("grace_secs must be at least 1".into());
        }
        if self.lease_ms == 0 {
            return bad("lease_ms must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1".into());
        }
        if self.max_frame_bytes < 1024 {
            return bad("max_frame_bytes must be at least 1024".into());
        }
        if self.sync == SyncPolicy::Periodic && self.sync_interval_ms == 0 {
            return bad("sync_interval_ms must be at least 1 with sync = \"periodic\"".into());
        }
        if self.ownership_ttl_ms < 1000 {
            return bad(format!("ownership_ttl_ms must be at least 1000, not {}", self.ownership_ttl_ms));
        }
        // The lease only matters with etcd; there it must leave time to serve between renewals.
        if !self.etcd.is_empty() {
            self.lease_timing()?;
        }
        self.owned().map(|_| ())
    }

    /// The ownership lease's timing (with etcd).
    pub fn lease_timing(&self) -> Result<LeaseTiming, ConfigError> {
        LeaseTiming::new(self.ownership_ttl_ms, self.lease_ms).map_err(ConfigError::Invalid)
    }

    /// The owned shards as a membership table indexed by shard.
    pub fn owned(&self) -> Result<Vec<bool>, ConfigError> {
        let n = self.shards as usize;
        if self.owned_shards.is_empty() {
            return Ok(vec![true; n]);
        }
        let mut owned = vec![false; n];
        for range in &self.owned_shards {
            let parse = |s: &str| {
                s.trim().parse::<u32>().map_err(|_| ConfigError::Invalid(format!("owned_shards: bad range {range:?}")))
            };
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => (parse(range)?, parse(range)?),
            };
            if lo > hi || hi >= self.shards {
                return Err(ConfigError::Invalid(format!(
                    "owned_shards: range {range:?} is outside 0-{}",
                    self.shards - 1
                )));
            }
            owned[lo as usize..=hi as usize].iter_mut().for_each(|o| *o = true);
        }
        Ok(owned)
    }
}

/// Command-line and environment overrides of [`StoreConfig`]; each is optional so that an unset flag
/// leaves the file's value alone.
#[derive(Debug, Default, clap::Args)]
pub struct StoreFlags {
    /// TOML configuration file.
    #[arg(long, env = "VESTA_STORE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "VESTA_STORE_NODE")]
    pub node: Option<String>,
    #[arg(long, env = "VESTA_STORE_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "VESTA_STORE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[arg(long, env = "VESTA_STORE_ENGINE")]
    pub engine: Option<EngineKind>,
    #[arg(long, env = "VESTA_STORE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "VESTA_STORE_SYNC")]
    pub sync: Option<SyncPolicy>,
    #[arg(long, env = "VESTA_STORE_SYNC_INTERVAL_MS")]
    pub sync_interval_ms: Option<u64>,
    #[arg(long, env = "VESTA_STORE_LEASE_MS")]
    pub lease_ms: Option<u64>,
    #[arg(long, env = "VESTA_STORE_SHARDS")]
    pub shards: Option<u32>,
    /// Comma-separated ranges, e.g. `0-511,1000`.
    #[arg(long, env = "VESTA_STORE_OWNED_SHARDS", value_delimiter = ',')]
    pub owned_shards: Option<Vec<String>>,
    /// etcd endpoints (comma-separated): take the shard count and this node's shards from the map.
    #[arg(long, env = "VESTA_STORE_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    #[arg(long, env = "VESTA_STORE_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long, env = "VESTA_STORE_DROP_GRACE_MS")]
    pub drop_grace_ms: Option<u64>,
    #[arg(long, env = "VESTA_STORE_OWNERSHIP_TTL_MS")]
    pub ownership_ttl_ms: Option<u64>,
    #[arg(long, env = "VESTA_STORE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    #[arg(long, env = "VESTA_STORE_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    #[arg(long, env = "VESTA_STORE_GRACE_SECS")]
    pub grace_secs: Option<u64>,
    #[arg(long, env = "VESTA_STORE_REJOIN_CHECK")]
    pub rejoin_check: Option<bool>,
    #[arg(long, env = "VESTA_STORE_MAX_CLOCK_DRIFT_MS")]
    pub max_clock_drift_ms: Option<u64>,
    #[arg(long, env = "VESTA_STORE_CHANGELOG_ORIGIN")]
    pub changelog_origin: Option<u32>,
    /// Test-only: shift this node's wall clock by this many ms.
    #[arg(long, env = "VESTA_STORE_CLOCK_OFFSET_MS", hide = true, allow_negative_numbers = true)]
    pub clock_offset_ms: Option<i64>,
    #[arg(long, env = "VESTA_STORE_BLOCK_CACHE_MB")]
    pub block_cache_mb: Option<usize>,
    #[arg(long, env = "VESTA_STORE_WRITE_BUFFER_MB")]
    pub write_buffer_mb: Option<usize>,
    #[arg(long, env = "VESTA_STORE_RECORD_CACHE_ENTRIES")]
    pub record_cache_entries: Option<usize>,
    /// Mutual TLS: this node's certificate (with `--tls-key-file` and `--tls-ca-cert-file`).
    #[arg(long, env = "VESTA_STORE_TLS_CERT_FILE", requires_all = ["tls_key_file", "tls_ca_cert_file"])]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "VESTA_STORE_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// The cluster CA that peers' certificates must chain to.
    #[arg(long, env = "VESTA_STORE_TLS_CA_CERT_FILE", requires = "tls_cert_file")]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Without TLS, the addresses allowed to connect (comma-separated CIDRs).
    #[arg(long, env = "VESTA_STORE_ALLOWED_PEERS", value_delimiter = ',')]
    pub allowed_peers: Option<Vec<ipnet::IpNet>>,
}

impl StoreFlags {
    /// The file (or the defaults), then the flags on top, validated.
    pub fn resolve(self) -> Result<StoreConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => StoreConfig::from_file(path)?,
            None => StoreConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        set!(
            node,
            listen,
            engine,
            data_dir,
            sync,
            sync_interval_ms,
            lease_ms,
            shards,
            owned_shards,
            etcd,
            cluster,
            drop_grace_ms,
            ownership_ttl_ms,
            max_in_flight,
            max_frame_bytes,
            grace_secs,
            rejoin_check,
            max_clock_drift_ms,
            clock_offset_ms,
            block_cache_mb,
            write_buffer_mb,
            record_cache_entries,
            allowed_peers
        );
        if let (Some(cert_file), Some(key_file), Some(ca_file)) =
            (self.tls_cert_file, self.tls_key_file, self.tls_ca_cert_file)
        {
            c.tls = Some(vesta_tls::InternalTls { cert_file, key_file, ca_file });
        }
        if self.metrics_listen.is_some() {
            c.metrics_listen = self.metrics_listen;
        }
        if self.changelog_origin.is_some() {
            c.changelog_origin = self.changelog_origin;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.toml");
        std::fs::write(
            &path,
            "node = \"z1\"\nlease_ms = 900\nsync = \"periodic\"\nowned_shards = [\"0-3\", \"9\"]\nshards = 16\n",
        )
        .unwrap();
        let flags = StoreFlags { config: Some(path), lease_ms: Some(700), ..Default::default() };
        let c = flags.resolve().unwrap();
        assert_eq!((c.node.as_str(), c.lease_ms, c.sync), ("z1", 700, SyncPolicy::Periodic));
        let owned = c.owned().unwrap();
        assert_eq!(owned.iter().filter(|o| **o).count(), 5);
        assert!(owned[9] && !owned[8]);
    }

    #[test]
    fn bad_configs_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.toml");
        std::fs::write(&path, "lease = 3\n").unwrap();
        let err = StoreFlags { config: Some(path), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(err.contains("unknown field `lease`"), "{err}");
        let c = StoreConfig { owned_shards: vec!["5-2000".into()], ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("outside 0-1023"));
        let c = StoreConfig { ownership_ttl_ms: 900, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("ownership_ttl_ms must be at least 1000"));
        // Without etcd the lease is unused; with it, it must leave time to serve between renewals.
        let c = StoreConfig { ownership_ttl_ms: 1200, ..Default::default() };
        assert!(c.validate().is_ok());
        let c = StoreConfig { etcd: vec!["http://e:2379".into()], ..c };
        assert!(c.validate().unwrap_err().to_string().contains("plus lease_ms (600)"));
    }
}
