//! Test support: a history builder, and a reference implementation of the model that executes ops at
//! explicit instants (written independently of the checker's model, to check it against).

#![allow(dead_code)]

use vesta_lincheck::{check, Entry, Op, OpResult, Options, Report, SetCond, Verdict};

pub fn get() -> Op {
    Op::Get
}
pub fn set(v: &str) -> Op {
    Op::Set { value: v.into(), cond: SetCond::None, ttl_ms: None }
}
pub fn set_px(v: &str, ms: u64) -> Op {
    Op::Set { value: v.into(), cond: SetCond::None, ttl_ms: Some(ms) }
}
pub fn set_nx(v: &str) -> Op {
    Op::Set { value: v.into(), cond: SetCond::Nx, ttl_ms: None }
}
pub fn set_xx(v: &str) -> Op {
    Op::Set { value: v.into(), cond: SetCond::Xx, ttl_ms: None }
}
pub fn set_ifeq(v: &str, old: &str) -> Op {
    Op::Set { value: v.into(), cond: SetCond::IfEq(old.into()), ttl_ms: None }
}
pub fn val(v: &str) -> OpResult {
    OpResult::Value(v.into())
}
#[allow(unused_imports)]
pub use OpResult::{Error as ERR, Nil as NIL, Ok as OK};
pub fn int(n: i64) -> OpResult {
    OpResult::Int(n)
}

/// A history on key "k", times given in ms.
#[derive(Default, Clone)]
pub struct H {
    pub entries: Vec<Entry>,
}

impl H {
    pub fn new() -> H {
        H::default()
    }
    /// A completed op on key "k", window `[inv_ms, comp_ms]`.
    pub fn op(mut self, client: u32, op: Op, inv_ms: u64, comp_ms: u64, res: OpResult) -> H {
        self.entries.push(Entry::ok(client, "k", op, inv_ms * 1000, comp_ms * 1000, res));
        self
    }
    /// The same in µs.
    pub fn op_us(mut self, client: u32, op: Op, inv: u64, comp: u64, res: OpResult) -> H {
        self.entries.push(Entry::ok(client, "k", op, inv, comp, res));
        self
    }
    /// An op of unknown outcome on key "k", invoked at `inv_ms`.
    pub fn lost(mut self, client: u32, op: Op, inv_ms: u64) -> H {
        self.entries.push(Entry::unknown(client, "k", op, inv_ms * 1000));
        self
    }
    pub fn check(&self, skew_ms: u64) -> Report {
        check(&self.entries, &skew(skew_ms))
    }
}

/// The default options with this clock skew (judged per observer).
pub fn skew(skew_ms: u64) -> Options {
    Options { clock_skew_ms: skew_ms, ..Options::default() }
}

/// The default options with this clock skew, judged by a single clock.
pub fn one_clock(skew_ms: u64) -> Options {
    Options { clock_skew_ms: skew_ms, per_observer_skew: false, ..Options::default() }
}

#[track_caller]
pub fn assert_linearizable(h: &H, skew_ms: u64) {
    assert_linearizable_with(h, &skew(skew_ms));
}

#[track_caller]
pub fn assert_linearizable_with(h: &H, opts: &Options) {
    let r = check(&h.entries, opts);
    assert!(r.is_linearizable(), "expected linearizable, got:\n{r}");
}

/// Asserts a violation whose first failing op is entry `failing`.
#[track_caller]
pub fn assert_violation(h: &H, skew_ms: u64, failing: usize) -> Report {
    assert_violation_with(h, &skew(skew_ms), failing)
}

#[track_caller]
pub fn assert_violation_with(h: &H, opts: &Options, failing: usize) -> Report {
    let r = check(&h.entries, opts);
    assert!(!r.is_linearizable(), "expected a violation, got:\n{r}");
    match &r.keys[0].verdict {
        Verdict::Violation(v) => assert_eq!(v.failing_entry, failing, "failing op:\n{r}"),
        other => panic!("expected a violation, got {other:?}\n{r}"),
    }
    r
}

/// One key as the reference sees it.
#[derive(Default, Clone, Debug)]
pub struct RefKey {
    pub value: Option<Vec<u8>>,
    /// µs of the clocks that judge it; expired for a clock reading ≥ it.
    pub deadline: Option<i64>,
}

impl RefKey {
    /// Executes `op` at instant `now` (µs), judged by one exact clock.
    pub fn exec(&mut self, op: &Op, now: u64) -> OpResult {
        self.exec_on_clock(op, now as i64, 1)
    }

    /// Executes `op` as a server whose clock reads `clock` (µs) when the op takes effect, in ticks of `tick`
    /// µs (1000: a millisecond clock, as vesta's proxies have): it judges the key expired when the deadline
    /// is at or before its tick, and a TTL it sets ends that many ms after its tick. A key expired for this
    /// clock is not removed for the others (each proxy judges for itself), but a write starts afresh.
    pub fn exec_on_clock(&mut self, op: &Op, clock: i64, tick: i64) -> OpResult {
        let now = clock.div_euclid(tick) * tick;
        let saved = self.clone();
        let expired = self.deadline.is_some_and(|d| now >= d);
        if expired {
            *self = RefKey::default();
        }
        let res = self.exec_live(op, now);
        // Nothing written: the key stays as it was for everyone else.
        if expired && self.value.is_none() {
            *self = saved;
        }
        res
    }

    /// Executes `op` on the key as it is (already judged live or expired), at clock reading `now`.
    fn exec_live(&mut self, op: &Op, now: i64) -> OpResult {
        match op {
            Op::Get => self.value.clone().map_or(OpResult::Nil, OpResult::Value),
            Op::Set { value, cond, ttl_ms } => {
                let go = match cond {
                    SetCond::None => true,
                    SetCond::Nx => self.value.is_none(),
                    SetCond::Xx => self.value.is_some(),
                    SetCond::IfEq(old) => self.value.as_ref() == Some(old),
                };
                if !go {
                    return OpResult::Nil;
                }
                self.value = Some(value.clone());
                self.deadline = ttl_ms.map(|ms| now + ms as i64 * 1000);
                OpResult::Ok
            }
            Op::Incr => {
                let current = match &self.value {
                    None => Some(0),
                    Some(v) => {
                        std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok().filter(|n| n.to_string() == s))
                    }
                };
                match current.and_then(|n| n.checked_add(1)) {
                    Some(n) => {
                        if self.value.is_none() {
                            self.deadline = None;
                        }
                        self.value = Some(n.to_string().into_bytes());
                        OpResult::Int(n)
                    }
                    None => OpResult::Error,
                }
            }
            Op::Del => {
                let existed = self.value.take().is_some();
                self.deadline = None;
                OpResult::Int(existed as i64)
            }
            Op::Expire { ms } => {
                if self.value.is_none() {
                    return OpResult::Int(0);
                }
                if *ms == 0 {
                    *self = RefKey::default();
                } else {
                    self.deadline = Some(now + *ms as i64 * 1000);
                }
                OpResult::Int(1)
            }
        }
    }
}

/// xorshift64*: deterministic randomness for generated histories that are not proptest's.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random op over a few values, with TTLs short enough to expire during the history.
pub fn random_op(rng: &mut Rng) -> Op {
    let values = ["a", "b", "c", "1", "7"];
    let v = values[rng.below(values.len() as u64) as usize].to_string().into_bytes();
    match rng.below(20) {
        0..=5 => Op::Get,
        6..=8 => Op::Set { value: v, cond: SetCond::None, ttl_ms: None },
        9..=10 => Op::Set { value: v, cond: SetCond::None, ttl_ms: Some(1 + rng.below(30)) },
        11 => Op::Set { value: v, cond: SetCond::Nx, ttl_ms: None },
        12 => Op::Set { value: v, cond: SetCond::Xx, ttl_ms: None },
        13 => {
            let old = values[rng.below(values.len() as u64) as usize].to_string().into_bytes();
            Op::Set { value: v, cond: SetCond::IfEq(old), ttl_ms: None }
        }
        14..=16 => Op::Incr,
        17 => Op::Del,
        _ => Op::Expire { ms: rng.below(40) },
    }
}

/// `clients` clients each issuing ops back to back on `keys` keys; every op takes effect at a random
/// instant of its window, and the reference executes them in that order. Linearizable by construction.
/// `lost`: per-mille of ops whose outcome is recorded as unknown (half of them took effect).
pub fn simulate(seed: u64, clients: u32, ops: usize, keys: usize, lost: u64) -> Vec<Entry> {
    simulate_with_clocks(seed, clients, ops, keys, lost, &[0], 1)
}

/// The same through proxies whose clocks are `offsets` µs ahead of the recorder's, ticking every `tick`
/// µs: client `c` goes through proxy `c % offsets.len()`, which judges expiry and sets TTLs by its own
/// clock. Linearizable by construction when the clock skew allowed is at least the largest difference
/// between two offsets (and judged per observer, unless they are all equal).
pub fn simulate_with_clocks(
    seed: u64,
    clients: u32,
    ops: usize,
    keys: usize,
    lost: u64,
    offsets: &[i64],
    tick: i64,
) -> Vec<Entry> {
    let mut rng = Rng(seed.wrapping_mul(2).wrapping_add(1));
    let mut clock = vec![0u64; clients as usize];
    // (point, entry, took effect)
    let mut planned: Vec<(u64, Entry, bool)> = Vec::with_capacity(ops);
    for i in 0..ops {
        let c = (i % clients as usize) as u32;
        let inv = clock[c as usize] + rng.below(2_000);
        let comp = inv + 100 + rng.below(5_000);
        clock[c as usize] = comp;
        let point = inv + rng.below(comp - inv + 1);
        let key = format!("k{}", rng.below(keys as u64));
        let op = random_op(&mut rng);
        let unknown = rng.below(1000) < lost;
        let effect = !unknown || rng.below(2) == 0;
        let mut e = Entry::ok(c, key, op, inv, comp, OpResult::Nil);
        if unknown {
            e.completed_at_us = None;
            e.result = None;
        }
        planned.push((point, e, effect));
    }
    planned.sort_by_key(|(p, _, _)| *p);
    let mut state: std::collections::HashMap<Vec<u8>, RefKey> = Default::default();
    let mut out: Vec<Entry> = Vec::with_capacity(ops);
    for (point, mut e, effect) in planned {
        if effect {
            let clock = point as i64 + offsets[e.client as usize % offsets.len()];
            let r = state.entry(e.key.clone()).or_default().exec_on_clock(&e.op, clock, tick);
            if e.result.is_some() {
                e.result = Some(r);
            }
        }
        out.push(e);
    }
    out.sort_by_key(|e| e.invoked_at_us);
    out
}
