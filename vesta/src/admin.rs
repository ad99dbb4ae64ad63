//! `vesta admin`: the operator's tool. It talks to etcd, where the cluster's spec and shard map live,
//! and to the store nodes (for health).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use vesta_cluster::etcd::{ClusterState, ClusterStore, ZoneState};
use vesta_cluster::shard_map::ShardMap;
use vesta_cluster::spec::ClusterSpec;
use vesta_proto::client::NodeConnection;
use vesta_proto::{Request, Response};

#[derive(Args)]
pub struct AdminFlags {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "VESTA_ETCD", default_value = "http://127.0.0.1:2379", value_delimiter = ',', global = true)]
    etcd: Vec<String>,
    /// The cluster's name (its etcd prefix is /vesta/<cluster>/).
    #[arg(long, env = "VESTA_CLUSTER", default_value = "vesta", global = true)]
    cluster: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Write a new cluster (spec and its first shard map) to etcd; refuses to overwrite one.
    Init {
        /// The cluster spec (TOML: name, shards, write_quorum, read_quorum, [[zones]] with [[zones.nodes]]).
        #[arg(long)]
        spec: PathBuf,
        /// Print what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Map version, zones, nodes and their health, shards per node, under-replicated shards.
    Show {
        /// Per-node ping timeout.
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
    },
    /// Zone maintenance: `down` makes proxies stop sending to the zone, `up` brings it back.
    Zone {
        #[command(subcommand)]
        action: ZoneAction,
    },
}

#[derive(Subcommand)]
enum ZoneAction {
    /// Take a zone out of service (the other zones must still form a write quorum).
    Down {
        zone: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Put a zone back in service.
    Up {
        zone: String,
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(flags: AdminFlags) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let connect = || async {
            tokio::time::timeout(Duration::from_secs(10), ClusterStore::connect(&flags.etcd, &flags.cluster))
                .await
                .map_err(|_| format!("etcd at {} did not answer within 10 s", flags.etcd.join(",")))?
                .map_err(|e| format!("etcd at {}: {e}", flags.etcd.join(",")))
        };
        match flags.command {
            AdminCommand::Init { spec, dry_run } => {
                let spec_value = ClusterSpec::from_file(&spec).map_err(|e| format!("{}: {e}", spec.display()))?;
                let map = ShardMap::initial(&spec_value);
                if dry_run {
                    println!("dry run: would create cluster {:?} in etcd", flags.cluster);
                    print_summary(&spec_value, &map, None);
                    return Ok(());
                }
                let mut store = connect().await?;
                store.init(&spec_value, &map).await.map_err(|e| e.to_string())?;
                println!("created cluster {:?}: shard map version {}", flags.cluster, map.version);
                print_summary(&spec_value, &map, None);
                Ok(())
            }
            AdminCommand::Show { timeout_ms } => {
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                let health = ping_all(&state.spec, Duration::from_millis(timeout_ms)).await;
                print_summary(&state.spec, &state.map, Some((&state, &health)));
                Ok(())
            }
            AdminCommand::Zone { action } => {
                let (zone, target, dry_run) = match action {
                    ZoneAction::Down { zone, dry_run } => (zone, ZoneState::Down, dry_run),
                    ZoneAction::Up { zone, dry_run } => (zone, ZoneState::Up, dry_run),
                };
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                if !state.spec.zones.iter().any(|z| z.name == zone) {
                    return Err(format!("cluster {:?} has no zone {zone:?}", flags.cluster));
                }
                if target == ZoneState::Down {
                    let n = state.spec.zones.len();
                    let down = state.zones.iter().filter(|(z, s)| **s == ZoneState::Down && **z != zone).count() + 1;
                    if n - down < state.spec.write_quorum {
                        return Err(format!(
                            "refusing: with zone {zone} down only {} of {n} zones remain, fewer than the write quorum {}",
                            n - down,
                            state.spec.write_quorum
                        ));
                    }
                }
                if dry_run {
                    println!("dry run: would set zone {zone} {}", target.as_str());
                    return Ok(());
                }
                store.set_zone_state(&zone, target).await.map_err(|e| e.to_string())?;
                println!("zone {zone} is {}", target.as_str());
                Ok(())
            }
        }
    })
}

async fn load(store: &mut ClusterStore, cluster: &str) -> Result<ClusterState, String> {
    store
        .load()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("cluster {cluster:?} does not exist in etcd (run `vesta admin init` first)"))
}

/// Each node's answer to a ping: `None` when it did not answer in time.
async fn ping_all(spec: &ClusterSpec, timeout: Duration) -> Vec<(String, bool)> {
    let pings = spec.zones.iter().flat_map(|z| z.nodes.iter()).map(|node| async move {
        let up = tokio::time::timeout(timeout, async {
            let conn = NodeConnection::connect(node.addr.as_str()).await.ok()?;
            matches!(conn.call(Request::Ping).await, Ok(Response::Pong(_))).then_some(())
        })
        .await
        .ok()
        .flatten()
        .is_some();
        (node.name.clone(), up)
    });
    futures::future::join_all(pings).await
}

fn print_summary(spec: &ClusterSpec, map: &ShardMap, live: Option<(&ClusterState, &Vec<(String, bool)>)>) {
    let n = spec.zones.len();
    println!(
        "cluster {}: map version {}, {} shards, {n} zones, write quorum {}, read quorum {}",
        spec.name, map.version, map.shards, spec.write_quorum, spec.read_quorum
    );
    let is_up = |node: &str| live.is_none_or(|(_, health)| health.iter().any(|(n, up)| n == node && *up));
    for zone in &spec.zones {
        let state = live.and_then(|(s, _)| s.zones.get(&zone.name).copied()).unwrap_or(ZoneState::Up);
        println!("zone {} ({})", zone.name, state.as_str());
        for node in &zone.nodes {
            let shards = map.shards_of(&node.name).len();
            let health = match live {
                None => "",
                Some(_) if is_up(&node.name) => "  up",
                Some(_) => "  DOWN",
            };
            println!("  {:<16} {:<22} {shards:>6} shards{health}", node.name, node.addr);
        }
    }
    if live.is_some() {
        // A shard is under-replicated when a replica is down, unavailable for writes below W.
        let (mut under, mut unavailable) = (0, 0);
        for shard in 0..map.shards {
            let up = map.storage_group(shard).iter().filter(|(_, node)| is_up(node)).count();
            if up < n {
                under += 1;
            }
            if up < spec.write_quorum {
                unavailable += 1;
            }
        }
        println!(
            "shards: {} fully replicated, {under} under-replicated, {unavailable} below the write quorum",
            map.shards - under
        );
    }
}
