//! `vesta admin reencrypt`: after a rotation (a new current key in every proxy's key ring), rewrites
//! every record still under an older key — or stored in the clear from before encryption — under the
//! current key, online, shard by shard through one proxy (`VESTA.REENCRYPT`), then counts the records
//! per key id and says which keys may be retired. Interrupted, it resumes from its state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::Value;

use super::progress::Progress;
use super::repl::{call, connect};

#[derive(clap::Args)]
pub struct ReencryptFlags {
    /// A proxy of the site, HOST:PORT (with the new key ring).
    #[arg(long)]
    proxy: String,
    /// At most this many records rewritten per second (0: no limit).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Records looked at per call to the proxy.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Where progress is kept; a run with the same file resumes where the last one stopped.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Rewrite nothing: only count the records per key id.
    #[arg(long)]
    usage_only: bool,
}

/// Where a run is: the key it rewrites under, the shard, the offset in it, records rewritten so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct State {
    current: i64,
    shard: u64,
    offset: u64,
    rewritten: u64,
}

impl State {
    fn load(path: &Path, current: i64) -> Result<State, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State { current, ..State::default() }),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let n: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        match n.as_slice() {
            // A state for another current key is from an earlier rotation: start over.
            [k, shard, offset, rewritten] if *k as i64 == current => {
                Ok(State { current, shard: *shard, offset: *offset, rewritten: *rewritten })
            }
            [_, _, _, _] => Ok(State { current, ..State::default() }),
            _ => Err(format!("{} is not a reencrypt state file (KEY SHARD OFFSET REWRITTEN)", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{} {} {} {}\n", self.current, self.shard, self.offset, self.rewritten))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(items) => items.iter().filter_map(int).collect(),
        _ => Vec::new(),
    }
}

/// One page's answer: next offset (`None`: shard done), rewritten, changed, failed, records per key id.
struct Page {
    next: Option<u64>,
    rewritten: u64,
    changed: u64,
    failed: u64,
    by_key: Vec<(i64, u64)>,
}

fn page(v: &Value) -> Result<Page, String> {
    let bad = || format!("unexpected VESTA.REENCRYPT reply: {v:?}");
    let Value::Array(items) = v else { return Err(bad()) };
    let [next, rewritten, changed, failed, by_key] = items.as_slice() else { return Err(bad()) };
    let n = |v: &Value| int(v).ok_or_else(bad);
    let pairs = ints(by_key);
    Ok(Page {
        next: u64::try_from(n(next)?).ok(),
        rewritten: n(rewritten)?.max(0) as u64,
        changed: n(changed)?.max(0) as u64,
        failed: n(failed)?.max(0) as u64,
        by_key: pairs.chunks(2).filter(|p| p.len() == 2).map(|p| (p[0], p[1].max(0) as u64)).collect(),
    })
}

pub async fn run(flags: ReencryptFlags) -> Result<(), String> {
    let mut c = connect(&flags.proxy).await?;
    let keys = ints(&call(&mut c, &["VESTA.REENCRYPT", "KEYS"]).await?);
    let (shards, current, ring) = match keys.as_slice() {
        [shards, current, ring @ ..] => (*shards as u64, *current, ring.to_vec()),
        _ => return Err("unexpected VESTA.REENCRYPT KEYS reply".into()),
    };
    if current == 0 && !flags.usage_only {
        return Err(format!("encryption is off on {}: start the proxies with the key ring first", flags.proxy));
    }
    if !flags.usage_only {
        println!("re-encrypting under key {current} through {} ({shards} shards)", flags.proxy);
        rewrite(&mut c, &flags, shards, current).await?;
    }
    let usage = usage(&mut c, shards, flags.batch).await?;
    println!("records per key id:");
    let mut ids: Vec<i64> = ring.clone();
    ids.extend(usage.keys().copied());
    ids.sort_unstable();
    ids.dedup();
    let mut remaining = 0;
    for id in ids {
        let n = usage.get(&id).copied().unwrap_or(0);
        let note = match (id, n) {
            (0, 0) => continue,
            (0, _) => "stored in the clear (from before encryption was on)",
            (id, _) if id == current => "current",
            (_, 0) => "no record uses it: may be retired",
            (id, _) if !ring.contains(&id) => "NOT in the proxy's key ring: these records cannot be read",
            _ => "still in use: run reencrypt again before retiring it",
        };
        if id != current {
            remaining += n;
        }
        println!("  key {id:>4}  {n:>10} records  {note}");
    }
    if remaining > 0 {
        println!("{remaining} record(s) remain under old keys (or in the clear); expired ones go when compaction purges them");
    } else {
        println!("every record is under key {current}");
    }
    Ok(())
}

async fn rewrite(
    c: &mut redis::aio::MultiplexedConnection,
    flags: &ReencryptFlags,
    shards: u64,
    current: i64,
) -> Result<(), String> {
    let mut state = match &flags.state {
        Some(p) => State::load(p, current)?,
        None => State { current, ..State::default() },
    };
    if state.shard > 0 || state.offset > 0 {
        println!("resuming at shard {} (record {}), {} rewritten before", state.shard, state.offset, state.rewritten);
    }
    let mut bar = Progress::new("shards", shards);
    bar.resume(state.shard, state.rewritten, 0);
    let started = Instant::now();
    let (mut this_run, mut changed, mut failed) = (0u64, 0u64, 0u64);
    while state.shard < shards {
        let args = [state.shard.to_string(), state.offset.to_string(), flags.batch.to_string()];
        let reply = call(c, &["VESTA.REENCRYPT", args[0].as_str(), args[1].as_str(), args[2].as_str()]).await?;
        let p = page(&reply)?;
        state.rewritten += p.rewritten;
        this_run += p.rewritten;
        changed += p.changed;
        failed += p.failed;
        match p.next {
            Some(next) => state.offset = next,
            None => {
                state.shard += 1;
                state.offset = 0;
                bar.finish_one();
            }
        }
        bar.add(p.rewritten, 0);
        if let Some(path) = &flags.state {
            state.save(path)?;
        }
        if flags.rate > 0 {
            let due = Duration::from_secs_f64(this_run as f64 / flags.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    bar.done();
    println!(
        "rewrote {this_run} record(s) in {:.1} s ({} in all); {changed} changed meanwhile (a newer write already uses the current key); {failed} failed",
        started.elapsed().as_secs_f64(),
        state.rewritten
    );
    Ok(())
}

/// Records per key id over every shard (0: in the clear).
async fn usage(
    c: &mut redis::aio::MultiplexedConnection,
    shards: u64,
    batch: u64,
) -> Result<BTreeMap<i64, u64>, String> {
    let mut bar = Progress::new("shards counted", shards);
    let mut usage = BTreeMap::new();
    let count = batch.max(1) * 1000;
    for shard in 0..shards {
        let mut offset = 0;
        loop {
            let args = [shard.to_string(), offset.to_string(), count.to_string()];
            let reply =
                call(c, &["VESTA.REENCRYPT", args[0].as_str(), args[1].as_str(), args[2].as_str(), "DRYRUN"]).await?;
            let p = page(&reply)?;
            for (id, n) in p.by_key {
                *usage.entry(id).or_default() += n;
            }
            match p.next {
                Some(next) => offset = next,
                None => break,
            }
        }
        bar.finish_one();
    }
    bar.done();
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_resumes_only_under_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        assert_eq!(State::load(&path, 2).unwrap(), State { current: 2, ..State::default() });
        State { current: 2, shard: 7, offset: 500, rewritten: 9 }.save(&path).unwrap();
        assert_eq!(State::load(&path, 2).unwrap(), State { current: 2, shard: 7, offset: 500, rewritten: 9 });
        assert_eq!(State::load(&path, 3).unwrap(), State { current: 3, ..State::default() });
        std::fs::write(&path, "garbage").unwrap();
        assert!(State::load(&path, 2).is_err());
    }
}
