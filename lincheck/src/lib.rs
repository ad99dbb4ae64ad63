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
//! A key past its expiry instant is absent for every op, and a write to it starts afresh.
//!
//! Times are **microseconds** of one monotonic clock of the recorder (`invoked_at_us`, `completed_at_us`);
//! TTLs and [`Options::clock_skew_ms`] are milliseconds. An op takes effect at one instant of its window
//! `[invoked, completed]`; an op of unknown outcome (timeout, connection error, an error reply other than
//! INCR's refusal: `completed_at_us == None`) takes effect once at any instant after its invocation — after
//! ops that completed, possibly — or never. Those instants are the *linearization points*; they are
//! non-decreasing in linearization order, and each op is judged against the key's expiry at its own point.
//!
//! A key given a TTL `L` by an op at point `p` expires at `e = p + L + ε`, where `|ε| ≤ clock_skew_ms + 1
//! ms`: the servers compute deadlines on their own clocks, which may disagree with the recorder's (and
//! count milliseconds). There is one such `e` per TTL: once an op has seen the key expired, no later op
//! sees it again — "an expired key came back" is exactly what this checker exists to catch. At `e` itself
//! both readings are accepted.
//!
//! # The search, and why the time handling is sound
//!
//! Per key: Wing & Gong's search with Lowe's memoisation, in Porcupine's formulation:
//! ops sorted by invocation, call and return events in a linked list, an op linearizable next iff no op
//! still to be linearized returned before it was called, and a cache of (set of linearized ops, state)
//! pairs already explored. The step budget ([`Options::max_steps`]) bounds calls of the model's step.
//!
//! The state is the key's value plus a description of *time*. For a given order of ops, the possible
//! linearization points and expiry instants are exactly the solutions of a set of difference constraints
//! (`inv ≤ p_i ≤ comp`, `p_i ≤ p_{i+1}`, `e - p_w ∈ [L - s, L + s]`, and `p_i < e` or `p_i ≥ e` for each op
//! judged against `e`). What the ops still to come constrain is only the last point `p` (the next one is
//! ≥ it) and the current expiry `e`, so the state keeps the projection of that polyhedron onto `(p, e)`: a
//! zone of a difference-bound matrix, computed by closing the matrix when an op is added and dropping the
//! variables nothing later mentions. Projection of difference constraints is exact, so an op is rejected
//! at a state only if *no* assignment of points consistent with the order so far lets it give its reply:
//! the checker never rejects a history that has a valid linearization with valid points. The zone is
//! stored closed upwards in `p` (the future only ever needs `p ≤ q`, so a later `p` never helps), as the
//! earliest last point `t`, the range `[lo, hi]` of `e` and the largest `e - p`; that keeps equal zones
//! equal for the cache, whose hits are exact (same set, same value, same zone), so the cache never prunes a
//! branch that could succeed. When `e` may lie on either side of an op's point, the search tries both
//! readings, each narrowing the zone. Where the checker is more permissive than the model: both readings
//! at `e` exactly, and the extra millisecond of `ε`.
//!
//! This is more precise than keeping a box of possible expiry times: the zone remembers that a write's
//! expiry is tied to its point, so a SET PX 100 of unknown outcome that a GET observed by time `T` must
//! expire by `T + 100 ms + s`, even though the SET itself never completed.
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
