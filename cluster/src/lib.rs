//! The cluster as operators and components see it: the topology (zones, nodes, shards, quorums), the
//! deterministic balanced shard → node map of each zone, and their home in etcd.

pub mod etcd;
pub mod redistribution;
pub mod shard_map;
pub mod spec;
