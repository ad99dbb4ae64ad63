use vesta_proto::{Commit, Reply, Status};

use crate::lease::{Claim, Pinned};
use crate::metrics as m;
use crate::node::{Need, StoreNode};
use crate::ops::reply_copy;

impl StoreNode {
    /// Phase two: installs exactly the record the coordinator computed — stamped with this request as
    /// its last writer — and releases the lease. Applied only under the lease this request's prepare
    /// took: a commit that arrives after the lease expired or was taken over is refused with `NoLease`,
    /// unless this request already wrote the record here (a retry), which answers `AlreadyDone`.
    ///
    /// A commit never replaces a copy newer by the order of copies (`ConditionFailed` with that copy):
    /// a prepare delayed in the network can take its lease after a newer write committed here, and its
    /// coordinator, which decided on other replicas' copies, must not roll this one back.
    pub(crate) async fn commit(&self, c: Commit) -> Reply {
        let skey = match self.locate_for(&c.target, Need::Lease) {
            Ok(k) => k,
            Err(reply) => return reply,
        };
        match self.leases.claim(&skey, c.req, self.clock.mono_ms()) {
            Claim::Pinned => {}
            refused => {
                if refused == Claim::Expired {
                    metrics::counter!(m::LEASE_EXPIRIES).increment(1);
                }
                return match self.load(&skey, false) {
                    Ok(Some(cur)) if cur.meta.last_writer == c.req => Reply::status(Status::AlreadyDone),
                    Ok(Some(cur)) if c.keep_writer && cur.meta.order() == c.record.meta.order() => {
                        Reply::status(Status::AlreadyDone)
                    }
                    Ok(_) => Reply::error(
                        Status::NoLease,
                        match refused {
                            Claim::Expired => "the prepare's lease expired before the commit arrived",
                            Claim::HeldBy(_) => "another request holds the key",
                            _ => "no prepare of this request holds the key",
                        },
                    ),
                    Err(reply) => reply,
                };
            }
        }
        let mut pinned = Pinned::new(self.leases.clone(), vec![skey.clone()], c.req);
        if let Some(refusal) = self.too_far_ahead(c.record.meta.hlc) {
            metrics::counter!(m::CLOCK_AHEAD).increment(1);
            return refusal;
        }
        if let Some(refusal) = self.stamped_before_lease(&skey, c.req, &c.record) {
            metrics::counter!(m::CLOCK_BEHIND).increment(1);
            return refusal;
        }
        let mut record = c.record;
        if !c.keep_writer {
            record.meta.last_writer = c.req;
        }
        // The copy the prepare found is still the one here (the lease was ours throughout): read it
        // again only when it is newer, to send it back.
        let seen = self.leases.seen(&skey, c.req);
        let settled = seen.is_some_and(|copy| copy.is_none_or(|order| order <= record.meta.order()));
        match if settled { Ok(None) } else { self.load(&skey, false) } {
            Err(reply) => return reply,
            Ok(Some(cur)) if cur.meta.newer_than(&record.meta) => {
                metrics::counter!(m::STALE_COMMITS).increment(1);
                return Reply::with_copy(Status::ConditionFailed, Some(reply_copy(cur, false)));
            }
            Ok(_) => {}
        }
        let mut batch = Vec::with_capacity(2);
        let logged = self.put_committed(skey, record, &mut batch);
        match self.store_all(batch, &mut pinned).await {
            Ok(()) => {
                if logged {
                    metrics::counter!(m::CHANGELOG_WRITTEN).increment(1);
                }
                Reply::status(Status::Ok)
            }
            Err(reply) => reply,
        }
    }
}
