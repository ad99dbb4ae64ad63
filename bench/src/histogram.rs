//! A latency histogram with log-linear buckets (the layout of HdrHistogram with two significant
//! figures): values below 128 have a bucket each, and every power of two above that is cut into 128
//! equal buckets, so a percentile is exact below 128 and within 1/128 (< 0.8%) above. Values are plain
//! `u64` (the load generators record nanoseconds); the whole range of `u64` fits in 7,296 buckets.

use std::time::Duration;

/// Buckets per power of two (and the number of exact buckets at the bottom).
const SUB: u64 = 128;
const SUB_BITS: u32 = 7;
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("count", &self.total).field("min", &self.min).field("max", &self.max).finish()
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let top = 63 - v.leading_zeros(); // v in [2^top, 2^(top+1)), top >= SUB_BITS
    let shift = top - SUB_BITS;
    let sub = (v >> shift) - SUB; // 0..SUB
    (SUB + (shift as u64) * SUB + sub) as usize
}

/// The largest value that falls in bucket `i`.
fn highest(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    let low = (SUB + sub) << shift;
    low + ((1u64 << shift) - 1)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, min: u64::MAX, max: 0, sum: 0 }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    /// Records a duration in nanoseconds (saturating at `u64::MAX` ns, about 584 years).
    pub fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The value at percentile `p` (0–100): the smallest recorded value such that at least `p`% of the
    /// values are ≤ it, as the highest value of its bucket (never above the largest value recorded).
    /// `None` when nothing was recorded.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let p = p.clamp(0.0, 100.0);
        // rank of the wanted value, 1-based: ceil(p% of n), at least 1 (less a hair, so that 99.9% of
        // 1000, which is 999.0000000000001 in floating point, is rank 999)
        let rank = ((p / 100.0 * self.total as f64 - 1e-6).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(highest(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// [`Self::percentile`] of nanosecond values, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        self.percentile(p).map(|ns| ns as f64 / 1e6)
    }
}

/// Milliseconds with three decimals, or `-` for nothing.
pub fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(ms) => format!("{ms:.3}"),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_u64_and_round_trip() {
        assert_eq!(index(0), 0);
        assert_eq!(index(127), 127);
        assert_eq!(index(128), 128);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(highest(BUCKETS - 1), u64::MAX);
        // every bucket's highest value maps to it, and the next value to the next bucket
        for i in 0..BUCKETS - 1 {
            let h = highest(i);
            assert_eq!(index(h), i, "bucket {i}");
            assert_eq!(index(h + 1), i + 1, "bucket {i}");
        }
    }

    #[test]
    fn relative_error_is_below_one_percent() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            let h = highest(index(v));
            assert!(h >= v);
            assert!((h - v) as f64 <= v as f64 / 128.0, "value {v} reported as {h}");
            v = v * 3 + 1;
        }
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.mean(), None);
        assert_eq!(fmt_ms(h.percentile_ms(99.0)), "-");
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(99.9), Some(100));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.mean(), Some(50.5));
    }

    #[test]
    fn percentiles_of_a_uniform_spread_of_latencies() {
        // 1 µs .. 10 ms in 1 µs steps, in nanoseconds
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record_duration(Duration::from_micros(us));
        }
        for (p, want_us) in [(50.0, 5_000.0), (99.0, 9_900.0), (99.9, 9_990.0)] {
            let got = h.percentile(p).unwrap() as f64 / 1e3;
            assert!((got - want_us).abs() <= want_us / 128.0 + 1.0, "p{p}: {got} µs, want {want_us}");
            assert!(got >= want_us, "p{p} is reported at its bucket's top, never below: {got}");
        }
        assert_eq!(h.percentile(100.0), Some(10_000_000));
        assert!((h.percentile_ms(99.0).unwrap() - 9.9).abs() < 0.1);
    }

    #[test]
    fn one_outlier_shows_only_above_its_rank() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(1_000);
        }
        h.record(1_000_000_000);
        assert_eq!(h.percentile(99.0), Some(1_000).map(|v| highest(index(v))));
        assert_eq!(h.percentile(99.9), Some(highest(index(1_000))));
        assert_eq!(h.percentile(99.95), Some(1_000_000_000));
        assert_eq!(h.max(), Some(1_000_000_000));
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        for v in 0..50 {
            a.record(v);
        }
        for v in 50..100 {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.min(), Some(0));
        assert_eq!(a.max(), Some(99));
        assert_eq!(a.percentile(50.0), Some(49));
        // merging an empty one changes nothing
        a.merge(&Histogram::new());
        assert_eq!(a.count(), 100);
        assert_eq!(a.min(), Some(0));
    }
}
