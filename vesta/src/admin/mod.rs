//! `vesta admin`: the operator's tool. It talks to etcd, where the cluster's spec and shard map live,
//! and to the store nodes (health, and the copies of redistribution and repair).

mod certs;
mod copy;
mod import;
mod keys;
mod progress;
mod redistribute;
mod reencrypt;
mod repair;
mod repl;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use vesta_cluster::etcd::{ClusterState, ClusterStore, StoreError, ZoneState};
use vesta_cluster::shard_map::ShardMap;
use vesta_cluster::spec::ClusterSpec;
use vesta_proto::Pong;

use copy::{CopyOptions, Nodes};
use redistribute::NewNode;

#[derive(Args)]
pub struct AdminFlags {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "VESTA_ETCD", default_value = "http://127.0.0.1:2379", value_delimiter = ',', global = true)]
    etcd: Vec<String>,
    /// The cluster's name (its etcd prefix is /vesta/<cluster>/).
    #[arg(long, env = "VESTA_CLUSTER", default_value = "vesta", global = true)]
    cluster: String,
    /// Mutual TLS to the store nodes: the admin's certificate (with --tls-key-file and
    /// --tls-ca-cert-file), signed by the cluster CA.
    #[arg(long, env = "VESTA_ADMIN_TLS_CERT_FILE", global = true, requires_all = ["tls_key_file", "tls_ca_cert_file"])]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "VESTA_ADMIN_TLS_KEY_FILE", global = true)]
    tls_key_file: Option<PathBuf>,
    #[arg(long, env = "VESTA_ADMIN_TLS_CA_CERT_FILE", global = true)]
    tls_ca_cert_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Append a new 256-bit key to FILE (made if missing) under the next id.
    Add {
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Encryption keys: `add --file F` appends a new random key under the next id (docs/security.md).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Make a certificate authority (or reuse the one in --out) and certificates signed by it, for
    /// every hop of a cluster: each certificate serves and authenticates clients (mutual TLS).
    Certs {
        /// Directory for ca.crt, ca.key and <name>.crt, <name>.key.
        #[arg(long)]
        out: PathBuf,
        /// A certificate to issue, NAME=SAN[;SAN…]: the host names and IP addresses its holder is
        /// reached by (e.g. `store-1=store-1;127.0.0.1`). Repeat for each.
        #[arg(long = "cert", value_name = "NAME=SANS")]
        certs: Vec<String>,
        /// Validity of the issued certificates.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
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
        /// Also list every shard with a replica down, with its storage group (`--shards all`: every
        /// shard).
        #[arg(long, value_name = "down|all")]
        shards: Option<String>,
    },
    /// Zone maintenance: `down` makes proxies stop sending to the zone, `up` brings it back and
    /// repairs it.
    Zone {
        #[command(subcommand)]
        action: ZoneAction,
    },
    /// Add store nodes online: their shards are copied to them while the cluster serves, then the new
    /// map is published. Start the nodes first (`vesta store --etcd … --node NAME`). Run the same
    /// command again to resume an interrupted run.
    AddNode {
        /// ZONE/NAME@HOST:PORT, one or more.
        #[arg(required = true)]
        nodes: Vec<NewNode>,
        /// Print the moves, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        copy: CopyOptions,
    },
    /// Remove store nodes online: their shards are copied to the other nodes of their zones, then the
    /// new map is published; stop them once `status` says no redistribution runs.
    RemoveNode {
        /// Node names, one or more.
        #[arg(required = true)]
        nodes: Vec<String>,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        copy: CopyOptions,
    },
    /// The running redistribution: its moves, phase and progress.
    Status,
    /// Stop the running redistribution without publishing its map (the current map stays).
    Abort {
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy every shard of a zone's nodes from the other zones' replicas (newer copies only). A node
    /// that was out of service for longer than the grace period gets a full repair: its shards are
    /// cleared and copied again from every other replica.
    Repair {
        zone: String,
        /// A full repair of every node of the zone, not only of those that need one.
        #[arg(long)]
        full: bool,
        /// Print which nodes would be copied from and to, copy nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        copy: CopyOptions,
    },
    /// The full repair of one store node of a cluster without etcd (a topology file): every shard it
    /// holds is cleared and copied again from the given nodes (one per other zone).
    RepairNode {
        /// `host:port` of the node to repair.
        node: String,
        /// `host:port` of each node to copy from (comma-separated or repeated).
        #[arg(long = "from", required = true, value_delimiter = ',')]
        sources: Vec<String>,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        copy: CopyOptions,
    },
    /// Cross-site replication: status, pause, resume (through a site's shipping proxy), and a key by key
    /// comparison of sites.
    Repl {
        #[command(subcommand)]
        action: repl::ReplAction,
    },
    /// After an encryption key rotation: rewrite the records under old keys with the current key,
    /// online, shard by shard through a proxy; then count records per key id and say which keys may be
    /// retired (`--usage-only`: only count).
    Reencrypt(reencrypt::ReencryptFlags),
    /// Migration in from Redis through a proxy: an RDB file (`--rdb`), or a live sync from a running
    /// Redis as its replica (`--from redis://HOST:PORT`, until Ctrl-C). Strings are imported with their
    /// TTLs, database N into `SELECT N`; keys and commands of other types are counted and reported.
    Import(import::ImportFlags),
}

#[derive(Subcommand)]
enum ZoneAction {
    /// Take a zone out of service (the other zones must still form a write quorum).
    Down {
        zone: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Put a zone back in service, then repair it from the other zones.
    Up {
        zone: String,
        #[arg(long)]
        dry_run: bool,
        /// Only put the zone back; leave its catching up to read repair (or a later `repair`).
        #[arg(long)]
        no_repair: bool,
        #[command(flatten)]
        copy: CopyOptions,
    },
}

pub fn run(flags: AdminFlags) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let tls = match (&flags.tls_cert_file, &flags.tls_key_file, &flags.tls_ca_cert_file) {
            (Some(cert_file), Some(key_file), Some(ca_file)) => {
                let files = vesta_tls::InternalTls {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                    ca_file: ca_file.clone(),
                };
                Some(vesta_tls::ClientTls::internal(&files, vesta_tls::handshake::Side::ToStore).map_err(|e| format!("TLS: {e}"))?)
            }
            _ => None,
        };
        let _ = copy::STORE_TLS.set(tls);
        let connect = || async {
            tokio::time::timeout(Duration::from_secs(10), ClusterStore::connect(&flags.etcd, &flags.cluster))
                .await
                .map_err(|_| format!("etcd at {} did not answer within 10 s", flags.etcd.join(",")))?
                .map_err(|e| format!("etcd at {}: {e}", flags.etcd.join(",")))
        };
        match flags.command {
            AdminCommand::Certs { out, certs, days } => certs::make(&out, &certs, days),
            AdminCommand::Keys { action: KeysAction::Add { file } } => keys::add(&file),
            AdminCommand::Repl { action } => repl::run(action).await,
            AdminCommand::Reencrypt(flags) => reencrypt::run(flags).await,
            AdminCommand::Import(flags) => import::run(flags).await,
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
            AdminCommand::Show { timeout_ms, shards } => {
                let every = match shards.as_deref() {
                    None => None,
                    Some("down") => Some(false),
                    Some("all") => Some(true),
                    Some(other) => return Err(format!("--shards takes `down` or `all`, not {other:?}")),
                };
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                let health = ping_all(&state.spec, Duration::from_millis(timeout_ms)).await;
                print_summary(&state.spec, &state.map, Some((&state, &health)));
                if let Some(every) = every {
                    print_shards(&state, &health, every);
                }
                Ok(())
            }
            AdminCommand::AddNode { nodes, dry_run, copy } => {
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                let plan = redistribute::plan_add(&state, &nodes)?;
                if dry_run {
                    print!("dry run: ");
                    redistribute::print_plan(&plan);
                    return Ok(());
                }
                redistribute::run(&mut store, state, plan, &copy).await
            }
            AdminCommand::RemoveNode { nodes, dry_run, copy } => {
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                let plan = match &state.redistribution {
                    // Resuming: the nodes are already gone from the planned spec.
                    Some(running) if running.action == format!("remove-node {}", nodes.join(" ")) => running.clone(),
                    _ => redistribute::plan_remove(&state, &nodes)?,
                };
                if dry_run {
                    print!("dry run: ");
                    redistribute::print_plan(&plan);
                    return Ok(());
                }
                redistribute::run(&mut store, state, plan, &copy).await
            }
            AdminCommand::Status => {
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                redistribute::status(&mut store, &state).await
            }
            AdminCommand::Abort { dry_run } => {
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                let Some(plan) = &state.redistribution else {
                    return Err("no redistribution is running".into());
                };
                if dry_run {
                    println!("dry run: would abort {} (phase {:?})", plan.action, plan.phase);
                    return Ok(());
                }
                // Only the plan shown above: if it moved on meanwhile, the operator looks again.
                store.abort_redistribution(state.plan_revision).await.map_err(|e| match e {
                    StoreError::NoRedistribution => "no redistribution is running any more (it finished meanwhile?)".into(),
                    StoreError::PlanChanged => format!(
                        "the redistribution changed meanwhile (it was in phase {:?}); see `vesta admin status`, then abort again",
                        plan.phase
                    ),
                    other => other.to_string(),
                })?;
                println!("aborted {}; shard map version {} stays", plan.action, state.map.version);
                Ok(())
            }
            AdminCommand::Repair { zone, full, dry_run, copy } => {
                let mut store = connect().await?;
                let state = load(&mut store, &flags.cluster).await?;
                repair::repair_zone(&state, &zone, &copy, full, dry_run).await
            }
            AdminCommand::RepairNode { node, sources, dry_run, copy } => {
                repair::repair_node(&node, &sources, &copy, dry_run).await
            }
            AdminCommand::Zone { action } => {
                let (zone, target, dry_run, repair) = match action {
                    ZoneAction::Down { zone, dry_run } => (zone, ZoneState::Down, dry_run, None),
                    ZoneAction::Up { zone, dry_run, no_repair, copy } => {
                        (zone, ZoneState::Up, dry_run, (!no_repair).then_some(copy))
                    }
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
                if target == ZoneState::Up {
                    // A node away for longer than the grace period must not serve a single request
                    // before its full repair: it stops serving before the zone comes back.
                    let away = repair::begin_full_repairs(&state, &zone).await?;
                    if !away.is_empty() && repair.is_none() {
                        return Err(format!(
                            "{} out of service for longer than the grace period and must be rebuilt: run                              `vesta admin zone up {zone}` without --no-repair",
                            away.join(", ")
                        ));
                    }
                }
                store.set_zone_state(&zone, target).await.map_err(|e| e.to_string())?;
                println!("zone {zone} is {}", target.as_str());
                if let Some(copy) = repair {
                    let state = load(&mut store, &flags.cluster).await?;
                    repair::repair_zone(&state, &zone, &copy, false, false).await?;
                }
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
async fn ping_all(spec: &ClusterSpec, timeout: Duration) -> Vec<(String, Option<Pong>)> {
    let nodes = Nodes::default();
    let pings = spec.zones.iter().flat_map(|z| z.nodes.iter()).map(|node| {
        let nodes = &nodes;
        async move { (node.name.clone(), nodes.ping(&node.addr, timeout).await) }
    });
    futures::future::join_all(pings).await
}

type Health = Vec<(String, Option<Pong>)>;

/// One line per shard (with a replica down, or every one): its storage group, zone by zone.
fn print_shards(state: &ClusterState, health: &Health, every: bool) {
    // A node that needs a full repair answers pings but serves nothing: not up for its shards.
    let up = |node: &str| health.iter().any(|(n, p)| n == node && p.as_ref().is_some_and(|p| p.needs_repair.is_none()));
    for shard in 0..state.map.shards {
        let group = state.map.storage_group(shard);
        let live = group.iter().filter(|(_, node)| up(node)).count();
        if !every && live == group.len() {
            continue;
        }
        let replicas: Vec<String> = group
            .iter()
            .map(|(zone, node)| {
                let mark = if state.is_down(zone) {
                    " (zone down)"
                } else if up(node) {
                    ""
                } else {
                    " DOWN"
                };
                format!("{zone}/{node}{mark}")
            })
            .collect();
        println!("shard {shard:>5}: {live}/{} replicas up  {}", group.len(), replicas.join("  "));
    }
}

fn print_summary(spec: &ClusterSpec, map: &ShardMap, live: Option<(&ClusterState, &Health)>) {
    let n = spec.zones.len();
    println!(
        "cluster {}: map version {}, {} shards, {n} zones, write quorum {}, read quorum {}",
        spec.name, map.version, map.shards, spec.write_quorum, spec.read_quorum
    );
    let pong =
        |node: &str| live.and_then(|(_, health)| health.iter().find(|(n, _)| n == node)).and_then(|(_, p)| p.as_ref());
    let is_up = |node: &str| live.is_none() || pong(node).is_some_and(|p| p.needs_repair.is_none());
    let registered = |node: &str| live.is_some_and(|(s, _)| s.alive.contains_key(node));
    for zone in &spec.zones {
        let state = live.and_then(|(s, _)| s.zones.get(&zone.name).copied()).unwrap_or(ZoneState::Up);
        println!("zone {} ({})", zone.name, state.as_str());
        for node in &zone.nodes {
            let shards = map.shards_of(&node.name).len();
            // Registered: the node keeps its etcd lease alive (nodes started without --etcd never are).
            let health = match (live, pong(&node.name)) {
                (None, _) => String::new(),
                (Some(_), Some(p)) => {
                    let behind = if p.map_version == map.version { "" } else { " (behind)" };
                    let lease = match (registered(&node.name), p.fenced) {
                        (_, true) => ", FENCED (its etcd lease is not confirmed)",
                        (true, false) => ", registered",
                        (false, false) => ", not registered in etcd",
                    };
                    let repair = if p.needs_repair.is_some() {
                        ", NEEDS A FULL REPAIR (away longer than the grace period; serves nothing)"
                    } else {
                        ""
                    };
                    format!("  up, map v{}{behind}{lease}{repair}", p.map_version)
                }
                (Some(_), None) if registered(&node.name) => {
                    "  DOWN (still registered in etcd: may serve until its lease expires)".to_string()
                }
                (Some(_), None) => "  DOWN".to_string(),
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
        if let Some(plan) = live.and_then(|(s, _)| s.redistribution.as_ref()) {
            println!(
                "redistribution running: {} ({:?}, {} shard replicas); see `vesta admin status`",
                plan.action,
                plan.phase,
                plan.moves.len()
            );
        }
    }
}
