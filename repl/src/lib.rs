//! Cross-site replication (issue 11; the design and what is built so far are in
//! `docs/replication.md`).
//!
//! Built: [`feed`], which reads one shard's change log from enough of its replicas that every
//! acknowledged write is seen, and hands each write on once, in order. Not built yet: the sender that
//! ships a feed to a peer site, the transport, the receiver and its apply rules.

pub mod feed;

pub use feed::{FeedError, LogSource, ShardFeed, Shipment};
