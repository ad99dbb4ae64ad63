//! Hand-written histories: each names the bug (or the legal behaviour) it stands for.

mod common;

use common::*;
use vesta_lincheck::{check, from_json, load_json, save_json, to_json, Entry, Op, OpResult, Options, SetCond, Verdict};

/// A sequential history of every op, and for each op a wrong reply that must be caught.
#[test]
fn sequential_histories_of_each_op() {
    #[rustfmt::skip]
    let steps: Vec<(Op, OpResult, OpResult)> = vec![
        (get(), NIL, val("a")),
        (set("a"), OK, NIL),
        (get(), val("a"), NIL),
        (set_nx("b"), NIL, OK),
        (set_xx("b"), OK, NIL),
        (get(), val("b"), val("a")),
        (set_ifeq("c", "b"), OK, NIL),
        (set_ifeq("d", "b"), NIL, OK),
        (get(), val("c"), val("d")),
        (Op::Del, int(1), int(0)),
        (Op::Del, int(0), int(1)),
        (set_xx("x"), NIL, OK),
        (set_ifeq("x", "c"), NIL, OK),
        (Op::Incr, int(1), int(2)),
        (Op::Incr, int(2), int(1)),
        (get(), val("2"), val("1")),
        (set("9223372036854775807"), OK, NIL),
        (Op::Incr, ERR, int(i64::MIN)),
        (set("01"), OK, NIL),
        (Op::Incr, ERR, int(2)),
        (get(), val("01"), val("1")),
        (Op::Expire { ms: 60_000 }, int(1), int(0)),
        (set_nx("y"), NIL, OK),
        (Op::Expire { ms: 0 }, int(1), int(0)),
        (get(), NIL, val("01")),
        (Op::Expire { ms: 60_000 }, int(0), int(1)),
        (set_nx("z"), OK, NIL),
    ];
    let history = |wrong: Option<usize>| {
        let mut h = H::new();
        for (i, (op, right, bad)) in steps.iter().enumerate() {
            let res = if wrong == Some(i) { bad.clone() } else { right.clone() };
            h = h.op(1, op.clone(), 10 * i as u64, 10 * i as u64 + 5, res);
        }
        h
    };
    assert_linearizable(&history(None), 50);
    for i in 0..steps.len() {
        assert_violation(&history(Some(i)), 50, i);
    }
}

#[test]
fn concurrent_sets_may_land_in_either_order() {
    let base = H::new().op(1, set("a"), 0, 10, OK).op(2, set("b"), 2, 12, OK);
    assert_linearizable(&base.clone().op(3, get(), 20, 21, val("a")), 0);
    assert_linearizable(&base.clone().op(3, get(), 20, 21, val("b")), 0);
    // Both orders seen one after the other: only one of them happened.
    let flip = base.clone().op(3, get(), 20, 21, val("a")).op(4, get(), 22, 23, val("b"));
    assert_violation(&flip, 0, 3);
    // A read during both writes may see either, or neither.
    assert_linearizable(&base.clone().op(3, get(), 1, 3, NIL).op(4, get(), 5, 6, val("b")), 0);
    assert_violation(&base.op(3, get(), 20, 21, val("c")), 0, 2);
}

#[test]
fn a_stale_read_is_a_violation() {
    let h = H::new().op(1, set("a"), 0, 1, OK).op(2, set("b"), 2, 3, OK).op(3, get(), 4, 5, val("a"));
    let r = assert_violation(&h, 50, 2);
    // The same read overlapping the second write is fine.
    let h = H::new().op(1, set("a"), 0, 1, OK).op(2, set("b"), 2, 6, OK).op(3, get(), 4, 5, val("a"));
    assert_linearizable(&h, 50);
    let Verdict::Violation(v) = &r.keys[0].verdict else { unreachable!() };
    assert!(v.shortest);
    assert_eq!(v.prefix_ops, 3);
    // Whatever the key held when SET b was sent, the read cannot follow: SET a is not even needed.
    assert_eq!(v.from_any_state_at_us, Some(2000), "{r}");
    assert_eq!(v.excerpt.iter().map(|o| o.entry).collect::<Vec<_>>(), vec![1, 2], "{r}");
    let text = r.to_string();
    for want in ["NOT LINEARIZABLE", "=> #2 ", "whatever the key held", "SET \"b\"", "GET", "-> \"a\""] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn a_violation_that_needs_the_whole_history_is_still_found() {
    // SET NX a (no TTL), many reads of a, then SET NX b succeeds. Any window without the first SET could
    // start from an "a" that expires just in time, so only the whole history shows the violation.
    let mut h = H::new().op(1, set_nx("a"), 0, 1, OK);
    for i in 0..300 {
        h = h.op(2, get(), 2 + 2 * i, 3 + 2 * i, val("a"));
    }
    let last = h.entries.len();
    h = h.op(3, set_nx("b"), 700, 701, OK);
    let r = assert_violation(&h, 50, last);
    let Verdict::Violation(v) = &r.keys[0].verdict else { unreachable!() };
    assert!(v.shortest);
    assert_eq!(v.from_any_state_at_us, None);
    assert_eq!(v.anchor, Some(0), "{r}");
    assert!(v.excerpt.len() == 100 && v.omitted == 202, "{r}");
    assert!(r.to_string().contains("from #0, after which the state was known"), "{r}");
    // With a TTL on the first SET it is fine.
    let mut ok = h.clone();
    ok.entries[0].op = Op::Set { value: "a".into(), cond: SetCond::Nx, ttl_ms: Some(650) };
    assert_linearizable(&ok, 50);
}

#[test]
fn a_lost_incr_is_a_violation() {
    let h = H::new().op(1, Op::Incr, 0, 1, int(1)).op(2, Op::Incr, 2, 3, int(1));
    assert_violation(&h, 50, 1);
    // Overlapping, they still cannot both have seen 0 (the failure shows once the second one answered).
    let h = H::new().op(1, Op::Incr, 0, 10, int(1)).op(2, Op::Incr, 2, 12, int(1));
    assert_violation(&h, 50, 1);
    let h = H::new().op(1, Op::Incr, 0, 10, int(2)).op(2, Op::Incr, 2, 12, int(1));
    assert_linearizable(&h, 50);
}

#[test]
fn a_doubled_incr_is_a_violation() {
    let h = H::new().op(1, Op::Incr, 0, 1, int(1)).op(2, Op::Incr, 2, 3, int(3));
    assert_violation(&h, 50, 1);
    let h = H::new().op(1, Op::Incr, 0, 1, int(1)).op(2, get(), 2, 3, val("2"));
    assert_violation(&h, 50, 1);
    let h = H::new().op(1, set("5"), 0, 1, OK).op(1, Op::Incr, 2, 3, int(6)).op(2, get(), 4, 5, val("6"));
    assert_linearizable(&h, 50);
}

#[test]
fn set_nx_has_one_winner() {
    let h = H::new().op(1, set_nx("a"), 0, 10, OK).op(2, set_nx("b"), 1, 11, OK);
    assert_violation(&h, 50, 1);
    let h = H::new().op(1, set_nx("a"), 0, 10, OK).op(2, set_nx("b"), 1, 11, NIL).op(3, get(), 12, 13, val("a"));
    assert_linearizable(&h, 50);
    // The loser's value must not show up.
    let h = H::new().op(1, set_nx("a"), 0, 10, OK).op(2, set_nx("b"), 1, 11, NIL).op(3, get(), 12, 13, val("b"));
    assert_violation(&h, 50, 2);
}

#[test]
fn set_ifeq_is_a_compare_and_set() {
    let base = H::new().op(1, set("a"), 0, 1, OK);
    // Two concurrent swaps from the same value: only one can win.
    let h = base.clone().op(2, set_ifeq("b", "a"), 2, 10, OK).op(3, set_ifeq("c", "a"), 3, 11, OK);
    assert_violation(&h, 50, 2);
    // A chain of swaps is fine, in the order the values dictate.
    let h = base.clone().op(2, set_ifeq("c", "b"), 2, 10, OK).op(3, set_ifeq("b", "a"), 3, 11, OK).op(
        4,
        get(),
        12,
        13,
        val("c"),
    );
    assert_linearizable(&h, 50);
    // IFEQ never creates a key.
    let h = H::new().op(1, set_ifeq("b", "a"), 0, 1, OK);
    assert_violation(&h, 50, 0);
    let h = H::new().op(1, set_ifeq("b", "a"), 0, 1, NIL).op(1, get(), 2, 3, NIL);
    assert_linearizable(&h, 50);
}

#[test]
fn a_deleted_value_does_not_come_back() {
    let h = H::new().op(1, set("a"), 0, 1, OK).op(2, Op::Del, 2, 3, int(1)).op(3, get(), 4, 5, val("a"));
    assert_violation(&h, 50, 2);
    let h = H::new().op(1, set("a"), 0, 1, OK).op(2, Op::Del, 2, 3, int(1)).op(3, get(), 4, 5, NIL);
    assert_linearizable(&h, 50);
}

#[test]
fn a_value_read_well_after_its_expiry_is_a_violation() {
    // SET PX 100 at [0, 1] ms: gone by 1 + 100 + 50 (skew) + 1 ms at the latest.
    let base = H::new().op(1, set_px("v", 100), 0, 1, OK);
    assert_violation(&base.clone().op(2, get(), 500, 501, val("v")), 50, 1);
    assert_linearizable(&base.clone().op(2, get(), 500, 501, NIL), 50);
    assert_linearizable(&base.clone().op(2, get(), 40, 41, val("v")), 50);
    // ...and not gone before 100 - 50 - 1 ms.
    assert_violation(&base.op(2, get(), 40, 41, NIL), 50, 1);
}

#[test]
fn a_read_in_the_ambiguity_window_is_accepted_either_way() {
    // The SET took effect somewhere in [0, 20] ms, so the key expires somewhere in [100, 120] (skew 0, plus
    // the millisecond of the servers' clocks).
    let base = H::new().op(1, set_px("v", 100), 0, 20, OK);
    assert_linearizable(&base.clone().op(2, get(), 110, 111, val("v")), 0);
    assert_linearizable(&base.clone().op(2, get(), 110, 111, NIL), 0);
    assert_violation(&base.clone().op(2, get(), 125, 126, val("v")), 0, 1);
    assert_violation(&base.clone().op(2, get(), 95, 97, NIL), 0, 1);
    // Without clock skew, once a read has seen it gone it stays gone: an expired key that comes back is the
    // bug. (With skew, see `per_observer_clocks_*`.)
    let h = base.clone().op(2, get(), 110, 111, NIL).op(3, get(), 112, 113, val("v"));
    assert_violation(&h, 0, 2);
    assert_violation_with(&h, &one_clock(0), 2);
    let h = base.op(2, get(), 110, 111, val("v")).op(3, get(), 112, 113, NIL);
    assert_linearizable(&h, 0);
}

#[test]
fn an_incr_after_expiry_starts_from_one() {
    let base = H::new().op(1, set_px("5", 100), 0, 1, OK);
    assert_linearizable(&base.clone().op(2, Op::Incr, 500, 501, int(1)), 50);
    assert_violation(&base.clone().op(2, Op::Incr, 500, 501, int(6)), 50, 1);
    // Before the expiry it counts on, and keeps the TTL.
    let h = base.clone().op(2, Op::Incr, 10, 11, int(6)).op(3, get(), 500, 501, val("6"));
    assert_violation(&h, 50, 2);
    let h = base.op(2, Op::Incr, 10, 11, int(6)).op(3, get(), 500, 501, NIL);
    assert_linearizable(&h, 50);
}

#[test]
fn ttl_is_set_cleared_and_applied_by_the_right_ops() {
    // EXPIRE of an absent key answers 0 and sets nothing.
    assert_linearizable(&H::new().op(1, Op::Expire { ms: 100 }, 0, 1, int(0)), 50);
    assert_violation(&H::new().op(1, Op::Expire { ms: 100 }, 0, 1, int(1)), 50, 0);
    // EXPIRE of a present key: gone after the TTL.
    let base = H::new().op(1, set("v"), 0, 1, OK).op(1, Op::Expire { ms: 100 }, 2, 3, int(1));
    assert_linearizable(&base.clone().op(2, get(), 500, 501, NIL), 50);
    assert_violation(&base.clone().op(2, get(), 500, 501, val("v")), 50, 2);
    // A SET without TTL clears the TTL.
    let h = base.clone().op(3, set("w"), 10, 11, OK).op(2, get(), 500, 501, val("w"));
    assert_linearizable(&h, 50);
    let h = base.op(3, set("w"), 10, 11, OK).op(2, get(), 500, 501, NIL);
    assert_violation(&h, 50, 3);
    // EXPIRE 0 deletes, and answers 1.
    let base = H::new().op(1, set("v"), 0, 1, OK).op(1, Op::Expire { ms: 0 }, 2, 3, int(1));
    assert_linearizable(&base.clone().op(2, get(), 4, 5, NIL), 50);
    assert_violation(&base.op(2, get(), 4, 5, val("v")), 50, 2);
    // SET NX succeeds on an expired key.
    let h = H::new().op(1, set_px("a", 100), 0, 1, OK).op(2, set_nx("b"), 500, 501, OK);
    assert_linearizable(&h, 50);
    let h = H::new().op(1, set_px("a", 100), 0, 1, OK).op(2, set_nx("b"), 50, 51, OK);
    assert_violation(&h, 0, 1);
}

#[test]
fn clock_skew_widens_the_expiry_window() {
    // Read 40 ms after the latest possible expiry without skew.
    let h = H::new().op(1, set_px("v", 100), 0, 1, OK).op(2, get(), 142, 143, val("v"));
    assert_violation(&h, 0, 1);
    assert_violation(&h, 20, 1);
    assert_linearizable(&h, 50);
    // A clock several seconds off.
    let h = H::new().op(1, set_px("v", 1000), 0, 1, OK).op(2, get(), 3500, 3501, val("v"));
    assert_violation(&h, 50, 1);
    assert_linearizable(&h, 3000);
    // Early expiry too.
    let h = H::new().op(1, set_px("v", 1000), 0, 1, OK).op(2, get(), 10, 11, NIL);
    assert_violation(&h, 50, 1);
    assert_linearizable(&h, 3000);
}

// Expiry judged per observer (the default): every op judges with its own clock, off by up to the skew either
// way. All with SET "v" PX 100 in [0, 1] ms and a skew of 50 ms: the expiry instant E is in [99, 102] ms
// (the write's point + 100 ms, ± 1 ms for millisecond clocks), so an op may see the key live up to
// E + 50 ms and expired from E - 50 ms on.

fn ttl_100() -> H {
    H::new().op(1, set_px("v", 100), 0, 1, OK)
}

#[test]
fn per_observer_clocks_expired_then_live_within_the_skew() {
    // A proxy whose clock is ahead sees it expired, then one whose clock is behind still sees it.
    let h = ttl_100().op(2, get(), 80, 81, NIL).op(3, get(), 120, 121, val("v"));
    assert_linearizable(&h, 50);
    // The same as a single clock sees it: it came back (the model before per-observer clocks).
    assert_violation_with(&h, &one_clock(50), 2);
    // Too early to be expired by any clock within 10 ms.
    assert_violation(&h, 10, 1);
    // E is one instant however each op reads it: a write whose point is anywhere in [0, 100] ms expires in
    // [99, 201]; seen expired at 110, E ≤ 161, so the key is seen live up to E + 50 ≤ 211 and not after
    // (where the write alone would allow 251).
    let slow = H::new().op(1, set_px("v", 100), 0, 100, OK).op(2, get(), 110, 111, NIL);
    assert_linearizable(&slow.clone().op(3, get(), 205, 206, val("v")), 50);
    assert_violation(&slow.clone().op(3, get(), 212, 213, val("v")), 50, 2);
    assert_linearizable(&H::new().op(1, set_px("v", 100), 0, 100, OK).op(3, get(), 212, 213, val("v")), 50);
    assert_violation_with(&slow.op(3, get(), 205, 206, val("v")), &one_clock(50), 2);
}

#[test]
fn per_observer_clocks_expired_then_live_after_the_band_is_a_violation() {
    // Live is possible up to E + 50 ≤ 152 ms, whatever an earlier read saw.
    let h = ttl_100().op(2, get(), 80, 81, NIL);
    assert_linearizable(&h.clone().op(3, get(), 150, 152, val("v")), 50);
    assert_violation(&h.clone().op(3, get(), 153, 154, val("v")), 50, 2);
    assert_violation(&h.clone().op(3, get(), 160, 161, val("v")), 50, 2);
    // ...also with nothing seen expired before, and through INCR, SET XX, DEL, PEXPIRE.
    assert_violation(&ttl_100().op(3, get(), 160, 161, val("v")), 50, 1);
    assert_violation(&ttl_100().op(3, set_xx("w"), 160, 161, OK), 50, 1);
    assert_violation(&ttl_100().op(3, Op::Del, 160, 161, int(1)), 50, 1);
    assert_violation(&ttl_100().op(3, Op::Expire { ms: 1000 }, 160, 161, int(1)), 50, 1);
    // And expired no earlier than E - 50 ≥ 49 ms.
    assert_violation(&ttl_100().op(3, get(), 40, 48, NIL), 50, 1);
    assert_violation(&ttl_100().op(3, set_nx("w"), 40, 48, OK), 50, 1);
    assert_linearizable(&ttl_100().op(3, get(), 40, 49, NIL), 50);
}

#[test]
fn per_observer_clocks_live_expired_live_within_the_band() {
    let h = ttl_100()
        .op(2, get(), 60, 61, val("v"))
        .op(3, get(), 70, 71, NIL)
        .op(2, get(), 110, 111, val("v"))
        .op(3, Op::Del, 120, 121, int(0))
        .op(2, Op::Expire { ms: 10 }, 130, 131, int(0))
        .op(4, set_xx("w"), 135, 136, NIL)
        .op(2, get(), 140, 141, val("v"));
    assert_linearizable(&h, 50);
    assert_violation_with(&h, &one_clock(50), 3);
    // A DEL that saw it live deleted it for everyone: no clock brings it back.
    let h = ttl_100().op(3, get(), 70, 71, NIL).op(2, Op::Del, 80, 81, int(1)).op(2, get(), 90, 91, val("v"));
    assert_violation(&h, 50, 3);
    let h = ttl_100().op(2, Op::Del, 60, 61, int(1)).op(3, get(), 62, 63, val("v"));
    assert_violation(&h, 50, 2);
    // Skew is about TTLs only: a key without one is never seen expired, nor a deleted one live.
    let h = H::new().op(1, set("v"), 0, 1, OK).op(2, get(), 60, 61, val("v")).op(3, get(), 62, 63, NIL);
    assert_violation(&h, 50, 2);
    let h = H::new().op(1, set("v"), 0, 1, OK).op(1, Op::Del, 2, 3, int(1)).op(3, get(), 4, 5, val("v"));
    assert_violation(&h, 50, 2);
}

#[test]
fn per_observer_clocks_an_incr_that_saw_it_expired_replaced_it() {
    // Seen expired, then live, then an INCR judges it expired: it starts from 0, without a TTL, for all.
    let base = H::new().op(1, set_px("5", 100), 0, 1, OK).op(2, get(), 80, 81, NIL).op(3, get(), 90, 91, val("5")).op(
        4,
        Op::Incr,
        100,
        101,
        int(1),
    );
    assert_linearizable(&base.clone().op(2, get(), 110, 111, val("1")), 50);
    assert_linearizable(&base.clone().op(2, get(), 500, 501, val("1")), 50);
    // The old value, seen live after the INCR completed (which a late clock alone would allow): violation.
    assert_violation(&base.clone().op(3, get(), 110, 111, val("5")), 50, 4);
    // The INCR's value has no TTL.
    assert_violation(&base.clone().op(3, get(), 110, 111, NIL), 50, 4);
    assert_violation(&base.clone().op(3, get(), 500, 501, NIL), 50, 4);
    // A read overlapping the INCR may still come before it.
    assert_linearizable(&base.clone().op(3, get(), 95, 105, val("5")), 50);
    // Judged live instead, it counts on and keeps the TTL, which other clocks still judge either way.
    let live = H::new()
        .op(1, set_px("5", 100), 0, 1, OK)
        .op(2, get(), 80, 81, NIL)
        .op(4, Op::Incr, 100, 101, int(6))
        .op(2, get(), 110, 111, NIL)
        .op(3, get(), 120, 121, val("6"));
    assert_linearizable(&live, 50);
    assert_violation(&live.clone().op(3, get(), 160, 161, val("6")), 50, 5);
    assert_linearizable(&live.op(3, get(), 160, 161, NIL), 50);
}

#[test]
fn per_observer_clocks_a_write_that_saw_it_expired_is_seen_by_all() {
    // SET NX succeeds on a key its proxy judges expired; the old value is gone for every clock then.
    let h = ttl_100().op(2, set_nx("w"), 80, 81, OK);
    assert_linearizable(&h.clone().op(3, get(), 90, 91, val("w")), 50);
    assert_violation(&h.clone().op(3, get(), 90, 91, val("v")), 50, 2);
    // A SET NX refused by a late clock after a read saw the key expired.
    let h = ttl_100().op(2, get(), 80, 81, NIL).op(3, set_nx("w"), 120, 121, NIL).op(2, get(), 130, 131, val("v"));
    assert_linearizable(&h, 50);
    // A PEXPIRE that judged it live gives it a new TTL, also after a read saw it expired.
    let h = ttl_100().op(2, get(), 80, 81, NIL).op(3, Op::Expire { ms: 1000 }, 90, 91, int(1));
    assert_linearizable(&h.clone().op(2, get(), 500, 501, val("v")), 50);
    assert_violation(&h.clone().op(2, get(), 1500, 1501, val("v")), 50, 3);
    // One that judged it expired changed nothing.
    let h = ttl_100().op(3, Op::Expire { ms: 1000 }, 90, 91, int(0));
    assert_linearizable(&h.clone().op(2, get(), 120, 121, val("v")), 50);
    assert_violation(&h.op(2, get(), 500, 501, val("v")), 50, 2);
}

#[test]
fn one_clock_keeps_the_single_expiry_instant() {
    // Widened by the skew, but monotonic: the old behaviour, still available.
    let h = ttl_100().op(2, get(), 60, 61, NIL);
    assert_linearizable_with(&h, &one_clock(50));
    assert_linearizable_with(&ttl_100().op(2, get(), 140, 141, val("v")), &one_clock(50));
    assert_violation_with(&ttl_100().op(2, get(), 160, 161, val("v")), &one_clock(50), 1);
    assert_violation_with(&h.op(3, get(), 70, 71, val("v")), &one_clock(50), 2);
    let r = check(&ttl_100().entries, &one_clock(50));
    assert!(r.to_string().contains("(clock skew ±50 ms, one clock)"), "{r}");
    let r = check(&ttl_100().entries, &skew(50));
    assert!(r.to_string().contains("(clock skew ±50 ms, per observer)"), "{r}");
}

#[test]
fn a_failed_write_may_have_happened() {
    // The SET timed out, but its value shows up later: it took effect.
    let h = H::new().op(1, set("a"), 0, 1, OK).lost(2, set("b"), 2).op(3, get(), 100, 101, val("b"));
    assert_linearizable(&h, 50);
    // ...even after reads that did not see it yet.
    let h = H::new().op(1, set("a"), 0, 1, OK).lost(2, set("b"), 2).op(3, get(), 100, 101, val("a")).op(
        3,
        get(),
        200,
        201,
        val("b"),
    );
    assert_linearizable(&h, 50);
    // But not before it was sent, and not a value nobody wrote.
    let h = H::new().op(1, set("a"), 0, 1, OK).op(3, get(), 2, 3, val("b")).lost(2, set("b"), 5);
    assert_violation(&h, 50, 1);
    let h = H::new().op(1, set("a"), 0, 1, OK).lost(2, set("b"), 2).op(3, get(), 100, 101, val("c"));
    assert_violation(&h, 50, 2);
    // Once seen, it cannot be undone by its own late arrival.
    let h = H::new()
        .op(1, set("a"), 0, 1, OK)
        .lost(2, set("b"), 2)
        .op(3, get(), 100, 101, val("b"))
        .op(1, set("c"), 110, 111, OK)
        .op(3, get(), 200, 201, val("b"));
    assert_violation(&h, 50, 4);
}

#[test]
fn a_failed_incr_may_or_may_not_have_counted() {
    let base = H::new().op(1, Op::Incr, 0, 1, int(1)).lost(2, Op::Incr, 2);
    assert_linearizable(&base.clone().op(3, get(), 100, 101, val("1")), 50);
    assert_linearizable(&base.clone().op(3, get(), 100, 101, val("2")), 50);
    assert_violation(&base.clone().op(3, get(), 100, 101, val("3")), 50, 2);
    // It counted at most once.
    let h = base.op(3, Op::Incr, 100, 101, int(3)).op(3, Op::Incr, 102, 103, int(5));
    assert_violation(&h, 50, 3);
}

#[test]
fn an_unknown_write_with_ttl_expires_relative_to_when_it_was_seen() {
    // Seen by a read ending at 1000 ms, the SET PX 100 took effect by then: gone by 1100 + skew.
    let base = H::new().lost(1, set_px("v", 100), 0).op(2, get(), 900, 1000, val("v"));
    assert_linearizable(&base.clone().op(3, get(), 1200, 1201, NIL), 50);
    assert_violation(&base.op(3, get(), 1200, 1201, val("v")), 50, 2);
}

#[test]
fn keys_are_independent() {
    let h = vec![
        Entry::ok(1, "a", set("1"), 0, 1000, OK),
        Entry::ok(2, "b", set("2"), 0, 1000, OK),
        Entry::ok(3, "a", get(), 2000, 3000, val("1")),
        Entry::ok(3, "b", get(), 2000, 3000, val("1")),
    ];
    let r = check(&h, &Options::default());
    assert_eq!(r.keys.len(), 2);
    assert_eq!(r.keys[0].key, b"a");
    assert_eq!(r.keys[0].verdict, Verdict::Linearizable);
    assert!(matches!(&r.keys[1].verdict, Verdict::Violation(v) if v.failing_entry == 3), "{r}");
    assert_eq!(r.violations().count(), 1);
    assert!(!r.is_linearizable());
}

#[test]
fn the_report_points_at_the_first_failure_not_the_whole_history() {
    // 60 correct ops, a stale read, 60 more correct ops (which are fine on their own).
    let mut h = H::new();
    let mut t = 0;
    for i in 0..30 {
        h = h.op(1, set(&format!("v{i}")), t, t + 2, OK).op(2, get(), t + 1, t + 3, val(&format!("v{i}")));
        t += 5;
    }
    let stale_at = h.entries.len();
    h = h.op(3, get(), t, t + 1, val("v3"));
    t += 5;
    for i in 0..30 {
        h = h.op(1, set(&format!("w{i}")), t, t + 2, OK).op(2, get(), t + 1, t + 3, val(&format!("w{i}")));
        t += 5;
    }
    let r = assert_violation(&h, 50, stale_at);
    let Verdict::Violation(v) = &r.keys[0].verdict else { unreachable!() };
    assert_eq!(v.prefix_ops, stale_at + 1);
    assert!(v.shortest);
    // The last write (which may or may not be in the state at the window's start), its read, and the
    // stale read.
    assert_eq!(
        v.excerpt.iter().map(|o| o.entry).collect::<Vec<_>>(),
        vec![stale_at - 2, stale_at - 1, stale_at],
        "{r}"
    );
    assert!(v.from_any_state_at_us.is_some());
    println!("{r}");
}

#[test]
fn an_exhausted_budget_is_undecided_never_linearizable() {
    let mut h = H::new();
    for i in 0..20 {
        h = h.op(i, Op::Incr, 0, 100, int(i as i64 + 1));
    }
    let small = Options { clock_skew_ms: 50, max_steps: 5, ..Options::default() };
    let r = check(&h.entries, &small);
    assert_eq!(r.keys[0].verdict, Verdict::Undecided { max_steps: 5 });
    assert!(!r.is_linearizable());
    assert_eq!(r.undecided().count(), 1);
    assert!(r.to_string().contains("UNDECIDED"), "{r}");
    assert!(check(&h.entries, &Options::default()).is_linearizable());
}

#[test]
fn malformed_entries_are_reported_not_judged() {
    let mut bad_time = Entry::ok(1, "k", get(), 5000, 4000, NIL);
    let r = check(std::slice::from_ref(&bad_time), &Options::default());
    assert!(matches!(&r.keys[0].verdict, Verdict::Malformed { entry: 0, .. }), "{r}");
    bad_time.completed_at_us = Some(6000);
    assert!(check(std::slice::from_ref(&bad_time), &Options::default()).is_linearizable());
    // A SET's error reply is an unknown outcome, not a result.
    let set_err = Entry::ok(1, "k", set("a"), 0, 1000, ERR);
    let r = check(&[set_err], &Options::default());
    assert!(
        matches!(&r.keys[0].verdict, Verdict::Malformed { reason, .. } if reason.contains("unknown outcome")),
        "{r}"
    );
    let half = Entry { result: None, ..Entry::ok(1, "k", get(), 0, 1000, NIL) };
    assert!(matches!(check(&[half], &Options::default()).keys[0].verdict, Verdict::Malformed { .. }));
}

#[test]
fn histories_round_trip_through_json() {
    let mut h = H::new()
        .op(1, set_px("v", 100), 0, 1, OK)
        .op(2, Op::Set { value: vec![0xff, 0, b'"'], cond: SetCond::IfEq(vec![0xfe]), ttl_ms: None }, 2, 3, NIL)
        .lost(3, Op::Expire { ms: 5 }, 4)
        .op(4, Op::Incr, 5, 6, ERR)
        .op(4, Op::Del, 7, 8, int(1))
        .op(4, get(), 9, 10, OpResult::Value(vec![0x80]))
        .entries;
    h.push(Entry::ok(5, vec![0xc3, 0x28], set_nx("é"), 11, 12, OK));
    let text = to_json(&h);
    assert_eq!(from_json(&text).expect("parses"), h);
    assert_eq!(text.lines().count(), h.len() + 2, "one entry per line:\n{text}");
    let path = std::env::temp_dir().join(format!("lincheck-roundtrip-{}.json", std::process::id()));
    save_json(&path, &h).expect("saves");
    let back = load_json(&path).expect("loads");
    let _ = std::fs::remove_file(&path);
    assert_eq!(back, h);
    assert!(load_json(&path).is_err(), "a missing file is an error");
    assert!(from_json("[{\"client\": 1}]").is_err());
}

#[test]
fn the_json_format_is_the_documented_one() {
    let text = r#"[
        {"client": 1, "key": "k", "op": {"set": {"value": "a", "cond": "nx", "ttl_ms": 100}}, "invoked_at_us": 0, "completed_at_us": 1000, "result": "ok"},
        {"client": 2, "key": "k", "op": {"set": {"value": "b", "cond": {"if_eq": "a"}}}, "invoked_at_us": 2000},
        {"client": 3, "key": "k", "op": "get", "invoked_at_us": 3000, "completed_at_us": 4000, "result": {"value": "b"}},
        {"client": 3, "key": "k", "op": "incr", "invoked_at_us": 5000, "completed_at_us": 6000, "result": "error"},
        {"client": 3, "key": "k", "op": {"expire": {"ms": 0}}, "invoked_at_us": 7000, "completed_at_us": 8000, "result": {"int": 1}},
        {"client": 3, "key": [107], "op": "del", "invoked_at_us": 9000, "completed_at_us": 10000, "result": {"int": 0}}
    ]"#;
    let h = from_json(text).expect("parses");
    assert_eq!(h[1].op, set_ifeq("b", "a"));
    assert_eq!(h[1].completed_at_us, None);
    assert_eq!(h[5].key, b"k");
    let r = check(&h, &Options::default());
    assert!(r.is_linearizable(), "{r}");
    // A value nobody wrote.
    let mut bad = h.clone();
    bad[2].result = Some(val("c"));
    assert!(!check(&bad, &Options::default()).is_linearizable());
}
