use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{purgeable, Engine, EngineError, EngineStats, Mutation};

/// An ordered map in memory: no disk, nothing survives the process. Same observable behaviour as RocksDB.
#[derive(Default)]
pub struct MemoryEngine {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.map.read().get(key).cloned())
    }

    fn write(&self, batch: &[Mutation], _sync: bool) -> Result<(), EngineError> {
        let mut map = self.map.write();
        for m in batch {
            match m {
                Mutation::Put { key, value } => {
                    map.insert(key.clone(), value.clone());
                }
                Mutation::Delete { key } => {
                    map.remove(key);
                }
            }
        }
        Ok(())
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), EngineError> {
        if from >= to {
            return Ok(());
        }
        let map = self.map.read();
        for (k, v) in map.range::<[u8], _>((Bound::Included(from), Bound::Excluded(to))) {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn purge_dead(&self, now_ms: u64, grace_ms: u64) -> Result<u64, EngineError> {
        let mut map = self.map.write();
        let before = map.len();
        map.retain(|k, v| !purgeable(k, v, now_ms, grace_ms));
        Ok((before - map.len()) as u64)
    }

    fn stats(&self) -> EngineStats {
        let map = self.map.read();
        EngineStats { estimated_keys: map.len() as u64, ..EngineStats::default() }
    }

    fn groups_commits(&self) -> bool {
        false
    }
}
