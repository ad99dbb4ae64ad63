//! `vesta-bench hot-counter`: many clients INCR one key, each one command at a time (pipeline 1, like
//! redis-benchmark), and every reply is kept: afterwards the replies must be exactly 1..n (each value
//! once, each client's own rising) and a GET of the key must answer n.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::histogram::{fmt_ms, Histogram};
use crate::resp::{self, Reply};
use crate::sequence;

#[derive(clap::Args, Debug, Clone)]
pub struct HotCounterArgs {
    /// The server (a Vesta proxy or redis-server), HOST:PORT.
    #[arg(long)]
    pub addr: String,
    /// Concurrent connections, each sending its INCRs one after another.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// INCRs in all (n), spread evenly over the clients.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// The counter's key; it is deleted first, so the replies must start at 1.
    #[arg(long, default_value = "vesta-bench:hot-counter")]
    pub key: String,
    /// A reply slower than this ends its client (counted as a timeout).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// One connection with a read buffer, for request/reply one at a time.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Conn {
    pub async fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: BytesMut::with_capacity(4096), out: BytesMut::with_capacity(256) })
    }

    /// Sends one command and waits for its reply (bulk strings kept).
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.out.clear();
        resp::encode(&mut self.out, args);
        self.stream.write_all(&self.out).await?;
        loop {
            if let Some(r) = resp::parse(&mut self.buf, true)? {
                return Ok(r);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed by the server");
            }
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    replies: Vec<i64>,
    latency: Histogram,
    errors: BTreeMap<String, u64>,
    timeouts: u64,
    failure: Option<String>,
}

async fn client(
    addr: String,
    key: Arc<Vec<u8>>,
    count: u64,
    timeout: Duration,
    start: Arc<tokio::sync::Barrier>,
) -> ClientLog {
    let mut log = ClientLog { replies: Vec::with_capacity(count as usize), ..ClientLog::default() };
    let mut conn = match Conn::connect(&addr).await {
        Ok(c) => c,
        Err(e) => {
            start.wait().await;
            log.failure = Some(format!("{e:#}"));
            return log;
        }
    };
    start.wait().await;
    for _ in 0..count {
        let t0 = Instant::now();
        match tokio::time::timeout(timeout, conn.call(&[b"INCR", &key])).await {
            Err(_) => {
                log.timeouts += 1;
                log.failure = Some(format!("no reply within {} ms", timeout.as_millis()));
                break;
            }
            Ok(Err(e)) => {
                log.failure = Some(format!("{e:#}"));
                break;
            }
            Ok(Ok(reply)) => {
                log.latency.record_duration(t0.elapsed());
                match reply {
                    Reply::Integer(v) => log.replies.push(v),
                    Reply::Error(e) => {
                        let prefix = e.split_whitespace().next().unwrap_or("").to_string();
                        *log.errors.entry(prefix).or_default() += 1;
                    }
                    other => *log.errors.entry(format!("unexpected {other:?}")).or_default() += 1,
                }
            }
        }
    }
    log
}

pub async fn run(a: &HotCounterArgs) -> Result<bool> {
    if a.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let key = Arc::new(a.key.as_bytes().to_vec());
    let mut setup = Conn::connect(&a.addr).await?;
    match setup.call(&[b"DEL", &key]).await? {
        Reply::Integer(_) => {}
        other => bail!("DEL {} answered {other:?}", a.key),
    }
    println!(
        "hot counter: {} clients INCR {:?} on {}, {} requests in all, one at a time per client",
        a.clients, a.key, a.addr, a.requests
    );
    let start = Arc::new(tokio::sync::Barrier::new(a.clients + 1));
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut tasks = Vec::new();
    for c in 0..a.clients as u64 {
        let count = a.requests / a.clients as u64 + u64::from(c < a.requests % a.clients as u64);
        tasks.push(tokio::spawn(client(a.addr.clone(), key.clone(), count, timeout, start.clone())));
    }
    start.wait().await;
    let t0 = Instant::now();
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await?);
    }
    let secs = t0.elapsed().as_secs_f64();

    let mut latency = Histogram::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut timeouts = 0;
    let mut failures = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        latency.merge(&l.latency);
        for (k, v) in &l.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        timeouts += l.timeouts;
        if let Some(f) = &l.failure {
            failures.push(format!("client {i}: {f}"));
        }
    }
    let replies: Vec<Vec<i64>> = logs.into_iter().map(|l| l.replies).collect();
    let ok: u64 = replies.iter().map(|r| r.len() as u64).sum();
    let error_count: u64 = errors.values().sum();
    let fin = match setup.call(&[b"GET", &key]).await? {
        Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => format!("{other:?}"),
    };
    let verdict = sequence::check(&replies, a.requests);
    let get_ok = fin == a.requests.to_string();
    let pass = verdict.ok() && get_ok && failures.is_empty() && error_count == 0;

    let rps = (ok + error_count) as f64 / secs;
    println!(
        "{rps:.0} INCR/s ({} replies in {secs:.2} s); latency p50 {} ms, p99 {} ms, max {} ms",
        ok + error_count,
        fmt_ms(latency.percentile_ms(50.0)),
        fmt_ms(latency.percentile_ms(99.0)),
        fmt_ms(latency.percentile_ms(100.0)),
    );
    println!("{verdict}");
    println!("GET after the run: {fin} (want {})", a.requests);
    if error_count > 0 {
        println!("error replies: {}", fmt_counts(&errors));
    }
    for f in failures.iter().take(5) {
        println!("{f}");
    }
    if failures.len() > 5 {
        println!("… and {} more clients failed", failures.len() - 5);
    }
    println!(
        "result: rps={rps:.0} requests={} ok={ok} errors={error_count} error_prefixes={} timeouts={timeouts} \
         failed_clients={} p50_ms={} p99_ms={} final={fin} duplicates={} missing={} out_of_range={} not_rising={} check={}",
        a.requests,
        fmt_counts(&errors),
        failures.len(),
        fmt_ms(latency.percentile_ms(50.0)),
        fmt_ms(latency.percentile_ms(99.0)),
        verdict.duplicates,
        verdict.missing,
        verdict.out_of_range,
        verdict.not_rising,
        if pass { "pass" } else { "FAIL" },
    );
    Ok(pass)
}

/// `PREFIX:count,PREFIX:count` (`-` for none).
pub fn fmt_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "-".into();
    }
    counts.iter().map(|(k, v)| format!("{}:{v}", k.replace([' ', ',', ':'], "_"))).collect::<Vec<_>>().join(",")
}
