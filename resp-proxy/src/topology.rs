//! Where shards live: zones × nodes, and each shard's storage group (its node in every zone).
//!
//! A map is immutable; a new version (from etcd) replaces the coordinator's map as a whole, so a request
//! sees one version from start to end.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    /// `host:port` of each store node of the zone.
    pub nodes: Vec<String>,
}

/// The cluster as a topology file describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default = "default_shards")]
    pub shards: u32,
    #[serde(default = "default_quorum")]
    pub write_quorum: usize,
    #[serde(default = "default_quorum")]
    pub read_quorum: usize,
    #[serde(rename = "zone")]
    pub zones: Vec<Zone>,
    /// Each shard's storage group as indices into the zones' nodes (zone order), when a shard map kept
    /// in etcd places the shards; without it, shard `s` lives on node `s % len` of every zone.
    #[serde(skip)]
    pub placement: Option<Vec<Vec<usize>>>,
    /// Zones in maintenance (`vesta admin zone down`): no request goes to them.
    #[serde(skip)]
    pub down_zones: Vec<String>,
    /// The shard map version this comes from (0 for a topology file).
    #[serde(skip)]
    pub version: u64,
}

fn default_shards() -> u32 {
    1024
}
fn default_quorum() -> usize {
    2
}

impl Topology {
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let t: Topology = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        t.validate()?;
        Ok(t)
    }

    /// N zones, W + R > N (every read quorum meets every write quorum) and W > N/2 (two write quorums
    /// always share a replica, so two conflicting writes cannot both win).
    pub fn validate(&self) -> Result<(), String> {
        let n = self.zones.len();
        let (w, r) = (self.write_quorum, self.read_quorum);
        if n == 0 || n > 5 {
            return Err(format!("a cluster has 1 to 5 zones, this one has {n}"));
        }
        if let Some(z) = self.zones.iter().find(|z| z.nodes.is_empty()) {
            return Err(format!("zone {} has no nodes", z.name));
        }
        if self.shards == 0 {
            return Err("shards must be at least 1".into());
        }
        vesta_cluster::spec::check_quorum(n, w, r).map_err(|e| e.to_string())?;
        let serving = self.zones.iter().filter(|z| !self.down_zones.contains(&z.name)).count();
        if serving < w.max(r) {
            return Err(format!("only {serving} of {n} zones are in service, fewer than a quorum ({})", w.max(r)));
        }
        Ok(())
    }

    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }
}

/// Index of a store node in the proxy's node list.
pub type NodeIndex = usize;

pub trait ShardMap: Send + Sync + 'static {
    fn shards(&self) -> u32;
    /// The shard's storage group: one node per zone in service, in zone order.
    fn storage_group(&self, shard: u32) -> &[NodeIndex];
    /// The shard map version (0 for a topology file).
    fn version(&self) -> u64;
    /// Zones in maintenance, which the storage groups leave out.
    fn down_zones(&self) -> &[String];
}

/// A map computed once from a topology: shard `s` lives on node `s % len` of every zone, or where the
/// topology's placement (from etcd) puts it.
pub struct StaticMap {
    shards: u32,
    groups: Vec<Vec<NodeIndex>>,
    version: u64,
    down_zones: Vec<String>,
}

impl StaticMap {
    /// `index_of` gives each node address its [`NodeIndex`] (the coordinator's node pool).
    pub fn new(t: &Topology, mut index_of: impl FnMut(&str) -> NodeIndex) -> Self {
        let zones: Vec<(usize, Vec<NodeIndex>)> = t
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| !t.down_zones.contains(&z.name))
            .map(|(i, z)| (i, z.nodes.iter().map(|a| index_of(a)).collect()))
            .collect();
        let groups = (0..t.shards as usize)
            .map(|s| {
                zones
                    .iter()
                    .map(|(z, nodes)| {
                        let placed = t.placement.as_ref().and_then(|p| p.get(s)).and_then(|g| g.get(*z)).copied();
                        nodes[placed.filter(|&i| i < nodes.len()).unwrap_or(s % nodes.len())]
                    })
                    .collect()
            })
            .collect();
        StaticMap { shards: t.shards, groups, version: t.version, down_zones: t.down_zones.clone() }
    }
}

impl ShardMap for StaticMap {
    fn shards(&self) -> u32 {
        self.shards
    }
    fn storage_group(&self, shard: u32) -> &[NodeIndex] {
        &self.groups[shard as usize % self.groups.len()]
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn down_zones(&self) -> &[String] {
        &self.down_zones
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(n: usize, w: usize, r: usize) -> Topology {
        let zones =
            (0..n).map(|i| Zone { name: format!("z{i}"), nodes: vec![format!("h{i}a"), format!("h{i}b")] }).collect();
        Topology { shards: 8, write_quorum: w, read_quorum: r, zones, placement: None, down_zones: vec![], version: 0 }
    }

    fn indexer() -> impl FnMut(&str) -> NodeIndex {
        let mut seen: Vec<String> = Vec::new();
        move |a: &str| match seen.iter().position(|s| s == a) {
            Some(i) => i,
            None => {
                seen.push(a.to_string());
                seen.len() - 1
            }
        }
    }

    #[test]
    fn quorum_rules() {
        assert!(topo(3, 2, 2).validate().is_ok());
        assert!(topo(5, 3, 3).validate().is_ok());
        assert!(topo(3, 2, 1).validate().unwrap_err().contains("must exceed"));
        assert!(topo(4, 2, 3).validate().unwrap_err().contains("majority"));
        assert!(topo(3, 4, 2).validate().is_err());
        assert!(topo(6, 4, 4).validate().is_err());
    }

    #[test]
    fn one_replica_per_zone() {
        let m = StaticMap::new(&topo(3, 2, 2), indexer());
        assert_eq!(m.storage_group(0), &[0, 2, 4]);
        assert_eq!(m.storage_group(1), &[1, 3, 5]);
    }

    #[test]
    fn a_zone_in_maintenance_leaves_the_storage_groups() {
        let mut t = topo(3, 2, 2);
        t.down_zones = vec!["z1".into()];
        assert!(t.validate().is_ok());
        let m = StaticMap::new(&t, indexer());
        assert_eq!(m.storage_group(0), &[0, 2]);
        assert_eq!(m.storage_group(1), &[1, 3]);
        t.down_zones.push("z2".into());
        assert!(t.validate().unwrap_err().contains("in service"));
    }
}
