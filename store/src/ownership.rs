//! Which shards this node serves, and how: its share of the shard map, plus what a running
//! redistribution changes about it.
//!
//! A redistribution moves shards in three steps (see `vesta admin add-node`):
//! 1. **copying**: the source still serves a moving shard and forwards every write to it to the target;
//!    the target accepts copies of it but serves nothing of it yet;
//! 2. **handoff**: the source refuses the moving shards to proxies (`not-owner`, so no new prepare can
//!    start there) while the target already serves them — only once the source stops serving can two
//!    coordinators never prepare the same key on the old and the new storage group;
//! 3. the next map version makes the target the owner; the source drops the shard after a grace period.

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Ownership {
    /// The shard map version this comes from; 0 for a fixed configuration (no etcd).
    pub map_version: u64,
    /// Indexed by shard: the map gives the shard to this node.
    pub owned: Vec<bool>,
    /// Shards a redistribution moves here.
    pub incoming: Vec<bool>,
    /// Shards a redistribution moves away, with the `host:port` of their target.
    pub outgoing: HashMap<u32, String>,
    /// The redistribution known to this node, 0 for none.
    pub redistribution: u64,
    /// The redistribution whose handoff has begun, 0 for none.
    pub handoff: u64,
}

impl Ownership {
    /// A configuration without a shard map: these shards, for good.
    pub fn fixed(owned: Vec<bool>) -> Self {
        let incoming = vec![false; owned.len()];
        Ownership { map_version: 0, owned, incoming, outgoing: HashMap::new(), redistribution: 0, handoff: 0 }
    }

    /// Whether proxies may prepare, read and scan the shard here.
    pub fn serves(&self, shard: u32) -> bool {
        let s = shard as usize;
        if self.handoff != 0 {
            if self.outgoing.contains_key(&shard) {
                return false;
            }
            if self.incoming.get(s).copied().unwrap_or(false) {
                return true;
            }
        }
        self.owned.get(s).copied().unwrap_or(false)
    }

    /// Whether the node keeps the shard's data: owned, or on its way in or out. Copies and repairs of
    /// other shards are refused, so that nothing lands in a range the node is about to drop.
    pub fn holds(&self, shard: u32) -> bool {
        let s = shard as usize;
        self.owned.get(s).copied().unwrap_or(false)
            || self.incoming.get(s).copied().unwrap_or(false)
            || self.outgoing.contains_key(&shard)
    }

    /// Where writes to the shard must also go while it moves away.
    pub fn forward_to(&self, shard: u32) -> Option<&str> {
        self.outgoing.get(&shard).map(String::as_str)
    }

    /// Whether a running redistribution moves the shard away from or to this node: such a shard is
    /// served only under a confirmed etcd lease (see [`crate::fence`]).
    pub fn is_moving(&self, shard: u32) -> bool {
        self.outgoing.contains_key(&shard) || self.incoming.get(shard as usize).copied().unwrap_or(false)
    }

    pub fn is_forwarding(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn owned_count(&self) -> usize {
        self.owned.iter().filter(|o| **o).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_moves_serving_from_source_to_target() {
        let mut source = Ownership::fixed(vec![true, true]);
        source.outgoing.insert(1, "t:1".into());
        let mut target = Ownership::fixed(vec![false, false]);
        target.incoming[1] = true;
        // Copying: the source serves and forwards; the target only holds.
        assert!(source.serves(1) && source.forward_to(1) == Some("t:1"));
        assert!(!target.serves(1) && target.holds(1) && !target.holds(0));
        // Handoff: the other way round, and the source's other shards are untouched.
        source.handoff = 7;
        target.handoff = 7;
        assert!(!source.serves(1) && source.serves(0) && source.holds(1));
        assert!(target.serves(1) && !target.serves(0));
    }
}
