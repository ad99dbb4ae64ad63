//! Where a proxy or store node learns the cluster: a topology file, or etcd (`--etcd`). A proxy keeps
//! the last map it read from etcd in a cache file, so that it can start while etcd is down.
//!
//! The map is read once at start-up. Watching it for changes, and refreshing on `not-owner`, is not
//! built yet (issue 5): a map change needs a restart of the processes for now.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vesta_cluster::etcd::ClusterStore;
use vesta_cluster::shard_map::ShardMap;
use vesta_cluster::spec::ClusterSpec;
use vesta_proxy::topology::{Topology, Zone};
use vesta_proxy::ProxyConfig;
use vesta_store::config::StoreConfig;

const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// What the cache file holds.
#[derive(Serialize, Deserialize)]
struct Cached {
    spec: ClusterSpec,
    map: ShardMap,
}

async fn from_etcd(endpoints: &[String], cluster: &str) -> Result<(ClusterSpec, ShardMap), String> {
    let load = async {
        let mut store = ClusterStore::connect(endpoints, cluster).await.map_err(|e| e.to_string())?;
        store.load().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(ETCD_TIMEOUT, load).await {
        Err(_) => Err(format!("etcd at {} did not answer within {ETCD_TIMEOUT:?}", endpoints.join(","))),
        Ok(Err(e)) => Err(format!("etcd at {}: {e}", endpoints.join(","))),
        Ok(Ok(None)) => Err(format!("cluster {cluster:?} does not exist in etcd (run `vesta admin init` first)")),
        Ok(Ok(Some(state))) => Ok((state.spec, state.map)),
    }
}

/// The proxy's topology: from its file, or from etcd (falling back to the cache file).
pub async fn proxy_topology(config: &ProxyConfig) -> Result<Topology, String> {
    if config.etcd.is_empty() {
        return Topology::from_file(&config.topology).map_err(|e| format!("topology: {e}"));
    }
    let (spec, map) = match from_etcd(&config.etcd, &config.cluster).await {
        Ok((spec, map)) => {
            if let Some(path) = &config.map_cache {
                write_cache(path, &spec, &map)?;
            }
            (spec, map)
        }
        Err(e) => {
            let Some(path) = &config.map_cache else { return Err(e) };
            let cached = read_cache(path).map_err(|c| format!("{e}; and no usable map cache: {c}"))?;
            tracing::warn!(error = %e, cache = %path.display(), version = cached.map.version, "serving from the map cache");
            (cached.spec, cached.map)
        }
    };
    tracing::info!(version = map.version, "shard map loaded");
    topology_of(&spec, &map)
}

/// A store node's shard count and owned shards, from etcd when configured.
pub async fn store_shards(config: &mut StoreConfig) -> Result<(), String> {
    if config.etcd.is_empty() {
        return Ok(());
    }
    let (_, map) = from_etcd(&config.etcd, &config.cluster).await?;
    let owned = map.shards_of(&config.node);
    if owned.is_empty() {
        return Err(format!("the shard map (version {}) gives node {:?} no shards", map.version, config.node));
    }
    config.shards = map.shards;
    config.owned_shards = owned.iter().map(u32::to_string).collect();
    tracing::info!(version = map.version, shards = owned.len(), "owned shards from the shard map");
    Ok(())
}

/// The proxy's view of a spec and its map: zones with their nodes in the map's order, and each shard's
/// storage group as placed by the map.
fn topology_of(spec: &ClusterSpec, map: &ShardMap) -> Result<Topology, String> {
    let mut zones = Vec::new();
    for zone_map in &map.zones {
        let nodes = zone_map
            .nodes
            .iter()
            .map(|name| {
                spec.node_addr(name).map(str::to_string).ok_or_else(|| format!("map names unknown node {name:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        zones.push(Zone { name: zone_map.zone.clone(), nodes });
    }
    let placement = (0..map.shards as usize)
        .map(|s| map.zones.iter().map(|z| z.owner.get(s).map_or(0, |&o| o as usize)).collect())
        .collect();
    let topology = Topology {
        shards: map.shards,
        write_quorum: spec.write_quorum,
        read_quorum: spec.read_quorum,
        zones,
        placement: Some(placement),
    };
    topology.validate()?;
    Ok(topology)
}

fn write_cache(path: &Path, spec: &ClusterSpec, map: &ShardMap) -> Result<(), String> {
    let text = serde_json::to_string(&Cached { spec: spec.clone(), map: map.clone() }).map_err(|e| e.to_string())?;
    // Write then rename, so a crash never leaves half a cache behind.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("map cache {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("map cache {}: {e}", path.display()))
}

fn read_cache(path: &Path) -> Result<Cached, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cached: Cached = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    cached.spec.validate().map_err(|e| e.to_string())?;
    Ok(cached)
}
