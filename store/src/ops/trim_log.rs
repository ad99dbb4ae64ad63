use vesta_proto::{Reply, Status, TrimLog};

use crate::changelog;
use crate::engine::Mutation;
use crate::metrics as m;
use crate::node::{internal, StoreNode};

/// Entries deleted per engine batch.
const TRIM_BATCH: usize = 10_000;

impl StoreNode {
    /// Drops the entries of a shard's change log stamped at or below `through`: the replication sender
    /// asks once every peer site has confirmed them. Idempotent.
    pub(crate) async fn trim_log(&self, t: TrimLog) -> Reply {
        if let Err(reply) = self.check_changelog(t.shard) {
            return reply;
        }
        let (first, _) = changelog::shard_range(t.shard);
        let end = changelog::from_hlc(t.shard, t.through.saturating_add(1));
        let mut trimmed = 0u64;
        loop {
            let mut batch = Vec::new();
            let scanned = self.engine.scan(&first, &end, &mut |k, _| {
                batch.push(Mutation::Delete { key: k.to_vec() });
                batch.len() < TRIM_BATCH
            });
            if let Err(e) = scanned {
                return internal(e);
            }
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            if let Err(reply) = self.store_unleased(batch).await {
                return reply;
            }
            trimmed += n;
            metrics::counter!(m::CHANGELOG_TRIMMED).increment(n);
        }
        tracing::debug!(shard = t.shard, through = t.through, trimmed, "change log trimmed");
        Reply::status(Status::Ok)
    }
}
