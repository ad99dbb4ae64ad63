//! INFO's `# Keyspace` section: `dbN:keys=…,expires=…,avg_ttl=…` for every non-empty database.
//!
//! Vesta has no key count at hand: the figures come from one walk of every shard (what DBSIZE does,
//! for all databases at once, keys only, no values), which costs O(keys). So they are cached: an INFO
//! within a few seconds of the last walk (at least 5 s, and ten times as long as that walk took)
//! reports the cached figures, and only one walk runs at a time. `avg_ttl` is the mean remaining
//! time to live, in ms, of the keys that have one. If a walk fails (store nodes out of reach), INFO
//! reports the last figures it had.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::DATABASES;
use crate::coordinator::{CoordError, Coordinator, ScanRequest};

/// The least time a walk's figures are reused for.
const MIN_REUSE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct KeyspaceFigures {
    /// When the last walk ended, how long it took, and the section it produced.
    last: parking_lot::Mutex<Option<(Instant, Duration, String)>>,
    /// Held while a walk runs: INFOs arriving meanwhile wait for it and reuse its figures.
    walking: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Db {
    keys: u64,
    expires: u64,
    ttl_sum_ms: u128,
}

impl KeyspaceFigures {
    /// The section, if the last walk is recent enough to reuse.
    pub fn fresh(&self) -> Option<String> {
        let last = self.last.lock();
        let (at, took, text) = last.as_ref()?;
        (at.elapsed() < MIN_REUSE.max(*took * 10)).then(|| text.clone())
    }

    pub fn is_fresh(&self) -> bool {
        self.last.lock().as_ref().is_some_and(|(at, took, _)| at.elapsed() < MIN_REUSE.max(*took * 10))
    }

    /// The section from a new walk (or the fresh figures another walk just produced).
    pub async fn section(&self, coordinator: &Arc<Coordinator>) -> String {
        let _walking = self.walking.lock().await;
        if let Some(text) = self.fresh() {
            return text;
        }
        let started = Instant::now();
        match walk(coordinator).await {
            Ok(text) => {
                *self.last.lock() = Some((Instant::now(), started.elapsed(), text.clone()));
                text
            }
            Err(e) => {
                // Reused like a walk's figures, so that INFOs do not each wait out a failing walk.
                tracing::debug!(error = %e, "INFO keyspace: the walk over the shards failed; last figures reported");
                let mut last = self.last.lock();
                let text = last.as_ref().map_or_else(|| "# Keyspace\r\n".to_string(), |(_, _, t)| t.clone());
                *last = Some((Instant::now(), started.elapsed(), text.clone()));
                text
            }
        }
    }

    /// Forgets the figures (FLUSHALL, tests): the next INFO walks again.
    pub fn forget(&self) {
        *self.last.lock() = None;
    }
}

/// Keys a walk holds at once: it goes page by page, counting, so that its memory does not grow with
/// the key space.
const PAGE: usize = 10_000;

async fn walk(coordinator: &Arc<Coordinator>) -> Result<String, CoordError> {
    let mut dbs: BTreeMap<u32, Db> = BTreeMap::new();
    let mut from_shard = 0;
    loop {
        let page = coordinator
            .scan(&ScanRequest {
                namespace: None,
                from_shard,
                want: PAGE,
                want_values: false,
                include_dead: false,
                node_timeout: None,
            })
            .await?;
        let now = coordinator.now_ms();
        for (namespace, _, record) in &page.keys {
            let Some(db) = std::str::from_utf8(namespace).ok().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if db >= DATABASES {
                continue;
            }
            let figures = dbs.entry(db).or_default();
            figures.keys += 1;
            if record.meta.expires_at != 0 {
                figures.expires += 1;
                figures.ttl_sum_ms += u128::from(record.meta.expires_at.saturating_sub(now));
            }
        }
        match page.next_shard {
            Some(next) => from_shard = next,
            None => return Ok(render(&dbs)),
        }
    }
}

/// The section, ending without a blank line as Redis's last section does (it is INFO's last).
fn render(dbs: &BTreeMap<u32, Db>) -> String {
    let mut text = String::from("# Keyspace\r\n");
    for (db, f) in dbs.iter().filter(|(_, f)| f.keys > 0) {
        let avg_ttl = if f.expires > 0 { f.ttl_sum_ms / u128::from(f.expires) } else { 0 };
        text += &format!("db{db}:keys={},expires={},avg_ttl={avg_ttl}\r\n", f.keys, f.expires);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_line_format() {
        let mut dbs = BTreeMap::new();
        dbs.insert(0, Db { keys: 3, expires: 2, ttl_sum_ms: 3000 });
        dbs.insert(2, Db::default());
        dbs.insert(5, Db { keys: 1, expires: 0, ttl_sum_ms: 0 });
        assert_eq!(
            render(&dbs),
            "# Keyspace\r\ndb0:keys=3,expires=2,avg_ttl=1500\r\ndb5:keys=1,expires=0,avg_ttl=0\r\n"
        );
    }
}
