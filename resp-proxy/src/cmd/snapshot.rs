//! The copies a command runs against. Every data command is a pure function from a snapshot of its
//! keys to a reply and a set of changes; the coordinator supplies the snapshot (quorum reads for a read
//! command, the newest copies under prepare leases for a write) and commits the changes.
//!
//! That one shape serves a single command and a MULTI/EXEC alike: EXEC applies its queued commands in
//! order to one snapshot, each seeing the changes of the ones before it.

use std::collections::HashMap;

use bytes::Bytes;
use vesta_proto::{Meta, Record};

use crate::coordinator::{CounterChange, KeyName, NewValue};

pub struct Snapshot {
    now: u64,
    namespace: Bytes,
    entries: Vec<Entry>,
    index: HashMap<KeyName, usize>,
}

struct Entry {
    /// The live copy as the commands so far left it.
    current: Option<Record>,
    /// What to write, if any command changed the key.
    change: Option<NewValue>,
}

impl Snapshot {
    /// `copies[i]` is the newest copy of `keys[i]` (tombstones and expired copies count as absent).
    /// `namespace` is the connection's database, the one plain keys live in.
    pub fn new(namespace: Bytes, now: u64, keys: &[KeyName], copies: Vec<Option<Record>>) -> Self {
        let entries = copies
            .into_iter()
            .map(|c| Entry {
                current: c.filter(|r| !r.meta.flags.tombstone() && !r.meta.expired_at(now)),
                change: None,
            })
            .collect();
        let index = keys.iter().enumerate().map(|(i, k)| (k.clone(), i)).collect();
        Snapshot { now, namespace, entries, index }
    }

    /// Unix ms the command runs at.
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn namespace(&self) -> &Bytes {
        &self.namespace
    }

    /// Switches the database plain keys live in (a SELECT inside MULTI applies to the commands after it).
    pub fn set_namespace(&mut self, namespace: Bytes) {
        self.namespace = namespace;
    }

    /// The live copy of `key` in the connection's database.
    pub fn get(&self, key: &Bytes) -> Option<&Record> {
        self.get_in(&self.namespace.clone(), key)
    }

    pub fn get_in(&self, namespace: &Bytes, key: &Bytes) -> Option<&Record> {
        let name = KeyName { namespace: namespace.clone(), key: key.clone() };
        // A command only reads keys it declared; anything else reads as absent (and is a bug).
        debug_assert!(self.index.contains_key(&name), "undeclared key {key:?}");
        self.index.get(&name).and_then(|&i| self.entries[i].current.as_ref())
    }

    pub fn put(&mut self, key: &Bytes, value: NewValue) {
        let ns = self.namespace.clone();
        self.put_in(&ns, key, value)
    }

    /// Records a change; later reads of the key in this snapshot see it.
    pub fn put_in(&mut self, namespace: &Bytes, key: &Bytes, value: NewValue) {
        let name = KeyName { namespace: namespace.clone(), key: key.clone() };
        debug_assert!(self.index.contains_key(&name), "undeclared key {key:?}");
        let Some(&i) = self.index.get(&name) else { return };
        let entry = &mut self.entries[i];
        let gone = value.tombstone || (value.expires_at != 0 && value.expires_at <= self.now);
        entry.current = if gone {
            None
        } else {
            let meta = match &entry.current {
                Some(r) => Meta { expires_at: value.expires_at, version: r.meta.version + 1, ..r.meta },
                None => Meta { expires_at: value.expires_at, created_at: self.now, ..Meta::default() },
            };
            Some(Record::new(meta, value.value.clone()))
        };
        // The key's changes so far and this one are committed as one: increments add up, and one after a
        // SET in the same transaction builds on the SET's value (a reset), not on the stored copy.
        let counter = match &entry.change {
            Some(before) => before.counter.then(value.counter),
            None => value.counter,
        };
        entry.change = Some(NewValue { counter, ..value });
    }

    /// Deletes `key` (a tombstone that lives as long as the record would have). False if it was absent.
    pub fn delete(&mut self, key: &Bytes) -> bool {
        let ns = self.namespace.clone();
        self.delete_in(&ns, key)
    }

    pub fn delete_in(&mut self, namespace: &Bytes, key: &Bytes) -> bool {
        let Some(expires_at) = self.get_in(namespace, key).map(|r| r.meta.expires_at) else { return false };
        self.put_in(
            namespace,
            key,
            NewValue { value: Bytes::new(), expires_at, tombstone: true, counter: CounterChange::Reset },
        );
        true
    }

    /// The changes, by key index.
    pub fn into_changes(self) -> Vec<(usize, NewValue)> {
        self.entries.into_iter().enumerate().filter_map(|(i, e)| Some((i, e.change?))).collect()
    }
}
