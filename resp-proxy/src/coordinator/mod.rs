//! The coordinator: the single two-phase-commit driver every Redis command runs through (DESIGN §4).
//!
//! A command supplies a pure decision — given the newest live copy of its key, what to write (if
//! anything) and what to answer — and the coordinator does the rest: prepare on the storage group,
//! pick the newest copy of a write quorum, commit, repair, retry on contention.

mod hlc;
mod key_queue;
mod read;
mod scan;
mod transaction;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vesta_proto::{KeyRef, Record, RequestId};

pub use hlc::wall_ms;
use hlc::Hlc;
use key_queue::KeyQueue;
pub use scan::{ScanPage, ScanRequest};
pub use transaction::{KeyName, ManyDecision};

use crate::pool::{LocalNodes, NodePool};
use crate::resp::Reply;
use crate::topology::ShardMap;

#[derive(Debug, Clone)]
pub struct QuorumSettings {
    pub write_quorum: usize,
    pub read_quorum: usize,
    /// How long a client command may take, retries included.
    pub deadline: Duration,
    /// This data centre's id (orders copies with equal HLCs).
    pub origin: u32,
}

/// What a write leaves behind.
#[derive(Debug, Clone, PartialEq)]
pub struct NewValue {
    pub value: Bytes,
    /// Unix ms, 0 = never.
    pub expires_at: u64,
    /// A delete: the record becomes a tombstone (kept until `expires_at`, or the store's retention).
    pub tombstone: bool,
}

impl NewValue {
    /// A new value for a key that keeps the key's expiry, as INCR, APPEND and SETRANGE do.
    pub fn keeping_ttl(live: Option<&Record>, value: Bytes) -> Self {
        NewValue { value, expires_at: live.map_or(0, |r| r.meta.expires_at), tombstone: false }
    }
}

/// A command's decision on the newest live copy.
#[derive(Debug)]
pub enum Decision {
    /// Write this and answer that once a write quorum has it.
    Write(NewValue, Reply),
    /// Write nothing (release the leases) and answer this.
    Answer(Reply),
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
    map: Arc<dyn ShardMap>,
    pool: NodePool,
    settings: QuorumSettings,
    hlc: Hlc,
    ids: RequestIds,
    queue: KeyQueue,
}

impl Coordinator {
    pub fn new(
        map: Arc<dyn ShardMap>,
        node_timeout: Duration,
        settings: QuorumSettings,
        locals: &LocalNodes,
    ) -> Arc<Self> {
        let pool = NodePool::new(map.nodes(), node_timeout, locals);
        let ids = RequestIds { prefix: (rand::random::<u64>() as u128) << 64, next: AtomicU64::new(1) };
        Arc::new(Coordinator { map, pool, settings, hlc: Hlc::default(), ids, queue: KeyQueue::default() })
    }

    pub fn pool(&self) -> &NodePool {
        &self.pool
    }

    pub fn settings(&self) -> &QuorumSettings {
        &self.settings
    }

    fn target(&self, namespace: &Bytes, key: &Bytes) -> KeyRef {
        KeyRef {
            shard: vesta_proto::shard::shard_of(key, self.map.shards()),
            namespace: namespace.clone(),
            key: key.clone(),
        }
    }
}

/// The newest of some copies by (HLC, origin); `None` only if there is no copy at all.
fn newest<'a>(copies: impl Iterator<Item = &'a Option<Record>>) -> Option<&'a Record> {
    copies.flatten().max_by_key(|r| r.meta.order())
}

fn order(copy: &Option<Record>) -> Option<(u64, u32)> {
    copy.as_ref().map(|r| r.meta.order())
}

/// Jittered exponential back-off between attempts on a contended key.
async fn back_off(attempt: u32) {
    let ceiling = 1u64 << attempt.min(5); // 1..32 ms
    let ms = rand::random::<u64>() % ceiling + 1;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
