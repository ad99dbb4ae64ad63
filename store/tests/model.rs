//! Random interleavings of prepare / commit / abort / read / repair from several simulated coordinators
//! against one node, every reply checked against a deliberately simple reference model of the rules.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use vesta_proto::*;

const KEYS: [&str; 3] = ["a", "b", "{a}c"];
const COORDINATORS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Prepare {
        c: usize,
        k: usize,
        kind: PrepareKind,
        want_value: bool,
    },
    Commit {
        c: usize,
        k: usize,
        value: u8,
        tombstone: bool,
        ttl: Option<u64>,
    },
    Abort {
        c: usize,
        k: usize,
    },
    Read {
        k: usize,
    },
    Repair {
        k: usize,
        hlc_back: u64,
        origin: u32,
        value: u8,
    },
    /// The coordinator starts its next request (a new request id).
    Next {
        c: usize,
    },
    Advance {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let c = 0..COORDINATORS;
    let k = 0..KEYS.len();
    let kind = prop_oneof![
        Just(PrepareKind::Create),
        Just(PrepareKind::Update),
        Just(PrepareKind::Set),
        Just(PrepareKind::Delete),
        Just(PrepareKind::ReadModifyWrite),
    ];
    prop_oneof![
        4 => (c.clone(), k.clone(), kind, any::<bool>()).prop_map(|(c, k, kind, want_value)| Step::Prepare { c, k, kind, want_value }),
        4 => (c.clone(), k.clone(), any::<u8>(), prop::bool::weighted(0.2), prop::option::weighted(0.3, 1..1500u64))
            .prop_map(|(c, k, value, tombstone, ttl)| Step::Commit { c, k, value, tombstone, ttl }),
        2 => (c.clone(), k.clone()).prop_map(|(c, k)| Step::Abort { c, k }),
        2 => k.clone().prop_map(|k| Step::Read { k }),
        1 => (k, 0..3u64, 0..3u32, any::<u8>()).prop_map(|(k, hlc_back, origin, value)| Step::Repair { k, hlc_back, origin, value }),
        2 => c.prop_map(|c| Step::Next { c }),
        2 => prop_oneof![1..50u64, 500..900u64].prop_map(|ms| Step::Advance { ms }),
    ]
}

/// The rules, written plainly: one map of records, one of leases.
#[derive(Default)]
struct Model {
    records: HashMap<usize, Record>,
    leases: HashMap<usize, (RequestId, u64)>,
}

impl Model {
    /// The copy that orders: live or dead, until it has been dead for the grace period.
    fn current(&self, k: usize, wall: u64) -> Option<Record> {
        self.records.get(&k).filter(|r| !r.meta.purgeable_at(wall, GRACE_MS)).cloned()
    }

    fn other_holds(&self, k: usize, req: RequestId, mono: u64) -> bool {
        matches!(self.leases.get(&k), Some(&(owner, deadline)) if owner != req && deadline > mono)
    }

    fn prepare(
        &mut self,
        k: usize,
        req: RequestId,
        kind: PrepareKind,
        want_value: bool,
        wall: u64,
        mono: u64,
    ) -> Reply {
        if self.other_holds(k, req, mono) {
            return Reply::status(Status::Locked);
        }
        let cur = self.current(k, wall);
        let shown = cur.clone().map(|mut r| {
            if !want_value || r.meta.flags.tombstone() {
                r.value = Bytes::new();
            }
            r
        });
        if cur.as_ref().is_some_and(|r| r.meta.last_writer == req) {
            self.leases.remove(&k);
            return Reply::with_copy(Status::AlreadyDone, shown);
        }
        self.leases.insert(k, (req, mono + LEASE_MS));
        let live = cur.is_some_and(|r| r.meta.live_at(wall));
        let status = match (kind, live) {
            (PrepareKind::Create, true) => Status::Exists,
            (PrepareKind::Update | PrepareKind::Delete, false) => Status::Absent,
            _ => Status::Ok,
        };
        Reply { lease_ms: LEASE_MS, node_wall_ms: wall, ..Reply::with_copy(status, shown) }
    }

    fn commit(&mut self, k: usize, req: RequestId, mut record: Record, wall: u64, mono: u64) -> Status {
        match self.leases.get(&k) {
            Some(&(owner, deadline)) if owner == req && deadline > mono => {
                self.leases.remove(&k);
                record.meta.last_writer = req;
                // Never over a newer copy (a late prepare's commit).
                if self.current(k, wall).is_some_and(|cur| cur.meta.newer_than(&record.meta)) {
                    return Status::ConditionFailed;
                }
                if record.meta.flags.tombstone() {
                    record.value = Bytes::new();
                    if record.meta.expires_at == 0 {
                        record.meta.expires_at = wall;
                    }
                }
                self.records.insert(k, record);
                Status::Ok
            }
            lease => {
                if matches!(lease, Some(&(owner, _)) if owner == req) {
                    self.leases.remove(&k);
                }
                if self.current(k, wall).is_some_and(|r| r.meta.last_writer == req) {
                    Status::AlreadyDone
                } else {
                    Status::NoLease
                }
            }
        }
    }

    fn abort(&mut self, k: usize, req: RequestId) -> Status {
        if matches!(self.leases.get(&k), Some(&(owner, _)) if owner == req) {
            self.leases.remove(&k);
            Status::Ok
        } else {
            Status::AlreadyDone
        }
    }

    fn read(&self, k: usize, wall: u64) -> Reply {
        let reply = match self.current(k, wall) {
            Some(r) if r.meta.live_at(wall) => Reply::with_copy(Status::Ok, Some(r)),
            other => Reply::with_copy(Status::Absent, other),
        };
        Reply { node_wall_ms: wall, ..reply }
    }

    fn repair(&mut self, k: usize, req: RequestId, record: Record, wall: u64, mono: u64) -> Reply {
        if self.other_holds(k, req, mono) {
            return Reply::status(Status::Locked);
        }
        self.leases.remove(&k);
        match self.current(k, wall) {
            Some(cur) if cur.meta.order() == record.meta.order() => Reply::status(Status::AlreadyDone),
            Some(cur) if cur.meta.newer_than(&record.meta) => {
                Reply::with_copy(Status::ConditionFailed, Some(Record { value: Bytes::new(), ..cur }))
            }
            _ => {
                self.records.insert(k, record);
                Reply::status(Status::Ok)
            }
        }
    }
}

fn run(h: Harness, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        use vesta_store::Clock;
        let mut model = Model::default();
        let mut reqs: Vec<u128> = (0..COORDINATORS as u128).map(|c| c << 64).collect();
        let mut hlc = 1_000u64;
        let mut repair_id = 1u128 << 100;
        for (i, s) in steps.into_iter().enumerate() {
            let (wall, mono) = (h.clock.wall_ms(), h.clock.mono_ms());
            match s {
                Step::Prepare { c, k, kind, want_value } => {
                    let req = RequestId(reqs[c]);
                    let p = Prepare { req, target: target(KEYS[k]), kind, condition: None, want_value };
                    let got = h.reply(Request::Prepare(p)).await;
                    let want = model.prepare(k, req, kind, want_value, wall, mono);
                    prop_assert_eq!(got, want, "step {}", i);
                }
                Step::Commit { c, k, value, tombstone, ttl } => {
                    hlc += 1;
                    let mut r = record(reqs[c], hlc, &value.to_string(), ttl.map_or(0, |t| wall + t));
                    if tombstone {
                        r.meta.flags = Flags(Flags::TOMBSTONE);
                    }
                    let got = h.commit(reqs[c], KEYS[k], r.clone()).await.status;
                    prop_assert_eq!(got, model.commit(k, RequestId(reqs[c]), r, wall, mono), "step {}", i);
                }
                Step::Abort { c, k } => {
                    let got = h.abort(reqs[c], KEYS[k]).await.status;
                    prop_assert_eq!(got, model.abort(k, RequestId(reqs[c])), "step {}", i);
                }
                Step::Read { k } => {
                    prop_assert_eq!(h.read(KEYS[k]).await, model.read(k, wall), "step {}", i);
                }
                Step::Repair { k, hlc_back, origin, value } => {
                    repair_id += 1;
                    let mut r = record(repair_id, hlc.saturating_sub(hlc_back), &value.to_string(), 0);
                    r.meta.origin = origin;
                    let got = h.repair(repair_id, KEYS[k], r.clone()).await;
                    prop_assert_eq!(got, model.repair(k, RequestId(repair_id), r, wall, mono), "step {}", i);
                }
                Step::Next { c } => reqs[c] += 1,
                Step::Advance { ms } => h.clock.advance(ms),
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn memory_node_matches_model(steps in prop::collection::vec(step(), 1..120)) {
        run(Harness::memory(), steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn rocksdb_node_matches_model(steps in prop::collection::vec(step(), 1..120)) {
        run(Harness::rocks(), steps)?;
    }
}
