//! `vesta admin repl …`: cross-site replication, seen and steered through the sites' proxies.
//!
//! * `status --proxy ADDR` — what the shipping proxy of a site reports per peer (state, pending entries
//!   and bytes, lag, sent, errors).
//! * `pause|resume --proxy ADDR [--peer NAME]` — stop or resume shipping (nothing is lost while paused:
//!   the store nodes' change logs keep every write until the peer confirmed it, up to their bound).
//! * `sync --proxy ADDR [--peer NAME]` — a full sync of the peer (what a peer that fell behind the logs'
//!   bound gets by itself).
//! * `diff --site NAME=ADDR --site NAME=ADDR …` — every key of a database in every site, compared by
//!   value and TTL: what a client would read differently. A key deleted in one site and never written
//!   (or deleted too) in another reads the same — absent — in both.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Subcommand;
use redis::aio::MultiplexedConnection;
use redis::Value;

use super::progress::Progress;

#[derive(Subcommand)]
pub enum ReplAction {
    /// Per peer site: state, entries and bytes waiting, lag, entries and bytes sent, errors.
    Status {
        /// The RESP address of the site's shipping proxy.
        #[arg(long)]
        proxy: String,
    },
    /// Stop shipping to a peer site (or to all).
    Pause {
        #[arg(long)]
        proxy: String,
        /// The peer site's name; every peer when left out.
        #[arg(long)]
        peer: Option<String>,
    },
    /// Resume shipping to a peer site (or to all).
    Resume {
        #[arg(long)]
        proxy: String,
        #[arg(long)]
        peer: Option<String>,
    },
    /// Start a full sync of a peer site (or of all): every record of this site's own writes is sent
    /// again, then shipping resumes from the logs. Progress shows in `status`.
    Sync {
        #[arg(long)]
        proxy: String,
        #[arg(long)]
        peer: Option<String>,
    },
    /// Compare sites key by key (value, and TTL within a tolerance) through one proxy of each; prints
    /// every key that differs. Exit status 1 when some do.
    Diff {
        /// NAME=HOST:PORT of a proxy of each site; two or more.
        #[arg(long = "site", required = true, num_args = 1)]
        sites: Vec<SiteAddr>,
        /// The database (namespace) to compare.
        #[arg(long, default_value_t = 0)]
        db: u32,
        /// TTLs that differ by at most this much are equal (they were read at slightly different times).
        #[arg(long, default_value_t = 2000)]
        ttl_tolerance_ms: i64,
        /// Keys whose differences are printed at most (all are counted).
        #[arg(long, default_value_t = 100)]
        show: usize,
    },
}

#[derive(Clone, Debug)]
pub struct SiteAddr {
    name: String,
    addr: String,
}

impl std::str::FromStr for SiteAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((name, addr)) if !name.is_empty() && !addr.is_empty() => {
                Ok(SiteAddr { name: name.into(), addr: addr.into() })
            }
            _ => Err(format!("a site is NAME=HOST:PORT (a proxy of the site), not {s:?}")),
        }
    }
}

pub async fn run(action: ReplAction) -> Result<(), String> {
    {
        match action {
            ReplAction::Status { proxy } => {
                let mut c = connect(&proxy).await?;
                let lines = call(&mut c, &["VESTA.REPL", "STATUS"]).await?;
                for line in strings(&lines) {
                    match line.split_once(':') {
                        Some((field, value)) if field.starts_with("vesta_repl_peer") && field != "vesta_repl_peers" => {
                            println!("peer  {}", value.replace(',', "  "));
                            if let Some(bar) = sync_bar(value) {
                                println!("      full sync {bar}");
                            }
                        }
                        Some((field, value)) => println!("{:<9} {value}", field.trim_start_matches("vesta_repl_")),
                        None => println!("{line}"),
                    }
                }
                Ok(())
            }
            ReplAction::Pause { proxy, peer } => steer(&proxy, "PAUSE", peer).await,
            ReplAction::Resume { proxy, peer } => steer(&proxy, "RESUME", peer).await,
            ReplAction::Sync { proxy, peer } => steer(&proxy, "SYNC", peer).await,
            ReplAction::Diff { sites, db, ttl_tolerance_ms, show } => {
                if sites.len() < 2 {
                    return Err("diff compares two sites or more: give --site NAME=HOST:PORT for each".into());
                }
                let differing = diff(&sites, db, ttl_tolerance_ms, show).await?;
                if differing > 0 {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    }
}

/// `[#####-----] 345/1024 shards` for a peer whose state is `full_sync(345/1024 shards)`.
fn sync_bar(peer: &str) -> Option<String> {
    let inner = peer.split("state=full_sync(").nth(1)?.split(" shards)").next()?;
    let (done, total) = inner.split_once('/')?;
    let (done, total): (u64, u64) = (done.parse().ok()?, total.parse().ok()?);
    let filled = (done * 30).checked_div(total).unwrap_or(30).min(30) as usize;
    Some(format!("[{}{}] {done}/{total} shards", "#".repeat(filled), "-".repeat(30 - filled)))
}

async fn steer(proxy: &str, what: &str, peer: Option<String>) -> Result<(), String> {
    let mut c = connect(proxy).await?;
    let mut args = vec!["VESTA.REPL", what];
    if let Some(p) = &peer {
        args.push(p);
    }
    let n = call(&mut c, &args).await?;
    let n = if let Value::Int(n) = n { n } else { 0 };
    match what {
        "PAUSE" => println!("paused shipping to {n} peer site(s)"),
        "RESUME" => println!("resumed shipping to {n} peer site(s)"),
        _ => println!("full sync requested for {n} peer site(s); `vesta admin repl status` shows its progress"),
    }
    Ok(())
}

pub(super) async fn connect(addr: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://{addr}/")).map_err(|e| format!("{addr}: {e}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| format!("connect to {addr}: {e}"))
}

pub(super) async fn call(c: &mut MultiplexedConnection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.map_err(|e| e.to_string())
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::BulkString(b) => vec![String::from_utf8_lossy(b).into_owned()],
        Value::SimpleString(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A key as one site's clients read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    value: Option<Vec<u8>>,
    /// Milliseconds left, `None` for no expiry.
    ttl_ms: Option<i64>,
}

impl Seen {
    fn same(&self, other: &Seen, tolerance: i64) -> bool {
        self.value == other.value
            && match (self.ttl_ms, other.ttl_ms) {
                (None, None) => true,
                (Some(a), Some(b)) => (a - b).abs() <= tolerance,
                _ => false,
            }
    }

    fn show(&self) -> String {
        match (&self.value, self.ttl_ms) {
            (None, _) => "absent".into(),
            (Some(v), None) => format!("{:?}", String::from_utf8_lossy(v)),
            (Some(v), Some(ttl)) => format!("{:?} (ttl {ttl} ms)", String::from_utf8_lossy(v)),
        }
    }
}

const BATCH: usize = 200;

async fn diff(sites: &[SiteAddr], db: u32, tolerance: i64, show: usize) -> Result<usize, String> {
    let mut conns = Vec::new();
    let mut keys = BTreeSet::new();
    for s in sites {
        let mut c = connect(&s.addr).await?;
        call(&mut c, &["SELECT", &db.to_string()]).await.map_err(|e| format!("site {}: {e}", s.name))?;
        let found = scan(&mut c).await.map_err(|e| format!("site {}: {e}", s.name))?;
        eprintln!("site {}: {} keys", s.name, found.len());
        keys.extend(found);
        conns.push(c);
    }
    let keys: Vec<Vec<u8>> = keys.into_iter().collect();
    let mut progress = Progress::new("keys compared", keys.len() as u64);
    let mut differing = 0usize;
    for chunk in keys.chunks(BATCH) {
        let mut per_site = Vec::new();
        for (s, c) in sites.iter().zip(conns.iter_mut()) {
            per_site.push(read(c, chunk).await.map_err(|e| format!("site {}: {e}", s.name))?);
        }
        for (i, key) in chunk.iter().enumerate() {
            let first = &per_site[0][i];
            if per_site.iter().all(|seen| seen[i].same(first, tolerance)) {
                continue;
            }
            differing += 1;
            if differing <= show {
                let states: Vec<String> =
                    sites.iter().zip(&per_site).map(|(s, seen)| format!("{} {}", s.name, seen[i].show())).collect();
                // Above the progress line: a terminal's redraw starts on a fresh line.
                eprintln!();
                println!("{}: {}", String::from_utf8_lossy(key), states.join(" | "));
            }
        }
        for _ in chunk {
            progress.finish_one();
        }
    }
    progress.done();
    println!("{} keys compared in {} sites: {differing} differ", keys.len(), sites.len());
    Ok(differing)
}

/// How long a page may keep failing with a retryable error (`CLUSTERDOWN`, `TRYAGAIN`) before the diff
/// gives up: a store node busy compacting after a burst of writes can be slow for a while.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Runs `query` until it succeeds, retrying errors a Vesta proxy calls transient for up to [`RETRY_FOR`].
async fn retrying<T, F, Fut>(what: &str, mut query: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match query().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let text = e.to_string();
                let transient =
                    text.contains("CLUSTERDOWN") || text.contains("ClusterDown") || text.contains("TRYAGAIN");
                if !transient || started.elapsed() > RETRY_FOR {
                    return Err(text);
                }
                eprintln!("{what}: {text}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn scan(c: &mut MultiplexedConnection) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let reply: Value = retrying("SCAN", || {
            let (mut c, cursor) = (c.clone(), cursor.clone());
            async move { redis::cmd("SCAN").arg(&cursor).arg("COUNT").arg(1000).query_async(&mut c).await }
        })
        .await?;
        let Value::Array(parts) = reply else { return Err(format!("SCAN answered {reply:?}")) };
        let [Value::BulkString(next), Value::Array(found)] = &parts[..] else {
            return Err(format!("SCAN answered {parts:?}"));
        };
        keys.extend(found.iter().filter_map(|k| if let Value::BulkString(k) = k { Some(k.clone()) } else { None }));
        if next.as_slice() == b"0" {
            return Ok(keys);
        }
        cursor = next.clone();
    }
}

/// GET and PTTL of every key, pipelined.
async fn read(c: &mut MultiplexedConnection, keys: &[Vec<u8>]) -> Result<Vec<Seen>, String> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
    }
    let replies: Vec<Value> = retrying("GET/PTTL", || {
        let (mut c, pipe) = (c.clone(), pipe.clone());
        async move { pipe.query_async(&mut c).await }
    })
    .await?;
    Ok(replies
        .chunks(2)
        .map(|pair| {
            let value = match &pair[0] {
                Value::BulkString(v) => Some(v.clone()),
                _ => None,
            };
            let ttl_ms = match pair.get(1) {
                Some(Value::Int(ms)) if *ms >= 0 && value.is_some() => Some(*ms),
                _ => None,
            };
            Seen { value, ttl_ms }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_within_the_tolerance_are_the_same() {
        let a = Seen { value: Some(b"v".to_vec()), ttl_ms: Some(10_000) };
        assert!(a.same(&Seen { ttl_ms: Some(9_000), ..a.clone() }, 2000));
        assert!(!a.same(&Seen { ttl_ms: Some(5_000), ..a.clone() }, 2000));
        assert!(!a.same(&Seen { ttl_ms: None, ..a.clone() }, 2000));
        assert!(!a.same(&Seen { value: None, ttl_ms: None }, 2000));
        assert!("a".parse::<SiteAddr>().is_err() && "a=h:1".parse::<SiteAddr>().is_ok());
        let bar = sync_bar("name=b,origin=2,state=full_sync(512/1024 shards),pending_entries=0").unwrap();
        assert_eq!(bar, format!("[{}{}] 512/1024 shards", "#".repeat(15), "-".repeat(15)));
        assert_eq!(sync_bar("name=b,state=connected"), None);
    }
}
