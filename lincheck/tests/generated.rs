//! Generated histories: executions of a reference implementation must be accepted, and one impossible
//! reply planted in them must be found.

mod common;

use std::time::Instant;

use common::*;
use proptest::prelude::*;
use vesta_lincheck::{check, Entry, Op, OpResult, Options, SetCond, Verdict};

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(b"a".to_vec()), Just(b"b".to_vec()), Just(b"1".to_vec()), Just(b"-3".to_vec())]
}

fn op() -> impl Strategy<Value = Op> {
    let set = (value(), prop::option::of(1..40u64)).prop_map(|(value, ttl_ms)| Op::Set {
        value,
        cond: SetCond::None,
        ttl_ms,
    });
    let cond = prop_oneof![Just(SetCond::Nx), Just(SetCond::Xx), value().prop_map(SetCond::IfEq)];
    let cond_set =
        (value(), cond, prop::option::of(1..40u64)).prop_map(|(value, cond, ttl_ms)| Op::Set { value, cond, ttl_ms });
    prop_oneof![
        4 => Just(Op::Get),
        3 => set,
        2 => cond_set,
        3 => Just(Op::Incr),
        1 => Just(Op::Del),
        1 => (0..50u64).prop_map(|ms| Op::Expire { ms }),
    ]
}

/// One op of a sequential execution: how long after the previous one it happened (µs), how far its
/// recorded window reaches before and after that instant, whether its reply was lost (and if so, whether
/// it took effect anyway), and through which proxy (whose clock judges the key's expiry) it went.
#[derive(Clone, Debug)]
struct Step {
    op: Op,
    key: u8,
    client: u32,
    gap: u64,
    before: u64,
    after: u64,
    lost: Option<bool>,
    proxy: usize,
}

fn step() -> impl Strategy<Value = Step> {
    (
        op(),
        0..2u8,
        0..6u32,
        0..4_000u64,
        0..3_000u64,
        0..3_000u64,
        prop::option::weighted(0.08, any::<bool>()),
        0..PROXIES,
    )
        .prop_map(|(op, key, client, gap, before, after, lost, proxy)| Step {
            op,
            key,
            client,
            gap,
            before,
            after,
            lost,
            proxy,
        })
}

const PROXIES: usize = 3;

/// A clock skew (ms) and the proxies' clock offsets (µs), each within ± half of it (so any two within it),
/// often at the extremes.
fn clocks() -> impl Strategy<Value = (u64, Vec<i64>)> {
    prop_oneof![0..4u64, 4..30u64].prop_flat_map(|skew| {
        let half = skew as i64 * 500;
        let offset = prop_oneof![Just(-half), Just(half), -half..=half];
        (Just(skew), prop::collection::vec(offset, PROXIES))
    })
}

/// Runs the steps against the reference at explicit instants, and records what clients would have seen:
/// each window contains the instant the op took effect, so real-time order is that of the execution.
/// Each op is judged, and sets TTLs, by its proxy's millisecond clock, `offsets[proxy]` µs ahead of the
/// recorder's.
fn execute(steps: &[Step], offsets: &[i64]) -> Vec<Entry> {
    let mut keys = [RefKey::default(), RefKey::default()];
    let mut now = 100_000u64;
    let mut out = Vec::new();
    for s in steps {
        now += s.gap;
        let key = format!("k{}", s.key);
        let took_effect = s.lost != Some(false);
        let clock = now as i64 + offsets[s.proxy];
        let res = if took_effect { Some(keys[s.key as usize].exec_on_clock(&s.op, clock, 1000)) } else { None };
        let inv = now.saturating_sub(s.before);
        out.push(match (s.lost, res) {
            (None, Some(res)) => Entry::ok(s.client, key, s.op.clone(), inv, now + s.after, res),
            _ => Entry::unknown(s.client, key, s.op.clone(), inv),
        });
    }
    out.sort_by_key(|e| e.invoked_at_us);
    out
}

fn violation_at(report: &vesta_lincheck::Report) -> Option<usize> {
    report.keys.iter().find_map(|k| match &k.verdict {
        Verdict::Violation(v) => Some(v.failing_entry),
        _ => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LINCHECK_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn executions_of_the_reference_are_linearizable(steps in prop::collection::vec(step(), 1..60), (skew, offsets) in clocks()) {
        let h = execute(&steps, &offsets);
        let r = check(&h, &Options { clock_skew_ms: skew, ..Options::default() });
        prop_assert!(r.is_linearizable(), "offsets {:?} µs\n{}\n{}", offsets, r, vesta_lincheck::to_json(&h));
    }

    /// One clock for every proxy, however far from the recorder's: a single expiry instant explains it.
    #[test]
    fn executions_on_one_clock_are_linearizable_on_one_clock(
        steps in prop::collection::vec(step(), 1..60),
        skew in 0..3u64,
        offset in -5_000..5_000i64,
    ) {
        let h = execute(&steps, &[offset; PROXIES]);
        let r = check(&h, &Options { clock_skew_ms: skew, per_observer_skew: false, ..Options::default() });
        prop_assert!(r.is_linearizable(), "{}\n{}", r, vesta_lincheck::to_json(&h));
    }

    #[test]
    fn a_planted_impossible_reply_is_found(
        steps in prop::collection::vec(step(), 1..60),
        (skew, offsets) in clocks(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut h = execute(&steps, &offsets);
        // A read of a value nobody wrote, or an INCR far beyond what the INCRs could reach.
        let candidates: Vec<usize> = (0..h.len())
            .filter(|&i| h[i].result.is_some() && matches!(h[i].op, Op::Get | Op::Incr))
            .collect();
        prop_assume!(!candidates.is_empty());
        let i = candidates[pick.index(candidates.len())];
        h[i].result = Some(match h[i].op {
            Op::Get => OpResult::Value(b"never written".to_vec()),
            _ => OpResult::Int(1_000_000),
        });
        let r = check(&h, &Options { clock_skew_ms: skew, ..Options::default() });
        // Every cut before it completed is a cut of a linearizable history, so it is the first failure.
        prop_assert_eq!(violation_at(&r), Some(i), "{}\n{}", r, vesta_lincheck::to_json(&h));
    }
}

/// Not a timing assertion: prints how long a realistic history takes, so a regression is visible. The
/// TTLs (1-30 ms) are all shorter than the clock skew (50 ms), so every expiry is ambiguous for a while:
/// harder than a real test's. The last ones go through three proxies whose millisecond clocks are 25 ms
/// behind, on time and 25 ms ahead, so that clients see keys expire and come back within the skew.
#[test]
fn benchmark_2000_ops_10_clients() {
    let one: &[i64] = &[0];
    let three: &[i64] = &[-25_000, 0, 25_000];
    for (what, keys, lost, offsets, tick) in [
        ("one key", 1, 0, one, 1),
        ("one key, 0.5% lost replies", 1, 5, one, 1),
        ("8 keys", 8, 0, one, 1),
        ("one key, 3 proxies ±25 ms", 1, 0, three, 1000),
        ("one key, 3 proxies ±25 ms, 0.5% lost replies", 1, 5, three, 1000),
    ] {
        let h = simulate_with_clocks(42, 10, 2000, keys, lost, offsets, tick);
        let start = Instant::now();
        let r = check(&h, &Options::default());
        let took = start.elapsed();
        let steps: u64 = r.keys.iter().map(|k| k.steps).sum();
        println!("{what}: 2000 ops, 10 clients: {took:?}, {steps} steps");
        assert!(r.is_linearizable(), "{r}");

        // The same with one read in the middle turned into an impossible one: finding the violation takes
        // exhausting every linearization up to it, twice (the whole history, then the shortest cut).
        let mut bad = h.clone();
        let Some(i) = (1000..bad.len()).find(|&i| bad[i].op == Op::Get && bad[i].result.is_some()) else {
            panic!("no completed GET after op 1000");
        };
        bad[i].result = Some(OpResult::Value(b"never written".to_vec()));
        let start = Instant::now();
        let r = check(&bad, &Options::default());
        let took = start.elapsed();
        let steps: u64 = r.keys.iter().map(|k| k.steps).sum();
        println!("{what}, one impossible read: {took:?}, {steps} steps");
        assert_eq!(violation_at(&r), Some(i), "{r}");
    }
}

/// The simulated clients of the benchmark, at many seeds: linearizable by construction. Also through three
/// proxies whose millisecond clocks are 5 ms apart, which one clock cannot explain (checked for some).
#[test]
fn simulated_concurrent_clients_are_linearizable() {
    let mut one_clock_rejects = 0;
    for seed in 0..40 {
        let h = simulate(seed, 6, 300, 1 + (seed % 3) as usize, 30);
        let r = check(&h, &Options { clock_skew_ms: 0, ..Options::default() });
        assert!(r.is_linearizable(), "seed {seed}:\n{r}");
        let h = simulate_with_clocks(seed, 6, 300, 1 + (seed % 3) as usize, 30, &[-5_000, 0, 5_000], 1000);
        let r = check(&h, &Options { clock_skew_ms: 10, ..Options::default() });
        assert!(r.is_linearizable(), "seed {seed}, three clocks:\n{r}");
        let one = check(&h, &Options { clock_skew_ms: 10, per_observer_skew: false, ..Options::default() });
        one_clock_rejects += usize::from(!one.is_linearizable());
    }
    assert!(one_clock_rejects > 0, "no history needed clocks judged per observer");
    println!("{one_clock_rejects} of 40 histories through three clocks need them judged per observer");
}

/// A third of the replies lost: the lost writes may each have happened at any later time, or never, which
/// is what makes a search explode. Correct histories must still pass, and a planted impossible read must
/// be found where it is (or, at worst, the key left undecided: never passed).
#[test]
fn histories_with_many_lost_replies() {
    let mut undecided = 0;
    for seed in 0..30 {
        let h = simulate(1000 + seed, 6, 120, 1, 300);
        let opts = Options { clock_skew_ms: seed % 3, ..Options::default() };
        let r = check(&h, &opts);
        assert!(r.is_linearizable(), "seed {seed}:\n{r}");
        let mut bad = h.clone();
        let reads: Vec<usize> = (0..bad.len()).filter(|&i| bad[i].op == Op::Get && bad[i].result.is_some()).collect();
        let i = reads[reads.len() * 2 / 3];
        bad[i].result = Some(OpResult::Value(b"never written".to_vec()));
        let r = check(&bad, &opts);
        assert!(!r.is_linearizable());
        match violation_at(&r) {
            Some(at) => assert_eq!(at, i, "seed {seed}:\n{r}"),
            None => undecided += 1,
        }
    }
    println!("{undecided} of 30 planted violations undecided");
    assert!(undecided <= 1, "{undecided} of 30 planted violations undecided");
}
