//! The cluster's home in etcd. Everything of one cluster lives under `/vesta/<cluster>/`:
//!
//! | key | value |
//! |---|---|
//! | `spec` | the [`ClusterSpec`] (zones, nodes and addresses, shards, W, R), JSON |
//! | `map` | the [`ShardMap`] with its version, JSON; components watch this key |
//! | `zones/<zone>` | `up` or `down` (maintenance: proxies stop sending to a zone that is down) |
//! | `redist/plan` | the running [`Redistribution`], JSON; absent when none runs |
//! | `redist/progress/<zone>/<shard>` | a move's [`MoveProgress`], JSON |
//! | `alive/<node>` | a store node's registration ([`Alive`], JSON), attached to the node's lease |
//!
//! The spec and the map change together in one transaction, guarded by the map's revision, so two
//! operators can never interleave two map changes: the second one is refused and must re-read. Every
//! transition of a redistribution (begin, phase, copy progress, publish, abort) is likewise one
//! transaction guarded by the plan's revision as the caller read it: a transition based on a plan that
//! changed or went away meanwhile is refused, never applied.

use std::collections::BTreeMap;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    ResponseHeader, Txn, TxnOp, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};

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
    #[error("the redistribution changed meanwhile (another `vesta admin` moved it on); read it again")]
    PlanChanged,
    #[error("the lease expired (etcd no longer knows it)")]
    LeaseExpired,
    #[error("etcd answered without a response header")]
    NoHeader,
}

/// A store node's registration under `alive/<node>`: it exists exactly as long as the node's lease,
/// so a node whose registration is gone has stopped serving its moving shards (see the store's fence).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alive {
    /// The address the node listens on.
    pub addr: String,
    /// The shard map version it serves.
    pub map_version: u64,
    /// Its lease's TTL: how long after it falls silent the registration can remain.
    pub ttl_ms: u64,
}

/// A lease etcd granted: its id and the TTL etcd chose (whole seconds, at least the one asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl_secs: i64,
}

/// A stream of keep-alives of one lease. Each [`KeepAlive::renew`] sends one and waits for its answer;
/// the caller bounds the wait and drops the stream on a timeout, so that an answer is never taken for
/// the answer to a later request.
pub struct KeepAlive {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl KeepAlive {
    /// Renews the lease; returns its TTL in seconds as etcd set it, or `LeaseExpired`.
    pub async fn renew(&mut self) -> Result<i64, StoreError> {
        self.keeper.keep_alive().await.map_err(lease_error)?;
        match self.stream.message().await.map_err(lease_error)? {
            Some(resp) if resp.ttl() > 0 => Ok(resp.ttl()),
            Some(_) => Err(StoreError::LeaseExpired),
            None => Err(StoreError::Etcd(etcd_client::Error::LeaseKeepAliveError("keep-alive stream ended".into()))),
        }
    }
}

/// etcd reports a lease it no longer knows only in the error text.
fn lease_error(e: etcd_client::Error) -> StoreError {
    if e.to_string().contains("lease not found") {
        StoreError::LeaseExpired
    } else {
        StoreError::Etcd(e)
    }
}

impl Alive {
    /// What a registration says. Only its existence matters for safety, so one that cannot be read
    /// (another version wrote it) still counts, with nothing known about it, instead of failing the
    /// whole cluster's load.
    fn parse(value: &[u8]) -> Alive {
        serde_json::from_slice(value).unwrap_or_default()
    }
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<i64, StoreError> {
    header.map(|h| h.revision()).ok_or(StoreError::NoHeader)
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

/// What etcd holds for a cluster, read at one revision, with the revisions of its map and plan (for
/// compare-and-swap).
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub spec: ClusterSpec,
    pub map: ShardMap,
    pub zones: BTreeMap<String, ZoneState>,
    pub map_revision: i64,
    pub redistribution: Option<Redistribution>,
    /// The plan key's mod revision; 0 when no redistribution runs.
    pub plan_revision: i64,
    /// Registered store nodes by name.
    pub alive: BTreeMap<String, Alive>,
    /// The etcd revision this was read at: of two reads, the later one has the greater revision.
    pub revision: i64,
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
        let read_at = header_revision(resp.header())?;
        let (mut spec, mut map, mut zones, mut redistribution) = (None, None, BTreeMap::new(), None);
        let (mut plan_revision, mut alive) = (0, BTreeMap::new());
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
                        Some(serde_json::from_slice::<Redistribution>(kv.value()).map_err(|e| corrupt(e.to_string()))?);
                    plan_revision = kv.mod_revision();
                }
                _ => {
                    if let Some(node) = leaf.strip_prefix("alive/") {
                        alive.insert(node.to_string(), Alive::parse(kv.value()));
                    } else if let Some(zone) = leaf.strip_prefix("zones/") {
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
            (Some(spec), Some((map, map_revision))) => Ok(Some(ClusterState {
                spec,
                map,
                zones,
                map_revision,
                redistribution,
                plan_revision,
                alive,
                revision: read_at,
            })),
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

    /// Whether a change of `key` can change who serves what (copy progress and registrations cannot).
    pub fn affects_routing(&self, key: &[u8]) -> bool {
        let prefix = self.key("");
        let leaf = key.strip_prefix(prefix.as_bytes()).unwrap_or(key);
        !leaf.starts_with(b"redist/progress/") && !leaf.starts_with(b"alive/")
    }

    /// Records a new redistribution, if the map is still at `revision` and none is running. Returns the
    /// plan's revision, which every later transition of it must name.
    pub async fn begin_redistribution(&mut self, revision: i64, plan: &Redistribution) -> Result<i64, StoreError> {
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
        let resp = self.client.txn(txn).await?;
        if resp.succeeded() {
            // The revision the transaction wrote at: the plan's new mod revision.
            return header_revision(resp.header());
        }
        let now = self.load().await?.ok_or_else(|| StoreError::Missing(self.cluster.clone()))?;
        match now.redistribution {
            Some(running) => Err(StoreError::Busy(running.action)),
            None => Err(StoreError::Conflict(now.map.version)),
        }
    }

    /// Rewrites the running redistribution (its phase), if the plan is still the one read at
    /// `plan_revision`: an update based on a plan that was aborted, or moved on by another `vesta admin`,
    /// is refused rather than bringing it back. Returns the plan's new revision.
    pub async fn update_redistribution(
        &mut self,
        plan: &Redistribution,
        plan_revision: i64,
    ) -> Result<i64, StoreError> {
        let plan_key = self.key("redist/plan");
        let txn = Txn::new().when(plan_is(&plan_key, plan_revision)).and_then([TxnOp::put(plan_key, json(plan), None)]);
        let resp = self.client.txn(txn).await?;
        if resp.succeeded() {
            // The revision the transaction wrote at: the plan's new mod revision.
            return header_revision(resp.header());
        }
        Err(self.why_plan_moved().await)
    }

    /// Publishes the redistribution's spec and map and removes the plan and its progress, all in one
    /// transaction — if the map is still at `map_revision` and the plan still the one read at
    /// `plan_revision` (so neither an abort nor another `vesta admin` came in between): components see the
    /// new map and the end of forwarding at once.
    pub async fn finish_redistribution(
        &mut self,
        map_revision: i64,
        plan_revision: i64,
        plan: &Redistribution,
    ) -> Result<(), StoreError> {
        let (map_key, plan_key) = (self.key("map"), self.key("redist/plan"));
        let mut guard = vec![Compare::mod_revision(map_key.clone(), CompareOp::Equal, map_revision)];
        guard.extend(plan_is(&plan_key, plan_revision));
        let txn = Txn::new().when(guard).and_then([
            TxnOp::put(self.key("spec"), json(&plan.spec), None),
            TxnOp::put(map_key, json(&plan.map), None),
            TxnOp::delete(plan_key, None),
            TxnOp::delete(self.key("redist/progress/"), Some(DeleteOptions::new().with_prefix())),
        ]);
        if self.client.txn(txn).await?.succeeded() {
            return Ok(());
        }
        let now = self.load().await?.ok_or_else(|| StoreError::Missing(self.cluster.clone()))?;
        Err(match now.redistribution {
            None => StoreError::NoRedistribution,
            Some(_) if now.plan_revision != plan_revision => StoreError::PlanChanged,
            Some(_) => StoreError::Conflict(now.map.version),
        })
    }

    /// Drops the running redistribution without publishing its map, if it is still the one read at
    /// `plan_revision`: sources stop forwarding and serve on; targets drop what they received after
    /// their grace period.
    pub async fn abort_redistribution(&mut self, plan_revision: i64) -> Result<(), StoreError> {
        let plan_key = self.key("redist/plan");
        let txn = Txn::new().when(plan_is(&plan_key, plan_revision)).and_then([
            TxnOp::delete(plan_key, None),
            TxnOp::delete(self.key("redist/progress/"), Some(DeleteOptions::new().with_prefix())),
        ]);
        if self.client.txn(txn).await?.succeeded() {
            return Ok(());
        }
        Err(self.why_plan_moved().await)
    }

    /// Why a transition guarded by the plan's revision was refused.
    async fn why_plan_moved(&mut self) -> StoreError {
        match self.load().await {
            Ok(Some(ClusterState { redistribution: None, .. })) => StoreError::NoRedistribution,
            Ok(Some(_)) => StoreError::PlanChanged,
            Ok(None) => StoreError::Missing(self.cluster.clone()),
            Err(e) => e,
        }
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

    /// Checkpoints a move, if the plan is still the one read at `plan_revision`. A late checkpoint of an
    /// aborted plan must not land: a later plan moving the same shard would resume after its cursor
    /// and skip every record before it.
    pub async fn save_progress(
        &mut self,
        m: &Move,
        progress: &MoveProgress,
        plan_revision: i64,
    ) -> Result<(), StoreError> {
        let plan_key = self.key("redist/plan");
        let txn = Txn::new().when(plan_is(&plan_key, plan_revision)).and_then([TxnOp::put(
            self.key(&progress_leaf(m)),
            json(progress),
            None,
        )]);
        if self.client.txn(txn).await?.succeeded() {
            return Ok(());
        }
        Err(self.why_plan_moved().await)
    }

    // -----------------------------------------------------------------------------------------------
    // Store nodes' registrations
    // -----------------------------------------------------------------------------------------------

    /// A new lease of `ttl_secs` seconds.
    pub async fn grant_lease(&mut self, ttl_secs: i64) -> Result<Lease, StoreError> {
        let resp = self.client.lease_grant(ttl_secs, None).await?;
        Ok(Lease { id: resp.id(), ttl_secs: resp.ttl() })
    }

    /// Writes the node's registration, attached to `lease` (so it goes when the lease does). Refused
    /// with `LeaseExpired` if the lease is gone: a registration never outlives its lease.
    pub async fn register(&mut self, node: &str, alive: &Alive, lease: i64) -> Result<(), StoreError> {
        let key = self.key(&format!("alive/{node}"));
        self.client.put(key, json(alive), Some(PutOptions::new().with_lease(lease))).await.map_err(lease_error)?;
        Ok(())
    }

    /// Opens a keep-alive stream for `lease`, which renews it once (`LeaseExpired` if it is gone).
    pub async fn keep_alive(&mut self, lease: i64) -> Result<KeepAlive, StoreError> {
        let (keeper, stream) = self.client.lease_keep_alive(lease).await.map_err(lease_error)?;
        Ok(KeepAlive { keeper, stream })
    }

    /// Ends a lease at once, and with it the registration attached to it.
    pub async fn revoke_lease(&mut self, lease: i64) -> Result<(), StoreError> {
        self.client.lease_revoke(lease).await.map_err(lease_error)?;
        Ok(())
    }

    /// The registered store nodes, by name.
    pub async fn alive_nodes(&mut self) -> Result<BTreeMap<String, Alive>, StoreError> {
        let prefix = self.key("alive/");
        let resp = self.client.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            out.insert(key.strip_prefix(&prefix).unwrap_or(&key).to_string(), Alive::parse(kv.value()));
        }
        Ok(out)
    }
}

/// The plan exists and is still the one read at `plan_revision` (a missing key's mod revision is 0, so
/// existence is compared too).
fn plan_is(plan_key: &str, plan_revision: i64) -> [Compare; 2] {
    [
        Compare::version(plan_key, CompareOp::Greater, 0),
        Compare::mod_revision(plan_key, CompareOp::Equal, plan_revision),
    ]
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Plain data structures with string keys always serialise.
    serde_json::to_string(value).unwrap_or_default()
}
