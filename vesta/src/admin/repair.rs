//! Zone repair: after a zone was down (maintenance, an outage), copy every shard from the replicas in
//! the other zones to the zone's node. Only newer copies are installed, so it is safe while the zone
//! serves again and can be run any number of times; it is what `zone up` runs after putting the zone
//! back in service.

use std::sync::Arc;
use std::time::Duration;

use vesta_cluster::etcd::ClusterState;

use super::copy::{copy_each, CopyOptions, Nodes, RateLimit};
use super::progress::Progress;

pub async fn repair_zone(state: &ClusterState, zone: &str, opts: &CopyOptions, dry_run: bool) -> Result<(), String> {
    let nodes = Nodes::default();
    let addr = |name: &str| state.spec.node_addr(name).map(str::to_string).ok_or_else(|| format!("no node {name}"));
    // Replicas that can give copies: in zones in service, answering now.
    let mut up = std::collections::BTreeSet::new();
    for z in state.spec.zones.iter().filter(|z| z.name != zone && !state.is_down(&z.name)) {
        for n in &z.nodes {
            if nodes.ping(&n.addr, Duration::from_secs(2)).await.is_some() {
                up.insert(n.name.clone());
            } else {
                eprintln!("warning: {} at {} does not answer; repairing from the other zones", n.name, n.addr);
            }
        }
    }
    let mut work = Vec::new();
    for shard in 0..state.map.shards {
        let group = state.map.storage_group(shard);
        let Some(&(_, target)) = group.iter().find(|(z, _)| *z == zone) else {
            return Err(format!("no zone {zone:?} in the shard map"));
        };
        let sources: Vec<String> = group
            .iter()
            .filter(|(z, n)| *z != zone && up.contains(*n))
            .map(|(_, n)| addr(n))
            .collect::<Result<_, _>>()?;
        if sources.is_empty() {
            return Err(format!("shard {shard} has no replica in service outside zone {zone} to repair from"));
        }
        work.push((shard, addr(target)?, sources));
    }
    if dry_run {
        let mut flows: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
        for (_, target, sources) in &work {
            for source in sources {
                *flows.entry((source.as_str(), target.as_str())).or_default() += 1;
            }
        }
        println!("dry run: would repair zone {zone}: {} shards", work.len());
        for ((from, to), n) in flows {
            println!("  {from} → {to}: {n} shards");
        }
        return Ok(());
    }
    println!("repairing zone {zone}: {} shards from the replicas of the other zones", work.len());
    let bar = Arc::new(parking_lot::Mutex::new(Progress::new("shards", work.len() as u64)));
    let rate = RateLimit::new(opts.max_rate_kb);
    copy_each(work, opts.parallel, &bar, |(shard, target, sources)| {
        let (bar, rate, nodes) = (bar.clone(), &rate, &nodes);
        async move {
            for source in sources {
                let mut cursor = None;
                loop {
                    let page = nodes.transfer_page(&source, &target, shard, cursor, opts.page_keys).await?;
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
    .await?;
    println!("zone {zone} repaired");
    Ok(())
}
