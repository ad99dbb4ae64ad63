//! The store node: validation, dispatch and bookkeeping around the operations in `ops/`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use vesta_proto::{KeyRef, Pong, Record, Reply, Request, RequestId, Response, Status, PROTOCOL_VERSION};

use crate::clock::{Clock, SystemClock};
use crate::config::{EngineKind, StoreConfig, SyncPolicy};
use crate::engine::{Engine, EngineError, MemoryEngine, Mutation, RocksEngine, RocksOptions};
use crate::fence::Fence;
use crate::key;
use crate::lease::{LeaseTable, Pinned};
use crate::metrics as m;
use crate::ownership::Ownership;
use crate::peers::Peers;
use crate::record_cache::RecordCache;
use crate::service::Service;
use crate::writer::Writer;

/// What an operation needs of the target's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// A proxy's prepare, read or scan: the node must serve the shard.
    Serve,
    /// Copies and repairs: the node must keep the shard's data (owned, incoming or outgoing).
    Hold,
    /// Commit and abort: the lease the prepare took is the proof; ownership may have moved since.
    Lease,
}

/// What the operations need to know; a subset of [`StoreConfig`].
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    pub lease_ms: u64,
    pub shards: u32,
    /// Indexed by shard.
    pub owned: Vec<bool>,
    /// How long dead copies (tombstones, expired records) keep their place in the order of copies.
    pub grace_ms: u64,
    /// fsync before acknowledging a commit.
    pub sync_writes: bool,
    /// Serve nothing after being out of service for longer than `grace_ms` (until a full repair).
    pub rejoin_check: bool,
    /// Commits stamped further than this ahead of the node's clock are refused.
    pub max_clock_drift_ms: u64,
    /// Log the commits of records with this origin (this site's writes) for cross-site replication.
    pub changelog_origin: Option<u32>,
    /// Records kept in memory after they were written (`record_cache.rs`); 0: none.
    pub record_cache_entries: usize,
}

impl NodeSettings {
    /// All shards of a `shards`-shard cluster, 600 ms leases, a day of grace.
    pub fn all_shards(name: &str, shards: u32) -> Self {
        NodeSettings {
            name: name.into(),
            lease_ms: 600,
            shards,
            owned: vec![true; shards as usize],
            grace_ms: 24 * 3600 * 1000,
            sync_writes: true,
            rejoin_check: true,
            max_clock_drift_ms: crate::config::DEFAULT_MAX_CLOCK_DRIFT_MS,
            changelog_origin: None,
            record_cache_entries: crate::config::DEFAULT_RECORD_CACHE_ENTRIES,
        }
    }
}

pub struct StoreNode {
    pub(crate) settings: NodeSettings,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) leases: Arc<LeaseTable>,
    pub(crate) clock: Arc<dyn Clock>,
    writer: Writer,
    /// The records written last (filled and kept current by `writer`).
    cache: Arc<RecordCache>,
    /// Whether the node is in service, and whether it must be rebuilt before serving again.
    pub(crate) service: Service,
    ownership: RwLock<Arc<Ownership>>,
    /// Until when moving shards may be served (an etcd lease; unlimited without etcd).
    fence: Fence,
    /// Other store nodes this one sends copies to (redistribution, repair).
    pub(crate) peers: Peers,
    /// Request ids of this node's own copies: a per-process prefix and a counter.
    id_prefix: u128,
    next_id: AtomicU64,
}

impl StoreNode {
    /// Opens the configured engine and builds the node.
    pub fn open(config: &StoreConfig) -> Result<Arc<Self>, EngineError> {
        let owned = config.owned().map_err(|e| EngineError::Other(e.to_string()))?;
        let engine: Arc<dyn Engine> = match config.engine {
            EngineKind::Memory => Arc::new(MemoryEngine::new()),
            EngineKind::Rocksdb => {
                std::fs::create_dir_all(&config.data_dir)
                    .map_err(|e| EngineError::Other(format!("create {}: {e}", config.data_dir.display())))?;
                let background_sync =
                    (config.sync == SyncPolicy::Periodic).then(|| Duration::from_millis(config.sync_interval_ms));
                let options = RocksOptions {
                    block_cache_mb: config.block_cache_mb,
                    write_buffer_mb: config.write_buffer_mb,
                    background_sync,
                    grace_ms: config.grace_secs.saturating_mul(1000),
                };
                Arc::new(RocksEngine::open(&config.data_dir, &options)?)
            }
        };
        let settings = NodeSettings {
            name: config.node.clone(),
            lease_ms: config.lease_ms,
            shards: config.shards,
            owned,
            grace_ms: config.grace_secs.saturating_mul(1000),
            sync_writes: config.sync == SyncPolicy::EveryWrite,
            rejoin_check: config.rejoin_check,
            max_clock_drift_ms: config.max_clock_drift_ms,
            changelog_origin: config.changelog_origin,
            record_cache_entries: config.record_cache_entries,
        };
        let clock: Arc<dyn Clock> = match config.clock_offset_ms {
            0 => Arc::new(SystemClock::default()),
            offset => {
                tracing::warn!(offset_ms = offset, "test setting: this node's clock is deliberately off");
                Arc::new(vesta_proto::clock::SkewedClock::new(offset))
            }
        };
        Self::with_engine(settings, engine, clock)
    }

    pub fn with_engine(
        settings: NodeSettings,
        engine: Arc<dyn Engine>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, EngineError> {
        let cache = Arc::new(RecordCache::new(settings.record_cache_entries));
        let writer = Writer::start(engine.clone(), settings.sync_writes, cache.clone())
            .map_err(|e| EngineError::Other(format!("start group-commit thread: {e}")))?;
        let service = Service::open(engine.as_ref(), clock.wall_ms(), settings.grace_ms, settings.rejoin_check)?;
        let ownership = RwLock::new(Arc::new(Ownership::fixed(settings.owned.clone())));
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let id_prefix = ((started.as_nanos() as u64 ^ (std::process::id() as u64) << 40) as u128) << 64;
        Ok(Arc::new(StoreNode {
            settings,
            engine,
            leases: Arc::default(),
            clock,
            writer,
            cache,
            service,
            ownership,
            fence: Fence::unlimited(),
            peers: Peers::default(),
            id_prefix,
            next_id: AtomicU64::new(1),
        }))
    }

    /// What the node serves now.
    pub fn ownership(&self) -> Arc<Ownership> {
        self.ownership.read().clone()
    }

    /// Switches to a new view of the shard map (and of a running redistribution) at once: operations
    /// already past their ownership check finish under the old view.
    pub fn set_ownership(&self, ownership: Ownership) {
        tracing::info!(
            version = ownership.map_version,
            owned = ownership.owned_count(),
            outgoing = ownership.outgoing.len(),
            incoming = ownership.incoming.iter().filter(|i| **i).count(),
            handoff = ownership.handoff,
            "shard ownership changed"
        );
        metrics::gauge!(m::MAP_VERSION).set(ownership.map_version as f64);
        metrics::gauge!(m::OWNED_SHARDS).set(ownership.owned_count() as f64);
        *self.ownership.write() = Arc::new(ownership);
    }

    /// The cluster takes the node out of service (its zone in maintenance) or puts it back. Back after
    /// longer than the grace period, it serves nothing until a full repair.
    pub fn set_in_service(&self, yes: bool) {
        self.service.set_in_service(yes, self.clock.wall_ms());
        metrics::gauge!(m::NEEDS_REPAIR).set(self.service.needs_repair().is_some() as u8 as f64);
    }

    /// Why the node serves nothing until a full repair, if it does not.
    pub fn needs_repair(&self) -> Option<String> {
        self.service.needs_repair()
    }

    /// Notes that the node is in service (persisted every few seconds), or that it was away too long.
    /// Housekeeping calls it every second.
    pub async fn keep_in_service(&self) {
        let write = match self.service.tick(self.clock.wall_ms()) {
            crate::service::Tick::Nothing => None,
            crate::service::Tick::InService(m) => Some(m),
            crate::service::Tick::Quarantined(m, why) => {
                tracing::error!(node = %self.settings.name, reason = %why, "needs a full repair");
                Some(m)
            }
        };
        metrics::gauge!(m::NEEDS_REPAIR).set(self.service.needs_repair().is_some() as u8 as f64);
        if let Some(m) = write {
            if let Err(e) = self.store_unleased(vec![m]).await {
                tracing::warn!(error = %e.message, "cannot note that the node is in service");
            }
        }
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    pub(crate) fn next_request_id(&self) -> RequestId {
        RequestId(self.id_prefix | self.next_id.fetch_add(1, Ordering::Relaxed) as u128)
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Answers a request that never waits (prepare, abort, read) at once, recording its metrics; gives
    /// any other request back. An in-process caller (`vesta dev`) answers most requests this way
    /// without building the future of [`handle`](Self::handle), whose size (every operation's state)
    /// would be allocated and copied for each of them.
    pub fn handle_now(&self, request: Request) -> Result<Response, Request> {
        let (op, started) = (request.kind(), Instant::now());
        let reply = self.answer_now(request)?;
        Ok(self.answered(op, started, Response::Reply(reply)))
    }

    /// The operations that never wait, answered (without metrics: the caller records them); any other
    /// request given back.
    pub(crate) fn answer_now(&self, request: Request) -> Result<Reply, Request> {
        match request {
            Request::Prepare(p) => Ok(self.prepare(p)),
            Request::Abort(a) => Ok(self.abort(a)),
            Request::Read(r) => Ok(self.read(r)),
            other => Err(other),
        }
    }

    /// Runs one request, recording its metrics.
    pub async fn handle(&self, request: Request) -> Response {
        let request = match self.handle_now(request) {
            Ok(response) => return response,
            // Each request of a batch is counted as its own operation.
            Err(Request::Batch(requests)) => return Response::Batch(self.batch(requests).await),
            Err(request) => request,
        };
        let op = request.kind();
        let started = Instant::now();
        // Operations other than commits are rare, and some have large futures: they are boxed, so that
        // every request's future is only as large as a commit's. (Prepares, aborts and reads were
        // answered by `handle_now`; their arms keep this match whole.)
        let response = match request {
            Request::Prepare(p) => Response::Reply(self.prepare(p)),
            Request::Commit(c) => Response::Reply(self.commit(c).await),
            Request::CommitBatch(c) => Response::Reply(Box::pin(self.commit_batch(c)).await),
            Request::Abort(a) => Response::Reply(self.abort(a)),
            Request::Read(r) => Response::Reply(self.read(r)),
            Request::Repair(r) => Response::Reply(Box::pin(self.repair(r)).await),
            Request::MarkDelete(d) => Response::Reply(Box::pin(self.mark_delete(d)).await),
            Request::Scan(s) => match self.scan(s) {
                Ok(page) => Response::Scan(page),
                Err(reply) => Response::Reply(reply),
            },
            Request::Clone(c) => Response::Reply(Box::pin(self.clone_records(c)).await),
            Request::Transfer(t) => match Box::pin(self.transfer(t)).await {
                Ok(done) => Response::Transferred(done),
                Err(reply) => Response::Reply(reply),
            },
            Request::Inventory => match self.inventory() {
                Ok(counts) => Response::Inventory(counts),
                Err(reply) => Response::Reply(reply),
            },
            Request::Rebuild(step) => Response::Reply(Box::pin(self.rebuild(step)).await),
            Request::ReadLog(r) => match self.read_log(r) {
                Ok(page) => Response::Log(page),
                Err(reply) => Response::Reply(reply),
            },
            Request::TrimLog(t) => Response::Reply(Box::pin(self.trim_log(t)).await),
            Request::ReadLogs(reads) => Response::Logs(reads.into_iter().map(|r| self.read_log(r)).collect()),
            Request::Batch(_) => Response::Reply(Reply::error(Status::BadRequest, "a batch inside a batch")),
            Request::Replicate(_) => Response::Reply(Reply::error(
                Status::BadRequest,
                "this is a store node; replicated copies go to a proxy's replication listener",
            )),
            Request::Ping => {
                let ownership = self.ownership();
                Response::Pong(Pong {
                    node: self.settings.name.clone(),
                    protocol: PROTOCOL_VERSION,
                    shards: self.settings.shards,
                    map_version: ownership.map_version,
                    redistribution: ownership.redistribution,
                    handoff: ownership.handoff,
                    settled: ownership.handoff != 0
                        && !self.leases.any_live(self.clock.mono_ms(), |skey| {
                            key::shard_of(skey).is_some_and(|shard| ownership.forward_to(shard).is_some())
                        }),
                    lease_ms: self.settings.lease_ms,
                    needs_repair: self.service.needs_repair(),
                    away_ms: self.service.away_ms(self.clock.wall_ms()),
                    grace_ms: self.service.grace_ms(),
                    fenced: self.fence.engaged(),
                })
            }
        };
        self.answered(op, started, response)
    }

    fn answered(&self, op: &'static str, started: Instant, response: Response) -> Response {
        let status = response.status();
        metrics::counter!(m::OPERATIONS, "op" => op, "status" => status.as_str()).increment(1);
        metrics::histogram!(m::OPERATION_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
        response
    }

    /// Checks that the target is well-formed and that this node serves it; returns its storage key.
    pub(crate) fn locate(&self, target: &KeyRef) -> Result<Vec<u8>, Reply> {
        self.locate_for(target, Need::Serve)
    }

    /// Checks that the target is well-formed and meets `need`; returns its storage key.
    pub(crate) fn locate_for(&self, target: &KeyRef, need: Need) -> Result<Vec<u8>, Reply> {
        if target.namespace.len() > key::MAX_NAMESPACE {
            return Err(Reply::error(Status::BadRequest, "namespace longer than 255 bytes"));
        }
        if target.shard >= self.settings.shards {
            return Err(Reply::error(
                Status::BadRequest,
                format!("shard {} out of range: the cluster has {}", target.shard, self.settings.shards),
            ));
        }
        let expected = vesta_proto::shard::shard_of(&target.key, self.settings.shards);
        if target.shard != expected {
            return Err(Reply::error(
                Status::BadRequest,
                format!("key belongs to shard {expected}, not {}", target.shard),
            ));
        }
        let allowed = match need {
            Need::Serve => {
                self.check_serving()?;
                let ownership = self.ownership.read();
                let serves = ownership.serves(target.shard);
                if serves {
                    // A moving shard only under a confirmed etcd lease (see `fence`).
                    self.fence.check(&ownership, target.shard)?;
                }
                serves
            }
            Need::Hold => self.ownership.read().holds(target.shard),
            Need::Lease => true,
        };
        if !allowed {
            return Err(not_owner(target.shard));
        }
        Ok(key::encode(target.shard, &target.namespace, &target.key))
    }

    /// Whether proxies may be served at all: not while the node needs a full repair, nor while its zone
    /// is in maintenance (a proxy that has not seen the zone go down yet — or up again, before this node
    /// has checked how long it was away — must not read it).
    pub(crate) fn check_serving(&self) -> Result<(), Reply> {
        if let Some(why) = self.service.needs_repair() {
            metrics::counter!(m::NEEDS_REPAIR_REFUSALS).increment(1);
            return Err(Reply::error(Status::NeedsRepair, why));
        }
        if !self.service.in_service() {
            return Err(Reply::error(Status::NotOwner, "this node's zone is in maintenance"));
        }
        Ok(())
    }

    /// The stored copy of `skey`, or `None` when there is none. Dead copies — tombstones and records past
    /// their expiry — are returned while they are within the grace period: they order copies, so that an
    /// older live copy elsewhere can never replace them (a deleted or expired key coming back). Past the
    /// grace period a dead copy is as good as purged, whether or not the engine has dropped it yet.
    pub(crate) fn load(&self, skey: &[u8], with_value: bool) -> Result<Option<Record>, Reply> {
        let raw = match self.cache.get(skey) {
            Some(cached) => cached,
            None => match self.engine.get(skey).map_err(internal)? {
                Some(stored) => Bytes::from(stored),
                None => return Ok(None),
            },
        };
        let record = Record::decode(&raw, with_value).map_err(|e| Reply::error(Status::Internal, e.to_string()))?;
        if record.meta.purgeable_at(self.clock.wall_ms(), self.settings.grace_ms) {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Writes `record` at `skey`, releasing the leases `pinned` holds once it has landed.
    pub(crate) async fn store(&self, skey: Vec<u8>, record: Record, pinned: &mut Pinned) -> Result<(), Reply> {
        self.store_all(vec![self.put(skey, record)], pinned).await
    }

    /// Applies `batch` atomically (one engine write batch). Once handed to the group-commit thread the
    /// write finishes even if this future is dropped, and `pinned`'s leases are released only after it
    /// (see [`Pinned`]). While shards move away, the writes to them are forwarded to their new node
    /// before the write counts as done here: an acknowledged write is then on both, whichever of them
    /// the proxies end up asking.
    pub(crate) async fn store_all(&self, batch: Vec<Mutation>, pinned: &mut Pinned) -> Result<(), Reply> {
        let ownership = self.ownership();
        let forward = if ownership.is_forwarding() { self.peers.forwardable(&ownership, &batch) } else { Vec::new() };
        let written = self.writer.submit(batch).map_err(|e| Reply::error(Status::Internal, e))?;
        pinned.wait(written).await.map_err(|e| Reply::error(Status::Internal, e))?;
        if forward.is_empty() {
            return Ok(());
        }
        // Forwarding (during a handoff) is rare, and its future large.
        Box::pin(self.forward(forward)).await
    }

    /// A write with no leases to release afterwards (housekeeping, dropping shards).
    pub(crate) async fn store_unleased(&self, batch: Vec<Mutation>) -> Result<(), Reply> {
        let mut none = Pinned::new(self.leases.clone(), Vec::new(), RequestId::default());
        self.store_all(batch, &mut none).await
    }

    /// The mutation that writes `record` at `skey`. A tombstone carries no value, and the time of the
    /// delete as its `expires_at` (the coordinator sets it; a tombstone without one dies now), from which
    /// its grace period runs.
    pub(crate) fn put(&self, skey: Vec<u8>, record: Record) -> Mutation {
        Mutation::Put { key: skey, value: self.as_stored(record).encode() }
    }

    fn as_stored(&self, mut record: Record) -> Record {
        if record.meta.flags.tombstone() {
            record.value = Default::default();
            record.counter = None;
            if record.meta.expires_at == 0 {
                record.meta.expires_at = self.clock.wall_ms();
            }
        }
        record
    }

    /// The mutations of a commit of `record` at `skey`, added to `batch`: the record, and its change-log
    /// entry when it is a write made in this site (see `changelog.rs`) — in one engine batch, so neither
    /// lands without the other. Returns whether it was logged.
    pub(crate) fn put_committed(&self, skey: Vec<u8>, record: Record, batch: &mut Vec<Mutation>) -> bool {
        let record = self.as_stored(record);
        let value = record.encode();
        let logged = self.settings.changelog_origin == Some(record.meta.origin);
        if logged {
            if let Some(shard) = key::shard_of(&skey) {
                let log_key = crate::changelog::entry_key(shard, &record.meta.order(), &skey);
                batch.push(Mutation::Put { key: log_key, value: value.clone() });
            }
        }
        batch.push(Mutation::Put { key: skey, value });
        logged
    }

    /// Why a record stamped `hlc` must not be committed here: its timestamp is further ahead of this
    /// node's clock than the drift bound (the coordinator checks this before its commit phase; this is the
    /// backstop, with room for the message's transit).
    pub(crate) fn too_far_ahead(&self, hlc: u64) -> Option<Reply> {
        let ahead = vesta_proto::hlc_ms(hlc).saturating_sub(self.clock.wall_ms());
        (ahead > 2 * self.settings.max_clock_drift_ms).then(|| {
            Reply::error(
                Status::BadRequest,
                format!(
                    "the write is stamped {ahead} ms ahead of this node's clock (max_clock_drift_ms = {}): \
                     check the clocks of the proxies",
                    self.settings.max_clock_drift_ms
                ),
            )
        })
    }

    /// With the change log on: why `record`, committed under `req`'s lease on `skey`, must not be. The
    /// log's closed timestamp (`changelog.rs`) assumes that a commit is stamped no earlier than its lease
    /// was granted, less twice the drift bound; a record stamped earlier (a proxy whose clock is off
    /// beyond the bound) could land below a closed timestamp already given to a replication reader, and
    /// never reach the other sites. Refused instead: a loud failure, not a silent gap.
    pub(crate) fn stamped_before_lease(&self, skey: &[u8], req: RequestId, record: &Record) -> Option<Reply> {
        if self.settings.changelog_origin != Some(record.meta.origin) {
            return None;
        }
        let granted = self.leases.granted(skey, req)?;
        let granted_wall = self.clock.wall_ms().saturating_sub(self.clock.mono_ms().saturating_sub(granted));
        let floor = granted_wall.saturating_sub(2 * self.settings.max_clock_drift_ms);
        let stamped = vesta_proto::hlc_ms(record.meta.hlc);
        (stamped < floor).then(|| {
            Reply::error(
                Status::BadRequest,
                format!(
                    "the write is stamped {} ms before this node granted its lease (max_clock_drift_ms = {}): \
                     check the clocks of the proxies",
                    granted_wall - stamped,
                    self.settings.max_clock_drift_ms
                ),
            )
        })
    }

    /// Periodic upkeep: reap abandoned leases, purge long-dead records from the memory engine, note that
    /// the node is in service, publish engine figures.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                let reaped = node.leases.reap(node.clock.mono_ms());
                metrics::counter!(m::LEASE_EXPIRIES).increment(reaped as u64);
                metrics::gauge!(m::LEASES_HELD).set(node.leases.len() as f64);
                let (hits, misses) = node.cache.lookups();
                metrics::counter!(m::RECORD_CACHE, "result" => "hit").absolute(hits);
                metrics::counter!(m::RECORD_CACHE, "result" => "miss").absolute(misses);
                node.keep_in_service().await;
                if n.is_multiple_of(10) {
                    let engine = node.engine.clone();
                    let (now, grace) = (node.clock.wall_ms(), node.settings.grace_ms);
                    if let Ok(Ok(purged)) = tokio::task::spawn_blocking(move || engine.purge_dead(now, grace)).await {
                        metrics::counter!(m::EXPIRED_PURGED).increment(purged);
                    }
                }
                if n.is_multiple_of(5) {
                    let s = node.engine.stats();
                    metrics::gauge!(m::ENGINE_ESTIMATED_KEYS).set(s.estimated_keys as f64);
                    metrics::gauge!(m::ENGINE_SST_BYTES).set(s.sst_bytes as f64);
                    metrics::gauge!(m::ENGINE_PENDING_COMPACTION_BYTES).set(s.pending_compaction_bytes as f64);
                }
            }
        })
    }
}

pub(crate) fn not_owner(shard: u32) -> Reply {
    Reply::error(Status::NotOwner, format!("shard {shard} is not served by this node"))
}

pub(crate) fn internal(e: EngineError) -> Reply {
    Reply::error(Status::Internal, e.to_string())
}
