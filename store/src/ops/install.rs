use vesta_proto::{Record, Reply, RequestId, Status};

use crate::lease::{Acquire, Claim, Pinned};
use crate::metrics as m;
use crate::node::StoreNode;
use crate::ops::reply_copy;

impl StoreNode {
    /// Installs `record` at `skey` if it is newer by the order of copies than this node's copy — dead
    /// copies within their grace period included, so that neither a delete nor an expiry can be undone by
    /// an older copy — under a lease of its own so that it cannot slip between another request's prepare
    /// and commit. The very same copy already here is `AlreadyDone`; an older one is refused with
    /// `ConditionFailed` and this node's copy.
    pub(crate) async fn install_if_newer(&self, req: RequestId, skey: Vec<u8>, record: Record) -> Reply {
        let now = self.clock.mono_ms();
        match self.leases.acquire(&skey, req, now, self.settings.lease_ms) {
            Acquire::HeldBy(_) => {
                metrics::counter!(m::LOCK_CONFLICTS).increment(1);
                return Reply::status(Status::Locked);
            }
            Acquire::Taken { reclaimed: true } => metrics::counter!(m::LEASE_EXPIRIES).increment(1),
            Acquire::Taken { reclaimed: false } | Acquire::Reentrant => {}
        }
        if self.leases.claim(&skey, req, now) != Claim::Pinned {
            // Only possible with a zero-length lease; treat like contention.
            return Reply::status(Status::Locked);
        }
        let mut pinned = Pinned::new(self.leases.clone(), vec![skey.clone()], req);
        match self.load(&skey, false) {
            Err(reply) => reply,
            Ok(Some(cur)) if cur.meta.order() == record.meta.order() => Reply::status(Status::AlreadyDone),
            Ok(Some(cur)) if cur.meta.newer_than(&record.meta) => {
                Reply::with_copy(Status::ConditionFailed, Some(reply_copy(cur, false)))
            }
            Ok(_) => match self.store(skey, record, &mut pinned).await {
                Ok(()) => Reply::status(Status::Ok),
                Err(reply) => reply,
            },
        }
    }
}
