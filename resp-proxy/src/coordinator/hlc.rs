//! Hybrid logical clock: `max(wall clock, greatest HLC seen + 1)`, as 48 bits of milliseconds and 16
//! bits of logical counter. Every write's HLC exceeds every HLC in its prepare replies, and any two write
//! quorums share a replica, so each committed write orders after every write committed before it —
//! whatever the proxies' wall clocks say.
//!
//! How far a reply may pull this clock ahead of the wall is bounded by the coordinator (`max_clock_drift_ms`):
//! a peer whose clock runs hours ahead must not drag every later write of the cluster with it.

use std::sync::atomic::{AtomicU64, Ordering};

use vesta_proto::record::HLC_LOGICAL_BITS;

#[derive(Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// A timestamp greater than `seen`, than every one this clock issued before, and not behind
    /// `wall_ms`.
    pub fn next(&self, seen: u64, wall_ms: u64) -> u64 {
        let wall = wall_ms << HLC_LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(seen.saturating_add(1)).max(last.saturating_add(1));
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_above_what_was_seen() {
        let h = Hlc::default();
        let wall = 1_700_000_000_000;
        let a = h.next(0, wall);
        let b = h.next(0, wall);
        assert!(b > a);
        let far = (wall + 60_000) << 16;
        assert_eq!(h.next(far, wall), far + 1, "a clock ahead of ours still orders after");
        assert!(h.next(0, wall) > far + 1);
    }
}
