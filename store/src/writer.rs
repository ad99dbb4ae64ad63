//! Group commit: writes that must be durable before they are acknowledged (`sync = every-write`) go
//! through one thread that gathers whatever commits are queued into a single engine batch — one fsync
//! for many commits instead of one each, which is what lets a node acknowledge only durable commits and
//! still keep up with thousands in flight.
//!
//! Without an fsync per commit (`periodic`, `off`) a write is made in its caller: the hand-off costs two
//! thread wake-ups per commit, and writing in place was measured at about twice the throughput. But a
//! RocksDB write can stall (memtables full while a flush catches up), and a stall in the caller would
//! stop every request of the node's runtime, prepares and reads included, past the proxies' per-node
//! timeout (`-CLUSTERDOWN`, seen in the redis-cli `--pipe` test with 8 MiB memtables). So the caller
//! writes with RocksDB's `no_slowdown`, and a write that would wait goes to the thread instead; while
//! anything waits there, later writes queue behind it, so that writes keep the order they were made in.
//! The memory engine is always written in the caller (nothing to group, nothing stalls), which also
//! keeps a node on it deterministic under a test's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, Mutation};
use crate::record_cache::RecordCache;

/// Most jobs folded into one batch; bounds the latency one fsync adds to the first job in it.
const MAX_JOBS_PER_BATCH: usize = 1024;

struct Job {
    batch: Vec<Mutation>,
    done: oneshot::Sender<Result<(), String>>,
}

pub(crate) struct Writer {
    engine: Arc<dyn Engine>,
    sync: bool,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Jobs handed to the thread and not yet written: while there are any, a write may not overtake them.
    queued: Arc<AtomicUsize>,
    /// Kept current with every write (see `record_cache.rs`).
    cache: Arc<RecordCache>,
}

impl Writer {
    pub fn start(engine: Arc<dyn Engine>, sync: bool, cache: Arc<RecordCache>) -> std::io::Result<Self> {
        let queued = Arc::new(AtomicUsize::new(0));
        if !engine.groups_commits() {
            return Ok(Writer { engine, sync, jobs: None, thread: None, queued, cache });
        }
        let (thread_engine, thread_cache, thread_queued) = (engine.clone(), cache.clone(), queued.clone());
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new().name("group-commit".into()).spawn(move || {
            let mut jobs = Vec::with_capacity(MAX_JOBS_PER_BATCH);
            let mut batch = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                jobs.push(first);
                while jobs.len() < MAX_JOBS_PER_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                for job in &mut jobs {
                    batch.append(&mut job.batch);
                }
                let result = write(thread_engine.as_ref(), &thread_cache, &batch, sync);
                metrics::histogram!(crate::metrics::GROUP_COMMIT_JOBS).record(jobs.len() as f64);
                thread_queued.fetch_sub(jobs.len(), Ordering::AcqRel);
                for job in jobs.drain(..) {
                    let _ = job.done.send(result.clone());
                }
                batch.clear();
            }
        })?;
        Ok(Writer { engine, sync, jobs: Some(tx), thread: Some(thread), queued, cache })
    }

    /// Applies `batch` atomically, in place or on the group-commit thread (which finishes it whatever
    /// happens to the caller); the receiver says when the engine (and, with sync on, the disk) has it.
    pub fn submit(&self, batch: Vec<Mutation>) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (done, wait) = oneshot::channel();
        let Some(jobs) = self.jobs.as_ref() else {
            let _ = done.send(write(self.engine.as_ref(), &self.cache, &batch, self.sync));
            return Ok(wait);
        };
        if !self.sync && self.queued.load(Ordering::Acquire) == 0 {
            match self.engine.write_unless_stalled(&batch) {
                Ok(true) => {
                    self.cache.wrote(&batch);
                    let _ = done.send(Ok(()));
                    return Ok(wait);
                }
                Ok(false) => metrics::counter!(crate::metrics::WRITES_STALLED).increment(1),
                Err(e) => {
                    self.cache.forget(&batch);
                    let _ = done.send(Err(e.to_string()));
                    return Ok(wait);
                }
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        jobs.send(Job { batch, done }).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            "writer stopped".to_string()
        })?;
        Ok(wait)
    }
}

/// Applies `batch` and keeps the record cache in step with what the engine holds.
fn write(engine: &dyn Engine, cache: &RecordCache, batch: &[Mutation], sync: bool) -> Result<(), String> {
    match engine.write(batch, sync) {
        Ok(()) => {
            cache.wrote(batch);
            Ok(())
        }
        Err(e) => {
            cache.forget(batch);
            Err(e.to_string())
        }
    }
}

impl Drop for Writer {
    /// Lets the thread finish what is queued and release the engine before the node is gone, so that a
    /// database is closed by the time its owner is dropped (RocksDB must not outlive process exit).
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc as std_mpsc;

    use parking_lot::Mutex;

    use super::*;
    use crate::engine::{EngineError, EngineStats};

    /// Records where each write was made; writes on the thread wait for the test's go-ahead, and
    /// in-place writes report a stall while `stalled` is set.
    struct Recording {
        stalled: AtomicBool,
        log: Mutex<Vec<(&'static str, Vec<u8>)>>,
        go: Mutex<std_mpsc::Receiver<()>>,
    }

    fn keys(batch: &[Mutation]) -> impl Iterator<Item = Vec<u8>> + '_ {
        batch.iter().map(|m| match m {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key.clone(),
        })
    }

    impl Engine for Recording {
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
            Ok(None)
        }
        fn write(&self, batch: &[Mutation], _: bool) -> Result<(), EngineError> {
            let _ = self.go.lock().recv();
            // The thread may fold both queued jobs into this one batch.
            self.log.lock().extend(keys(batch).map(|k| ("thread", k)));
            Ok(())
        }
        fn write_unless_stalled(&self, batch: &[Mutation]) -> Result<bool, EngineError> {
            if self.stalled.load(Ordering::SeqCst) {
                return Ok(false);
            }
            self.log.lock().extend(keys(batch).map(|k| ("in place", k)));
            Ok(true)
        }
        fn scan(&self, _: &[u8], _: &[u8], _: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), EngineError> {
            Ok(())
        }
        fn sync(&self) -> Result<(), EngineError> {
            Ok(())
        }
        fn purge_dead(&self, _: u64, _: u64) -> Result<u64, EngineError> {
            Ok(0)
        }
        fn stats(&self) -> EngineStats {
            EngineStats::default()
        }
    }

    /// The engine, and the sender that lets its thread writes proceed one at a time.
    fn recording() -> (Arc<Recording>, std_mpsc::Sender<()>) {
        let (go, wait_go) = std_mpsc::channel();
        let engine = Arc::new(Recording {
            stalled: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            go: Mutex::new(wait_go),
        });
        (engine, go)
    }

    fn put(key: &str) -> Vec<Mutation> {
        vec![Mutation::Put { key: key.as_bytes().to_vec(), value: b"v".to_vec() }]
    }

    #[tokio::test]
    async fn a_write_that_would_stall_goes_to_the_thread_and_later_writes_queue_behind_it() {
        let (engine, go) = recording();
        let writer = Writer::start(engine.clone(), false, Arc::new(RecordCache::new(16))).unwrap();

        writer.submit(put("a")).unwrap().await.unwrap().unwrap();
        engine.stalled.store(true, Ordering::SeqCst);
        let b = writer.submit(put("b")).unwrap();
        // RocksDB would take "c" at once again, but "b" still waits on the thread: "c" may not overtake it.
        engine.stalled.store(false, Ordering::SeqCst);
        let c = writer.submit(put("c")).unwrap();
        go.send(()).unwrap();
        go.send(()).unwrap();
        b.await.unwrap().unwrap();
        c.await.unwrap().unwrap();
        // Once the thread has nothing queued, writes are made in place again.
        writer.submit(put("d")).unwrap().await.unwrap().unwrap();

        let log: Vec<(&str, String)> =
            engine.log.lock().iter().map(|(w, k)| (*w, String::from_utf8_lossy(k).into_owned())).collect();
        let expect = [("in place", "a"), ("thread", "b"), ("thread", "c"), ("in place", "d")];
        assert_eq!(log, expect.map(|(w, k)| (w, k.to_string())));
    }

    #[tokio::test]
    async fn with_sync_on_every_write_goes_through_the_thread() {
        let (engine, go) = recording();
        let writer = Writer::start(engine.clone(), true, Arc::new(RecordCache::new(16))).unwrap();
        go.send(()).unwrap();
        writer.submit(put("a")).unwrap().await.unwrap().unwrap();
        assert_eq!(engine.log.lock().as_slice(), &[("thread", b"a".to_vec())]);
    }
}
