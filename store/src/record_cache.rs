//! The copies this node wrote most recently, kept in memory: the prepare and the read that follow a
//! write to a key find its copy here instead of in the storage engine. In profiles, looking a key up in
//! RocksDB's memtable was the largest single cost of a write (a third of a store node's CPU): a skip
//! list walk whose every step misses the CPU cache.
//!
//! Only writes fill it, after the engine has them, and every write of a record goes through the
//! writer (`writer.rs`), which keeps it current: a write replaces the entry, a delete removes it, a
//! failed write forgets its keys. Writes to one key are serialised by its lease, so entries are
//! replaced in the order the engine applied them. A read that misses falls back to the engine and
//! never fills the cache (it could race a write and put back an older copy). Entries are evicted
//! arbitrarily past the capacity: the cache only ever holds what the engine holds, so forgetting is
//! always safe. Dead copies the engine purges (past their grace period) are also purged on the way out
//! of the cache, by the same rule (`StoreNode::load`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashMap;

use crate::engine::Mutation;
use crate::key;

pub struct RecordCache {
    entries: DashMap<Vec<u8>, Bytes>,
    capacity: usize,
    /// `entries.len()` walks every shard of the map: counted here instead.
    count: AtomicUsize,
    /// Lookups, published by the node's housekeeping (a labelled metric per lookup costs more than
    /// the lookup).
    hits: AtomicU64,
    misses: AtomicU64,
}

impl RecordCache {
    /// At most `capacity` records (0: no cache).
    pub fn new(capacity: usize) -> Self {
        RecordCache {
            entries: DashMap::new(),
            capacity,
            count: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The stored bytes of `key`'s record, if cached.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        if self.capacity == 0 {
            return None;
        }
        let hit = self.entries.get(key).map(|e| e.value().clone());
        let counter = if hit.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// The engine has applied `batch`.
    pub fn wrote(&self, batch: &[Mutation]) {
        if self.capacity == 0 {
            return;
        }
        for m in batch {
            match m {
                Mutation::Put { key, value } if !key::is_node_own(key) => {
                    if self.entries.insert(key.clone(), Bytes::copy_from_slice(value)).is_none() {
                        self.count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Mutation::Put { .. } => {}
                Mutation::Delete { key } => self.remove(key),
            }
        }
        while self.count.load(Ordering::Relaxed) > self.capacity {
            let Some(victim) = self.entries.iter().next().map(|e| e.key().clone()) else { break };
            self.remove(&victim);
        }
    }

    fn remove(&self, key: &[u8]) {
        if self.entries.remove(key).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// (hits, misses) so far.
    pub fn lookups(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Writing `batch` failed: what the engine holds for its keys is unknown.
    pub fn forget(&self, batch: &[Mutation]) {
        for m in batch {
            let (Mutation::Put { key, .. } | Mutation::Delete { key }) = m;
            self.remove(key);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> Mutation {
        Mutation::Put { key: k.to_vec(), value: v.to_vec() }
    }

    #[test]
    fn writes_fill_it_deletes_and_failures_empty_it_and_it_stays_bounded() {
        let cache = RecordCache::new(2);
        let a = key::encode(1, b"0", b"a");
        cache.wrote(&[put(&a, b"1")]);
        assert_eq!(cache.get(&a).as_deref(), Some(&b"1"[..]));
        cache.wrote(&[put(&a, b"2")]);
        assert_eq!(cache.get(&a).as_deref(), Some(&b"2"[..]), "a write replaces the entry");
        cache.wrote(&[Mutation::Delete { key: a.clone() }]);
        assert_eq!(cache.get(&a), None);
        cache.wrote(&[put(&a, b"3")]);
        cache.forget(&[put(&a, b"4")]);
        assert_eq!(cache.get(&a), None, "a failed write leaves nothing to trust");
        cache.wrote(&[put(&key::node_meta(b"n"), b"x")]);
        assert!(cache.is_empty(), "the node's own records are not cached");
        for i in 0..10u8 {
            cache.wrote(&[put(&key::encode(1, b"0", &[i]), &[i])]);
        }
        assert_eq!(cache.len(), 2);
        assert!(RecordCache::new(0).get(&a).is_none());
    }
}
