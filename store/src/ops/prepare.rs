use vesta_proto::{Condition, Prepare, Record, Reply, Status};

use crate::lease::Acquire;
use crate::metrics as m;
use crate::node::StoreNode;
use crate::ops::reply_copy;

impl StoreNode {
    /// Phase one. Takes the key's lease (re-entrant for the same request), then reports this node's copy
    /// — a dead one too (a tombstone, an expired record): it orders the copies the coordinator compares —
    /// and whether the condition holds on it. The lease is kept whatever the condition says: the
    /// coordinator decides on the newest copy of a whole quorum, not on one node's, and must commit or
    /// abort. Nothing is written.
    pub(crate) fn prepare(&self, p: Prepare) -> Reply {
        let skey = match self.locate(&p.target) {
            Ok(k) => k,
            Err(reply) => return reply,
        };
        match self.leases.acquire(&skey, p.req, self.clock.mono_ms(), self.settings.lease_ms) {
            Acquire::HeldBy(_) => {
                metrics::counter!(m::LOCK_CONFLICTS).increment(1);
                return Reply::status(Status::Locked);
            }
            Acquire::Taken { reclaimed: true } => metrics::counter!(m::LEASE_EXPIRIES).increment(1),
            Acquire::Taken { reclaimed: false } | Acquire::Reentrant => {}
        }
        let condition = p.condition.or_else(|| p.kind.implied_condition());
        let need_value = p.want_value || matches!(condition, Some(Condition::ValueEquals(_)));
        let current = match self.load(&skey, need_value) {
            Ok(c) => c,
            Err(reply) => {
                self.leases.release(&skey, p.req);
                return reply;
            }
        };
        self.leases.saw(&skey, p.req, current.as_ref().map(|c| c.meta.order()));
        if current.as_ref().is_some_and(|c| c.meta.last_writer == p.req) {
            // This request already committed here: a retry of a finished write must not run it twice.
            self.leases.release(&skey, p.req);
            return Reply::with_copy(Status::AlreadyDone, current.map(|c| reply_copy(c, p.want_value)));
        }
        let now = self.clock.wall_ms();
        let live = current.as_ref().filter(|c| c.meta.live_at(now));
        let status = match condition {
            Some(c) => evaluate(&c, live),
            None if p.kind == vesta_proto::PrepareKind::Delete && live.is_none() => Status::Absent,
            None => Status::Ok,
        };
        Reply {
            status,
            copy: current.map(|c| reply_copy(c, p.want_value)),
            message: String::new(),
            lease_ms: self.settings.lease_ms,
            node_wall_ms: now,
        }
    }
}

/// A condition on the live copy (`None` = absent).
fn evaluate(condition: &Condition, live: Option<&Record>) -> Status {
    match (condition, live) {
        (Condition::Absent, None) => Status::Ok,
        (Condition::Absent, Some(_)) => Status::Exists,
        (_, None) => Status::Absent,
        (Condition::Present, Some(_)) => Status::Ok,
        (Condition::ValueEquals(v), Some(r)) if r.value == *v => Status::Ok,
        (Condition::VersionEquals(v), Some(r)) if r.meta.version == *v => Status::Ok,
        (Condition::ValueEquals(_) | Condition::VersionEquals(_), Some(_)) => Status::ConditionFailed,
    }
}
