use vesta_proto::{CommitBatch, Reply, Status};

use crate::lease::{Claim, Pinned};
use crate::metrics as m;
use crate::node::{Need, StoreNode};

impl StoreNode {
    /// Phase two of a multi-key write: installs every record of the batch in one engine write batch,
    /// so this replica ends up with all of them or none. Every key must still be under the lease this
    /// request's prepares took; if one is not, nothing is written (`NoLease`) — unless this request
    /// already wrote every key here (a retry), which answers `AlreadyDone`. As with a single commit,
    /// nothing is written if any key already holds a newer copy (`ConditionFailed`).
    pub(crate) async fn commit_batch(&self, c: CommitBatch) -> Reply {
        let mut skeys = Vec::with_capacity(c.items.len());
        for (target, _) in &c.items {
            match self.locate_for(target, Need::Lease) {
                Ok(k) => skeys.push(k),
                Err(reply) => return reply,
            }
        }
        let now = self.clock.mono_ms();
        let mut pinned = Pinned::new(self.leases.clone(), Vec::with_capacity(skeys.len()), c.req);
        let mut refused = None;
        for skey in &skeys {
            match self.leases.claim(skey, c.req, now) {
                Claim::Pinned => pinned.add(skey.clone(), c.req),
                other => {
                    refused = Some(other);
                    break;
                }
            }
        }
        if let Some(claim) = refused {
            if claim == Claim::Expired {
                metrics::counter!(m::LEASE_EXPIRIES).increment(1);
            }
            // All or none: the leases already pinned are given up, so this replica applies nothing.
            drop(pinned);
            let mut done = true;
            for skey in &skeys {
                match self.load(skey, false) {
                    Ok(Some(cur)) if cur.meta.last_writer == c.req => {}
                    Ok(_) => done = false,
                    Err(reply) => return reply,
                }
            }
            return if done {
                Reply::status(Status::AlreadyDone)
            } else {
                Reply::error(Status::NoLease, "a key of the batch is no longer under this request's lease")
            };
        }
        let (mut batch, mut logged) = (Vec::with_capacity(skeys.len()), 0u64);
        for (skey, (_, record)) in skeys.into_iter().zip(c.items) {
            match self.checked_commit(skey, c.req, record, false, &mut batch) {
                Ok(was_logged) => logged += was_logged as u64,
                Err(reply) => return reply,
            }
        }
        match self.store_all(batch, &mut pinned).await {
            Ok(()) => {
                metrics::counter!(m::CHANGELOG_WRITTEN).increment(logged);
                Reply::status(Status::Ok)
            }
            Err(reply) => reply,
        }
    }
}
