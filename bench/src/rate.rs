//! `vesta-bench rate`: an open-loop load generator. Requests are sent at a fixed rate, spread evenly over
//! the connections whatever the server does; each request's latency counts from the time it was
//! *scheduled* to be sent, not from when it went out, so a server that stalls is charged for every
//! request that waited behind the stall (no coordinated omission).
//!
//! A pacer thread (nanosleep, not the runtime's millisecond timer) hands each connection's writer the
//! scheduled times as they fall due; the writer sends what is due in one write and tells its reader, in
//! order, when each request was scheduled; the reader matches replies to requests in order (RESP
//! answers in order) and records the latency. A reply later than `--timeout-ms`, or none by then, is a
//! timeout; error replies are counted by their first word (`TRYAGAIN`, `ERR`, …).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::histogram::{fmt_ms, Histogram};
use crate::hot_counter::fmt_counts;
use crate::resp::{self, Reply};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Get,
    Set,
    Incr,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RateArgs {
    /// Server(s), HOST:PORT; repeat (or separate with commas) to spread the connections over several.
    #[arg(long = "addr", required = true, value_delimiter = ',')]
    pub addrs: Vec<String>,
    /// Requests per second, in all.
    #[arg(long)]
    pub rate: f64,
    /// Connections, in all (round-robin over the addresses).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// How long requests are sent, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, value_enum, default_value = "get")]
    pub command: Command,
    /// Keys are `key:` + 12 digits, at random below this (redis-benchmark's `-r`).
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Bytes of each SET value (redis-benchmark's `-d`).
    #[arg(long, default_value_t = 16)]
    pub value_size: usize,
    /// A reply later than this after its scheduled time (or none by then) is a timeout.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// The pacer's shortest sleep, in microseconds: requests falling due within it go out together.
    #[arg(long, default_value_t = 100)]
    pub tick_us: u64,
    /// Print progress every second on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct RateReport {
    pub scheduled: u64,
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Replies later than the timeout.
    pub late: u64,
    /// Requests with no reply by the end (never sent, or sent and never answered).
    pub unanswered: u64,
    /// Successful replies' latency from the scheduled time, ns.
    pub latency: Histogram,
    /// Error replies' latency from the scheduled time, ns.
    pub error_latency: Histogram,
    /// How late the generator itself sent requests (actual send − scheduled), ns.
    pub send_lag: Histogram,
    /// From the first scheduled request to the last reply.
    pub elapsed: Duration,
    pub failures: Vec<String>,
}

impl RateReport {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn timeouts(&self) -> u64 {
        self.late + self.unanswered
    }

    /// Replies (successful or errors, within the timeout) per second.
    pub fn achieved_rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.ok + self.error_count()) as f64 / secs
        } else {
            0.0
        }
    }

    /// Share of the scheduled requests answered with an error.
    pub fn refused_fraction(&self) -> f64 {
        if self.scheduled == 0 {
            0.0
        } else {
            self.error_count() as f64 / self.scheduled as f64
        }
    }
}

/// A small, fast generator of random key numbers (xorshift64*); the keys need no cryptography.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The scheduled time of request `k` (0-based) at `rate` per second from `start`.
pub fn scheduled_at(start: Instant, k: u64, rate: f64) -> Instant {
    start + Duration::from_secs_f64(k as f64 / rate)
}

/// How many requests are due `since` after the start (request k is due at k / rate).
pub fn due_by(since: Duration, rate: f64, total: u64) -> u64 {
    ((since.as_secs_f64() * rate).floor() as u64 + 1).min(total)
}

/// Hands the scheduled times to the connections' writers in turn, until `total` are out.
fn pace(start: Instant, rate: f64, total: u64, tick: Duration, writers: Vec<mpsc::UnboundedSender<Instant>>) -> u64 {
    let mut k = 0;
    let n = writers.len() as u64;
    while k < total {
        let now = Instant::now();
        let due = if now < start { 0 } else { due_by(now - start, rate, total) };
        while k < due {
            // a writer that failed has dropped its receiver: its requests are counted unanswered
            let _ = writers[(k % n) as usize].send(scheduled_at(start, k, rate));
            k += 1;
        }
        if k >= total {
            break;
        }
        let next = scheduled_at(start, k, rate);
        let now = Instant::now();
        std::thread::sleep(next.saturating_duration_since(now).max(tick));
    }
    k
}

struct Counters {
    sent: AtomicU64,
    replies: AtomicU64,
    errors: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
async fn writer(
    mut w: OwnedWriteHalf,
    mut due: mpsc::UnboundedReceiver<Instant>,
    inflight: mpsc::UnboundedSender<Instant>,
    done: watch::Sender<bool>,
    command: Command,
    keyspace: u64,
    value: Arc<Vec<u8>>,
    seed: u64,
    counters: Arc<Counters>,
) -> (Histogram, Option<String>) {
    let mut lag = Histogram::new();
    let mut rng = Rng::new(seed);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut failure = None;
    while let Some(first) = due.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match due.try_recv() {
                Ok(t) => batch.push(t),
                Err(_) => break,
            }
        }
        out.clear();
        let now = Instant::now();
        for &t in &batch {
            let key = format!("key:{:012}", rng.next() % keyspace.max(1));
            match command {
                Command::Get => resp::encode(&mut out, &[b"GET", key.as_bytes()]),
                Command::Set => resp::encode(&mut out, &[b"SET", key.as_bytes(), &value]),
                Command::Incr => resp::encode(&mut out, &[b"INCR", key.as_bytes()]),
            }
            lag.record_duration(now.saturating_duration_since(t));
            // before the write: the reply may come back before write_all returns
            let _ = inflight.send(t);
        }
        if let Err(e) = w.write_all(&out).await {
            failure = Some(format!("write: {e}"));
            break;
        }
        counters.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    drop(inflight);
    let _ = done.send(true);
    (lag, failure)
}

#[derive(Default)]
struct ReaderLog {
    ok: u64,
    errors: BTreeMap<String, u64>,
    late: u64,
    latency: Histogram,
    error_latency: Histogram,
    last_reply: Option<Instant>,
    failure: Option<String>,
}

async fn reader(
    mut r: OwnedReadHalf,
    mut inflight: mpsc::UnboundedReceiver<Instant>,
    mut writer_done: watch::Receiver<bool>,
    hard_stop: Instant,
    timeout: Duration,
    counters: Arc<Counters>,
) -> ReaderLog {
    let mut log = ReaderLog::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut writer_finished = false;
    loop {
        if writer_finished && inflight.is_empty() {
            break;
        }
        tokio::select! {
            read = r.read_buf(&mut buf) => {
                match read {
                    Ok(0) => { log.failure = Some("connection closed by the server".into()); break; }
                    Err(e) => { log.failure = Some(format!("read: {e}")); break; }
                    Ok(_) => {}
                }
                let now = Instant::now();
                loop {
                    let reply = match resp::parse(&mut buf, false) {
                        Ok(Some(reply)) => reply,
                        Ok(None) => break,
                        Err(e) => { log.failure = Some(e.to_string()); return log; }
                    };
                    let Ok(t) = inflight.try_recv() else {
                        // e.g. a server refusing the connection itself: "-ERR max number of clients reached"
                        log.failure = Some(format!("a reply before any request: {reply:?}"));
                        return log;
                    };
                    let lat = now.saturating_duration_since(t);
                    counters.replies.fetch_add(1, Ordering::Relaxed);
                    if lat > timeout {
                        log.late += 1;
                        continue;
                    }
                    log.last_reply = Some(now);
                    match reply {
                        Reply::Error(e) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            let prefix = e.split_whitespace().next().unwrap_or("").to_string();
                            *log.errors.entry(prefix).or_default() += 1;
                            log.error_latency.record_duration(lat);
                        }
                        _ => {
                            log.ok += 1;
                            log.latency.record_duration(lat);
                        }
                    }
                }
            }
            changed = writer_done.changed(), if !writer_finished => {
                // the writer is done (or gone): from now on, stop once nothing is outstanding
                let _ = changed;
                writer_finished = true;
            }
            _ = tokio::time::sleep_until(hard_stop.into()) => break,
        }
    }
    log
}

/// Runs the load and returns what it measured.
pub async fn run(a: &RateArgs) -> Result<RateReport> {
    if a.rate.is_nan()
        || a.rate <= 0.0
        || a.seconds.is_nan()
        || a.seconds <= 0.0
        || a.connections == 0
        || a.addrs.is_empty()
    {
        bail!("--rate, --seconds and --connections must be positive, and --addr given");
    }
    let total = (a.rate * a.seconds).round().max(1.0) as u64;
    let timeout = Duration::from_millis(a.timeout_ms);
    let value = Arc::new(vec![b'x'; a.value_size]);
    let counters =
        Arc::new(Counters { sent: AtomicU64::new(0), replies: AtomicU64::new(0), errors: AtomicU64::new(0) });

    let mut streams = Vec::new();
    for c in 0..a.connections {
        let addr = &a.addrs[c % a.addrs.len()];
        let s = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    // a moment after connecting, so that the first requests do not wait for the connections' set-up
    let start = Instant::now() + Duration::from_millis(50);
    let hard_stop = start + Duration::from_secs_f64(a.seconds) + timeout;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut pacer_txs = Vec::new();
    for (c, s) in streams.into_iter().enumerate() {
        let (r, w) = s.into_split();
        let (due_tx, due_rx) = mpsc::unbounded_channel();
        let (inflight_tx, inflight_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        pacer_txs.push(due_tx);
        writers.push(tokio::spawn(writer(
            w,
            due_rx,
            inflight_tx,
            done_tx,
            a.command,
            a.keyspace,
            value.clone(),
            c as u64 + 1,
            counters.clone(),
        )));
        readers.push(tokio::spawn(reader(r, inflight_rx, done_rx, hard_stop, timeout, counters.clone())));
    }

    let (rate, tick) = (a.rate, Duration::from_micros(a.tick_us));
    let pacer = std::thread::spawn(move || pace(start, rate, total, tick, pacer_txs));

    let progress = (!a.quiet).then(|| {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut last = (0, 0, 0);
            let mut second = 0;
            tokio::time::sleep_until((start + Duration::from_secs(1)).into()).await;
            loop {
                second += 1;
                let now = (
                    counters.sent.load(Ordering::Relaxed),
                    counters.replies.load(Ordering::Relaxed),
                    counters.errors.load(Ordering::Relaxed),
                );
                eprintln!(
                    "  {second:>3}s: sent {:>7}/s, replies {:>7}/s, error replies {:>7}/s",
                    now.0 - last.0,
                    now.1 - last.1,
                    now.2 - last.2
                );
                last = now;
                tokio::time::sleep_until((start + Duration::from_secs(second + 1)).into()).await;
            }
        })
    });

    let scheduled = tokio::task::spawn_blocking(move || pacer.join()).await?.expect("pacer thread panicked");
    let mut report = RateReport { scheduled, ..RateReport::default() };
    let mut last_reply = start;
    for r in readers {
        let log = r.await?;
        report.ok += log.ok;
        report.late += log.late;
        for (k, v) in log.errors {
            *report.errors.entry(k).or_default() += v;
        }
        report.latency.merge(&log.latency);
        report.error_latency.merge(&log.error_latency);
        if let Some(t) = log.last_reply {
            last_reply = last_reply.max(t);
        }
        if let Some(f) = log.failure {
            report.failures.push(f);
        }
    }
    for w in writers {
        // a writer still blocked on a server that stopped reading is abandoned with its connection
        if w.is_finished() {
            let (lag, failure) = w.await?;
            report.send_lag.merge(&lag);
            if let Some(f) = failure {
                report.failures.push(f);
            }
        } else {
            w.abort();
            report.failures.push("writer still blocked at the end (the server stopped reading)".into());
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    report.sent = counters.sent.load(Ordering::Relaxed);
    report.elapsed = last_reply.saturating_duration_since(start);
    report.unanswered = report.scheduled.saturating_sub(report.ok + report.error_count() + report.late);
    Ok(report)
}

/// Prints the report, human-readable, then one `result:` line of key=value for scripts.
pub fn print(a: &RateArgs, r: &RateReport) {
    let cmd = format!("{:?}", a.command).to_uppercase();
    println!(
        "{cmd} at {:.0}/s for {} s over {} connections to {}: {} scheduled, {} sent",
        a.rate,
        a.seconds,
        a.connections,
        a.addrs.join(","),
        r.scheduled,
        r.sent
    );
    println!(
        "achieved {:.0} replies/s; successful {} — latency from the scheduled send: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        r.achieved_rps(),
        r.ok,
        fmt_ms(r.latency.percentile_ms(50.0)),
        fmt_ms(r.latency.percentile_ms(99.0)),
        fmt_ms(r.latency.percentile_ms(99.9)),
        fmt_ms(r.latency.percentile_ms(100.0)),
    );
    println!(
        "error replies {} ({:.1}% of scheduled: {}), p99 {} ms; timeouts {} (late {}, unanswered {}; timeout {} ms)",
        r.error_count(),
        r.refused_fraction() * 100.0,
        fmt_counts(&r.errors),
        fmt_ms(r.error_latency.percentile_ms(99.0)),
        r.timeouts(),
        r.late,
        r.unanswered,
        a.timeout_ms
    );
    println!(
        "the generator's own send lag: p50 {} ms, p99 {} ms (included in the latencies above)",
        fmt_ms(r.send_lag.percentile_ms(50.0)),
        fmt_ms(r.send_lag.percentile_ms(99.0))
    );
    for f in r.failures.iter().take(5) {
        println!("connection failure: {f}");
    }
    println!(
        "result: target_rps={:.0} achieved_rps={:.0} scheduled={} sent={} ok={} errors={} refused_pct={:.2} \
         error_prefixes={} timeouts={} late={} unanswered={} p50_ms={} p99_ms={} p999_ms={} max_ms={} \
         error_p99_ms={} send_lag_p99_ms={} failures={}",
        a.rate,
        r.achieved_rps(),
        r.scheduled,
        r.sent,
        r.ok,
        r.error_count(),
        r.refused_fraction() * 100.0,
        fmt_counts(&r.errors),
        r.timeouts(),
        r.late,
        r.unanswered,
        fmt_ms(r.latency.percentile_ms(50.0)),
        fmt_ms(r.latency.percentile_ms(99.0)),
        fmt_ms(r.latency.percentile_ms(99.9)),
        fmt_ms(r.latency.percentile_ms(100.0)),
        fmt_ms(r.error_latency.percentile_ms(99.0)),
        fmt_ms(r.send_lag.percentile_ms(99.0)),
        r.failures.len(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spaced() {
        let start = Instant::now();
        assert_eq!(scheduled_at(start, 0, 1000.0), start);
        assert_eq!(scheduled_at(start, 1000, 1000.0) - start, Duration::from_secs(1));
        assert_eq!(scheduled_at(start, 5, 20_000.0) - start, Duration::from_micros(250));
    }

    #[test]
    fn due_counts_the_requests_whose_time_has_come() {
        // request 0 is due at once, request k at k/rate
        assert_eq!(due_by(Duration::ZERO, 1000.0, 10_000), 1);
        assert_eq!(due_by(Duration::from_micros(999), 1000.0, 10_000), 1);
        assert_eq!(due_by(Duration::from_millis(1), 1000.0, 10_000), 2);
        assert_eq!(due_by(Duration::from_secs(2), 1000.0, 10_000), 2001);
        assert_eq!(due_by(Duration::from_secs(60), 1000.0, 10_000), 10_000);
    }

    #[test]
    fn pacer_hands_out_every_request_round_robin() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::unbounded_channel()).unzip();
        let start = Instant::now();
        let n = pace(start, 20_000.0, 100, Duration::from_micros(100), txs);
        assert_eq!(n, 100);
        let mut all = Vec::new();
        for (i, rx) in rxs.iter_mut().enumerate() {
            let mut mine = Vec::new();
            while let Ok(t) = rx.try_recv() {
                mine.push(t);
            }
            assert_eq!(mine.len(), if i == 0 { 34 } else { 33 });
            all.extend(mine);
        }
        all.sort();
        for (k, t) in all.iter().enumerate() {
            assert_eq!(*t, scheduled_at(start, k as u64, 20_000.0));
        }
    }

    #[test]
    fn random_keys_spread_over_the_keyspace() {
        let mut rng = Rng::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            seen.insert(rng.next() % 1000);
        }
        assert!(seen.len() > 990, "{}", seen.len());
    }

    #[test]
    fn report_arithmetic() {
        let mut r = RateReport { scheduled: 100, ok: 60, late: 5, ..RateReport::default() };
        r.errors.insert("TRYAGAIN".into(), 30);
        r.unanswered = 5;
        r.elapsed = Duration::from_secs(2);
        assert_eq!(r.error_count(), 30);
        assert_eq!(r.timeouts(), 10);
        assert!((r.achieved_rps() - 45.0).abs() < 1e-9);
        assert!((r.refused_fraction() - 0.3).abs() < 1e-9);
    }
}
