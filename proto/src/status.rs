use serde::{Deserialize, Serialize};

/// What a store node answers to one operation.
///
/// Only `Ok` and `AlreadyDone` mean "done"; every other status means this node changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Status {
    /// The operation was applied (or, for a prepare, the lease is held and the condition holds here).
    #[default]
    Ok,
    /// This request id already did this on this node: a retry, answered without doing it twice.
    AlreadyDone,
    /// No live record (never written, expired, or a tombstone). A prepare still holds its lease.
    Absent,
    /// A live record exists where the operation wanted none. A prepare still holds its lease.
    Exists,
    /// Another request holds the key's prepare lease; nothing waited.
    Locked,
    /// The condition did not hold on this node's copy (or, for repair/mark-delete, this node's copy is
    /// newer). A prepare still holds its lease.
    ConditionFailed,
    /// A commit or abort found no live lease of its request: the lease expired or another request took
    /// the key over. The commit was not applied.
    NoLease,
    /// This node does not own the shard.
    NotOwner,
    /// The request is malformed (wrong shard for the key, oversized namespace, …).
    BadRequest,
    /// Too many requests in flight on this node; retry elsewhere or later.
    Overloaded,
    /// The engine failed; the message says how.
    Internal,
    /// This replica was out of service for longer than the grace period: it may hold copies whose
    /// deletes the other replicas have forgotten, so it serves nothing until a full repair.
    NeedsRepair,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::AlreadyDone => "already_done",
            Status::Absent => "absent",
            Status::Exists => "exists",
            Status::Locked => "locked",
            Status::ConditionFailed => "condition_failed",
            Status::NoLease => "no_lease",
            Status::NotOwner => "not_owner",
            Status::BadRequest => "bad_request",
            Status::Overloaded => "overloaded",
            Status::Internal => "internal",
            Status::NeedsRepair => "needs_repair",
        }
    }

    /// Whether a prepare with this status holds the lease on the node (so the coordinator must commit or
    /// abort it).
    pub fn holds_lease(self) -> bool {
        matches!(self, Status::Ok | Status::Absent | Status::Exists | Status::ConditionFailed)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
