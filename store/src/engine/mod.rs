//! The storage engine: an ordered byte-key store with atomic batches. The node above it owns every
//! semantic rule (leases, conditions, expiry, ordering of copies); an engine only stores bytes, plus one
//! piece of housekeeping — dropping records that have been dead (expired or deleted) for longer than the
//! grace period — so that both engines behave the same from the outside.

mod memory;
mod rocks;

pub use memory::MemoryEngine;
pub use rocks::{RocksEngine, RocksOptions};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("{0}")]
    Other(String),
}

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// Figures an operator watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub estimated_keys: u64,
    pub sst_bytes: u64,
    pub pending_compaction_bytes: u64,
}

pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Applies the whole batch or none of it; with `sync`, returns only once it is on stable storage.
    fn write(&self, batch: &[Mutation], sync: bool) -> Result<(), EngineError>;

    /// Applies the whole batch, unsynced, unless the engine would have to wait for it (RocksDB: memtables
    /// full or too many level-0 files while a flush or compaction catches up): then `Ok(false)` and
    /// nothing was written. Lets a caller on the async runtime write in place and leave only the writes
    /// that would block to a thread.
    fn write_unless_stalled(&self, batch: &[Mutation]) -> Result<bool, EngineError> {
        self.write(batch, false).map(|()| true)
    }

    /// Visits keys in `[from, to)` in order until `visit` returns false.
    fn scan(&self, from: &[u8], to: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), EngineError>;

    /// Forces everything written so far to stable storage (the periodic sync policy).
    fn sync(&self) -> Result<(), EngineError>;

    /// Drops records dead for at least `grace_ms` at `now_ms` (the purge rule of
    /// [`vesta_proto::record::purgeable`]), where the engine does not do so by itself; returns how many.
    /// RocksDB drops them in its compaction filter as files are compacted and returns 0 here: forcing
    /// full compactions on a timer would cost far more than the space it frees.
    fn purge_dead(&self, now_ms: u64, grace_ms: u64) -> Result<u64, EngineError>;

    fn stats(&self) -> EngineStats;

    /// Whether concurrent writes gain from being folded into one batch by the group-commit thread (a
    /// log to append to, an fsync to share); if not, each write is made in its caller.
    fn groups_commits(&self) -> bool {
        true
    }
}

/// Whether a stored value is a record that may be purged at `now_ms` (both engines' rule). Bytes that do
/// not parse as a record are kept: never destroy what is not understood. The node's own records are
/// never purged here: the change log holds copies of records, dead ones too, until every peer site
/// has them.
pub(crate) fn purgeable(key: &[u8], raw_record: &[u8], now_ms: u64, grace_ms: u64) -> bool {
    !crate::key::is_node_own(key)
        && matches!(vesta_proto::Record::peek_expires_at(raw_record), Some(exp) if vesta_proto::record::purgeable(exp, now_ms, grace_ms))
}
