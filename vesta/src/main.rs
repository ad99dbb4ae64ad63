//! `vesta`: one binary for every Vesta process.
//!
//! * `vesta store --config store.toml` — a storage node.
//!
//! The proxy, the all-in-one `vesta dev` cluster and `vesta admin` arrive with their issues.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
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
    Store(StoreFlags),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("VESTA_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Store(flags) => store(flags),
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
    let config = flags.resolve().map_err(|e| format!("store configuration: {e}"))?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let name = config.node.clone();
        vesta_store::server::run(
            &config,
            |addr| {
                // Whoever started us may have stopped reading stdout; that is no reason to die.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "store {name} listening on {addr}");
                let _ = writeln!(out, "ready");
                let _ = out.flush();
            },
            shutdown_signal(),
        )
        .await?;
        tracing::info!(node = %name, "stopped");
        Ok(())
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
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
