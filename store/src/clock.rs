//! Time as the node sees it. Record expiry uses wall-clock milliseconds (it is part of the data and
//! compared across nodes); leases use a monotonic clock (a wall-clock jump must not free or pin a lock).
//! Tests drive both with a [`ManualClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn wall_ms(&self) -> u64;
    /// Milliseconds on a clock that never goes backwards.
    fn mono_ms(&self) -> u64;
}

pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock { start: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
    fn mono_ms(&self) -> u64 {
        // Offset by one so that a deadline of 0 never looks like "now".
        self.start.elapsed().as_millis() as u64 + 1
    }
}

/// A clock that moves only when told; wall and monotonic time advance together.
pub struct ManualClock {
    wall: AtomicU64,
    mono: AtomicU64,
}

impl ManualClock {
    pub fn new(wall_ms: u64) -> Self {
        ManualClock { wall: AtomicU64::new(wall_ms), mono: AtomicU64::new(1_000) }
    }
    pub fn advance(&self, ms: u64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.mono.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> u64 {
        self.wall.load(Ordering::SeqCst)
    }
    fn mono_ms(&self) -> u64 {
        self.mono.load(Ordering::SeqCst)
    }
}
