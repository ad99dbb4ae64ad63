//! A store node on either engine, driven by a manual clock, with terse helpers for the operations.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use vesta_proto::*;
use vesta_store::engine::{MemoryEngine, RocksEngine, RocksOptions};
use vesta_store::node::NodeSettings;
use vesta_store::{Engine, ManualClock, StoreNode};

pub const SHARDS: u32 = 64;
pub const LEASE_MS: u64 = 600;
/// How long dead copies keep their order in these tests (short, so that purging can be seen).
pub const GRACE_MS: u64 = 1_000;
pub const NS: &[u8] = b"0";

pub enum Backing {
    Memory(Arc<MemoryEngine>),
    Rocks(Arc<RocksEngine>, tempfile::TempDir),
}

pub struct Harness {
    pub node: Arc<StoreNode>,
    pub clock: Arc<ManualClock>,
    pub backing: Backing,
}

pub fn real_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

impl Harness {
    pub fn settings() -> NodeSettings {
        let mut settings = NodeSettings::all_shards("test", SHARDS);
        settings.grace_ms = GRACE_MS;
        settings.sync_writes = false; // durability is the crash test's business
        settings
    }

    pub fn memory() -> Self {
        let engine = Arc::new(MemoryEngine::new());
        Self::build(engine.clone(), Backing::Memory(engine), Self::settings())
    }

    pub fn rocks() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = RocksOptions { grace_ms: GRACE_MS, ..RocksOptions::default() };
        let engine = Arc::new(RocksEngine::open(dir.path(), &options).unwrap());
        Self::build(engine.clone(), Backing::Rocks(engine, dir), Self::settings())
    }

    /// The node opened again on the same engine and clock (a restart), with other settings.
    pub fn with_settings(self, f: impl FnOnce(&mut NodeSettings)) -> Self {
        let mut settings = Self::settings();
        f(&mut settings);
        let engine: Arc<dyn Engine> = match &self.backing {
            Backing::Memory(e) => e.clone(),
            Backing::Rocks(e, _) => e.clone(),
        };
        let node = StoreNode::with_engine(settings, engine, self.clock.clone()).unwrap();
        Harness { node, ..self }
    }

    fn build(engine: Arc<dyn Engine>, backing: Backing, settings: NodeSettings) -> Self {
        // Wall time is the real time so that RocksDB's compaction filter (which reads the system clock)
        // and the node agree on what has expired.
        let clock = Arc::new(ManualClock::new(real_now_ms()));
        let node = StoreNode::with_engine(settings, engine, clock.clone()).unwrap();
        Harness { node, clock, backing }
    }

    pub fn now(&self) -> u64 {
        use vesta_store::Clock;
        self.clock.wall_ms()
    }

    /// Runs the engine's own purge of long-dead records (memory sweep, or a full RocksDB compaction
    /// through its filter).
    pub fn purge(&self) {
        match &self.backing {
            Backing::Memory(e) => {
                e.purge_dead(self.now(), GRACE_MS).unwrap();
            }
            Backing::Rocks(e, _) => e.compact_all().unwrap(),
        }
    }

    /// Records stored in shards (not the node's own bookkeeping).
    pub fn raw_count(&self) -> usize {
        let mut n = 0;
        self.node
            .engine()
            .scan(&[], &[0xff; 4], &mut |_, _| {
                n += 1;
                true
            })
            .unwrap();
        n
    }

    pub async fn call(&self, r: Request) -> Response {
        self.node.handle(r).await
    }

    pub async fn reply(&self, r: Request) -> Reply {
        match self.call(r).await {
            Response::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    pub async fn prepare(&self, req: u128, key: &str, kind: PrepareKind) -> Reply {
        self.prepare_if(req, key, kind, None).await
    }

    pub async fn prepare_if(&self, req: u128, key: &str, kind: PrepareKind, condition: Option<Condition>) -> Reply {
        let p = Prepare { req: RequestId(req), target: target(key), kind, condition, want_value: true };
        self.reply(Request::Prepare(p)).await
    }

    pub async fn commit(&self, req: u128, key: &str, record: Record) -> Reply {
        self.reply(Request::Commit(Commit { req: RequestId(req), target: target(key), record, keep_writer: false }))
            .await
    }

    pub async fn abort(&self, req: u128, key: &str) -> Reply {
        self.reply(Request::Abort(Abort { req: RequestId(req), target: target(key) })).await
    }

    pub async fn read(&self, key: &str) -> Reply {
        self.reply(Request::Read(Read { target: target(key), want_value: true })).await
    }

    pub async fn repair(&self, req: u128, key: &str, record: Record) -> Reply {
        self.reply(Request::Repair(Repair { req: RequestId(req), target: target(key), record })).await
    }

    pub async fn mark_delete(&self, req: u128, key: &str, meta: Meta) -> Reply {
        self.reply(Request::MarkDelete(MarkDelete { req: RequestId(req), target: target(key), meta })).await
    }

    /// A full prepare + commit of `value` by `req`.
    pub async fn write(&self, req: u128, key: &str, hlc: u64, value: &str, expires_at: u64) -> Record {
        let p = self.prepare(req, key, PrepareKind::Set).await;
        assert!(p.status.holds_lease(), "prepare for write: {p:?}");
        let r = record(req, hlc, value, expires_at);
        assert_eq!(self.commit(req, key, r.clone()).await.status, Status::Ok);
        r
    }
}

pub fn target(key: &str) -> KeyRef {
    target_in(NS, key)
}

pub fn target_in(ns: &[u8], key: &str) -> KeyRef {
    KeyRef {
        shard: vesta_proto::shard::shard_of(key.as_bytes(), SHARDS),
        namespace: Bytes::copy_from_slice(ns),
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

pub fn record(req: u128, hlc: u64, value: &str, expires_at: u64) -> Record {
    Record {
        meta: Meta {
            version: hlc,
            created_at: 1,
            expires_at,
            hlc,
            origin: 1,
            last_writer: RequestId(req),
            flags: Flags::default(),
            key_id: 0,
        },
        value: Bytes::copy_from_slice(value.as_bytes()),
        counter: None,
    }
}

/// A tombstone's metadata; `expires_at` is the time of the delete (0: now).
pub fn tombstone_meta(hlc: u64, expires_at: u64) -> Meta {
    Meta { version: hlc, created_at: 1, expires_at, hlc, origin: 1, ..Meta::default() }
}
