//! Vesta's load generators:
//!
//! - `vesta-bench store`: throughput of one store node over loopback with many requests in flight —
//!   prepare+commit pairs (the write path of every Redis write) and reads. Without `--addr` it starts its
//!   own `vesta store` (RocksDB, in a temporary directory) and stops it.
//! - `vesta-bench rate`: open-loop GET/SET/INCR at a fixed rate against any RESP server; latency from each
//!   request's scheduled send time, error replies counted by prefix, timeouts.
//! - `vesta-bench hot-counter`: many clients INCR one key; checks the replies are exactly 1..n.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use vesta_proto::client::NodeConnection;
use vesta_proto::*;

#[derive(Parser)]
#[command(name = "vesta-bench", about = "Vesta load generators")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// One store node: prepare+commit and read throughput.
    Store(StoreBench),
    /// Open-loop load at a fixed rate against a RESP server (latency from the scheduled send time).
    Rate(vesta_bench::rate::RateArgs),
    /// Many clients INCR one key; the replies must be exactly 1..n.
    HotCounter(vesta_bench::hot_counter::HotCounterArgs),
}

#[derive(clap::Args)]
struct StoreBench {
    /// A running store node; when absent, one is started.
    #[arg(long)]
    addr: Option<String>,
    /// The `vesta` binary to start (default: next to this one).
    #[arg(long)]
    vesta: Option<PathBuf>,
    /// Sync policy of the started node.
    #[arg(long, default_value = "every-write")]
    sync: String,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 1024)]
    shards: u32,
}

struct Spawned {
    child: Child,
    dir: PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_store(b: &StoreBench) -> Result<(Spawned, String)> {
    use std::io::{BufRead, BufReader};
    let vesta = match &b.vesta {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("vesta"),
    };
    let dir = std::env::temp_dir().join(format!("vesta-bench-{}", std::process::id()));
    let mut child = Command::new(&vesta)
        .args(["store", "--node", "bench", "--listen", "127.0.0.1:0", "--sync", &b.sync])
        .args(["--shards", &b.shards.to_string(), "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", vesta.display()))?;
    let stdout = child.stdout.take().context("store stdout")?;
    let spawned = Spawned { child, dir };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(addr) = line.split(" listening on ").nth(1) {
            return Ok((spawned, addr.trim().to_string()));
        }
    }
    bail!("vesta store exited before listening")
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Write,
    Read,
}

fn target(i: u64, shards: u32) -> KeyRef {
    let key = Bytes::from(format!("bench:{i:010}"));
    KeyRef { shard: shard::shard_of(&key, shards), namespace: Bytes::from_static(b"0"), key }
}

async fn one_op(conn: &NodeConnection, phase: Phase, req: u128, t: KeyRef, value: &Bytes) -> Result<()> {
    match phase {
        Phase::Read => {
            conn.call(Request::Read(Read { target: t, want_value: true })).await?;
        }
        Phase::Write => {
            let p = Prepare {
                req: RequestId(req),
                target: t.clone(),
                kind: PrepareKind::Set,
                condition: None,
                want_value: false,
            };
            let r = conn.call(Request::Prepare(p)).await?;
            if !r.status().holds_lease() {
                return Ok(()); // contention on a random key: counted, not retried
            }
            let hlc = req as u64;
            let meta =
                Meta { version: 1, created_at: hlc, hlc, origin: 1, last_writer: RequestId(req), ..Meta::default() };
            let record = Record::new(meta, value.clone());
            let r = conn
                .call(Request::Commit(Commit { req: RequestId(req), target: t, record, keep_writer: false }))
                .await?;
            if r.status() != Status::Ok {
                bail!("commit answered {}", r.status());
            }
        }
    }
    Ok(())
}

async fn run_phase(b: &StoreBench, conns: &[NodeConnection], phase: Phase, name: &str) -> Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(b.seconds);
    let value = Bytes::from(vec![b'x'; b.value_size]);
    let mut tasks = Vec::new();
    for (c, conn) in conns.iter().enumerate() {
        for slot in 0..b.in_flight {
            let (conn, done, value, keys, shards) = (conn.clone(), done.clone(), value.clone(), b.keys, b.shards);
            let worker = (c * b.in_flight + slot) as u64;
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    let i = (worker.wrapping_mul(7919) + n.wrapping_mul(104_729)) % keys;
                    let req = ((worker as u128) << 64) | n as u128;
                    let t0 = Instant::now();
                    one_op(&conn, phase, req, target(i, shards), &value).await?;
                    lat.push(t0.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
    }
    let started = Instant::now();
    let mut last = 0;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = done.load(Ordering::Relaxed);
        eprintln!("  {name}: {:>3.0}s  {:>9} ops/s this second", started.elapsed().as_secs_f64(), now - last);
        last = now;
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    println!(
        "{name:<16} {:>10.0} ops/s   p50 {:>7.0} µs   p99 {:>7.0} µs   ({} ops in {secs:.1} s)",
        lat.len() as f64 / secs,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        lat.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<std::process::ExitCode> {
    match Cli::parse().command {
        Bench::Store(b) => store_bench(b).await?,
        Bench::Rate(a) => {
            let report = vesta_bench::rate::run(&a).await?;
            vesta_bench::rate::print(&a, &report);
        }
        Bench::HotCounter(a) => {
            if !vesta_bench::hot_counter::run(&a).await? {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn store_bench(b: StoreBench) -> Result<()> {
    let (_spawned, addr) = match &b.addr {
        Some(a) => (None, a.clone()),
        None => {
            let (s, a) = spawn_store(&b)?;
            (Some(s), a)
        }
    };
    let mut conns = Vec::new();
    for _ in 0..b.connections {
        conns.push(NodeConnection::connect(&addr).await.with_context(|| format!("connect {addr}"))?);
    }
    println!(
        "store node {addr} (sync {}): {} connections x {} in flight, {}-byte values, {} keys, {} s per phase",
        b.sync, b.connections, b.in_flight, b.value_size, b.keys, b.seconds
    );
    run_phase(&b, &conns, Phase::Write, "prepare+commit").await?;
    run_phase(&b, &conns, Phase::Read, "read").await?;
    Ok(())
}
