//! Per-connection state, and the proxy-wide figures INFO reports.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use crate::coordinator::KeyName;

/// Commands queued between MULTI and EXEC.
#[derive(Default)]
pub struct Queued {
    pub commands: Vec<Vec<Bytes>>,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    pub failed: bool,
}

/// A WATCHed key and the (HLC, origin) of its newest copy when WATCH read it (`None`: no copy at all).
/// Unset while WATCH's read is in flight, and forever if it failed — EXEC then fails safe.
pub struct Watched {
    pub key: KeyName,
    pub seen: Arc<OnceLock<Option<vesta_proto::Order>>>,
}

/// What one client connection has chosen: protocol, database (namespace), name.
pub struct Session {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub resp3: bool,
    pub db: u32,
    /// The namespace of `db`: its decimal text, so `SELECT 3` keys never meet `SELECT 0` keys.
    pub namespace: Bytes,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub created: Instant,
    /// Inside MULTI: the commands queued so far.
    pub multi: Option<Queued>,
    pub watched: Vec<Watched>,
    /// CLIENT REPLY OFF / SKIP.
    pub reply_mode: ReplyMode,
    /// The ACL user commands run as, and whether the connection has authenticated (see `acl`).
    pub user: Arc<crate::acl::User>,
    pub authenticated: bool,
    /// CLIENT TRACKING, while on (boxed: most connections never turn it on).
    pub tracking: Option<Box<crate::cmd::tracking::Tracking>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// Skip the reply of the next command only.
    Skip,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr) -> Self {
        Session {
            id,
            peer,
            local,
            resp3: false,
            db: 0,
            namespace: Bytes::from_static(b"0"),
            name: None,
            lib_name: None,
            lib_ver: None,
            created: Instant::now(),
            multi: None,
            watched: Vec::new(),
            reply_mode: ReplyMode::On,
            user: crate::acl::open_default_user(),
            authenticated: true,
            tracking: None,
        }
    }

    pub fn select(&mut self, db: u32) {
        self.db = db;
        self.namespace = Bytes::from(db.to_string());
    }

    /// This connection as a CLIENT INFO line, `cmd` being the command it runs.
    pub fn client_info(&self, cmd: &str) -> String {
        let d = crate::clients::Details::of(self);
        // Read while a command runs: nothing of it is left unparsed.
        crate::clients::line(self.id, self.peer, self.local, self.created, &d, ((0, 0), 0), cmd)
    }

    /// RESET: back to a fresh connection's state (the id stays); the caller logs it in again as the
    /// default user (`Acl::start_session`).
    pub fn reset(&mut self) {
        let (id, peer, local, created) = (self.id, self.peer, self.local, self.created);
        *self = Session::new(id, peer, local);
        self.created = created;
    }
}

/// Proxy-wide counters.
pub struct Shared {
    pub started: Instant,
    pub run_id: String,
    pub port: u16,
    pub next_client_id: AtomicU64,
    pub connected_clients: AtomicU64,
    pub total_connections: AtomicU64,
    pub total_commands: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub zones: usize,
    pub write_quorum: usize,
    pub read_quorum: usize,
    /// The shard map version routed by and the zones in maintenance, for INFO.
    pub map_view: parking_lot::RwLock<(u64, Vec<String>)>,
    pub clients: crate::clients::Clients,
    /// CONFIG SET values (most are accepted for compatibility and change nothing; see CONFIG in
    /// docs/compatibility.md).
    pub config: parking_lot::Mutex<std::collections::BTreeMap<String, String>>,
    /// Per command: calls, and calls refused before running (wrong arity), for INFO commandstats.
    pub stats: dashmap::DashMap<&'static str, (u64, u64)>,
    /// `proto-max-bulk-len` and `client-query-buffer-limit` (CONFIG SET changes them).
    pub limits: crate::limits::ClientLimits,
    /// Connections closed for going over `client-query-buffer-limit`.
    pub query_buffer_disconnections: AtomicU64,
    /// `timeout`, `client-output-buffer-limit` and `maxclients` (CONFIG SET changes them).
    pub edge: crate::edge::Edge,
    /// Connections closed for going over `client-output-buffer-limit`.
    pub output_buffer_disconnections: AtomicU64,
    /// The bound on data commands executing at once, and its surge queue.
    pub admission: Arc<crate::admission::Admission>,
    /// Users, AUTH, protected mode and their refusals.
    pub acl: crate::acl::Acl,
    /// Cross-site replication run by this proxy, for INFO replication (set once it starts).
    pub replication: std::sync::OnceLock<std::sync::Arc<dyn ReplicationReport>>,
    /// Encryption at rest (INFO's `# Encryption`).
    pub encryption: std::sync::Arc<crate::crypto::EncryptionState>,
    /// CLIENT PAUSE.
    pub pause: crate::cmd::pause::Pause,
    /// SLOWLOG and its settings.
    pub slowlog: crate::cmd::slowlog::SlowLog,
    /// LATENCY and `latency-monitor-threshold`.
    pub latency: crate::cmd::latency::LatencyMonitor,
    /// INFO keyspace's figures, cached between walks of the shards.
    pub keyspace_figures: crate::cmd::info_keyspace::KeyspaceFigures,
}

/// What INFO replication shows of the cross-site replication this proxy runs (`vesta-repl` reports it).
pub trait ReplicationReport: Send + Sync {
    /// `field:value` lines for the Replication section.
    fn info_fields(&self) -> Vec<(String, String)>;
    /// Stops (or resumes) shipping to the peer site named `peer`, or to every peer; how many it
    /// concerned. Nothing is lost while paused: the change logs keep every write.
    fn set_paused(&self, peer: Option<&str>, paused: bool) -> Result<usize, String>;
    /// Starts a full sync of the peer site named `peer` (or of every peer); how many it concerned.
    fn request_full_sync(&self, peer: Option<&str>) -> Result<usize, String>;
}

impl Shared {
    pub fn count_command(&self, name: &'static str, rejected: bool) {
        let mut entry = self.stats.entry(name).or_default();
        if rejected {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }

    /// A command finished after `took` (its execution, see `cmd::slowlog`): the slow log and the latency
    /// monitor look at it. `args` includes the command's name. Costs two atomic loads unless it is logged.
    pub fn command_took(
        &self,
        took: std::time::Duration,
        spec: &crate::cmd::Spec,
        args: &[Bytes],
        client: &crate::clients::Client,
    ) {
        if self.slowlog.wants(took) && !spec.flags.contains(&"skip_slowlog") {
            self.slowlog.push(took, args, client.peer, client.name());
        }
        if self.latency.enabled() {
            self.latency.record(took, spec.flags.contains(&"fast"));
        }
    }

    /// CONFIG RESETSTAT: the figures Redis resets (INFO stats' counters and commandstats). Not reset,
    /// as in Redis: the slow log, the latency monitor, the ACL denial counters; and Vesta's own
    /// (`vesta_*`, TLS handshakes), which its Prometheus counters mirror.
    pub fn reset_stats(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.total_connections.store(0, Relaxed);
        self.total_commands.store(0, Relaxed);
        self.rejected_connections.store(0, Relaxed);
        self.query_buffer_disconnections.store(0, Relaxed);
        self.output_buffer_disconnections.store(0, Relaxed);
        self.stats.clear();
    }

    /// (name, calls, rejected calls), by name.
    pub fn command_stats(&self) -> Vec<(&'static str, u64, u64)> {
        let mut all: Vec<_> = self.stats.iter().map(|e| (*e.key(), e.value().0, e.value().1)).collect();
        all.sort();
        all
    }
}
