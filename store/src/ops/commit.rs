use vesta_proto::{Commit, Reply, Status};

use crate::lease::Claim;
use crate::metrics as m;
use crate::node::{Need, StoreNode};

impl StoreNode {
    /// Phase two: installs exactly the record the coordinator computed — stamped with this request as
    /// its last writer — and releases the lease. Applied only under the lease this request's prepare
    /// took: a commit that arrives after the lease expired or was taken over is refused with `NoLease`,
    /// unless this request already wrote the record here (a retry), which answers `AlreadyDone`.
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
        let mut record = c.record;
        record.meta.last_writer = c.req;
        let result = self.store(skey.clone(), record).await;
        self.leases.release(&skey, c.req);
        match result {
            Ok(()) => Reply::status(Status::Ok),
            Err(reply) => reply,
        }
    }
}
