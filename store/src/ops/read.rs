use vesta_proto::{Read, Reply, Status};

use crate::node::StoreNode;
use crate::ops::reply_copy;

impl StoreNode {
    /// The committed copy, never waiting on a lease: `Ok` when it is live by this node's clock, `Absent`
    /// otherwise — with the dead copy (a tombstone's metadata, an expired record) when there is one, so
    /// that the coordinator can order it against the other replicas' copies and repair them with it.
    /// The node's clock comes with it: the coordinator judges expiry by its own, which must agree.
    pub(crate) fn read(&self, r: Read) -> Reply {
        let skey = match self.locate(&r.target) {
            Ok(k) => k,
            Err(reply) => return reply,
        };
        let now = self.clock.wall_ms();
        let reply = match self.load(&skey, r.want_value) {
            Ok(Some(rec)) if rec.meta.live_at(now) => Reply::with_copy(Status::Ok, Some(reply_copy(rec, r.want_value))),
            Ok(dead) => Reply::with_copy(Status::Absent, dead.map(|d| reply_copy(d, r.want_value))),
            Err(reply) => return reply,
        };
        Reply { node_wall_ms: now, ..reply }
    }
}
