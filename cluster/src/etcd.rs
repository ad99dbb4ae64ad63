//! The cluster's home in etcd. Everything of one cluster lives under `/vesta/<cluster>/`:
//!
//! | key | value |
//! |---|---|
//! | `spec` | the [`ClusterSpec`] (zones, nodes and addresses, shards, W, R), JSON |
//! | `map` | the [`ShardMap`] with its version, JSON; components watch this key |
//! | `zones/<zone>` | `up` or `down` (maintenance: proxies stop sending to a zone that is down) |
//! | `redist/plan` | the running [`Redistribution`], JSON; absent when none runs |
//! | `redist/progress/<zone>/<shard>` | a move's [`MoveProgress`], JSON |
//!
//! The spec and the map change together in one transaction, guarded by the map's revision, so two
//! operators can never interleave two map changes: the second one is refused and must re-read.

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, WatchOptions, WatchStream};

use crate::redistribution::{progress_leaf, MoveProgress, Redistribution};
use crate::shard_map::{Move, ShardMap};
use crate::spec::ClusterSpec;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("cluster {0:?} already exists in etcd (refusing to overwrite it)")]
    AlreadyExists(String),
    #[error("cluster {0:?} does not exist in etcd (run `vesta admin init` first)")]
    Missing(String),
    #[error("the shard map changed meanwhile (now version {0}); read it again and retry")]
    Conflict(u64),
    #[error("etcd holds an unreadable {key}: {error}")]
    Corrupt { key: String, error: String },
    #[error("a redistribution ({0}) is running; see `vesta admin status`, finish it or `vesta admin abort` it")]
    Busy(String),
    #[error("no redistribution is running")]
    NoRedistribution,
}

/// A zone's maintenance state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Up,
    /// Proxies send it nothing; the other zones must still form a write quorum.
    Down,
}

impl ZoneState {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneState::Up => "up",
            ZoneState::Down => "down",
        }
    }
}

/// What etcd holds for a cluster, and the revision of its map (for compare-and-swap).
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub spec: ClusterSpec,
    pub map: ShardMap,
    pub zones: BTreeMap<String, ZoneState>,
    pub map_revision: i64,
    pub redistribution: Option<Redistribution>,
}

impl ClusterState {
    pub fn is_down(&self, zone: &str) -> bool {
        self.zones.get(zone) == Some(&ZoneState::Down)
    }
}

#[derive(Clone)]
pub struct ClusterStore {
    client: Client,
    cluster: String,
}

impl ClusterStore {
    pub async fn connect(endpoints: &[String], cluster: &str) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None).await?;
        Ok(ClusterStore { client, cluster: cluster.to_string() })
    }

    fn key(&self, leaf: &str) -> String {
        format!("/vesta/{}/{leaf}", self.cluster)
    }

    pub fn map_key(&self) -> String {
        self.key("map")
    }

    /// Writes a new cluster; refuses if one of that name exists.
    pub async fn init(&mut self, spec: &ClusterSpec, map: &ShardMap) -> Result<(), StoreError> {
        let (spec_key, map_key) = (self.key("spec"), self.key("map"));
        let mut puts =
            vec![TxnOp::put(spec_key.clone(), json(spec), None), TxnOp::put(map_key.clone(), json(map), None)];
        for zone in &spec.zones {
            puts.push(TxnOp::put(self.key(&format!("zones/{}", zone.name)), ZoneState::Up.as_str(), None));
        }
        let txn = Txn::new()
            .when([Compare::version(spec_key, CompareOp::Equal, 0), Compare::version(map_key, CompareOp::Equal, 0)])
            .and_then(puts);
        if self.client.txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists(self.cluster.clone()))
        }
    }

    /// The cluster as etcd holds it; `None` if it was never initialised.
    pub async fn load(&mut self) -> Result<Option<ClusterState>, StoreError> {
        let prefix = self.key("");
        let resp = self.client.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
        let (mut spec, mut map, mut zones, mut redistribution) = (None, None, BTreeMap::new(), None);
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let leaf = key.strip_prefix(&prefix).unwrap_or(&key);
            let corrupt = |error: String| StoreError::Corrupt { key: key.clone(), error };
            match leaf {
                "spec" => {
                    spec = Some(serde_json::from_slice::<ClusterSpec>(kv.value()).map_err(|e| corrupt(e.to_string()))?)
                }
                "map" => {
                    let m = serde_json::from_slice::<ShardMap>(kv.value()).map_err(|e| corrupt(e.to_string()))?;
                    map = Some((m, kv.mod_revision()));
                }
                "redist/plan" => {
                    redistribution =
                        Some(serde_json::from_slice::<Redistribution>(kv.value()).map_err(|e| corrupt(e.to_string()))?)
                }
                _ => {
                    if let Some(zone) = leaf.strip_prefix("zones/") {
                        let state = match kv.value() {
                            b"up" => ZoneState::Up,
                            b"down" => ZoneState::Down,
                            other => return Err(corrupt(format!("zone state {:?}", String::from_utf8_lossy(other)))),
                        };
                        zones.insert(zone.to_string(), state);
                    }
                }
            }
        }
        match (spec, map) {
            (Some(spec), Some((map, map_revision))) => {
                Ok(Some(ClusterState { spec, map, zones, map_revision, redistribution }))
            }
            (None, None) => Ok(None),
            _ => Err(StoreError::Corrupt { key: prefix, error: "spec and map must both exist".into() }),
        }
    }

    /// Replaces spec and map together, if the map is still at `revision` (compare-and-swap).
    pub async fn publish(&mut self, revision: i64, spec: &ClusterSpec, map: &ShardMap) -> Result<(), StoreError> {
        let map_key = self.key("map");
        let txn = Txn::new()
            .when([Compare::mod_revision(map_key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(self.key("spec"), json(spec), None), TxnOp::put(map_key, json(map), None)]);
        if self.client.txn(txn).await?.succeeded() {
            return Ok(());
        }
        let now = self.load().await?.ok_or_else(|| StoreError::Missing(self.cluster.clone()))?;
        Err(StoreError::Conflict(now.map.version))
    }

    pub async fn set_zone_state(&mut self, zone: &str, state: ZoneState) -> Result<(), StoreError> {
        self.client.put(self.key(&format!("zones/{zone}")), state.as_str(), None).await?;
        Ok(())
    }

    /// The underlying client, for watches.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Every change under the cluster's prefix from now on. Components reload on a change of anything
    /// but progress records (see [`ClusterStore::affects_routing`]).
    pub async fn watch(&mut self) -> Result<WatchStream, StoreError> {
        Ok(self.client.watch(self.key(""), Some(WatchOptions::new().with_prefix())).await?)
    }

    /// Whether a change of `key` can change who serves what (copy progress cannot).
    pub fn affects_routing(&self, key: &[u8]) -> bool {
        let prefix = self.key("");
        let leaf = key.strip_prefix(prefix.as_bytes()).unwrap_or(key);
        !leaf.starts_with(b"redist/progress/")
    }

    /// Records a new redistribution, if the map is still at `revision` and none is running.
    pub async fn begin_redistribution(&mut self, revision: i64, plan: &Redistribution) -> Result<(), StoreError> {
        let (map_key, plan_key) = (self.key("map"), self.key("redist/plan"));
        let txn = Txn::new()
            .when([
                Compare::mod_revision(map_key, CompareOp::Equal, revision),
                Compare::version(plan_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::delete(self.key("redist/progress/"), Some(DeleteOptions::new().with_prefix())),
                TxnOp::put(plan_key, json(plan), None),
            ]);
        if self.client.txn(txn).await?.succeeded() {
            return Ok(());
        }
        let now = self.load().await?.ok_or_else(|| StoreError::Missing(self.cluster.clone()))?;
        match now.redistribution {
            Some(running) => Err(StoreError::Busy(running.action)),
            None => Err(StoreError::Conflict(now.map.version)),
        }
    }

    /// Rewrites the running redistribution (its phase), if it is still the one with this id.
    pub async fn update_redistribution(&mut self, plan: &Redistribution) -> Result<(), StoreError> {
        let state = self.load().await?.ok_or_else(|| StoreError::Missing(self.cluster.clone()))?;
        match state.redistribution {
            Some(running) if running.id == plan.id => {
                self.client.put(self.key("redist/plan"), json(plan), None).await?;
                Ok(())
            }
            Some(running) => Err(StoreError::Busy(running.action)),
            None => Err(StoreError::NoRedistribution),
        }
    }

    /// Publishes the redistribution's spec and map (if the map is still at `revision`) and removes the
    /// plan and its progress, all in one transaction: components see the new map and the end of
    /// forwarding at once.
    pub async fn finish_redistribution(&mut self, revision: i64, plan: &Redistribution) -> Result<(), StoreError> {
        let map_key = self.key("map");
        let txn = Txn::new().when([Compare::mod_revision(map_key.clone(), CompareOp::Equal, revision)]).and_then([
            TxnOp::put(self.key("spec"), json(&plan.spec), None),
            TxnOp::put(map_key, json(&plan.map), None),
            TxnOp::delete(self.key("redist/plan"), None),
            TxnOp::delete(self.key("redist/progress/"), Some(DeleteOptions::new().with_prefix())),
        ]);
        if self.client.txn(txn).await?.succeeded() {
            return Ok(());
        }
        let now = self.load().await?.ok_or_else(|| StoreError::Missing(self.cluster.clone()))?;
        Err(StoreError::Conflict(now.map.version))
    }

    /// Drops the running redistribution without publishing its map: sources stop forwarding and serve
    /// on; targets drop what they received after their grace period.
    pub async fn abort_redistribution(&mut self) -> Result<Redistribution, StoreError> {
        let state = self.load().await?.ok_or_else(|| StoreError::Missing(self.cluster.clone()))?;
        let plan = state.redistribution.ok_or(StoreError::NoRedistribution)?;
        let txn = Txn::new().and_then([
            TxnOp::delete(self.key("redist/plan"), None),
            TxnOp::delete(self.key("redist/progress/"), Some(DeleteOptions::new().with_prefix())),
        ]);
        self.client.txn(txn).await?;
        Ok(plan)
    }

    /// Every move's progress so far, keyed like [`progress_leaf`].
    pub async fn progress(&mut self) -> Result<BTreeMap<String, MoveProgress>, StoreError> {
        let prefix = self.key("");
        let resp = self.client.get(self.key("redist/progress/"), Some(GetOptions::new().with_prefix())).await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let progress = serde_json::from_slice::<MoveProgress>(kv.value())
                .map_err(|e| StoreError::Corrupt { key: key.clone(), error: e.to_string() })?;
            out.insert(key.strip_prefix(&prefix).unwrap_or(&key).to_string(), progress);
        }
        Ok(out)
    }

    pub async fn save_progress(&mut self, m: &Move, progress: &MoveProgress) -> Result<(), StoreError> {
        self.client.put(self.key(&progress_leaf(m)), json(progress), None).await?;
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Plain data structures with string keys always serialise.
    serde_json::to_string(value).unwrap_or_default()
}
