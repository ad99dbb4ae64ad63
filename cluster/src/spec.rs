//! The cluster specification: its name, zones, nodes with their addresses, shard count and quorums.
//!
//! Operators write it as TOML (`vesta admin init`); it is also stored as JSON in etcd, so both formats read
//! the same structure. Unknown fields are refused so that a misspelt key is an error, not a silent default.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The largest shard count: owner indices are `u16`, and a zone never has more nodes than shards.
pub const MAX_SHARDS: u32 = 65536;
/// The most zones a cluster can have.
pub const MAX_ZONES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    #[serde(default = "default_shards")]
    pub shards: u32,
    #[serde(default = "default_quorum")]
    pub write_quorum: usize,
    #[serde(default = "default_quorum")]
    pub read_quorum: usize,
    pub zones: Vec<ZoneSpec>,
}

/// A failure domain (rack, availability zone): it holds one replica of every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub name: String,
    pub nodes: Vec<NodeSpec>,
}

/// One store node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// `host:port` of the node's store protocol.
    pub addr: String,
}

fn default_shards() -> u32 {
    1024
}
fn default_quorum() -> usize {
    2
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot parse the cluster spec: {0}")]
    Parse(String),
    #[error("{what} name {name:?} must be non-empty and use only A-Z a-z 0-9 . _ -")]
    BadName { what: &'static str, name: String },
    #[error("a cluster has 1 to {MAX_ZONES} zones, this one has {0}")]
    ZoneCount(usize),
    #[error("zone {0} appears twice")]
    DuplicateZone(String),
    #[error("zone {0} has no nodes")]
    EmptyZone(String),
    #[error("zone {zone} has {nodes} nodes but the cluster has only {shards} shards: every node must own a shard")]
    MoreNodesThanShards { zone: String, nodes: usize, shards: u32 },
    #[error("node {0} appears twice: node names are unique across the cluster")]
    DuplicateNode(String),
    #[error("node {node} has address {addr:?}, expected host:port")]
    BadAddr { node: String, addr: String },
    #[error("address {addr} is used by both {first} and {second}")]
    DuplicateAddr { addr: String, first: String, second: String },
    #[error("shards must be between 1 and {MAX_SHARDS}, not {0}")]
    ShardCount(u32),
    #[error("write_quorum ({w}) and read_quorum ({r}) must be between 1 and the zone count ({n})")]
    QuorumRange { w: usize, r: usize, n: usize },
    #[error("write_quorum + read_quorum must exceed the zone count: {w} + {r} <= {n}")]
    QuorumOverlap { w: usize, r: usize, n: usize },
    #[error("write_quorum must be a majority of the {n} zones, not {w}")]
    WriteMajority { w: usize, n: usize },
}

/// Names end up in etcd keys, metrics labels and command lines, so they stay within a plain character set.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_valid_addr(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

/// The quorum rule for N zones: W + R > N (every read quorum meets every write quorum) and W > N/2 (two
/// write quorums always share a replica, so two conflicting writes cannot both win). Shared by the spec
/// kept in etcd and the proxy's topology file.
pub fn check_quorum(n: usize, w: usize, r: usize) -> Result<(), SpecError> {
    if w == 0 || r == 0 || w > n || r > n {
        return Err(SpecError::QuorumRange { w, r, n });
    }
    if w + r <= n {
        return Err(SpecError::QuorumOverlap { w, r, n });
    }
    if 2 * w <= n {
        return Err(SpecError::WriteMajority { w, n });
    }
    Ok(())
}

impl ClusterSpec {
    /// Parses and validates a TOML spec.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: ClusterSpec = toml::from_str(text).map_err(|e| SpecError::Parse(one_line(&e.to_string())))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates a JSON spec (the form stored in etcd).
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let spec: ClusterSpec = serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Self::from_toml(&text)
    }

    /// Names, addresses, counts, and the quorum rule ([`check_quorum`]).
    pub fn validate(&self) -> Result<(), SpecError> {
        if !is_valid_name(&self.name) {
            return Err(SpecError::BadName { what: "cluster", name: self.name.clone() });
        }
        let n = self.zones.len();
        if n == 0 || n > MAX_ZONES {
            return Err(SpecError::ZoneCount(n));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(SpecError::ShardCount(self.shards));
        }
        let mut zone_names = HashSet::new();
        let mut node_names = HashSet::new();
        let mut addrs: Vec<(&str, &str)> = Vec::new();
        for z in &self.zones {
            if !is_valid_name(&z.name) {
                return Err(SpecError::BadName { what: "zone", name: z.name.clone() });
            }
            if !zone_names.insert(z.name.as_str()) {
                return Err(SpecError::DuplicateZone(z.name.clone()));
            }
            if z.nodes.is_empty() {
                return Err(SpecError::EmptyZone(z.name.clone()));
            }
            if z.nodes.len() > self.shards as usize {
                return Err(SpecError::MoreNodesThanShards {
                    zone: z.name.clone(),
                    nodes: z.nodes.len(),
                    shards: self.shards,
                });
            }
            for node in &z.nodes {
                if !is_valid_name(&node.name) {
                    return Err(SpecError::BadName { what: "node", name: node.name.clone() });
                }
                if !node_names.insert(node.name.as_str()) {
                    return Err(SpecError::DuplicateNode(node.name.clone()));
                }
                if !is_valid_addr(&node.addr) {
                    return Err(SpecError::BadAddr { node: node.name.clone(), addr: node.addr.clone() });
                }
                if let Some((_, first)) = addrs.iter().find(|(a, _)| *a == node.addr) {
                    return Err(SpecError::DuplicateAddr {
                        addr: node.addr.clone(),
                        first: first.to_string(),
                        second: node.name.clone(),
                    });
                }
                addrs.push((&node.addr, &node.name));
            }
        }
        check_quorum(n, self.write_quorum, self.read_quorum)
    }

    pub fn zone(&self, name: &str) -> Option<&ZoneSpec> {
        self.zones.iter().find(|z| z.name == name)
    }

    /// The node with that name and the zone holding it.
    pub fn node(&self, name: &str) -> Option<(&ZoneSpec, &NodeSpec)> {
        self.zones.iter().find_map(|z| z.nodes.iter().find(|n| n.name == name).map(|n| (z, n)))
    }

    pub fn node_addr(&self, name: &str) -> Option<&str> {
        self.node(name).map(|(_, n)| n.addr.as_str())
    }
}

/// TOML errors span several lines (a source excerpt with a caret); configuration errors are one line.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(zones: usize, nodes: usize, w: usize, r: usize) -> ClusterSpec {
        ClusterSpec {
            name: "test".into(),
            shards: 16,
            write_quorum: w,
            read_quorum: r,
            zones: (0..zones)
                .map(|z| ZoneSpec {
                    name: format!("z{z}"),
                    nodes: (0..nodes)
                        .map(|i| NodeSpec { name: format!("z{z}-n{i}"), addr: format!("10.0.{z}.{i}:7000") })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn quorum_rules() {
        assert_eq!(spec(3, 1, 2, 2).validate(), Ok(()));
        assert_eq!(spec(5, 1, 3, 3).validate(), Ok(()));
        assert_eq!(spec(1, 1, 1, 1).validate(), Ok(()));
        assert_eq!(spec(3, 1, 2, 1).validate(), Err(SpecError::QuorumOverlap { w: 2, r: 1, n: 3 }));
        assert_eq!(spec(4, 1, 2, 3).validate(), Err(SpecError::WriteMajority { w: 2, n: 4 }));
        assert_eq!(spec(3, 1, 4, 2).validate(), Err(SpecError::QuorumRange { w: 4, r: 2, n: 3 }));
        assert_eq!(spec(3, 1, 0, 2).validate(), Err(SpecError::QuorumRange { w: 0, r: 2, n: 3 }));
        assert_eq!(spec(6, 1, 4, 4).validate(), Err(SpecError::ZoneCount(6)));
        assert_eq!(spec(0, 1, 1, 1).validate(), Err(SpecError::ZoneCount(0)));
    }

    #[test]
    fn names_and_addresses() {
        let mut s = spec(3, 2, 2, 2);
        s.zones[1].nodes[1].name = "z0-n1".into();
        assert_eq!(s.validate(), Err(SpecError::DuplicateNode("z0-n1".into())));

        let mut s = spec(3, 2, 2, 2);
        s.zones[2].nodes[0].addr = "10.0.0.1:7000".into();
        let e = s.validate().unwrap_err();
        assert_eq!(e.to_string(), "address 10.0.0.1:7000 is used by both z0-n1 and z2-n0");

        for bad in ["", "a b", "node/1", "é"] {
            let mut s = spec(3, 1, 2, 2);
            s.zones[0].nodes[0].name = bad.into();
            assert!(matches!(s.validate(), Err(SpecError::BadName { what: "node", .. })), "{bad:?}");
        }
        for bad in ["host", "host:", ":7000", "host:0", "host:70000"] {
            let mut s = spec(3, 1, 2, 2);
            s.zones[0].nodes[0].addr = bad.into();
            assert!(matches!(s.validate(), Err(SpecError::BadAddr { .. })), "{bad:?}");
        }
        let mut s = spec(3, 1, 2, 2);
        s.zones[0].nodes[0].addr = "[::1]:7000".into();
        assert_eq!(s.validate(), Ok(()));

        let mut s = spec(3, 1, 2, 2);
        s.zones[2].name = "z0".into();
        assert_eq!(s.validate(), Err(SpecError::DuplicateZone("z0".into())));
    }

    #[test]
    fn zones_and_shards() {
        let mut s = spec(3, 1, 2, 2);
        s.zones[1].nodes.clear();
        assert_eq!(s.validate(), Err(SpecError::EmptyZone("z1".into())));

        let mut s = spec(3, 1, 2, 2);
        s.shards = 0;
        assert_eq!(s.validate(), Err(SpecError::ShardCount(0)));
        s.shards = MAX_SHARDS + 1;
        assert_eq!(s.validate(), Err(SpecError::ShardCount(MAX_SHARDS + 1)));
        s.shards = MAX_SHARDS;
        assert_eq!(s.validate(), Ok(()));

        let mut s = spec(3, 3, 2, 2);
        s.shards = 2;
        assert!(matches!(s.validate(), Err(SpecError::MoreNodesThanShards { nodes: 3, shards: 2, .. })));
    }

    #[test]
    fn toml_with_defaults() {
        let text = r#"
            name = "prod"

            [[zones]]
            name = "a"
            nodes = [{ name = "a1", addr = "10.0.0.1:7000" }]

            [[zones]]
            name = "b"
            nodes = [{ name = "b1", addr = "10.0.0.2:7000" }]

            [[zones]]
            name = "c"
            [[zones.nodes]]
            name = "c1"
            addr = "10.0.0.3:7000"
        "#;
        let s = ClusterSpec::from_toml(text).unwrap();
        assert_eq!((s.shards, s.write_quorum, s.read_quorum), (1024, 2, 2));
        assert_eq!(s.node_addr("c1"), Some("10.0.0.3:7000"));
        assert_eq!(s.node("b1").map(|(z, _)| z.name.as_str()), Some("b"));
        assert_eq!(ClusterSpec::from_json(&s.to_json()), Ok(s));
    }

    #[test]
    fn unknown_fields_and_errors_are_one_line() {
        let e = ClusterSpec::from_toml("name = \"x\"\nshard = 8\nzones = []\n").unwrap_err();
        assert!(matches!(e, SpecError::Parse(_)), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("shard"), "{e}");
        let e = ClusterSpec::from_json(r#"{"name":"x","zones":[{"name":"a","nodes":[],"extra":1}]}"#).unwrap_err();
        assert!(matches!(e, SpecError::Parse(_)), "{e}");
        let e = ClusterSpec::from_toml("name = \"x\"\nzones = []\n").unwrap_err();
        assert_eq!(e.to_string(), "a cluster has 1 to 5 zones, this one has 0");
    }
}
