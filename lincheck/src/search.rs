//! Wing & Gong's search with Lowe's memoisation, in Porcupine's formulation: one key's call and return
//! events in a doubly linked list; linearizing an op lifts its events out of the list; an op can be
//! linearized next iff its call comes before the first return still in the list (no op still to be
//! linearized finished before it started). Backtracking re-inserts them. A cache of configurations (set of
//! linearized ops, state) already explored cuts the search to the distinct configurations.
//!
//! Ops of unknown outcome have no return event: they can be linearized at any point after their call, and
//! the history is linearizable once every op with a known outcome is (the others took effect after all of
//! them, which nothing observed, or never). Such an op may still carry a result, which then must hold if it
//! is linearized (an op that may or may not have happened inside a window of the history, see `check`). They sit in a list of their own, so that the known ops' list
//! stays as short as the concurrency however many replies were lost.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::model::{Expiry, IEntry, IOp, IRes, Model, State, Val, INF};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Linearizable,
    Violation,
    /// The step budget ran out first.
    Undecided,
}

/// A doubly linked list over nodes `0..len`: 0 is the head, `len - 1` the tail. Nodes keep their own links
/// while unlinked, so re-linking in the reverse order of unlinking restores the list.
struct List {
    prev: Vec<usize>,
    next: Vec<usize>,
}

const HEAD: usize = 0;

impl List {
    fn new(len: usize) -> List {
        List {
            prev: (0..len).map(|i| i.saturating_sub(1)).collect(),
            next: (0..len).map(|i| (i + 1).min(len - 1)).collect(),
        }
    }
    fn tail(&self) -> usize {
        self.next.len() - 1
    }
    fn first(&self) -> usize {
        self.next[HEAD]
    }
    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        self.prev[x] = p;
    }
    fn relink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        self.prev[x] = n;
    }
}

/// The ops of known outcome as call and return events, in time order (calls before returns at the same
/// instant: two ops touching at one microsecond count as concurrent, the permissive reading); the ops of
/// unknown outcome as calls only, in their own list.
struct Events {
    known: List,
    /// Per node of `known`: its op, and whether it is a call.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// Per node of `known` that is a return: how many returns come before it.
    ret_rank: Vec<usize>,
    unknown: List,
    /// Per node of `unknown`: its op.
    uop: Vec<usize>,
    /// Per op: its call node (in its list), and its return node.
    call_of: Vec<usize>,
    ret_of: Vec<usize>,
}

impl Events {
    fn new(ops: &[IEntry]) -> Events {
        let mut order: Vec<(i64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        let mut uorder: Vec<(i64, usize)> = Vec::new();
        for (i, e) in ops.iter().enumerate() {
            if e.comp < INF {
                order.push((e.inv, 0, i));
                order.push((e.comp, 1, i));
            } else {
                uorder.push((e.inv, i));
            }
        }
        order.sort_unstable();
        uorder.sort_unstable();
        let len = order.len() + 2;
        let mut ev = Events {
            known: List::new(len),
            op: vec![usize::MAX; len],
            is_call: vec![false; len],
            ret_rank: vec![0; len],
            unknown: List::new(uorder.len() + 2),
            uop: vec![usize::MAX; uorder.len() + 2],
            call_of: vec![0; ops.len()],
            ret_of: vec![0; ops.len()],
        };
        let mut rank = 0;
        for (n, &(_, kind, i)) in order.iter().enumerate() {
            let node = n + 1;
            ev.op[node] = i;
            if kind == 0 {
                ev.is_call[node] = true;
                ev.call_of[i] = node;
            } else {
                ev.ret_of[i] = node;
                ev.ret_rank[node] = rank;
                rank += 1;
            }
        }
        for (n, &(_, i)) in uorder.iter().enumerate() {
            ev.uop[n + 1] = i;
            ev.call_of[i] = n + 1;
        }
        ev
    }

    fn lift(&mut self, op: usize, known: bool) {
        if known {
            self.known.unlink(self.call_of[op]);
            self.known.unlink(self.ret_of[op]);
        } else {
            self.unknown.unlink(self.call_of[op]);
        }
    }

    fn unlift(&mut self, op: usize, known: bool) {
        if known {
            self.known.relink(self.ret_of[op]);
            self.known.relink(self.call_of[op]);
        } else {
            self.unknown.relink(self.call_of[op]);
        }
    }

    /// The first return still in the list: the op that cannot be put off any longer.
    fn first_return(&self) -> Option<usize> {
        let mut node = self.known.first();
        while node != self.known.tail() {
            if !self.is_call[node] {
                return Some(node);
            }
            node = self.known.next[node];
        }
        None
    }
}

/// The set of linearized ops, and its compact forms for the cache.
struct Linearized {
    bits: Vec<u64>,
    /// Which ops have a known outcome.
    known: Vec<u64>,
    /// The linearized ops of unknown outcome, by their rank among those ops.
    unknown_bits: Vec<u64>,
    /// Each op's rank among the ops of unknown outcome (unused for the others).
    unknown_rank: Vec<usize>,
    /// [`Linearized::refresh_key`] and its hash, while the ops of known outcome linearized stay the same
    /// (trying the ops of unknown outcome at one configuration does not change them).
    key: Vec<u32>,
    key_hash: u64,
    key_valid: bool,
}

impl Linearized {
    fn new(ops: &[IEntry]) -> Linearized {
        let words = ops.len().div_ceil(64).max(1);
        let mut lin = Linearized {
            bits: vec![0; words],
            known: vec![0; words],
            unknown_bits: Vec::new(),
            unknown_rank: vec![0; ops.len()],
            key: Vec::new(),
            key_hash: 0,
            key_valid: false,
        };
        let mut unknown = 0;
        for (i, e) in ops.iter().enumerate() {
            if e.comp < INF {
                lin.known[i / 64] |= 1 << (i % 64);
            } else {
                lin.unknown_rank[i] = unknown;
                unknown += 1;
            }
        }
        lin.unknown_bits = vec![0; unknown.div_ceil(64).max(1)];
        lin
    }

    fn has(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_known(&self, i: usize) -> bool {
        self.known[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        self.bits[i / 64] |= 1 << (i % 64);
        if self.is_known(i) {
            self.key_valid = false;
        } else {
            let u = self.unknown_rank[i];
            self.unknown_bits[u / 64] |= 1 << (u % 64);
        }
    }

    fn clear(&mut self, i: usize) {
        self.bits[i / 64] &= !(1 << (i % 64));
        if self.is_known(i) {
            self.key_valid = false;
        } else {
            let u = self.unknown_rank[i];
            self.unknown_bits[u / 64] &= !(1 << (u % 64));
        }
    }

    /// The linearized ops of known outcome. Ops are in invocation order, so that set is nearly always
    /// "everything before k, plus a few ops after": stored as k and the ops from k on that are in it (a
    /// bitset per cache entry would cost n/8 bytes).
    fn refresh_key(&mut self) {
        if !self.key_valid {
            let words = self.bits.len();
            let k = (0..words)
                .find_map(|w| {
                    let missing = self.known[w] & !self.bits[w];
                    (missing != 0).then(|| w * 64 + missing.trailing_zeros() as usize)
                })
                .unwrap_or(words * 64);
            self.key.clear();
            self.key.push(k as u32);
            for w in k / 64..words {
                let mut word = self.bits[w] & self.known[w];
                if w == k / 64 {
                    word &= !0u64 << (k % 64);
                }
                while word != 0 {
                    self.key.push((w * 64) as u32 + word.trailing_zeros());
                    word &= word - 1;
                }
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.key.hash(&mut h);
            self.key_hash = h.finish();
            self.key_valid = true;
        }
    }
}

/// Configurations already explored (and so, while the search goes on, known to lead nowhere).
///
/// A configuration is skipped when an explored one *covers* it: the same ops of known outcome linearized,
/// the same value, a zone that contains its zone, and a subset of its ops of unknown outcome linearized.
/// Every way to go on from the covered one is then a way to go on from the covering one, which has none:
/// the zone is exact, so a larger zone allows everything a smaller one does, and an op of unknown outcome
/// not yet linearized can always be left out for good. Different orders of the same ops often leave the
/// same value with slightly different zones (a later earliest point, a narrower expiry), and a write of
/// unknown outcome that was later overwritten leaves the same value as not doing it, so this cuts far more
/// than equality would.
///
/// Indexed by the hash of the known set (so a lookup allocates nothing) and the value.
#[derive(Default)]
struct Explored {
    map: HashMap<(u64, Option<Val>), Vec<Seen>>,
}

struct Seen {
    known: Box<[u32]>,
    unknown: Box<[u64]>,
    state: State,
}

impl Explored {
    /// Records the configuration; false if an explored one covers it.
    fn insert(&mut self, lin: &mut Linearized, s: &State) -> bool {
        lin.refresh_key();
        let (known, hash) = (&lin.key, lin.key_hash);
        let seen = self.map.entry((hash, s.val)).or_default();
        let unknown = &lin.unknown_bits;
        if seen.iter().any(|x| *x.known == *known && subset(&x.unknown, unknown) && covers(&x.state, s)) {
            return false;
        }
        seen.retain(|x| !(*x.known == *known && subset(unknown, &x.unknown) && covers(s, &x.state)));
        seen.push(Seen { known: known.as_slice().into(), unknown: unknown.clone().into_boxed_slice(), state: *s });
        true
    }
}

fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// Whether `a`'s zone contains `b`'s (same value assumed). Canonical bounds: inclusion is bound by bound.
fn covers(a: &State, b: &State) -> bool {
    a.t <= b.t
        && match (a.exp, b.exp) {
            (None, None) => true,
            (Some(x), Some(y)) => x.lo <= y.lo && y.hi <= x.hi && y.d <= x.d,
            _ => false,
        }
}

/// Where the scan for the next candidate is: at a node of the known ops' list or of the unknown ops'.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    Known(usize),
    Unknown(usize),
}

struct Frame {
    op: usize,
    before: State,
    succ: [State; 2],
    n_succ: usize,
    next_succ: usize,
    /// Taken without trying the alternatives (see [`observer`]): when it fails, so does the configuration
    /// it was taken from.
    forced: bool,
}

pub(crate) struct Searched {
    pub outcome: Outcome,
    pub steps: u64,
    /// The most ops with a known outcome, counted in order of completion, that some explored configuration
    /// had all linearized: the history cut just after the last of them completed is linearizable.
    pub progress: usize,
}

/// Whether an op, as recorded, leaves the key as it was (a read, a refused write).
fn observer(e: &IEntry) -> bool {
    matches!(
        (e.op, e.res),
        (IOp::Get, Some(_))
            | (IOp::Set { .. }, Some(IRes::Nil))
            | (IOp::Incr, Some(IRes::Error))
            | (IOp::Del | IOp::Expire { .. }, Some(IRes::Int(0)))
    )
}

/// Decides whether `ops` (one key's, sorted by invocation) are linearizable, within `max_steps` calls of the
/// model's step function.
///
/// Both orders of trying candidates are complete; they differ in how fast they get there. Trying ops of
/// unknown outcome first finds a linearization of a lossy history far sooner (writes whose replies were
/// lost mostly did take effect); trying them last exhausts a failing history in fewer configurations (the
/// configurations that leave a lost write out come first, and then cover the ones that use it). So: the
/// first order on a quarter of the budget, then the second on the rest.
pub(crate) fn search(model: &Model, ops: &[IEntry], max_steps: u64) -> Searched {
    search_from(model, ops, State::INITIAL, Mode::Exact, max_steps)
}

/// How ops of unknown outcome may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Once at most: the model itself.
    Exact,
    /// Any number of times, except INCRs (whose repetition the state could not bound). This allows more
    /// than the model, so it can only prove violations (if even this finds no linearization, there is
    /// none); but it spares the search every choice of which of them were used, which is what explodes
    /// when many replies were lost.
    Relaxed,
}

/// The same, from a given state instead of an absent key, and with a choice of [`Mode`].
pub(crate) fn search_from(model: &Model, ops: &[IEntry], initial: State, mode: Mode, max_steps: u64) -> Searched {
    // A relaxed search is there to prove a violation, that is, to exhaust: no quick first try.
    if mode == Mode::Relaxed || ops.iter().all(|e| e.comp < INF) {
        return run(model, ops, initial, mode, max_steps, true, &mut Explored::default());
    }
    let quick = run(model, ops, initial, mode, max_steps / 4, false, &mut Explored::default());
    if quick.outcome != Outcome::Undecided {
        return quick;
    }
    // A fresh cache: the quick search stopped in the middle of configurations it had entered.
    let slow = run(model, ops, initial, mode, max_steps - quick.steps, true, &mut Explored::default());
    Searched { outcome: slow.outcome, steps: quick.steps + slow.steps, progress: quick.progress.max(slow.progress) }
}

/// Whether no linearization in [`Mode::Relaxed`] starts from any of `initials`: `Violation` if none does,
/// `Linearizable` as soon as one does, `Undecided` when the budget ran out first.
///
/// The searches share their cache: a configuration that one of them exhausted leads nowhere from any
/// other start either, and starts that differ only in a value soon overwritten meet again.
pub(crate) fn refute_from_all(model: &Model, ops: &[IEntry], initials: &[State], max_steps: u64) -> Searched {
    let mut cache = Explored::default();
    let mut total = Searched { outcome: Outcome::Violation, steps: 0, progress: 0 };
    for &initial in initials {
        let r = run(model, ops, initial, Mode::Relaxed, max_steps - total.steps, true, &mut cache);
        total.steps += r.steps;
        total.progress = total.progress.max(r.progress);
        if r.outcome != Outcome::Violation {
            // (After an undecided run the cache holds configurations not exhausted: it is not reused.)
            total.outcome = r.outcome;
            break;
        }
    }
    total
}

fn run(
    model: &Model,
    ops: &[IEntry],
    initial: State,
    mode: Mode,
    max_steps: u64,
    known_first: bool,
    cache: &mut Explored,
) -> Searched {
    let mut lin = Linearized::new(ops);
    let known = |op: usize| ops[op].comp < INF;
    // A reusable op is never marked linearized nor lifted: it is a transition always available.
    let reusable = |op: usize| mode == Mode::Relaxed && !known(op) && ops[op].op != IOp::Incr;
    let n_known = ops.iter().filter(|e| e.comp < INF).count();
    let mut ev = Events::new(ops);
    // Ops of unknown outcome that are the same op (SET "x" PX 100 twice, two INCRs) are interchangeable once
    // both were called: any linearization that uses the later one while the earlier is still unused can
    // use the earlier one there instead (its window started sooner), and the later one where the earlier
    // was used, if it was. So they are taken in invocation order, which keeps the search from exploring
    // every choice among twins.
    let mut twin_before: Vec<Option<usize>> = vec![None; ops.len()];
    {
        let mut last: HashMap<(IOp, Option<IRes>), usize> = HashMap::new();
        let mut node = ev.unknown.first();
        while node != ev.unknown.tail() {
            let op = ev.uop[node];
            twin_before[op] = last.insert((ops[op].op, ops[op].res), op);
            node = ev.unknown.next[node];
        }
    }
    let first_pass = |c: Cursor| matches!(c, Cursor::Known(_)) == known_first;
    let start = |known_list: bool, ev: &Events| {
        if known_list {
            Cursor::Known(ev.known.first())
        } else {
            Cursor::Unknown(ev.unknown.first())
        }
    };

    let mut stack: Vec<Frame> = Vec::new();
    let mut state = initial;
    let mut done_known = 0usize;
    let mut steps = 0u64;
    let mut progress = 0usize;
    let mut succ: Vec<State> = Vec::with_capacity(2);
    let mut cursor = start(known_first, &ev);
    // At a configuration not seen yet: look for an op to force first.
    let mut fresh = true;

    loop {
        if done_known == n_known {
            return Searched { outcome: Outcome::Linearizable, steps, progress: n_known };
        }
        let mut backtrack = false;
        if fresh {
            fresh = false;
            progress = progress.max(ev.first_return().map_or(n_known, |r| ev.ret_rank[r]));
            // An op that can go next and leaves the configuration exactly as it is (a read of the current
            // value, say) can be taken first without losing anything: any linearization that takes it later
            // can take it here instead, at the last op's point (its invocation is no later: the zone would
            // have changed), and it comes after nothing that finished after its call. So its alternatives
            // need no exploring, which removes the interleavings of reads from the search.
            let mut node = ev.known.first();
            while node != ev.known.tail() && ev.is_call[node] {
                let op = ev.op[node];
                if observer(&ops[op]) {
                    if steps >= max_steps {
                        return Searched { outcome: Outcome::Undecided, steps, progress };
                    }
                    steps += 1;
                    model.step(&state, &ops[op], &mut succ);
                    if succ.contains(&state) {
                        lin.set(op);
                        if cache.insert(&mut lin, &state) {
                            let frame =
                                Frame { op, before: state, succ: [state; 2], n_succ: 1, next_succ: 1, forced: true };
                            stack.push(frame);
                            ev.lift(op, true);
                            done_known += 1;
                            fresh = true;
                            cursor = start(known_first, &ev);
                        } else {
                            lin.clear(op);
                            backtrack = true;
                        }
                        break;
                    }
                }
                node = ev.known.next[node];
            }
            if fresh {
                continue;
            }
        }
        // The next candidate from the cursor on, if any.
        let mut candidate = None;
        if !backtrack {
            // Unknown ops can go only while their call precedes the first return still waiting.
            let bound = ev.first_return().map_or(INF, |r| ops[ev.op[r]].comp);
            loop {
                let (found, next) = match cursor {
                    Cursor::Known(n) if n != ev.known.tail() && ev.is_call[n] => {
                        (Some(ev.op[n]), Cursor::Known(ev.known.next[n]))
                    }
                    Cursor::Unknown(n) if n != ev.unknown.tail() && ops[ev.uop[n]].inv <= bound => {
                        let op = ev.uop[n];
                        // A reusable op's later twins add nothing at all.
                        let twin_free = match twin_before[op] {
                            None => true,
                            Some(_) if reusable(op) => false,
                            Some(t) => lin.has(t),
                        };
                        (twin_free.then_some(op), Cursor::Unknown(ev.unknown.next[n]))
                    }
                    // The end of this pass: on to the other list, or no candidate left.
                    c if first_pass(c) => (None, start(!known_first, &ev)),
                    _ => break,
                };
                cursor = next;
                if found.is_some() {
                    candidate = found;
                    break;
                }
            }
        }
        if let Some(op) = candidate {
            if steps >= max_steps {
                return Searched { outcome: Outcome::Undecided, steps, progress };
            }
            steps += 1;
            let reuse = reusable(op);
            if reuse {
                // Relaxed further: its point need not be after its invocation, only after the last point,
                // so that the states it leads to do not multiply with the instants it could start from.
                model.step(&state, &IEntry { inv: -INF, ..ops[op] }, &mut succ);
                // And any expiry it sets is only known to lie after now (or as early as its own bound):
                // otherwise each repetition of a PEXPIRE could push it later than the last, without end,
                // and each TTL of each lost write would make states of its own.
                if matches!(ops[op].op, IOp::Set { ttl: Some(_), .. } | IOp::Expire { .. }) {
                    for s in succ.iter_mut() {
                        let t = s.t;
                        if let Some(x) = s.exp.as_mut() {
                            *x = Expiry { lo: x.lo.min(t), hi: INF, d: INF };
                        }
                    }
                }
            } else {
                model.step(&state, &ops[op], &mut succ);
            }
            if !reuse {
                lin.set(op);
            }
            let chosen = succ.iter().position(|s| cache.insert(&mut lin, s));
            match chosen {
                Some(c) => {
                    let mut frame = Frame {
                        op,
                        before: state,
                        succ: [succ[0]; 2],
                        n_succ: succ.len(),
                        next_succ: c + 1,
                        forced: false,
                    };
                    frame.succ[..succ.len()].copy_from_slice(&succ);
                    state = succ[c];
                    stack.push(frame);
                    if !reuse {
                        ev.lift(op, known(op));
                        done_known += usize::from(known(op));
                    }
                    cursor = start(known_first, &ev);
                    fresh = true;
                }
                None if reuse => {}
                None => lin.clear(op),
            }
            continue;
        }
        // No candidate left (the first return's op cannot be put off any longer): the last choice was
        // wrong.
        loop {
            let Some(mut frame) = stack.pop() else {
                return Searched { outcome: Outcome::Violation, steps, progress };
            };
            let k = known(frame.op);
            let reuse = reusable(frame.op);
            if !reuse {
                ev.unlift(frame.op, k);
                done_known -= usize::from(k);
            }
            state = frame.before;
            if frame.forced {
                lin.clear(frame.op);
                continue;
            }
            let mut retried = None;
            while frame.next_succ < frame.n_succ {
                let s = frame.succ[frame.next_succ];
                frame.next_succ += 1;
                if cache.insert(&mut lin, &s) {
                    retried = Some(s);
                    break;
                }
            }
            match retried {
                Some(s) => {
                    state = s;
                    if !reuse {
                        ev.lift(frame.op, k);
                        done_known += usize::from(k);
                    }
                    stack.push(frame);
                    cursor = start(known_first, &ev);
                    fresh = true;
                }
                None => {
                    if !reuse {
                        lin.clear(frame.op);
                    }
                    let node = ev.call_of[frame.op];
                    cursor =
                        if k { Cursor::Known(ev.known.next[node]) } else { Cursor::Unknown(ev.unknown.next[node]) };
                }
            }
            break;
        }
    }
}
