//! Properties of the shard map: balance, minimal movement, determinism, one owner per shard and zone.

use proptest::prelude::*;
use vesta_cluster::shard_map::{MapError, ShardMap, ZoneMap};
use vesta_cluster::spec::{ClusterSpec, NodeSpec, ZoneSpec};

fn spec(shards: u32, nodes_per_zone: &[usize]) -> ClusterSpec {
    ClusterSpec {
        name: "prop".into(),
        shards,
        write_quorum: nodes_per_zone.len() / 2 + 1,
        read_quorum: nodes_per_zone.len() / 2 + 1,
        zones: nodes_per_zone
            .iter()
            .enumerate()
            .map(|(z, &n)| ZoneSpec {
                name: format!("zone{z}"),
                nodes: (0..n)
                    .map(|i| NodeSpec { name: format!("z{z}-n{i}"), addr: format!("10.{z}.0.{i}:7000") })
                    .collect(),
            })
            .collect(),
    }
}

fn is_balanced(z: &ZoneMap) -> bool {
    let counts = z.shard_counts();
    let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
    max - min <= 1
}

/// Every shard has exactly one owner in every zone, and the lookups agree with each other.
fn check_ownership(m: &ShardMap) {
    assert_eq!(m.validate(), Ok(()));
    for shard in 0..m.shards {
        let group = m.storage_group(shard);
        assert_eq!(group.len(), m.zones.len());
        for ((zone, node), z) in group.iter().zip(&m.zones) {
            assert_eq!(*zone, z.zone);
            assert!(m.owns(node, shard));
            let others = z.nodes.iter().filter(|n| n.as_str() != *node);
            assert!(others.clone().all(|n| !m.owns(n, shard)));
        }
    }
    for z in &m.zones {
        let total: usize = z.nodes.iter().map(|n| m.shards_of(n).len()).sum();
        assert_eq!(total, m.shards as usize);
    }
}

/// Owner names of every (zone, shard), to compare maps whose node indices differ.
fn owners(m: &ShardMap) -> Vec<Vec<String>> {
    m.zones.iter().map(|z| (0..m.shards).map(|s| z.owner_of(s).unwrap_or("").to_string()).collect()).collect()
}

/// A cluster of 1–5 zones with 1–20 nodes each (at most one per shard) and 1–2048 shards.
fn cluster() -> impl Strategy<Value = ClusterSpec> {
    (1u32..=2048, prop::collection::vec(1usize..=20, 1..=5)).prop_map(|(shards, nodes)| {
        let nodes: Vec<usize> = nodes.into_iter().map(|n| n.min(shards as usize)).collect();
        spec(shards, &nodes)
    })
}

proptest! {
    // Failures print their minimal input; there is no source file beside an integration test to store it in.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn initial_is_balanced_and_deterministic(spec in cluster()) {
        let m = ShardMap::initial(&spec);
        check_ownership(&m);
        prop_assert!(m.zones.iter().all(is_balanced));
        prop_assert_eq!(m.check_spec(&spec), Ok(()));
        prop_assert_eq!(&ShardMap::initial(&spec), &m);
    }

    #[test]
    fn add_moves_only_what_the_new_node_takes(spec in cluster(), zone in 0usize..5) {
        let m = ShardMap::initial(&spec);
        let z = zone % m.zones.len();
        let zone_name = m.zones[z].zone.clone();
        let n = m.zones[z].nodes.len();
        let next = match m.with_node_added(&zone_name, "joiner") {
            Err(MapError::ZoneFull { .. }) => {
                prop_assert_eq!(n, m.shards as usize);
                return Ok(());
            }
            other => other.unwrap(),
        };
        check_ownership(&next);
        prop_assert_eq!(next.version, m.version + 1);
        prop_assert!(next.zones.iter().all(is_balanced));
        prop_assert_eq!(&m.with_node_added(&zone_name, "joiner").unwrap(), &next);

        let moves = m.moves(&next);
        // The fewest moves that can balance the zone: the new node's floor share.
        prop_assert_eq!(moves.len(), m.shards as usize / (n + 1));
        prop_assert_eq!(moves.len(), next.shards_of("joiner").len());
        let (before, after) = (owners(&m), owners(&next));
        for mv in &moves {
            prop_assert_eq!(&mv.zone, &zone_name);
            prop_assert_eq!(&mv.to, "joiner");
            prop_assert_eq!(&before[z][mv.shard as usize], &mv.from);
        }
        let changed = (0..m.zones.len())
            .flat_map(|zi| (0..m.shards as usize).map(move |s| (zi, s)))
            .filter(|&(zi, s)| before[zi][s] != after[zi][s])
            .count();
        prop_assert_eq!(changed, moves.len());
    }

    #[test]
    fn remove_moves_only_the_removed_nodes_shards(spec in cluster(), zone in 0usize..5, pick in 0usize..20) {
        let m = ShardMap::initial(&spec);
        let z = zone % m.zones.len();
        let zone_name = m.zones[z].zone.clone();
        let node = m.zones[z].nodes[pick % m.zones[z].nodes.len()].clone();
        let next = match m.with_node_removed(&zone_name, &node) {
            Err(MapError::LastNode { .. }) => {
                prop_assert_eq!(m.zones[z].nodes.len(), 1);
                return Ok(());
            }
            other => other.unwrap(),
        };
        check_ownership(&next);
        prop_assert_eq!(next.version, m.version + 1);
        prop_assert!(next.zones.iter().all(is_balanced));
        prop_assert!(!next.zones[z].nodes.contains(&node));
        prop_assert_eq!(&m.with_node_removed(&zone_name, &node).unwrap(), &next);

        let moves = m.moves(&next);
        prop_assert_eq!(moves.iter().map(|mv| mv.shard).collect::<Vec<_>>(), m.shards_of(&node));
        prop_assert!(moves.iter().all(|mv| mv.from == node && mv.zone == zone_name));
        let (before, after) = (owners(&m), owners(&next));
        let changed = (0..m.zones.len())
            .flat_map(|zi| (0..m.shards as usize).map(move |s| (zi, s)))
            .filter(|&(zi, s)| before[zi][s] != after[zi][s])
            .count();
        prop_assert_eq!(changed, moves.len());
    }

    #[test]
    fn add_then_remove_is_balanced(spec in cluster(), zone in 0usize..5) {
        let m = ShardMap::initial(&spec);
        let zone_name = m.zones[zone % m.zones.len()].zone.clone();
        let Ok(grown) = m.with_node_added(&zone_name, "guest") else { return Ok(()) };
        let back = grown.with_node_removed(&zone_name, "guest").unwrap();
        check_ownership(&back);
        prop_assert!(back.zones.iter().all(is_balanced));
        prop_assert_eq!(back.version, 3);
        prop_assert_eq!(back.moves(&grown).len(), grown.shards_of("guest").len());
    }

    /// Maps shaped by a history of joins and departures (no longer the initial striping) keep every property.
    #[test]
    fn any_history_stays_balanced_with_minimal_moves(
        spec in cluster(),
        ops in prop::collection::vec((any::<bool>(), 0usize..5, 0usize..40), 1..12),
    ) {
        let mut m = ShardMap::initial(&spec);
        for (step, (add, zone, pick)) in ops.into_iter().enumerate() {
            let z = zone % m.zones.len();
            let zone_name = m.zones[z].zone.clone();
            let n = m.zones[z].nodes.len();
            let joiner = format!("step{step}");
            let result = if add {
                m.with_node_added(&zone_name, &joiner)
            } else {
                let node = m.zones[z].nodes[pick % n].clone();
                m.with_node_removed(&zone_name, &node)
            };
            let next = match result {
                Ok(next) => next,
                Err(MapError::ZoneFull { .. }) if add && n == m.shards as usize => continue,
                Err(MapError::LastNode { .. }) if !add && n == 1 => continue,
                Err(e) => panic!("step {step}: {e}"),
            };
            check_ownership(&next);
            prop_assert!(next.zones.iter().all(is_balanced));
            let moves = m.moves(&next);
            if add {
                prop_assert_eq!(moves.len(), m.shards as usize / (n + 1));
                prop_assert!(moves.iter().all(|mv| mv.to == joiner));
            } else {
                let gone = &m.zones[z].nodes[pick % n];
                prop_assert_eq!(moves.len(), m.shards_of(gone).len());
                prop_assert!(moves.iter().all(|mv| &mv.from == gone));
            }
            m = next;
        }
    }

    #[test]
    fn json_round_trip(spec in cluster(), zone in 0usize..5) {
        let m = ShardMap::initial(&spec);
        let zone_name = m.zones[zone % m.zones.len()].zone.clone();
        let m = m.with_node_added(&zone_name, "extra").unwrap_or(m);
        prop_assert_eq!(ShardMap::from_json(&m.to_json()), Ok(m));
        prop_assert_eq!(ClusterSpec::from_json(&spec.to_json()).map(|s| s == spec), Ok(true));
    }
}

#[test]
fn grows_from_three_to_six_nodes_like_the_scale_out_test() {
    let spec = spec(1024, &[1, 1, 1]);
    let mut m = ShardMap::initial(&spec);
    for z in 0..3 {
        let zone = m.zones[z].zone.clone();
        let next = m.with_node_added(&zone, &format!("z{z}-n1")).unwrap();
        assert_eq!(m.moves(&next).len(), 512);
        m = next;
    }
    assert_eq!(m.version, 4);
    for z in &m.zones {
        assert_eq!(z.shard_counts(), vec![512, 512]);
    }
    // The new node's shards are spread over the whole range, not one block.
    let taken = m.shards_of("z0-n1");
    assert!(taken.iter().any(|&s| s < 256) && taken.iter().any(|&s| s >= 768), "{taken:?}");
}

#[test]
fn validation_errors() {
    let good = ShardMap::initial(&spec(8, &[2, 2, 2]));

    let mut m = good.clone();
    m.zones[1].owner[3] = 2;
    assert_eq!(m.validate(), Err(MapError::OwnerOutOfRange { zone: "zone1".into(), shard: 3, index: 2, nodes: 2 }));
    assert!(m.with_node_added("zone0", "x").is_err());
    assert!(ShardMap::from_json(&m.to_json()).is_err());

    let mut m = good.clone();
    m.zones[2].owner.pop();
    assert_eq!(m.validate(), Err(MapError::OwnerLength { zone: "zone2".into(), len: 7, shards: 8 }));

    let mut m = good.clone();
    m.zones[2].nodes[0] = "z0-n1".into();
    assert_eq!(m.validate(), Err(MapError::DuplicateNode("z0-n1".into())));

    let mut m = good.clone();
    m.zones[1].zone = "zone0".into();
    assert_eq!(m.validate(), Err(MapError::DuplicateZone("zone0".into())));

    let mut m = good.clone();
    m.zones[0].nodes.clear();
    assert_eq!(m.validate(), Err(MapError::EmptyZone("zone0".into())));

    let mut m = good.clone();
    m.shards = 0;
    assert_eq!(m.validate(), Err(MapError::ShardCount(0)));

    let mut m = good.clone();
    m.zones.clear();
    assert_eq!(m.validate(), Err(MapError::NoZones));

    assert!(matches!(ShardMap::from_json("{\"version\":1}"), Err(MapError::Parse(_))));
    assert!(matches!(good.check_spec(&spec(8, &[2, 2, 3])), Err(MapError::SpecMismatch(_))));
    assert!(matches!(good.check_spec(&spec(16, &[2, 2, 2])), Err(MapError::SpecMismatch(_))));
    for e in [
        MapError::OwnerOutOfRange { zone: "a".into(), shard: 1, index: 9, nodes: 2 },
        MapError::ZoneFull { zone: "a".into(), shards: 2 },
    ] {
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn a_newer_writers_extra_fields_are_ignored() {
    let text =
        r#"{"version":7,"shards":2,"zones":[{"zone":"a","nodes":["n1"],"owner":[0,0],"weights":[1]}],"note":"x"}"#;
    let m = ShardMap::from_json(text).unwrap();
    assert_eq!((m.version, m.storage_group(1)), (7, vec![("a", "n1")]));
}
