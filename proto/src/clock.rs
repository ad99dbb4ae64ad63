//! Time as a component sees it. Record expiry and HLC timestamps use wall-clock milliseconds (they are
//! part of the data and compared across nodes); leases and deadlines use a monotonic clock (a wall-clock
//! jump must not free or pin a lock). Store nodes and proxies both take a [`Clock`], so tests can drive
//! them with a [`ManualClock`], or with a [`TokioClock`] that follows tokio's (possibly paused) time and
//! can be set off by a fixed offset, the way a badly synchronised machine is.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// The system clock, shifted by a fixed offset: a machine whose wall clock is `offset_ms` ahead (or
/// behind, when negative). Test-only settings use it to show what clock skew does; monotonic time is
/// untouched, as on a real machine.
pub struct SkewedClock {
    inner: SystemClock,
    offset_ms: i64,
}

impl SkewedClock {
    pub fn new(offset_ms: i64) -> Self {
        SkewedClock { inner: SystemClock::default(), offset_ms }
    }
}

impl Clock for SkewedClock {
    fn wall_ms(&self) -> u64 {
        self.inner.wall_ms().saturating_add_signed(self.offset_ms)
    }
    fn mono_ms(&self) -> u64 {
        self.inner.mono_ms()
    }
}

/// Tokio's time (paused in deterministic tests, real otherwise) as a clock: monotonic time is tokio's
/// elapsed time, wall time starts at the system clock when the clock is made and then moves with
/// tokio's time, shifted by `offset_ms`.
pub struct TokioClock {
    start: tokio::time::Instant,
    wall_at_start: u64,
    offset_ms: AtomicI64,
}

impl TokioClock {
    pub fn new(offset_ms: i64) -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
            wall_at_start: SystemClock::default().wall_ms(),
            offset_ms: AtomicI64::new(offset_ms),
        }
    }

    /// Steps the wall clock (an NTP correction, or a skew injected by a test).
    pub fn set_offset(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }
}

impl Clock for TokioClock {
    fn wall_ms(&self) -> u64 {
        let elapsed = self.start.elapsed().as_millis() as u64;
        (self.wall_at_start + elapsed).saturating_add_signed(self.offset_ms.load(Ordering::SeqCst))
    }
    fn mono_ms(&self) -> u64 {
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
