//! Fault schedules: what goes wrong, and when, drawn from a seed so that a failing run replays exactly
//! (the same faults at the same moments; the interleaving of requests still varies with the machine).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Store nodes in service from the start (the spare one only joins through redistribution).
pub const STORES: [&str; 3] = ["z1a", "z2a", "z3a"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// `kill -9` a store node, start it again `down_ms` later.
    KillStore { node: &'static str, down_ms: u64 },
    /// SIGSTOP a store node, SIGCONT it `ms` later: connections stay open, nothing is answered.
    StopStore { node: &'static str, ms: u64 },
    /// `kill -9` a proxy mid-load (its clients see their connections drop), start it again `down_ms` later.
    KillProxy { proxy: usize, down_ms: u64 },
    /// A client sends a pipeline and does not read the replies for `ms`.
    SlowReader { client: usize, ms: u64 },
    /// `vesta admin add-node` of the spare node, under load (and the other faults).
    AddNode,
}

#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub seed: u64,
    /// How long the load runs, in ms.
    pub load_ms: u64,
    /// The clock offset of each proxy (ms); the last one may be off by seconds.
    pub proxy_offsets_ms: Vec<i64>,
    pub clients: usize,
    /// `(at_ms, fault)`, in time order.
    pub faults: Vec<(u64, Fault)>,
}

pub const PROXIES: usize = 3;
/// The proxies' `max_clock_drift_ms` (their default).
pub const DRIFT_BOUND_MS: u64 = 100;

impl Schedule {
    pub fn from_seed(seed: u64, load_ms: u64) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        // Offsets within the drift bound (100 ms between any two clocks), or a proxy far off (its writes
        // are refused; its reads judge expiry by its own clock).
        let skewed: i64 = match rng.random_range(0..6) {
            0 => 2_500,
            1 => -2_500,
            2 => 40,
            3 => -40,
            _ => 0,
        };
        let proxy_offsets_ms = vec![0, 0, skewed];
        let clients = 6;
        let mut faults = Vec::new();
        // Store faults one at a time (one zone down is what the cluster is built to survive), spaced
        // through the run; proxy kills, slow readers and a redistribution anywhere.
        let mut t = rng.random_range(300..1_200);
        while t + 1_500 < load_ms {
            let node = STORES[rng.random_range(0..STORES.len())];
            let fault = match rng.random_range(0..4) {
                0 | 1 => Fault::KillStore { node, down_ms: rng.random_range(200..2_500) },
                2 => Fault::StopStore { node, ms: rng.random_range(200..2_000) },
                _ => Fault::KillProxy { proxy: rng.random_range(0..PROXIES), down_ms: rng.random_range(100..1_500) },
            };
            let length = match &fault {
                Fault::KillStore { down_ms, .. } => *down_ms,
                Fault::StopStore { ms, .. } => *ms,
                Fault::KillProxy { down_ms, .. } => *down_ms,
                _ => 0,
            };
            faults.push((t, fault));
            t += length + rng.random_range(300..1_500);
        }
        for _ in 0..rng.random_range(1..3) {
            let at = rng.random_range(200..load_ms - 500);
            faults.push((
                at,
                Fault::SlowReader { client: rng.random_range(0..clients), ms: rng.random_range(700..2_000) },
            ));
        }
        if rng.random_bool(0.35) {
            faults.push((rng.random_range(500..load_ms / 2), Fault::AddNode));
        }
        faults.sort_by_key(|(at, _)| *at);
        Schedule { seed, load_ms, proxy_offsets_ms, clients, faults }
    }

    /// How far apart the clocks that judge expiry may be, for the checker. A proxy off by more than the
    /// drift bound neither reads nor writes (it refuses with a clock-skew error), so only the offsets
    /// within the bound count; every process runs on this machine's one clock otherwise. The margin
    /// covers the millisecond rounding of each side.
    pub fn clock_skew_ms(&self) -> u64 {
        let within = self.proxy_offsets_ms.iter().map(|o| o.unsigned_abs()).filter(|&o| o <= DRIFT_BOUND_MS);
        within.max().unwrap_or(0) + 20
    }

    pub fn describe(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|(at, f)| format!("{at}ms {f:?}")).collect();
        format!("seed {} · proxy clocks {:?} ms · {}", self.seed, self.proxy_offsets_ms, faults.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_schedule() {
        let a = Schedule::from_seed(7, 10_000);
        let b = Schedule::from_seed(7, 10_000);
        assert_eq!(a.describe(), b.describe());
        assert_ne!(a.describe(), Schedule::from_seed(8, 10_000).describe());
        // Store faults never overlap.
        let mut busy_until = 0;
        for (at, f) in &a.faults {
            if let Fault::KillStore { down_ms: ms, .. } | Fault::StopStore { ms, .. } = f {
                assert!(*at >= busy_until, "{}", a.describe());
                busy_until = at + ms;
            }
        }
    }
}
