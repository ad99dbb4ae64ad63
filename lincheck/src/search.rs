//! Wing & Gong's search with Lowe's memoisation, in Porcupine's formulation: one key's call and return
//! events in a doubly linked list; linearizing an op lifts its two events out of the list; an op can be
//! linearized next iff its call comes before the first return still in the list (no op still to be
//! linearized finished before it started). Backtracking re-inserts them. A cache of (set of linearized ops,
//! state) pairs already explored cuts the search to the distinct configurations.
//!
//! Ops of unknown outcome have no return event: they can be linearized at any point after their call, and
//! the history is linearizable once every op with a known outcome is (the others took effect after all of
//! them, which nothing observed, or never).

use std::collections::HashSet;

use crate::model::{IEntry, Model, State, INF};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Linearizable,
    Violation,
    /// The step budget ran out first.
    Undecided,
}

/// The linked list's nodes: 0 is the head, `len - 1` the tail; the rest are events.
struct Events {
    prev: Vec<usize>,
    next: Vec<usize>,
    /// The op of an event node (unused for the sentinels).
    op: Vec<usize>,
    is_call: Vec<bool>,
    call_of: Vec<usize>,
    ret_of: Vec<Option<usize>>,
}

const HEAD: usize = 0;

impl Events {
    fn new(ops: &[IEntry]) -> Events {
        // Calls before returns at the same instant: two ops touching at one microsecond count as concurrent,
        // the permissive reading.
        let mut order: Vec<(i64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, e) in ops.iter().enumerate() {
            order.push((e.inv, 0, i));
            if e.comp < INF {
                order.push((e.comp, 1, i));
            }
        }
        order.sort_unstable();
        let len = order.len() + 2;
        let mut ev = Events {
            prev: (0..len).map(|i| i.saturating_sub(1)).collect(),
            next: (0..len).map(|i| (i + 1).min(len - 1)).collect(),
            op: vec![usize::MAX; len],
            is_call: vec![false; len],
            call_of: vec![0; ops.len()],
            ret_of: vec![None; ops.len()],
        };
        for (n, &(_, kind, i)) in order.iter().enumerate() {
            let node = n + 1;
            ev.op[node] = i;
            if kind == 0 {
                ev.is_call[node] = true;
                ev.call_of[i] = node;
            } else {
                ev.ret_of[i] = Some(node);
            }
        }
        ev
    }

    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        self.prev[x] = p;
    }

    /// Only valid in the reverse order of `unlink`s (the nodes keep their own links meanwhile).
    fn relink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        self.prev[x] = n;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if let Some(r) = self.ret_of[op] {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.ret_of[op] {
            self.relink(r);
        }
        self.relink(self.call_of[op]);
    }
}

/// The set of linearized ops, and its compact form for the cache.
struct Linearized {
    bits: Vec<u64>,
    /// Which ops have a known outcome.
    known: Vec<u64>,
    unknown_ops: Vec<u32>,
}

impl Linearized {
    fn set(&mut self, i: usize) {
        self.bits[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.bits[i / 64] &= !(1 << (i % 64));
    }
    fn has(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Ops are in invocation order, so a linearized set is nearly always "everything before k, plus a few
    /// ops after": stored as k, the unknown-outcome ops before k that are not in it, a separator, and the
    /// ops from k on that are. A full bitset per cache entry would cost n/8 bytes each.
    fn key(&self) -> Box<[u32]> {
        let words = self.bits.len();
        let k = (0..words)
            .find_map(|w| {
                let missing = self.known[w] & !self.bits[w];
                (missing != 0).then(|| w * 64 + missing.trailing_zeros() as usize)
            })
            .unwrap_or(words * 64);
        let mut out = vec![k as u32];
        out.extend(self.unknown_ops.iter().copied().take_while(|&i| (i as usize) < k).filter(|&i| !self.has(i as usize)));
        out.push(u32::MAX);
        for w in k / 64..words {
            let mut word = self.bits[w];
            if w == k / 64 {
                word &= !0u64 << (k % 64);
            }
            while word != 0 {
                out.push((w * 64) as u32 + word.trailing_zeros());
                word &= word - 1;
            }
        }
        out.into_boxed_slice()
    }
}

struct Frame {
    op: usize,
    before: State,
    succ: [State; 2],
    n_succ: usize,
    next_succ: usize,
}

pub(crate) struct Searched {
    pub outcome: Outcome,
    pub steps: u64,
}

/// Decides whether `ops` (one key's, sorted by invocation) are linearizable, within `max_steps` calls of the
/// model's step function.
pub(crate) fn search(model: &Model, ops: &[IEntry], max_steps: u64) -> Searched {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let mut lin = Linearized { bits: vec![0; words], known: vec![0; words], unknown_ops: Vec::new() };
    let mut n_known = 0usize;
    for (i, e) in ops.iter().enumerate() {
        if e.comp < INF {
            lin.known[i / 64] |= 1 << (i % 64);
            n_known += 1;
        } else {
            lin.unknown_ops.push(i as u32);
        }
    }
    let mut ev = Events::new(ops);
    let tail = ev.next.len() - 1;
    let mut cache: HashSet<(Box<[u32]>, State)> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = State::INITIAL;
    let mut done_known = 0usize;
    let mut steps = 0u64;
    let mut succ: Vec<State> = Vec::with_capacity(2);
    let mut node = ev.next[HEAD];

    loop {
        if done_known == n_known {
            return Searched { outcome: Outcome::Linearizable, steps };
        }
        if node != tail && ev.is_call[node] {
            let op = ev.op[node];
            if steps >= max_steps {
                return Searched { outcome: Outcome::Undecided, steps };
            }
            steps += 1;
            model.step(&state, &ops[op], &mut succ);
            lin.set(op);
            let chosen = succ.iter().position(|s| cache.insert((lin.key(), *s)));
            match chosen {
                Some(c) => {
                    let mut frame = Frame { op, before: state, succ: [succ[0]; 2], n_succ: succ.len(), next_succ: c + 1 };
                    frame.succ[..succ.len()].copy_from_slice(&succ);
                    state = succ[c];
                    stack.push(frame);
                    ev.lift(op);
                    done_known += usize::from(ops[op].comp < INF);
                    node = ev.next[HEAD];
                }
                None => {
                    lin.clear(op);
                    node = ev.next[node];
                }
            }
            continue;
        }
        // A return event (or the end): the op it closes cannot be put off any longer, so the last choice
        // was wrong.
        let Some(mut frame) = stack.pop() else {
            return Searched { outcome: Outcome::Violation, steps };
        };
        ev.unlift(frame.op);
        done_known -= usize::from(ops[frame.op].comp < INF);
        state = frame.before;
        let mut retried = None;
        while frame.next_succ < frame.n_succ {
            let s = frame.succ[frame.next_succ];
            frame.next_succ += 1;
            if cache.insert((lin.key(), s)) {
                retried = Some(s);
                break;
            }
        }
        match retried {
            Some(s) => {
                state = s;
                ev.lift(frame.op);
                done_known += usize::from(ops[frame.op].comp < INF);
                stack.push(frame);
                node = ev.next[HEAD];
            }
            None => {
                lin.clear(frame.op);
                node = ev.next[ev.call_of[frame.op]];
            }
        }
    }
}
