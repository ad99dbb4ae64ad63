//! The sequential specification the search linearizes against: one key's value, its expiry, and the time.
//!
//! Time is the only continuous part of the state. The linearization points of the ops linearized so far are
//! unknown; what the future depends on is the last of them (`p`: the next op's point must be ≥ it) and the
//! key's expiry instant (`e`). The constraints on them are all differences (`x - y ≤ c`; an op's own clock
//! error only widens its own constraint by a constant, see [`Model::band`]), so the set of possible
//! `(p, e)` is a zone that a 3×3 difference-bound matrix describes exactly; see [`Expiry`].

use std::collections::{HashMap, HashSet};

use crate::history::{Op, OpResult, SetCond};

/// "No bound". Times that come from a history are validated to be below [`MAX_TIME`], so sums of two finite
/// bounds never reach it.
pub(crate) const INF: i64 = 1 << 61;
/// The largest time or TTL (µs) taken from a history: about 1,140 years.
pub(crate) const MAX_TIME: i64 = 1 << 55;

/// A value, canonical so that equal bytes are equal `Val`s: a byte string that Redis's `string2ll` accepts
/// is stored as the integer (there is exactly one such spelling of every i64), any other as an interned id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Val {
    Int(i64),
    Bytes(u32),
}

/// Interns one key's byte strings, so states are small and `Copy`.
#[derive(Default)]
pub(crate) struct Interner {
    ids: HashMap<Vec<u8>, u32>,
    /// Values some op can tell apart from others: GET results and IFEQ operands.
    observable: HashSet<Vec<u8>>,
}

/// Every written value that no op can tell apart from another: no GET returned it, no IFEQ compares with
/// it, and it is not an integer (which INCR would reveal). Such values behave identically in every
/// respect (present, not an integer, equal to nothing anyone asks about), so they are one value to the
/// search, and two lost writes of different unread values are the same op: far fewer configurations.
pub(crate) const OPAQUE: u32 = u32::MAX;

impl Interner {
    /// Notes, before anything is lowered, a value that some op observes.
    pub(crate) fn observe(&mut self, bytes: &[u8]) {
        self.observable.insert(bytes.to_vec());
    }

    /// A value that is written.
    pub(crate) fn written(&mut self, bytes: &[u8]) -> Val {
        if parse_redis_int(bytes).is_none() && !self.observable.contains(bytes) {
            return Val::Bytes(OPAQUE);
        }
        self.val(bytes)
    }

    /// A value that is observed (or compared with).
    pub(crate) fn val(&mut self, bytes: &[u8]) -> Val {
        if let Some(n) = parse_redis_int(bytes) {
            return Val::Int(n);
        }
        let next = self.ids.len() as u32;
        Val::Bytes(*self.ids.entry(bytes.to_vec()).or_insert(next))
    }
}

/// Redis's `string2ll`: optional `-`, no `+`, no leading zeros, no `-0`, no spaces, within i64.
pub(crate) fn parse_redis_int(b: &[u8]) -> Option<i64> {
    if b == b"0" {
        return Some(0);
    }
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ICond {
    None,
    Nx,
    Xx,
    IfEq(Val),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IOp {
    Get,
    /// `ttl`: µs.
    Set {
        value: Val,
        cond: ICond,
        ttl: Option<i64>,
    },
    Incr,
    Del,
    /// `ttl`: µs; 0 deletes.
    Expire {
        ttl: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IRes {
    Nil,
    Value(Val),
    Ok,
    Int(i64),
    Error,
}

/// One op of one key's history, ready for the search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IEntry {
    pub op: IOp,
    /// `None`: unknown outcome.
    pub res: Option<IRes>,
    pub inv: i64,
    /// `INF`: the op may take effect at any time after `inv`, or never (its outcome is unknown, or it is
    /// optional in a window of the history); `res` is then checked only if it takes effect.
    pub comp: i64,
    /// Position in the caller's history.
    pub index: usize,
}

pub(crate) fn ttl_us(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1000)).unwrap_or(MAX_TIME).min(MAX_TIME)
}

pub(crate) fn lower_op(op: &Op, interner: &mut Interner) -> IOp {
    match op {
        Op::Get => IOp::Get,
        Op::Set { value, cond, ttl_ms } => IOp::Set {
            value: interner.written(value),
            cond: match cond {
                SetCond::None => ICond::None,
                SetCond::Nx => ICond::Nx,
                SetCond::Xx => ICond::Xx,
                SetCond::IfEq(v) => ICond::IfEq(interner.val(v)),
            },
            ttl: ttl_ms.map(ttl_us),
        },
        Op::Incr => IOp::Incr,
        Op::Del => IOp::Del,
        Op::Expire { ms } => IOp::Expire { ttl: ttl_us(*ms) },
    }
}

pub(crate) fn lower_result(res: &OpResult, interner: &mut Interner) -> IRes {
    match res {
        OpResult::Nil => IRes::Nil,
        OpResult::Value(v) => IRes::Value(interner.val(v)),
        OpResult::Ok => IRes::Ok,
        OpResult::Int(n) => IRes::Int(*n),
        OpResult::Error => IRes::Error,
    }
}

/// Whether `res` is a reply `op` can give at all (checked before the search, so that a recorder that files
/// a SET's error reply as a definite `Error` is told so instead of getting a "violation").
pub(crate) fn result_fits(op: &Op, res: &OpResult) -> bool {
    matches!(
        (op, res),
        (Op::Get, OpResult::Nil | OpResult::Value(_))
            | (Op::Set { .. }, OpResult::Ok | OpResult::Nil)
            | (Op::Incr, OpResult::Int(_) | OpResult::Error)
            | (Op::Del | Op::Expire { .. }, OpResult::Int(_))
    )
}

/// The key's expiry instant `e`, relative to the last linearization point `p`: `lo ≤ e ≤ hi` and
/// `e - p ≤ d`.
///
/// This is the zone of possible `(p, e)` closed upwards in `p`, which loses nothing: the future only ever
/// asks `p ≤ q` of `p` (q: a later point), so a larger `p` never allows more than a smaller one with the
/// same `e`, and the smallest `p` for each `e` is `max(t, e - d)`. Bounds are canonical (tightest), so
/// equal zones are equal values and the search's cache recognises them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Expiry {
    pub lo: i64,
    pub hi: i64,
    pub d: i64,
}

/// A search state: what a linearized prefix leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct State {
    /// `None`: absent (never written, deleted, or expired for every op to come).
    pub val: Option<Val>,
    /// `None`: no TTL. Always `None` when `val` is.
    pub exp: Option<Expiry>,
    /// The earliest the last linearization point can be.
    pub t: i64,
}

impl State {
    pub(crate) const INITIAL: State = State { val: None, exp: None, t: -INF };
}

/// Where the op's point can be, and what that says about the key.
struct Branch {
    /// Whether the key is there *for this op* when it takes effect (with per-observer clocks, another op
    /// at the same instant may judge otherwise).
    present: bool,
    /// Whether the key, present before, is judged expired by this op: then it still holds its value and
    /// TTL for the ops after it, unless the model has a single clock (see [`Model::band`]).
    judged_expired: bool,
    /// Earliest and latest point of the op.
    t: i64,
    latest: i64,
    /// The key's expiry, narrowed by this op's reading of it, when the key has one.
    exp: Option<Expiry>,
}

fn add(a: i64, b: i64) -> i64 {
    if a >= INF || b >= INF {
        INF
    } else {
        (a + b).clamp(-INF, INF)
    }
}

/// Difference-bound matrix over 0 (the time origin), `p` (the last point), `e` (the expiry), `q` (the new
/// op's point): `m[i][j]` bounds `x_i - x_j`.
const Z: usize = 0;
const P: usize = 1;
const E: usize = 2;
const Q: usize = 3;

fn close(m: &mut [[i64; 4]; 4]) -> bool {
    for k in 0..4 {
        for i in 0..4 {
            for j in 0..4 {
                let via = add(m[i][k], m[k][j]);
                if via < m[i][j] {
                    m[i][j] = via;
                }
            }
        }
    }
    (0..4).all(|i| m[i][i] >= 0)
}

/// The op's point `q` when the key has a TTL, judged by a clock that may be off by up to `band` either way:
/// live (`q + ε < e` for some `|ε| ≤ band`, that is `q - e < band`) or expired (`q + ε ≥ e`, that is
/// `e - q ≤ band`). The op's own `ε` appears in no other constraint, so projecting it out right here is
/// exact. Both boundaries are taken closed: at `q - e = band` either reading is accepted, which only makes
/// the checker more permissive, never less.
fn timed_branch(st: &State, exp: Expiry, inv: i64, comp: i64, band: i64, live: bool) -> Option<Branch> {
    let mut m = [[INF; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 0;
    }
    m[Z][P] = if st.t <= -INF { INF } else { -st.t };
    m[E][Z] = exp.hi;
    m[Z][E] = -exp.lo;
    m[E][P] = exp.d;
    m[P][Q] = 0;
    m[Q][Z] = comp;
    m[Z][Q] = -inv;
    if live {
        m[Q][E] = band;
    } else {
        m[E][Q] = band;
    }
    if !close(&mut m) {
        return None;
    }
    Some(Branch {
        present: live,
        judged_expired: !live,
        t: -m[Z][Q],
        latest: m[Q][Z],
        exp: Some(Expiry { lo: -m[Z][E], hi: m[E][Z], d: m[E][Q] }),
    })
}

/// What an op does to the key.
enum Effect {
    Nothing,
    Write { val: Val, ttl: TtlEffect },
    Delete,
    SetTtl(i64),
}

enum TtlEffect {
    Clear,
    Keep,
    New(i64),
}

fn apply(op: IOp, cur: Option<Val>) -> (IRes, Effect) {
    match op {
        IOp::Get => (cur.map_or(IRes::Nil, IRes::Value), Effect::Nothing),
        IOp::Set { value, cond, ttl } => {
            let written = match cond {
                ICond::None => true,
                ICond::Nx => cur.is_none(),
                ICond::Xx => cur.is_some(),
                ICond::IfEq(v) => cur == Some(v),
            };
            if written {
                let ttl = ttl.map_or(TtlEffect::Clear, TtlEffect::New);
                (IRes::Ok, Effect::Write { val: value, ttl })
            } else {
                (IRes::Nil, Effect::Nothing)
            }
        }
        IOp::Incr => match cur {
            None => (IRes::Int(1), Effect::Write { val: Val::Int(1), ttl: TtlEffect::Clear }),
            Some(Val::Int(n)) => match n.checked_add(1) {
                Some(n) => (IRes::Int(n), Effect::Write { val: Val::Int(n), ttl: TtlEffect::Keep }),
                None => (IRes::Error, Effect::Nothing),
            },
            Some(Val::Bytes(_)) => (IRes::Error, Effect::Nothing),
        },
        IOp::Del => match cur {
            Some(_) => (IRes::Int(1), Effect::Delete),
            None => (IRes::Int(0), Effect::Nothing),
        },
        IOp::Expire { ttl } => match cur {
            Some(_) if ttl == 0 => (IRes::Int(1), Effect::Delete),
            Some(_) => (IRes::Int(1), Effect::SetTtl(ttl)),
            None => (IRes::Int(0), Effect::Nothing),
        },
    }
}

/// The sequential specification, with the configured clock tolerance.
///
/// An op at point `q` judges the key live iff `q + ε < e`, `e` being the key's expiry instant and `ε` the
/// op's own clock error, `|ε| ≤ band`, chosen independently for every op. `band == 0` is a single clock:
/// once an op has seen the key expired, every later op does.
pub(crate) struct Model {
    /// µs by which an expiry instant may differ from (write's point + TTL): 1 ms for the servers'
    /// millisecond clocks, plus the configured clock skew when it is not judged per observer.
    pub slack: i64,
    /// µs by which each op's own clock may judge the expiry early or late: the configured clock skew when
    /// it is judged per observer, 0 otherwise.
    pub band: i64,
}

impl Model {
    fn new_expiry(&self, ttl: i64, t: i64, latest: i64) -> Expiry {
        Expiry { lo: t + ttl - self.slack, hi: add(latest, ttl + self.slack), d: ttl + self.slack }
    }

    /// Pushes onto `out` every state the op can leave behind when it is linearized next after `st`, given
    /// its recorded result (none if it cannot be linearized there).
    pub(crate) fn step(&self, st: &State, e: &IEntry, out: &mut Vec<State>) {
        out.clear();
        let base = st.t.max(e.inv);
        let mut branches: [Option<Branch>; 2] = [None, None];
        match (st.val, st.exp) {
            (Some(_), Some(exp)) if !matches!(e.op, IOp::Set { cond: ICond::None, .. }) => {
                branches[0] = timed_branch(st, exp, e.inv, e.comp, self.band, true);
                branches[1] = timed_branch(st, exp, e.inv, e.comp, self.band, false);
            }
            // An unconditional SET does the same whether or not the key expired just before: one branch
            // with the op's whole window (the union of both) instead of two.
            _ if base <= e.comp => {
                branches[0] = Some(Branch {
                    present: st.val.is_some(),
                    judged_expired: false,
                    t: base,
                    latest: e.comp,
                    exp: st.exp,
                });
            }
            _ => {}
        }
        for b in branches.into_iter().flatten() {
            let cur = if b.present { st.val } else { None };
            let (res, effect) = apply(e.op, cur);
            if e.res.is_some_and(|want| want != res) {
                continue;
            }
            let (val, exp) = match effect {
                // A single clock: what one op saw expired stays expired for all (exactly at `e` the
                // boundary is permissive, and must not let the key come back).
                Effect::Nothing if b.judged_expired && self.band == 0 => (None, None),
                // Otherwise an op that judged the key expired and wrote nothing leaves it as it was, with
                // its TTL: an op after it, judging by another clock, may still see it live (within the band).
                Effect::Nothing => (st.val, b.exp),
                Effect::Delete => (None, None),
                Effect::Write { val, ttl: TtlEffect::Clear } => (Some(val), None),
                // INCR of an absent key: `b.exp` is None, as it should be.
                Effect::Write { val, ttl: TtlEffect::Keep } => (Some(val), b.exp),
                Effect::Write { val, ttl: TtlEffect::New(ttl) } => {
                    (Some(val), Some(self.new_expiry(ttl, b.t, b.latest)))
                }
                Effect::SetTtl(ttl) => (cur, Some(self.new_expiry(ttl, b.t, b.latest))),
            };
            let mut next = State { val, exp, t: b.t };
            // Expired for every op to come, whatever its clock (each one's point q is ≥ t > e + band, or
            // ≥ p > e + band): forget it now, so that states which differ only in a dead TTL meet in the
            // cache.
            if next.exp.is_some_and(|x| next.t > add(x.hi, self.band) || x.d < -self.band) || next.val.is_none() {
                next.val = None;
                next.exp = None;
            }
            if !out.contains(&next) {
                out.push(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_integers_are_strict() {
        for (s, want) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("-12", Some(-12)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1.0", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(parse_redis_int(s.as_bytes()), want, "{s:?}");
        }
    }

    #[test]
    fn integers_and_their_bytes_are_the_same_value() {
        let mut i = Interner::default();
        i.observe(b"x");
        assert_eq!(i.written(b"x"), i.val(b"x"));
        assert_eq!(i.written(b"7"), Val::Int(7));
        assert_eq!(i.written(b"y"), i.written(b"z"), "neither is observed");
        assert_ne!(i.written(b"y"), i.val(b"x"));
        assert_eq!(i.val(b"42"), Val::Int(42));
        assert_eq!(i.val(b"x"), i.val(b"x"));
        assert_ne!(i.val(b"x"), i.val(b"y"));
        assert_ne!(i.val(b"042"), Val::Int(42));
    }

    fn entry(op: IOp, res: IRes, inv: i64, comp: i64) -> IEntry {
        IEntry { op, res: Some(res), inv, comp, index: 0 }
    }

    #[test]
    fn a_ttl_is_judged_against_the_write_window() {
        let model = Model { slack: 0, band: 0 };
        let mut out = Vec::new();
        let set = entry(IOp::Set { value: Val::Int(5), cond: ICond::None, ttl: Some(100) }, IRes::Ok, 0, 10);
        model.step(&State::INITIAL, &set, &mut out);
        assert_eq!(out, vec![State { val: Some(Val::Int(5)), exp: Some(Expiry { lo: 100, hi: 110, d: 100 }), t: 0 }]);
        let st = out[0];
        // Before 100: live for sure; after 110: gone for sure; in between (bounds included), either.
        for (inv, comp, live, gone) in
            [(50, 99, true, false), (111, 120, false, true), (105, 106, true, true), (110, 110, true, true)]
        {
            let get = entry(IOp::Get, IRes::Value(Val::Int(5)), inv, comp);
            model.step(&st, &get, &mut out);
            assert_eq!(!out.is_empty(), live, "GET → 5 in [{inv}, {comp}]");
            let get = entry(IOp::Get, IRes::Nil, inv, comp);
            model.step(&st, &get, &mut out);
            assert_eq!(!out.is_empty(), gone, "GET → nil in [{inv}, {comp}]");
        }
    }

    #[test]
    fn each_op_judges_the_expiry_with_its_own_clock() {
        // e in [100, 110]; each reading may be off by 20 either way.
        let model = Model { slack: 0, band: 20 };
        let mut out = Vec::new();
        let set = entry(IOp::Set { value: Val::Int(5), cond: ICond::None, ttl: Some(100) }, IRes::Ok, 0, 10);
        model.step(&State::INITIAL, &set, &mut out);
        let st = out[0];
        for (inv, comp, live, gone) in
            [(50, 79, true, false), (131, 140, false, true), (80, 81, true, true), (125, 130, true, true)]
        {
            model.step(&st, &entry(IOp::Get, IRes::Value(Val::Int(5)), inv, comp), &mut out);
            assert_eq!(!out.is_empty(), live, "GET → 5 in [{inv}, {comp}]");
            model.step(&st, &entry(IOp::Get, IRes::Nil, inv, comp), &mut out);
            assert_eq!(!out.is_empty(), gone, "GET → nil in [{inv}, {comp}]");
        }
        // Seen expired at 85: the key keeps its value, e ≤ 105, and a later op may see it live until 125.
        model.step(&st, &entry(IOp::Get, IRes::Nil, 85, 85), &mut out);
        assert_eq!(out, vec![State { val: Some(Val::Int(5)), exp: Some(Expiry { lo: 100, hi: 105, d: 20 }), t: 85 }]);
        let seen = out[0];
        model.step(&seen, &entry(IOp::Get, IRes::Value(Val::Int(5)), 124, 125), &mut out);
        assert_eq!(out.len(), 1);
        model.step(&seen, &entry(IOp::Get, IRes::Value(Val::Int(5)), 126, 127), &mut out);
        assert!(out.is_empty());
        // Once no clock can see it live, it is forgotten.
        model.step(&seen, &entry(IOp::Get, IRes::Nil, 126, 127), &mut out);
        assert_eq!(out, vec![State { val: None, exp: None, t: 126 }]);
        // An INCR that judges it expired starts afresh, without a TTL.
        model.step(&seen, &entry(IOp::Incr, IRes::Int(1), 90, 91), &mut out);
        assert_eq!(out, vec![State { val: Some(Val::Int(1)), exp: None, t: 90 }]);
        // With one clock, seen expired is final.
        let one = Model { slack: 20, band: 0 };
        one.step(&State::INITIAL, &set, &mut out);
        let st = out[0];
        one.step(&st, &entry(IOp::Get, IRes::Nil, 85, 85), &mut out);
        assert_eq!(out, vec![State { val: None, exp: None, t: 85 }]);
    }

    #[test]
    fn the_expiry_stays_tied_to_a_write_of_unknown_outcome() {
        // An unknown SET PX 100 invoked at 0, seen by a GET that ended at 1000: it took effect by 1000, so
        // the key is gone by 1100 even though the SET itself never completed.
        let model = Model { slack: 0, band: 0 };
        let mut out = Vec::new();
        let set = IEntry {
            op: IOp::Set { value: Val::Int(5), cond: ICond::None, ttl: Some(100) },
            res: None,
            inv: 0,
            comp: INF,
            index: 0,
        };
        model.step(&State::INITIAL, &set, &mut out);
        assert_eq!(out[0].exp.map(|x| x.hi), Some(INF));
        model.step(&out[0].clone(), &entry(IOp::Get, IRes::Value(Val::Int(5)), 900, 1000), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].exp.map(|x| x.hi), Some(1100));
        let st = out[0];
        model.step(&st, &entry(IOp::Get, IRes::Value(Val::Int(5)), 1200, 1300), &mut out);
        assert!(out.is_empty());
    }
}
