//! Writes: prepare on the storage group, decide on the newest copy of a write quorum, commit.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use vesta_proto::{
    Abort, Commit, Flags, KeyRef, Meta, Prepare, PrepareKind, Record, Repair, Reply as NodeReply, Request, RequestId,
    Response, Status,
};

use super::{after_moved, back_off, newest, wall_ms, CoordError, Coordinator, Decision, NewValue};
use crate::metrics as m;
use crate::pool::NodeError;
use crate::resp::Reply;
use crate::topology::NodeIndex;

/// Why one attempt did not finish.
pub(super) enum Failed {
    /// Fewer than W leases, but enough nodes answered that contention (not failure) is the cause.
    Contended,
    /// Fewer than W leases because replicas no longer serve the shard (a handoff, or a stale map).
    Moved,
    Final(CoordError),
}

pub(super) type Answer = (NodeIndex, Result<Response, NodeError>);

impl Coordinator {
    /// Runs one read-modify-write of `key` through two-phase commit. `decide` sees the newest live copy
    /// (value included when `want_value`) and may run more than once: a contended attempt is retried
    /// with jittered back-off until the client deadline.
    pub async fn write(
        self: &Arc<Self>,
        namespace: &Bytes,
        key: &Bytes,
        kind: PrepareKind,
        want_value: bool,
        mut decide: impl FnMut(Option<&Record>, u64) -> Decision,
    ) -> Result<Reply, CoordError> {
        let target = self.target(namespace, key);
        let deadline = Instant::now() + self.settings.deadline;
        let Ok(_turn) = tokio::time::timeout_at(deadline.into(), self.queue.turn(namespace, key)).await else {
            metrics::counter!(m::QUORUM, "op" => "write", "outcome" => "contended").increment(1);
            return Err(CoordError::Contended);
        };
        let mut attempt = 0;
        loop {
            let outcome = self.write_once(&target, kind, want_value, deadline, &mut decide).await;
            if let Some(done) = self.after_attempt("write", outcome, deadline, &mut attempt).await {
                return done;
            }
        }
    }

    /// Settles one attempt of a write: `Some` answer to return, or `None` after waiting for the next
    /// attempt — contention is retried with jittered back-off, a moving shard after asking for a fresh
    /// map, both until `deadline`. `op` labels the metrics.
    pub(super) async fn after_attempt(
        self: &Arc<Self>,
        op: &'static str,
        outcome: Result<Reply, Failed>,
        deadline: Instant,
        attempt: &mut u32,
    ) -> Option<Result<Reply, CoordError>> {
        let in_time = Instant::now() < deadline;
        let (label, result) = match outcome {
            Ok(reply) => ("ok", Some(Ok(reply))),
            Err(Failed::Contended) if in_time => {
                back_off(*attempt).await;
                ("retried_locked", None)
            }
            Err(Failed::Contended) => ("contended", Some(Err(CoordError::Contended))),
            Err(Failed::Moved) if in_time => {
                after_moved(self, *attempt).await;
                ("retried_moved", None)
            }
            Err(Failed::Moved) => ("moved", Some(Err(CoordError::Moved))),
            Err(Failed::Final(e @ CoordError::OutcomeUnknown { .. })) => ("outcome_unknown", Some(Err(e))),
            Err(Failed::Final(e)) => ("below_quorum", Some(Err(e))),
        };
        metrics::counter!(m::QUORUM, "op" => op, "outcome" => label).increment(1);
        *attempt += 1;
        result
    }

    async fn write_once(
        self: &Arc<Self>,
        target: &KeyRef,
        kind: PrepareKind,
        want_value: bool,
        deadline: Instant,
        decide: &mut impl FnMut(Option<&Record>, u64) -> Decision,
    ) -> Result<Reply, Failed> {
        let req = self.ids.next();
        let w = self.settings.write_quorum;
        let prepare = Request::Prepare(Prepare { req, target: target.clone(), kind, condition: None, want_value });
        let mut pending = self.fan_out(target.shard, &prepare);

        // Phase one: collect W leases (or learn that we cannot).
        let group = pending.len();
        let mut leased: Vec<(NodeIndex, Option<Record>)> = Vec::new();
        let (mut locked, mut failed, mut moved) = (0, 0, 0);
        while leased.len() < w {
            let Some((node, answer)) = pending.next().await else { break };
            match answer {
                Ok(Response::Reply(r)) if r.status.holds_lease() => leased.push((node, r.copy)),
                Ok(Response::Reply(NodeReply { status: Status::Locked, .. })) => locked += 1,
                Ok(Response::Reply(NodeReply { status: Status::NotOwner, .. })) => moved += 1,
                _ => failed += 1,
            }
        }
        if leased.len() < w {
            self.abort(req, target, leased.iter().map(|(n, _)| *n));
            self.settle_late(pending, req, target.clone(), None);
            let reached = group - failed - moved;
            return Err(if moved > 0 {
                Failed::Moved
            } else if reached >= w && locked > 0 {
                Failed::Contended
            } else {
                Failed::Final(CoordError::Unavailable { reached, needed: w })
            });
        }

        // Decide on the newest copy of the quorum.
        let newest = newest(leased.iter().map(|(_, c)| c)).cloned();
        let live = newest.as_ref().filter(|r| !r.meta.flags.tombstone());
        let now = wall_ms();
        let (value, reply) = match decide(live, now) {
            Decision::Answer(reply) => {
                self.abort(req, target, leased.iter().map(|(n, _)| *n));
                self.settle_late(pending, req, target.clone(), None);
                return Ok(reply);
            }
            Decision::Write(value, reply) => (value, reply),
        };
        let seen = leased.iter().filter_map(|(_, c)| c.as_ref()).map(|r| r.meta.hlc).max().unwrap_or(0);
        let record = self.new_record(newest.as_ref(), value, self.hlc.next(seen), req, now);
        // Late prepares that succeed still get this commit: every replica that prepared is committed.
        self.settle_late(pending, req, target.clone(), Some(record.clone()));

        // Phase two. From here on a failure means "outcome unknown", never "not written". These nodes
        // just answered, so a slow commit is a slow disk, not a dead node: it may use the client's
        // remaining time (but never less than the per-node timeout).
        let commit = Request::Commit(Commit { req, target: target.clone(), record: record.clone() });
        let commit_timeout = deadline.saturating_duration_since(Instant::now()).max(self.pool.timeout());
        let mut commits: FuturesUnordered<_> = leased
            .iter()
            .map(|&(node, _)| {
                let (this, commit) = (self.clone(), commit.clone());
                async move { (node, this.pool.call_within(node, commit, commit_timeout).await) }
            })
            .collect();
        let mut acked = 0;
        while let Some((node, answer)) = commits.next().await {
            match answer {
                Ok(r) if matches!(r.status(), Status::Ok | Status::AlreadyDone) => acked += 1,
                _ => self.repair_in_background(node, target.clone(), record.clone()),
            }
        }
        if acked >= self.settings.write_quorum {
            Ok(reply)
        } else {
            Err(Failed::Final(CoordError::OutcomeUnknown { acked, needed: self.settings.write_quorum }))
        }
    }

    /// The record a write leaves: the next version after the newest copy, stamped with `hlc`.
    pub(super) fn new_record(
        &self,
        newest: Option<&Record>,
        value: NewValue,
        hlc: u64,
        req: RequestId,
        now: u64,
    ) -> Record {
        let live = newest.filter(|r| !r.meta.flags.tombstone());
        let mut flags = Flags::default();
        if value.tombstone {
            flags = flags.with(Flags::TOMBSTONE);
        }
        Record {
            meta: Meta {
                version: newest.map_or(0, |r| r.meta.version).wrapping_add(1).max(1),
                created_at: live.map_or(now, |r| r.meta.created_at),
                expires_at: value.expires_at,
                hlc,
                origin: self.settings.origin,
                last_writer: req,
                flags,
                key_id: 0,
            },
            value: if value.tombstone { Bytes::new() } else { value.value },
        }
    }

    /// Sends `request` to every replica of the shard at once.
    pub(super) fn fan_out(
        self: &Arc<Self>,
        shard: u32,
        request: &Request,
    ) -> FuturesUnordered<impl std::future::Future<Output = Answer> + Send + 'static> {
        self.map().storage_group(shard).iter().map(|&node| self.ask(node, request.clone())).collect()
    }

    /// One request to one node, as a future that owns what it needs.
    pub(super) fn ask(
        self: &Arc<Self>,
        node: NodeIndex,
        request: Request,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static {
        let this = self.clone();
        async move { (node, this.pool.call(node, request).await) }
    }

    pub(super) fn abort(self: &Arc<Self>, req: RequestId, target: &KeyRef, nodes: impl Iterator<Item = NodeIndex>) {
        for node in nodes {
            let (this, abort) = (self.clone(), Request::Abort(Abort { req, target: target.clone() }));
            // A lost abort only delays the key until the lease expires.
            tokio::spawn(async move {
                let _ = this.pool.call(node, abort).await;
            });
        }
    }

    /// Prepares still in flight when the attempt moved on: if they take a lease, commit `record` there
    /// (the write went ahead) or abort (it did not), so no replica sits on a lease until it expires.
    pub(super) fn settle_late(
        self: &Arc<Self>,
        mut pending: FuturesUnordered<impl std::future::Future<Output = Answer> + Send + 'static>,
        req: RequestId,
        target: KeyRef,
        record: Option<Record>,
    ) {
        if pending.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((node, answer)) = pending.next().await {
                let Ok(Response::Reply(r)) = answer else { continue };
                if !r.status.holds_lease() {
                    continue;
                }
                let request = match &record {
                    Some(record) => Request::Commit(Commit { req, target: target.clone(), record: record.clone() }),
                    None => Request::Abort(Abort { req, target: target.clone() }),
                };
                let _ = this.pool.call(node, request).await;
            }
        });
    }

    pub(super) fn repair_in_background(self: &Arc<Self>, node: NodeIndex, target: KeyRef, record: Record) {
        let this = self.clone();
        tokio::spawn(async move {
            metrics::counter!(m::REPAIRS, "kind" => "background").increment(1);
            let repair = Request::Repair(Repair { req: this.ids.next(), target, record });
            let _ = this.pool.call(node, repair).await;
        });
    }
}
