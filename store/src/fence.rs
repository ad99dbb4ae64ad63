//! Serving moving shards only under a confirmed etcd lease.
//!
//! While a redistribution runs, `vesta admin` may go on without a participant that stops answering —
//! but only once that node's registration in etcd (`alive/<node>`, attached to a lease the node keeps
//! alive) has expired. So a participant must stop serving its moving shards before etcd can possibly
//! expire its lease: when it sends a keep-alive at `t_sent` and etcd acknowledges it, etcd's leader
//! renewed the lease no earlier than `t_sent` (it received the request after it was sent; a leader
//! change only extends leases), so the lease lives at least until `t_sent + TTL` by etcd's clock. The
//! node serves the moving shards until
//!
//! ```text
//! t_sent + TTL − margin − lease_ms
//! ```
//!
//! on its own monotonic clock: `margin` covers clock-rate differences between the node and etcd's
//! leader, and `lease_ms` lets every prepare lease the node granted before that point run out before
//! etcd can expire the registration — so a silent node whose registration is gone can have no commit
//! left in flight on a moving shard (what `settled` in a ping says for a node that answers).
//!
//! Shards that are not moving need no fence: the map can take a shard from a node only through a
//! redistribution, and `vesta admin` cannot start forwarding or copying before every participant has
//! itself acknowledged the plan (a silent node holds the redistribution up, it is never skipped
//! there). So outside redistributions a store node keeps serving through an etcd outage, which is what
//! the proxies' map cache is for.
//!
//! A node without etcd (static configuration) is never fenced.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use vesta_proto::{Reply, Status};

use crate::metrics as m;
use crate::ownership::Ownership;

/// The node's deadline for serving moving shards, as nanoseconds since `base`.
pub struct Fence {
    base: Instant,
    /// [`UNLIMITED`]: never fenced (no etcd). Otherwise the deadline; 0 = fenced until registered.
    until_ns: AtomicU64,
    /// Whether the fence was last reported engaged (for the log line and the gauge).
    reported: AtomicBool,
}

const UNLIMITED: u64 = u64::MAX;

impl Default for Fence {
    fn default() -> Self {
        Fence::unlimited()
    }
}

impl Fence {
    /// A node without etcd: serves whatever its configuration gives it, for good.
    pub fn unlimited() -> Self {
        Fence { base: Instant::now(), until_ns: AtomicU64::new(UNLIMITED), reported: AtomicBool::new(false) }
    }

    /// Switches to lease mode, engaged: moving shards are refused until [`Fence::extend_to`].
    pub fn arm(&self) {
        self.until_ns.store(0, Ordering::SeqCst);
        metrics::gauge!(m::FENCED).set(0.0);
    }

    /// Engages the fence now (the lease is gone, or about to be replaced). No effect on an unlimited
    /// fence.
    pub fn close(&self) {
        let _ = self.until_ns.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| (v != UNLIMITED).then_some(0));
    }

    /// Allows serving until `until` (never shortens an existing deadline of the same lease: an
    /// acknowledged renewal only ever moves it forward). No effect on an unlimited fence.
    pub fn extend_to(&self, until: Instant) {
        let ns = self.ns(until).max(1);
        let _ = self.until_ns.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| (v != UNLIMITED).then(|| v.max(ns)));
        self.observe();
    }

    /// Whether moving shards may be served now.
    pub fn allows(&self) -> bool {
        self.allows_at(Instant::now())
    }

    pub fn allows_at(&self, now: Instant) -> bool {
        let until = self.until_ns.load(Ordering::SeqCst);
        until == UNLIMITED || self.ns(now) < until
    }

    /// The deadline, `None` for a node that is never fenced.
    pub fn deadline(&self) -> Option<Instant> {
        match self.until_ns.load(Ordering::SeqCst) {
            UNLIMITED => None,
            ns => Some(self.base + Duration::from_nanos(ns)),
        }
    }

    /// Whether the fence is engaged now (a static node never is).
    pub fn engaged(&self) -> bool {
        !self.allows()
    }

    /// Logs and publishes a change between engaged and lifted (once per change). Called on every
    /// refusal and by the keep-alive loop, so a change shows even when no request hits it.
    pub fn observe(&self) {
        let engaged = self.engaged();
        if self.reported.swap(engaged, Ordering::SeqCst) != engaged {
            metrics::gauge!(m::FENCED).set(if engaged { 1.0 } else { 0.0 });
            if engaged {
                tracing::warn!(
                    "cannot confirm this node's ownership lease with etcd: refusing to serve the shards it is moving until it can"
                );
            } else {
                tracing::info!("ownership lease confirmed with etcd: serving every shard of this node again");
            }
        }
    }

    /// For a proxy's prepare, read or scan of `shard`, which `ownership` serves: refused while the
    /// shard moves and the lease is unconfirmed.
    pub fn check(&self, ownership: &Ownership, shard: u32) -> Result<(), Reply> {
        if !ownership.is_moving(shard) || self.allows() {
            return Ok(());
        }
        self.observe();
        metrics::counter!(m::FENCED_REFUSALS).increment(1);
        Err(Reply::error(
            Status::NotOwner,
            format!(
                "shard {shard} is moving and this node cannot confirm its ownership with etcd (its lease \
                 was not renewed in time); it serves the shard again once it can"
            ),
        ))
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos().min(UNLIMITED as u128 - 1) as u64
    }
}

/// The timing of a node's ownership lease, from `ownership_ttl_ms` and `lease_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// The etcd lease's time to live.
    pub ttl: Duration,
    /// Clock-rate allowance between this node and etcd's leader: max(500 ms, TTL/10).
    pub margin: Duration,
    /// The prepare lease, which must run out before etcd can expire the registration.
    pub prepare_lease: Duration,
}

/// Shortest time a node may serve after an acknowledged keep-alive: below it, every late keep-alive
/// would fence the node.
const MIN_WINDOW: Duration = Duration::from_millis(500);

impl LeaseTiming {
    pub fn new(ttl_ms: u64, lease_ms: u64) -> Result<Self, String> {
        if ttl_ms < 1000 {
            return Err(format!("ownership_ttl_ms must be at least 1000, not {ttl_ms}"));
        }
        let ttl = Duration::from_millis(ttl_ms);
        let timing = LeaseTiming {
            ttl,
            margin: (ttl / 10).max(Duration::from_millis(500)),
            prepare_lease: Duration::from_millis(lease_ms),
        };
        if ttl < timing.margin + timing.prepare_lease + MIN_WINDOW {
            return Err(format!(
                "ownership_ttl_ms ({ttl_ms}) must exceed the clock margin ({} ms) plus lease_ms ({lease_ms}) by at \
                 least {} ms",
                timing.margin.as_millis(),
                MIN_WINDOW.as_millis()
            ));
        }
        Ok(timing)
    }

    /// How long after sending an acknowledged keep-alive the node may serve moving shards.
    pub fn window(&self) -> Duration {
        self.ttl - self.margin - self.prepare_lease
    }

    /// How often keep-alives go out: three chances per window.
    pub fn interval(&self) -> Duration {
        self.window() / 3
    }

    /// The TTL to ask etcd for, in whole seconds (etcd's unit), rounded up: never shorter than `ttl`.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl.as_millis().div_ceil(1000) as i64
    }

    /// Until when a keep-alive (or grant) sent at `sent` and acknowledged with `granted_secs` allows
    /// serving. etcd may grant more than asked (its minimum TTL), never less; if it ever did, the
    /// shorter of the two counts.
    pub fn valid_until(&self, sent: Instant, granted_secs: i64) -> Instant {
        let granted = Duration::from_secs(granted_secs.max(0) as u64);
        sent + self.ttl.min(granted).saturating_sub(self.margin + self.prepare_lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moving() -> Ownership {
        let mut o = Ownership::fixed(vec![true, true, false]);
        o.outgoing.insert(1, "t:1".into());
        o.incoming[2] = true;
        o
    }

    #[test]
    fn a_static_node_is_never_fenced() {
        let f = Fence::unlimited();
        assert!(f.allows_at(Instant::now() + Duration::from_secs(1 << 30)));
        f.close();
        f.extend_to(Instant::now());
        assert!(f.allows() && f.deadline().is_none());
        assert!(f.check(&moving(), 1).is_ok());
    }

    #[test]
    fn an_armed_fence_allows_until_its_deadline() {
        let f = Fence::unlimited();
        f.arm();
        let now = Instant::now();
        assert!(!f.allows_at(now), "armed: fenced until the first renewal");
        f.extend_to(now + Duration::from_secs(2));
        assert!(f.allows_at(now + Duration::from_millis(1999)));
        assert!(!f.allows_at(now + Duration::from_secs(2)));
        // A renewal acknowledged late with an older send time does not shorten the deadline.
        f.extend_to(now + Duration::from_secs(1));
        assert!(f.allows_at(now + Duration::from_millis(1999)));
        f.close();
        assert!(!f.allows_at(now));
    }

    #[test]
    fn only_moving_shards_are_refused() {
        let f = Fence::unlimited();
        f.arm();
        let o = moving();
        assert!(f.check(&o, 0).is_ok(), "a shard that is not moving is served through an etcd outage");
        let refused = f.check(&o, 1).unwrap_err();
        assert_eq!(refused.status, Status::NotOwner);
        assert!(refused.message.contains("cannot confirm its ownership with etcd"), "{}", refused.message);
        assert!(f.check(&o, 2).is_err(), "incoming shards too");
        f.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(f.check(&o, 1).is_ok() && f.check(&o, 2).is_ok());
    }

    #[test]
    fn lease_timing() {
        let t = LeaseTiming::new(10_000, 600).unwrap();
        assert_eq!(t.margin, Duration::from_millis(1000));
        assert_eq!(t.window(), Duration::from_millis(8400));
        assert_eq!(t.interval(), Duration::from_millis(2800));
        assert_eq!(t.ttl_secs(), 10);
        assert_eq!(LeaseTiming::new(2500, 600).unwrap().ttl_secs(), 3, "rounded up to whole seconds");
        let sent = Instant::now();
        assert_eq!(t.valid_until(sent, 10), sent + Duration::from_millis(8400));
        assert_eq!(t.valid_until(sent, 30), sent + Duration::from_millis(8400), "more granted: ours counts");
        assert_eq!(t.valid_until(sent, 5), sent + Duration::from_millis(3400), "less granted: etcd's counts");
        assert_eq!(t.valid_until(sent, 0), sent, "nothing granted: fenced at once");
        assert!(LeaseTiming::new(999, 0).unwrap_err().contains("at least 1000"));
        let e = LeaseTiming::new(1500, 600).unwrap_err();
        assert!(e.contains("clock margin (500 ms) plus lease_ms (600)"), "{e}");
        assert!(LeaseTiming::new(1600, 600).is_ok());
    }
}
