use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocksdb::compaction_filter::Decision;
use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use crate::key;

use super::{purgeable, Engine, EngineError, EngineStats, Mutation};

/// Sizing for this project's machines (2 cores, a few GiB per node); see README "Store node".
#[derive(Debug, Clone)]
pub struct RocksOptions {
    pub block_cache_mb: usize,
    pub write_buffer_mb: usize,
    /// fsync the WAL on this period when writes themselves are not synced; `None` = never.
    pub background_sync: Option<Duration>,
    /// How long dead records are kept before the compaction filter drops them.
    pub grace_ms: u64,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions { block_cache_mb: 256, write_buffer_mb: 64, background_sync: None, grace_ms: 24 * 3600 * 1000 }
    }
}

pub struct RocksEngine {
    db: Arc<DB>,
    stop_sync: Arc<AtomicBool>,
    sync_thread: Option<std::thread::JoinHandle<()>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl RocksEngine {
    pub fn open(path: &Path, o: &RocksOptions) -> Result<Self, EngineError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Two cores: one flush and one compaction thread keep up without starving request handling.
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(o.write_buffer_mb.max(1) << 20);
        opts.set_max_write_buffer_number(3);
        opts.set_level_compaction_dynamic_level_bytes(true);
        // Small records dominate. The first two levels are rewritten soon anyway: compressing them costs
        // CPU on every flush for little space; LZ4 below, ZSTD on the bottom level where data settles.
        opts.set_compression_per_level(&[
            DBCompressionType::None,
            DBCompressionType::None,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
        ]);
        opts.set_bottommost_compression_type(DBCompressionType::Zstd);
        opts.set_keep_log_file_num(4);
        // Every key starts with its 4-byte shard. The memtable hashes on it (a skip list per shard)
        // instead of one skip list over everything: a point lookup walks a few hundred keys, not the
        // whole memtable — the single largest CPU cost of a read in profiles. It cannot take concurrent
        // inserts: with concurrent memtable writes off, RocksDB's write-group leader inserts for every
        // writer, so writers on several threads (requests' tasks, the group-commit thread) are safe.
        // The node's own range is bucketed finer, so that each shard's change log is a list of its own
        // (see `bucket`).
        opts.set_prefix_extractor(rocksdb::SliceTransform::create(BUCKETS, bucket, Some(bucketed)));
        opts.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
            bucket_count: 1 << 16,
            height: 12,
            branching_factor: 4,
        });
        opts.set_allow_concurrent_memtable_write(false);
        // Compactions run at a lower CPU priority than the request handling they share the cores with:
        // they can fall behind for a while, a request that waits for a core is latency a client sees.
        // Flushes keep their priority (a late flush fills the memtables and stalls writes).
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(o.block_cache_mb.max(1) << 20));
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        opts.set_block_based_table_factory(&table);

        // Records dead for longer than the grace period vanish as their files are compacted.
        let grace_ms = o.grace_ms;
        opts.set_compaction_filter("vesta-expiry", move |_level, key, value| {
            if purgeable(key, value, now_ms(), grace_ms) {
                Decision::Remove
            } else {
                Decision::Keep
            }
        });

        let db = Arc::new(DB::open(&opts, path)?);
        let stop_sync = Arc::new(AtomicBool::new(false));
        let mut sync_thread = None;
        if let Some(period) = o.background_sync {
            let (db, stop) = (db.clone(), stop_sync.clone());
            let thread = std::thread::Builder::new()
                .name("wal-sync".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(period);
                        if let Err(e) = db.flush_wal(true) {
                            tracing::error!(error = %e, "periodic WAL sync failed");
                        }
                    }
                })
                .map_err(|e| EngineError::Other(format!("spawn wal-sync thread: {e}")))?;
            sync_thread = Some(thread);
        }
        Ok(RocksEngine { db, stop_sync, sync_thread })
    }

    /// Flushes the memtable and compacts every file through the purge filter (operators and tests).
    pub fn compact_all(&self) -> Result<(), EngineError> {
        self.db.flush()?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }

    fn property(&self, name: &str) -> u64 {
        self.db.property_int_value(name).ok().flatten().unwrap_or(0)
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        self.stop_sync.store(true, Ordering::Relaxed);
        // The sync thread holds the database too; it must let go before this drop closes it.
        if let Some(thread) = self.sync_thread.take() {
            let _ = thread.join();
        }
        let _ = self.db.flush_wal(true);
    }
}

/// Beyond this many shards, one total-order iterator walks a range (see `scan`).
const MAX_SHARDS_PER_SCAN: u32 = 1 << 16;

/// The prefix extractor's name: RocksDB keeps it in every table file and ignores a file's prefix
/// filters when it differs (files written with the former `rocksdb.FixedPrefix.4` stay readable).
const BUCKETS: &str = "vesta.memtable-bucket.1";
/// Bytes of a node-own key that name its bucket: `ff ff ff ff 01` and the shard of a change-log entry.
const NODE_OWN_BUCKET: usize = 9;

/// The memtable bucket (RocksDB's prefix) of a storage key: its shard; in the node's own range its
/// first nine bytes, which for the change log (`ff ff ff ff 01 [shard]`, see `changelog.rs`) is one
/// shard's log. With a 4-byte prefix there, every commit's log entry went into one bucket holding every
/// entry since the last flush, a skip list of hundreds of thousands (with replication on, memtable
/// inserts were 41% of `vesta dev`'s CPU under SET, 33% once each log had its bucket). In its own
/// bucket a shard's entries, logged in about timestamp order, are mostly appended at its end. A
/// truncation to a fixed length per range keeps what RocksDB requires of a prefix: it orders as its keys
/// do, and keys sharing one are contiguous.
fn bucket(key: &[u8]) -> &[u8] {
    let len = if key::is_node_own(key) { NODE_OWN_BUCKET } else { 4 };
    &key[..len.min(key.len())]
}

/// Keys shorter than a shard (none is stored) have no bucket.
fn bucketed(key: &[u8]) -> bool {
    key.len() >= 4
}

/// Whether every key of `[from, to)` is in `from`'s bucket (so that a prefix iterator sees them all).
fn within_one_bucket(from: &[u8], to: &[u8]) -> bool {
    let prefix = bucket(from);
    let full = if key::is_node_own(from) { NODE_OWN_BUCKET } else { 4 };
    if prefix.len() < full {
        return false;
    }
    // The first key past the bucket: the prefix plus one, as a big-endian number.
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xff {
            next.push(last + 1);
            return to <= next.as_slice();
        }
    }
    // All 0xff: no key sorts after this bucket's.
    true
}

impl RocksEngine {
    /// Visits `[from, to)` in order; with `one_bucket`, the range lies within one memtable bucket
    /// (`bucket`: a shard, or a shard's change log). Returns whether `visit` wants more.
    fn scan_from(
        &self,
        from: &[u8],
        to: &[u8],
        one_bucket: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<bool, EngineError> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(to.to_vec());
        if one_bucket {
            ro.set_prefix_same_as_start(true);
        } else {
            ro.set_total_order_seek(true);
        }
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(from);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !visit(k, v) {
                return Ok(false);
            }
            it.next();
        }
        it.status()?;
        Ok(true)
    }
}

thread_local! {
    // RocksDB's option objects are C++ allocations: made once per thread rather than for every read and
    // write (two allocations and a constructor each time, on every replica). The crate's types are
    // `Send` but not `Sync`, hence one per thread rather than one per engine.
    static READ: ReadOptions = ReadOptions::default();
    static WRITE: WriteOptions = WriteOptions::default();
    static WRITE_SYNC: WriteOptions = {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        wo
    };
    static WRITE_UNLESS_STALLED: WriteOptions = {
        let mut wo = WriteOptions::default();
        wo.set_no_slowdown(true);
        wo
    };
}

impl Engine for RocksEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        // (A thread past its thread-locals' teardown makes its options afresh.)
        Ok(READ.try_with(|ro| self.db.get_opt(key, ro)).unwrap_or_else(|_| self.db.get(key))?)
    }

    fn write(&self, batch: &[Mutation], sync: bool) -> Result<(), EngineError> {
        let options = if sync { &WRITE_SYNC } else { &WRITE };
        let written = options.try_with(|wo| self.db.write_opt(write_batch(batch), wo)).unwrap_or_else(|_| {
            let mut wo = WriteOptions::default();
            wo.set_sync(sync);
            self.db.write_opt(write_batch(batch), &wo)
        });
        Ok(written?)
    }

    fn write_unless_stalled(&self, batch: &[Mutation]) -> Result<bool, EngineError> {
        // Without its options (a thread past its thread-locals' teardown) the write goes the other way.
        let Ok(written) = WRITE_UNLESS_STALLED.try_with(|wo| self.db.write_opt(write_batch(batch), wo)) else {
            return Ok(false);
        };
        match written {
            Ok(()) => Ok(true),
            // RocksDB's answer to a write that would have had to wait.
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), EngineError> {
        if from >= to {
            return Ok(());
        }
        // A total-order iterator over the hash-bucketed memtable first sorts all of it: far too much
        // for a page of one shard. A range is walked shard by shard with prefix iterators instead (each
        // reads one bucket), unless it spans so many shards that one sort is cheaper.
        let shard_of = |k: &[u8]| k.get(..4).map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
        let (first, last) = (shard_of(from), shard_of(to));
        if from.len() < 4 || last.saturating_sub(first) > MAX_SHARDS_PER_SCAN {
            return self.scan_from(from, to, false, visit).map(|_| ());
        }
        for shard in first..=last {
            let shard_end = key::shard_start(shard as u64 + 1);
            let start = if shard == first { from.to_vec() } else { key::shard_start(shard as u64) };
            let end = if to < shard_end.as_slice() { to.to_vec() } else { shard_end };
            if start >= end {
                break;
            }
            // The node's own range holds many buckets (a log per shard): a walk within one of them
            // reads only it; one across them sees every key only in total order.
            let one_bucket = within_one_bucket(&start, &end);
            if !self.scan_from(&start, &end, one_bucket, visit)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(self.db.flush_wal(true)?)
    }

    fn purge_dead(&self, _now_ms: u64, _grace_ms: u64) -> Result<u64, EngineError> {
        Ok(0)
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            estimated_keys: self.property("rocksdb.estimate-num-keys"),
            sst_bytes: self.property("rocksdb.total-sst-files-size"),
            pending_compaction_bytes: self.property("rocksdb.estimate-pending-compaction-bytes"),
        }
    }
}

fn write_batch(batch: &[Mutation]) -> WriteBatch {
    let mut wb = WriteBatch::default();
    for m in batch {
        match m {
            Mutation::Put { key, value } => wb.put(key, value),
            Mutation::Delete { key } => wb.delete(key),
        }
    }
    wb
}

#[cfg(test)]
mod tests {
    use vesta_proto::{Order, RequestId};

    use super::*;
    use crate::changelog;

    fn log_key(shard: u32, hlc: u64, skey: &[u8]) -> Vec<u8> {
        changelog::entry_key(shard, &Order { hlc, origin: 1, writer: RequestId(hlc as u128) }, skey)
    }

    /// Every key a node stores (records of three shards, its own records, three shards' logs), and the
    /// order a total walk must give them in.
    fn keys() -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for shard in [0u32, 1, 2, 0xffff_fffe] {
            for k in [&b"a"[..], b"k", b"zz"] {
                keys.push(key::encode(shard, b"", k));
            }
        }
        keys.push(key::node_meta(b"last-in-service"));
        keys.push(key::node_meta(b"r"));
        // Logged in timestamp order, the shards interleaved, as commits arrive.
        for hlc in 1..=30u64 {
            keys.push(log_key((hlc % 3) as u32 + 1, hlc, format!("key{hlc}").as_bytes()));
        }
        keys.sort();
        keys
    }

    #[test]
    fn buckets_order_as_their_keys_and_are_their_own_bucket() {
        let mut all = keys();
        // Short keys RocksDB may be asked about (bounds, seeks) too.
        all.extend([vec![0xff; 4], vec![0xff, 0xff, 0xff, 0xff, 0x01], vec![0xff; 5], vec![0, 0, 0, 7]]);
        all.sort();
        for pair in all.windows(2) {
            assert!(bucket(&pair[0]) <= bucket(&pair[1]), "{:?} then {:?}", pair[0], pair[1]);
        }
        for k in &all {
            assert!(k.starts_with(bucket(k)));
            assert_eq!(bucket(bucket(k)), bucket(k));
            assert!(bucketed(bucket(k)));
        }
        let (first, end) = changelog::shard_range(2);
        assert_eq!(bucket(&log_key(2, 9, b"x")), &first[..NODE_OWN_BUCKET]);
        assert!(within_one_bucket(&first, &end));
        assert!(!within_one_bucket(&first, &changelog::shard_range(3).1));
        assert!(within_one_bucket(&key::shard_start(5), &key::shard_start(6)));
        assert!(!within_one_bucket(&[0xff; 4], &[0xff; 5]));
    }

    fn scan_all(engine: &RocksEngine, from: &[u8], to: &[u8]) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        engine
            .scan(from, to, &mut |k, _| {
                seen.push(k.to_vec());
                true
            })
            .unwrap();
        seen
    }

    /// What `read_log`, `trim_log` and the shard walks ask, answered from the memtable, the WAL after a
    /// restart, and table files.
    fn check(engine: &RocksEngine, keys: &[Vec<u8>]) {
        for shard in [1u32, 2, 3] {
            let (first, end) = changelog::shard_range(shard);
            let want: Vec<_> = keys.iter().filter(|k| **k >= first && **k < end).cloned().collect();
            assert_eq!(want.len(), 10);
            assert_eq!(scan_all(engine, &first, &end), want, "the log of shard {shard}");
            let from = changelog::from_hlc(shard, 16);
            let tail: Vec<_> = want.iter().filter(|k| **k >= from).cloned().collect();
            assert_eq!(scan_all(engine, &from, &end), tail);
        }
        let own: Vec<_> = keys.iter().filter(|k| key::is_node_own(k)).cloned().collect();
        assert_eq!(scan_all(engine, &[0xff; 4], &[0xff; 5]), own, "the node's own range, across buckets");
        let records: Vec<_> = keys.iter().filter(|k| !key::is_node_own(k)).cloned().collect();
        assert_eq!(scan_all(engine, &key::shard_start(0), &key::shard_start(u32::MAX as u64)), records);
        assert_eq!(scan_all(engine, &key::shard_start(1), &key::shard_start(2)).len(), 3);
        for k in keys {
            assert_eq!(engine.get(k).unwrap().as_deref(), Some(&k[..]));
        }
    }

    fn write_all(engine: &RocksEngine, keys: &[Vec<u8>]) {
        let batch: Vec<_> = keys.iter().map(|k| Mutation::Put { key: k.clone(), value: k.clone() }).collect();
        engine.write(&batch, false).unwrap();
    }

    #[test]
    fn a_shards_change_log_is_walked_whole_from_memory_wal_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let mut shuffled = keys.clone();
        shuffled.reverse();
        {
            let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
            write_all(&engine, &shuffled);
            check(&engine, &keys);
        }
        // Reopened: the memtable is rebuilt from the WAL.
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        check(&engine, &keys);
        engine.compact_all().unwrap();
        check(&engine, &keys);
    }

    #[test]
    fn a_store_written_with_four_byte_buckets_reads_the_same() {
        // The layout before node-own buckets: a fixed 4-byte prefix, in the table files' filters too.
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let (in_files, in_wal) = keys.split_at(keys.len() / 2);
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(4));
            opts.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
                bucket_count: 1 << 16,
                height: 12,
                branching_factor: 4,
            });
            opts.set_allow_concurrent_memtable_write(false);
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            opts.set_block_based_table_factory(&table);
            let db = DB::open(&opts, dir.path()).unwrap();
            let put = |part: &[Vec<u8>]| {
                let mut wb = WriteBatch::default();
                for k in part {
                    wb.put(k, k);
                }
                db.write(wb).unwrap();
            };
            put(in_files);
            db.flush().unwrap();
            put(in_wal);
        }
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        check(&engine, &keys);
        engine.compact_all().unwrap();
        check(&engine, &keys);
    }
}
