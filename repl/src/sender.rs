//! Shipping this site's writes to one peer site.
//!
//! Per shard: a [`ShardFeed`] over the shard's replicas hands on each acknowledged write once, in order;
//! the writes go to the peer in batches ([`Replicate`]), and once the peer answers that a batch is
//! installed, the shard counts as *applied* through the batch's watermark. Every `confirm_ms` the applied
//! watermarks are saved in this site's storage ([`confirmations`]); a sender that starts (this proxy
//! restarted, or another took over) resumes from the saved ones, re-sending at most what was applied
//! since the last save. Installing a copy twice changes nothing, so a re-send is harmless.
//!
//! Batches of a shard go one at a time, the next only after the previous is confirmed; the shards' batches
//! travel concurrently over one connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use vesta_proto::client::NodeConnection;
use vesta_proto::frame::{frame_len, DEFAULT_MAX_FRAME};
use vesta_proto::{LogEntry, Replicate, Request, Response, Status};
use vesta_proxy::coordinator::{CoordError, ScanRequest};
use vesta_proxy::PeerSite;

use crate::confirmations::{self, FullSync, Watermarks, INTERNAL_NAMESPACE};
use crate::feed::ShardFeed;
use crate::site::Site;
use crate::source::NodeLog;
use crate::status::{metric, PeerStatus};

/// Entries per batch at most.
const BATCH_ENTRIES: usize = 512;
/// Bytes of records per batch at most (a batch is one internal frame).
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long the peer may take to install one batch.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Shards shipped at once.
const CONCURRENT_SHARDS: usize = 256;

struct ShardState {
    feed: ShardFeed<NodeLog>,
    /// Read from the logs, not yet confirmed by the peer, in order.
    pending: VecDeque<Replicate>,
    /// Every write of the shard stamped at or below this is installed in the peer site.
    applied: u64,
}

impl ShardState {
    fn pending_entries(&self) -> usize {
        self.pending.iter().map(|b| b.entries.len()).sum()
    }
}

pub struct Sender {
    site: Arc<Site>,
    peer: PeerSite,
    status: Arc<PeerStatus>,
}

impl Sender {
    pub fn new(site: Arc<Site>, peer: PeerSite, status: Arc<PeerStatus>) -> Self {
        Sender { site, peer, status }
    }

    pub async fn run(self) {
        let from = self.site.origin;
        let shards = self.site.coordinator.map().shards() as usize;
        let confirmed = loop {
            match confirmations::load(&self.site.coordinator, from, self.peer.origin, shards).await {
                Ok(Some(c)) => break c,
                // A peer this site never shipped to (a site added later): the logs may no longer hold
                // everything it lacks, so it starts with a full sync.
                Ok(None) => {
                    self.status.set_needs_full_sync(true);
                    break vec![0; shards];
                }
                Err(e) => {
                    self.status.error("save", format!("cannot read the saved confirmations: {e}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        match confirmations::load_sync(&self.site.coordinator, from, self.peer.origin).await {
            Ok(sync) => {
                self.status.set_full_syncs(sync.completed);
                if sync.needed {
                    self.status.set_needs_full_sync(true);
                }
            }
            Err(e) => self.status.error("save", format!("cannot read the full-sync state: {e}")),
        }
        self.refresh_pause().await;
        self.site.saved(self.peer.origin, &confirmed);
        self.status.set_confirmed_through(confirmed.iter().copied().min().unwrap_or(0));
        let mut saved = confirmed.clone();
        let mut routed = self.site.routing();
        let mut states: Vec<ShardState> = confirmed
            .iter()
            .enumerate()
            .map(|(shard, &applied)| ShardState {
                feed: self.site.feed(shard as u32, applied),
                pending: VecDeque::new(),
                applied,
            })
            .collect();
        let mut link: Option<NodeConnection> = None;
        let mut last_save = Instant::now();
        let poll = Duration::from_millis(self.site.config.poll_ms);
        let confirm = Duration::from_millis(self.site.config.confirm_ms);
        loop {
            let round = Instant::now();
            // The shards' replicas changed (a zone left or returned, a redistribution): read the new ones
            // from where the peer has everything; what is pending still goes first.
            let now_routed = self.site.routing();
            if now_routed != routed {
                if now_routed.0 != routed.0 && !self.status.needs_full_sync() {
                    // A redistribution moved replicas: the records they received were copied, not logged,
                    // so the new replicas' logs may lack writes not yet shipped. A full sync covers them.
                    let why = format!("the shard map changed (version {} to {})", routed.0, now_routed.0);
                    self.site.mark_needs_full_sync(&self.status, &why).await;
                }
                routed = now_routed;
                for (shard, st) in states.iter_mut().enumerate() {
                    let from_hlc = st.pending.back().map_or(st.applied, |b| b.through);
                    st.feed = self.site.feed(shard as u32, from_hlc);
                }
            }
            if !self.status.paused() {
                if link.as_ref().is_none_or(NodeConnection::is_closed) {
                    link = self.connect().await;
                }
                if let Some(conn) = &link {
                    let ok = if self.status.needs_full_sync() {
                        match self.full_sync(conn).await {
                            Ok(Some(start)) => {
                                // The logs take over from where the snapshot began.
                                for (shard, st) in states.iter_mut().enumerate() {
                                    st.applied = start[shard];
                                    st.pending.clear();
                                    st.feed = self.site.feed(shard as u32, start[shard]);
                                }
                                saved = start;
                                true
                            }
                            Ok(None) => true,
                            Err(link_ok) => link_ok,
                        }
                    } else {
                        self.ship_round(conn, &mut states).await
                    };
                    if !ok {
                        link = None;
                        self.status.set_connected(false);
                    }
                }
            }
            let (entries, bytes, oldest) = states.iter().fold((0u64, 0u64, None::<u64>), |(n, b, o), st| {
                let first = st.pending.front().and_then(|b| b.entries.first()).map(|e| e.record.meta.hlc);
                let size: usize = st.pending.iter().flat_map(|b| &b.entries).map(entry_size).sum();
                let oldest = match (o, first) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (n + st.pending_entries() as u64 + st.feed.waiting() as u64, b + size as u64, oldest)
            });
            self.status.set_pending(entries, bytes, oldest, self.site.coordinator.now_ms());

            if last_save.elapsed() >= confirm {
                // A pause (or resume) may have been given to another proxy of the site.
                self.refresh_pause().await;
            }
            if last_save.elapsed() >= confirm && !self.status.needs_full_sync() {
                let applied: Watermarks = states.iter().map(|s| s.applied).collect();
                if applied != saved {
                    match confirmations::save(&self.site.coordinator, from, self.peer.origin, &applied).await {
                        Ok(()) => {
                            self.site.saved(self.peer.origin, &applied);
                            self.status.set_confirmed_through(applied.iter().copied().min().unwrap_or(0));
                            saved = applied;
                        }
                        Err(e) => self.status.error("save", format!("cannot save the confirmations: {e}")),
                    }
                }
                last_save = Instant::now();
            }
            tokio::time::sleep(poll.saturating_sub(round.elapsed())).await;
        }
    }

    /// A connection to the peer's first receiving address that answers (`addr` may list several,
    /// separated by `|`: the peer's proxies that listen).
    /// Takes up the pause state saved in the site's storage (unless an operator just steered this
    /// proxy, whose saving may still be under way).
    async fn refresh_pause(&self) {
        if self.status.steered_within(Duration::from_secs(5)) {
            return;
        }
        match confirmations::load_paused(&self.site.coordinator, self.site.origin, self.peer.origin).await {
            Ok(paused) => {
                if paused != self.status.paused() {
                    tracing::info!(peer = %self.peer.name, paused, "replication");
                }
                self.status.set_paused(paused);
            }
            Err(e) => self.status.error("save", format!("cannot read the pause state: {e}")),
        }
    }

    async fn connect(&self) -> Option<NodeConnection> {
        let mut failures = Vec::new();
        for addr in self.peer.addr.split('|').map(str::trim).filter(|a| !a.is_empty()) {
            let dial = vesta_tls::dial(addr, self.site.tls.as_ref(), DEFAULT_MAX_FRAME);
            match tokio::time::timeout(Duration::from_secs(5), dial).await {
                Ok(Ok(conn)) => {
                    tracing::info!(peer = %self.peer.name, %addr, "replication link up");
                    self.status.set_connected(true);
                    self.status.clear_error();
                    return Some(conn);
                }
                Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                Err(_) => failures.push(format!("{addr}: timed out")),
            }
        }
        self.status.error("connect", format!("connect to {}", failures.join("; ")));
        None
    }

    /// Reads what the logs hold and ships it; `false` if the link failed (it is reconnected).
    async fn ship_round(&self, conn: &NodeConnection, states: &mut [ShardState]) -> bool {
        let link_ok = std::sync::atomic::AtomicBool::new(true);
        futures::stream::iter(states.iter_mut())
            .for_each_concurrent(CONCURRENT_SHARDS, |st| {
                let link_ok = &link_ok;
                async move {
                    if st.pending.is_empty() {
                        match st.feed.poll().await {
                            Ok(shipment) => {
                                if let Some(last) = shipment.entries.last() {
                                    self.site.logged(st.feed.shard(), last.record.meta.hlc);
                                }
                                st.pending = self.batches(st.feed.shard(), shipment.entries, shipment.watermark);
                                if st.pending.is_empty() {
                                    st.applied = st.applied.max(shipment.watermark);
                                }
                            }
                            Err(e) => self.status.error("read_log", e.to_string()),
                        }
                    }
                    while let Some(batch) = st.pending.front() {
                        if !link_ok.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        match self.send(conn, batch).await {
                            Ok(()) => {
                                st.applied = st.applied.max(batch.through);
                                st.pending.pop_front();
                            }
                            Err(Some(refused)) => {
                                // The peer could not install it now (its quorum is short, say): again next round.
                                self.status.error("refused", refused);
                                return;
                            }
                            Err(None) => {
                                link_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }
            })
            .await;
        link_ok.into_inner()
    }

    /// A full sync of the peer: every record of this site's own writes (the newest copy of each key,
    /// deletes and expiries included), shard by shard, then the logs from where the snapshot began.
    /// Resumes a sync begun earlier. `Ok(Some(start))` when done (the logs take over at `start`),
    /// `Ok(None)` when it stopped early (another mark of the need, a failure to save: it is begun again
    /// next round), `Err(link_ok)` when a batch failed.
    async fn full_sync(&self, conn: &NodeConnection) -> Result<Option<Watermarks>, bool> {
        let (coordinator, from, to) = (&self.site.coordinator, self.site.origin, self.peer.origin);
        let shards = coordinator.shard_count();
        let saving = |e: CoordError| {
            self.status.error("save", format!("full sync: cannot save its state: {e}"));
            Ok(None)
        };
        let mut state = match confirmations::load_sync(coordinator, from, to).await {
            Ok(s) => s,
            Err(e) => return saving(e),
        };
        if !state.needed {
            // Asked for in memory, not yet persisted: persist, then begin.
            if !self.site.mark_needs_full_sync(&self.status, "an operator asked for it").await {
                return Ok(None);
            }
            state.needed = true;
        }
        if state.start.is_empty() {
            // Every write stamped after this is still in the logs (they keep `max_backlog_secs`, and this
            // peer's confirmations move here first), so the logs take over from it without a gap.
            let margin = 2 * coordinator.settings().max_clock_drift_ms + 1_000;
            let start_hlc = coordinator.now_ms().saturating_sub(margin) << vesta_proto::record::HLC_LOGICAL_BITS;
            let start = vec![start_hlc; shards as usize];
            if let Err(e) = confirmations::save(coordinator, from, to, &start).await {
                return saving(e);
            }
            self.site.saved(to, &start);
            let begun = confirmations::update_sync(coordinator, from, to, {
                let start = start.clone();
                move |s| {
                    (s.needed && s.start.is_empty()).then(|| FullSync { start: start.clone(), shards_done: 0, ..s })
                }
            })
            .await;
            match begun {
                Ok(true) => state = FullSync { start, shards_done: 0, ..state },
                Ok(false) => return Ok(None),
                Err(e) => return saving(e),
            }
            tracing::info!(peer = %self.peer.name, shards, "full sync begins");
        } else {
            tracing::info!(peer = %self.peer.name, done = state.shards_done, shards, "full sync resumes");
        }
        let started = Instant::now();
        let mut shard = state.shards_done;
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut last_saved = Instant::now();
        self.status.set_sync_progress(shard, shards);
        while shard < shards {
            if self.status.paused() {
                return Ok(None);
            }
            let scan = ScanRequest {
                namespace: None,
                from_shard: shard,
                want: BATCH_ENTRIES,
                want_values: true,
                include_dead: true,
                node_timeout: Some(Duration::from_secs(30)),
            };
            let page = match coordinator.scan(&scan).await {
                Ok(p) => p,
                Err(e) => {
                    self.status.error("read_log", format!("full sync: scan from shard {shard}: {e}"));
                    return Ok(None);
                }
            };
            let next = page.next_shard.unwrap_or(shards);
            let entries: Vec<LogEntry> = page
                .keys
                .into_iter()
                .filter(|(ns, _, _)| ns.as_ref() != INTERNAL_NAMESPACE)
                .filter_map(|(namespace, key, mut record)| {
                    // A counter merged here from another site's copy keeps that site's origin, yet holds
                    // this site's contribution, whose own log entries may be gone: it is sent as this
                    // site's (the receiver merges counters on the same reset whatever their stamp).
                    // With encryption the counter is sealed with the value: opened to look, sent sealed.
                    let counter = match &record.counter {
                        Some(c) => Some(c.clone()),
                        None if record.meta.flags.encrypted() => {
                            coordinator.open(&namespace, &key, record.clone()).ok().and_then(|r| r.counter)
                        }
                        None => None,
                    };
                    let ours = record.meta.origin == from
                        || counter.as_ref().is_some_and(|c| c.sites.iter().any(|s| s.origin == from));
                    record.meta.origin = from;
                    ours.then_some(LogEntry { namespace, key, record })
                })
                .collect();
            let found = entries.len() as u64;
            records += found;
            bytes += entries.iter().map(entry_size).sum::<usize>() as u64;
            for batch in self.batches(shard, entries, 0) {
                self.send(conn, &batch).await.map_err(|refused| {
                    if let Some(why) = &refused {
                        self.status.error("refused", format!("full sync: {why}"));
                    }
                    refused.is_some()
                })?;
            }
            metrics::counter!(metric::FULL_SYNC_RECORDS, "peer" => self.peer.name.clone()).increment(found);
            shard = next;
            self.status.set_sync_progress(shard, shards);
            if last_saved.elapsed() >= Duration::from_secs(2) || shard == shards {
                let saved = confirmations::update_sync(coordinator, from, to, {
                    let begun = state.start.clone();
                    move |s| (s.start == begun).then(|| FullSync { shards_done: shard, ..s.clone() })
                })
                .await;
                match saved {
                    Ok(true) => {}
                    Ok(false) => return Ok(None), // begun again meanwhile
                    Err(e) => return saving(e),
                }
                last_saved = Instant::now();
                tracing::info!(
                    peer = %self.peer.name,
                    "full sync: {shard}/{shards} shards, {records} records, {} KiB, {:.0} s",
                    bytes / 1024,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let begun = state.start.clone();
        let finished = confirmations::update_sync(coordinator, from, to, move |s| {
            (s.start == begun).then(|| FullSync {
                needed: false,
                start: Vec::new(),
                shards_done: 0,
                completed: s.completed + 1,
            })
        })
        .await;
        match finished {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return saving(e),
        }
        self.status.set_needs_full_sync(false);
        self.status.set_full_syncs(state.completed + 1);
        self.status.set_confirmed_through(state.start.iter().copied().min().unwrap_or(0));
        metrics::counter!(metric::FULL_SYNCS, "peer" => self.peer.name.clone()).increment(1);
        tracing::info!(peer = %self.peer.name, records, "full sync done in {:.1} s", started.elapsed().as_secs_f64());
        Ok(Some(state.start))
    }

    /// Splits one shipment into batches; this site's own bookkeeping records stay home.
    fn batches(&self, shard: u32, entries: Vec<LogEntry>, watermark: u64) -> VecDeque<Replicate> {
        let mut out = VecDeque::new();
        let mut batch: Vec<LogEntry> = Vec::new();
        let mut bytes = 0;
        for e in entries.into_iter().filter(|e| e.namespace.as_ref() != INTERNAL_NAMESPACE) {
            let full = batch.len() >= BATCH_ENTRIES || bytes + entry_size(&e) > BATCH_BYTES;
            if let (true, Some(last)) = (full, batch.last()) {
                // Entries are in HLC order, and the next one may share the last one's HLC.
                let through = last.record.meta.hlc.saturating_sub(1);
                out.push_back(Replicate { from_origin: self.site.origin, shard, entries: batch, through });
                batch = Vec::new();
                bytes = 0;
            }
            bytes += entry_size(&e);
            batch.push(e);
        }
        if !batch.is_empty() {
            out.push_back(Replicate { from_origin: self.site.origin, shard, entries: batch, through: watermark });
        }
        out
    }

    /// `Err(Some(why))`: the peer refused the batch; `Err(None)`: the link failed.
    async fn send(&self, conn: &NodeConnection, batch: &Replicate) -> Result<(), Option<String>> {
        let request = Request::Replicate(batch.clone());
        let bytes = frame_len(&request).unwrap_or(0) as u64 + 4;
        match tokio::time::timeout(BATCH_TIMEOUT, conn.call(request)).await {
            Ok(Ok(Response::Reply(r))) if r.status == Status::Ok => {
                self.status.sent(batch.entries.len() as u64, bytes);
                Ok(())
            }
            Ok(Ok(Response::Reply(r))) => Err(Some(format!("{}: {}", r.status.as_str(), r.message))),
            Ok(Ok(other)) => Err(Some(format!("unexpected answer {:?}", other.status()))),
            Ok(Err(e)) => {
                self.status.error("send", format!("send to {}: {e}", self.peer.addr));
                Err(None)
            }
            Err(_) => {
                self.status.error("send", format!("{} did not answer within {BATCH_TIMEOUT:?}", self.peer.addr));
                Err(None)
            }
        }
    }
}

fn entry_size(e: &LogEntry) -> usize {
    e.namespace.len() + e.key.len() + e.record.value.len() + 64
}
