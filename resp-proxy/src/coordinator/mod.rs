//! The coordinator: the single two-phase-commit driver every Redis command runs through (DESIGN §4).
//!
//! A command supplies a pure decision — given the newest live copy of its key, what to write (if
//! anything) and what to answer — and the coordinator does the rest: prepare on the storage group,
//! pick the newest copy of a write quorum, commit, repair, retry on contention.

mod group;
mod hlc;
mod key_queue;
mod read;
mod read_group;
mod reencrypt;
mod scan;
mod sealing;
mod transaction;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::Notify;

use bytes::Bytes;
use vesta_proto::clock::Clock;
use vesta_proto::{KeyRef, Record, Request, RequestId};

pub use group::KeyWrite;
use hlc::Hlc;
use key_queue::KeyQueue;
pub use reencrypt::ReencryptPage;
pub use scan::{ScanPage, ScanRequest};
pub use transaction::{KeyName, ManyDecision};

use crate::pool::{LocalNodes, NodeError, NodePool};
use crate::resp::Reply;
use crate::topology::{ShardMap, StaticMap, Topology};

#[derive(Debug, Clone)]
pub struct QuorumSettings {
    pub write_quorum: usize,
    pub read_quorum: usize,
    /// How long a client command may take, retries included.
    pub deadline: Duration,
    /// This data centre's id (orders copies with equal HLCs).
    pub origin: u32,
    /// How far apart this proxy's clock and the store nodes' (and the timestamps of the copies it reads)
    /// may be. Beyond it the proxy refuses to write rather than stamp writes that drag the cluster's
    /// clock (or follow a peer that does).
    pub max_clock_drift_ms: u64,
}

impl QuorumSettings {
    /// How much of a prepare lease must be left for the coordinator to still commit under it. Once a
    /// lease ends, another coordinator may prepare the key on that replica without seeing this write;
    /// its timestamp must still order after this one's, which holds when the leases outlast the
    /// decision by more than the clocks can disagree (this proxy's, the other's, and the copies'), plus
    /// a margin for the commit's trip.
    pub fn lease_guard_ms(&self) -> u64 {
        3 * self.max_clock_drift_ms + 50
    }
}

/// What a write leaves behind.
#[derive(Debug, Clone, PartialEq)]
pub struct NewValue {
    pub value: Bytes,
    /// Unix ms, 0 = never.
    pub expires_at: u64,
    /// A delete: the record becomes a tombstone (kept until `expires_at`, or the store's retention).
    pub tombstone: bool,
    /// What becomes of the key's per-site counter contributions (`vesta_proto::counter`).
    pub counter: CounterChange,
}

/// How a write changes a counter's per-site contributions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CounterChange {
    /// Any write but an increment or a TTL change: the key is a plain value again (a reset).
    #[default]
    Reset,
    /// The value is unchanged (EXPIRE, PERSIST, GETEX): contributions stay as they are.
    Keep,
    /// An increment, added to this site's contribution (a counter starts on the current copy).
    Add { int: i64, float: f64 },
}

impl CounterChange {
    /// `self`, then `next`, as one change (several commands of one MULTI on one key).
    pub fn then(self, next: CounterChange) -> CounterChange {
        use CounterChange::*;
        match (self, next) {
            (_, Reset) | (Reset, _) => Reset,
            (Keep, n) => n,
            (a @ Add { .. }, Keep) => a,
            (Add { int: a, float: f }, Add { int: b, float: g }) => Add { int: a.wrapping_add(b), float: f + g },
        }
    }
}

impl NewValue {
    /// A new value for a key that keeps the key's expiry, as INCR, APPEND and SETRANGE do.
    pub fn keeping_ttl(live: Option<&Record>, value: Bytes) -> Self {
        NewValue {
            value,
            expires_at: live.map_or(0, |r| r.meta.expires_at),
            tombstone: false,
            counter: CounterChange::Reset,
        }
    }

    /// A plain value (a reset of any counter) with this expiry.
    pub fn plain(value: Bytes, expires_at: u64) -> Self {
        NewValue { value, expires_at, tombstone: false, counter: CounterChange::Reset }
    }

    /// The same value (and counter) with another expiry.
    pub fn same_value(value: Bytes, expires_at: u64) -> Self {
        NewValue { value, expires_at, tombstone: false, counter: CounterChange::Keep }
    }
}

/// A command's decision on the newest live copy.
#[derive(Debug)]
pub enum Decision {
    /// Write this and answer that once a write quorum has it.
    Write(NewValue, Reply),
    /// Write nothing (release the leases) and answer this.
    Answer(Reply),
    /// Install exactly this record — a copy made in another site, keeping its HLC, origin and writer —
    /// if it is newer than every copy of the quorum, dead ones included; answer `1` if it was installed,
    /// `0` if a newer (or the same) copy was there. See [`Coordinator::install_copy`].
    Install(Record),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error("CLUSTERDOWN only {reached} of {needed} replicas needed for a quorum are reachable")]
    Unavailable { reached: usize, needed: usize },
    #[error("TRYAGAIN the key is being written by other clients; try again")]
    Contended,
    /// The commit phase began but fewer than W replicas confirmed: the write may or may not surface.
    #[error(
        "CLUSTERDOWN write outcome unknown: {acked} of {needed} replicas confirmed the commit; it may still be applied"
    )]
    OutcomeUnknown { acked: usize, needed: usize },
    /// The key's shard is being handed to other nodes, or this proxy's shard map is behind: retry.
    #[error("TRYAGAIN the key's shard is moving between nodes; try again")]
    Moved,
    /// Clocks disagree by more than `max_clock_drift_ms`; nothing was written (or read).
    #[error("CLUSTERDOWN clock skew: {0}; nothing was written")]
    ClockSkew(String),
    /// A store node's share of the write does not fit in one internal message: refused before the
    /// commit phase, so nothing was written.
    #[error("ERR write too large: {len} bytes for one store node, over the internal message limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A stored value did not open: nothing of it reaches the client (docs/security.md).
    #[error("ERR value of key '{key}' failed to decrypt (key id {key_id}): {why}")]
    Decrypt { key: String, key_id: u32, why: crate::crypto::OpenError },
    #[error("ERR value could not be encrypted: {0}")]
    Seal(crate::crypto::SealError),
}

impl CoordError {
    pub fn reply(&self) -> Reply {
        Reply::Error(self.to_string())
    }
}

/// Request ids unique across proxies: a random 64-bit prefix per process and a counter.
struct RequestIds {
    prefix: u128,
    next: AtomicU64,
}

impl RequestIds {
    fn next(&self) -> RequestId {
        RequestId(self.prefix | self.next.fetch_add(1, Ordering::Relaxed) as u128)
    }
}

pub struct Coordinator {
    /// Swapped whole when a new shard map version arrives; each request works on one version.
    map: RwLock<Arc<dyn ShardMap>>,
    /// Woken when a store node says `not-owner`: this proxy's map may be behind.
    refresh: Notify,
    /// The cluster's shard count: fixed at creation, the same in every map version.
    shards: u32,
    pool: NodePool,
    settings: QuorumSettings,
    clock: Arc<dyn Clock>,
    hlc: Hlc,
    ids: RequestIds,
    queue: KeyQueue,
    /// When a clock-skew refusal was last logged (monotonic ms; 0 = never).
    skew_logged_ms: AtomicU64,
    /// Encryption at rest: off until [`crate::crypto::EncryptionState::enable`].
    encryption: Arc<crate::crypto::EncryptionState>,
}

impl Coordinator {
    pub fn new(
        topology: &Topology,
        node_timeout: Duration,
        settings: QuorumSettings,
        locals: &LocalNodes,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let pool = NodePool::new(node_timeout, locals);
        let map: Arc<dyn ShardMap> = Arc::new(StaticMap::new(topology, |addr| pool.index_of(addr)));
        let ids = RequestIds { prefix: (rand::random::<u64>() as u128) << 64, next: AtomicU64::new(1) };
        Arc::new(Coordinator {
            map: RwLock::new(map),
            refresh: Notify::new(),
            shards: topology.shards,
            pool,
            settings,
            clock,
            hlc: Hlc::default(),
            ids,
            queue: KeyQueue::default(),
            skew_logged_ms: AtomicU64::new(0),
            encryption: Default::default(),
        })
    }

    /// The shard map requests start on now.
    pub fn map(&self) -> Arc<dyn ShardMap> {
        self.map.read().clone()
    }

    /// Switches to a new map (a new version, or zones going in or out of maintenance). The shard count
    /// and quorums are the cluster's for good and cannot change here.
    pub fn install(&self, topology: &Topology) -> Result<(), String> {
        topology.validate()?;
        if topology.shards != self.shards {
            return Err(format!("the new map has {} shards, this proxy {}", topology.shards, self.shards));
        }
        if (topology.write_quorum, topology.read_quorum) != (self.settings.write_quorum, self.settings.read_quorum) {
            return Err("the new map changes the quorums; restart the proxy to apply that".into());
        }
        let map = StaticMap::new(topology, |addr| self.pool.index_of(addr));
        tracing::info!(version = topology.version, down_zones = ?topology.down_zones, "switched to a new shard map");
        metrics::gauge!(crate::metrics::MAP_VERSION).set(topology.version as f64);
        *self.map.write() = Arc::new(map);
        Ok(())
    }

    /// Asks whoever follows the cluster's map (etcd) to check for a newer one now.
    fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Resolves when a request found this proxy's map possibly stale.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await
    }

    pub fn pool(&self) -> &NodePool {
        &self.pool
    }

    pub fn settings(&self) -> &QuorumSettings {
        &self.settings
    }

    /// This proxy's wall clock (Unix ms): what expiry is judged by and writes are stamped from.
    pub fn now_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// Refuses a request no store node would accept in one frame, before anything is sent.
    fn check_fits(&self, request: &Request) -> Result<(), CoordError> {
        match self.pool.fits(request) {
            Err(NodeError::TooLarge { len, max }) => Err(CoordError::TooLarge { len, max }),
            _ => Ok(()),
        }
    }

    fn target(&self, namespace: &Bytes, key: &Bytes) -> KeyRef {
        KeyRef { shard: vesta_proto::shard::shard_of(key, self.shards), namespace: namespace.clone(), key: key.clone() }
    }
}

/// The newest of some copies by the order of copies (dead ones included: a tombstone or an expired
/// record beats an older live copy); `None` only if there is no copy at all.
fn newest<'a>(copies: impl Iterator<Item = &'a Option<Record>>) -> Option<&'a Record> {
    copies.flatten().max_by_key(|r| r.meta.order())
}

fn order(copy: &Option<Record>) -> Option<vesta_proto::Order> {
    copy.as_ref().map(|r| r.meta.order())
}

/// After a `not-owner`: ask for a fresher map, then wait a little before the next attempt (a handoff
/// takes about a lease).
async fn after_moved(coordinator: &Coordinator, attempt: u32) {
    coordinator.request_refresh();
    let ms = 10 + rand::random::<u64>() % (10 << attempt.min(4));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Jittered exponential back-off between attempts on a contended key.
async fn back_off(attempt: u32) {
    let ceiling = 1u64 << attempt.min(5); // 1..32 ms
    let ms = rand::random::<u64>() % ceiling + 1;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
