//! Zone repair: after a zone was down (maintenance, an outage), copy every shard from the replicas in
//! the other zones to the zone's nodes. Only newer copies are installed (dead copies — tombstones,
//! expired records — included, so a delete or an expiry the zone missed reaches it too), so it is safe
//! while the zone serves again and can be run any number of times; it is what `zone up` runs after
//! putting the zone back in service.
//!
//! A node out of service for longer than the grace period gets a **full repair** instead (also with
//! `--full`): it may hold live copies of keys that were deleted or expired meanwhile and whose dead
//! copies the other replicas have purged since, which no copy-if-newer can undo. Its shards are cleared
//! and copied again from *every* other replica (any of them may hold the only other copy of an
//! acknowledged write, so all must answer), and the node serves nothing until that is done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use vesta_cluster::etcd::ClusterState;
use vesta_proto::{RebuildStep, Request, Response, Status};

use super::copy::{copy_each, CopyOptions, Nodes, RateLimit};
use super::progress::Progress;

const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// One shard to bring up to date on one node.
struct Work {
    shard: u32,
    target: String,
    sources: Vec<String>,
    /// Clear the shard on the target first (a full repair).
    clear: bool,
}

/// Whether a node must be rebuilt rather than repaired copy by copy.
pub fn needs_full_repair(pong: &vesta_proto::Pong) -> bool {
    pong.needs_repair.is_some() || (pong.grace_ms > 0 && pong.away_ms > pong.grace_ms)
}

/// Repairs zone `zone`'s nodes from the other zones: a full repair for the nodes that need one (or
/// all of them with `force_full`), newer copies for the others.
pub async fn repair_zone(
    state: &ClusterState,
    zone: &str,
    opts: &CopyOptions,
    force_full: bool,
    dry_run: bool,
) -> Result<(), String> {
    let nodes = Nodes::default();
    let addr = |name: &str| state.spec.node_addr(name).map(str::to_string).ok_or_else(|| format!("no node {name}"));
    let zone_spec = state.spec.zone(zone).ok_or_else(|| format!("no zone {zone:?} in the cluster"))?;
    // The zone's nodes, and which of them need a full repair. A node that does not answer is left for
    // later: it serves nothing meanwhile, and when it starts it checks for itself how long it was away.
    let (mut full, mut absent) = (BTreeSet::new(), BTreeSet::new());
    for n in &zone_spec.nodes {
        match nodes.ping(&n.addr, PING_TIMEOUT).await {
            Some(pong) if force_full || needs_full_repair(&pong) => {
                if let Some(why) = &pong.needs_repair {
                    println!("{}: {why}", n.name);
                } else if !force_full {
                    println!("{}: out of service for longer than the grace period", n.name);
                }
                full.insert(n.name.clone());
            }
            Some(_) => {}
            None => {
                eprintln!(
                    "warning: {} at {} does not answer: not repaired now (run `vesta admin repair {zone}` once it runs)",
                    n.name, n.addr
                );
                absent.insert(n.name.clone());
            }
        }
    }
    // Replicas that can give copies: in zones in service, answering now.
    let mut up = BTreeSet::new();
    for z in state.spec.zones.iter().filter(|z| z.name != zone && !state.is_down(&z.name)) {
        for n in &z.nodes {
            match nodes.ping(&n.addr, PING_TIMEOUT).await {
                Some(p) if p.needs_repair.is_none() => {
                    up.insert(n.name.clone());
                }
                _ => eprintln!("warning: {} at {} is not serving; repairing from the other zones", n.name, n.addr),
            }
        }
    }
    let mut work = Vec::new();
    for shard in 0..state.map.shards {
        let group = state.map.storage_group(shard);
        let Some(&(_, target)) = group.iter().find(|(z, _)| *z == zone) else {
            return Err(format!("no zone {zone:?} in the shard map"));
        };
        if absent.contains(target) {
            continue;
        }
        let others: Vec<(&str, &str)> = group.iter().copied().filter(|(z, _)| *z != zone).collect();
        let sources: Vec<String> =
            others.iter().filter(|(_, n)| up.contains(*n)).map(|(_, n)| addr(n)).collect::<Result<_, _>>()?;
        let clear = full.contains(target);
        if clear && sources.len() < others.len() {
            return Err(format!(
                "a full repair of {target} clears shard {shard} and copies it from every other replica, but not \
                 all of them serve now ({} of {}): any of them may hold the only other copy of an \
                 acknowledged write. Bring them back first",
                sources.len(),
                others.len()
            ));
        }
        if sources.is_empty() {
            return Err(format!("shard {shard} has no replica in service outside zone {zone} to repair from"));
        }
        work.push(Work { shard, target: addr(target)?, sources, clear });
    }
    if dry_run {
        let mut flows: BTreeMap<(&str, &str, bool), usize> = BTreeMap::new();
        for w in &work {
            for source in &w.sources {
                *flows.entry((source.as_str(), w.target.as_str(), w.clear)).or_default() += 1;
            }
        }
        println!("dry run: would repair zone {zone}: {} shards", work.len());
        for ((from, to, clear), n) in flows {
            let how = if clear { " (full repair: cleared first)" } else { "" };
            println!("  {from} → {to}: {n} shards{how}");
        }
        return Ok(());
    }
    let rebuilt: Vec<String> = full.iter().map(|n| addr(n)).collect::<Result<_, _>>()?;
    for target in &rebuilt {
        rebuild_step(&nodes, target, RebuildStep::Begin).await?;
    }
    let kind = if full.is_empty() { "" } else { " (full repair of the nodes that were away too long)" };
    println!("repairing zone {zone}: {} shards from the replicas of the other zones{kind}", work.len());
    copy_shards(&nodes, work, opts).await?;
    for target in &rebuilt {
        rebuild_step(&nodes, target, RebuildStep::Finish).await?;
    }
    println!("zone {zone} repaired");
    Ok(())
}

/// Puts the nodes of `zone` that were out of service for longer than the grace period into their
/// full repair (they serve nothing from now on) and returns their names; `zone up` calls it before the
/// zone comes back, so that proxies never read such a node.
pub async fn begin_full_repairs(state: &ClusterState, zone: &str) -> Result<Vec<String>, String> {
    let nodes = Nodes::default();
    let zone_spec = state.spec.zone(zone).ok_or_else(|| format!("no zone {zone:?} in the cluster"))?;
    let mut away = Vec::new();
    for n in &zone_spec.nodes {
        if let Some(pong) = nodes.ping(&n.addr, PING_TIMEOUT).await {
            if needs_full_repair(&pong) {
                rebuild_step(&nodes, &n.addr, RebuildStep::Begin).await?;
                away.push(n.name.clone());
            }
        }
    }
    Ok(away)
}

/// `vesta admin repair-node`: the full repair of one node from the nodes named as sources, without
/// etcd (a cluster from a topology file): every shard the node holds is cleared and copied again from
/// every source. The sources must hold every one of those shards (one node per zone).
pub async fn repair_node(target: &str, sources: &[String], opts: &CopyOptions, dry_run: bool) -> Result<(), String> {
    let nodes = Nodes::default();
    let pong = nodes.ping(target, PING_TIMEOUT).await.ok_or_else(|| format!("{target} does not answer"))?;
    for source in sources {
        match nodes.ping(source, PING_TIMEOUT).await {
            Some(p) if p.needs_repair.is_none() => {}
            Some(_) => return Err(format!("{source} needs a repair itself; it cannot be a source")),
            None => return Err(format!("{source} does not answer")),
        }
    }
    if let Some(why) = &pong.needs_repair {
        println!("{}: {why}", pong.node);
    }
    let work: Vec<Work> = (0..pong.shards)
        .map(|shard| Work { shard, target: target.to_string(), sources: sources.to_vec(), clear: true })
        .collect();
    if dry_run {
        println!("dry run: would clear {} shards on {target} and copy them from {}", work.len(), sources.join(", "));
        return Ok(());
    }
    rebuild_step(&nodes, target, RebuildStep::Begin).await?;
    println!("full repair of {target}: {} shards from {}", work.len(), sources.join(", "));
    copy_shards(&nodes, work, opts).await?;
    rebuild_step(&nodes, target, RebuildStep::Finish).await?;
    println!("{target} repaired; it serves again");
    Ok(())
}

async fn rebuild_step(nodes: &Nodes, target: &str, step: RebuildStep) -> Result<(), String> {
    let what = format!("{step:?}");
    match nodes.call(target, Request::Rebuild(step), Duration::from_secs(60)).await? {
        Response::Reply(r) if r.status == Status::Ok => Ok(()),
        other => Err(format!("{target}: rebuild step {what} refused: {} {}", other.status(), message(&other))),
    }
}

fn message(r: &Response) -> &str {
    match r {
        Response::Reply(r) => &r.message,
        _ => "",
    }
}

/// Copies every shard of `work` from each of its sources, `opts.parallel` at a time, with a progress
/// line; clears a shard on its target first where asked.
async fn copy_shards(nodes: &Nodes, work: Vec<Work>, opts: &CopyOptions) -> Result<(), String> {
    let bar = Arc::new(parking_lot::Mutex::new(Progress::new("shards", work.len() as u64)));
    let rate = RateLimit::new(opts.max_rate_kb);
    copy_each(work, opts.parallel, &bar, |w| {
        let (bar, rate) = (bar.clone(), &rate);
        async move {
            if w.clear {
                rebuild_step(nodes, &w.target, RebuildStep::ClearShard(w.shard)).await?;
            }
            for source in w.sources {
                let mut cursor = None;
                loop {
                    let page = nodes.transfer_page(&source, &w.target, w.shard, cursor, opts.page_keys).await?;
                    bar.lock().add(page.keys, page.bytes);
                    rate.account(page.bytes).await;
                    match page.next {
                        Some(next) => cursor = Some(next.to_vec()),
                        None => break,
                    }
                }
            }
            Ok(())
        }
    })
    .await
}
