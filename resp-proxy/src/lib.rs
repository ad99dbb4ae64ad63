//! Vesta's RESP proxy: Redis clients in, two-phase commits over the storage group out.
//!
//! Reading order: [`server`] (connections, pipelining, ordered replies) → `cmd/` (the command table,
//! one file per family, parsing separate from execution) → [`coordinator`] (the single 2PC driver) →
//! [`pool`] (store-node connections) and [`topology`] (where shards live).

pub mod acl;
pub mod admission;
pub mod clients;
pub mod cmd;
pub mod config;
pub mod coordinator;
pub mod crypto;
pub mod edge;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod rdb;
pub mod resp;
pub mod server;
pub mod session;
pub mod topology;

pub use config::{PeerSite, ProxyConfig, ProxyFlags, ReplicationConfig};
