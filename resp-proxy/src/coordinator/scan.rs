//! Key-space fan-out (SCAN, KEYS, DBSIZE, RANDOMKEY, FLUSHDB): walk the shards in order, reading each
//! from a read quorum of its storage group.
//!
//! A key is committed on at least W replicas and R replicas are read, with W + R > N: every key that
//! exists throughout a walk is seen by at least one of them. Copies are merged per key (the newest by
//! HLC wins, so a delete seen on one replica beats a stale live copy on another). A walk advances a whole
//! shard at a time, which is what lets a SCAN cursor be a plain shard number.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use vesta_proto::{Record, Request, Response, Scan, ScanEntry};

use super::{CoordError, Coordinator};
use crate::topology::NodeIndex;

/// Largest page asked of a node.
const PAGE: usize = 1_000;
/// Smallest page asked: even a walk that wants one key (RANDOMKEY, SCAN COUNT 1) must cross runs of
/// tombstones and other databases' keys in few round trips.
const MIN_PAGE: usize = 256;

#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Only this namespace (database); `None`: all of them (FLUSHALL).
    pub namespace: Option<Bytes>,
    pub from_shard: u32,
    /// Stop after the shard in which this many keys have been seen (a hint, like Redis's COUNT).
    pub want: usize,
    pub want_values: bool,
    /// Also the keys whose newest copy is a tombstone or expired (with that copy): a full sync of
    /// another site must carry deletes and expiries too.
    pub include_dead: bool,
    /// How long one store node may take per page; `None`: the proxy's per-node timeout. A background
    /// walk (a full sync) can wait longer than a client's SCAN: a page over keys overwritten many times
    /// since the last compaction may take a store node a while.
    pub node_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Default)]
pub struct ScanPage {
    /// Live keys (all keys with `include_dead`) as (namespace, key, newest copy), in shard order.
    pub keys: Vec<(Bytes, Bytes, Record)>,
    /// Where the next walk starts; `None` when every shard has been walked.
    pub next_shard: Option<u32>,
}

impl Coordinator {
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// Walks shards from `from_shard` until `want` keys have been seen or the last shard is done.
    pub async fn scan(self: &Arc<Self>, req: &ScanRequest) -> Result<ScanPage, CoordError> {
        let shards = self.shard_count();
        let deadline = tokio::time::Instant::now() + self.settings.deadline;
        let mut attempt = 0;
        let mut shard = req.from_shard;
        let mut keys = Vec::new();
        while shard < shards && keys.len() < req.want {
            // Consecutive shards on the same storage group are walked with one request stream.
            let map = self.map();
            let group = map.storage_group(shard);
            let mut end = shard + 1;
            while end < shards && map.storage_group(end) == group {
                end += 1;
            }
            match self.scan_group(group, shard, end, req, req.want - keys.len()).await {
                Ok((found, done_to)) => {
                    keys.extend(found);
                    shard = done_to;
                }
                // The group's shards are moving: walk them again on the next map.
                Err(CoordError::Moved) if tokio::time::Instant::now() < deadline => {
                    super::after_moved(self, attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ScanPage { keys, next_shard: (shard < shards).then_some(shard) })
    }

    /// Reads shards `from..to` (one storage group) on R replicas; returns the merged live keys of the
    /// shards finished and the first shard not finished.
    pub(super) async fn scan_group(
        self: &Arc<Self>,
        group: &[NodeIndex],
        from: u32,
        to: u32,
        req: &ScanRequest,
        want: usize,
    ) -> Result<(Vec<(Bytes, Bytes, Record)>, u32), CoordError> {
        let r = self.settings.read_quorum;
        let start = rand::random::<u32>() as usize % group.len();
        let mut spare = (0..group.len()).map(|i| group[(start + i) % group.len()]);
        let walk = |node: NodeIndex| {
            let this = self.clone();
            let req = req.clone();
            async move { this.scan_replica(node, from, to, &req, want).await }
        };
        let mut pending: FuturesUnordered<_> = spare.by_ref().take(r).map(walk).collect();
        let mut replies = Vec::new();
        let mut moved = false;
        while replies.len() < r {
            match pending.next().await {
                Some(Ok(reply)) => replies.push(reply),
                Some(Err(not_owner)) => {
                    moved |= not_owner;
                    if let Some(next) = spare.next() {
                        pending.push(walk(next));
                    }
                }
                None => break,
            }
        }
        if replies.len() < r {
            if moved {
                return Err(CoordError::Moved);
            }
            return Err(CoordError::Unavailable { reached: replies.len(), needed: r });
        }
        // Replicas may have stopped at different shards; only shards every one of them finished count.
        let done_to = replies.iter().map(|(_, d)| *d).min().unwrap_or(to);
        let mut merged: HashMap<(Bytes, Bytes), (u32, Record)> = HashMap::new();
        for e in replies.into_iter().flat_map(|(entries, _)| entries) {
            if e.shard >= done_to {
                continue;
            }
            let slot = merged.entry((e.namespace, e.key)).or_insert((e.shard, e.record.clone()));
            if e.record.meta.order() > slot.1.meta.order() {
                slot.1 = e.record;
            }
        }
        // The newest copy decides: a key whose newest copy is a tombstone or has expired is not listed,
        // whatever an older copy on another replica says.
        let now = self.now_ms();
        let mut live: Vec<_> = merged
            .into_iter()
            .filter(|(_, (_, r))| req.include_dead || r.meta.live_at(now))
            .map(|((ns, key), (shard, record))| (shard, ns, key, record))
            .collect();
        live.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
        Ok((live.into_iter().map(|(_, ns, key, record)| (ns, key, record)).collect(), done_to))
    }

    /// One replica's entries (tombstones included) of shards `from..` until `want` have been seen in
    /// whole shards; returns them and the first shard not finished. `Err(not_owner)`: the replica failed,
    /// `true` when because it no longer serves the shards.
    async fn scan_replica(
        self: &Arc<Self>,
        node: NodeIndex,
        from: u32,
        to: u32,
        req: &ScanRequest,
        want: usize,
    ) -> Result<(Vec<ScanEntry>, u32), bool> {
        let mut entries: Vec<ScanEntry> = Vec::new();
        let mut after = None;
        loop {
            let scan = Request::Scan(Scan {
                shard_from: from,
                shard_to: to,
                after: after.take(),
                limit: want.clamp(MIN_PAGE, PAGE) as u32,
                namespace: req.namespace.clone(),
                include_dead: true,
                want_values: req.want_values,
            });
            let timeout = req.node_timeout.unwrap_or_else(|| self.pool.timeout());
            let page = match self.pool.call_within(node, scan, timeout).await {
                Ok(Response::Scan(page)) => page,
                Ok(Response::Reply(r)) if r.status == vesta_proto::Status::NotOwner => return Err(true),
                _ => return Err(false),
            };
            let next_shard = page.next_shard();
            entries.extend(page.entries);
            let Some(next_shard) = next_shard else { return Ok((entries, to)) };
            if next_shard > from {
                let whole = entries.iter().filter(|e| e.shard < next_shard).count();
                if whole >= want {
                    entries.retain(|e| e.shard < next_shard);
                    return Ok((entries, next_shard));
                }
            }
            after = page.next;
        }
    }
}
