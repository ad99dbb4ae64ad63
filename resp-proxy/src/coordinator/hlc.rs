//! Hybrid logical clock: `max(wall clock, greatest HLC seen + 1)`, as 48 bits of milliseconds and 16
//! bits of logical counter. Every write's HLC exceeds every HLC in its prepare replies, and any two write
//! quorums share a replica, so each committed write orders after every write committed before it —
//! whatever the proxies' wall clocks say.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Hlc {
    last: AtomicU64,
}

pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Hlc {
    /// A timestamp greater than `seen`, than every one this clock issued before, and not behind the wall.
    pub fn next(&self, seen: u64) -> u64 {
        let wall = wall_ms() << 16;
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
        let a = h.next(0);
        let b = h.next(0);
        assert!(b > a);
        let far = (wall_ms() + 60_000) << 16;
        assert_eq!(h.next(far), far + 1, "a clock ahead of ours still orders after");
        assert!(h.next(0) > far + 1);
    }
}
