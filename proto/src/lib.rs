//! Vesta's internal protocol: what a proxy (the 2PC coordinator) and a store node say to each other.
//!
//! * [`record`]: the record — metadata every copy carries, and its versioned on-disk encoding.
//! * [`message`]: requests (prepare, commit, abort, read, repair, mark-delete, scan, ping) and replies.
//! * [`counter`]: counters whose increments in several sites add up.
//! * [`status`]: what a store node answers.
//! * [`frame`]: length-delimited frames with a protocol version and a correlation id, so that thousands of
//!   requests can be in flight on one connection and answered out of order.
//! * [`shard`]: which shard a key belongs to (Redis-Cluster-style `{hash tags}` included).
//! * [`clock`]: wall and monotonic time, real or driven by tests.
//! * [`serve`]: a node's side of a connection (requests in, replies out as they are ready).
//! * [`client`]: one multiplexed connection to a store node (mechanism only; retry and timeout policy
//!   belong to the coordinator).
//!
//! This crate has no storage engine and no policy, so it builds in seconds and the fuzz target only needs it.

pub mod client;
pub mod clock;
pub mod counter;
pub mod frame;
pub mod message;
pub mod record;
pub mod serve;
pub mod shard;
pub mod status;

pub use frame::{Envelope, FrameCodec, FrameError, PROTOCOL_VERSION};
pub use message::{
    Abort, CloneRecords, Commit, CommitBatch, Condition, KeyRef, LogEntry, LogPage, MarkDelete, Pong, Prepare,
    PrepareKind, Read, ReadLog, RebuildStep, Repair, Replicate, Reply, Request, Response, Scan, ScanEntry, ScanPage,
    Transfer, Transferred, TrimLog,
};
pub use record::{hlc_ms, Flags, Meta, Order, Record, RecordError, RequestId};
pub use status::Status;
