//! Splitting a history by key, checking each key, and cutting a violation down for a human.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::history::{Entry, Op, OpResult, SetCond};
use crate::model::{
    lower_op, lower_result, result_fits, ttl_us, Expiry, ICond, IEntry, IOp, IRes, Interner, Model, State, Val, INF,
    MAX_TIME, OPAQUE,
};
use crate::report::{ExcerptOp, KeyReport, Report, Verdict, Violation};
use crate::search::{refute_from_all, search, Outcome};

/// How to check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// How far (ms) the clock that judges a key expired may disagree with the one that set its TTL: the
    /// most any two of the clocks that set or judge TTLs may differ. With every server within X ms of true
    /// time pass 2·X; with one proxy deliberately offset by D pass D plus the others' error. See
    /// `per_observer_skew` for how it is applied.
    pub clock_skew_ms: u64,
    /// `true` (the default): every op judges a key's expiry with a clock of its own, off by up to
    /// `clock_skew_ms` either way, independently of the other ops, so that within `clock_skew_ms` of the
    /// expiry instant one client may see the key expired and a later one see it still live (through proxies
    /// whose clocks differ). `false`: one clock judges every op, so the expiry instant is only known within
    /// `clock_skew_ms` but, once one op has seen the key expired, no later op sees it live (the right
    /// model when a single clock judges expiry, and a stricter one). Both add 1 ms for the servers'
    /// millisecond clocks. See the crate documentation.
    #[serde(default = "yes")]
    pub per_observer_skew: bool,
    /// Budget of model steps per search (a violation's key is searched a few more times to find its shortest
    /// failing prefix, each with this budget). A step takes about 0.4 µs, and the memory of a search grows
    /// by up to about 10 bytes per step.
    pub max_steps: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { clock_skew_ms: 50, per_observer_skew: true, max_steps: 10_000_000 }
    }
}

fn yes() -> bool {
    true
}

impl Options {
    /// The model these options describe.
    fn model(&self) -> Model {
        let skew = ttl_us(self.clock_skew_ms);
        // The 1 ms: a server computes `expires_at = now_ms + ttl` with its clock truncated to ms, and judges
        // `expires_at <= now_ms`; for an integer `expires_at` the reader's truncation changes nothing, so the
        // instant (on the writer's clock) is within 1 ms of the write's point plus the TTL.
        if self.per_observer_skew {
            Model { slack: 1000, band: skew }
        } else {
            Model { slack: skew.saturating_add(1000), band: 0 }
        }
    }
}

/// Whether `history` is linearizable, key by key, under the model described in the crate documentation.
pub fn check(history: &[Entry], opts: &Options) -> Report {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, e) in history.iter().enumerate() {
        by_key.entry(&e.key).or_default().push(i);
    }
    let keys: Vec<(&[u8], Vec<usize>)> = by_key.into_iter().collect();
    // Keys are independent: spread them over the cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(keys.len()).max(1);
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<KeyReport>>> = Mutex::new(vec![None; keys.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, indices)) = keys.get(k) else { break };
                let report = check_key(key, indices, history, opts);
                if let Ok(mut done) = done.lock() {
                    done[k] = Some(report);
                }
            });
        }
    });
    let keys = done.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()).into_iter().flatten().collect();
    Report { clock_skew_ms: opts.clock_skew_ms, per_observer_skew: opts.per_observer_skew, keys }
}

fn validate(e: &Entry) -> Result<(), String> {
    let max = MAX_TIME as u64;
    if e.invoked_at_us > max || e.completed_at_us.is_some_and(|c| c > max) {
        return Err(format!("a time beyond {max} µs"));
    }
    match (e.completed_at_us, &e.result) {
        (Some(c), _) if c < e.invoked_at_us => Err(format!("completed at {c} µs, before its invocation")),
        (Some(_), None) => Err("completed without a result".into()),
        (None, Some(r)) => {
            Err(format!("has a result ({r}) but no completion time: an unknown outcome has neither, a known one both"))
        }
        (Some(_), Some(r)) if !result_fits(&e.op, r) => Err(format!(
            "{} cannot answer {r} (an error reply other than INCR's refusal is an unknown outcome: record \
             neither completion time nor result)",
            e.op
        )),
        _ => Ok(()),
    }
}

/// Whether an op, as recorded, may have changed the key.
fn may_write(op: &Op, res: Option<&OpResult>) -> bool {
    match (op, res) {
        (Op::Get, _) => false,
        (_, None) => true,
        (Op::Set { .. }, Some(r)) => *r == OpResult::Ok,
        (Op::Incr, Some(r)) => *r != OpResult::Error,
        (Op::Del | Op::Expire { .. }, Some(r)) => *r == OpResult::Int(1),
    }
}

fn check_key(key: &[u8], indices: &[usize], history: &[Entry], opts: &Options) -> KeyReport {
    let report = |steps, verdict| KeyReport { key: key.to_vec(), ops: indices.len(), steps, verdict };
    let mut interner = Interner::default();
    for &i in indices {
        let e = &history[i];
        if let Err(reason) = validate(e) {
            return report(0, Verdict::Malformed { entry: i, reason });
        }
        if let Some(OpResult::Value(v)) = &e.result {
            interner.observe(v);
        }
        if let Op::Set { cond: SetCond::IfEq(v), .. } = &e.op {
            interner.observe(v);
        }
    }
    let mut ops = Vec::with_capacity(indices.len());
    for &i in indices {
        let e = &history[i];
        let op = lower_op(&e.op, &mut interner);
        let res = e.result.as_ref().map(|r| lower_result(r, &mut interner));
        // Validated above: both fit below MAX_TIME.
        let inv = e.invoked_at_us as i64;
        let comp = e.completed_at_us.map_or(INF, |c| c as i64);
        ops.push(IEntry { op, res, inv, comp, index: i });
    }
    // A read of unknown outcome constrains nothing and changes nothing.
    ops.retain(|e| !(e.res.is_none() && e.op == IOp::Get));
    ops.sort_by_key(|e| (e.inv, e.index));

    let model = opts.model();
    let mut returns: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].comp < INF).collect();
    returns.sort_by_key(|&i| (ops[i].comp, ops[i].index));
    let violation = |v: Violation, steps| report(steps, Verdict::Violation(Box::new(v)));

    // A twentieth of the budget decides nearly every linearizable history. Otherwise the search stopped at
    // some op it could not get past; a cheap local proof that the cut there fails settles it (and the
    // search's progress shows every earlier cut passes, so it is the shortest). Only then the full search.
    let mut r = search(&model, &ops, (opts.max_steps / 20).max(1));
    let mut steps = r.steps;
    let mut proved_at = None;
    let mut full_done = opts.max_steps / 20 >= opts.max_steps;
    loop {
        if r.outcome == Outcome::Linearizable {
            return report(steps, Verdict::Linearizable);
        }
        if proved_at != Some(r.progress) && r.progress < returns.len() {
            proved_at = Some(r.progress);
            if let Some(v) = local_proof(&model, &ops, history, &returns, r.progress, opts.max_steps, &mut steps) {
                return violation(v, steps);
            }
        }
        if r.outcome == Outcome::Undecided && !full_done {
            full_done = true;
            r = search(&model, &ops, opts.max_steps);
            steps += r.steps;
            continue;
        }
        break;
    }
    match r.outcome {
        Outcome::Violation => {
            let v = shortest_failure(&model, &ops, history, &returns, opts.max_steps, r.progress, &mut steps);
            violation(v, steps)
        }
        _ => report(steps, Verdict::Undecided { max_steps: opts.max_steps }),
    }
}

/// Tries to show that the cut just after `returns[p]` completed is not linearizable from the ops near the
/// end of it alone: for a start instant τ, the ops that completed before τ are dropped, those invoked
/// before τ but completed later become optional (they took effect before τ, which the state at τ
/// reflects, or after it, with their result), and the search starts from every state the key could be in
/// at τ. If none works, no linearization of the whole cut does either: a linearization of it, cut at τ,
/// would give one. τ goes back until that works or the windows get long.
fn local_proof(
    model: &Model,
    ops: &[IEntry],
    history: &[Entry],
    returns: &[usize],
    p: usize,
    max_steps: u64,
    steps: &mut u64,
) -> Option<Violation> {
    let failing = ops[returns[p]];
    let cut = cut_at(ops, returns[p]);
    let fpos = cut.iter().position(|e| e.index == failing.index)?;
    let budget = (max_steps / 10).max(1000);
    let mut last_start = None;
    for back in [1, 4, 16, 64, 256] {
        let start = fpos.saturating_sub(back);
        if last_start == Some(start) {
            break;
        }
        last_start = Some(start);
        let tau = cut[start].inv;
        let window = window_from(&cut, tau);
        let r = refute_from_all(model, &window, &initial_states(&window, tau, model.band), budget);
        let (spent, all_fail) = (r.steps, r.outcome == Outcome::Violation);
        *steps += spent;
        if all_fail {
            let shown: Vec<&IEntry> = window.iter().collect();
            let mut v = describe(&shown, history, failing, cut.len(), true, None);
            v.from_any_state_at_us = Some(tau as u64);
            return Some(v);
        }
    }
    None
}

/// The ops of `cut` that matter after τ (see [`local_proof`]).
fn window_from(cut: &[IEntry], tau: i64) -> Vec<IEntry> {
    cut.iter()
        .filter(|e| e.comp >= tau)
        .filter_map(|e| {
            if e.inv >= tau {
                Some(*e)
            } else if e.op == IOp::Get {
                // Optional and without effect: it constrains nothing.
                None
            } else {
                Some(IEntry { comp: INF, ..*e })
            }
        })
        .collect()
}

/// Every state the key could be in at τ, up to what the window's ops can tell apart: absent, or any value
/// the window mentions, an unread one, or any integer its INCRs and reads could reveal (each
/// `c - j` for an integer `c` it mentions and `j` up to its number of INCRs, the largest integers for an
/// overflow, and one that matches nothing), with any expiry after τ - `band` or none (a key that expired
/// less than `band` before τ may still be seen live after τ by an op whose clock is late).
fn initial_states(window: &[IEntry], tau: i64, band: i64) -> Vec<State> {
    let mut vals: Vec<Val> = vec![Val::Bytes(OPAQUE)];
    let mut ints: Vec<i64> = Vec::new();
    let note = |v: Val, vals: &mut Vec<Val>, ints: &mut Vec<i64>| {
        vals.push(v);
        if let Val::Int(n) = v {
            ints.push(n);
        }
    };
    let mut incrs: i64 = 0;
    for e in window {
        match e.op {
            IOp::Set { value, cond, .. } => {
                note(value, &mut vals, &mut ints);
                if let ICond::IfEq(v) = cond {
                    note(v, &mut vals, &mut ints);
                }
            }
            IOp::Incr => incrs += 1,
            _ => {}
        }
        match e.res {
            Some(IRes::Value(v)) => note(v, &mut vals, &mut ints),
            Some(IRes::Int(n)) if e.op == IOp::Incr => ints.push(n),
            _ => {}
        }
    }
    for c in ints.clone() {
        for j in 0..=incrs {
            if let Some(n) = c.checked_sub(j) {
                vals.push(Val::Int(n));
            }
        }
    }
    for j in 0..=incrs {
        vals.push(Val::Int(i64::MAX - j));
    }
    // An integer whose increments meet nothing the window mentions (the first such from 0 up).
    ints.sort_unstable();
    let mut fresh = Some(0i64);
    while let Some(n) = fresh {
        match ints.iter().find(|&&c| c >= n && c - n <= incrs) {
            Some(&c) => fresh = c.checked_add(1),
            None => break,
        }
    }
    if let Some(n) = fresh {
        vals.push(Val::Int(n));
    }
    vals.sort_by_key(|v| match v {
        Val::Int(n) => (0, *n, 0),
        Val::Bytes(b) => (1, 0, *b),
    });
    vals.dedup();
    let exp = Some(Expiry { lo: tau - band, hi: INF, d: INF });
    let mut states = vec![State { val: None, exp: None, t: tau }];
    states.extend(vals.into_iter().map(|v| State { val: Some(v), exp, t: tau }));
    states
}

/// The history cut just after op `ops[cut]` completed: the ops invoked by then, those that completed later
/// turned into ops of unknown outcome (which is what they were at that instant). Linearizability is
/// closed under such cuts, so "the cut is not linearizable" is monotone in the cut and can be bisected.
fn cut_at(ops: &[IEntry], cut: usize) -> Vec<IEntry> {
    let at = (ops[cut].comp, ops[cut].index);
    ops.iter()
        .filter(|e| e.inv <= at.0)
        .filter_map(|e| {
            if (e.comp, e.index) <= at {
                Some(*e)
            } else if e.op == IOp::Get {
                None
            } else {
                Some(IEntry { res: None, comp: INF, ..*e })
            }
        })
        .collect()
}

fn shortest_failure(
    model: &Model,
    ops: &[IEntry],
    history: &[Entry],
    returns: &[usize],
    max_steps: u64,
    progress: usize,
    steps: &mut u64,
) -> Violation {
    // Invariant: the cut at returns[hi] fails (the whole history is the cut at the last return, plus ops of
    // unknown outcome invoked after it, which cannot matter), and every cut before returns[lo] passes: a
    // search that had the first k returns linearized has shown the cut at the k-th linearizable.
    let mut hi = returns.len().saturating_sub(1);
    let mut lo = progress.min(hi);
    let mut shortest = true;
    // A failing cut costs an exhaustive search, a passing one usually a short one; and the search of the
    // whole history nearly always stopped right before the failure. So probe upwards from `lo` in growing
    // strides until a cut fails, then bisect.
    let mut stride = Some(1);
    while lo < hi {
        let mid = match stride {
            Some(s) => (lo + s - 1).min(hi - 1),
            None => lo + (hi - lo) / 2,
        };
        let r = search(model, &cut_at(ops, returns[mid]), max_steps);
        *steps += r.steps;
        match r.outcome {
            Outcome::Violation => {
                hi = mid;
                stride = None;
            }
            Outcome::Linearizable => {
                lo = mid + 1;
                stride = stride.map(|s| s * 2);
            }
            Outcome::Undecided => {
                shortest = false;
                break;
            }
        }
        // What the probe got through is linearizable too.
        lo = lo.max(r.progress.min(hi));
    }
    // `returns` is not empty: a history without a known outcome is linearizable.
    let Some(&f) = returns.get(hi) else {
        return describe(&[], history, ops[0], ops.len(), false, None);
    };
    let failing = ops[f];
    let cut = (failing.comp, failing.index);
    let prefix: Vec<&IEntry> = ops.iter().filter(|e| e.inv <= cut.0).collect();
    let in_flight = |e: &IEntry| (e.comp, e.index) > cut;
    let known = |e: &IEntry| !in_flight(e) && e.comp < INF;

    // The anchor: the latest SET → OK or DEL before the failing op that no other (known) write overlaps,
    // so every linearization agrees on the state right after it. Unknown writes are shown instead.
    let anchor = prefix
        .iter()
        .filter(|w| known(w) && w.comp < failing.inv)
        .filter(|w| {
            let h = &history[w.index];
            matches!((&h.op, &h.result), (Op::Set { .. }, Some(OpResult::Ok)) | (Op::Del, Some(_)))
        })
        .filter(|w| {
            !prefix.iter().any(|x| {
                x.index != w.index
                    && known(x)
                    && x.inv <= w.comp
                    && x.comp >= w.inv
                    && may_write(&history[x.index].op, history[x.index].result.as_ref())
            })
        })
        .max_by_key(|w| (w.comp, w.index));
    let start = anchor.map_or(i64::MIN, |w| w.inv);
    let chosen: Vec<&IEntry> = prefix
        .iter()
        .copied()
        .filter(|e| !known(e) || e.comp >= start || Some(e.index) == anchor.map(|w| w.index))
        .collect();
    describe(&chosen, history, failing, prefix.len(), shortest, anchor.map(|w| w.index))
}

/// The report of a violation, listing `shown` (at most the last [`MAX_EXCERPT`] of them).
fn describe(
    shown: &[&IEntry],
    history: &[Entry],
    failing: IEntry,
    prefix_ops: usize,
    shortest: bool,
    anchor: Option<usize>,
) -> Violation {
    let omitted = shown.len().saturating_sub(MAX_EXCERPT);
    let excerpt = shown[omitted..]
        .iter()
        .map(|e| {
            let h = &history[e.index];
            ExcerptOp {
                entry: e.index,
                client: h.client,
                op: h.op.clone(),
                result: h.result.clone(),
                invoked_at_us: h.invoked_at_us,
                completed_at_us: h.completed_at_us,
                in_flight_at_cut: h
                    .completed_at_us
                    .is_some_and(|c| (c as i64, e.index) > (failing.comp, failing.index)),
            }
        })
        .collect();
    Violation {
        failing_entry: failing.index,
        prefix_ops,
        shortest,
        from_any_state_at_us: None,
        anchor,
        excerpt,
        omitted,
    }
}

const MAX_EXCERPT: usize = 100;
