//! `proxy.toml`: every key has a default and can be overridden by a flag or an environment variable
//! (`--node-timeout-ms 200` / `VESTA_PROXY_NODE_TIMEOUT_MS=200`); flags win over the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::limits;

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
    /// Redis's `maxclients`. Lowered at start to what the open-file limit allows (which the proxy first
    /// raises to its hard limit), as Redis does; CONFIG SET changes it.
    pub max_clients: usize,
    /// Commands of one connection executing at once; reading pauses beyond it.
    pub max_pipeline: usize,
    /// Redis's `timeout`: a connection with nothing in flight that stays silent this many seconds is
    /// closed (0: never). CONFIG SET changes it.
    pub timeout: u64,
    /// Redis's `client-output-buffer-limit` for normal clients, `"<hard> <soft> <soft-seconds>"`: a
    /// client holding more than `hard` bytes of replies it has not read, or more than `soft` for longer
    /// than `soft-seconds`, is disconnected (0: no such limit). CONFIG SET changes it.
    pub client_output_buffer_limit: crate::edge::OutputBufferLimit,
    /// New connections accepted per second, at most (bursts of a tenth of that); beyond it accepting
    /// waits and connections queue in the kernel's backlog. 0: no limit.
    pub max_accept_rate: u64,
    /// Data commands (those that reach the store nodes) executing at once in this proxy, over every
    /// connection; beyond it commands wait in the surge queue.
    pub max_in_flight: usize,
    /// Commands that may wait for a slot; beyond it a command is refused at once
    /// (`-TRYAGAIN proxy overloaded, try again`). 0: none waits.
    pub surge_queue_len: usize,
    /// CoDel's target: while the shortest wait in the surge queue over an interval stays above it,
    /// commands that waited more than twice the target are refused instead of run.
    pub codel_target_ms: u64,
    /// CoDel's interval.
    pub codel_interval_ms: u64,
    /// File descriptors kept for everything but clients when `max_clients` is checked against the
    /// open-file limit (`vesta dev` keeps more: its stores' files live in the same process).
    #[serde(skip)]
    pub reserved_fds: u64,
    /// How far apart this proxy's clock, the store nodes' clocks and the timestamps of the copies it
    /// reads may be before it refuses to write (see README → Guarantees). Keep it below a third of the
    /// stores' lease.
    pub max_clock_drift_ms: u64,
    /// Test-only: run this proxy's wall clock this many ms ahead (negative: behind) of the machine's,
    /// to show what clock skew does. Never set it in production.
    pub clock_offset_ms: i64,
    /// Redis's `proto-max-bulk-len`: the largest value (bulk string) a client may send, and the largest
    /// string APPEND, SETRANGE and SETBIT may build. At most 63 MiB: a value must reach the store nodes
    /// in one 64 MiB frame with its key.
    pub proto_max_bulk_len: usize,
    /// Redis's `client-query-buffer-limit`: the most bytes of one unparsed request a connection may
    /// hold; beyond it the connection is closed. Unset: 4 × `proto_max_bulk_len`.
    pub client_query_buffer_limit: Option<usize>,
    /// Cross-site replication (docs/replication.md): receiving other sites' writes, shipping this site's.
    pub replication: ReplicationConfig,
    /// Redis's `tls-port`: a TLS client port on the address of `listen`, beside the plaintext one (or
    /// instead of it, with `plaintext = false` — Redis's `port 0`).
    pub tls_port: Option<u16>,
    /// Whether `listen` serves plaintext clients.
    pub plaintext: bool,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The CA client certificates must chain to (needed unless `tls_auth_clients = "no"`).
    pub tls_ca_cert_file: Option<PathBuf>,
    /// `yes` (Redis's default): clients must present a certificate of `tls_ca_cert_file`; `optional`:
    /// verified if given; `no`.
    pub tls_auth_clients: vesta_tls::ClientAuth,
    /// `"TLSv1.2 TLSv1.3"` (the default); older protocols are not offered.
    pub tls_protocols: vesta_tls::Protocols,
    /// `[internal_tls]`: mutual TLS to the store nodes and between sites (replication, both ways).
    pub internal_tls: Option<vesta_tls::InternalTls>,
    /// Encryption at rest (docs/security.md).
    pub encryption: EncryptionConfig,
    /// Redis's `requirepass`: the default user's password (clients send `AUTH <password>`).
    pub requirepass: Option<String>,
    /// Redis's `protected-mode`: while the default user has no password, clients from beyond loopback
    /// are answered `-DENIED …` and disconnected.
    pub protected_mode: bool,
    /// Users (Redis ACL rules, bound to namespaces with `db=`) and the AUTH failure limit.
    pub acl: crate::acl::AclConfig,
}

/// `[encryption]` of `proxy.toml`. Encryption is on when keys are given: in `keys_file`, or in the
/// environment variable `VESTA_ENCRYPTION_KEYS` (`ID:BASE64KEY`, comma-separated), or both.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// A file of `ID:BASE64KEY` lines (32-byte keys). Keep it readable by the proxy only.
    pub keys_file: Option<PathBuf>,
    /// The key that seals new writes; unset: the highest id.
    pub current_key: Option<u32>,
    /// Values one derived data key seals before a fresh one is drawn (the nonce bound; at most 2^32).
    pub records_per_data_key: u64,
    /// Refuse values stored in the clear (turn on once `vesta admin reencrypt` reports none left): a
    /// header whose encrypted flag was cleared is then an error, not ciphertext handed to a client.
    pub refuse_clear: bool,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            keys_file: None,
            current_key: None,
            records_per_data_key: crate::crypto::DEFAULT_RECORDS_PER_DATA_KEY,
            refuse_clear: false,
        }
    }
}

/// `[replication]` of `proxy.toml`. A site replicates when its store nodes log their commits
/// (`changelog_origin` = this proxy's `origin`), one of its proxies ships (`ship`) and the peers' proxies
/// listen.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Where peer sites deliver their writes; this proxy installs them in this site. Unset: it receives
    /// nothing.
    pub listen: Option<SocketAddr>,
    /// Ship this site's writes to every peer. One proxy of a site ships; if it stops, nothing is lost
    /// (the store nodes' change logs keep every write until every peer confirmed it) and shipping resumes
    /// from the last confirmation when it (or another proxy with `ship`) starts.
    pub ship: bool,
    /// The other sites.
    pub peers: Vec<PeerSite>,
    /// How often the change logs are read.
    pub poll_ms: u64,
    /// How often the peers' confirmations are saved (in this site's own storage, through the two-phase
    /// commit) and the logs trimmed behind them. A new shipper re-sends at most this much.
    pub confirm_ms: u64,
    /// The change logs' bound: entries older than this are trimmed even if a peer has not confirmed
    /// them, and that peer is switched to "needs full sync" first (loudly: log, metric, status). The
    /// disk the logs take is about the site's write rate times this.
    pub max_backlog_secs: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listen: None,
            ship: false,
            peers: Vec::new(),
            poll_ms: 50,
            confirm_ms: 1000,
            max_backlog_secs: 6 * 3600,
        }
    }
}

/// Another site: its name (for metrics and status), its origin id and its replication listener — or
/// several, separated by `|` (its proxies that listen), tried in order.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerSite {
    pub name: String,
    pub origin: u32,
    pub addr: String,
}

impl std::str::FromStr for PeerSite {
    type Err = String;

    /// `NAME=ORIGIN@HOST:PORT`, as `--repl-peer` takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("a peer site is NAME=ORIGIN@HOST:PORT (e.g. b=2@10.0.2.5:7400), not {s:?}");
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let (origin, addr) = rest.split_once('@').ok_or_else(bad)?;
        let origin = origin.parse().map_err(|_| bad())?;
        if name.is_empty() || addr.is_empty() {
            return Err(bad());
        }
        Ok(PeerSite { name: name.into(), origin, addr: addr.into() })
    }
}

impl ReplicationConfig {
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.ship
    }

    fn validate(&self, origin: u32) -> Result<(), String> {
        if self.poll_ms == 0 || self.confirm_ms == 0 {
            return Err("replication.poll_ms and replication.confirm_ms must be at least 1".into());
        }
        if self.max_backlog_secs.saturating_mul(1000) < self.confirm_ms.saturating_mul(10) {
            return Err("replication.max_backlog_secs must be at least 10 × confirm_ms".into());
        }
        if self.ship && self.peers.is_empty() {
            return Err("replication.ship is set but no peer site is configured".into());
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if p.origin == origin {
                return Err(format!("peer site {} has this site's own origin {origin}", p.name));
            }
            if !seen.insert(p.origin) {
                return Err(format!("two peer sites have origin {}", p.origin));
            }
        }
        Ok(())
    }
}

/// Data commands executing at once, by default: 128 per core, at least 256. Commands executing are
/// runnable tasks; every one ahead of a command in the runtime's queue is latency it pays (Little's law:
/// 4096 in flight at 20,000 commands/s is 200 ms before any work on it). A few hundred keep every core
/// and store node busy, and the excess waits in the surge queue, where CoDel sees it.
pub fn default_max_in_flight() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (128 * cores).max(256)
}
pub const DEFAULT_SURGE_QUEUE_LEN: usize = 8192;
pub const DEFAULT_CODEL_TARGET_MS: u64 = 20;
pub const DEFAULT_CODEL_INTERVAL_MS: u64 = 200;

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
            timeout: 0,
            client_output_buffer_limit: crate::edge::OutputBufferLimit::DEFAULT_NORMAL,
            max_accept_rate: 10_000,
            max_in_flight: default_max_in_flight(),
            surge_queue_len: DEFAULT_SURGE_QUEUE_LEN,
            codel_target_ms: DEFAULT_CODEL_TARGET_MS,
            codel_interval_ms: DEFAULT_CODEL_INTERVAL_MS,
            reserved_fds: crate::edge::RESERVED_FDS,
            max_clock_drift_ms: 100,
            clock_offset_ms: 0,
            proto_max_bulk_len: limits::DEFAULT_PROTO_MAX_BULK_LEN,
            client_query_buffer_limit: None,
            replication: ReplicationConfig::default(),
            tls_port: None,
            plaintext: true,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_cert_file: None,
            tls_auth_clients: vesta_tls::ClientAuth::Yes,
            tls_protocols: vesta_tls::Protocols::default(),
            internal_tls: None,
            encryption: EncryptionConfig::default(),
            requirepass: None,
            protected_mode: true,
            acl: crate::acl::AclConfig::default(),
        }
    }
}

impl ProxyConfig {
    /// The TLS client port's address, when one is configured.
    pub fn tls_listen(&self) -> Option<SocketAddr> {
        self.tls_port.map(|port| SocketAddr::new(self.listen.ip(), port))
    }

    /// The TLS client port's configuration (reloaded when its files change), when one is configured.
    pub fn client_port_tls(&self) -> Result<Option<vesta_tls::ServerTls>, String> {
        let (Some(_), Some(cert_file), Some(key_file)) = (self.tls_port, &self.tls_cert_file, &self.tls_key_file)
        else {
            return Ok(None);
        };
        let files = vesta_tls::TlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            ca_file: self.tls_ca_cert_file.clone(),
        };
        vesta_tls::ServerTls::client_port(&files, self.tls_auth_clients, self.tls_protocols)
            .map(Some)
            .map_err(|e| format!("TLS client port: {e}"))
    }

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
        if self.timeout > crate::edge::MAX_TIMEOUT {
            return Err(format!("timeout must be between 0 and {} seconds", crate::edge::MAX_TIMEOUT));
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        if self.codel_target_ms == 0 || self.codel_interval_ms < self.codel_target_ms {
            return Err("codel_target_ms must be at least 1 and codel_interval_ms at least codel_target_ms".into());
        }
        limits::check_proto_max_bulk_len(self.proto_max_bulk_len as u64).map_err(|_| {
            format!(
                "proto_max_bulk_len must be between {} (1 MiB) and {} (the 64 MiB internal frame limit minus 1 MiB \
                 for the key and metadata), not {}",
                limits::MIN_PROTO_MAX_BULK_LEN,
                limits::MAX_PROTO_MAX_BULK_LEN,
                self.proto_max_bulk_len
            )
        })?;
        self.replication.validate(self.origin)?;
        if self.tls_port.is_some() && (self.tls_cert_file.is_none() || self.tls_key_file.is_none()) {
            return Err("tls_port needs tls_cert_file and tls_key_file".into());
        }
        if !self.plaintext && self.tls_port.is_none() {
            return Err("plaintext = false needs a tls_port, or no client could connect".into());
        }
        if self.encryption.records_per_data_key == 0
            || self.encryption.records_per_data_key > crate::crypto::DEFAULT_RECORDS_PER_DATA_KEY
        {
            return Err("encryption.records_per_data_key must be between 1 and 4294967296".into());
        }
        self.build_acl().map_err(|e| e.to_string())?;
        if let Some(limit) = self.client_query_buffer_limit {
            limits::check_query_buffer_limit(limit as u64).map_err(|_| {
                format!(
                    "client_query_buffer_limit must be at least {} (1 MiB), not {limit}",
                    limits::MIN_QUERY_BUFFER_LIMIT
                )
            })?;
        }
        Ok(())
    }
}

impl ProxyConfig {
    /// The users, AUTH limit and protected mode this configuration describes.
    pub fn build_acl(&self) -> Result<crate::acl::Acl, crate::acl::AclConfigError> {
        crate::acl::Acl::new(self.requirepass.as_deref(), &self.acl, self.protected_mode)
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
    /// Close connections idle (nothing in flight) for this many seconds; 0: never (Redis's timeout).
    #[arg(long, env = "VESTA_PROXY_TIMEOUT")]
    pub timeout: Option<u64>,
    /// "<hard> <soft> <soft-seconds>" for normal clients, e.g. "256mb 64mb 60" (Redis's
    /// client-output-buffer-limit).
    #[arg(long, env = "VESTA_PROXY_CLIENT_OUTPUT_BUFFER_LIMIT")]
    pub client_output_buffer_limit: Option<crate::edge::OutputBufferLimit>,
    /// New connections accepted per second, at most (0: no limit).
    #[arg(long, env = "VESTA_PROXY_MAX_ACCEPT_RATE")]
    pub max_accept_rate: Option<u64>,
    /// Data commands executing at once in this proxy; beyond it they wait in the surge queue.
    #[arg(long, env = "VESTA_PROXY_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Commands that may wait for a slot; beyond it they are refused (-TRYAGAIN) at once.
    #[arg(long, env = "VESTA_PROXY_SURGE_QUEUE_LEN")]
    pub surge_queue_len: Option<usize>,
    /// CoDel target of the surge queue, ms.
    #[arg(long, env = "VESTA_PROXY_CODEL_TARGET_MS")]
    pub codel_target_ms: Option<u64>,
    /// CoDel interval of the surge queue, ms.
    #[arg(long, env = "VESTA_PROXY_CODEL_INTERVAL_MS")]
    pub codel_interval_ms: Option<u64>,
    #[arg(long, env = "VESTA_PROXY_MAX_CLOCK_DRIFT_MS")]
    pub max_clock_drift_ms: Option<u64>,
    /// Test-only: shift this proxy's wall clock by this many ms.
    #[arg(long, env = "VESTA_PROXY_CLOCK_OFFSET_MS", hide = true, allow_negative_numbers = true)]
    pub clock_offset_ms: Option<i64>,
    /// The largest value a client may send, in bytes (Redis's proto-max-bulk-len; at most 66060288).
    #[arg(long, env = "VESTA_PROXY_PROTO_MAX_BULK_LEN")]
    pub proto_max_bulk_len: Option<usize>,
    /// The most bytes of one unparsed request a connection may hold (default 4 × proto-max-bulk-len).
    #[arg(long, env = "VESTA_PROXY_CLIENT_QUERY_BUFFER_LIMIT")]
    pub client_query_buffer_limit: Option<usize>,
    /// Receive other sites' writes on this address (`replication.listen`).
    #[arg(long, env = "VESTA_PROXY_REPL_LISTEN")]
    pub repl_listen: Option<SocketAddr>,
    /// Ship this site's writes to the peer sites (`replication.ship`).
    #[arg(long, env = "VESTA_PROXY_REPL_SHIP")]
    pub repl_ship: bool,
    /// A peer site, NAME=ORIGIN@HOST:PORT; repeat for each (replaces `replication.peers`).
    #[arg(long, env = "VESTA_PROXY_REPL_PEERS", value_delimiter = ',')]
    pub repl_peer: Option<Vec<PeerSite>>,
    /// The change logs' bound in seconds (`replication.max_backlog_secs`).
    #[arg(long, env = "VESTA_PROXY_REPL_MAX_BACKLOG_SECS")]
    pub repl_max_backlog_secs: Option<u64>,
    /// A TLS client port on the address of --listen (Redis's tls-port).
    #[arg(long, env = "VESTA_PROXY_TLS_PORT")]
    pub tls_port: Option<u16>,
    /// Serve plaintext clients on --listen (false: TLS only, like Redis's `port 0`).
    #[arg(long, env = "VESTA_PROXY_PLAINTEXT")]
    pub plaintext: Option<bool>,
    #[arg(long, env = "VESTA_PROXY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "VESTA_PROXY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    #[arg(long, env = "VESTA_PROXY_TLS_CA_CERT_FILE")]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// yes | no | optional (Redis's tls-auth-clients).
    #[arg(long, env = "VESTA_PROXY_TLS_AUTH_CLIENTS")]
    pub tls_auth_clients: Option<vesta_tls::ClientAuth>,
    /// e.g. "TLSv1.2 TLSv1.3" (Redis's tls-protocols).
    #[arg(long, env = "VESTA_PROXY_TLS_PROTOCOLS")]
    pub tls_protocols: Option<vesta_tls::Protocols>,
    /// Mutual TLS to store nodes and peer sites: this proxy's certificate (with --internal-tls-key-file
    /// and --internal-tls-ca-file).
    #[arg(long, env = "VESTA_PROXY_INTERNAL_TLS_CERT_FILE", requires_all = ["internal_tls_key_file", "internal_tls_ca_file"])]
    pub internal_tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "VESTA_PROXY_INTERNAL_TLS_KEY_FILE", requires = "internal_tls_cert_file")]
    pub internal_tls_key_file: Option<PathBuf>,
    #[arg(long, env = "VESTA_PROXY_INTERNAL_TLS_CA_FILE", requires = "internal_tls_cert_file")]
    pub internal_tls_ca_file: Option<PathBuf>,
    /// Encryption keys, one `ID:BASE64KEY` per line (`encryption.keys_file`; keys may also come from
    /// `VESTA_ENCRYPTION_KEYS`).
    #[arg(long, env = "VESTA_PROXY_ENCRYPTION_KEYS_FILE")]
    pub encryption_keys_file: Option<PathBuf>,
    /// The key id that seals new writes (`encryption.current_key`; default the highest).
    #[arg(long, env = "VESTA_PROXY_ENCRYPTION_CURRENT_KEY")]
    pub encryption_current_key: Option<u32>,
    /// Refuse values stored in the clear (`encryption.refuse_clear`).
    #[arg(long, env = "VESTA_PROXY_ENCRYPTION_REFUSE_CLEAR")]
    pub encryption_refuse_clear: bool,
    /// The default user's password (Redis's requirepass). Prefer the file or the environment: a flag
    /// shows in the process list.
    #[arg(long, env = "VESTA_PROXY_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Redis's protected mode (`true`/`false`, default true).
    #[arg(long, env = "VESTA_PROXY_PROTECTED_MODE")]
    pub protected_mode: Option<bool>,
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
            timeout,
            client_output_buffer_limit,
            max_accept_rate,
            max_in_flight,
            surge_queue_len,
            codel_target_ms,
            codel_interval_ms,
            max_clock_drift_ms,
            clock_offset_ms,
            proto_max_bulk_len,
            protected_mode
        );
        if self.requirepass.is_some() {
            c.requirepass = self.requirepass;
        }
        if self.metrics_listen.is_some() {
            c.metrics_listen = self.metrics_listen;
        }
        if self.map_cache.is_some() {
            c.map_cache = self.map_cache;
        }
        if self.client_query_buffer_limit.is_some() {
            c.client_query_buffer_limit = self.client_query_buffer_limit;
        }
        if self.repl_listen.is_some() {
            c.replication.listen = self.repl_listen;
        }
        c.replication.ship |= self.repl_ship;
        if let Some(peers) = self.repl_peer {
            c.replication.peers = peers;
        }
        if let Some(secs) = self.repl_max_backlog_secs {
            c.replication.max_backlog_secs = secs;
        }
        set!(plaintext, tls_auth_clients, tls_protocols);
        if self.tls_port.is_some() {
            c.tls_port = self.tls_port;
        }
        if self.tls_cert_file.is_some() {
            c.tls_cert_file = self.tls_cert_file;
        }
        if self.tls_key_file.is_some() {
            c.tls_key_file = self.tls_key_file;
        }
        if self.tls_ca_cert_file.is_some() {
            c.tls_ca_cert_file = self.tls_ca_cert_file;
        }
        if let (Some(cert_file), Some(key_file), Some(ca_file)) =
            (self.internal_tls_cert_file, self.internal_tls_key_file, self.internal_tls_ca_file)
        {
            c.internal_tls = Some(vesta_tls::InternalTls { cert_file, key_file, ca_file });
        }
        if self.encryption_keys_file.is_some() {
            c.encryption.keys_file = self.encryption_keys_file;
        }
        if self.encryption_current_key.is_some() {
            c.encryption.current_key = self.encryption_current_key;
        }
        c.encryption.refuse_clear |= self.encryption_refuse_clear;
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_max_bulk_len_stays_below_the_frame_limit() {
        let with = |proto_max_bulk_len| ProxyConfig { proto_max_bulk_len, ..ProxyConfig::default() };
        assert_eq!(ProxyConfig::default().proto_max_bulk_len, 32 * 1024 * 1024);
        assert!(with(63 * 1024 * 1024).validate().is_ok());
        assert!(with(1024 * 1024).validate().is_ok());
        let e = with(63 * 1024 * 1024 + 1).validate().unwrap_err();
        assert!(e.starts_with("proto_max_bulk_len must be between 1048576 (1 MiB) and 66060288"), "{e}");
        assert!(!e.contains('\n'));
        assert!(with(512 * 1024 * 1024).validate().is_err());
        assert!(with(1000).validate().is_err());
        let small_query = ProxyConfig { client_query_buffer_limit: Some(1000), ..ProxyConfig::default() };
        assert!(small_query.validate().is_err());
    }

    #[test]
    fn from_a_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("vesta-proxy-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("proxy.toml");
        std::fs::write(&file, "proto_max_bulk_len = 2097152\nclient_query_buffer_limit = 4194304\n").unwrap();
        let flags = ProxyFlags { config: Some(file.clone()), ..ProxyFlags::default() };
        let c = flags.resolve().unwrap();
        assert_eq!((c.proto_max_bulk_len, c.client_query_buffer_limit), (2097152, Some(4194304)));
        let flags = ProxyFlags { config: Some(file), proto_max_bulk_len: Some(3145728), ..ProxyFlags::default() };
        assert_eq!(flags.resolve().unwrap().proto_max_bulk_len, 3145728);

        let file = dir.join("edge.toml");
        let text = "timeout = 300\nclient_output_buffer_limit = \"normal 1mb 512kb 10\"\nmax_in_flight = 64\n";
        std::fs::write(&file, text).unwrap();
        let flags = ProxyFlags {
            config: Some(file.clone()),
            client_output_buffer_limit: Some("0 0 0".parse().unwrap()),
            ..ProxyFlags::default()
        };
        let c = flags.resolve().unwrap();
        assert_eq!((c.timeout, c.max_in_flight), (300, 64));
        assert_eq!(c.client_output_buffer_limit, crate::edge::OutputBufferLimit::UNLIMITED, "the flag wins");
        std::fs::write(&file, "client_output_buffer_limit = \"pubsub 1 1 1\"\n").unwrap();
        let e = ProxyFlags { config: Some(file.clone()), ..ProxyFlags::default() }.resolve().unwrap_err();
        assert!(e.contains("only the normal class"), "{e}");
        std::fs::write(&file, "timeout = 4294967296\n").unwrap();
        assert!(ProxyFlags { config: Some(file), ..ProxyFlags::default() }.resolve().is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn replication_section_and_flags() {
        let text = "origin = 1\n[replication]\nship = true\npeers = [{ name = \"b\", origin = 2, addr = \"127.0.0.1:7401\" }]\n";
        let c: ProxyConfig = toml::from_str(text).unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.replication.peers[0], "b=2@127.0.0.1:7401".parse().unwrap());
        assert!("b@127.0.0.1:1".parse::<PeerSite>().is_err());
        assert!("b=x@127.0.0.1:1".parse::<PeerSite>().is_err());
        let own = ProxyConfig {
            replication: ReplicationConfig { peers: vec!["a=1@h:1".parse().unwrap()], ..c.replication.clone() },
            ..c.clone()
        };
        assert!(own.validate().unwrap_err().contains("own origin"), "a peer with this site's origin");
        let lonely = ProxyConfig { replication: ReplicationConfig { peers: vec![], ..c.replication.clone() }, ..c };
        assert!(lonely.validate().is_err(), "shipping to nobody");
    }
}
