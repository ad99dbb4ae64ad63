//! Verdicts, and how they read.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Op, OpResult, Shown};

/// The outcome of [`check`](crate::check): one verdict per key, keys in byte order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub clock_skew_ms: u64,
    /// [`Options::per_observer_skew`](crate::Options::per_observer_skew) of the check (absent from
    /// reports of versions before it: those judged expiry by a single clock).
    #[serde(default)]
    pub per_observer_skew: bool,
    pub keys: Vec<KeyReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    #[serde(with = "crate::history::bytes_serde")]
    pub key: Vec<u8>,
    /// Entries of this key in the history.
    pub ops: usize,
    /// Model steps the search took (all searches for this key, including the ones that shortened a
    /// violation).
    pub steps: u64,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    Violation(Box<Violation>),
    /// The step budget ran out: nothing is known. Never to be taken as linearizable.
    Undecided {
        max_steps: u64,
    },
    /// An entry the checker cannot judge (the key is not checked).
    Malformed {
        entry: usize,
        reason: String,
    },
}

/// A non-linearizable key, cut down to what a human needs to see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Index (in the checked history) of the op whose reply no linearization explains: the history cut
    /// just after this op completed is already not linearizable, and cut anywhere before it still is.
    pub failing_entry: usize,
    /// How many of the key's ops were invoked before that cut (the shortest failing prefix).
    pub prefix_ops: usize,
    /// False when the search for the shortest prefix ran out of steps: `failing_entry` then completes a
    /// failing prefix that may not be the shortest.
    pub shortest: bool,
    /// When set, the excerpt is a self-contained proof: whatever state the key was in at this instant
    /// (recorder µs), the excerpt's ops cannot be linearized after it. Ops invoked before it count as
    /// optional (they may have taken effect before it, which that state reflects).
    pub from_any_state_at_us: Option<u64>,
    /// Otherwise (the failure needs more of the history than a window): the last op before the failing
    /// one after which the key's state was known, a SET that succeeded or a DEL with no other write
    /// overlapping it. The excerpt starts there.
    pub anchor: Option<usize>,
    /// The ops that matter, in invocation order: the window's, or from the anchor on plus every op of
    /// unknown outcome (which may have taken effect at any time).
    pub excerpt: Vec<ExcerptOp>,
    /// Ops left out of the excerpt because it was long (the earliest ones go first).
    pub omitted: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcerptOp {
    pub entry: usize,
    pub client: u32,
    pub op: Op,
    /// `None`: unknown outcome.
    pub result: Option<OpResult>,
    pub invoked_at_us: u64,
    pub completed_at_us: Option<u64>,
    /// Completed only after the failing op did: in the failing prefix its outcome counts as unknown.
    pub in_flight_at_cut: bool,
}

impl Report {
    /// True when every key is linearizable (a violation, an undecided or a malformed key makes it false).
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(|k| k.verdict == Verdict::Linearizable)
    }

    pub fn violations(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys.iter().filter(|k| matches!(k.verdict, Verdict::Violation(_)))
    }

    /// Keys not decided either way: out of steps, or malformed.
    pub fn undecided(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys.iter().filter(|k| matches!(k.verdict, Verdict::Undecided { .. } | Verdict::Malformed { .. }))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |p: fn(&Verdict) -> bool| self.keys.iter().filter(|k| p(&k.verdict)).count();
        writeln!(
            f,
            "linearizability: {} keys, {} linearizable, {} NOT linearizable, {} undecided, {} malformed (clock skew ±{} ms{})",
            self.keys.len(),
            count(|v| matches!(v, Verdict::Linearizable)),
            count(|v| matches!(v, Verdict::Violation(_))),
            count(|v| matches!(v, Verdict::Undecided { .. })),
            count(|v| matches!(v, Verdict::Malformed { .. })),
            self.clock_skew_ms,
            if self.per_observer_skew { ", per observer" } else { ", one clock" },
        )?;
        for k in self.keys.iter().filter(|k| k.verdict != Verdict::Linearizable) {
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = Shown(&self.key);
        match &self.verdict {
            Verdict::Linearizable => writeln!(f, "key {key}: linearizable ({} ops, {} steps)", self.ops, self.steps),
            Verdict::Undecided { max_steps } => writeln!(
                f,
                "key {key}: UNDECIDED: the search used up its budget of {max_steps} steps ({} ops); \
                 nothing is known about this key",
                self.ops
            ),
            Verdict::Malformed { entry, reason } => writeln!(f, "key {key}: MALFORMED entry #{entry}: {reason}"),
            Verdict::Violation(v) => {
                writeln!(f, "key {key}: NOT LINEARIZABLE ({} ops, {} steps)", self.ops, self.steps)?;
                write!(f, "{v}")
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(base) = self.excerpt.iter().map(|o| o.invoked_at_us).min() else {
            return writeln!(f, "  no linearization explains the reply of #{}", self.failing_entry);
        };
        let failing = self.excerpt.iter().find(|o| o.entry == self.failing_entry);
        write!(f, "  no linearization explains the reply of #{}", self.failing_entry)?;
        if let Some(o) = failing {
            write!(f, " (client {}: {} -> {})", o.client, o.op, ShownResult(&o.result))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  {} failing prefix: the {} ops invoked before #{} completed (ops still in flight then count as \
             unknown outcome)",
            if self.shortest { "shortest" } else { "a (not necessarily shortest)" },
            self.prefix_ops,
            self.failing_entry
        )?;
        match (self.from_any_state_at_us, self.anchor) {
            (Some(at), _) => writeln!(
                f,
                "  whatever the key held at +{:.3} ms, these ops cannot follow (ms after t = {base} µs):",
                at.saturating_sub(base) as f64 / 1000.0
            )?,
            (None, Some(a)) => writeln!(f, "  from #{a}, after which the state was known; ms after t = {base} µs:")?,
            (None, None) => {
                writeln!(f, "  the prefix has no point where the state was known; ms after t = {base} µs:")?
            }
        }
        if self.omitted > 0 {
            writeln!(f, "         ... {} earlier ops omitted", self.omitted)?;
        }
        let ms = |us: u64| us.saturating_sub(base) as f64 / 1000.0;
        for o in &self.excerpt {
            let mark = if o.entry == self.failing_entry {
                "=>"
            } else if Some(o.entry) == self.anchor {
                "* "
            } else {
                "  "
            };
            let done = o.completed_at_us.map_or_else(|| "?".to_string(), |c| format!("{:.3}", ms(c)));
            let op = format!("{}", o.op);
            let res = format!("{}", ShownResult(&o.result));
            let before = self.from_any_state_at_us.is_some_and(|at| o.invoked_at_us < at);
            let note = if o.result.is_none() {
                "  unknown outcome"
            } else if o.in_flight_at_cut {
                "  (in flight at the cut)"
            } else if before {
                "  (began before: may be in that state)"
            } else {
                ""
            };
            writeln!(
                f,
                "    {mark} #{:<6} c{:<4} {op:<32} -> {res:<12} [{:>10.3}, {done:>10}]{note}",
                o.entry,
                o.client,
                ms(o.invoked_at_us)
            )?;
        }
        Ok(())
    }
}

struct ShownResult<'a>(&'a Option<OpResult>);

impl fmt::Display for ShownResult<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) => write!(f, "{r}"),
            None => f.write_str("?"),
        }
    }
}
