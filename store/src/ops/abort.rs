use vesta_proto::{Abort, Reply, Status};

use crate::node::{Need, StoreNode};

impl StoreNode {
    /// Releases this request's lease. Idempotent: with no lease of this request to release (already
    /// aborted, expired, or never prepared here) it answers `AlreadyDone` and touches nothing — in
    /// particular never another request's lease.
    pub(crate) fn abort(&self, a: Abort) -> Reply {
        let skey = match self.locate_for(&a.target, Need::Lease) {
            Ok(k) => k,
            Err(reply) => return reply,
        };
        if self.leases.release(&skey, a.req) {
            Reply::status(Status::Ok)
        } else {
            Reply::status(Status::AlreadyDone)
        }
    }
}
