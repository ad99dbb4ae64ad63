//! Requests a coordinator sends to a store node, and the node's replies.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::record::{Meta, Record, RequestId};
use crate::status::Status;

/// Which record an operation is about. The shard is computed by the sender with [`crate::shard::shard_of`];
/// the node checks it, so a proxy with a different shard count cannot write to the wrong range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRef {
    pub shard: u32,
    /// At most 255 bytes; keys of two namespaces never collide.
    pub namespace: Bytes,
    pub key: Bytes,
}

/// What the coordinator intends; it implies the node-side condition when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrepareKind {
    /// Insert only if absent (`SET NX`, locks, idempotency keys).
    Create,
    /// Write only if present (`SET XX`).
    Update,
    /// Unconditional upsert (`SET`).
    Set,
    /// Remove (`DEL`); the node reports `Absent` when there was nothing to remove.
    Delete,
    /// Read the current value and write one computed from it (`INCR`, `APPEND`, `GETSET`, …).
    ReadModifyWrite,
}

impl PrepareKind {
    pub fn implied_condition(self) -> Option<Condition> {
        match self {
            PrepareKind::Create => Some(Condition::Absent),
            PrepareKind::Update => Some(Condition::Present),
            PrepareKind::Set | PrepareKind::Delete | PrepareKind::ReadModifyWrite => None,
        }
    }
}

/// A condition evaluated on the node's current copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Absent,
    Present,
    ValueEquals(Bytes),
    VersionEquals(u64),
}

/// Phase one: take the key's lease and report this node's copy. Writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub req: RequestId,
    pub target: KeyRef,
    pub kind: PrepareKind,
    /// Overrides the kind's implied condition.
    pub condition: Option<Condition>,
    /// Return the value with the copy (read-modify-write needs it; a plain SET does not).
    pub want_value: bool,
}

/// Phase two: install exactly `record` and release the lease — only under the lease `req` took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub req: RequestId,
    pub target: KeyRef,
    pub record: Record,
    /// Keep the record's own last writer instead of stamping it with `req`: a copy made in another site,
    /// installed here under a lease of this site's, must order the same way everywhere.
    pub keep_writer: bool,
}

/// Phase two of a multi-key write: every commit of one request that lands on this node, applied in one
/// engine batch, so that this replica holds all of them or none. Each key needs the lease `req` took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBatch {
    pub req: RequestId,
    pub items: Vec<(KeyRef, Record)>,
}

/// Release the lease `req` took, writing nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    pub req: RequestId,
    pub target: KeyRef,
}

/// Return the committed copy; never waits on a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub target: KeyRef,
    pub want_value: bool,
}

/// Install `record` if it is newer by the order of copies (HLC, origin, writer) than this node's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub req: RequestId,
    pub target: KeyRef,
    pub record: Record,
}

/// Write a tombstone with this metadata (if newer than this node's copy), so that a delete that missed a
/// replica cannot be undone by repairing from it. `meta.expires_at` is the time of the delete; the
/// tombstone is kept for the grace period after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkDelete {
    pub req: RequestId,
    pub target: KeyRef,
    pub meta: Meta,
}

/// One page of the records of a shard range, in storage-key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// First shard of the range.
    pub shard_from: u32,
    /// One past the last shard of the range.
    pub shard_to: u32,
    /// Resume after this cursor (the `next` of the previous page); `None` starts at `shard_from`.
    pub after: Option<Bytes>,
    /// Maximum entries in the page (the node may cap it).
    pub limit: u32,
    /// Only this namespace, when given.
    pub namespace: Option<Bytes>,
    /// Include dead copies — tombstones and expired records still in their grace period (redistribution
    /// and repair need them, since they order copies; SCAN/KEYS do not).
    pub include_dead: bool,
    pub want_values: bool,
}

/// Redistribution and repair: copies of records another node holds, each installed only if newer by
/// the order of copies than this node's copy, so copies may arrive in any order and any number of times. Not
/// subject to shard ownership: a node receives the shards it is about to own before it owns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneRecords {
    pub req: RequestId,
    pub items: Vec<(KeyRef, Record)>,
}

/// Copy one page of a shard (dead copies included) from this node to `target`, by [`CloneRecords`], and say
/// where the page ended. The caller (`vesta admin`) drives pages, checkpoints the cursor and paces them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub shard: u32,
    /// Resume after this cursor (the `next` of the previous page).
    pub after: Option<Bytes>,
    pub limit: u32,
    /// `host:port` of the receiving store node.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Transferred {
    /// Records copied (installed or already there) in this page.
    pub keys: u64,
    /// Their encoded size.
    pub bytes: u64,
    /// `None` when the shard is done.
    pub next: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Prepare(Prepare),
    Commit(Commit),
    Abort(Abort),
    Read(Read),
    Repair(Repair),
    MarkDelete(MarkDelete),
    Scan(Scan),
    Ping,
    CommitBatch(CommitBatch),
    Clone(CloneRecords),
    Transfer(Transfer),
    /// How many records (tombstones included) this node stores per shard, owned or not.
    Inventory,
    /// A full repair of a replica that was away longer than the grace period (see [`RebuildStep`]).
    Rebuild(RebuildStep),
    /// Cross-site replication: the next page of a shard's change log.
    ReadLog(ReadLog),
    /// Cross-site replication: drop a shard's change-log entries every peer site has confirmed.
    TrimLog(TrimLog),
    /// Cross-site replication: the next page of several shards' change logs in one round trip (a sender
    /// follows every shard a node holds; most are idle, and asking for each alone would cost a round
    /// trip per shard per poll). Answered by [`Response::Logs`], one result per request, in order.
    ReadLogs(Vec<ReadLog>),
    /// Cross-site replication, between sites: copies made in the sending site, for the receiving site's
    /// replication endpoint (a proxy) to install. Store nodes refuse it.
    Replicate(Replicate),
    /// Independent key operations of concurrent commands (prepares, commits, aborts, reads), handled as
    /// one batch: the commits land in one engine write. Each is answered as if it came alone, in
    /// order, by [`Response::Batch`]. Nothing in a batch depends on another item of it succeeding.
    Batch(Vec<Request>),
}

/// A batch of one shard's writes made in site `from_origin`, in the order of copies, each once. The
/// receiver answers `Ok` only once every entry is installed on a write quorum (or found older than what
/// is there); the sender then counts the shard as applied through `through`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicate {
    pub from_origin: u32,
    pub shard: u32,
    pub entries: Vec<LogEntry>,
    /// The sender's watermark for the shard after this batch: every write of the shard made in the
    /// sending site and stamped at or below it is in this batch or an earlier one.
    pub through: u64,
}

/// One page of a shard's change log: the writes made in this site (committed with the node's configured
/// origin), in the order of copies, as far as the log is *closed* — no entry can still appear at or below
/// [`LogPage::closed_hlc`], so a reader that has consumed up to there never misses one. A page never goes
/// past the closed timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLog {
    pub shard: u32,
    /// Resume after this cursor (the `next` of the previous page); `None` starts at the first entry
    /// stamped at or after `since_hlc`.
    pub after: Option<Bytes>,
    /// Where a read without a cursor starts (0: the oldest entry) — a sender taking a shard over from
    /// another resumes from the timestamp the peer site confirmed, on whichever replica it reads.
    pub since_hlc: u64,
    /// Maximum entries in the page (the node may cap it).
    pub limit: u32,
}

/// Drop the change-log entries of `shard` stamped at or below `through` (an HLC). Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrimLog {
    pub shard: u32,
    pub through: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub namespace: Bytes,
    pub key: Bytes,
    /// The record exactly as committed here (value included; a tombstone has none).
    pub record: Record,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// Where the next read resumes: after the last entry returned (the request's own `after` when the
    /// page is empty).
    pub next: Option<Bytes>,
    /// The page stopped at its size limit, not at the closed timestamp: read again at once.
    pub more: bool,
    /// Every entry this node will ever log for the shard with an HLC at or below this one is in the log
    /// now (or was trimmed).
    pub closed_hlc: u64,
}

/// The steps of a full repair (`vesta admin repair ZONE --full`). A replica that was out of service for
/// longer than the grace period may hold live copies of keys whose tombstones (or expired copies) the
/// other replicas have since purged: repairing it copy by copy would bring those keys back. So it is
/// rebuilt instead: its shards are cleared, then copied again from the other zones' replicas, and only
/// then does it serve again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RebuildStep {
    /// Stop serving (persisted, so a restart does not end it) until `Finish`.
    Begin,
    /// Delete every record of this shard. Refused unless the node is being rebuilt.
    ClearShard(u32),
    /// Serve again; the node counts as in service from now.
    Finish,
}

impl Request {
    /// Whether this request may travel in a [`Request::Batch`]: the key operations of the write and
    /// read paths, which a node answers without waiting on anything but its own engine write.
    pub fn batchable(&self) -> bool {
        matches!(self, Request::Prepare(_) | Request::Commit(_) | Request::Abort(_) | Request::Read(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Request::Prepare(_) => "prepare",
            Request::Commit(_) => "commit",
            Request::Abort(_) => "abort",
            Request::Read(_) => "read",
            Request::Repair(_) => "repair",
            Request::MarkDelete(_) => "mark_delete",
            Request::Scan(_) => "scan",
            Request::Ping => "ping",
            Request::CommitBatch(_) => "commit_batch",
            Request::Clone(_) => "clone",
            Request::Transfer(_) => "transfer",
            Request::Inventory => "inventory",
            Request::Rebuild(_) => "rebuild",
            Request::ReadLog(_) => "read_log",
            Request::TrimLog(_) => "trim_log",
            Request::ReadLogs(_) => "read_logs",
            Request::Replicate(_) => "replicate",
            Request::Batch(_) => "batch",
        }
    }
}

/// The answer to one key operation: a status and, where it makes sense, this node's copy (dead copies
/// included — a tombstone's metadata, an expired record — since they order copies even though they read
/// as absent).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reply {
    pub status: Status,
    pub copy: Option<Record>,
    /// Human-readable detail for `BadRequest` / `Internal` / `Overloaded`.
    pub message: String,
    /// For a prepare that holds the key's lease: how long the lease lasts (0: no lease). The coordinator
    /// commits only while it surely still holds, counting from when it *sent* the prepare (no later than
    /// when the node granted it).
    pub lease_ms: u64,
    /// For a prepare or a read: the node's wall clock (Unix ms) when it answered; 0 when not given. The
    /// coordinator checks its own clock against it: a proxy whose clock runs ahead must not stamp writes
    /// that every later write has to follow, and one whose clock is off either way would judge expiry
    /// differently from everyone else.
    pub node_wall_ms: u64,
}

impl Reply {
    pub fn status(status: Status) -> Self {
        Reply { status, ..Reply::default() }
    }
    pub fn with_copy(status: Status, copy: Option<Record>) -> Self {
        Reply { status, copy, ..Reply::default() }
    }
    pub fn error(status: Status, message: impl Into<String>) -> Self {
        Reply { status, message: message.into(), ..Reply::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    pub shard: u32,
    pub namespace: Bytes,
    pub key: Bytes,
    pub record: Record,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScanPage {
    pub entries: Vec<ScanEntry>,
    /// Cursor for the next page; `None` when the range is exhausted. It begins with the shard it is in
    /// (4 bytes, big-endian), so a caller can tell which shards a page has finished.
    pub next: Option<Bytes>,
}

impl ScanPage {
    /// The shard the next page starts in; every shard before it has been fully returned.
    pub fn next_shard(&self) -> Option<u32> {
        let cursor = self.next.as_ref()?;
        Some(u32::from_be_bytes(cursor.get(..4)?.try_into().ok()?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The node's name (zone and index, as configured).
    pub node: String,
    pub protocol: u8,
    /// The cluster's shard count as this node knows it.
    pub shards: u32,
    /// The shard map version the node serves (0 without etcd).
    pub map_version: u64,
    /// The redistribution this node takes part in (forwarding, accepting copies), 0 for none.
    pub redistribution: u64,
    /// The redistribution whose handoff this node has begun, 0 for none.
    pub handoff: u64,
    /// In a handoff: no lease is held on a shard moving away, so no commit prepared here can still land.
    pub settled: bool,
    /// The node's prepare lease: how long after a handoff a commit of an earlier prepare may still land.
    pub lease_ms: u64,
    /// Why the node serves nothing to proxies until a full repair (it was out of service for longer than
    /// the grace period), or `None`.
    pub needs_repair: Option<String>,
    /// How long the node has been out of service (its zone in maintenance), 0 while in service.
    pub away_ms: u64,
    /// How long dead copies keep their order here: a node away for longer needs a full repair.
    pub grace_ms: u64,
    /// The node cannot confirm its ownership lease with etcd, so it refuses the shards it is moving.
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Reply(Reply),
    Scan(ScanPage),
    Pong(Pong),
    Transferred(Transferred),
    /// `(shard, records)` for every shard with at least one record.
    Inventory(Vec<(u32, u64)>),
    Log(LogPage),
    /// The answer to [`Request::ReadLogs`]: per requested shard, its page or why not.
    Logs(Vec<Result<LogPage, Reply>>),
    /// The answer to [`Request::Batch`]: one response per request, in order.
    Batch(Vec<Response>),
}

impl Response {
    /// The status of the answer (`Ok` for a scan page or a pong).
    pub fn status(&self) -> Status {
        match self {
            Response::Reply(r) => r.status,
            Response::Scan(_)
            | Response::Pong(_)
            | Response::Transferred(_)
            | Response::Inventory(_)
            | Response::Log(_)
            | Response::Logs(_)
            | Response::Batch(_) => Status::Ok,
        }
    }
}
