//! `vesta admin import`: migration in from Redis, through a Vesta proxy, with the clients Redis's own
//! tools are (RedisShake, Kvrocks's migration tools, Redis Enterprise's "Replica Of").
//!
//! * `--rdb dump.rdb` loads an RDB file (as `SAVE`/`BGSAVE` write it, RDB 1 to 13): every string with its
//!   TTL, database `N` into the namespace `SELECT N` reaches. Rate-limited, with a progress line, and
//!   resumable (`--resume-file` remembers how many keys of the file are done).
//! * `--from redis://host:port` syncs live, as a replica does: a full resynchronisation (the RDB the
//!   master sends, loaded as above), then the master's command stream, applied in order until Ctrl-C or
//!   SIGTERM, with the lag on the progress line — so clients can be switched over with no downtime.
//!
//! Vesta stores only strings: keys of other types, and commands on them, are counted per type (per
//! command) and reported at the end, never dropped silently.

mod proxy;
mod rdb_source;
mod replica;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct ImportFlags {
    /// An RDB file written by Redis (`SAVE`, `BGSAVE`, `redis-cli --rdb`), RDB version 1 to 13.
    #[arg(long, required_unless_present = "from", conflicts_with = "from")]
    pub rdb: Option<PathBuf>,
    /// A running Redis to sync from live, as its replica: `redis://[[USER]:PASSWORD@]HOST:PORT`.
    #[arg(long)]
    pub from: Option<String>,
    /// The Vesta proxy to write through, HOST:PORT (plain TCP).
    #[arg(long)]
    pub proxy: String,
    /// AUTH to the proxy as this user (with --proxy-password; without, as `default`).
    #[arg(long, env = "VESTA_PROXY_USER", requires = "proxy_password")]
    pub proxy_user: Option<String>,
    /// AUTH to the proxy with this password.
    #[arg(long, env = "VESTA_PROXY_PASSWORD", hide_env_values = true)]
    pub proxy_password: Option<String>,
    /// At most this many writes per second, e.g. `5000` or `5000/s` (0: no limit).
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub rate: u64,
    /// Where an `--rdb` import keeps how far it got; a rerun with the same file skips the keys done.
    #[arg(long, requires = "rdb")]
    pub resume_file: Option<PathBuf>,
    /// Writes sent to the proxy per pipelined round trip.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    n.parse().map_err(|_| format!("expected writes per second (`5000` or `5000/s`), not {s:?}"))
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the RDB data is not readable: {0}")]
    Rdb(#[from] rdb::RdbError),
    #[error("the RDB checksum is wrong (computed {computed:016x}, the file says {stored:016x}): the dump is damaged")]
    Checksum { computed: u64, stored: u64 },
    #[error("the proxy {addr}: {message}")]
    Proxy { addr: String, message: String },
    #[error("Redis at {addr}: {message}")]
    Master { addr: String, message: String },
    #[error("{0}")]
    Resume(String),
    #[error("{0}")]
    BadSource(String),
    #[error("interrupted; the keys done so far are written")]
    Interrupted,
}

impl ImportError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImportError {
        let what = what.into();
        move |source| ImportError::Io { what, source }
    }
}

/// One string of the source, as the proxy receives it.
#[derive(Debug, Clone)]
pub struct StringKey {
    pub db: u32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Unix ms, `None`: no expiry.
    pub expires_at: Option<u64>,
}

/// What an import did, reported at its end.
#[derive(Debug, Default)]
pub struct Tally {
    /// Strings written, per database.
    pub written: BTreeMap<u32, u64>,
    pub bytes: u64,
    /// Strings whose TTL had passed: Redis would not serve them, so nothing is written.
    pub expired: u64,
    /// Strings a resumed import had written before.
    pub resumed: u64,
    /// Keys of other types, per type (`hash`, `list`, …).
    pub other_types: BTreeMap<&'static str, u64>,
    /// Live sync: commands applied, and those not applied (other types) per command name.
    pub applied: u64,
    pub not_applied: BTreeMap<String, u64>,
    /// Live sync: commands the proxy answered with an error, per error code, with the first messages.
    pub refused: BTreeMap<String, u64>,
    pub refusals_shown: Vec<String>,
}

impl Tally {
    fn report(&self) {
        let total: u64 = self.written.values().sum();
        let per_db: Vec<String> = self.written.iter().map(|(db, n)| format!("db{db} {n}")).collect();
        println!(
            "strings imported: {total} ({}){}",
            super::progress::human_bytes(self.bytes as f64),
            if per_db.is_empty() { String::new() } else { format!(": {}", per_db.join(", ")) }
        );
        if self.resumed > 0 {
            println!("strings before the resume point (done by an earlier run): {}", self.resumed);
        }
        println!("strings skipped, already expired: {}", self.expired);
        if self.other_types.is_empty() {
            println!("keys of other types: 0");
        } else {
            let list: Vec<String> = self.other_types.iter().map(|(t, n)| format!("{t} {n}")).collect();
            println!(
                "keys of other types NOT imported (Vesta stores only strings): {} ({})",
                self.other_types.values().sum::<u64>(),
                list.join(", ")
            );
        }
        if self.applied > 0 || !self.not_applied.is_empty() || !self.refused.is_empty() {
            println!("replication commands applied: {}", self.applied);
            if !self.not_applied.is_empty() {
                let list: Vec<String> = self.not_applied.iter().map(|(c, n)| format!("{c} {n}")).collect();
                println!(
                    "replication commands NOT applied (other types, or not supported by Vesta): {} ({})",
                    self.not_applied.values().sum::<u64>(),
                    list.join(", ")
                );
            }
        }
        if !self.refused.is_empty() {
            let list: Vec<String> = self.refused.iter().map(|(c, n)| format!("{c} {n}")).collect();
            println!(
                "writes the proxy REFUSED: {} ({}); the data may differ for those keys:",
                self.refused.values().sum::<u64>(),
                list.join(", ")
            );
            for r in &self.refusals_shown {
                println!("  {r}");
            }
        }
    }

    fn refuse(&mut self, what: String, error: &str) {
        let code = error.split_whitespace().next().unwrap_or("ERR").to_string();
        *self.refused.entry(code).or_default() += 1;
        if self.refusals_shown.len() < 10 {
            self.refusals_shown.push(format!("{what}: {error}"));
        }
    }
}

/// Paces writes to `--rate` per second.
pub struct Pacer {
    rate: u64,
    started: Instant,
    sent: u64,
}

impl Pacer {
    pub fn new(rate: u64) -> Self {
        Pacer { rate, started: Instant::now(), sent: 0 }
    }

    /// Counts `n` writes, first waiting as long as sending them now would exceed the rate.
    pub fn take(&mut self, n: u64) {
        self.sent += n;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub async fn run(flags: ImportFlags) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let job = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut tally = Tally::default();
            let result = match (&flags.rdb, &flags.from) {
                (Some(path), _) => rdb_source::import_file(&flags, path, &stop, &mut tally),
                (None, Some(url)) => replica::sync(&flags, url, &stop, &mut tally),
                (None, None) => Err(ImportError::BadSource("give --rdb FILE or --from redis://HOST:PORT".into())),
            };
            (result, tally)
        })
    };
    tokio::pin!(job);
    let joined = tokio::select! {
        j = &mut job => j,
        _ = crate::shutdown_signal() => {
            // The import stops at its next batch: what was acknowledged stays counted and checkpointed.
            stop.store(true, Ordering::SeqCst);
            job.await
        }
    };
    let (result, tally) = joined.map_err(|e| format!("the import stopped unexpectedly: {e}"))?;
    tally.report();
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_with_or_without_per_second() {
        assert_eq!(parse_rate("5000/s"), Ok(5000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn the_pacer_holds_the_rate() {
        let mut p = Pacer::new(1000);
        let t = Instant::now();
        for _ in 0..10 {
            p.take(20);
        }
        // 200 writes at 1000/s take 0.2 s.
        assert!(t.elapsed() >= Duration::from_millis(190), "{:?}", t.elapsed());
    }
}
