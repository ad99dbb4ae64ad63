//! A redistribution: the move of shard replicas from one shard map version to the next, as etcd keeps
//! it while it runs, so that any `vesta admin` can show it or carry it on after an interruption.
//!
//! Store nodes read the plan to learn what they forward (sources), accept (targets) and, once the
//! handoff begins, stop serving (sources) or start serving (targets). The per-move progress — a cursor
//! into the shard and counts — lives under separate keys, written page by page by the tool that copies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::shard_map::{Move, ShardMap};
use crate::spec::ClusterSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Targets accept copies of their incoming shards; sources do not forward yet (a forwarded write
    /// must never meet a target that would refuse it).
    Announced,
    /// Snapshots are copied; sources serve and forward live writes.
    Copying,
    /// Sources have stopped serving the moving shards; targets serve them; the new map is next.
    Handoff,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redistribution {
    /// The version the new map will have; identifies the redistribution.
    pub id: u64,
    /// What the operator asked for, e.g. `add-node zone1/n4`.
    pub action: String,
    /// The spec and map once it is done (new nodes' addresses are in this spec).
    pub spec: ClusterSpec,
    pub map: ShardMap,
    pub moves: Vec<Move>,
    pub phase: Phase,
    /// `host:port` of every node taking part, leaving ones included (they are not in the new spec).
    pub addrs: BTreeMap<String, String>,
}

impl Redistribution {
    pub fn addr_of(&self, node: &str) -> Option<&str> {
        self.addrs.get(node).map(String::as_str)
    }

    /// Every node that sends or receives a shard, by name.
    pub fn participants(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.moves.iter().flat_map(|m| [m.from.clone(), m.to.clone()]).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Every node that receives a shard, by name.
    pub fn targets(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.moves.iter().map(|m| m.to.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}

/// How far one move got. Written after every page, so a resumed copy starts after `cursor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveProgress {
    /// Resume after this storage key (`None`: from the start, or done).
    pub cursor: Option<Vec<u8>>,
    pub done: bool,
    pub keys: u64,
    pub bytes: u64,
}

/// The key of a move's progress under the cluster prefix.
pub fn progress_leaf(m: &Move) -> String {
    format!("redist/progress/{}/{}", m.zone, m.shard)
}
