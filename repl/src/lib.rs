//! Cross-site replication (issue 11; the design, and what is built so far, are in
//! `docs/replication.md`).
//!
//! Reading order: [`site`] (what a proxy runs: a sender per peer site, the receiver, log trimming;
//! [`election`] picks the one proxy of a site that ships) →
//! [`sender`] (one peer: feeds, batches, confirmations) → [`feed`] (one shard's writes, from the change
//! logs of enough replicas, each once and in order) and [`source`] (those logs read in batches) →
//! [`receiver`] (installing another site's writes through this site's two-phase commit) →
//! [`confirmations`] (how far each peer got, kept in this site's storage) and [`status`].

pub mod confirmations;
pub mod election;
pub mod feed;
pub mod receiver;
pub mod sender;
pub mod site;
pub mod source;
pub mod status;

pub use feed::{FeedError, LogSource, ShardFeed, Shipment};
pub use site::Site;
