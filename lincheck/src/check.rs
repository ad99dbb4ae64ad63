//! Splitting a history by key, checking each key, and cutting a violation down for a human.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::history::{Entry, Op, OpResult, SetCond};
use crate::model::{lower_op, lower_result, result_fits, ttl_us, IEntry, IOp, Interner, Model, INF, MAX_TIME};
use crate::report::{ExcerptOp, KeyReport, Report, Verdict, Violation};
use crate::search::{search, Outcome};

/// How to check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// How far (ms) the clock that judges a key expired may disagree with the one that set its TTL, as seen
    /// from the recorder's clock. Every expiry instant is widened by this much either way (plus 1 ms for
    /// the servers' millisecond clocks). With every server within X ms of true time pass 2·X; with one
    /// proxy deliberately offset by D pass D plus the others' error.
    pub clock_skew_ms: u64,
    /// Budget of model steps per search (a violation's key is searched a few more times to find its shortest
    /// failing prefix, each with this budget). A step takes about 0.4 µs, and the memory of a search grows
    /// by up to about 10 bytes per step.
    pub max_steps: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { clock_skew_ms: 50, max_steps: 10_000_000 }
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
    Report { clock_skew_ms: opts.clock_skew_ms, keys }
}

fn validate(e: &Entry) -> Result<(), String> {
    let max = MAX_TIME as u64;
    if e.invoked_at_us > max || e.completed_at_us.is_some_and(|c| c > max) {
        return Err(format!("a time beyond {max} µs"));
    }
    match (e.completed_at_us, &e.result) {
        (Some(c), _) if c < e.invoked_at_us => Err(format!("completed at {c} µs, before its invocation")),
        (Some(_), None) => Err("completed without a result".into()),
        (None, Some(r)) => Err(format!(
            "has a result ({r}) but no completion time: an unknown outcome has neither, a known one both"
        )),
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

    let model = Model { slack: ttl_us(opts.clock_skew_ms).saturating_add(1000) };
    let full = search(&model, &ops, opts.max_steps);
    let mut steps = full.steps;
    match full.outcome {
        Outcome::Linearizable => report(steps, Verdict::Linearizable),
        Outcome::Undecided => report(steps, Verdict::Undecided { max_steps: opts.max_steps }),
        Outcome::Violation => {
            let v = shortest_failure(&model, &ops, history, opts.max_steps, full.progress, &mut steps);
            report(steps, Verdict::Violation(Box::new(v)))
        }
    }
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
    max_steps: u64,
    progress: usize,
    steps: &mut u64,
) -> Violation {
    let mut returns: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].comp < INF).collect();
    returns.sort_by_key(|&i| (ops[i].comp, ops[i].index));
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
    // An empty `returns` cannot fail; keep going without panicking anyway.
    let Some(&f) = returns.get(hi) else {
        return Violation {
            failing_entry: ops.first().map_or(0, |e| e.index),
            prefix_ops: ops.len(),
            shortest: false,
            anchor: None,
            excerpt: Vec::new(),
            omitted: 0,
        };
    };
    let cut = (ops[f].comp, ops[f].index);
    let prefix: Vec<&IEntry> = ops.iter().filter(|e| e.inv <= cut.0).collect();
    let in_flight = |e: &IEntry| (e.comp, e.index) > cut;
    let known = |e: &IEntry| !in_flight(e) && e.comp < INF;

    // The anchor: the latest SET → OK or DEL before the failing op that no other (known) write overlaps,
    // so every linearization agrees on the state right after it. Unknown writes are shown instead.
    let failing = &ops[f];
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
    let mut chosen: Vec<&IEntry> =
        prefix.iter().copied().filter(|e| !known(e) || e.comp >= start || Some(e.index) == anchor.map(|w| w.index)).collect();
    // Unknown GETs were dropped before the search; they explain nothing either way.
    const MAX_EXCERPT: usize = 100;
    let omitted = chosen.len().saturating_sub(MAX_EXCERPT);
    chosen.drain(..omitted);
    let excerpt = chosen
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
                in_flight_at_cut: in_flight(e) && e.comp < INF,
            }
        })
        .collect();
    Violation {
        failing_entry: failing.index,
        prefix_ops: prefix.len(),
        shortest,
        anchor: anchor.map(|w| w.index),
        excerpt,
        omitted,
    }
}
