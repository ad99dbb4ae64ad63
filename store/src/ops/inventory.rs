use vesta_proto::Reply;

use crate::key;
use crate::node::{internal, StoreNode};

impl StoreNode {
    /// Records stored per shard (tombstones and not-yet-purged expired records included), whether or
    /// not the node owns the shard: what an operator checks after a redistribution.
    pub(crate) fn inventory(&self) -> Result<Vec<(u32, u64)>, Reply> {
        let mut counts: Vec<(u32, u64)> = Vec::new();
        let end = key::shard_start(self.settings.shards as u64);
        self.engine
            .scan(&key::shard_start(0), &end, &mut |k, _| {
                if let Some(shard) = key::shard_of(k) {
                    match counts.last_mut() {
                        Some((s, n)) if *s == shard => *n += 1,
                        _ => counts.push((shard, 1)),
                    }
                }
                true
            })
            .map_err(internal)?;
        Ok(counts)
    }
}
