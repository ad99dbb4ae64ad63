//! The shard feed against real store nodes (in process, memory engine, change log on): writes that
//! reached different write quorums are each handed on once, in order; a replica that stops answering is
//! replaced without loss or repetition; a new feed resumes from a confirmed watermark; a write whose
//! lease is still live holds the watermark back until it is logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use vesta_proto::record::HLC_LOGICAL_BITS;
use vesta_proto::*;
use vesta_repl::{FeedError, LogSource, ShardFeed};
use vesta_store::engine::MemoryEngine;
use vesta_store::node::NodeSettings;
use vesta_store::{Clock, ManualClock, StoreNode};

const SHARDS: u32 = 16;

#[derive(Clone)]
struct Replica {
    node: Arc<StoreNode>,
    down: Arc<AtomicBool>,
}

impl LogSource for Replica {
    async fn read_log(&self, request: ReadLog) -> Result<LogPage, String> {
        if self.down.load(Ordering::Relaxed) {
            return Err("connection refused".into());
        }
        match self.node.handle(Request::ReadLog(request)).await {
            Response::Log(page) => Ok(page),
            other => Err(format!("{other:?}")),
        }
    }
}

struct Group {
    replicas: Vec<Replica>,
    clock: Arc<ManualClock>,
}

impl Group {
    fn new() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let clock = Arc::new(ManualClock::new(now));
        let replicas = (1..=3)
            .map(|z| {
                let mut settings = NodeSettings::all_shards(&format!("zone{z}"), SHARDS);
                settings.changelog_origin = Some(1);
                let node = StoreNode::with_engine(settings, Arc::new(MemoryEngine::new()), clock.clone()).unwrap();
                Replica { node, down: Arc::default() }
            })
            .collect();
        Group { replicas, clock }
    }

    fn hlc_at(&self, ms_from_now: i64) -> u64 {
        (self.clock.wall_ms().saturating_add_signed(ms_from_now)) << HLC_LOGICAL_BITS
    }

    async fn prepare(&self, zones: &[usize], req: u128, key: &str) {
        for &z in zones {
            let p = Prepare {
                req: RequestId(req),
                target: target(key),
                kind: PrepareKind::Set,
                condition: None,
                want_value: false,
            };
            let Response::Reply(r) = self.replicas[z].node.handle(Request::Prepare(p)).await else { panic!() };
            assert!(r.status.holds_lease(), "prepare {key} on zone {z}: {r:?}");
        }
    }

    async fn commit(&self, zones: &[usize], req: u128, key: &str, record: Record) {
        for &z in zones {
            let c = Commit { req: RequestId(req), target: target(key), record: record.clone(), keep_writer: false };
            let Response::Reply(r) = self.replicas[z].node.handle(Request::Commit(c)).await else { panic!() };
            assert_eq!(r.status, Status::Ok, "commit {key} on zone {z}: {r:?}");
        }
    }

    /// A write that reached exactly `zones` (a write quorum, or more), stamped now; the clock then
    /// moves on 10 ms, so that writes are stamped in the order they are made.
    async fn write(&self, zones: &[usize], req: u128, key: &str, value: &str) -> Record {
        self.prepare(zones, req, key).await;
        let r = record(req, self.hlc_at(0), value);
        self.commit(zones, req, key, r.clone()).await;
        self.clock.advance(10);
        r
    }

    /// Time passes: the replicas' logs close past everything written so far.
    fn settle(&self) {
        self.clock.advance(1_000);
    }

    fn feed(&self, watermark: u64) -> ShardFeed<Replica> {
        ShardFeed::resume(target("{t}").shard, self.replicas.clone(), 2, watermark)
    }
}

fn target(key: &str) -> KeyRef {
    KeyRef {
        shard: shard::shard_of(key.as_bytes(), SHARDS),
        namespace: Bytes::from_static(b"0"),
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

fn record(req: u128, hlc: u64, value: &str) -> Record {
    let meta = Meta { version: 1, created_at: 1, hlc, origin: 1, last_writer: RequestId(req), ..Meta::default() };
    Record::new(meta, Bytes::copy_from_slice(value.as_bytes()))
}

fn seen(entries: &[LogEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (String::from_utf8(e.key.to_vec()).unwrap(), String::from_utf8(e.record.value.to_vec()).unwrap()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn every_acknowledged_write_is_handed_on_once_in_order() {
    let g = Group::new();
    // Each write reached a different write quorum; the feed reads zones 1 and 2 only.
    g.write(&[0, 1], 1, "{t}a", "a1").await;
    g.write(&[1, 2], 2, "{t}b", "b1").await;
    g.write(&[0, 2], 3, "{t}c", "c1").await;
    let last = g.write(&[0, 1, 2], 4, "{t}a", "a2").await;
    g.settle();
    let mut feed = g.feed(0);
    let first = feed.poll().await.unwrap();
    assert_eq!(seen(&first.entries), pairs(&[("{t}a", "a1"), ("{t}b", "b1"), ("{t}c", "c1"), ("{t}a", "a2")]));
    assert!(first.watermark >= last.meta.hlc && first.watermark < g.hlc_at(-200), "closed ~200 ms back");
    let again = feed.poll().await.unwrap();
    assert!(again.entries.is_empty(), "nothing twice: {again:?}");
    assert!(again.watermark >= first.watermark);
}

#[tokio::test]
async fn a_replica_that_stops_answering_is_replaced_without_loss_or_repeats() {
    let g = Group::new();
    g.write(&[0, 1], 1, "{t}a", "a1").await;
    g.settle();
    let mut feed = g.feed(0);
    assert_eq!(seen(&feed.poll().await.unwrap().entries), pairs(&[("{t}a", "a1")]));
    g.replicas[0].down.store(true, Ordering::Relaxed);
    g.write(&[1, 2], 2, "{t}b", "b1").await;
    g.write(&[0, 2], 3, "{t}c", "c1").await; // zone 1 logged it, but no longer answers the feed
    g.settle();
    let after = feed.poll().await.unwrap();
    assert_eq!(seen(&after.entries), pairs(&[("{t}b", "b1"), ("{t}c", "c1")]), "read from zones 2 and 3 now");
    g.replicas[1].down.store(true, Ordering::Relaxed);
    g.write(&[2], 4, "{t}d", "d1").await;
    g.settle();
    let before = feed.watermark();
    match feed.poll().await {
        Err(FeedError::TooFewReplicas { answered: 1, needed: 2, .. }) => {}
        other => panic!("one replica cannot vouch for the shard: {other:?}"),
    }
    assert_eq!(feed.watermark(), before, "nothing handed on");
    g.replicas[0].down.store(false, Ordering::Relaxed);
    assert_eq!(seen(&feed.poll().await.unwrap().entries), pairs(&[("{t}d", "d1")]));
}

#[tokio::test]
async fn a_new_feed_resumes_after_a_confirmed_watermark() {
    let g = Group::new();
    g.write(&[0, 1], 1, "{t}a", "a1").await;
    g.write(&[1, 2], 2, "{t}b", "b1").await;
    g.settle();
    let confirmed = g.feed(0).poll().await.unwrap().watermark;
    g.write(&[0, 2], 3, "{t}c", "c1").await;
    g.settle();
    // Another sender (zone 1 is down) takes over from what the peer site confirmed.
    g.replicas[0].down.store(true, Ordering::Relaxed);
    let shipped = g.feed(confirmed).poll().await.unwrap();
    assert_eq!(seen(&shipped.entries), pairs(&[("{t}c", "c1")]));
}

#[tokio::test]
async fn a_live_lease_holds_the_watermark_back_until_its_write_is_logged() {
    let g = Group::new();
    let granted = g.hlc_at(0);
    g.prepare(&[0, 1], 1, "{t}slow").await;
    g.clock.advance(250);
    g.write(&[0, 1], 2, "{t}fast", "fast").await;
    g.clock.advance(240); // the slow write's lease (600 ms) still holds
    let mut feed = g.feed(0);
    let held = feed.poll().await.unwrap();
    assert!(held.entries.is_empty(), "the later write waits behind the live lease: {held:?}");
    assert!(held.watermark < granted - (200 << HLC_LOGICAL_BITS));
    // The slow write's coordinator decided after its lease was granted: stamped after the grant, before
    // the fast write.
    g.commit(&[0, 1], 1, "{t}slow", record(1, granted + (100 << HLC_LOGICAL_BITS), "slow")).await;
    g.settle();
    let shipped = feed.poll().await.unwrap();
    assert_eq!(seen(&shipped.entries), pairs(&[("{t}slow", "slow"), ("{t}fast", "fast")]), "in the order of copies");
}
