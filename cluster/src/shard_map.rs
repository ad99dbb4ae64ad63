//! The shard → node map of every zone, and how it changes when a node joins or leaves.
//!
//! Every zone holds every shard exactly once; a shard's storage group is its owner in each zone. The map is
//! balanced (in a zone, node shard counts differ by at most one), generated deterministically, and changes
//! move as little as possible: a joining node takes shards only from the fullest nodes, a leaving node's
//! shards go only to the emptiest ones, and no other shard moves.
//!
//! Shards are striped, not cut into ranges: the proxy walks shards in order for SCAN, KEYS and DBSIZE, so a
//! striped map spreads such a walk over every node of a zone instead of draining one node after another.
//! The initial map is the static topology's `shard % nodes`, and changes keep the stripes by taking evenly
//! spaced shards from each donor's list.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spec::{is_valid_name, ClusterSpec, MAX_SHARDS};

/// Unknown fields are accepted here, unlike in the spec: every process reads the map from etcd, and during a
/// rolling upgrade an older process must still read a map written by a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Grows by one with every change; proxies and store nodes switch to the highest version they see.
    pub version: u64,
    pub shards: u32,
    /// In the spec's zone order, which is the order of every storage group.
    pub zones: Vec<ZoneMap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneMap {
    pub zone: String,
    /// Node names, in the order they joined the zone.
    pub nodes: Vec<String>,
    /// `owner[shard]` is an index into `nodes`.
    pub owner: Vec<u16>,
}

/// One shard replica a redistribution must copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub shard: u32,
    pub zone: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    #[error("cannot parse the shard map: {0}")]
    Parse(String),
    #[error("no zone {0} in the shard map")]
    UnknownZone(String),
    #[error("no node {node} in zone {zone}")]
    UnknownNode { zone: String, node: String },
    #[error("node {0} is already in the cluster")]
    NodeExists(String),
    #[error("node name {0:?} must be non-empty and use only A-Z a-z 0-9 . _ -")]
    BadNodeName(String),
    #[error("node {node} is the last node of zone {zone}: a zone must keep one node")]
    LastNode { zone: String, node: String },
    #[error("zone {zone} already has one node per shard ({shards}): a new node would own nothing")]
    ZoneFull { zone: String, shards: u32 },
    #[error("the shard map has no zones")]
    NoZones,
    #[error("shards must be between 1 and {MAX_SHARDS}, not {0}")]
    ShardCount(u32),
    #[error("zone {0} appears twice in the shard map")]
    DuplicateZone(String),
    #[error("node {0} appears twice in the shard map")]
    DuplicateNode(String),
    #[error("zone {0} has no nodes")]
    EmptyZone(String),
    #[error("zone {zone} maps {len} shards, the cluster has {shards}")]
    OwnerLength { zone: String, len: usize, shards: u32 },
    #[error("zone {zone} gives shard {shard} to node #{index}, but the zone has {nodes} nodes")]
    OwnerOutOfRange { zone: String, shard: u32, index: u16, nodes: usize },
    #[error("the shard map does not match the cluster spec: {0}")]
    SpecMismatch(String),
}

impl ShardMap {
    /// Version 1 of a new cluster: shard `s` on node `s % n` of each zone, as in the static topology, so a
    /// cluster moved from a topology file to etcd with the same node order keeps every shard where it is.
    /// Expects a spec that passed [`ClusterSpec::validate`]; otherwise [`ShardMap::validate`] fails.
    pub fn initial(spec: &ClusterSpec) -> ShardMap {
        let zones = spec
            .zones
            .iter()
            .map(|z| {
                let n = z.nodes.len() as u32;
                let owner = if n == 0 {
                    Vec::new()
                } else {
                    // A valid spec has at most MAX_SHARDS nodes per zone, so every index fits in u16.
                    (0..spec.shards).map(|s| (s % n) as u16).collect()
                };
                ZoneMap { zone: z.name.clone(), nodes: z.nodes.iter().map(|n| n.name.clone()).collect(), owner }
            })
            .collect();
        ShardMap { version: 1, shards: spec.shards, zones }
    }

    /// Parses and validates a map as stored in etcd.
    pub fn from_json(text: &str) -> Result<ShardMap, MapError> {
        let map: ShardMap = serde_json::from_str(text).map_err(|e| MapError::Parse(e.to_string()))?;
        map.validate()?;
        Ok(map)
    }

    pub fn to_json(&self) -> String {
        // Serialising strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The next version with `node` joined to `zone`.
    ///
    /// The new node's share is the floor of the new fair share. It takes its shards one at a time from the
    /// node that currently holds the most (ties: the earliest to join), stopping once no node holds more than
    /// one shard over it; so only the shards it takes move, and a balanced zone stays balanced. Each donor
    /// then gives evenly spaced shards of its own ascending list, which keeps the stripes.
    pub fn with_node_added(&self, zone: &str, node: &str) -> Result<ShardMap, MapError> {
        self.validate()?;
        if !is_valid_name(node) {
            return Err(MapError::BadNodeName(node.to_string()));
        }
        if self.zones.iter().any(|z| z.nodes.iter().any(|n| n == node)) {
            return Err(MapError::NodeExists(node.to_string()));
        }
        let mut next = self.clone();
        next.version = self.version + 1;
        let shards = self.shards;
        let zm = next.zone_mut(zone)?;
        if zm.nodes.len() >= shards as usize {
            return Err(MapError::ZoneFull { zone: zone.to_string(), shards });
        }

        let mut counts = zm.shard_counts();
        let mut gives = vec![0u32; counts.len()];
        let mut taken = 0u32;
        while let Some((donor, &most)) = counts.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0))) {
            if most <= taken + 1 {
                break;
            }
            counts[donor] -= 1;
            gives[donor] += 1;
            taken += 1;
        }

        let new_index = zm.nodes.len() as u16;
        let lists = zm.shard_lists();
        for (list, give) in lists.iter().zip(gives) {
            for shard in evenly_spaced(list, give) {
                zm.owner[shard as usize] = new_index;
            }
        }
        zm.nodes.push(node.to_string());
        Ok(next)
    }

    /// The next version without `node`: its shards go one at a time, in ascending order, to the remaining
    /// node of the zone that holds the fewest (ties: the earliest to join), which balances the zone and
    /// gives each receiver evenly spaced shards. No other shard moves.
    pub fn with_node_removed(&self, zone: &str, node: &str) -> Result<ShardMap, MapError> {
        self.validate()?;
        let mut next = self.clone();
        next.version = self.version + 1;
        let zm = next.zone_mut(zone)?;
        let Some(leaving) = zm.nodes.iter().position(|n| n == node) else {
            return Err(MapError::UnknownNode { zone: zone.to_string(), node: node.to_string() });
        };
        if zm.nodes.len() == 1 {
            return Err(MapError::LastNode { zone: zone.to_string(), node: node.to_string() });
        }

        let mut counts = zm.shard_counts();
        // The leaving node never receives.
        counts[leaving] = u32::MAX;
        let leaving = leaving as u16;
        for shard in 0..zm.owner.len() {
            if zm.owner[shard] != leaving {
                continue;
            }
            let receiver = counts.iter().enumerate().min_by_key(|&(i, &c)| (c, i)).map_or(0, |(i, _)| i);
            counts[receiver] += 1;
            zm.owner[shard] = receiver as u16;
        }
        // Later nodes shift down one place; their shards stay theirs.
        for owner in &mut zm.owner {
            if *owner > leaving {
                *owner -= 1;
            }
        }
        zm.nodes.remove(leaving as usize);
        Ok(next)
    }

    /// The replicas that change owner from `self` to `next`, in zone order then shard order. Zones are
    /// matched by name; a zone in only one of the maps has nothing to copy from or to.
    pub fn moves(&self, next: &ShardMap) -> Vec<Move> {
        let mut moves = Vec::new();
        for from_zone in &self.zones {
            let Some(to_zone) = next.zones.iter().find(|z| z.zone == from_zone.zone) else {
                continue;
            };
            for (shard, (&a, &b)) in from_zone.owner.iter().zip(&to_zone.owner).enumerate() {
                let (Some(from), Some(to)) = (from_zone.nodes.get(a as usize), to_zone.nodes.get(b as usize)) else {
                    continue;
                };
                if from != to {
                    moves.push(Move {
                        shard: shard as u32,
                        zone: from_zone.zone.clone(),
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
            }
        }
        moves
    }

    /// The shard's storage group: `(zone, node)` for every zone, in zone order; empty for a shard the
    /// cluster does not have.
    pub fn storage_group(&self, shard: u32) -> Vec<(&str, &str)> {
        if shard >= self.shards {
            return Vec::new();
        }
        self.zones.iter().filter_map(|z| z.owner_of(shard).map(|node| (z.zone.as_str(), node))).collect()
    }

    /// The shards `node` owns, ascending; empty for an unknown node.
    pub fn shards_of(&self, node: &str) -> Vec<u32> {
        self.zones
            .iter()
            .find_map(|z| z.nodes.iter().position(|n| n == node).map(|i| (z, i as u16)))
            .map(|(z, i)| z.owner.iter().enumerate().filter(|&(_, &o)| o == i).map(|(s, _)| s as u32).collect())
            .unwrap_or_default()
    }

    pub fn owns(&self, node: &str, shard: u32) -> bool {
        self.zones.iter().any(|z| z.owner_of(shard) == Some(node))
    }

    pub fn zone(&self, name: &str) -> Option<&ZoneMap> {
        self.zones.iter().find(|z| z.zone == name)
    }

    fn zone_mut(&mut self, name: &str) -> Result<&mut ZoneMap, MapError> {
        self.zones.iter_mut().find(|z| z.zone == name).ok_or_else(|| MapError::UnknownZone(name.to_string()))
    }

    /// Structure only: every zone maps every shard to one of its nodes, names are unique. Balance is not
    /// required here; it is what the constructors guarantee.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(MapError::ShardCount(self.shards));
        }
        if self.zones.is_empty() {
            return Err(MapError::NoZones);
        }
        let mut zone_names = HashSet::new();
        let mut node_names = HashSet::new();
        for z in &self.zones {
            if !zone_names.insert(z.zone.as_str()) {
                return Err(MapError::DuplicateZone(z.zone.clone()));
            }
            if z.nodes.is_empty() {
                return Err(MapError::EmptyZone(z.zone.clone()));
            }
            for n in &z.nodes {
                if !node_names.insert(n.as_str()) {
                    return Err(MapError::DuplicateNode(n.clone()));
                }
            }
            if z.owner.len() != self.shards as usize {
                return Err(MapError::OwnerLength { zone: z.zone.clone(), len: z.owner.len(), shards: self.shards });
            }
            if let Some((shard, &index)) = z.owner.iter().enumerate().find(|&(_, &o)| o as usize >= z.nodes.len()) {
                return Err(MapError::OwnerOutOfRange {
                    zone: z.zone.clone(),
                    shard: shard as u32,
                    index,
                    nodes: z.nodes.len(),
                });
            }
        }
        Ok(())
    }

    /// Checks that the map describes the spec's cluster: same shard count, the same zones in the same
    /// order, and the same nodes in each zone (in any order: the map keeps join order).
    pub fn check_spec(&self, spec: &ClusterSpec) -> Result<(), MapError> {
        if self.shards != spec.shards {
            return Err(MapError::SpecMismatch(format!(
                "{} shards in the map, {} in the spec",
                self.shards, spec.shards
            )));
        }
        let map_zones: Vec<&str> = self.zones.iter().map(|z| z.zone.as_str()).collect();
        let spec_zones: Vec<&str> = spec.zones.iter().map(|z| z.name.as_str()).collect();
        if map_zones != spec_zones {
            return Err(MapError::SpecMismatch(format!("zones {map_zones:?} in the map, {spec_zones:?} in the spec")));
        }
        for (zm, zs) in self.zones.iter().zip(&spec.zones) {
            let mut map_nodes: Vec<&str> = zm.nodes.iter().map(String::as_str).collect();
            let mut spec_nodes: Vec<&str> = zs.nodes.iter().map(|n| n.name.as_str()).collect();
            map_nodes.sort_unstable();
            spec_nodes.sort_unstable();
            if map_nodes != spec_nodes {
                return Err(MapError::SpecMismatch(format!(
                    "zone {} has nodes {map_nodes:?} in the map, {spec_nodes:?} in the spec",
                    zm.zone
                )));
            }
        }
        Ok(())
    }
}

impl ZoneMap {
    /// The node owning `shard` in this zone.
    pub fn owner_of(&self, shard: u32) -> Option<&str> {
        self.owner.get(shard as usize).and_then(|&i| self.nodes.get(i as usize)).map(String::as_str)
    }

    /// How many shards each node owns, in node order.
    pub fn shard_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes.len()];
        for &o in &self.owner {
            if let Some(c) = counts.get_mut(o as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Each node's shards, ascending, in node order.
    fn shard_lists(&self) -> Vec<Vec<u32>> {
        let mut lists = vec![Vec::new(); self.nodes.len()];
        for (shard, &o) in self.owner.iter().enumerate() {
            if let Some(list) = lists.get_mut(o as usize) {
                list.push(shard as u32);
            }
        }
        lists
    }
}

/// `k` entries of `list` spread evenly over it: the middle of each of `k` equal slices. With `k <= len`
/// the slices are at least one entry wide, so the picks are distinct.
fn evenly_spaced(list: &[u32], k: u32) -> impl Iterator<Item = u32> + '_ {
    let (len, k) = (list.len() as u64, u64::from(k).min(list.len() as u64));
    (0..k).filter_map(move |j| list.get(((2 * j + 1) * len / (2 * k)) as usize).copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NodeSpec, ZoneSpec};

    fn spec(shards: u32, nodes: &[usize]) -> ClusterSpec {
        ClusterSpec {
            name: "t".into(),
            shards,
            write_quorum: 2,
            read_quorum: 2,
            zones: nodes
                .iter()
                .enumerate()
                .map(|(z, &n)| ZoneSpec {
                    name: format!("z{z}"),
                    nodes: (0..n)
                        .map(|i| NodeSpec { name: format!("z{z}n{i}"), addr: format!("h{z}:{}", 7000 + i) })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn initial_is_the_static_striping() {
        let m = ShardMap::initial(&spec(8, &[1, 2, 3]));
        assert_eq!(m.version, 1);
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.zones[2].owner, vec![0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(m.storage_group(4), vec![("z0", "z0n0"), ("z1", "z1n0"), ("z2", "z2n1")]);
        assert_eq!(m.storage_group(8), Vec::<(&str, &str)>::new());
        assert_eq!(m.shards_of("z1n1"), vec![1, 3, 5, 7]);
        assert!(m.owns("z2n2", 5) && !m.owns("z2n2", 4));
        assert_eq!(m.check_spec(&spec(8, &[1, 2, 3])), Ok(()));
    }

    #[test]
    fn add_takes_evenly_spaced_shards_from_the_fullest() {
        let m = ShardMap::initial(&spec(12, &[2]));
        let m2 = m.with_node_added("z0", "new").unwrap();
        assert_eq!(m2.version, 2);
        assert_eq!(m2.zones[0].shard_counts(), vec![4, 4, 4]);
        // z0n0 owned 0 2 4 6 8 10 and gives the middles of two halves: 2 and 8; z0n1 gives 3 and 9.
        assert_eq!(m2.shards_of("new"), vec![2, 3, 8, 9]);
        let moves = m.moves(&m2);
        assert_eq!(moves.len(), 4);
        assert_eq!(moves[0], Move { shard: 2, zone: "z0".into(), from: "z0n0".into(), to: "new".into() });
    }

    #[test]
    fn remove_reindexes_later_nodes() {
        let m = ShardMap::initial(&spec(9, &[3]));
        let m2 = m.with_node_removed("z0", "z0n1").unwrap();
        assert_eq!(m2.zones[0].nodes, vec!["z0n0", "z0n2"]);
        assert_eq!(m2.shards_of("z0n2"), vec![2, 4, 5, 8]);
        assert_eq!(m2.shards_of("z0n0"), vec![0, 1, 3, 6, 7]);
        assert!(m.moves(&m2).iter().all(|mv| mv.from == "z0n1"));
    }

    #[test]
    fn refusals() {
        let m = ShardMap::initial(&spec(2, &[1, 2]));
        assert_eq!(m.with_node_added("z9", "x"), Err(MapError::UnknownZone("z9".into())));
        assert_eq!(m.with_node_added("z0", "z1n0"), Err(MapError::NodeExists("z1n0".into())));
        assert_eq!(m.with_node_added("z0", "a b"), Err(MapError::BadNodeName("a b".into())));
        assert_eq!(m.with_node_added("z1", "x"), Err(MapError::ZoneFull { zone: "z1".into(), shards: 2 }));
        assert_eq!(
            m.with_node_removed("z0", "z0n0"),
            Err(MapError::LastNode { zone: "z0".into(), node: "z0n0".into() })
        );
        assert_eq!(
            m.with_node_removed("z0", "z1n0"),
            Err(MapError::UnknownNode { zone: "z0".into(), node: "z1n0".into() })
        );
    }

    #[test]
    fn evenly_spaced_picks_are_distinct() {
        let list: Vec<u32> = (0..10).collect();
        assert_eq!(evenly_spaced(&list, 1).collect::<Vec<_>>(), vec![5]);
        assert_eq!(evenly_spaced(&list, 10).collect::<Vec<_>>(), list);
        assert_eq!(evenly_spaced(&list, 3).collect::<Vec<_>>(), vec![1, 5, 8]);
        assert_eq!(evenly_spaced(&list, 0).count(), 0);
    }
}
