//! Decides whether a recorded history of Redis string commands is linearizable, key expiry included.
//!
//! A chaos test records, for every command its clients send, the command, the key, when it was sent and
//! when its reply came back, and the reply ([`Entry`]); [`check`] then asks whether some order of the
//! commands, consistent with real time, explains every reply, under the sequential Redis semantics below.
//! It answers per key ([`Report`]): linearizable, a violation (with the shortest failing piece of the
//! history), or undecided (the step budget ran out, which never counts as linearizable).
//!
//! # The model
//!
//! Every op touches one key, and linearizability is local (a history is linearizable iff each object's
//! sub-history is), so each key is checked on its own. A key is absent or holds a byte string, and may have
//! an expiry instant. The ops ([`Op`]) are GET, SET with NX / XX / IFEQ and a relative TTL (a SET without
//! TTL clears the TTL), INCR (an absent key counts as 0; the TTL is kept; a value `string2ll` refuses, or an
//! overflow, gives `Error` and writes nothing), DEL and EXPIRE / PEXPIRE (`ms == 0`: delete, answering 1).
//! A key past its expiry instant is absent for the op judging it so, and a write to it starts afresh.
//!
//! Times are **microseconds** of one monotonic clock of the recorder (`invoked_at_us`, `completed_at_us`);
//! TTLs and [`Options::clock_skew_ms`] are milliseconds. An op takes effect at one instant of its window
//! `[invoked, completed]`; an op of unknown outcome (timeout, connection error, an error reply other than
//! INCR's refusal: `completed_at_us == None`) takes effect once at any instant after its invocation — after
//! ops that completed, possibly — or never. Those instants are the *linearization points*; they are
//! non-decreasing in linearization order, and each op is judged against the key's expiry at its own point.
//!
//! ## Expiry, judged by several clocks
//!
//! The servers judge expiry with their own wall clocks, any two of which may differ by up to
//! `clock_skew_ms` (`s`). A key given a TTL `L` by an op at point `p` has **one** expiry instant `e`, within
//! 1 ms of `p + L`: the instant the writer's clock ends the TTL. Every op whose result depends on whether the
//! key is live (all but an unconditional SET) judges it with **its own clock**, off from the writer's by an
//! `ε ∈ [-s, s]` chosen independently for every op: the key is live for an op at point `q` iff `q + ε < e`.
//! So an op before `e - s` must see the key live, an op at or after `e + s` must see it expired, and in
//! between each op may see either, whatever the others saw: one client may see the key expired and a later
//! one, through a proxy whose clock is behind, still see it live. What an op does on its reading is seen by
//! everyone after it when it writes (an INCR of a key it judges expired starts from 0 without a TTL, a SET
//! NX succeeds, a PEXPIRE of a key it judges live sets a new TTL, a DEL deletes); an op that judged the key
//! expired and wrote nothing (GET → nil, DEL or PEXPIRE → 0, SET XX / IFEQ → nil) leaves it as it was, TTL
//! included, for the ops after it. Skew is about TTLs only: a key without one is never seen expired, a
//! deleted one never live. Outside the band `e ± s` nothing changed: a key seen live later than `e + s`
//! (`s` after the latest its TTL can have ended) came back, which is exactly what this checker exists to
//! catch.
//!
//! Why this is the model for proxies with clock offsets `o_i` (pairwise within `s`) that count
//! milliseconds: proxy `W` writing at `p` stores `expires_at = ⌊p + o_W⌋ + L`, and proxy `R` at `q` judges
//! the key expired iff `⌊q + o_R⌋ ≥ expires_at`, that is (`expires_at` being a whole millisecond) iff
//! `q + (o_R - o_W) ≥ expires_at - o_W`: `q + ε ≥ e` with `e = expires_at - o_W ∈ (p + L - 1 ms, p + L]` and
//! `ε = o_R - o_W ∈ [-s, s]`. (The model takes an op's clock reading to be at its linearization point, as
//! it does for everything else the op does.)
//!
//! With [`Options::per_observer_skew`] `= false`, one clock judges every op: `e` is only known within
//! `s + 1 ms` of `p + L`, but `ε = 0` for all, so once an op has seen the key expired no later op sees it
//! live. That is the right, and stricter, model wherever a single clock judges expiry (it catches a key
//! that came back inside the band); the default, per observer, is the one for vesta, whose proxies each
//! judge with their own clock. Each op on its own is allowed exactly the same readings in both (live up to
//! `p + L + s + 1 ms`, expired from `p + L - s - 1 ms` on); they differ only in how readings constrain each
//! other. An explanation with one clock is one per observer too (take `ε = e - e₁` for every op, `e₁` being
//! the one-clock instant), so per observer rejects a subset of what one clock rejects. Both are the same
//! code: the skew goes either on `e` or on each reading.
//!
//! # The search, and why the time handling is sound
//!
//! Per key: Wing & Gong's search with Lowe's memoisation, in Porcupine's formulation:
//! ops sorted by invocation, call and return events in a linked list, an op linearizable next iff no op
//! still to be linearized returned before it was called, and a cache of (set of linearized ops, state)
//! pairs already explored. The step budget ([`Options::max_steps`]) bounds calls of the model's step.
//!
//! The state is the key's value plus a description of *time*. For a given order of ops and a given reading
//! (live or expired) by each op judged against a TTL, the possible linearization points and expiry instants
//! are exactly the solutions of a set of difference constraints: `inv ≤ p_i ≤ comp`, `p_i ≤ p_{i+1}`,
//! `e - p_w ∈ [L - slack, L + slack]`, and per reading `p_i + ε_i < e` (live) or `p_i + ε_i ≥ e` (expired)
//! with `|ε_i| ≤ band` (per observer: `slack` = 1 ms, `band` = `s`; one clock: `slack` = `s` + 1 ms, `band`
//! = 0). An op's `ε_i` appears in that one constraint and nowhere else, so it is projected out on the spot,
//! exactly: live iff `p_i - e < band`, expired iff `e - p_i ≤ band` — difference constraints again. What
//! the ops still to come constrain is only the last point `p` (the next one is ≥ it) and the current expiry
//! `e` (the `ε` of the ops to come are theirs alone), so the state keeps the projection of that polyhedron
//! onto `(p, e)`: a zone of a difference-bound matrix, computed by closing the matrix when an op is added
//! and dropping the variables nothing later mentions. Projection of difference constraints is exact, so an
//! op is rejected at a state only if *no* assignment of points, expiry instants and clock errors consistent
//! with the order so far lets it give its reply: the checker never rejects a history that has a valid
//! linearization with valid points and readings. The zone is stored closed upwards in `p` (the future only
//! ever needs `p ≤ q`, so a later `p` never helps), as the earliest last point `t`, the range `[lo, hi]` of
//! `e` and the largest `e - p`, with tight bounds, so equal zones are equal values. When an op may read the
//! key either way, the search tries both readings, each narrowing the zone.
//!
//! A key that an op judged expired without writing keeps its value and TTL in the state (with `e ≤ q +
//! band`), since a later op may still read it live. It is dropped (absent) only once no op to come can: when
//! `t > hi + band`, or `e - p < -band` throughout the zone. With one clock (`band` = 0) it becomes absent at
//! once, as before, which also keeps the permissive boundary (below) from letting the key come back at the
//! very instant it was seen expired.
//!
//! The search's pruning stays exact with per-observer readings, because each relies only on facts about the
//! exact model that the clock errors do not touch:
//!
//! * **Subsumption** (see `search.rs`): a configuration is skipped when an explored one led nowhere that has
//!   the same ops of known outcome linearized, the same value, a zone containing its zone and no ops of
//!   unknown outcome linearized that it has not. The step is monotone in the zone (a larger zone is a larger set of assignments), and the
//!   state holds no `ε`: each was projected out with its op.
//! * **Reads taken first**: an op that can go next and whose step leaves the state exactly as it was is
//!   taken at once, without trying the alternatives. Removing an op that writes nothing (a read, a refused
//!   write) from a linearization leaves one: no other op's constraint mentions its point or its `ε`, and it
//!   changes neither value nor TTL — also when it read the key expired, which now leaves the state as it
//!   was instead of absent. So a linearization that takes it later yields one that takes it here.
//! * **Windows** (a violation proved from the end of the history alone): the key's state at an instant τ is
//!   any value with any expiry after τ - `band` (a key that expired less than `band` before τ may still be
//!   live for a late clock) or none, or absent; the search starts from each. **Cuts** (the shortest failing
//!   prefix): a linearization of a history, cut at an instant with its points, expiry instants and clock
//!   errors, explains the cut, so "the cut fails" is still monotone in the cut.
//! * Ops of unknown outcome, twins and the relaxed searches that prove violations are about which ops took
//!   effect, not about time, and are unchanged.
//!
//! Where the checker is more permissive than the system: both readings are accepted on the boundaries (`q -
//! e = ±band`, `e - p = L ± slack`); the `ε` are independent, where ops through one proxy really share one,
//! so two readings up to `2s` apart may disagree (from `e - s` to `e + s`) where clocks within `s` of each
//! other allow only `s`; and with one clock, the extra millisecond on `e`.
//!
//! The zone is more precise than a box of possible expiry times: it remembers that a write's expiry is tied
//! to its point, so a SET PX 100 of unknown outcome that a GET observed by time `T` expires by `T + 101 ms`
//! and is seen live no later than `s` after that, even though the SET itself never completed. It also ties
//! the readings of one TTL together: once it was seen expired at `q`, `e ≤ q + s`, so no op sees the key
//! live after `q + 2s`.
//!
//! # Reading a report
//!
//! [`Report`]'s `Display` prints one summary line, then every key that is not linearizable. For a
//! violation it names the op whose reply no linearization explains: the history cut just after that op
//! completed (ops still in flight at that instant count as unknown outcome) is not linearizable, and every
//! earlier cut is — linearizability is closed under such cuts, so the shortest failing cut is found by
//! bisection. Then it lists the ops that matter, times in ms after the first listed op's invocation:
//!
//! ```text
//! key "k": NOT LINEARIZABLE (3 ops, 7 steps)
//!   no linearization explains the reply of #2 (client 3: GET -> "a")
//!   shortest failing prefix: the 3 ops invoked before #2 completed (ops still in flight then count as unknown outcome)
//!   from #0, after which the state was known; ms after t = 1000 µs:
//!     *  #0      c1    SET "a"                          -> OK           [     0.000,      1.000]
//!        #1      c2    SET "b"                          -> OK           [     2.000,      3.000]
//!     => #2      c3    GET                              -> "a"          [     4.000,      5.000]
//! ```
//!
//! `*` marks the anchor: the last SET or DEL before the failing op that no other write overlapped, so the
//! state right after it is known; the listing starts there (with every op of unknown outcome, which could
//! have taken effect at any time). `=>` marks the failing op. `?` is an unknown outcome.
//!
//! A history can be saved and replayed with [`save_json`] / [`load_json`].

mod check;
mod history;
mod model;
mod report;
mod search;

pub use check::{check, Options};
pub use history::{from_json, load_json, save_json, to_json, Entry, HistoryError, Op, OpResult, SetCond};
pub use report::{ExcerptOp, KeyReport, Report, Verdict, Violation};
