//! One shard's writes, read from the change logs of its replicas, in order and each once.
//!
//! A write is acknowledged once W of the shard's N replicas committed it, and each of those logged it
//! in the same engine batch (`store/src/changelog.rs`). So the logs of any N − W + 1 replicas together
//! hold every acknowledged write: a feed reads that many (`reads`), skipping replicas that do not answer
//! for others that do, merges their entries by the order of copies and drops the duplicates (the same
//! commit logged on several replicas).
//!
//! Each replica's log is read only up to its *closed timestamp* — below it nothing can still be logged
//! there — and the feed hands on entries only up to the smallest closed timestamp of the replicas it
//! read: its *watermark*. Everything at or below the watermark has then been seen, so a sender that
//! confirmed a watermark with the peer site can be replaced by another that starts there
//! ([`ShardFeed::resume`]) without losing or re-sending anything before it.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use vesta_proto::{LogEntry, LogPage, Order, ReadLog, Record};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("only {answered} of the {needed} replicas needed answered for shard {shard}: {last_error}")]
    TooFewReplicas { shard: u32, answered: usize, needed: usize, last_error: String },
}

/// A replica's change log (a store node, over the internal protocol or in process).
pub trait LogSource {
    fn read_log(&self, request: ReadLog) -> impl Future<Output = Result<LogPage, String>> + Send;
}

impl LogSource for vesta_proto::client::NodeConnection {
    async fn read_log(&self, request: ReadLog) -> Result<LogPage, String> {
        match self.call(vesta_proto::Request::ReadLog(request)).await {
            Ok(vesta_proto::Response::Log(page)) => Ok(page),
            Ok(vesta_proto::Response::Reply(r)) => Err(format!("{}: {}", r.status.as_str(), r.message)),
            Ok(other) => Err(format!("unexpected answer to read_log: {}", other.status().as_str())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What one [`ShardFeed::poll`] hands on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shipment {
    /// Writes stamped above the previous watermark and at or below `watermark`, in the order of copies
    /// (ties between keys of one multi-key write by key), each once.
    pub entries: Vec<LogEntry>,
    /// Every acknowledged write of the shard stamped at or below this HLC has been handed on.
    pub watermark: u64,
}

/// Where a replica's log is being read from.
#[derive(Debug, Clone)]
struct Cursor {
    after: Option<Bytes>,
}

pub struct ShardFeed<S> {
    shard: u32,
    /// Every replica of the shard, in the order they are preferred.
    sources: Vec<S>,
    /// How many replicas' logs are read: N − W + 1.
    reads: usize,
    watermark: u64,
    /// Per source: where its log is read from, while it is one of those read.
    cursors: Vec<Option<Cursor>>,
    /// Entries seen above the watermark, waiting for it to pass them.
    waiting: BTreeMap<(Order, Bytes, Bytes), Record>,
    page_limit: u32,
    /// The most entries one poll reads from one replica: after a long outage a shard's backlog is
    /// shipped in steps instead of being held in memory at once.
    poll_limit: usize,
}

impl<S: LogSource> ShardFeed<S> {
    /// A feed of `shard` from its start, reading `reads` (N − W + 1) of `sources`.
    pub fn new(shard: u32, sources: Vec<S>, reads: usize) -> Self {
        Self::resume(shard, sources, reads, 0)
    }

    /// A feed that starts after `watermark` (one a peer site confirmed).
    pub fn resume(shard: u32, sources: Vec<S>, reads: usize, watermark: u64) -> Self {
        let cursors = sources.iter().map(|_| None).collect();
        ShardFeed {
            shard,
            sources,
            reads,
            watermark,
            cursors,
            waiting: BTreeMap::new(),
            page_limit: 1_000,
            poll_limit: 10_000,
        }
    }

    /// Reads at most `entries` from each replica per poll (and pages of at most that many).
    pub fn with_poll_limit(mut self, entries: usize) -> Self {
        self.poll_limit = entries.max(1);
        self.page_limit = self.page_limit.min(self.poll_limit as u32);
        self
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Entries read but not handed on yet (above the watermark).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Reads what the replicas have logged since the last poll and hands on what is now complete. If
    /// fewer than `reads` replicas answer, nothing is handed on (the watermark cannot be known).
    pub async fn poll(&mut self) -> Result<Shipment, FeedError> {
        let mut closed = Vec::with_capacity(self.reads);
        let mut last_error = String::new();
        for i in 0..self.sources.len() {
            if closed.len() == self.reads {
                // Not read this time: if it is needed again, it starts from the watermark.
                self.cursors[i] = None;
                continue;
            }
            match self.read_all(i).await {
                Ok(c) => closed.push(c),
                Err(e) => {
                    self.cursors[i] = None;
                    last_error = e;
                }
            }
        }
        if closed.len() < self.reads {
            return Err(FeedError::TooFewReplicas {
                shard: self.shard,
                answered: closed.len(),
                needed: self.reads,
                last_error,
            });
        }
        let watermark = closed.into_iter().min().unwrap_or(self.watermark).max(self.watermark);
        let rest = self.waiting.split_off(&(
            Order { hlc: watermark.saturating_add(1), origin: 0, writer: Default::default() },
            Bytes::new(),
            Bytes::new(),
        ));
        let ready = std::mem::replace(&mut self.waiting, rest);
        self.watermark = watermark;
        let entries =
            ready.into_iter().map(|((_, namespace, key), record)| LogEntry { namespace, key, record }).collect();
        Ok(Shipment { entries, watermark })
    }

    /// Reads source `i`'s log up to its closed timestamp into `waiting`; returns that timestamp. If the
    /// poll limit stops it first, returns how far it is complete instead: below the last entry read
    /// (others may share that entry's HLC and come later).
    async fn read_all(&mut self, i: usize) -> Result<u64, String> {
        let mut cursor = self.cursors[i].take().unwrap_or(Cursor { after: None });
        let mut read = 0usize;
        loop {
            let request = ReadLog {
                shard: self.shard,
                after: cursor.after.clone(),
                since_hlc: self.watermark.saturating_add(1),
                limit: self.page_limit,
            };
            let page = self.sources[i].read_log(request).await?;
            read += page.entries.len();
            let last_hlc = page.entries.last().map(|e| e.record.meta.hlc);
            for e in page.entries {
                // Already handed on (a replica read again from an older cursor): not again.
                if e.record.meta.hlc > self.watermark {
                    self.waiting.insert((e.record.meta.order(), e.namespace, e.key), e.record);
                }
            }
            cursor.after = page.next;
            if !page.more {
                self.cursors[i] = Some(cursor);
                return Ok(page.closed_hlc);
            }
            if read >= self.poll_limit {
                self.cursors[i] = Some(cursor);
                return Ok(last_hlc.map_or(self.watermark, |h| h.saturating_sub(1)));
            }
        }
    }
}
