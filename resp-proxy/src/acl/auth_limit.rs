//! Failed AUTH attempts, counted per client IP address: after `max_failures` within `window`, further
//! attempts from that address are refused without looking at the password until the window ends —
//! password guessing through one proxy is slowed to a handful of tries per window.
//!
//! Memory is bounded: addresses whose window is over are dropped once the map grows, and past a hard
//! cap new addresses are not tracked (failing open, loudly) rather than growing without bound.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Addresses tracked before the stale ones are swept.
const SWEEP_AT: usize = 10_000;
/// Addresses tracked at most.
const MAX_TRACKED: usize = 100_000;

pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    /// Per address: failures in the current window, and when that window started.
    failures: DashMap<IpAddr, (u32, Instant)>,
}

impl AuthLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        AuthLimiter { max_failures, window, failures: DashMap::new() }
    }

    /// `Some(seconds left)` when `ip` has used up its failures for the current window.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let entry = self.failures.get(&ip)?;
        let (count, started) = *entry;
        let elapsed = now.saturating_duration_since(started);
        (count >= self.max_failures && elapsed < self.window)
            .then(|| (self.window - elapsed).as_secs_f64().ceil().max(1.0) as u64)
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        if self.failures.len() >= SWEEP_AT && !self.failures.contains_key(&ip) {
            self.failures.retain(|_, (_, started)| now.saturating_duration_since(*started) < self.window);
            if self.failures.len() >= MAX_TRACKED {
                tracing::warn!(%ip, "too many addresses failing AUTH at once: this one is not rate-limited");
                return;
            }
        }
        let mut entry = self.failures.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_an_address_after_its_failures_until_the_window_ends() {
        let l = AuthLimiter::new(3, Duration::from_secs(10));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..2 {
            l.record_failure(a, t0);
        }
        assert_eq!(l.blocked(a, t0), None);
        l.record_failure(a, t0);
        assert_eq!(l.blocked(a, t0), Some(10));
        assert_eq!(l.blocked(a, t0 + Duration::from_millis(9500)), Some(1));
        assert_eq!(l.blocked(b, t0), None, "other addresses are not affected");
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(10)), None);
        l.record_failure(a, t0 + Duration::from_secs(10));
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(10)), None, "a new window starts from zero");
    }

    #[test]
    fn memory_stays_bounded() {
        let l = AuthLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(SWEEP_AT as u32 + 10) {
            l.record_failure(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + Duration::from_secs(11);
        l.record_failure("10.9.9.9".parse().unwrap(), later);
        assert_eq!(l.tracked(), 1, "stale addresses were swept");
    }
}
