//! Writes to one key from one proxy wait their turn instead of racing for the key's leases.
//!
//! Without this, many clients of one proxy incrementing one counter would each win a lease on some
//! replica and lose on another, abort, and retry — a livelock that throughput-starves a hot key. In
//! order, each write costs one round of prepare + commit. Writers on other proxies still contend
//! through the store leases, with jittered back-off.

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

type Key = (Bytes, Bytes);

#[derive(Default)]
pub struct KeyQueue {
    keys: DashMap<Key, Arc<Mutex<()>>>,
}

pub struct Turn<'a> {
    queue: &'a KeyQueue,
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyQueue {
    /// Waits until no other write of this proxy is in progress on (namespace, key).
    pub async fn turn(&self, namespace: &Bytes, key: &Bytes) -> Turn<'_> {
        let k = (namespace.clone(), key.clone());
        let mutex = self.keys.entry(k.clone()).or_default().clone();
        let guard = mutex.lock_owned().await;
        Turn { queue: self, key: k, guard: Some(guard) }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // The entry goes once nobody holds or waits for it; both happen under the map's shard lock,
        // so a writer arriving now either finds the entry or creates a fresh one.
        self.queue.keys.remove_if(&self.key, |_, m| Arc::strong_count(m) == 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_writer_at_a_time_and_entries_are_cleaned_up() {
        let q = Arc::new(KeyQueue::default());
        let (ns, k) = (Bytes::from_static(b"0"), Bytes::from_static(b"k"));
        let first = q.turn(&ns, &k).await;
        let q2 = q.clone();
        let (ns2, k2) = (ns.clone(), k.clone());
        let waiter = tokio::spawn(async move {
            let _t = q2.turn(&ns2, &k2).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second writer waits");
        drop(first);
        waiter.await.unwrap();
        assert!(q.is_empty());
    }
}
