//! `vesta`: one binary for every Vesta process.
//!
//! * `vesta store --config store.toml` — a storage node.
//! * `vesta proxy --config proxy.toml` — a RESP proxy in front of the store nodes of a topology file.
//! * `vesta dev` — proxy + three store zones in one process: a local cluster in one command.
//! * `vesta admin …` — the operator's tool for a cluster kept in etcd.

mod admin;
mod cluster_source;
mod dev;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vesta_proxy::ProxyFlags;
use vesta_store::config::StoreFlags;

#[derive(Parser)]
#[command(name = "vesta", version, about = "Redis-compatible quorum-replicated key-value cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node (RocksDB or memory engine) serving the internal protocol.
    Store(Box<StoreFlags>),
    /// Run a RESP proxy (the quorum coordinator) in front of the store nodes of a topology.
    Proxy(Box<ProxyFlags>),
    /// Run a whole local cluster in this process: a proxy and three store zones (N=3, W=2, R=2).
    Dev(dev::DevFlags),
    /// Operate a cluster whose spec and shard map live in etcd: init, show, zone maintenance.
    Admin(admin::AdminFlags),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("VESTA_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Store(flags) => store(*flags),
        Command::Proxy(flags) => proxy(*flags),
        Command::Dev(flags) => dev::run(flags),
        Command::Admin(flags) => admin::run(flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vesta: {e}");
            ExitCode::from(2)
        }
    }
}

fn store(flags: StoreFlags) -> Result<(), String> {
    let mut config = flags.resolve().map_err(|e| format!("store configuration: {e}"))?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let cluster = cluster_source::store_cluster(&mut config).await?;
        config.validate().map_err(|e| format!("store configuration: {e}"))?;
        let name = config.node.clone();
        let node =
            vesta_store::StoreNode::open(&config).map_err(|e| format!("open {}: {e}", config.data_dir.display()))?;
        // With etcd: registered, and on the cluster's state read after registering, before serving.
        let registration = match cluster {
            Some(_) => Some(cluster_source::follow_for_store(&config, node.clone()).await?),
            None => None,
        };
        vesta_store::server::run_node(
            node,
            &config,
            |addr| say(&format!("store {name} listening on {addr}\nready")),
            shutdown_signal(),
        )
        .await?;
        if let Some(registration) = registration {
            registration.leave().await;
        }
        tracing::info!(node = %name, "stopped");
        Ok(())
    })
}

fn proxy(flags: ProxyFlags) -> Result<(), String> {
    let config = flags.resolve().map_err(|e| format!("proxy configuration: {e}"))?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let topology = cluster_source::proxy_topology(&config).await?;
        if let Some(addr) = config.metrics_listen {
            vesta_proxy::metrics::install_exporter(addr)?;
        }
        let repl_listener = bind_replication(&config).await?;
        let repl_tls = replication_tls(&config)?;
        vesta_proxy::server::run_proxy(
            &config,
            &topology,
            &Default::default(),
            |addr, proxy| {
                cluster_source::follow_for_proxy(&config, proxy.clone(), &topology);
                if config.replication.enabled() {
                    start_replication(&config, &proxy, repl_listener, repl_tls);
                }
                say(&format!("proxy listening on {addr}\nready"))
            },
            shutdown_signal(),
        )
        .await?;
        tracing::info!("proxy stopped");
        Ok(())
    })
}

/// The replication listener, bound before the proxy says `ready` so that a peer site can connect as soon
/// as it is.
pub(crate) async fn bind_replication(
    config: &vesta_proxy::ProxyConfig,
) -> Result<Option<tokio::net::TcpListener>, String> {
    match config.replication.listen {
        Some(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| format!("replication listener on {addr}: {e}")),
        None => Ok(None),
    }
}

/// Both ends of the replication link, with `[internal_tls]`: the sender presents this proxy's
/// certificate and verifies the peer's; the listener admits only senders with a certificate of the
/// cluster CA.
pub(crate) struct ReplicationTls {
    sender: Option<vesta_tls::ClientTls>,
    listener: Option<vesta_tls::ServerTls>,
}

pub(crate) fn replication_tls(config: &vesta_proxy::ProxyConfig) -> Result<ReplicationTls, String> {
    use vesta_tls::handshake::Side;
    let Some(files) = config.internal_tls.as_ref().filter(|_| config.replication.enabled()) else {
        return Ok(ReplicationTls { sender: None, listener: None });
    };
    let bad = |e: vesta_tls::TlsError| format!("replication TLS: {e}");
    Ok(ReplicationTls {
        sender: Some(vesta_tls::ClientTls::internal(files, Side::ReplicationOut).map_err(bad)?),
        listener: Some(vesta_tls::ServerTls::internal(files, Side::ReplicationIn).map_err(bad)?),
    })
}

/// Cross-site replication in this proxy: shipping this site's writes (`ship`), installing the peers'
/// (`listen`).
pub(crate) fn start_replication(
    config: &vesta_proxy::ProxyConfig,
    proxy: &std::sync::Arc<vesta_proxy::server::Proxy>,
    listener: Option<tokio::net::TcpListener>,
    tls: ReplicationTls,
) {
    let site = vesta_repl::Site::new(proxy.coordinator.clone(), config.origin, config.replication.clone(), tls.sender);
    site.start();
    if let Some(listener) = listener {
        let peers = config.replication.peers.iter().map(|p| (p.origin, p.name.clone())).collect();
        let coordinator = std::sync::Arc::new(proxy.coordinator.clone());
        let addr = listener.local_addr().unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        tracing::info!(%addr, "receiving the peer sites' writes");
        let gate = vesta_tls::Gate::new(tls.listener, Vec::new(), addr, "replication listener");
        tokio::spawn(vesta_repl::receiver::serve(listener, gate, coordinator, peers, std::future::pending()));
    }
    let _ = proxy.shared.replication.set(site);
}

/// A line for whoever started us (scripts wait for `ready`); a closed stdout is no reason to die.
pub(crate) fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
