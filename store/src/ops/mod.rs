//! The store-node operations, one file each. Shared rule: a key's copy only changes under a lease
//! (prepare→commit, or the one-shot lease repair and mark-delete take), so no two writers interleave.

mod abort;
mod clone;
mod commit;
mod commit_batch;
mod install;
mod inventory;
mod mark_delete;
mod prepare;
mod read;
mod read_log;
mod rebuild;
mod repair;
pub(crate) mod scan;
mod transfer;
mod trim_log;

use vesta_proto::Record;

/// A copy as returned to the coordinator: the value only when asked for, and never for a tombstone. An
/// expired record keeps its value: the coordinator judges expiry by its own clock, which may be a little
/// behind this node's.
pub(crate) fn reply_copy(mut record: Record, want_value: bool) -> Record {
    if !want_value || record.meta.flags.tombstone() {
        record.value = Default::default();
    }
    record
}
