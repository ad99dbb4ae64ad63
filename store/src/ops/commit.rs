use vesta_proto::{Commit, Record, Reply, RequestId, Status};

use crate::engine::Mutation;
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
        let mut staged = match self.stage_commit(c) {
            Ok(staged) => staged,
            Err(reply) => return reply,
        };
        match self.store_all(std::mem::take(&mut staged.mutations), &mut staged.pinned).await {
            Ok(()) => {
                if staged.logged {
                    metrics::counter!(m::CHANGELOG_WRITTEN).increment(1);
                }
                Reply::status(Status::Ok)
            }
            Err(reply) => reply,
        }
    }

    /// Everything of a commit but the engine write: the lease claimed and pinned, the checks made, the
    /// mutations built. `Err` is the answer when nothing is to be written (`AlreadyDone` included). A
    /// batch of commits stages each and writes them all at once (`ops/batch.rs`).
    pub(crate) fn stage_commit(&self, c: Commit) -> Result<StagedCommit, Reply> {
        let skey = self.locate_for(&c.target, Need::Lease)?;
        match self.leases.claim(&skey, c.req, self.clock.mono_ms()) {
            Claim::Pinned => {}
            refused => {
                if refused == Claim::Expired {
                    metrics::counter!(m::LEASE_EXPIRIES).increment(1);
                }
                return Err(match self.load(&skey, false)? {
                    Some(cur) if cur.meta.last_writer == c.req => Reply::status(Status::AlreadyDone),
                    Some(cur) if c.keep_writer && cur.meta.order() == c.record.meta.order() => {
                        Reply::status(Status::AlreadyDone)
                    }
                    _ => Reply::error(
                        Status::NoLease,
                        match refused {
                            Claim::Expired => "the prepare's lease expired before the commit arrived",
                            Claim::HeldBy(_) => "another request holds the key",
                            _ => "no prepare of this request holds the key",
                        },
                    ),
                });
            }
        }
        let pinned = Pinned::new(self.leases.clone(), vec![skey.clone()], c.req);
        let mut mutations = Vec::with_capacity(2);
        let logged = self.checked_commit(skey, c.req, c.record, c.keep_writer, &mut mutations)?;
        Ok(StagedCommit { mutations, pinned, logged })
    }

    /// The checks of a commit of `record` at `skey`, whose lease `req` holds pinned, and its mutations
    /// (added to `batch`; returns whether a change-log entry is among them): refused if stamped too far
    /// ahead of this node's clock or before its lease, or if the copy here is newer.
    pub(crate) fn checked_commit(
        &self,
        skey: Vec<u8>,
        req: RequestId,
        mut record: Record,
        keep_writer: bool,
        batch: &mut Vec<Mutation>,
    ) -> Result<bool, Reply> {
        if let Some(refusal) = self.too_far_ahead(record.meta.hlc) {
            metrics::counter!(m::CLOCK_AHEAD).increment(1);
            return Err(refusal);
        }
        if let Some(refusal) = self.stamped_before_lease(&skey, req, &record) {
            metrics::counter!(m::CLOCK_BEHIND).increment(1);
            return Err(refusal);
        }
        if !keep_writer {
            record.meta.last_writer = req;
        }
        // The copy the prepare found is still the one here (the lease was ours throughout): read it
        // again only when it is newer, to send it back.
        let seen = self.leases.seen(&skey, req);
        let settled = seen.is_some_and(|copy| copy.is_none_or(|order| order <= record.meta.order()));
        if !settled {
            if let Some(cur) = self.load(&skey, false)?.filter(|cur| cur.meta.newer_than(&record.meta)) {
                metrics::counter!(m::STALE_COMMITS).increment(1);
                return Err(Reply::with_copy(Status::ConditionFailed, Some(reply_copy(cur, false))));
            }
        }
        Ok(self.put_committed(skey, record, batch))
    }
}

/// A commit ready for its engine write: what to write, and the lease held until it has landed.
pub(crate) struct StagedCommit {
    pub mutations: Vec<Mutation>,
    pub pinned: Pinned,
    /// Whether a change-log entry is among the mutations.
    pub logged: bool,
}
