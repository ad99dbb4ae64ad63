//! The store-node operations, one file each. Shared rule: a key's copy only changes under a lease
//! (prepare→commit, or the one-shot lease repair and mark-delete take), so no two writers interleave.

mod abort;
mod batch;
mod clone;
pub(crate) mod commit;
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

use vesta_proto::{Record, Reply, Status};

/// A copy as returned to the coordinator: the value only when asked for, and never for a tombstone. An
/// expired record keeps its value: the coordinator judges expiry by its own clock, which may be a little
/// behind this node's.
pub(crate) fn reply_copy(mut record: Record, want_value: bool) -> Record {
    if !want_value || record.meta.flags.tombstone() {
        record.value = Default::default();
        record.counter = None;
    }
    record
}

/// Where a paged read of the key range `[first, end)` resumes: strictly after `cursor` (the last key of
/// the previous page), or at `first`. A cursor outside the range is the caller's mistake.
pub(crate) fn resume_after(cursor: Option<&[u8]>, first: Vec<u8>, end: &[u8], what: &str) -> Result<Vec<u8>, Reply> {
    match cursor {
        Some(c) if c >= first.as_slice() && c < end => {
            // The smallest key greater than the cursor.
            let mut k = c.to_vec();
            k.push(0);
            Ok(k)
        }
        Some(_) => Err(Reply::error(Status::BadRequest, format!("{what} cursor outside its range"))),
        None => Ok(first),
    }
}
