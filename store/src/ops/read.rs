use vesta_proto::{Read, Reply, Status};

use crate::node::StoreNode;
use crate::ops::reply_copy;

impl StoreNode {
    /// The committed copy, never waiting on a lease: `Ok` with the copy when live, `Absent` otherwise —
    /// with the tombstone's metadata when there is one, so the coordinator can tell "deleted" from "never
    /// written" when it orders copies.
    pub(crate) fn read(&self, r: Read) -> Reply {
        let skey = match self.locate(&r.target) {
            Ok(k) => k,
            Err(reply) => return reply,
        };
        match self.load(&skey, r.want_value) {
            Ok(Some(rec)) if !rec.meta.flags.tombstone() => {
                Reply::with_copy(Status::Ok, Some(reply_copy(rec, r.want_value)))
            }
            Ok(tombstone) => Reply::with_copy(Status::Absent, tombstone.map(|t| reply_copy(t, false))),
            Err(reply) => reply,
        }
    }
}
