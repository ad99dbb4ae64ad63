use vesta_proto::{Flags, MarkDelete, Record, Reply};

use crate::node::{Need, StoreNode};

impl StoreNode {
    /// Writes a tombstone carrying `meta` (if newer than this node's copy): the key reads as absent, and
    /// an older copy on another replica can no longer win a repair and bring the key back. `meta.expires_at`
    /// is the time of the delete (now, when 0); the tombstone is kept for the grace period after it.
    pub(crate) async fn mark_delete(&self, d: MarkDelete) -> Reply {
        let skey = match self.locate_for(&d.target, Need::Hold) {
            Ok(k) => k,
            Err(reply) => return reply,
        };
        let mut meta = d.meta;
        meta.flags = meta.flags.with(Flags::TOMBSTONE);
        meta.last_writer = d.req;
        self.install_if_newer(d.req, skey, Record::new(meta, Default::default())).await
    }
}
