//! The Vesta storage node.
//!
//! A store node holds one replica of the shards assigned to it and runs the storage side of JunoDB's
//! two-phase commit: a `Prepare` takes a short lease on a key and reports the node's copy, a `Commit`
//! installs the record the coordinator computed (only under that lease), `Abort` releases it, `Read`
//! never waits, `Repair` and `MarkDelete` install newer copies and tombstones.
//!
//! Reading order: [`node`] (the operations, one file each under `ops/`) → [`lease`] (the prepare-lock
//! table) → [`engine`] (the storage trait, RocksDB and memory) → [`server`] (TCP, framing, in-flight cap).

// Operations fail with the `Reply` the client gets; it is returned, not propagated through deep stacks.
#![allow(clippy::result_large_err)]

mod changelog;
pub mod config;
pub mod engine;
pub mod fence;
pub mod key;
pub mod lease;
pub mod metrics;
pub mod node;
mod ops;
pub mod ownership;
mod peers;
mod record_cache;
pub mod server;
mod service;
mod writer;

pub use config::{EngineKind, StoreConfig, SyncPolicy};
pub use engine::{Engine, EngineError};
pub use fence::{Fence, LeaseTiming};
pub use node::StoreNode;
pub use ownership::Ownership;
pub use vesta_proto::clock::{self, Clock, ManualClock, SystemClock};
