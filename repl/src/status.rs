//! What the replication of one site is doing, per peer: for INFO replication, `vesta admin repl status`
//! and the Prometheus metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use vesta_proto::hlc_ms;

/// Metric names (every one labelled with `peer`, the peer site's name).
pub mod metric {
    /// Entries sent to the peer (each write once per peer when all goes well).
    pub const SENT_ENTRIES: &str = "vesta_repl_sent_entries_total";
    /// Bytes of the batches sent to the peer, framing included.
    pub const SENT_BYTES: &str = "vesta_repl_sent_bytes_total";
    /// Entries read from the logs and not yet confirmed by the peer.
    pub const PENDING_ENTRIES: &str = "vesta_repl_pending_entries";
    /// Bytes of those entries (encoded records).
    pub const PENDING_BYTES: &str = "vesta_repl_pending_bytes";
    /// Age of the oldest write not yet confirmed by the peer (0 when none): the replication lag.
    pub const LAG_SECONDS: &str = "vesta_repl_lag_seconds";
    /// Failures by `kind` (connect, send, refused, read_log, save).
    pub const ERRORS: &str = "vesta_repl_errors_total";
    /// 1 while a connection to the peer is up.
    pub const CONNECTED: &str = "vesta_repl_connected";
    /// 1 while the peer needs (or is getting) a full sync: it fell behind the logs' bound.
    pub const NEEDS_FULL_SYNC: &str = "vesta_repl_needs_full_sync";
    /// Full syncs completed.
    pub const FULL_SYNCS: &str = "vesta_repl_full_syncs_total";
    /// Records sent by full syncs.
    pub const FULL_SYNC_RECORDS: &str = "vesta_repl_full_sync_records_total";
    /// Copies received from the peer (`from`) and installed (`outcome` = installed) or found older than
    /// what this site holds (`outcome` = older).
    pub const RECEIVED_ENTRIES: &str = "vesta_repl_received_entries_total";
    /// Batches from a peer that could not be applied (the peer sends them again).
    pub const APPLY_ERRORS: &str = "vesta_repl_apply_errors_total";
}

/// One peer's side of this site's shipping.
#[derive(Default)]
pub struct PeerStatus {
    pub name: String,
    pub origin: u32,
    connected: AtomicBool,
    paused: AtomicBool,
    pending_entries: AtomicU64,
    pending_bytes: AtomicU64,
    /// HLC of the oldest entry not yet confirmed (0: none).
    oldest_pending_hlc: AtomicU64,
    sent_entries: AtomicU64,
    sent_bytes: AtomicU64,
    errors: AtomicU64,
    /// The smallest saved confirmation over all shards: every write stamped at or below it is in the peer.
    confirmed_through: AtomicU64,
    last_error: Mutex<String>,
    needs_full_sync: AtomicBool,
    /// When an operator last paused or resumed through this proxy (its saving may still be under way).
    steered_at: Mutex<Option<std::time::Instant>>,
    /// Shards done of a running full sync, and of how many (0 of 0: none running).
    sync_progress: Mutex<(u32, u32)>,
    full_syncs: AtomicU64,
}

impl PeerStatus {
    pub fn new(name: &str, origin: u32) -> Self {
        PeerStatus { name: name.into(), origin, ..Default::default() }
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        metrics::gauge!(metric::CONNECTED, "peer" => self.name.clone()).set(if up { 1.0 } else { 0.0 });
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// An operator's pause or resume, given to this proxy.
    pub fn steer(&self, paused: bool) {
        *self.steered_at.lock() = Some(std::time::Instant::now());
        self.set_paused(paused);
    }

    /// Whether an operator paused or resumed through this proxy within `within`.
    pub fn steered_within(&self, within: std::time::Duration) -> bool {
        self.steered_at.lock().is_some_and(|at| at.elapsed() < within)
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn set_needs_full_sync(&self, needed: bool) {
        self.needs_full_sync.store(needed, Ordering::Relaxed);
        metrics::gauge!(metric::NEEDS_FULL_SYNC, "peer" => self.name.clone()).set(if needed { 1.0 } else { 0.0 });
        if !needed {
            *self.sync_progress.lock() = (0, 0);
        }
    }

    pub fn needs_full_sync(&self) -> bool {
        self.needs_full_sync.load(Ordering::Relaxed)
    }

    pub fn set_sync_progress(&self, done: u32, total: u32) {
        *self.sync_progress.lock() = (done, total);
    }

    pub fn set_full_syncs(&self, completed: u64) {
        self.full_syncs.store(completed, Ordering::Relaxed);
    }

    pub fn sent(&self, entries: u64, bytes: u64) {
        self.sent_entries.fetch_add(entries, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        metrics::counter!(metric::SENT_ENTRIES, "peer" => self.name.clone()).increment(entries);
        metrics::counter!(metric::SENT_BYTES, "peer" => self.name.clone()).increment(bytes);
    }

    pub fn error(&self, kind: &'static str, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(metric::ERRORS, "peer" => self.name.clone(), "kind" => kind).increment(1);
        let mut last = self.last_error.lock();
        if *last != message {
            tracing::warn!(peer = %self.name, kind, error = %message, "replication");
            *last = message;
        }
    }

    pub fn clear_error(&self) {
        self.last_error.lock().clear();
    }

    /// What is read and not yet confirmed, after a round of shipping.
    pub fn set_pending(&self, entries: u64, bytes: u64, oldest_hlc: Option<u64>, now_ms: u64) {
        self.pending_entries.store(entries, Ordering::Relaxed);
        self.pending_bytes.store(bytes, Ordering::Relaxed);
        self.oldest_pending_hlc.store(oldest_hlc.unwrap_or(0), Ordering::Relaxed);
        metrics::gauge!(metric::PENDING_ENTRIES, "peer" => self.name.clone()).set(entries as f64);
        metrics::gauge!(metric::PENDING_BYTES, "peer" => self.name.clone()).set(bytes as f64);
        metrics::gauge!(metric::LAG_SECONDS, "peer" => self.name.clone()).set(self.lag_ms(now_ms) as f64 / 1000.0);
    }

    pub fn set_confirmed_through(&self, hlc: u64) {
        self.confirmed_through.store(hlc, Ordering::Relaxed);
    }

    /// Age of the oldest write not yet confirmed by the peer.
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        match self.oldest_pending_hlc.load(Ordering::Relaxed) {
            0 => 0,
            hlc => now_ms.saturating_sub(hlc_ms(hlc)),
        }
    }

    /// One line of INFO replication: `name=…,origin=…,state=…,…`.
    pub fn info_value(&self, now_ms: u64) -> String {
        let (done, total) = *self.sync_progress.lock();
        let state = match (self.paused(), self.needs_full_sync(), self.connected()) {
            (true, _, _) => "paused".to_string(),
            (false, true, _) if total > 0 => format!("full_sync({done}/{total} shards)"),
            (false, true, _) => "needs_full_sync".to_string(),
            (false, false, true) => "connected".to_string(),
            (false, false, false) => "connecting".to_string(),
        };
        let last_error = self.last_error.lock().replace([',', '\r', '\n'], " ");
        format!(
            "name={},origin={},state={state},pending_entries={},pending_bytes={},lag_ms={},sent_entries={},\
             sent_bytes={},errors={},confirmed_through_ms={},full_syncs={},last_error={last_error}",
            self.name,
            self.origin,
            self.pending_entries.load(Ordering::Relaxed),
            self.pending_bytes.load(Ordering::Relaxed),
            self.lag_ms(now_ms),
            self.sent_entries.load(Ordering::Relaxed),
            self.sent_bytes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            hlc_ms(self.confirmed_through.load(Ordering::Relaxed)),
            self.full_syncs.load(Ordering::Relaxed),
        )
    }
}
