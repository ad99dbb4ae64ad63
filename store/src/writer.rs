//! Group commit: every write goes through one thread that gathers whatever commits are queued into a
//! single engine batch. With `sync = every-write` that is one fsync for many commits instead of one each,
//! which is what lets a node acknowledge only durable commits and still keep up with thousands in flight.
//!
//! Without an fsync per commit (`periodic`, `off`) writing in the caller was measured at about twice the
//! throughput (the hand-off costs two thread wake-ups per commit) — but a RocksDB write can stall (its
//! memtables full while a flush catches up), and a stall in the caller stops every request of the node's
//! runtime, prepares and reads included, past the proxies' per-node timeout (`-CLUSTERDOWN`, seen in
//! the redis-cli `--pipe` test with 8 MiB memtables). So every RocksDB write goes through the thread; an
//! inline write that refuses to stall (`no_slowdown`) and falls back to the thread is the next step.
//! The memory engine is written in the caller (nothing to group), which also keeps a node on it
//! deterministic under a test's paused clock.

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
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set when writes go straight to the engine in the caller.
    inline: Option<(Arc<dyn Engine>, bool)>,
    /// Kept current with every write (see `record_cache.rs`).
    cache: Arc<RecordCache>,
}

impl Writer {
    pub fn start(engine: Arc<dyn Engine>, sync: bool, cache: Arc<RecordCache>) -> std::io::Result<Self> {
        if !engine.groups_commits() {
            return Ok(Writer { jobs: None, thread: None, inline: Some((engine, sync)), cache });
        }
        let thread_cache = cache.clone();
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
                let result = write(engine.as_ref(), &thread_cache, &batch, sync);
                metrics::histogram!(crate::metrics::GROUP_COMMIT_JOBS).record(jobs.len() as f64);
                for job in jobs.drain(..) {
                    let _ = job.done.send(result.clone());
                }
                batch.clear();
            }
        })?;
        Ok(Writer { jobs: Some(tx), thread: Some(thread), inline: None, cache })
    }

    /// Hands `batch` to the group-commit thread, which applies it atomically whatever happens to the
    /// caller; the receiver says when the engine (and, with sync on, the disk) has it.
    pub fn submit(&self, batch: Vec<Mutation>) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (done, wait) = oneshot::channel();
        if let Some((engine, sync)) = &self.inline {
            let _ = done.send(write(engine.as_ref(), &self.cache, &batch, *sync));
            return Ok(wait);
        }
        let jobs = self.jobs.as_ref().ok_or_else(|| "writer stopped".to_string())?;
        jobs.send(Job { batch, done }).map_err(|_| "writer stopped".to_string())?;
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
