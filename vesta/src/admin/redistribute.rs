//! `vesta admin add-node` / `remove-node`: online redistribution.
//!
//! 1. The plan (new spec and map, the moves) goes to etcd. Targets start accepting copies; once they
//!    all have, sources start forwarding every write to a moving shard to its target. We wait until
//!    every participant has, so that no write can slip past both the forwarding and the copy.
//! 2. Each moving shard is copied page by page from source to target (only newer copies are installed,
//!    so a page and a forwarded write can arrive in either order), rate-limited, with each page's
//!    cursor checkpointed in etcd: an interrupted run, started again with the same arguments, resumes.
//! 3. Handoff: sources stop serving the moving shards (`not-owner`: proxies retry) and targets start.
//!    Once every participant has switched and no source holds a lease on a moving shard any more — so
//!    any commit prepared on a source has landed there and been forwarded — the new map is published,
//!    and the plan removed, in one etcd transaction. Proxies and nodes switch; sources drop the shards
//!    after their grace period.
//!
//! A participant that does not answer is never taken to have switched on trust. Until forwarding runs
//! everywhere, each participant must say so itself. At the handoff, a silent participant is passed
//! over only once its registration in etcd is gone: it serves its moving shards only under that lease
//! (the store's fence), and reads the cluster again before it serves them after coming back.
//!
//! Every change of the plan is a compare-and-swap on the plan's revision as this run last wrote or
//! read it: a plan aborted (or moved on by another `vesta admin`) meanwhile is never brought back, and
//! its map never published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vesta_cluster::etcd::{Alive, ClusterState, ClusterStore, StoreError};
use vesta_cluster::redistribution::{progress_leaf, MoveProgress, Phase, Redistribution};
use vesta_cluster::shard_map::{Move, ShardMap};
use vesta_cluster::spec::{ClusterSpec, NodeSpec};

use super::copy::{copy_each, CopyOptions, Nodes, RateLimit};
use super::progress::{human_bytes, Progress};

/// How long participants get to see a new plan or phase in etcd.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `zone/name@host:port`, as `add-node` takes it.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub zone: String,
    pub name: String,
    pub addr: String,
}

impl std::str::FromStr for NewNode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected ZONE/NAME@HOST:PORT, e.g. zone1/n4@10.0.0.4:7100");
        let (zone, rest) = s.split_once('/').ok_or_else(bad)?;
        let (name, addr) = rest.split_once('@').ok_or_else(bad)?;
        if zone.is_empty() || name.is_empty() || !addr.contains(':') {
            return Err(bad());
        }
        Ok(NewNode { zone: zone.into(), name: name.into(), addr: addr.into() })
    }
}

/// The plan for adding `nodes` to the cluster.
pub fn plan_add(state: &ClusterState, nodes: &[NewNode]) -> Result<Redistribution, String> {
    let mut spec = state.spec.clone();
    let mut map = state.map.clone();
    for n in nodes {
        let zone = spec.zones.iter_mut().find(|z| z.name == n.zone).ok_or_else(|| format!("no zone {:?}", n.zone))?;
        zone.nodes.push(NodeSpec { name: n.name.clone(), addr: n.addr.clone() });
        map = map.with_node_added(&n.zone, &n.name).map_err(|e| e.to_string())?;
    }
    let action = format!(
        "add-node {}",
        nodes.iter().map(|n| format!("{}/{}@{}", n.zone, n.name, n.addr)).collect::<Vec<_>>().join(" ")
    );
    finish_plan(state, action, spec, map)
}

/// The plan for removing the nodes named `names`.
pub fn plan_remove(state: &ClusterState, names: &[String]) -> Result<Redistribution, String> {
    let mut spec = state.spec.clone();
    let mut map = state.map.clone();
    for name in names {
        let zone = spec
            .zones
            .iter_mut()
            .find(|z| z.nodes.iter().any(|n| &n.name == name))
            .ok_or_else(|| format!("no node {name:?} in the cluster"))?;
        map = map.with_node_removed(&zone.name, name).map_err(|e| e.to_string())?;
        zone.nodes.retain(|n| &n.name != name);
    }
    finish_plan(state, format!("remove-node {}", names.join(" ")), spec, map)
}

fn finish_plan(
    state: &ClusterState,
    action: String,
    spec: ClusterSpec,
    mut map: ShardMap,
) -> Result<Redistribution, String> {
    spec.validate().map_err(|e| e.to_string())?;
    map.version = state.map.version + 1;
    map.check_spec(&spec).map_err(|e| e.to_string())?;
    let moves = state.map.moves(&map);
    let mut addrs = BTreeMap::new();
    for z in state.spec.zones.iter().chain(&spec.zones) {
        for n in &z.nodes {
            addrs.insert(n.name.clone(), n.addr.clone());
        }
    }
    Ok(Redistribution { id: map.version, action, spec, map, moves, phase: Phase::Announced, addrs })
}

/// What a plan moves, per zone and node.
pub fn print_plan(plan: &Redistribution) {
    println!("{}: map version {} → {}, {} shard replicas to move", plan.action, plan.id - 1, plan.id, plan.moves.len());
    let mut flows: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for m in &plan.moves {
        *flows.entry((m.zone.as_str(), m.from.as_str(), m.to.as_str())).or_default() += 1;
    }
    for ((zone, from, to), n) in flows {
        println!("  {zone}: {from} → {to}: {n} shards");
    }
}

/// Starts `plan` (or carries on the running one, if it is the same action) and sees it through.
pub async fn run(
    store: &mut ClusterStore,
    state: ClusterState,
    plan: Redistribution,
    opts: &CopyOptions,
) -> Result<(), String> {
    let nodes = Nodes::default();
    // The plan's revision as this run last read or wrote it: every transition names it.
    let (mut plan, mut revision) = match state.redistribution {
        Some(running) if running.action == plan.action => {
            println!("resuming the running redistribution ({}), phase {:?}", running.action, running.phase);
            (running, state.plan_revision)
        }
        Some(running) => {
            return Err(format!(
                "a redistribution ({}) is running; see `vesta admin status`, finish it by running it again, or `vesta admin abort` it",
                running.action
            ))
        }
        None => {
            // The nodes that receive shards must be up before anything starts.
            for name in plan.moves.iter().map(|m| &m.to).collect::<std::collections::BTreeSet<_>>() {
                let addr = plan.addr_of(name).unwrap_or_default();
                if nodes.ping(addr, PING_TIMEOUT).await.is_none() {
                    return Err(format!("node {name} at {addr} does not answer; start it (with --etcd) first"));
                }
            }
            let revision = store.begin_redistribution(state.map_revision, &plan).await.map_err(|e| e.to_string())?;
            print_plan(&plan);
            (plan, revision)
        }
    };
    let map_version = state.map.version;
    let mut waits = Waits { nodes: &nodes, store: store.clone(), plan: &plan };
    if plan.phase == Phase::Announced {
        waits.wait_for(&plan.targets(), "the redistribution", Silent::Wait, |p| p.redistribution == plan.id).await?;
        plan.phase = Phase::Copying;
        revision = store.update_redistribution(&plan, revision).await.map_err(|e| moved_on(e, map_version))?;
    }
    let mut waits = Waits { nodes: &nodes, store: store.clone(), plan: &plan };
    if plan.phase == Phase::Copying {
        // Every source forwards before any copy starts: a write behind a page's cursor reaches the
        // target by forwarding, one ahead of it by the copy. Each must say so itself: a node that never
        // saw the plan does not know its shards are moving, so nothing would stop it serving them.
        waits.wait_for(&plan.participants(), "forwarding", Silent::Wait, |p| p.redistribution == plan.id).await?;
        copy_all(store, &nodes, &plan, revision, opts).await.map_err(|e| match e {
            CopyError::Plan(e) => moved_on(e, map_version),
            CopyError::Copy(e) => e,
        })?;
        plan.phase = Phase::Handoff;
        revision = store.update_redistribution(&plan, revision).await.map_err(|e| moved_on(e, map_version))?;
    }
    let mut waits = Waits { nodes: &nodes, store: store.clone(), plan: &plan };
    // A source that stopped serving may still hold leases of prepares it took before: their commits
    // land (and are forwarded) or expire within a lease. `settled` says none is left; asked twice, so
    // that a prepare caught between its ownership check and its lease is seen too. A silent source
    // is passed over only once its registration expired: by then its fence has closed and every
    // lease it granted on a moving shard has run out.
    let handed_off = |p: &vesta_proto::Pong| (p.handoff == plan.id && p.settled) || p.map_version >= plan.id;
    for _ in 0..2 {
        waits.wait_for(&plan.participants(), "the handoff", Silent::UnlessExpired, handed_off).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One transaction, guarded by the map's and the plan's revisions: an abort that came in between
    // wins, and nothing is published.
    store.finish_redistribution(state.map_revision, revision, &plan).await.map_err(|e| moved_on(e, map_version))?;
    println!("published shard map version {}", plan.id);
    let _ = waits.wait_for(&plan.participants(), "the new map", Silent::Skip, |p| p.map_version >= plan.id).await;
    println!("done: {}; the old owners drop the moved shards after their grace period", plan.action);
    Ok(())
}

/// What a plan transition refused because the plan changed meanwhile means for the operator.
fn moved_on(e: StoreError, map_version: u64) -> String {
    match e {
        StoreError::NoRedistribution => {
            format!("the redistribution was aborted meanwhile; nothing was published (shard map version {map_version} stays)")
        }
        StoreError::PlanChanged => {
            "the redistribution was changed meanwhile by another `vesta admin`; nothing was published by this one \
             (run the same command again to resume, or see `vesta admin status`)"
                .to_string()
        }
        other => other.to_string(),
    }
}

/// What a wait does about a participant that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silent {
    /// Keep waiting: the participant must switch and say so itself.
    Wait,
    /// Go on once its registration in etcd has expired (it fenced itself, and reads the cluster again
    /// before serving its moving shards); keep waiting while it is registered.
    UnlessExpired,
    /// Report it and go on (nothing depends on it any more).
    Skip,
}

/// Polls participants of `plan` until they switch.
struct Waits<'a> {
    nodes: &'a Nodes,
    store: ClusterStore,
    plan: &'a Redistribution,
}

impl Waits<'_> {
    /// Polls the nodes `names` until `switched` holds for each one's ping; a node that does not answer
    /// (or answers but is cut off from etcd, so fenced) is handled as `silent` says.
    async fn wait_for(
        &mut self,
        names: &[String],
        what: &str,
        silent: Silent,
        switched: impl Fn(&vesta_proto::Pong) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + SWITCH_TIMEOUT;
        for name in names {
            let addr = self.plan.addr_of(name).unwrap_or_default();
            let mut told = false;
            loop {
                let pong = self.nodes.ping(addr, PING_TIMEOUT).await;
                if pong.as_ref().is_some_and(&switched) {
                    break;
                }
                let late = Instant::now() > deadline;
                // Its lease unconfirmed, a node cannot be taking up anything from etcd right now.
                let unconfirmed = pong.as_ref().is_none_or(|p| p.fenced);
                let state = if pong.is_none() { "does not answer" } else { "cannot reach etcd (fenced)" };
                match silent {
                    Silent::Skip if pong.is_none() => {
                        eprintln!("warning: node {name} at {addr} does not answer; it takes up {what} when it is back");
                        break;
                    }
                    Silent::UnlessExpired if unconfirmed => match self.registrations().await {
                        Ok(alive) if !alive.contains_key(name.as_str()) => {
                            eprintln!(
                                "node {name} at {addr} {state} and its etcd registration has expired: it no longer \
                                 serves its moving shards, and reads the cluster again before it does; going on \
                                 without it"
                            );
                            break;
                        }
                        registered => {
                            if late {
                                return Err(format!(
                                    "node {name} at {addr} {state} but is still registered in etcd (its ownership \
                                     lease has not expired), so it may still serve its moving shards; run the same \
                                     command again to resume"
                                ));
                            }
                            if let Err(e) = &registered {
                                eprintln!("cannot read node registrations from etcd: {e}");
                            }
                            if !told {
                                let ttl = registered.ok().and_then(|a| a.get(name.as_str()).map(|a| a.ttl_ms));
                                let ttl = ttl.map(|ms| format!(" (lease: {ms} ms)")).unwrap_or_default();
                                eprintln!(
                                    "waiting for node {name} at {addr} ({what}): it {state} but is still registered \
                                     in etcd, so it may still serve; going on once it switches or its registration \
                                     expires{ttl}"
                                );
                                told = true;
                            }
                        }
                    },
                    Silent::Wait if pong.is_none() => {
                        if late {
                            return Err(format!(
                                "node {name} at {addr} does not answer, and it must take up {what} itself before the \
                                 redistribution can go on; start it (or reconnect it), then run the same command again \
                                 to resume — or `vesta admin abort`"
                            ));
                        }
                        if !told {
                            eprintln!(
                                "waiting for node {name} at {addr}: it does not answer, and must take up {what} itself"
                            );
                            told = true;
                        }
                    }
                    _ if late => {
                        return Err(format!("node {name} at {addr} has not taken up {what} after {SWITCH_TIMEOUT:?} (is it connected to etcd?); run the same command again to resume"));
                    }
                    _ => {}
                }
                let pause = if unconfirmed { 100 } else { 10 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        Ok(())
    }
}

impl Waits<'_> {
    async fn registrations(&mut self) -> Result<BTreeMap<String, Alive>, String> {
        match tokio::time::timeout(PING_TIMEOUT, self.store.alive_nodes()).await {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(_) => Err(format!("etcd did not answer within {PING_TIMEOUT:?}")),
        }
    }
}

/// Why a copy stopped.
enum CopyError {
    /// The plan changed or went away (etcd refused a checkpoint).
    Plan(StoreError),
    Copy(String),
}

/// Copies every move not yet done, `opts.parallel` at a time, checkpointing each page.
async fn copy_all(
    store: &ClusterStore,
    nodes: &Nodes,
    plan: &Redistribution,
    revision: i64,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let mut checkpoints = store.clone();
    let saved = checkpoints.progress().await.map_err(|e| CopyError::Copy(e.to_string()))?;
    let mut bar = Progress::new("shards", plan.moves.len() as u64);
    let (mut done, mut keys, mut bytes) = (0, 0, 0);
    for p in saved.values() {
        done += p.done as u64;
        keys += p.keys;
        bytes += p.bytes;
    }
    if done > 0 || keys > 0 {
        println!(
            "resuming: {done} of {} shard replicas already copied ({keys} records, {})",
            plan.moves.len(),
            human_bytes(bytes as f64)
        );
    }
    bar.resume(done, keys, bytes);
    let bar = Arc::new(parking_lot::Mutex::new(bar));
    let rate = RateLimit::new(opts.max_rate_kb);
    let todo: Vec<(Move, MoveProgress)> = plan
        .moves
        .iter()
        .map(|m| (m.clone(), saved.get(&progress_leaf(m)).cloned().unwrap_or_default()))
        .filter(|(_, p)| !p.done)
        .collect();
    // A checkpoint refused because the plan changed stops every copy; the first such refusal is kept
    // so that the caller can say why (`copy_each` reports errors as text).
    let refused: parking_lot::Mutex<Option<StoreError>> = parking_lot::Mutex::new(None);
    let copied = copy_each(todo, opts.parallel, &bar, |(m, mut p)| {
        let (mut store, bar, rate, refused) = (store.clone(), bar.clone(), &rate, &refused);
        async move {
            let from = plan.addr_of(&m.from).ok_or_else(|| format!("no address for {}", m.from))?;
            let to = plan.addr_of(&m.to).ok_or_else(|| format!("no address for {}", m.to))?;
            while !p.done {
                if refused.lock().is_some() {
                    return Err("stopped: the plan changed".to_string());
                }
                let page = nodes.transfer_page(from, to, m.shard, p.cursor.clone(), opts.page_keys).await?;
                p.keys += page.keys;
                p.bytes += page.bytes;
                p.done = page.next.is_none();
                p.cursor = page.next.map(|c| c.to_vec());
                match store.save_progress(&m, &p, revision).await {
                    Ok(()) => {}
                    Err(e @ (StoreError::NoRedistribution | StoreError::PlanChanged)) => {
                        let text = e.to_string();
                        refused.lock().get_or_insert(e);
                        return Err(text);
                    }
                    Err(e) => return Err(e.to_string()),
                }
                bar.lock().add(page.keys, page.bytes);
                rate.account(page.bytes).await;
            }
            Ok(())
        }
    })
    .await;
    match (refused.into_inner(), copied) {
        (Some(e), _) => Err(CopyError::Plan(e)),
        (None, copied) => copied.map_err(CopyError::Copy),
    }
}

/// `vesta admin status`: the running redistribution and how far it got.
pub async fn status(store: &mut ClusterStore, state: &ClusterState) -> Result<(), String> {
    let Some(plan) = &state.redistribution else {
        println!("no redistribution is running (shard map version {})", state.map.version);
        return Ok(());
    };
    let progress = store.progress().await.map_err(|e| e.to_string())?;
    print_plan(plan);
    println!(
        "phase: {}",
        match plan.phase {
            Phase::Announced => "announced (targets are getting ready)",
            Phase::Copying => "copying (sources serve and forward writes to the targets)",
            Phase::Handoff => "handoff (targets serve; the new map is about to be published)",
        }
    );
    let mut bar = Progress::new("shards", plan.moves.len() as u64);
    let (mut done, mut keys, mut bytes) = (0, 0, 0);
    let mut per_zone: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for m in &plan.moves {
        let p = progress.get(&progress_leaf(m)).cloned().unwrap_or_default();
        done += p.done as u64;
        keys += p.keys;
        bytes += p.bytes;
        let z = per_zone.entry(m.zone.as_str()).or_default();
        z.0 += p.done as u64;
        z.1 += 1;
    }
    bar.resume(done, keys, bytes);
    println!("{}", bar.line());
    for (zone, (d, t)) in per_zone {
        println!("  {zone}: {d}/{t} shards copied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_node_syntax() {
        let n: NewNode = "zone1/n4@10.0.0.4:7100".parse().unwrap();
        assert_eq!((n.zone.as_str(), n.name.as_str(), n.addr.as_str()), ("zone1", "n4", "10.0.0.4:7100"));
        assert!("zone1-n4@h:1".parse::<NewNode>().unwrap_err().contains("ZONE/NAME@HOST:PORT"));
        assert!("zone1/n4@nohostport".parse::<NewNode>().is_err());
    }
}
