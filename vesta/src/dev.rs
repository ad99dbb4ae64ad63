//! `vesta dev`: a proxy and three store zones in one process (N=3, W=2, R=2), data kept under one
//! directory across restarts. No etcd, no Docker. The proxy hands requests to the in-process zones
//! directly (`--tcp` sends them over loopback like separate processes); the zones also listen on TCP so
//! that tools can reach them.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{oneshot, watch};
use vesta_proto::{Request, Response};
use vesta_proxy::pool::{LocalNode, LocalNodes};
use vesta_proxy::topology::{Topology, Zone};
use vesta_proxy::ProxyConfig;
use vesta_store::{EngineKind, StoreConfig, StoreNode, SyncPolicy};

use crate::{say, shutdown_signal};

#[derive(Debug, clap::Args)]
pub struct DevFlags {
    /// The RESP port.
    #[arg(long, default_value_t = 6379, env = "VESTA_DEV_PORT")]
    port: u16,
    /// Where the three zones keep their RocksDB data.
    #[arg(long, default_value = "data/dev", env = "VESTA_DEV_DATA_DIR")]
    data_dir: PathBuf,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long)]
    memory: bool,
    #[arg(long, default_value_t = 1024)]
    shards: u32,
    /// When store writes reach the disk (see the README's table of what each policy can lose). The
    /// three zones of a dev cluster share one disk and one power supply; like Redis's `appendfsync
    /// everysec`, the default fsyncs on a timer (every 100 ms): a crashed process loses nothing, a power
    /// cut at most the last 100 ms. `every-write` fsyncs before each commit is acknowledged.
    #[arg(long, value_enum, default_value = "periodic", env = "VESTA_DEV_SYNC")]
    sync: SyncPolicy,
    /// How long the proxy waits for one store node.
    #[arg(long, default_value_t = 100, env = "VESTA_DEV_NODE_TIMEOUT_MS")]
    node_timeout_ms: u64,
    /// Send the proxy's requests to the zones over loopback TCP, as separate processes would, instead of
    /// handing them to the in-process nodes directly (the zones listen on TCP either way).
    #[arg(long)]
    tcp: bool,
    /// Prometheus `/metrics` of the whole process.
    #[arg(long, env = "VESTA_DEV_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The largest value a client may send, in bytes (Redis's proto-max-bulk-len; at most 66060288).
    #[arg(long, default_value_t = vesta_proxy::limits::DEFAULT_PROTO_MAX_BULK_LEN, env = "VESTA_DEV_PROTO_MAX_BULK_LEN")]
    proto_max_bulk_len: usize,
    /// This site's origin id (cross-site replication: every site has its own).
    #[arg(long, default_value_t = 1, env = "VESTA_DEV_ORIGIN")]
    origin: u32,
    /// Receive other sites' writes on this address (turns on the stores' change logs).
    #[arg(long, env = "VESTA_DEV_REPL_LISTEN")]
    repl_listen: Option<SocketAddr>,
    /// A peer site to ship this site's writes to, NAME=ORIGIN@HOST:PORT (repeat for each).
    #[arg(long, env = "VESTA_DEV_REPL_PEERS", value_delimiter = ',')]
    repl_peer: Vec<vesta_proxy::PeerSite>,
    /// Also serve TLS clients on this port (`redis-cli --tls --cacert <data-dir>/pki/ca.crt -p PORT`),
    /// with a CA and certificate made on first use in `<data-dir>/pki`.
    #[arg(long, env = "VESTA_DEV_TLS_PORT")]
    tls_port: Option<u16>,
    /// The default user's password (Redis's requirepass): clients must AUTH first.
    #[arg(long, env = "VESTA_DEV_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// Redis's maxclients (lowered to what the open-file limit allows).
    #[arg(long, default_value_t = 10_000, env = "VESTA_DEV_MAX_CLIENTS")]
    max_clients: usize,
    /// Close clients idle for this many seconds (Redis's timeout; 0: never).
    #[arg(long, default_value_t = 0, env = "VESTA_DEV_TIMEOUT")]
    timeout: u64,
    /// New connections accepted per second, at most (0: no limit).
    #[arg(long, default_value_t = 10_000, env = "VESTA_DEV_MAX_ACCEPT_RATE")]
    max_accept_rate: u64,
    /// Data commands executing at once; beyond it they wait in the surge queue (or are refused).
    #[arg(long, default_value_t = vesta_proxy::config::default_max_in_flight(), env = "VESTA_DEV_MAX_IN_FLIGHT")]
    max_in_flight: usize,
    /// Commands that may wait for a slot; beyond it they are refused (-TRYAGAIN) at once.
    #[arg(long, default_value_t = vesta_proxy::config::DEFAULT_SURGE_QUEUE_LEN, env = "VESTA_DEV_SURGE_QUEUE_LEN")]
    surge_queue_len: usize,
    /// CoDel target of the surge queue, ms.
    #[arg(long, default_value_t = vesta_proxy::config::DEFAULT_CODEL_TARGET_MS, env = "VESTA_DEV_CODEL_TARGET_MS")]
    codel_target_ms: u64,
    /// CoDel interval of the surge queue, ms.
    #[arg(long, default_value_t = vesta_proxy::config::DEFAULT_CODEL_INTERVAL_MS, env = "VESTA_DEV_CODEL_INTERVAL_MS")]
    codel_interval_ms: u64,
}

/// Descriptors kept beside the clients: the proxy's own, and the three stores' RocksDB files.
const DEV_RESERVED_FDS: u64 = vesta_proxy::edge::RESERVED_FDS + 3 * 512;

/// A CA and a certificate for 127.0.0.1/localhost in `dir`, made unless they exist.
fn dev_certificates(dir: &std::path::Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    use vesta_tls::authority::{Authority, Validity};
    let (ca, cert, key) = (dir.join("ca.crt"), dir.join("proxy.crt"), dir.join("proxy.key"));
    if !(ca.exists() && cert.exists() && key.exists()) {
        let authority = Authority::new("Vesta dev CA").map_err(|e| e.to_string())?;
        authority.write(dir).map_err(|e| e.to_string())?;
        let sans = ["127.0.0.1".to_string(), "localhost".to_string()];
        let issued = authority.issue("proxy", &sans, Validity::Days(365)).map_err(|e| e.to_string())?;
        issued.write(dir, "proxy").map_err(|e| e.to_string())?;
    }
    Ok((ca, cert, key))
}

const ZONES: usize = 3;

/// The proxy's view of a zone that lives in this process.
struct InProcess(Arc<StoreNode>);

impl LocalNode for InProcess {
    /// An operation that has to wait (for the group commit) goes on as a task of its own, as it would
    /// on a node across the network: a caller that stops waiting (the per-node timeout) must not cancel
    /// a commit half-way. Most operations finish at once and need no task.
    fn call(&self, request: Request) -> Pin<Box<dyn Future<Output = Response> + Send + 'static>> {
        let request = match self.0.handle_now(request) {
            Ok(done) => return Box::pin(std::future::ready(done)),
            Err(request) => request,
        };
        let node = self.0.clone();
        let mut op = Box::pin(async move { node.handle(request).await });
        if let Some(done) = op.as_mut().now_or_never() {
            return Box::pin(std::future::ready(done));
        }
        let task = tokio::spawn(op);
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Response::Reply(vesta_proto::Reply::error(vesta_proto::Status::Internal, e.to_string()))
            })
        })
    }
}

pub fn run(flags: DevFlags) -> Result<(), String> {
    let replication = vesta_proxy::ReplicationConfig {
        listen: flags.repl_listen,
        ship: !flags.repl_peer.is_empty(),
        peers: flags.repl_peer.clone(),
        ..Default::default()
    };
    let mut config = ProxyConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], flags.port)),
        node_timeout_ms: flags.node_timeout_ms,
        proto_max_bulk_len: flags.proto_max_bulk_len,
        origin: flags.origin,
        replication,
        requirepass: flags.requirepass.clone(),
        max_clients: flags.max_clients,
        timeout: flags.timeout,
        max_accept_rate: flags.max_accept_rate,
        max_in_flight: flags.max_in_flight,
        surge_queue_len: flags.surge_queue_len,
        codel_target_ms: flags.codel_target_ms,
        codel_interval_ms: flags.codel_interval_ms,
        reserved_fds: DEV_RESERVED_FDS,
        ..ProxyConfig::default()
    };
    if let Some(port) = flags.tls_port {
        let (ca, cert, key) = dev_certificates(&flags.data_dir.join("pki"))?;
        say(&format!("TLS clients: redis-cli --tls --cacert {} -p {port}", ca.display()));
        config.tls_port = Some(port);
        config.tls_cert_file = Some(cert);
        config.tls_key_file = Some(key);
        config.tls_ca_cert_file = Some(ca);
        // Like a client of a managed Redis: the CA file is all a client needs.
        config.tls_auth_clients = vesta_tls::ClientAuth::Optional;
    }
    // The stores log this site's commits only when there is a site to ship them to or to hear from.
    let changelog_origin = config.replication.enabled().then_some(flags.origin);
    // Before any store opens: a bad flag is one line and exit status 2, like every other process.
    config.validate().map_err(|e| format!("dev configuration: {e}"))?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        if let Some(addr) = flags.metrics_listen {
            vesta_proxy::metrics::install_exporter(addr)?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let mut stores = Vec::new();
        let mut zones = Vec::new();
        let mut locals = LocalNodes::new();
        for z in 1..=ZONES {
            let config = StoreConfig {
                node: format!("zone{z}"),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                engine: if flags.memory { EngineKind::Memory } else { EngineKind::Rocksdb },
                data_dir: flags.data_dir.join(format!("zone{z}")),
                sync: flags.sync,
                shards: flags.shards,
                // Three RocksDB instances share this machine: modest caches, memtables large enough that
                // flushes and compactions stay rare under a benchmark.
                block_cache_mb: 64,
                write_buffer_mb: 64,
                // The three zones start and stop together: none can fall behind the others while away.
                rejoin_check: false,
                changelog_origin,
                ..StoreConfig::default()
            };
            config.validate().map_err(|e| e.to_string())?;
            let node = StoreNode::open(&config).map_err(|e| format!("store zone{z}: {e}"))?;
            let (addr_tx, addr_rx) = oneshot::channel();
            let shutdown = stopped(stop_rx.clone());
            let served = node.clone();
            stores.push(tokio::spawn(async move {
                vesta_store::server::run_node(
                    served,
                    &config,
                    |addr| {
                        let _ = addr_tx.send(addr);
                    },
                    shutdown,
                )
                .await
            }));
            let Ok(addr) = addr_rx.await else {
                // The store gave up before listening: its own error says why.
                let why = match stores.pop() {
                    Some(task) => match task.await {
                        Ok(Err(e)) => e,
                        _ => "stopped".into(),
                    },
                    None => "stopped".into(),
                };
                return Err(format!("store zone{z}: {why}"));
            };
            if !flags.tcp {
                locals.insert(addr.to_string(), Arc::new(InProcess(node)));
            }
            say(&format!("store zone{z} listening on {addr}"));
            zones.push(Zone { name: format!("zone{z}"), nodes: vec![addr.to_string()] });
        }

        let topology = Topology {
            shards: flags.shards,
            write_quorum: 2,
            read_quorum: 2,
            zones,
            placement: None,
            down_zones: Vec::new(),
            version: 0,
        };
        let repl_listener = crate::bind_replication(&config).await?;
        let repl_tls = crate::replication_tls(&config)?;
        let proxy = vesta_proxy::server::run_proxy(
            &config,
            &topology,
            &locals,
            |addr, proxy| {
                if config.replication.enabled() {
                    crate::start_replication(&config, &proxy, repl_listener, repl_tls);
                }
                say(&format!("proxy listening on {addr}\nready"))
            },
            shutdown_signal(),
        )
        .await;
        let _ = stop_tx.send(true);
        for store in stores {
            match store.await {
                Ok(Err(e)) => tracing::error!(error = %e, "store stopped with an error"),
                Err(e) => tracing::error!(error = %e, "store task failed"),
                Ok(Ok(())) => {}
            }
        }
        proxy
    })
}
