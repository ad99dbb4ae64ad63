//! Where a proxy or store node learns the cluster: a topology file, or etcd (`--etcd`).
//!
//! With etcd, both follow the cluster for as long as they run: a watch on the cluster's prefix (and a
//! reload every few seconds, in case a watch event is lost) brings every new map version, zone state
//! and redistribution phase, which they switch to at once. A proxy also reloads when a store node
//! answers `not-owner`, and keeps the last map in a cache file so that it can start while etcd is down.
//! A store node deletes the records of shards that stopped being its own after a grace period.
//!
//! A store node also registers itself (`alive/<node>`) under an etcd lease it keeps alive, and serves
//! the shards a redistribution is moving only while etcd keeps confirming that lease (the store's
//! `fence`): `vesta admin` goes on without a silent participant only once its registration is gone.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vesta_cluster::etcd::{Alive, ClusterState, ClusterStore, Lease, StoreError};
use vesta_cluster::redistribution::Phase;
use vesta_cluster::shard_map::ShardMap;
use vesta_cluster::spec::ClusterSpec;
use vesta_proxy::server::Proxy;
use vesta_proxy::topology::{Topology, Zone};
use vesta_proxy::ProxyConfig;
use vesta_store::config::StoreConfig;
use vesta_store::{LeaseTiming, Ownership, StoreNode};

const ETCD_TIMEOUT: Duration = Duration::from_secs(5);
/// A reload however quiet the watch is: a lost event delays a switch by at most this.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// What the cache file holds.
#[derive(Serialize, Deserialize)]
struct Cached {
    spec: ClusterSpec,
    map: ShardMap,
    #[serde(default)]
    down_zones: Vec<String>,
}

async fn load(endpoints: &[String], cluster: &str) -> Result<ClusterState, String> {
    let load = async {
        let mut store = ClusterStore::connect(endpoints, cluster).await.map_err(|e| e.to_string())?;
        store.load().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(ETCD_TIMEOUT, load).await {
        Err(_) => Err(format!("etcd at {} did not answer within {ETCD_TIMEOUT:?}", endpoints.join(","))),
        Ok(Err(e)) => Err(format!("etcd at {}: {e}", endpoints.join(","))),
        Ok(Ok(None)) => Err(format!("cluster {cluster:?} does not exist in etcd (run `vesta admin init` first)")),
        Ok(Ok(Some(state))) => Ok(state),
    }
}

/// The proxy's topology: from its file, or from etcd (falling back to the cache file).
pub async fn proxy_topology(config: &ProxyConfig) -> Result<Topology, String> {
    if config.etcd.is_empty() {
        return Topology::from_file(&config.topology).map_err(|e| format!("topology: {e}"));
    }
    let topology = match load(&config.etcd, &config.cluster).await {
        Ok(state) => {
            let down = down_zones(&state);
            if let Some(path) = &config.map_cache {
                write_cache(path, &state.spec, &state.map, &down)?;
            }
            topology_of(&state.spec, &state.map, down)?
        }
        Err(e) => {
            let Some(path) = &config.map_cache else { return Err(e) };
            let cached = read_cache(path).map_err(|c| format!("{e}; and no usable map cache: {c}"))?;
            tracing::warn!(error = %e, cache = %path.display(), version = cached.map.version, "serving from the map cache");
            topology_of(&cached.spec, &cached.map, cached.down_zones)?
        }
    };
    tracing::info!(version = topology.version, "shard map loaded");
    Ok(topology)
}

/// Keeps a running proxy on the cluster's newest map (and zone states), for as long as it runs.
pub fn follow_for_proxy(config: &ProxyConfig, proxy: Arc<Proxy>, started_with: &Topology) {
    if config.etcd.is_empty() {
        return;
    }
    let cache = config.map_cache.clone();
    let mut current = (started_with.version, started_with.down_zones.clone());
    let coordinator = proxy.coordinator.clone();
    let apply = move |state: ClusterState| {
        let down = down_zones(&state);
        if (state.map.version, down.clone()) == current {
            return;
        }
        let installed = topology_of(&state.spec, &state.map, down.clone()).and_then(|t| proxy.install(&t));
        match installed {
            Ok(()) => {
                current = (state.map.version, down.clone());
                if let Some(path) = &cache {
                    if let Err(e) = write_cache(path, &state.spec, &state.map, &down) {
                        tracing::warn!(error = %e, "cannot update the map cache");
                    }
                }
            }
            Err(e) => tracing::error!(version = state.map.version, error = %e, "refusing the new shard map"),
        }
    };
    let wake = move || {
        let c = coordinator.clone();
        async move { c.refresh_requested().await }
    };
    tokio::spawn(follow(config.etcd.clone(), config.cluster.clone(), apply, wake));
}

/// A store node's cluster from etcd (when configured): sets the shard count, and returns the state it
/// read (the node registers, and reads the state again, before it serves: [`follow_for_store`]).
pub async fn store_cluster(config: &mut StoreConfig) -> Result<Option<ClusterState>, String> {
    if config.etcd.is_empty() {
        return Ok(None);
    }
    let state = load(&config.etcd, &config.cluster).await?;
    config.shards = state.map.shards;
    config.owned_shards = Vec::new();
    let owned = ownership_of(&state, &config.node);
    if owned.owned_count() == 0 && owned.incoming.iter().all(|i| !i) {
        tracing::warn!(
            version = state.map.version,
            node = %config.node,
            "the shard map gives this node no shards yet; waiting for `vesta admin add-node`"
        );
    }
    Ok(Some(state))
}

/// Registers the node in etcd and puts it on the cluster's current state (before it serves anything),
/// then keeps the registration alive, keeps the node on the cluster's newest state, and drops the
/// records of shards it no longer holds once they have been gone for the grace period.
pub async fn follow_for_store(config: &StoreConfig, node: Arc<StoreNode>) -> Result<Registration, String> {
    let timing = config.lease_timing().map_err(|e| format!("store configuration: {e}"))?;
    let applier = Arc::new(Applier { node: node.clone(), name: config.node.clone(), last: Default::default() });
    let mut registrar = Registrar {
        endpoints: config.etcd.clone(),
        cluster: config.cluster.clone(),
        name: config.node.clone(),
        addr: config.listen.to_string(),
        timing,
        node: node.clone(),
        applier: applier.clone(),
        lease: None,
        current: Arc::new(AtomicI64::new(0)),
    };
    // Moving shards are refused until the first registration, which installs the cluster's state.
    node.fence().arm();
    let first = async {
        let mut store = connect(&registrar.endpoints, &registrar.cluster).await?;
        registrar.register(&mut store).await
    };
    first.await.map_err(|e| format!("registering {} in etcd at {}: {e}", config.node, config.etcd.join(",")))?;
    let current = registrar.current.clone();
    let keeper = tokio::spawn(registrar.run());

    let apply = move |state: ClusterState| applier.apply(&state);
    let never = || std::future::pending::<()>();
    tokio::spawn(follow(config.etcd.clone(), config.cluster.clone(), apply, never));
    tokio::spawn(drop_departed_shards(node, Duration::from_millis(config.drop_grace_ms)));
    Ok(Registration { keeper, current, endpoints: config.etcd.clone(), cluster: config.cluster.clone() })
}

/// A store node's registration in etcd, kept alive in the background.
pub struct Registration {
    keeper: tokio::task::JoinHandle<()>,
    /// The lease's id, 0 while none.
    current: Arc<AtomicI64>,
    endpoints: Vec<String>,
    cluster: String,
}

impl Registration {
    /// On a clean shutdown (the node no longer serves): ends the registration at once, so that a
    /// running `vesta admin` need not wait for the lease to expire.
    pub async fn leave(self) {
        self.keeper.abort();
        let lease = self.current.load(Ordering::SeqCst);
        if lease == 0 {
            return;
        }
        let revoke = async {
            let mut store = connect(&self.endpoints, &self.cluster).await?;
            store.revoke_lease(lease).await.map_err(LeaseLoopError::from)
        };
        match tokio::time::timeout(Duration::from_secs(2), revoke).await {
            Ok(Ok(())) => tracing::info!("left etcd (registration revoked)"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not revoke the registration; it expires with its lease"),
            Err(_) => tracing::warn!("etcd did not answer the revocation; the registration expires with its lease"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LeaseLoopError {
    #[error("etcd did not answer {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error(transparent)]
    Etcd(#[from] StoreError),
    #[error("the cluster is gone from etcd")]
    Missing,
    #[error("the etcd lease expired")]
    Lost,
}

/// Bounds an etcd call.
async fn bounded<T>(
    what: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, LeaseLoopError> {
    Ok(tokio::time::timeout(limit, call).await.map_err(|_| LeaseLoopError::Timeout(what, limit))??)
}

async fn connect(endpoints: &[String], cluster: &str) -> Result<ClusterStore, LeaseLoopError> {
    bounded("a connection", ETCD_TIMEOUT, ClusterStore::connect(endpoints, cluster)).await
}

/// Installs the ownership a cluster state gives the node. The follower and the registration read etcd
/// concurrently: a read is installed only if none read later was installed before it, so the node
/// never goes back to an older state.
struct Applier {
    node: Arc<StoreNode>,
    name: String,
    /// The etcd revision of the state installed last.
    last: parking_lot::Mutex<i64>,
}

impl Applier {
    fn apply(&self, state: &ClusterState) {
        let mut last = self.last.lock();
        if state.revision < *last {
            return;
        }
        *last = state.revision;
        // A zone in maintenance is out of service: back after longer than the grace period, its nodes
        // serve nothing until a full repair (`zone up` runs it).
        self.node.set_in_service(in_service(state, &self.name));
        let next = ownership_of(state, &self.name);
        let now = self.node.ownership();
        let same = next.map_version == now.map_version
            && next.handoff == now.handoff
            && next.redistribution == now.redistribution
            && next.owned == now.owned
            && next.incoming == now.incoming
            && next.outgoing == now.outgoing;
        if !same {
            self.node.set_ownership(next);
        }
    }
}

/// Keeps the node's registration alive and, through it, the fence open (see `vesta_store::fence`).
struct Registrar {
    endpoints: Vec<String>,
    cluster: String,
    name: String,
    addr: String,
    timing: LeaseTiming,
    node: Arc<StoreNode>,
    applier: Arc<Applier>,
    /// The lease in use and the map version its registration names.
    lease: Option<(Lease, u64)>,
    /// The lease's id for [`Registration::leave`], 0 while none.
    current: Arc<AtomicI64>,
}

impl Registrar {
    /// A new lease and registration, then the cluster's state read after it — installed before the
    /// fence lifts, so the node never serves a moving shard with a state older than the one etcd held
    /// when it registered (a `vesta admin` that went on without it while it was away wrote that state
    /// before it could see the registration gone).
    async fn register(&mut self, store: &mut ClusterStore) -> Result<Lease, LeaseLoopError> {
        let fence = self.node.fence();
        fence.close();
        let sent = tokio::time::Instant::now();
        let lease = bounded("a lease grant", ETCD_TIMEOUT, store.grant_lease(self.timing.ttl_secs())).await?;
        let version = self.node.ownership().map_version;
        bounded("a registration", ETCD_TIMEOUT, store.register(&self.name, &self.alive(version), lease.id)).await?;
        let state = bounded("a load", ETCD_TIMEOUT, store.load()).await?.ok_or(LeaseLoopError::Missing)?;
        self.applier.apply(&state);
        if let Some((old, _)) = self.lease.replace((lease, version)) {
            // Its registration was replaced (a put re-attaches the key); the lease itself is left over.
            let _ = bounded("a revocation", ETCD_TIMEOUT, store.revoke_lease(old.id)).await;
        }
        self.current.store(lease.id, Ordering::SeqCst);
        fence.extend_to(self.timing.valid_until(sent, lease.ttl_secs));
        tracing::info!(lease = lease.id, ttl_secs = lease.ttl_secs, version = state.map.version, "registered in etcd");
        Ok(lease)
    }

    fn alive(&self, map_version: u64) -> Alive {
        Alive { addr: self.addr.clone(), map_version, ttl_ms: self.timing.ttl.as_millis() as u64 }
    }

    /// Forever: keep-alives every [`LeaseTiming::interval`], each extending the fence from the moment
    /// it was sent; a new registration whenever the lease is gone or the fence closed meanwhile.
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Err(e) = self.session().await;
            match e {
                // Register again at once.
                LeaseLoopError::Lost => backoff = Duration::from_millis(100),
                e => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "etcd lease keep-alive interrupted");
                    self.node.fence().observe();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.timing.interval().max(Duration::from_millis(100)));
                }
            }
        }
    }

    /// One connection to etcd: registers if needed, then renews until something fails (`Lost`: the
    /// lease is gone).
    async fn session(&mut self) -> Result<std::convert::Infallible, LeaseLoopError> {
        let mut store = connect(&self.endpoints, &self.cluster).await?;
        let node = self.node.clone();
        let fence = node.fence();
        // Past the deadline the lease may be gone, and etcd may have moved on meanwhile: a new
        // registration reloads the state; resuming the old lease would not.
        let lease = match self.lease {
            Some((lease, _)) if fence.allows() => lease,
            _ => self.register(&mut store).await?,
        };
        let window = self.timing.window();
        let mut sent = tokio::time::Instant::now();
        let mut keep_alive = match bounded("a keep-alive", window, store.keep_alive(lease.id)).await {
            Err(LeaseLoopError::Etcd(StoreError::LeaseExpired)) => return Err(self.lost()),
            other => other?,
        };
        fence.extend_to(self.timing.valid_until(sent, lease.ttl_secs));
        loop {
            self.update_registration(&mut store, lease).await?;
            tokio::time::sleep_until(sent + self.timing.interval()).await;
            fence.observe();
            sent = tokio::time::Instant::now();
            // Waiting beyond the window is pointless: an answer after it extends nothing. On a timeout
            // the stream is dropped, so a late answer is never mistaken for a later request's.
            match bounded("a keep-alive", window, keep_alive.renew()).await {
                Ok(ttl) => fence.extend_to(self.timing.valid_until(sent, ttl)),
                Err(LeaseLoopError::Etcd(StoreError::LeaseExpired)) => return Err(self.lost()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The registration names the map version the node serves: rewritten when it changed.
    async fn update_registration(&mut self, store: &mut ClusterStore, lease: Lease) -> Result<(), LeaseLoopError> {
        let version = self.node.ownership().map_version;
        if self.lease.is_some_and(|(_, registered)| registered == version) {
            return Ok(());
        }
        let window = self.timing.window();
        match bounded("a registration", window, store.register(&self.name, &self.alive(version), lease.id)).await {
            Ok(()) => {
                self.lease = Some((lease, version));
                Ok(())
            }
            Err(LeaseLoopError::Etcd(StoreError::LeaseExpired)) => Err(self.lost()),
            Err(e) => Err(e),
        }
    }

    /// etcd no longer knows the lease: stop serving moving shards now, and register again.
    fn lost(&mut self) -> LeaseLoopError {
        tracing::warn!("the etcd lease expired; registering again");
        self.node.fence().close();
        self.node.fence().observe();
        self.lease = None;
        self.current.store(0, Ordering::SeqCst);
        LeaseLoopError::Lost
    }
}

/// Deletes the records of every shard the node has not held for `grace`. Nothing new can land in a
/// shard the node does not hold (every write and copy is refused there), so a shard is looked at once,
/// when it stops being held (or at start-up), not on every tick.
async fn drop_departed_shards(node: Arc<StoreNode>, grace: Duration) {
    let mut pending: HashMap<u32, Instant> = HashMap::new();
    let mut seen: Option<Arc<Ownership>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let ownership = node.ownership();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &ownership)) {
            let shards = ownership.owned.len() as u32;
            pending.retain(|&s, _| !ownership.holds(s));
            for shard in (0..shards).filter(|&s| !ownership.holds(s)) {
                let newly_released = seen.as_ref().is_none_or(|before| before.holds(shard));
                if newly_released && node.has_data(shard) {
                    pending.entry(shard).or_insert_with(Instant::now);
                }
            }
            seen = Some(ownership);
        }
        let due: Vec<u32> = pending.iter().filter(|(_, since)| since.elapsed() >= grace).map(|(&s, _)| s).collect();
        for shard in due {
            pending.remove(&shard);
            if node.ownership().holds(shard) {
                continue;
            }
            match node.drop_shard(shard).await {
                Ok(n) => tracing::info!(shard, records = n, "dropped a shard this node no longer holds"),
                Err(e) => tracing::error!(shard, error = %e, "dropping a departed shard failed"),
            }
        }
    }
}

/// What a node serves under `state`: its shards of the map, and its part in a running redistribution.
fn ownership_of(state: &ClusterState, node: &str) -> Ownership {
    let shards = state.map.shards as usize;
    let mut o = Ownership::fixed((0..shards).map(|s| state.map.owns(node, s as u32)).collect());
    o.map_version = state.map.version;
    if let Some(plan) = &state.redistribution {
        let forwarding = plan.phase != Phase::Announced;
        let (mut source, mut target) = (false, false);
        for m in &plan.moves {
            if m.from == node {
                source = true;
                if let (true, Some(addr)) = (forwarding, plan.addr_of(&m.to)) {
                    o.outgoing.insert(m.shard, addr.to_string());
                }
            }
            if m.to == node {
                target = true;
                if let Some(slot) = o.incoming.get_mut(m.shard as usize) {
                    *slot = true;
                }
            }
        }
        // A node reports the redistribution once it plays its whole part in the current phase.
        if (source || target) && (!source || forwarding) {
            o.redistribution = plan.id;
        }
        if plan.phase == Phase::Handoff {
            o.handoff = plan.id;
        }
    }
    o
}

/// Whether the cluster counts `node` in: its zone is not in maintenance.
fn in_service(state: &ClusterState, node: &str) -> bool {
    state.spec.node(node).is_none_or(|(zone, _)| !state.is_down(&zone.name))
}

fn down_zones(state: &ClusterState) -> Vec<String> {
    state.spec.zones.iter().filter(|z| state.is_down(&z.name)).map(|z| z.name.clone()).collect()
}

/// Follows the cluster in etcd: `apply` gets the state after every change that can affect routing,
/// after each `wake`, and every [`RELOAD_EVERY`]; while etcd is away it retries with back-off and the
/// component serves on with what it has.
async fn follow<W, F>(endpoints: Vec<String>, cluster: String, mut apply: impl FnMut(ClusterState), mut wake: W)
where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut store = tokio::time::timeout(ETCD_TIMEOUT, ClusterStore::connect(&endpoints, &cluster))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let mut events = store.watch().await.map_err(|e| e.to_string())?;
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                let state = tokio::time::timeout(ETCD_TIMEOUT, store.load())
                    .await
                    .map_err(|_| "load timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                if let Some(state) = state {
                    apply(state);
                    backoff = Duration::from_millis(100);
                }
                loop {
                    tokio::select! {
                        message = events.message() => match message.map_err(|e| e.to_string())? {
                            Some(resp) => {
                                if resp.events().iter().any(|e| e.kv().is_some_and(|kv| store.affects_routing(kv.key()))) {
                                    break;
                                }
                            }
                            None => return Err::<(), String>("the watch ended".into()),
                        },
                        _ = wake() => break,
                        _ = tick.tick() => break,
                    }
                }
            }
        };
        if let Err(e) = session.await {
            tracing::warn!(error = %e, retry_in = ?backoff, "lost etcd; serving on with the current map");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The proxy's view of a spec and its map: zones with their nodes in the map's order, and each shard's
/// storage group as placed by the map.
fn topology_of(spec: &ClusterSpec, map: &ShardMap, down_zones: Vec<String>) -> Result<Topology, String> {
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
        down_zones,
        version: map.version,
    };
    topology.validate()?;
    Ok(topology)
}

fn write_cache(path: &Path, spec: &ClusterSpec, map: &ShardMap, down_zones: &[String]) -> Result<(), String> {
    let cached = Cached { spec: spec.clone(), map: map.clone(), down_zones: down_zones.to_vec() };
    let text = serde_json::to_string(&cached).map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vesta_cluster::redistribution::Redistribution;

    use super::*;

    fn state() -> ClusterState {
        let spec = ClusterSpec::from_toml(
            "name = \"t\"\nshards = 8\n[[zones]]\nname = \"z1\"\n[[zones.nodes]]\nname = \"a\"\naddr = \"h:1\"\n\
             [[zones]]\nname = \"z2\"\n[[zones.nodes]]\nname = \"c\"\naddr = \"h:3\"\n\
             [[zones]]\nname = \"z3\"\n[[zones.nodes]]\nname = \"d\"\naddr = \"h:4\"\n",
        )
        .unwrap();
        let map = ShardMap::initial(&spec);
        ClusterState {
            spec,
            map,
            zones: BTreeMap::new(),
            map_revision: 1,
            redistribution: None,
            plan_revision: 0,
            alive: BTreeMap::new(),
            revision: 1,
        }
    }

    #[test]
    fn a_node_plays_its_part_in_each_phase() {
        let mut s = state();
        let next = s.map.with_node_added("z1", "b").unwrap();
        let moves = s.map.moves(&next);
        assert_eq!(moves.len(), 4, "half of zone z1's shards move to b");
        let addrs = [("a", "h:1"), ("b", "h:2")].iter().map(|(n, a)| (n.to_string(), a.to_string())).collect();
        s.redistribution = Some(Redistribution {
            id: 2,
            action: "add-node z1/b@h:2".into(),
            spec: s.spec.clone(),
            map: next,
            moves: moves.clone(),
            phase: Phase::Announced,
            addrs,
        });
        let moving = moves[0].shard;
        // Announced: the target is ready, the source does not forward yet (and so is not ready).
        let (a, b) = (ownership_of(&s, "a"), ownership_of(&s, "b"));
        assert!(a.forward_to(moving).is_none() && a.redistribution == 0);
        assert!(b.holds(moving) && !b.serves(moving) && b.redistribution == 2);
        // Copying: the source serves and forwards.
        s.redistribution.as_mut().unwrap().phase = Phase::Copying;
        let a = ownership_of(&s, "a");
        assert!(a.serves(moving) && a.forward_to(moving) == Some("h:2") && a.redistribution == 2);
        // Handoff: serving passes to the target; a node outside the move is untouched.
        s.redistribution.as_mut().unwrap().phase = Phase::Handoff;
        let (a, b, c) = (ownership_of(&s, "a"), ownership_of(&s, "b"), ownership_of(&s, "c"));
        assert!(!a.serves(moving) && b.serves(moving) && c.serves(moving));
        assert_eq!((a.handoff, c.redistribution), (2, 0));
    }
}
