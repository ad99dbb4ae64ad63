//! Small histories against a brute-force oracle written from the model's definition alone: every order of
//! the ops, every reading (live or expired) of the key's expiry by every op, and the linearization points
//! and expiry instants solved as difference constraints. The checker must agree exactly: never reject a
//! history the oracle explains (its pruning — zones, subsumption, reads taken first, windows, relaxed
//! searches — loses nothing), never accept one it cannot (the zone is exact), and name as failing the op
//! whose cut fails while the cut before it passes.

mod common;

use common::*;
use proptest::prelude::*;
use vesta_lincheck::{check, Entry, Op, OpResult, Options, SetCond, Verdict};

const INF: i64 = i64::MAX / 4;

/// A closed difference-bound matrix: `m[i][j]` bounds `x_i - x_j`; variable 0 is the time origin.
#[derive(Clone)]
struct Dbm {
    m: Vec<Vec<i64>>,
}

impl Dbm {
    fn new(vars: usize) -> Dbm {
        let mut m = vec![vec![INF; vars]; vars];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 0;
        }
        Dbm { m }
    }

    /// Adds `x_i - x_j ≤ c`, keeping the matrix closed; false if that leaves no solution.
    fn add(&mut self, i: usize, j: usize, c: i64) -> bool {
        if c.saturating_add(self.m[j][i]) < 0 {
            return false;
        }
        if c >= self.m[i][j] {
            return true;
        }
        let n = self.m.len();
        for a in 0..n {
            for b in 0..n {
                let via = self.m[a][i].saturating_add(c).saturating_add(self.m[j][b]);
                if via < self.m[a][b] {
                    self.m[a][b] = via;
                }
            }
        }
        true
    }
}

/// The clocks, as the checker is told about them.
#[derive(Clone, Copy, Debug)]
struct Clocks {
    /// µs an expiry instant may be off (write's point + TTL).
    slack: i64,
    /// µs each op's own clock may be off when it judges the expiry.
    band: i64,
}

impl Clocks {
    fn of(opts: &Options) -> Clocks {
        let skew = opts.clock_skew_ms as i64 * 1000;
        if opts.per_observer_skew {
            Clocks { slack: 1000, band: skew }
        } else {
            Clocks { slack: skew + 1000, band: 0 }
        }
    }
}

fn redis_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    s.parse::<i64>().ok().filter(|n| n.to_string() == s)
}

enum Ttl {
    Clear,
    Keep,
    New(u64),
}

enum Effect {
    Nothing,
    Write(Vec<u8>, Ttl),
    Delete,
    SetTtl(u64),
}

/// Redis's semantics on a key that is `cur` for this op.
fn apply(op: &Op, cur: Option<&[u8]>) -> (OpResult, Effect) {
    match op {
        Op::Get => (cur.map_or(OpResult::Nil, |v| OpResult::Value(v.to_vec())), Effect::Nothing),
        Op::Set { value, cond, ttl_ms } => {
            let go = match cond {
                SetCond::None => true,
                SetCond::Nx => cur.is_none(),
                SetCond::Xx => cur.is_some(),
                SetCond::IfEq(old) => cur == Some(old.as_slice()),
            };
            if go {
                (OpResult::Ok, Effect::Write(value.clone(), ttl_ms.map_or(Ttl::Clear, Ttl::New)))
            } else {
                (OpResult::Nil, Effect::Nothing)
            }
        }
        Op::Incr => match cur {
            None => (OpResult::Int(1), Effect::Write(b"1".to_vec(), Ttl::Clear)),
            Some(v) => match redis_int(v).and_then(|n| n.checked_add(1)) {
                Some(n) => (OpResult::Int(n), Effect::Write(n.to_string().into_bytes(), Ttl::Keep)),
                None => (OpResult::Error, Effect::Nothing),
            },
        },
        Op::Del => match cur {
            Some(_) => (OpResult::Int(1), Effect::Delete),
            None => (OpResult::Int(0), Effect::Nothing),
        },
        Op::Expire { ms } => match cur {
            Some(_) if *ms == 0 => (OpResult::Int(1), Effect::Delete),
            Some(_) => (OpResult::Int(1), Effect::SetTtl(*ms)),
            None => (OpResult::Int(0), Effect::Nothing),
        },
    }
}

struct Oracle<'a> {
    ops: &'a [Entry],
    clocks: Clocks,
    known: usize,
}

/// The key after a prefix of an order: its value, the variable of its expiry instant, the variable of the
/// last point, and the constraints so far.
#[derive(Clone)]
struct Node {
    value: Option<Vec<u8>>,
    ttl: Option<usize>,
    last: Option<usize>,
    dbm: Dbm,
}

impl Oracle<'_> {
    /// Variables: 0 the origin, 1 + k the point of the k-th op of the order, 1 + n + k the expiry instant
    /// it sets (if it does).
    fn linearizable(ops: &[Entry], opts: &Options) -> bool {
        let oracle = Oracle { ops, clocks: Clocks::of(opts), known: ops.iter().filter(|e| e.result.is_some()).count() };
        let start = Node { value: None, ttl: None, last: None, dbm: Dbm::new(1 + 2 * ops.len()) };
        oracle.search(&start, 0, 0, 0)
    }

    fn search(&self, node: &Node, used: u64, k: usize, known_done: usize) -> bool {
        if known_done == self.known {
            return true;
        }
        let n = self.ops.len();
        for (i, e) in self.ops.iter().enumerate() {
            if used & (1 << i) != 0 {
                continue;
            }
            let q = 1 + k;
            let mut base = node.dbm.clone();
            let mut ok = base.add(0, q, -(e.invoked_at_us as i64));
            if let Some(c) = e.completed_at_us {
                ok &= base.add(q, 0, c as i64);
            }
            if let Some(p) = node.last {
                ok &= base.add(p, q, 0);
            }
            if !ok {
                continue;
            }
            // (live for this op, judged expired by it, constraints)
            let mut readings: Vec<(bool, bool, Dbm)> = Vec::new();
            match (&node.value, node.ttl) {
                (Some(_), Some(x)) => {
                    let mut live = base.clone();
                    if live.add(q, x, self.clocks.band) {
                        readings.push((true, false, live));
                    }
                    let mut gone = base;
                    if gone.add(x, q, self.clocks.band) {
                        readings.push((false, true, gone));
                    }
                }
                _ => readings.push((node.value.is_some(), false, base)),
            }
            for (live, judged_expired, mut dbm) in readings {
                let cur = if live { node.value.as_deref() } else { None };
                let (res, effect) = apply(&e.op, cur);
                if e.result.as_ref().is_some_and(|want| *want != res) {
                    continue;
                }
                let new_ttl = |dbm: &mut Dbm, ms: u64| {
                    let x = 1 + n + k;
                    let l = ms as i64 * 1000;
                    (dbm.add(x, q, l + self.clocks.slack) && dbm.add(q, x, self.clocks.slack - l)).then_some(x)
                };
                let (value, ttl) = match effect {
                    // One clock: seen expired is expired for all.
                    Effect::Nothing if judged_expired && self.clocks.band == 0 => (None, None),
                    Effect::Nothing => (node.value.clone(), node.ttl),
                    Effect::Delete => (None, None),
                    Effect::Write(v, Ttl::Clear) => (Some(v), None),
                    Effect::Write(v, Ttl::Keep) => (Some(v), node.ttl),
                    Effect::Write(v, Ttl::New(ms)) => match new_ttl(&mut dbm, ms) {
                        Some(x) => (Some(v), Some(x)),
                        None => continue,
                    },
                    Effect::SetTtl(ms) => match new_ttl(&mut dbm, ms) {
                        Some(x) => (node.value.clone(), Some(x)),
                        None => continue,
                    },
                };
                let next = Node { value, ttl, last: Some(q), dbm };
                let known = usize::from(e.result.is_some());
                if self.search(&next, used | (1 << i), k + 1, known_done + known) {
                    return true;
                }
            }
        }
        false
    }
}

/// The history cut just after the op at `at` completed, as the checker cuts it: ops invoked by then, those
/// that completed later with an unknown outcome.
fn cut(h: &[Entry], at: usize) -> Vec<Entry> {
    let end = (h[at].completed_at_us.unwrap_or(u64::MAX), at);
    h.iter()
        .enumerate()
        .filter(|(_, e)| e.invoked_at_us <= end.0)
        .map(|(i, e)| match e.completed_at_us {
            Some(c) if (c, i) <= end => e.clone(),
            _ => Entry { completed_at_us: None, result: None, ..e.clone() },
        })
        .collect()
}

const VALUES: [&str; 3] = ["a", "b", "1"];

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(&VALUES[..]).prop_map(|v| v.as_bytes().to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    let ttl = prop::option::weighted(0.7, 1..10u64);
    let cond = prop_oneof![
        3 => Just(SetCond::None),
        1 => Just(SetCond::Nx),
        1 => Just(SetCond::Xx),
        1 => value().prop_map(SetCond::IfEq),
    ];
    prop_oneof![
        6 => Just(Op::Get),
        4 => (value(), cond, ttl).prop_map(|(value, cond, ttl_ms)| Op::Set { value, cond, ttl_ms }),
        2 => Just(Op::Incr),
        1 => Just(Op::Del),
        1 => (0..15u64).prop_map(|ms| Op::Expire { ms }),
    ]
}

/// An op of an execution: µs after the previous one, window before and after, lost reply (took effect
/// anyway?), proxy.
type Step = (Op, u64, u64, u64, Option<bool>, usize);

fn step() -> impl Strategy<Value = Step> {
    let reach = || prop_oneof![0..300u64, 0..2_500u64];
    (op(), 0..3_000u64, reach(), reach(), prop::option::weighted(0.1, any::<bool>()), 0..3usize)
}

/// Runs the steps on the reference, through three proxies `offsets` µs off, on millisecond clocks.
fn execute(steps: &[Step], offsets: &[i64]) -> Vec<Entry> {
    let mut key = RefKey::default();
    let mut now = 100_000u64;
    let mut out = Vec::new();
    for (i, (op, gap, before, after, lost, proxy)) in steps.iter().enumerate() {
        now += gap;
        let res = (*lost != Some(false)).then(|| key.exec_on_clock(op, now as i64 + offsets[*proxy], 1000));
        let inv = now.saturating_sub(*before);
        out.push(match (lost, res) {
            (None, Some(res)) => Entry::ok(i as u32, "k", op.clone(), inv, now + after, res),
            _ => Entry::unknown(i as u32, "k", op.clone(), inv),
        });
    }
    out.sort_by_key(|e| e.invoked_at_us);
    out
}

/// Another reply the op could have given.
fn other_reply(op: &Op, res: &OpResult, pick: usize) -> OpResult {
    let (two, three) = (pick % 2, pick % 3);
    match (op, res) {
        (Op::Get, OpResult::Value(_)) if two == 0 => OpResult::Nil,
        (Op::Get, _) => OpResult::Value(VALUES[pick % VALUES.len()].as_bytes().to_vec()),
        (Op::Set { .. }, OpResult::Ok) => OpResult::Nil,
        (Op::Set { .. }, _) => OpResult::Ok,
        (Op::Incr, OpResult::Int(n)) => match three {
            0 => OpResult::Int(n + 1),
            1 if *n != 1 => OpResult::Int(1),
            1 => OpResult::Int(2),
            _ => OpResult::Error,
        },
        (Op::Incr, _) => OpResult::Int(1),
        (_, OpResult::Int(n)) => OpResult::Int(1 - n),
        _ => res.clone(),
    }
}

/// Ops around the expiry of a SET PX: the first one up to 10 ms before it, the others close together.
fn burst() -> impl Strategy<Value = Vec<Step>> {
    let around = prop_oneof![
        4 => Just(Op::Get),
        1 => Just(Op::Incr),
        1 => Just(Op::Del),
        1 => (0..15u64).prop_map(|ms| Op::Expire { ms }),
        1 => (value(), prop_oneof![Just(SetCond::Nx), Just(SetCond::Xx)])
            .prop_map(|(value, cond)| Op::Set { value, cond, ttl_ms: None }),
    ];
    (1..12u64, 0..15_000u64, prop::collection::vec((step(), around, 0..2_000u64), 2..7)).prop_map(
        |(ttl, first, rest)| {
            let set = Op::Set { value: b"a".to_vec(), cond: SetCond::None, ttl_ms: Some(ttl) };
            let mut steps: Vec<Step> = vec![(set, 0, 0, 200, None, 0)];
            for (i, ((_, _, before, after, lost, proxy), op, gap)) in rest.into_iter().enumerate() {
                let gap = if i == 0 { (ttl * 1000 + first).saturating_sub(10_000) } else { gap };
                steps.push((op, gap, before, after, lost, proxy));
            }
            steps
        },
    )
}

/// A history, and the options to check it with: half of them random ops, half ops around an expiry.
fn history() -> impl Strategy<Value = (Vec<Entry>, Options)> {
    let random = (prop::collection::vec(step(), 1..8), prop_oneof![0..3u64, 5..15u64]);
    (
        prop_oneof![random, (burst(), 3..15u64)],
        any::<bool>(),
        prop::collection::vec(prop_oneof![Just(-1.0), Just(1.0), -1.0..=1.0f64], 3),
        prop::option::of((any::<prop::sample::Index>(), any::<usize>())),
    )
        .prop_map(|((steps, skew), per_observer, offsets, change)| {
            // Within ± half the skew of the recorder's clock (so any two within it); a single clock for
            // the single-clock model.
            let half = skew as f64 * 500.0;
            let offsets: Vec<i64> = offsets
                .iter()
                .map(|o| if per_observer { (o * half) as i64 } else { (offsets[0] * half) as i64 })
                .collect();
            let mut h = execute(&steps, &offsets);
            // Often, one reply changed to another the op could give: a history that may or may not be
            // linearizable.
            if let Some((which, pick)) = change {
                let done: Vec<usize> = (0..h.len()).filter(|&i| h[i].result.is_some()).collect();
                if !done.is_empty() {
                    let i = done[which.index(done.len())];
                    let res = h[i].result.clone().expect("completed");
                    h[i].result = Some(other_reply(&h[i].op, &res, pick));
                }
            }
            let opts = Options { clock_skew_ms: skew, per_observer_skew: per_observer, ..Options::default() };
            (h, opts)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LINCHECK_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_checker_agrees_with_the_brute_force_oracle((h, opts) in history()) {
        let expected = Oracle::linearizable(&h, &opts);
        let r = check(&h, &opts);
        let json = vesta_lincheck::to_json(&h);
        match &r.keys[0].verdict {
            Verdict::Linearizable => prop_assert!(expected, "the oracle finds no linearization\n{}\n{:?}\n{}", r, opts, json),
            Verdict::Violation(v) => {
                prop_assert!(!expected, "the oracle finds a linearization\n{}\n{:?}\n{}", r, opts, json);
                // The failing op: its cut fails, and the cut at the return before it passes.
                let f = v.failing_entry;
                prop_assert!(!Oracle::linearizable(&cut(&h, f), &opts), "the cut at #{} passes\n{}\n{}", f, r, json);
                let end = (h[f].completed_at_us, f);
                let before = (0..h.len())
                    .filter(|&i| h[i].completed_at_us.is_some() && (h[i].completed_at_us, i) < end)
                    .max_by_key(|&i| (h[i].completed_at_us, i));
                if let Some(b) = before {
                    prop_assert!(Oracle::linearizable(&cut(&h, b), &opts), "the cut at #{} fails\n{}\n{}", b, r, json);
                }
            }
            other => prop_assert!(false, "{:?}\n{}", other, json),
        }
    }
}

/// The oracle itself tells the cases of the hand-written tests apart.
#[test]
fn the_oracle_reads_expiry_per_observer() {
    let h = H::new().op(1, set_px("v", 100), 0, 1, OK).op(2, get(), 80, 81, NIL).op(3, get(), 120, 121, val("v"));
    assert!(Oracle::linearizable(&h.entries, &skew(50)));
    assert!(!Oracle::linearizable(&h.entries, &one_clock(50)));
    let late = H::new().op(1, set_px("v", 100), 0, 1, OK).op(2, get(), 80, 81, NIL).op(3, get(), 153, 154, val("v"));
    assert!(!Oracle::linearizable(&late.entries, &skew(50)));
    let h = H::new().op(1, Op::Incr, 0, 1, int(1)).lost(2, Op::Incr, 2).op(3, get(), 10, 11, val("2"));
    assert!(Oracle::linearizable(&h.entries, &skew(0)));
    let h = H::new().op(1, Op::Incr, 0, 1, int(1)).lost(2, Op::Incr, 2).op(3, get(), 10, 11, val("3"));
    assert!(!Oracle::linearizable(&h.entries, &skew(0)));
}
