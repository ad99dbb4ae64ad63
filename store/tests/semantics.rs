//! The store node's operations against every record state, on both engines: one suite, run twice.

mod common;

use bytes::Bytes;
use common::*;
use vesta_proto::*;

macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod memory { $( #[tokio::test] async fn $case() { super::$case(super::Harness::memory()).await } )* }
        mod rocksdb { $( #[tokio::test] async fn $case() { super::$case(super::Harness::rocks()).await } )* }
    };
}

on_both_engines!(
    prepare_on_absent_record,
    prepare_on_live_record,
    prepare_on_expired_record,
    prepare_on_tombstone,
    prepare_locked_by_another_request,
    prepare_locked_by_same_request_is_reentrant,
    prepare_writes_nothing,
    prepare_after_own_commit_is_already_done,
    value_and_version_conditions,
    commit_applies_exactly_the_record_and_releases,
    commit_without_prepare_is_refused,
    late_commit_after_lease_expired_is_refused,
    late_commit_after_another_request_took_over,
    retried_commit_is_already_done,
    commit_of_tombstone_deletes,
    abort_releases_only_own_lease,
    read_never_waits_on_a_lease,
    read_states,
    repair_installs_only_newer_copies,
    repair_respects_leases,
    repair_never_replaces_a_dead_copy_with_an_older_one,
    mark_delete_keeps_the_tombstone_for_the_grace_period,
    mark_delete_on_absent_record_and_retry,
    mark_delete_never_beats_a_newer_copy,
    ttl_expiry_and_purge,
    scan_pages_and_filters,
    scan_rejects_bad_ranges,
    scan_pages_are_bounded_in_bytes,
    validation_and_ownership,
    ping_answers,
    commit_never_replaces_a_newer_copy,
    commit_batch_never_replaces_a_newer_copy,
    equal_timestamps_are_ordered_by_writer,
    a_commit_stamped_far_ahead_is_refused,
    a_dropped_commit_never_leaves_the_key_locked,
    prepare_grants_a_lease_and_tells_the_time,
    a_node_away_longer_than_the_grace_serves_nothing_until_rebuilt,
    a_restart_after_the_grace_needs_a_rebuild,
    the_change_log_holds_exactly_this_sites_commits,
    the_change_log_is_read_only_up_to_its_closed_timestamp,
    the_change_log_pages_resume_and_trim,
    the_change_log_keeps_dead_copies_past_the_grace,
    no_change_log_unless_configured,
    a_commit_stamped_before_its_lease_is_refused_with_the_change_log_on,
    a_copy_from_another_site_keeps_its_writer,
    a_batch_answers_each_request_as_if_alone_in_order,
    handle_now_answers_what_never_waits_and_gives_back_the_rest,
);

async fn prepare_on_absent_record(h: Harness) {
    for (req, kind, want) in [
        (1, PrepareKind::Create, Status::Ok),
        (2, PrepareKind::Update, Status::Absent),
        (3, PrepareKind::Set, Status::Ok),
        (4, PrepareKind::Delete, Status::Absent),
        (5, PrepareKind::ReadModifyWrite, Status::Ok),
    ] {
        let key = format!("absent-{req}");
        let r = h.prepare(req, &key, kind).await;
        assert_eq!((r.status, r.copy), (want, None), "{kind:?}");
        assert!(r.status.holds_lease());
        assert_eq!(h.prepare(99, &key, PrepareKind::Set).await.status, Status::Locked, "{kind:?} holds the lease");
    }
}

async fn prepare_on_live_record(h: Harness) {
    let rec = h.write(10, "k", 5, "v1", 0).await;
    for (req, kind, want) in [
        (1, PrepareKind::Create, Status::Exists),
        (2, PrepareKind::Update, Status::Ok),
        (3, PrepareKind::Set, Status::Ok),
        (4, PrepareKind::Delete, Status::Ok),
        (5, PrepareKind::ReadModifyWrite, Status::Ok),
    ] {
        let r = h.prepare(req, "k", kind).await;
        assert_eq!(r.status, want, "{kind:?}");
        assert_eq!(r.copy.as_ref(), Some(&rec), "{kind:?} returns the copy with its value");
        assert_eq!(h.abort(req, "k").await.status, Status::Ok);
    }
    // Without want_value the metadata comes back, the value does not.
    let p =
        Prepare { req: RequestId(6), target: target("k"), kind: PrepareKind::Set, condition: None, want_value: false };
    let r = h.reply(Request::Prepare(p)).await;
    assert_eq!(r.copy.unwrap(), Record::new(rec.meta, Bytes::new()));
}

async fn prepare_on_expired_record(h: Harness) {
    let now = h.now();
    h.write(10, "k", 5, "v", now + 100).await;
    h.clock.advance(100);
    let r = h.prepare(1, "k", PrepareKind::Create).await;
    assert_eq!(r.status, Status::Ok, "an expired record is absent");
    let copy = r.copy.expect("an expired copy still orders copies");
    assert_eq!((copy.meta.hlc, copy.meta.expires_at), (5, now + 100));
    assert_eq!(h.abort(1, "k").await.status, Status::Ok);
    assert_eq!(h.prepare(2, "k", PrepareKind::Update).await.status, Status::Absent);
}

async fn prepare_on_tombstone(h: Harness) {
    h.write(10, "k", 5, "v", 0).await;
    assert_eq!(h.mark_delete(11, "k", tombstone_meta(6, 0)).await.status, Status::Ok);
    let r = h.prepare(1, "k", PrepareKind::Create).await;
    assert_eq!(r.status, Status::Ok, "a tombstone counts as absent");
    let copy = r.copy.expect("the tombstone's metadata orders copies");
    assert!(copy.meta.flags.tombstone() && copy.value.is_empty() && copy.meta.hlc == 6);
    assert_eq!(h.abort(1, "k").await.status, Status::Ok);
    assert_eq!(h.prepare(2, "k", PrepareKind::Update).await.status, Status::Absent);
    assert_eq!(h.abort(2, "k").await.status, Status::Ok);
    assert_eq!(h.prepare(3, "k", PrepareKind::Delete).await.status, Status::Absent);
}

async fn prepare_locked_by_another_request(h: Harness) {
    h.write(10, "k", 5, "v", 0).await;
    assert_eq!(h.prepare(1, "k", PrepareKind::Set).await.status, Status::Ok);
    for kind in [PrepareKind::Create, PrepareKind::Set, PrepareKind::Delete, PrepareKind::ReadModifyWrite] {
        let r = h.prepare(2, "k", kind).await;
        assert_eq!((r.status, r.copy), (Status::Locked, None), "{kind:?}");
    }
    // The conflict did not disturb the holder.
    assert_eq!(h.commit(1, "k", record(1, 6, "mine", 0)).await.status, Status::Ok);
    assert_eq!(h.read("k").await.copy.unwrap().value, "mine");
}

async fn prepare_locked_by_same_request_is_reentrant(h: Harness) {
    assert_eq!(h.prepare(1, "k", PrepareKind::Create).await.status, Status::Ok);
    h.clock.advance(LEASE_MS - 100);
    // A retried prepare renews the lease and gives the same answer.
    assert_eq!(h.prepare(1, "k", PrepareKind::Create).await.status, Status::Ok);
    h.clock.advance(LEASE_MS - 100);
    assert_eq!(h.prepare(2, "k", PrepareKind::Set).await.status, Status::Locked, "renewed, not expired");
    assert_eq!(h.commit(1, "k", record(1, 1, "x", 0)).await.status, Status::Ok);
}

async fn prepare_writes_nothing(h: Harness) {
    for i in 0..20u128 {
        h.prepare(i, &format!("k{i}"), PrepareKind::Set).await;
    }
    assert_eq!(h.raw_count(), 0);
    h.clock.advance(LEASE_MS);
    assert_eq!(h.read("k1").await.status, Status::Absent);
}

async fn prepare_after_own_commit_is_already_done(h: Harness) {
    let rec = h.write(7, "k", 3, "v", 0).await;
    let r = h.prepare(7, "k", PrepareKind::Create).await;
    assert_eq!((r.status, r.copy), (Status::AlreadyDone, Some(rec)));
    // …and took no lease.
    assert_eq!(h.prepare(8, "k", PrepareKind::Set).await.status, Status::Ok);
}

async fn value_and_version_conditions(h: Harness) {
    h.write(10, "k", 5, "v1", 0).await;
    let cases = [
        (Condition::ValueEquals(Bytes::from_static(b"v1")), Status::Ok),
        (Condition::ValueEquals(Bytes::from_static(b"v2")), Status::ConditionFailed),
        (Condition::VersionEquals(5), Status::Ok),
        (Condition::VersionEquals(4), Status::ConditionFailed),
        (Condition::Absent, Status::Exists),
        (Condition::Present, Status::Ok),
    ];
    for (i, (cond, want)) in cases.into_iter().enumerate() {
        let req = 100 + i as u128;
        let r = h.prepare_if(req, "k", PrepareKind::Update, Some(cond.clone())).await;
        assert_eq!(r.status, want, "{cond:?}");
        assert!(r.status.holds_lease(), "{cond:?}: the coordinator decides, so the lease is held");
        assert_eq!(h.abort(req, "k").await.status, Status::Ok);
    }
    let r = h.prepare_if(1, "nothing", PrepareKind::Update, Some(Condition::VersionEquals(1))).await;
    assert_eq!(r.status, Status::Absent);
    // An explicit condition overrides the kind's.
    let r = h.prepare_if(2, "k", PrepareKind::Create, Some(Condition::Present)).await;
    assert_eq!(r.status, Status::Ok);
}

async fn commit_applies_exactly_the_record_and_releases(h: Harness) {
    assert_eq!(h.prepare(1, "k", PrepareKind::Create).await.status, Status::Ok);
    let mut rec = record(999, 42, "value", h.now() + 60_000);
    rec.meta.flags = Flags(Flags::ENCRYPTED);
    rec.meta.key_id = 3;
    assert_eq!(h.commit(1, "k", rec.clone()).await.status, Status::Ok);
    rec.meta.last_writer = RequestId(1); // the node stamps the committing request
    assert_eq!(h.read("k").await.copy, Some(rec));
    assert_eq!(h.prepare(2, "k", PrepareKind::Set).await.status, Status::Ok, "released");
}

async fn commit_without_prepare_is_refused(h: Harness) {
    assert_eq!(h.commit(1, "k", record(1, 1, "v", 0)).await.status, Status::NoLease);
    assert_eq!(h.read("k").await.status, Status::Absent);
}

async fn late_commit_after_lease_expired_is_refused(h: Harness) {
    h.write(10, "k", 5, "old", 0).await;
    assert_eq!(h.prepare(1, "k", PrepareKind::Set).await.status, Status::Ok);
    h.clock.advance(LEASE_MS);
    assert_eq!(h.commit(1, "k", record(1, 6, "late", 0)).await.status, Status::NoLease);
    assert_eq!(h.read("k").await.copy.unwrap().value, "old");
}

async fn late_commit_after_another_request_took_over(h: Harness) {
    h.write(10, "k", 5, "old", 0).await;
    assert_eq!(h.prepare(1, "k", PrepareKind::ReadModifyWrite).await.status, Status::Ok);
    h.clock.advance(LEASE_MS + 1);
    let r = h.prepare(2, "k", PrepareKind::ReadModifyWrite).await;
    assert_eq!(r.status, Status::Ok, "an expired lease is reclaimed");
    // The first coordinator wakes up: its commit must not land under request 2's lease.
    assert_eq!(h.commit(1, "k", record(1, 6, "stale", 0)).await.status, Status::NoLease);
    assert_eq!(h.abort(1, "k").await.status, Status::AlreadyDone, "and its abort frees nothing of 2's");
    assert_eq!(h.prepare(3, "k", PrepareKind::Set).await.status, Status::Locked);
    assert_eq!(h.commit(2, "k", record(2, 7, "new", 0)).await.status, Status::Ok);
    assert_eq!(h.read("k").await.copy.unwrap().value, "new");
}

async fn retried_commit_is_already_done(h: Harness) {
    let rec = h.write(1, "k", 1, "v", 0).await;
    assert_eq!(h.commit(1, "k", rec.clone()).await.status, Status::AlreadyDone);
    h.clock.advance(10 * LEASE_MS);
    assert_eq!(h.commit(1, "k", rec).await.status, Status::AlreadyDone);
    assert_eq!(h.read("k").await.copy.unwrap().meta.version, 1);
}

async fn commit_of_tombstone_deletes(h: Harness) {
    h.write(1, "k", 1, "v", 0).await;
    assert_eq!(h.prepare(2, "k", PrepareKind::Delete).await.status, Status::Ok);
    let mut t = record(2, 2, "ignored", 0);
    t.meta.flags = Flags(Flags::TOMBSTONE);
    assert_eq!(h.commit(2, "k", t).await.status, Status::Ok);
    let r = h.read("k").await;
    assert_eq!(r.status, Status::Absent);
    let copy = r.copy.unwrap();
    assert!(copy.value.is_empty() && copy.meta.expires_at <= h.now(), "dead since the delete");
    h.clock.advance(GRACE_MS);
    assert_eq!(copy_of(h.read("k").await), (Status::Absent, None), "forgotten after the grace period");
}

async fn abort_releases_only_own_lease(h: Harness) {
    assert_eq!(h.prepare(1, "k", PrepareKind::Set).await.status, Status::Ok);
    assert_eq!(h.abort(2, "k").await.status, Status::AlreadyDone);
    assert_eq!(h.prepare(2, "k", PrepareKind::Set).await.status, Status::Locked);
    assert_eq!(h.abort(1, "k").await.status, Status::Ok);
    assert_eq!(h.abort(1, "k").await.status, Status::AlreadyDone, "idempotent");
    assert_eq!(h.prepare(2, "k", PrepareKind::Set).await.status, Status::Ok);
    assert_eq!(h.raw_count(), 0, "abort wrote nothing");
}

async fn read_never_waits_on_a_lease(h: Harness) {
    let rec = h.write(1, "k", 1, "committed", 0).await;
    assert_eq!(h.prepare(2, "k", PrepareKind::Set).await.status, Status::Ok);
    let r = tokio::time::timeout(std::time::Duration::from_secs(1), h.read("k")).await.unwrap();
    assert_eq!((r.status, r.copy), (Status::Ok, Some(rec)));
}

async fn read_states(h: Harness) {
    assert_eq!(copy_of(h.read("never").await), (Status::Absent, None));
    let now = h.now();
    h.write(1, "ttl", 1, "v", now + 50).await;
    assert_eq!(h.read("ttl").await.status, Status::Ok);
    h.clock.advance(50);
    let r = h.read("ttl").await;
    assert_eq!(r.status, Status::Absent, "expired is absent");
    assert_eq!(r.copy.map(|c| (c.meta.hlc, c.value)), Some((1, Bytes::from_static(b"v"))), "but still orders");
    h.clock.advance(GRACE_MS);
    assert_eq!(copy_of(h.read("ttl").await), (Status::Absent, None), "forgotten after the grace period");
    let p = Read { target: target("ttl"), want_value: false };
    h.write(2, "ttl", 2, "again", 0).await;
    let r = h.reply(Request::Read(p)).await;
    assert_eq!((r.status, r.copy.unwrap().value), (Status::Ok, Bytes::new()));
}

async fn repair_installs_only_newer_copies(h: Harness) {
    let cur = h.write(1, "k", 10, "ten", 0).await;
    let r = h.repair(50, "k", record(5, 9, "nine", 0)).await;
    assert_eq!((r.status, r.copy.map(|c| c.meta)), (Status::ConditionFailed, Some(cur.meta)));
    assert_eq!(h.repair(51, "k", cur.clone()).await.status, Status::AlreadyDone, "same copy");
    let mut same_hlc_other_origin = record(6, 10, "dc2", 0);
    same_hlc_other_origin.meta.origin = 2;
    assert_eq!(h.repair(52, "k", same_hlc_other_origin.clone()).await.status, Status::Ok, "origin breaks ties");
    let newer = record(7, 11, "eleven", 0);
    assert_eq!(h.repair(53, "k", newer.clone()).await.status, Status::Ok);
    assert_eq!(h.repair(53, "k", newer.clone()).await.status, Status::AlreadyDone, "retry");
    assert_eq!(h.read("k").await.copy, Some(newer), "a repair keeps the original writer");
    assert_eq!(h.repair(54, "absent", record(8, 1, "x", 0)).await.status, Status::Ok);
    assert_eq!(h.read("absent").await.status, Status::Ok);
}

async fn repair_respects_leases(h: Harness) {
    assert_eq!(h.prepare(1, "k", PrepareKind::Set).await.status, Status::Ok);
    assert_eq!(h.repair(50, "k", record(5, 9, "r", 0)).await.status, Status::Locked);
    h.clock.advance(LEASE_MS);
    assert_eq!(h.repair(50, "k", record(5, 9, "r", 0)).await.status, Status::Ok, "after the lease lapsed");
    assert_eq!(h.prepare(2, "k", PrepareKind::Set).await.status, Status::Ok, "repair released its own lease");
}

/// A replica that missed an expiry still holds the older, live version; repairing it onto a replica
/// whose newer copy has expired would bring the key back. Dead copies keep their place for the grace
/// period; after it they are as good as purged.
async fn repair_never_replaces_a_dead_copy_with_an_older_one(h: Harness) {
    let now = h.now();
    h.write(1, "k", 100, "expiring", now + 10).await;
    h.clock.advance(20);
    let r = h.repair(50, "k", record(5, 99, "stale", 0)).await;
    assert_eq!(r.status, Status::ConditionFailed, "the expired copy is newer");
    assert_eq!(h.read("k").await.status, Status::Absent);
    assert_eq!(h.repair(51, "k", record(6, 101, "fresh", 0)).await.status, Status::Ok, "a newer write wins");
    assert_eq!(h.read("k").await.copy.unwrap().value, "fresh");
    h.write(2, "gone", 100, "expiring", now + 10).await;
    h.clock.advance(GRACE_MS);
    assert_eq!(h.repair(52, "gone", record(7, 99, "stale", 0)).await.status, Status::Ok, "after the grace");
}

async fn mark_delete_keeps_the_tombstone_for_the_grace_period(h: Harness) {
    let now = h.now();
    h.write(1, "k", 1, "v", now + 10).await;
    assert_eq!(h.mark_delete(2, "k", tombstone_meta(2, now)).await.status, Status::Ok);
    let r = h.read("k").await;
    let t = r.copy.unwrap();
    assert_eq!(r.status, Status::Absent);
    assert!(t.meta.flags.tombstone() && t.meta.expires_at == now && t.meta.last_writer == RequestId(2));
    // Long after the deleted record's own expiry, an older live copy still cannot be repaired back.
    h.clock.advance(GRACE_MS - 1);
    assert_eq!(h.repair(3, "k", record(1, 1, "v", 0)).await.status, Status::ConditionFailed);
    h.clock.advance(1);
    assert_eq!(copy_of(h.read("k").await), (Status::Absent, None), "forgotten after the grace period");
}

async fn mark_delete_on_absent_record_and_retry(h: Harness) {
    assert_eq!(h.mark_delete(2, "k", tombstone_meta(5, 0)).await.status, Status::Ok);
    assert_eq!(h.mark_delete(2, "k", tombstone_meta(5, 0)).await.status, Status::AlreadyDone);
    let t = h.read("k").await.copy.unwrap();
    assert_eq!(t.meta.expires_at, h.now(), "a tombstone without a time of death dies now");
    assert_eq!(h.prepare(9, "k", PrepareKind::Set).await.status, Status::Ok);
    assert_eq!(h.mark_delete(3, "k", tombstone_meta(6, 0)).await.status, Status::Locked);
}

async fn mark_delete_never_beats_a_newer_copy(h: Harness) {
    h.write(1, "k", 10, "v", 0).await;
    assert_eq!(h.mark_delete(2, "k", tombstone_meta(9, 0)).await.status, Status::ConditionFailed);
    assert_eq!(h.read("k").await.status, Status::Ok);
}

async fn ttl_expiry_and_purge(h: Harness) {
    let now = h.now();
    h.write(1, "short", 1, "v", now + 20).await;
    h.write(2, "long", 1, "v", now + 3_600_000).await;
    h.write(3, "forever", 1, "v", 0).await;
    assert_eq!(h.mark_delete(4, "gone", tombstone_meta(1, now + 20)).await.status, Status::Ok);
    // The RocksDB filter reads the real clock: let real time pass as well.
    std::thread::sleep(std::time::Duration::from_millis(30));
    h.clock.advance(30);
    assert_eq!(h.read("short").await.status, Status::Absent);
    h.purge();
    assert_eq!(h.raw_count(), 4, "dead copies are kept for the grace period");
    std::thread::sleep(std::time::Duration::from_millis(GRACE_MS));
    h.clock.advance(GRACE_MS);
    assert_eq!(h.raw_count(), 4, "long-dead records stay on disk until purged");
    h.purge();
    assert_eq!(h.raw_count(), 2, "the expired record and the tombstone are dropped after the grace period");
    assert_eq!(h.read("long").await.status, Status::Ok);
    assert_eq!(h.read("forever").await.status, Status::Ok);
}

async fn scan_pages_and_filters(h: Harness) {
    let now = h.now();
    for i in 0..50u128 {
        h.write(i + 1, &format!("key{i}"), 1, "v", 0).await;
    }
    // Another namespace, a tombstone and an expired record in the mix.
    let t = target_in(b"other", "key0");
    h.reply(Request::Prepare(Prepare {
        req: RequestId(500),
        target: t.clone(),
        kind: PrepareKind::Set,
        condition: None,
        want_value: false,
    }))
    .await;
    h.reply(Request::Commit(Commit {
        req: RequestId(500),
        target: t,
        record: record(500, 1, "o", 0),
        keep_writer: false,
    }))
    .await;
    assert_eq!(h.mark_delete(501, "key1", tombstone_meta(2, 0)).await.status, Status::Ok);
    h.write(502, "key2", 3, "v", now + 5).await;
    h.clock.advance(5);

    let scan = |after: Option<Bytes>, ns: Option<&'static [u8]>, tombstones: bool| Scan {
        shard_from: 0,
        shard_to: SHARDS,
        after,
        limit: 7,
        namespace: ns.map(Bytes::from_static),
        include_dead: tombstones,
        want_values: true,
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let Response::Scan(page) = h.call(Request::Scan(scan(cursor, Some(NS), false))).await else { panic!() };
        assert!(page.entries.len() <= 7);
        pages += 1;
        for e in &page.entries {
            assert_eq!(e.shard, vesta_proto::shard::shard_of(&e.key, SHARDS));
            assert_eq!((&e.namespace[..], &e.record.value[..]), (NS, &b"v"[..]));
            seen.push(String::from_utf8(e.key.to_vec()).unwrap());
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    seen.sort();
    let mut want: Vec<String> = (3..50).map(|i| format!("key{i}")).collect();
    want.push("key0".into());
    want.sort();
    assert_eq!(seen, want, "every live key of the namespace exactly once");
    assert!(pages >= 7);

    let Response::Scan(all) = h.call(Request::Scan(Scan { limit: 1000, ..scan(None, None, true) })).await else {
        panic!()
    };
    assert_eq!(all.entries.len(), 50 + 1, "dead copies (the tombstone, the expired record) and the other namespace");
    assert!(all.next.is_none());
    assert!(all.entries.iter().any(|e| e.record.meta.flags.tombstone() && e.key == "key1"));
    assert!(all.entries.iter().any(|e| e.record.meta.expires_at == now + 5 && e.key == "key2"));
    // Past the grace period, dead copies are as good as purged.
    h.clock.advance(GRACE_MS);
    let Response::Scan(all) = h.call(Request::Scan(Scan { limit: 1000, ..scan(None, None, true) })).await else {
        panic!()
    };
    assert_eq!(all.entries.len(), 48 + 1);
}

async fn scan_rejects_bad_ranges(h: Harness) {
    let s = Scan {
        shard_from: 5,
        shard_to: 5,
        after: None,
        limit: 10,
        namespace: None,
        include_dead: false,
        want_values: false,
    };
    assert_eq!(h.call(Request::Scan(s.clone())).await.status(), Status::BadRequest);
    let beyond = Scan { shard_to: SHARDS + 1, ..s.clone() };
    assert_eq!(h.call(Request::Scan(beyond)).await.status(), Status::BadRequest);
    let outside = Scan { shard_to: 6, after: Some(Bytes::from_static(&[0, 0, 0, 9])), ..s.clone() };
    assert_eq!(h.call(Request::Scan(outside)).await.status(), Status::BadRequest);
    let h = h.with_settings(|s| s.owned = (0..SHARDS).map(|i| i < 8).collect());
    let ok = Scan { shard_from: 0, shard_to: 8, ..s.clone() };
    assert_eq!(h.call(Request::Scan(ok)).await.status(), Status::Ok);
    let not_mine = Scan { shard_from: 0, shard_to: 9, ..s };
    assert_eq!(h.call(Request::Scan(not_mine)).await.status(), Status::NotOwner);
}

async fn validation_and_ownership(h: Harness) {
    let mut t = target("k");
    t.shard = (t.shard + 1) % SHARDS;
    let p = |target: KeyRef| {
        Request::Prepare(Prepare {
            req: RequestId(1),
            target,
            kind: PrepareKind::Set,
            condition: None,
            want_value: false,
        })
    };
    let r = h.reply(p(t)).await;
    assert_eq!(r.status, Status::BadRequest);
    assert!(r.message.contains("belongs to shard"), "{}", r.message);
    let mut t = target("k");
    t.shard = SHARDS;
    assert_eq!(h.reply(p(t)).await.status, Status::BadRequest);
    let mut t = target("k");
    t.namespace = Bytes::from(vec![b'n'; 256]);
    assert_eq!(h.reply(p(t)).await.status, Status::BadRequest);
    let shard = target("k").shard;
    let h = h.with_settings(|s| s.owned[shard as usize] = false);
    assert_eq!(h.reply(p(target("k"))).await.status, Status::NotOwner);
    assert_eq!(h.read("k").await.status, Status::NotOwner);
}

async fn ping_answers(h: Harness) {
    let Response::Pong(p) = h.call(Request::Ping).await else { panic!() };
    assert_eq!((p.node.as_str(), p.protocol, p.shards), ("test", PROTOCOL_VERSION, SHARDS));
}

/// A prepare delayed in the network can take its lease after a newer write committed on this replica;
/// its coordinator decided on other replicas' copies, so its commit must not roll this one back.
async fn commit_never_replaces_a_newer_copy(h: Harness) {
    h.write(1, "k", 20, "newer", 0).await;
    let p = h.prepare(2, "k", PrepareKind::Set).await;
    assert_eq!(p.copy.as_ref().map(|c| c.meta.hlc), Some(20));
    let r = h.commit(2, "k", record(2, 15, "older", 0)).await;
    assert_eq!(r.status, Status::ConditionFailed);
    assert_eq!(r.copy.map(|c| c.meta.hlc), Some(20));
    assert_eq!(h.read("k").await.copy.unwrap().value, "newer");
    assert_eq!(h.prepare(3, "k", PrepareKind::Set).await.status, Status::Ok, "the lease was released");
}

async fn commit_batch_never_replaces_a_newer_copy(h: Harness) {
    h.write(1, "{t}a", 20, "newer", 0).await;
    for k in ["{t}a", "{t}b"] {
        assert!(h.prepare(2, k, PrepareKind::Set).await.status.holds_lease());
    }
    let batch = CommitBatch {
        req: RequestId(2),
        items: vec![(target("{t}a"), record(2, 15, "older", 0)), (target("{t}b"), record(2, 15, "older", 0))],
    };
    assert_eq!(h.reply(Request::CommitBatch(batch)).await.status, Status::ConditionFailed);
    assert_eq!(h.read("{t}a").await.copy.unwrap().value, "newer");
    assert_eq!(h.read("{t}b").await.status, Status::Absent, "all or none");
    assert!(h.prepare(3, "{t}b", PrepareKind::Set).await.status.holds_lease(), "leases released");
}

/// Two different copies with the same HLC and origin: every replica must keep the same one, whatever
/// order they arrive in (the last writer breaks the tie).
async fn equal_timestamps_are_ordered_by_writer(h: Harness) {
    let (low, high) = (record(5, 10, "low", 0), record(7, 10, "high", 0));
    assert_eq!(h.repair(50, "one", low.clone()).await.status, Status::Ok);
    assert_eq!(h.repair(51, "one", high.clone()).await.status, Status::Ok);
    assert_eq!(h.repair(52, "two", high.clone()).await.status, Status::Ok);
    assert_eq!(h.repair(53, "two", low.clone()).await.status, Status::ConditionFailed);
    assert_eq!(h.repair(54, "two", high).await.status, Status::AlreadyDone, "the very same copy");
    assert_eq!(h.read("one").await.copy.unwrap().value, "high");
    assert_eq!(h.read("two").await.copy.unwrap().value, "high");
}

async fn a_commit_stamped_far_ahead_is_refused(h: Harness) {
    assert!(h.prepare(1, "k", PrepareKind::Set).await.status.holds_lease());
    let ahead = (h.now() + 3_600_000) << vesta_proto::record::HLC_LOGICAL_BITS;
    let r = h.commit(1, "k", record(1, ahead, "from the future", 0)).await;
    assert_eq!(r.status, Status::BadRequest);
    assert!(r.message.contains("ahead of this node's clock"), "{}", r.message);
    assert_eq!(h.read("k").await.status, Status::Absent);
    let now = h.now() << vesta_proto::record::HLC_LOGICAL_BITS;
    assert!(h.prepare(1, "k", PrepareKind::Set).await.status.holds_lease(), "the lease was released");
    assert_eq!(h.commit(1, "k", record(1, now, "now", 0)).await.status, Status::Ok);
}

/// A caller that stops waiting for a commit (a timeout, a client gone) must not leave the key locked:
/// the write still lands, and the lease is released after it.
async fn a_dropped_commit_never_leaves_the_key_locked(h: Harness) {
    use futures::FutureExt;
    assert!(h.prepare(1, "k", PrepareKind::Set).await.status.holds_lease());
    let commit = Request::Commit(Commit {
        req: RequestId(1),
        target: target("k"),
        record: record(1, 5, "v", 0),
        keep_writer: false,
    });
    {
        let mut pending = Box::pin(h.node.handle(commit));
        // One poll hands the write to the engine (RocksDB: to the group-commit thread); then the caller
        // gives up.
        let _ = pending.as_mut().now_or_never();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    h.clock.advance(10 * LEASE_MS);
    let r = h.prepare(2, "k", PrepareKind::Set).await;
    assert_eq!(r.status, Status::Ok, "the key is still locked by the abandoned commit");
    assert_eq!(r.copy.map(|c| c.value), Some(Bytes::from_static(b"v")), "the write that started finished");
}

async fn prepare_grants_a_lease_and_tells_the_time(h: Harness) {
    let r = h.prepare(1, "k", PrepareKind::Set).await;
    assert_eq!((r.lease_ms, r.node_wall_ms), (LEASE_MS, h.now()));
    assert_eq!(h.prepare(2, "k", PrepareKind::Set).await.lease_ms, 0, "no lease, no grant");
    assert_eq!(h.read("k").await.node_wall_ms, h.now(), "reads tell the time too");
}

/// A replica out of service (its zone in maintenance) for longer than the grace period may hold live
/// copies whose tombstones the others have purged: it serves nothing until a full repair.
async fn a_node_away_longer_than_the_grace_serves_nothing_until_rebuilt(h: Harness) {
    h.write(1, "k", 1, "v", 0).await;
    h.node.set_in_service(false);
    h.clock.advance(GRACE_MS + 1);
    h.node.set_in_service(true);
    let r = h.prepare(2, "k", PrepareKind::Set).await;
    assert_eq!(r.status, Status::NeedsRepair);
    assert!(r.message.contains("grace period") && r.message.contains("--full"), "{}", r.message);
    assert_eq!(h.read("k").await.status, Status::NeedsRepair);
    let Response::Pong(pong) = h.call(Request::Ping).await else { panic!("ping") };
    assert!(pong.needs_repair.is_some());
    // Copies are still accepted (the rebuild itself copies); shards are cleared only while rebuilding.
    let shard = target("k").shard;
    assert_eq!(h.reply(Request::Rebuild(RebuildStep::Begin)).await.status, Status::Ok);
    assert_eq!(h.reply(Request::Rebuild(RebuildStep::ClearShard(shard))).await.status, Status::Ok);
    assert_eq!(h.raw_count(), 0);
    assert_eq!(h.repair(3, "k", record(3, 2, "rebuilt", 0)).await.status, Status::Ok);
    assert_eq!(h.reply(Request::Rebuild(RebuildStep::Finish)).await.status, Status::Ok);
    assert_eq!(h.read("k").await.copy.unwrap().value, "rebuilt");
    let refused = h.reply(Request::Rebuild(RebuildStep::ClearShard(shard))).await;
    assert_eq!(refused.status, Status::BadRequest, "never clears a replica in service");
    assert_eq!(h.read("k").await.status, Status::Ok);
}

async fn a_restart_after_the_grace_needs_a_rebuild(h: Harness) {
    h.write(1, "k", 1, "v", 0).await;
    h.node.keep_in_service().await;
    let h = h.with_settings(|_| {});
    assert_eq!(h.read("k").await.status, Status::Ok, "back within the grace period");
    h.clock.advance(GRACE_MS + 1);
    let h = h.with_settings(|_| {});
    assert_eq!(h.read("k").await.status, Status::NeedsRepair);
    let h = h.with_settings(|s| s.rejoin_check = false);
    assert_eq!(h.read("k").await.status, Status::NeedsRepair, "a quarantine is not forgotten by a restart");
    assert_eq!(h.reply(Request::Rebuild(RebuildStep::Finish)).await.status, Status::Ok);
    assert_eq!(h.read("k").await.status, Status::Ok);
}

/// A reply without the node's clock (which tests do not pin down).
fn copy_of(r: Reply) -> (Status, Option<Record>) {
    (r.status, r.copy)
}

/// Large values: a page stops at a few MiB (whatever the record limit asked), so that it fits in one
/// frame of the internal protocol; the cursor resumes after it and every record is seen once.
async fn scan_pages_are_bounded_in_bytes(h: Harness) {
    let big = "x".repeat(3 << 20);
    for i in 0..5u128 {
        h.write(i + 1, &format!("{{same}}big{i}"), 1, &big, 0).await;
    }
    let shard = target("{same}big0").shard;
    let (mut seen, mut after, mut pages) = (0, None, 0);
    loop {
        let scan = Scan {
            shard_from: shard,
            shard_to: shard + 1,
            after,
            limit: 1000,
            namespace: None,
            include_dead: true,
            want_values: true,
        };
        let Response::Scan(page) = h.call(Request::Scan(scan)).await else { panic!("scan") };
        let bytes: usize = page.entries.iter().map(|e| e.record.value.len()).sum();
        assert!(bytes <= (4 << 20) + big.len(), "a page of {bytes} bytes");
        seen += page.entries.len();
        pages += 1;
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, 5);
    assert!(pages >= 3, "{pages} pages");
}

/// The change log for cross-site replication, on a node of site 1.
fn logging(h: Harness) -> Harness {
    h.with_settings(|s| s.changelog_origin = Some(1))
}

/// Every entry of a shard's log, in order, following `more` — after a second has passed, so that the
/// log has closed past everything written so far.
async fn log_of(h: &Harness, shard: u32) -> Vec<(String, Record)> {
    h.clock.advance(1_000);
    let (mut out, mut after) = (Vec::new(), None);
    loop {
        let Response::Log(page) =
            h.call(Request::ReadLog(ReadLog { shard, after: after.clone(), since_hlc: 0, limit: 2 })).await
        else {
            panic!("read_log")
        };
        out.extend(page.entries.into_iter().map(|e| (String::from_utf8(e.key.to_vec()).unwrap(), e.record)));
        after = page.next;
        if !page.more {
            return out;
        }
    }
}

/// HLC timestamps of the node's present (`n` logical ticks on): with the change log on, a commit must
/// be stamped no earlier than its lease was granted (less the drift bound).
fn stamp(h: &Harness) -> impl Fn(u64) -> u64 {
    let base = h.now() << vesta_proto::record::HLC_LOGICAL_BITS;
    move |n| base + n
}

fn with_origin(mut r: Record, origin: u32) -> Record {
    r.meta.origin = origin;
    r
}

/// Commits of records made in this site are logged (single and batch), in the order of copies; a
/// copy replicated from another site, a repair, a refused or repeated commit are not.
async fn the_change_log_holds_exactly_this_sites_commits(h: Harness) {
    let h = logging(h);
    let shard = target("{s}a").shard;
    let t = stamp(&h);
    h.write(1, "{s}b", t(30), "b1", 0).await;
    h.write(2, "{s}a", t(20), "a1", 0).await;
    assert!(h.prepare(3, "{s}c", PrepareKind::Set).await.status.holds_lease());
    assert_eq!(h.commit(3, "{s}c", with_origin(record(3, t(40), "from site 2", 0), 2)).await.status, Status::Ok);
    assert_eq!(h.repair(4, "{s}d", record(4, t(50), "repaired", 0)).await.status, Status::Ok);
    for k in ["{s}a", "{s}e"] {
        assert!(h.prepare(5, k, PrepareKind::Set).await.status.holds_lease());
    }
    let batch = CommitBatch {
        req: RequestId(5),
        items: vec![(target("{s}a"), record(5, t(60), "a2", 0)), (target("{s}e"), record(5, t(60), "e1", 0))],
    };
    assert_eq!(h.reply(Request::CommitBatch(batch.clone())).await.status, Status::Ok);
    assert_eq!(h.reply(Request::CommitBatch(batch)).await.status, Status::AlreadyDone);
    // A commit refused for a newer copy logs nothing.
    assert!(h.prepare(6, "{s}b", PrepareKind::Set).await.status.holds_lease());
    assert_eq!(h.commit(6, "{s}b", record(6, t(10), "older", 0)).await.status, Status::ConditionFailed);
    let log = log_of(&h, shard).await;
    let seen: Vec<(&str, u64, &[u8])> = log.iter().map(|(k, r)| (k.as_str(), r.meta.hlc, r.value.as_ref())).collect();
    assert_eq!(
        seen,
        [("{s}a", t(20), &b"a1"[..]), ("{s}b", t(30), b"b1"), ("{s}a", t(60), b"a2"), ("{s}e", t(60), b"e1")],
        "this site's commits, in the order of copies"
    );
    assert_eq!(log[0].1.meta.last_writer, RequestId(2), "stamped with the writing request");
}

/// While a prepare's lease is live, its commit may still be logged with a timestamp from about when it
/// was granted: the log is closed below that (less twice the drift bound), and reads stop there.
async fn the_change_log_is_read_only_up_to_its_closed_timestamp(h: Harness) {
    let h = logging(h);
    let shard = target("{c}x").shard;
    let hlc_at = |ms: u64| ms << vesta_proto::record::HLC_LOGICAL_BITS;
    let read = |h: &Harness| {
        let request = Request::ReadLog(ReadLog { shard, after: None, since_hlc: 0, limit: 100 });
        let node = h.node.clone();
        async move {
            match node.handle(request).await {
                Response::Log(page) => page,
                other => panic!("read_log: {other:?}"),
            }
        }
    };
    let granted = h.now();
    assert!(h.prepare(1, "{c}x", PrepareKind::Set).await.status.holds_lease());
    h.clock.advance(300);
    let page = read(&h).await;
    assert!(page.closed_hlc < hlc_at(granted - 200), "closed below the live lease's grant: {page:?}");
    assert!(page.closed_hlc >= hlc_at(granted - 202));
    // The commit is stamped at the decision, after the grant; it is not readable until the log closes
    // above it.
    assert_eq!(h.commit(1, "{c}x", record(1, hlc_at(granted + 250), "v", 0)).await.status, Status::Ok);
    let page = read(&h).await;
    assert!(page.entries.is_empty() && !page.more, "above the closed timestamp: {page:?}");
    h.clock.advance(500);
    let page = read(&h).await;
    assert_eq!(page.entries.len(), 1, "closed past it once no lease holds it back: {page:?}");
    assert!(page.closed_hlc >= hlc_at(granted + 250));
}

async fn the_change_log_pages_resume_and_trim(h: Harness) {
    let h = logging(h);
    let shard = target("{p}0").shard;
    let t = stamp(&h);
    for i in 0..7u128 {
        h.write(i + 1, &format!("{{p}}{i}"), t(100 + i as u64), "v", 0).await;
    }
    let all = log_of(&h, shard).await;
    assert_eq!(all.iter().map(|(_, r)| r.meta.hlc).collect::<Vec<_>>(), (100..107).map(&t).collect::<Vec<_>>());
    let trim = |through| Request::TrimLog(TrimLog { shard, through });
    assert_eq!(h.reply(trim(t(103))).await.status, Status::Ok);
    assert_eq!(h.reply(trim(t(103))).await.status, Status::Ok, "idempotent");
    let rest = log_of(&h, shard).await;
    assert_eq!(rest.iter().map(|(_, r)| r.meta.hlc).collect::<Vec<_>>(), [t(104), t(105), t(106)]);
    assert_eq!(h.read("{p}0").await.status, Status::Ok, "trimming the log leaves the records alone");
    let since = Request::ReadLog(ReadLog { shard, after: None, since_hlc: t(105), limit: 100 });
    let Response::Log(page) = h.call(since).await else { panic!("read_log") };
    assert_eq!(
        page.entries.iter().map(|e| e.record.meta.hlc).collect::<Vec<_>>(),
        [t(105), t(106)],
        "from a timestamp"
    );
    let bad = Request::ReadLog(ReadLog { shard, after: Some(Bytes::from_static(b"\x00\x00")), since_hlc: 0, limit: 1 });
    assert_eq!(h.reply(bad).await.status, Status::BadRequest);
    assert_eq!(h.reply(Request::TrimLog(TrimLog { shard: SHARDS, through: 1 })).await.status, Status::BadRequest);
}

/// A delete and an expiry must reach the other sites however long they wait: the engines' purge of
/// long-dead copies leaves the log alone.
async fn the_change_log_keeps_dead_copies_past_the_grace(h: Harness) {
    let h = logging(h);
    let long_ago = real_now_ms() - 10 * GRACE_MS;
    h.write(1, "gone", stamp(&h)(0), "v", long_ago).await;
    h.purge();
    assert_eq!(h.read("gone").await.status, Status::Absent);
    let log = log_of(&h, target("gone").shard).await;
    assert_eq!(log.len(), 1, "the expired write is still in the log");
    assert_eq!(log[0].1.meta.expires_at, long_ago);
}

async fn no_change_log_unless_configured(h: Harness) {
    h.write(1, "k", 5, "v", 0).await;
    let shard = target("k").shard;
    let r = h.reply(Request::ReadLog(ReadLog { shard, after: None, since_hlc: 0, limit: 10 })).await;
    assert_eq!(r.status, Status::BadRequest);
    assert!(r.message.contains("changelog_origin"), "{}", r.message);
    let h = logging(h);
    assert!(log_of(&h, shard).await.is_empty(), "nothing was logged before");
}

/// A commit stamped well before its lease was granted (a proxy clock behind beyond the bound) could land
/// below a closed timestamp already handed to a replication reader and never reach the other sites:
/// with the change log on it is refused, and nothing is written.
async fn a_commit_stamped_before_its_lease_is_refused_with_the_change_log_on(h: Harness) {
    let early = |h: &Harness| (h.now() - 1_000) << vesta_proto::record::HLC_LOGICAL_BITS;
    let h = logging(h);
    assert!(h.prepare(1, "k", PrepareKind::Set).await.status.holds_lease());
    let r = h.commit(1, "k", record(1, early(&h), "v", 0)).await;
    assert_eq!(r.status, Status::BadRequest);
    assert!(r.message.contains("before this node granted its lease"), "{}", r.message);
    assert_eq!(h.read("k").await.status, Status::Absent);
    assert!(h.prepare(2, "k", PrepareKind::Set).await.status.holds_lease(), "the lease was released");
    assert_eq!(h.commit(2, "k", record(2, stamp(&h)(0), "v", 0)).await.status, Status::Ok);
    assert_eq!(log_of(&h, target("k").shard).await.len(), 1);
    // Another site's copy is not logged here, so the rule does not apply to it; nor without a log.
    assert!(h.prepare(3, "j", PrepareKind::Set).await.status.holds_lease());
    assert_eq!(h.commit(3, "j", with_origin(record(3, early(&h), "v", 0), 2)).await.status, Status::Ok);
    let h = h.with_settings(|_| {});
    assert!(h.prepare(4, "i", PrepareKind::Set).await.status.holds_lease());
    assert_eq!(h.commit(4, "i", record(4, early(&h), "v", 0)).await.status, Status::Ok);
}

/// A copy made in another site is committed under this site's lease but keeps its own writer, so that
/// every site orders it the same way; a retried commit of it is already done.
async fn a_copy_from_another_site_keeps_its_writer(h: Harness) {
    assert!(h.prepare(1, "k", PrepareKind::Set).await.status.holds_lease());
    let copy = with_origin(record(77, 5, "from site 2", 0), 2);
    let commit =
        || Request::Commit(Commit { req: RequestId(1), target: target("k"), record: copy.clone(), keep_writer: true });
    assert_eq!(h.reply(commit()).await.status, Status::Ok);
    let stored = h.read("k").await.copy.unwrap();
    assert_eq!(stored.meta.last_writer, RequestId(77));
    assert_eq!(stored.meta.order(), copy.meta.order());
    assert_eq!(h.reply(commit()).await.status, Status::AlreadyDone, "a retry");
}

/// A batch (the key operations of pipelined commands) answers every request in order as if it came
/// alone: commits land (in one engine write), a commit without its lease is refused on its own without
/// stopping the others, a prepare behind a commit of the same key finds it locked until the write has
/// landed, and a request that cannot travel in a batch is refused alone. A read beside a commit of the
/// same batch runs concurrently with it, as two requests in flight do: it sees the copy before.
async fn a_batch_answers_each_request_as_if_alone_in_order(h: Harness) {
    for (req, key) in [(1, "a"), (2, "b")] {
        assert_eq!(h.prepare(req, key, PrepareKind::Set).await.status, Status::Ok);
    }
    let commit = |req: u128, key: &str, value: &str| {
        Request::Commit(Commit {
            req: RequestId(req),
            target: target(key),
            record: record(req, 10 + req as u64, value, 0),
            keep_writer: false,
        })
    };
    let prepare = |req: u128, key: &str| {
        Request::Prepare(Prepare {
            req: RequestId(req),
            target: target(key),
            kind: PrepareKind::Set,
            condition: None,
            want_value: true,
        })
    };
    let batch = vec![
        commit(1, "a", "one"),
        prepare(3, "a"),
        commit(9, "c", "no lease"),
        commit(2, "b", "two"),
        prepare(4, "d"),
        Request::Read(Read { target: target("b"), want_value: true }),
        Request::Abort(Abort { req: RequestId(4), target: target("d") }),
        Request::Ping,
    ];
    let Response::Batch(answers) = h.call(Request::Batch(batch)).await else {
        panic!("a batch is answered by a batch")
    };
    let statuses: Vec<Status> = answers.iter().map(Response::status).collect();
    assert_eq!(
        statuses,
        [
            Status::Ok,
            Status::Locked,
            Status::NoLease,
            Status::Ok,
            Status::Ok,
            Status::Absent,
            Status::Ok,
            Status::BadRequest
        ],
        "{answers:?}"
    );
    assert_eq!(h.read("a").await.copy.unwrap().value, "one");
    assert_eq!(h.read("b").await.copy.unwrap().value, "two");
    assert_eq!(h.read("c").await.status, Status::Absent);
    // Every lease of the batch is released once it has landed.
    for (req, key) in [(5, "a"), (6, "b"), (7, "d")] {
        assert_eq!(h.prepare(req, key, PrepareKind::Set).await.status, Status::Ok, "{key}");
    }
    // A batch is not an operation of its own: a nested one is refused, item by item.
    let Response::Batch(nested) = h.call(Request::Batch(vec![Request::Batch(vec![])])).await else { panic!() };
    assert_eq!(nested[0].status(), Status::BadRequest);
}

/// `handle_now` (how `vesta dev` calls its in-process nodes) answers prepares, aborts and reads exactly
/// as `handle` does, and gives every request that may wait (a commit) back untouched, unanswered.
async fn handle_now_answers_what_never_waits_and_gives_back_the_rest(h: Harness) {
    h.write(10, "k", 5, "v1", 0).await;
    let prepare = |req: u128| {
        Request::Prepare(Prepare {
            req: RequestId(req),
            target: target("k"),
            kind: PrepareKind::Set,
            condition: None,
            want_value: true,
        })
    };
    let Ok(Response::Reply(granted)) = h.node.handle_now(prepare(1)) else { panic!("a prepare is answered at once") };
    assert_eq!((granted.status, granted.copy.map(|c| c.value)), (Status::Ok, Some(Bytes::from("v1"))));
    assert_eq!(h.reply(prepare(2)).await.status, Status::Locked, "the lease handle_now granted holds");
    let commit = Request::Commit(Commit {
        req: RequestId(1),
        target: target("k"),
        record: record(1, 6, "v2", 0),
        keep_writer: false,
    });
    let Err(given_back) = h.node.handle_now(commit.clone()) else { panic!("a commit is not answered at once") };
    assert_eq!(given_back, commit);
    assert_eq!(h.read("k").await.copy.unwrap().value, "v1", "nothing was committed");
    assert_eq!(h.reply(given_back).await.status, Status::Ok);
    let read = Request::Read(Read { target: target("k"), want_value: true });
    let Ok(Response::Reply(now)) = h.node.handle_now(read) else { panic!("a read is answered at once") };
    assert_eq!(now.copy.unwrap().value, "v2");
    let abort = Request::Abort(Abort { req: RequestId(3), target: target("k") });
    assert!(matches!(h.node.handle_now(abort), Ok(Response::Reply(_))));
    assert!(h.node.handle_now(Request::Ping).is_err());
}
