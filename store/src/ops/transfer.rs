use vesta_proto::{KeyRef, Reply, Scan, Status, Transfer, Transferred};

use crate::metrics as m;
use crate::node::{not_owner, StoreNode};

impl StoreNode {
    /// Copies one page of a shard — live records and dead ones within their grace period, so that a
    /// delete or an expiry moves too — to another node, and says where the page ended. A page is bounded
    /// in bytes as well as in records (see `scan_page`), so it always fits in one frame. Pages are
    /// driven, paced and checkpointed by the caller.
    pub(crate) async fn transfer(&self, t: Transfer) -> Result<Transferred, Reply> {
        if t.shard >= self.settings.shards {
            return Err(Reply::error(Status::BadRequest, format!("no shard {}", t.shard)));
        }
        if !self.ownership().holds(t.shard) {
            return Err(not_owner(t.shard));
        }
        let scan = Scan {
            shard_from: t.shard,
            shard_to: t.shard + 1,
            after: t.after,
            limit: t.limit,
            namespace: None,
            include_dead: true,
            want_values: true,
        };
        let page = self.scan_page(scan, false)?;
        let mut bytes = 0u64;
        let items: Vec<_> = page
            .entries
            .into_iter()
            .map(|e| {
                bytes += (e.namespace.len() + e.key.len() + e.record.value.len()) as u64;
                (KeyRef { shard: e.shard, namespace: e.namespace, key: e.key }, e.record)
            })
            .collect();
        let keys = items.len() as u64;
        if !items.is_empty() {
            if let Err(e) = self.peers.send(&t.target, self.next_request_id(), items).await {
                metrics::counter!(m::COPIES_SENT, "why" => "transfer", "outcome" => "failed").increment(keys);
                return Err(Reply::error(Status::Internal, format!("copying shard {} to {}: {e}", t.shard, t.target)));
            }
        }
        metrics::counter!(m::COPIES_SENT, "why" => "transfer", "outcome" => "ok").increment(keys);
        Ok(Transferred { keys, bytes, next: page.next })
    }
}
