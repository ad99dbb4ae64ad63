//! Writes: prepare on the storage group, decide on the newest copy of a write quorum, commit.
//!
//! Four rules keep an acknowledged write from being undone (DESIGN §4):
//! - The commit phase starts only while every lease it counts on surely still holds, with
//!   [`QuorumSettings::lease_guard_ms`] to spare: a coordinator held up between its prepares and its
//!   commits (a slow client, a stalled task) aborts and starts over rather than commit on a stale picture.
//! - A write is stamped after every copy it saw and never more than `max_clock_drift_ms` ahead of the
//!   store nodes' clocks; a copy stamped further ahead of this proxy's clock is refused, not followed.
//! - A replica is repaired with this write only once W replicas committed it, and never one that refused
//!   the commit for want of its lease (`NoLease`: another request may own the key there by now) or
//!   because it holds a newer copy.
//! - A prepare answered late is committed only if its copy is older than this write (the node refuses
//!   otherwise anyway): it must not roll that replica back.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use vesta_proto::{
    hlc_ms, Abort, Commit, Flags, KeyRef, Meta, Prepare, PrepareKind, Record, Repair, Reply as NodeReply, Request,
    RequestId, Response, Status,
};

use super::key_queue::{Decide, Joined, Ride, Rider};
use super::{after_moved, back_off, newest, CoordError, Coordinator, CounterChange, Decision, NewValue};
use crate::metrics as m;
use crate::pool::NodeError;
use crate::resp::Reply;
use crate::topology::NodeIndex;
use vesta_proto::counter::Counter;
use vesta_proto::Order;

/// Why one attempt did not finish.
pub(super) enum Failed {
    /// Fewer than W leases, but enough nodes answered that contention (not failure) is the cause.
    Contended,
    /// Fewer than W leases because replicas no longer serve the shard (a handoff, or a stale map).
    Moved,
    /// The leases were (nearly) over by the time the decision could be made: start over.
    Late,
    Final(CoordError),
}

pub(super) type Answer = (NodeIndex, Result<Response, NodeError>);

/// Most riders one write takes along (each costs its decision, and the carrier's reply waits for all).
const MAX_RIDERS: usize = 256;

/// What a prepare reply says about its lease and its node's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Grant {
    pub lease_ms: u64,
    pub node_wall_ms: u64,
}

/// What one replica's commit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommitOutcome {
    Applied,
    /// Refused for want of the lease, or because the replica holds a newer copy: nothing of this write
    /// may be installed there, by commit or by repair.
    Refused,
    /// No answer, or an error: the commit may or may not have landed; repairable once W applied it.
    Unknown,
}

/// What installing a copy from another site comes to, given the newest copy here.
#[derive(Debug, PartialEq)]
enum Resolution {
    /// The copy here is newer, or already includes it.
    Skip,
    /// Install this, keeping its stamp (HLC, origin, writer).
    Install(Record),
    /// Install this with a fresh HLC (and this request as its writer): a merge of two counters whose
    /// result must replace the copy here, which is newer than the one that came in.
    Restamp(Record),
}

/// The rule for copies from other sites: the newer by the order of copies wins, except that two copies
/// of a counter on the same reset merge (each site's newer contribution; see `vesta_proto::counter`).
/// A merged copy keeps the incoming copy's origin, so it is not logged here and never sent on: each
/// site's own contribution already travels in the copies that site wrote.
fn resolve_copy(here: Option<&Record>, incoming: Record) -> Resolution {
    let mergeable = match (here, incoming.counter.as_deref()) {
        (Some(h), Some(theirs)) if !h.meta.flags.tombstone() => {
            h.counter.as_deref().filter(|mine| mine.same_reset(theirs)).map(|mine| (h, mine, theirs))
        }
        _ => None,
    };
    let Some((here, mine, theirs)) = mergeable else {
        return match here {
            Some(h) if !incoming.meta.newer_than(&h.meta) => Resolution::Skip,
            _ => Resolution::Install(incoming),
        };
    };
    let merged = mine.merge(theirs);
    if merged == *mine {
        return Resolution::Skip;
    }
    let value = merged.total(crate::cmd::counters::format_float).unwrap_or_else(|| incoming.value.clone());
    if incoming.meta.newer_than(&here.meta) {
        Resolution::Install(Record { value, counter: Some(Box::new(merged)), ..incoming })
    } else {
        let meta = Meta { origin: incoming.meta.origin, ..here.meta };
        Resolution::Restamp(Record { meta, value, counter: Some(Box::new(merged)) })
    }
}

impl CommitOutcome {
    pub(super) fn of(answer: &Result<Response, NodeError>) -> Self {
        match answer.as_ref().map(Response::status) {
            Ok(Status::Ok | Status::AlreadyDone) => CommitOutcome::Applied,
            Ok(Status::NoLease | Status::ConditionFailed) => CommitOutcome::Refused,
            _ => CommitOutcome::Unknown,
        }
    }
}

/// What one key's prepares have come to so far: the replicas that granted a lease, with their copies
/// and grants (same order), and why the others did not.
pub(super) struct Leases {
    granted: Vec<NodeIndex>,
    copies: Vec<Option<Record>>,
    grants: Vec<Grant>,
    /// Replicas asked (the storage group).
    group: usize,
    answered: usize,
    locked: usize,
    failed: usize,
    moved: usize,
}

impl Leases {
    pub(super) fn new(group: usize) -> Self {
        Leases {
            granted: Vec::new(),
            copies: Vec::new(),
            grants: Vec::new(),
            group,
            answered: 0,
            locked: 0,
            failed: 0,
            moved: 0,
        }
    }

    /// Counts one replica's answer to the prepare (an `Err`: no answer).
    pub(super) fn take(&mut self, node: NodeIndex, answer: Result<Response, NodeError>) {
        self.answered += 1;
        match answer {
            Ok(Response::Reply(r)) if r.status.holds_lease() => {
                self.granted.push(node);
                self.copies.push(r.copy);
                self.grants.push(Grant { lease_ms: r.lease_ms, node_wall_ms: r.node_wall_ms });
            }
            Ok(Response::Reply(NodeReply { status: Status::Locked, .. })) => self.locked += 1,
            Ok(Response::Reply(NodeReply { status: Status::NotOwner, .. })) => self.moved += 1,
            _ => self.failed += 1,
        }
    }

    pub(super) fn enough(&self, w: usize) -> bool {
        self.granted.len() >= w
    }

    /// Every replica answered (or failed to).
    pub(super) fn all_in(&self) -> bool {
        self.answered >= self.group
    }

    /// The replicas holding a lease for this write.
    pub(super) fn nodes(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.granted.iter().copied()
    }

    /// Why fewer than W leases were granted: the shard moving, contention (enough replicas answered),
    /// or too few replicas reachable.
    pub(super) fn shortfall(&self, w: usize) -> Failed {
        let reached = self.group - self.failed - self.moved;
        if self.moved > 0 {
            Failed::Moved
        } else if reached >= w && self.locked > 0 {
            Failed::Contended
        } else {
            Failed::Final(CoordError::Unavailable { reached, needed: w })
        }
    }
}

/// A write's decision, made on its leases: answer without writing, or commit this record.
pub(super) enum Decided {
    Answer(Reply),
    Commit { record: Record, reply: Reply, keep_writer: bool },
}

impl Decided {
    fn into_reply(self) -> Reply {
        match self {
            Decided::Answer(reply) | Decided::Commit { reply, .. } => reply,
        }
    }
}

/// What one write's commits came to.
#[derive(Default)]
pub(super) struct Commits {
    acked: usize,
    /// Replicas whose commit went unanswered: repairable once W applied it.
    unknown: Vec<NodeIndex>,
}

impl Commits {
    pub(super) fn take(&mut self, node: NodeIndex, outcome: CommitOutcome) {
        match outcome {
            CommitOutcome::Applied => self.acked += 1,
            CommitOutcome::Refused => {}
            CommitOutcome::Unknown => self.unknown.push(node),
        }
    }
}

impl Coordinator {
    /// Runs one read-modify-write of `key` through two-phase commit. `decide` sees the newest live copy
    /// (value included when `want_value`) and may run more than once: a contended attempt is retried
    /// with jittered back-off until the client deadline.
    ///
    /// Writes of this proxy to one key run one at a time, and the one whose turn it is takes the writes
    /// queued behind it along (see `key_queue`): their decisions run in queue order on the record the
    /// one before left, and only the last record is committed.
    pub async fn write(
        self: &Arc<Self>,
        namespace: &Bytes,
        key: &Bytes,
        kind: PrepareKind,
        want_value: bool,
        decide: impl FnMut(Option<&Record>, u64) -> Decision + Send + 'static,
    ) -> Result<Reply, CoordError> {
        let deadline = Instant::now() + self.settings.deadline;
        self.write_by(namespace, key, kind, want_value, decide, deadline, 0).await
    }

    /// [`Coordinator::write`] within `deadline`, `attempt` attempts made already (by a group, see
    /// `group`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_by(
        self: &Arc<Self>,
        namespace: &Bytes,
        key: &Bytes,
        kind: PrepareKind,
        want_value: bool,
        decide: impl FnMut(Option<&Record>, u64) -> Decision + Send + 'static,
        deadline: Instant,
        mut attempt: u32,
    ) -> Result<Reply, CoordError> {
        let (turn, mut own) = match self.queue.join(namespace, key, want_value, Box::new(decide), deadline).await {
            Joined::Turn(turn, own) => (turn, own),
            Joined::Settled(settled) => {
                let label = if settled.is_ok() { "carried" } else { "carried_failed" };
                metrics::counter!(m::QUORUM, "op" => "write", "outcome" => label).increment(1);
                return settled;
            }
        };
        let target = self.target(namespace, key);
        // A rider fits if the copy this write prepares has what its decision needs.
        let fits = |ride: &Ride| want_value || !ride.want_value;
        let mut riders: Vec<Rider> = Vec::new();
        let outcome = loop {
            let mut decide = |live: Option<&Record>, now: u64| {
                riders.extend(turn.take_riders(fits, MAX_RIDERS.saturating_sub(riders.len())));
                self.decide_in_turn(&mut own, &mut riders, live, now)
            };
            let outcome = self.write_once(&target, kind, want_value, deadline, &mut decide).await;
            if let Some(done) = self.after_attempt("write", outcome, deadline, &mut attempt).await {
                break done;
            }
        };
        if !riders.is_empty() {
            metrics::histogram!(m::RIDERS).record(riders.len() as f64);
        }
        for rider in riders {
            rider.settle(&outcome);
        }
        outcome
    }

    /// One write's decision and, after it, its riders', each on the record the one before left; the
    /// record committed is the last one written, and each rider's reply is kept for it.
    fn decide_in_turn(&self, own: &mut Decide, riders: &mut [Rider], live: Option<&Record>, now: u64) -> Decision {
        if riders.is_empty() {
            return own(live, now);
        }
        let mut current: Option<Record> = live.cloned();
        let mut written: Option<NewValue> = None;
        let mut step = |decision: Decision, current: &mut Option<Record>| -> Reply {
            match decision {
                Decision::Answer(reply) => reply,
                Decision::Write(value, reply) => {
                    let next = self.new_record(current.as_ref(), value.clone(), 0, RequestId(0), now);
                    *current = Some(next).filter(|r| r.meta.live_at(now));
                    written = Some(match written.take() {
                        Some(before) => NewValue { counter: before.counter.then(value.counter), ..value },
                        None => value,
                    });
                    reply
                }
                // Copies from other sites never ride along or carry (`install_copy` waits alone).
                Decision::Install(_) => Reply::error("ERR internal error: a copy cannot ride along"),
            }
        };
        let mine = step(own(current.as_ref(), now), &mut current);
        for rider in riders.iter_mut() {
            let decision = (rider.decide)(current.as_ref(), now);
            rider.reply = Some(step(decision, &mut current));
        }
        match written {
            Some(value) => Decision::Write(value, mine),
            None => Decision::Answer(mine),
        }
    }

    /// Installs `record` — a copy of a write made in another site — at `key`, through this site's
    /// two-phase commit like any write (prepare leases on a write quorum, so it never interleaves with
    /// local writes to the key; repair of the replicas it missed), but only if it is newer by the order
    /// of copies than the newest copy of the quorum, dead ones included: a tombstone or an expired record
    /// that is newer keeps its place. The record keeps its HLC, origin and writer, so every site orders
    /// it the same way. `Ok(true)` if it was installed, `Ok(false)` if a newer or the same copy was
    /// there: applying a copy again changes nothing.
    pub async fn install_copy(
        self: &Arc<Self>,
        namespace: &Bytes,
        key: &Bytes,
        record: Record,
    ) -> Result<bool, CoordError> {
        // Opened here (a site must hold the keys its peers seal with) and sealed again under this
        // site's current key; a counter merges with the copy here, so that copy's contributions are
        // needed.
        let record = self.open(namespace, key, record)?;
        let want_value = record.counter.is_some();
        let target = self.target(namespace, key);
        let deadline = Instant::now() + self.settings.deadline;
        // Alone: a copy keeps its own stamp, so nothing can be decided after it in the same commit.
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.queue.turn(namespace, key)).await else {
            metrics::counter!(m::QUORUM, "op" => "install", "outcome" => "contended").increment(1);
            return Err(CoordError::Contended);
        };
        let mut decide = |_: Option<&Record>, _| Decision::Install(record.clone());
        let mut attempt = 0;
        let reply = loop {
            let outcome = self.write_once(&target, PrepareKind::Set, want_value, deadline, &mut decide).await;
            if let Some(done) = self.after_attempt("install", outcome, deadline, &mut attempt).await {
                break done?;
            }
        };
        Ok(reply == Reply::Int(1))
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
            Err(Failed::Late) if in_time => ("retried_late", None),
            Err(Failed::Contended | Failed::Late) => ("contended", Some(Err(CoordError::Contended))),
            Err(Failed::Moved) if in_time => {
                after_moved(self, *attempt).await;
                ("retried_moved", None)
            }
            Err(Failed::Moved) => ("moved", Some(Err(CoordError::Moved))),
            Err(Failed::Final(e @ CoordError::OutcomeUnknown { .. })) => ("outcome_unknown", Some(Err(e))),
            Err(Failed::Final(e @ CoordError::ClockSkew(_))) => ("clock_skew", Some(Err(e))),
            Err(Failed::Final(e @ CoordError::TooLarge { .. })) => ("too_large", Some(Err(e))),
            Err(Failed::Final(e @ (CoordError::Decrypt { .. } | CoordError::Seal(_)))) => ("encryption", Some(Err(e))),
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
        // Leases are counted from here: a node grants its lease no earlier than this.
        let sent = (Instant::now(), self.now_ms());
        let mut pending = self.fan_out(target.shard, &prepare);

        // Phase one: collect W leases (or learn that we cannot).
        let mut leases = Leases::new(pending.len());
        while !leases.enough(w) {
            let Some((node, answer)) = pending.next().await else { break };
            leases.take(node, answer);
        }
        let decided = if leases.enough(w) {
            self.decide_on(target, req, sent, &leases, want_value, decide)
        } else {
            Err(leases.shortfall(w))
        };
        let (record, reply, keep_writer) = match decided {
            Ok(Decided::Commit { record, reply, keep_writer }) => (record, reply, keep_writer),
            other => {
                self.abort(req, target, leases.nodes());
                self.settle_late(pending, req, target.clone(), None);
                return other.map(|d| d.into_reply());
            }
        };
        let commit = Request::Commit(Commit { req, target: target.clone(), record: record.clone(), keep_writer });
        // Late prepares that succeed still get this commit, where it is newer than their copy.
        self.settle_late(pending, req, target.clone(), Some((record.clone(), keep_writer)));

        // Phase two. From here on a failure means "outcome unknown", never "not written".
        let commit_timeout = self.commit_timeout(deadline);
        let mut commits: FuturesUnordered<_> = leases
            .nodes()
            .map(|node| {
                let (this, commit) = (self.clone(), commit.clone());
                async move { (node, this.pool.call_within(node, commit, commit_timeout).await) }
            })
            .collect();
        let mut commits_in = Commits::default();
        while let Some((node, answer)) = commits.next().await {
            commits_in.take(node, CommitOutcome::of(&answer));
        }
        self.after_commits(target, &record, commits_in).map(|()| reply)
    }

    /// How long the commits of a write that must finish by `deadline` may take. The nodes just answered
    /// its prepares, so a slow commit is a slow disk, not a dead node: it may use the client's remaining
    /// time (but never less than the per-node timeout).
    pub(super) fn commit_timeout(&self, deadline: Instant) -> std::time::Duration {
        deadline.saturating_duration_since(Instant::now()).max(self.pool.timeout())
    }

    /// The decision of a write on the leases it holds: the newest copy of the quorum (opened when the
    /// command wants the value) is given to `decide` — if the leases still hold and the clocks agree —
    /// and what it decides is stamped, sealed, and checked to fit a store node's frame. Nothing is sent.
    pub(super) fn decide_on(
        &self,
        target: &KeyRef,
        req: RequestId,
        sent: (Instant, u64),
        leases: &Leases,
        want_value: bool,
        decide: &mut impl FnMut(Option<&Record>, u64) -> Decision,
    ) -> Result<Decided, Failed> {
        let now = self.now_ms();
        self.ready_to_commit(sent, &leases.grants, &leases.copies, now)?;
        // The copy decided on, in the clear (only when its value was read: without it there is nothing
        // to open, and the decision looks at metadata only).
        let newest = newest(leases.copies.iter()).cloned();
        let newest = if want_value { self.open_copy(&target.namespace, &target.key, newest) } else { Ok(newest) };
        let newest = newest.map_err(Failed::Final)?;
        let seen = || leases.copies.iter().flatten().map(|r| r.meta.hlc).max().unwrap_or(0);
        let live = newest.as_ref().filter(|r| r.meta.live_at(now));
        let (record, reply, keep_writer) = match decide(live, now) {
            Decision::Answer(reply) => return Ok(Decided::Answer(reply)),
            Decision::Install(record) => match resolve_copy(newest.as_ref(), record) {
                Resolution::Skip => return Ok(Decided::Answer(Reply::Int(0))),
                Resolution::Install(record) => (record, Reply::Int(1), true),
                Resolution::Restamp(mut record) => {
                    record.meta.hlc = self.hlc.next(seen(), now);
                    (record, Reply::Int(1), false)
                }
            },
            Decision::Write(value, reply) => {
                (self.new_record(newest.as_ref(), value, self.hlc.next(seen(), now), req, now), reply, false)
            }
        };
        let record = self.seal(&target.namespace, &target.key, record).map_err(Failed::Final)?;
        // A commit no node would accept is refused now, while nothing is written (sent, it would fail
        // on every replica and leave the leases to expire).
        let commit = Request::Commit(Commit { req, target: target.clone(), record, keep_writer });
        self.check_fits(&commit).map_err(Failed::Final)?;
        let Request::Commit(Commit { record, .. }) = commit else { unreachable!("built as a commit just above") };
        Ok(Decided::Commit { record, reply, keep_writer })
    }

    /// A write's outcome from its commits: W applied, and the replicas whose commit went unanswered are
    /// repaired; fewer, and the outcome is unknown.
    pub(super) fn after_commits(
        self: &Arc<Self>,
        target: &KeyRef,
        record: &Record,
        commits: Commits,
    ) -> Result<(), Failed> {
        let w = self.settings.write_quorum;
        if commits.acked < w {
            return Err(Failed::Final(CoordError::OutcomeUnknown { acked: commits.acked, needed: w }));
        }
        for node in commits.unknown {
            self.repair_in_background(node, target.clone(), record.clone());
        }
        Ok(())
    }

    /// Whether a decision may be made and committed now, on prepares sent at `sent` (monotonic, and
    /// this proxy's wall clock) that were granted `grants` and returned `copies`: every lease must hold
    /// for [`QuorumSettings::lease_guard_ms`] more, no copy may be stamped further ahead of this proxy's
    /// clock than the drift bound (it would drag this proxy's timestamps with it), and this proxy's clock
    /// may not be further ahead of a node's than that bound either (its timestamps would drag everyone
    /// else's). The nodes answered after the prepares were sent: compared with the time of sending, a
    /// slow reply does not look like a clock ahead.
    pub(super) fn ready_to_commit(
        &self,
        sent: (Instant, u64),
        grants: &[Grant],
        copies: &[Option<Record>],
        now: u64,
    ) -> Result<(), Failed> {
        let lease_ms = grants.iter().map(|g| g.lease_ms).min().unwrap_or(0);
        let usable = lease_ms.saturating_sub(self.settings.lease_guard_ms());
        if sent.0.elapsed().as_millis() as u64 >= usable {
            metrics::counter!(m::LATE_DECISIONS).increment(1);
            return Err(Failed::Late);
        }
        let drift = self.settings.max_clock_drift_ms;
        if let Some(ahead) = copies.iter().flatten().map(|r| hlc_ms(r.meta.hlc).saturating_sub(now)).max() {
            if ahead > drift {
                return Err(self.clock_skew(format!(
                    "a replica holds a copy stamped {ahead} ms ahead of this proxy's clock (max_clock_drift_ms = {drift})"
                )));
            }
        }
        let walls: Vec<u64> = grants.iter().map(|g| g.node_wall_ms).collect();
        self.check_clock(sent.1, now, &walls).map_err(|e| self.clock_skew(e))
    }

    /// Compares this proxy's clock with the clocks of nodes that answered between `sent_wall` and
    /// `received_wall` (this proxy's wall time when it asked and when it had the answers): beyond the
    /// drift bound either way, this proxy must neither write (its timestamps would drag everyone's, or
    /// be dragged) nor judge expiry (it would disagree with everyone else about which keys exist).
    pub(super) fn check_clock(&self, sent_wall: u64, received_wall: u64, node_walls: &[u64]) -> Result<(), String> {
        let drift = self.settings.max_clock_drift_ms;
        let known = || node_walls.iter().copied().filter(|&t| t != 0);
        if let Some(ahead) = known().map(|t| sent_wall.saturating_sub(t)).max().filter(|&a| a > drift) {
            return Err(format!(
                "this proxy's clock is {ahead} ms ahead of a store node's (max_clock_drift_ms = {drift})"
            ));
        }
        if let Some(behind) = known().map(|t| t.saturating_sub(received_wall)).max().filter(|&b| b > drift) {
            return Err(format!(
                "this proxy's clock is {behind} ms behind a store node's (max_clock_drift_ms = {drift})"
            ));
        }
        Ok(())
    }

    pub(super) fn clock_skew(&self, what: String) -> Failed {
        self.report_clock_skew("write", &what);
        Failed::Final(CoordError::ClockSkew(what))
    }

    /// Counts a refusal for clock skew, and logs it — at most every few seconds: a proxy off by seconds
    /// refuses every command, and one line per command would bury everything else.
    pub(super) fn report_clock_skew(&self, what: &'static str, skew: &str) {
        metrics::counter!(m::CLOCK_SKEW).increment(1);
        let now = self.clock.mono_ms();
        let last = self.skew_logged_ms.load(std::sync::atomic::Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 5_000)
            && self
                .skew_logged_ms
                .compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(skew = %skew, "refusing to {what}: clocks disagree (see vesta_proxy_clock_skew_refusals_total)");
        }
    }

    /// The record a write leaves: the next version after the newest copy, stamped with `hlc`. A delete
    /// leaves a tombstone dated now, from which its grace period runs.
    pub(super) fn new_record(
        &self,
        newest: Option<&Record>,
        value: NewValue,
        hlc: u64,
        req: RequestId,
        now: u64,
    ) -> Record {
        let live = newest.filter(|r| r.meta.live_at(now));
        let mut flags = Flags::default();
        if value.tombstone {
            flags = flags.with(Flags::TOMBSTONE);
        }
        let counter = match value.counter {
            _ if value.tombstone => None,
            CounterChange::Reset => None,
            CounterChange::Keep => live.and_then(|r| r.counter.clone()),
            CounterChange::Add { int, float } => {
                let mut c = match live.and_then(|r| r.counter.as_deref()) {
                    Some(c) => c.clone(),
                    // The first increment since a SET, a DEL, an expiry or ever: the counter starts on
                    // the copy that is there, dead or alive, so that every site incrementing after it
                    // counts on the same start and their contributions add up.
                    None => Counter::on(
                        newest.map_or_else(Order::default, |r| r.meta.order()),
                        live.map_or_else(Bytes::new, |r| r.value.clone()),
                    ),
                };
                c.add(self.settings.origin, int, float);
                Some(Box::new(c))
            }
        };
        Record {
            meta: Meta {
                version: newest.map_or(0, |r| r.meta.version).wrapping_add(1).max(1),
                created_at: live.map_or(now, |r| r.meta.created_at),
                expires_at: if value.tombstone { now } else { value.expires_at },
                hlc,
                origin: self.settings.origin,
                last_writer: req,
                flags,
                key_id: 0,
            },
            value: if value.tombstone { Bytes::new() } else { value.value },
            counter,
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
    /// (the write went ahead, and that replica's copy is older) or abort (it did not, or the replica
    /// holds something newer — committing there would roll it back), so no replica sits on a lease until
    /// it expires.
    pub(super) fn settle_late(
        self: &Arc<Self>,
        mut pending: FuturesUnordered<impl std::future::Future<Output = Answer> + Send + 'static>,
        req: RequestId,
        target: KeyRef,
        record: Option<(Record, bool)>,
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
                let older = |rec: &Record| r.copy.as_ref().is_none_or(|c| rec.meta.newer_than(&c.meta));
                let request = match &record {
                    Some((record, keep_writer)) if older(record) => Request::Commit(Commit {
                        req,
                        target: target.clone(),
                        record: record.clone(),
                        keep_writer: *keep_writer,
                    }),
                    _ => Request::Abort(Abort { req, target: target.clone() }),
                };
                let _ = this.pool.call(node, request).await;
            }
        });
    }

    /// Installs `record` — a write that W replicas committed — on a replica whose commit went
    /// unanswered. Only ever called once the write reached W commits.
    pub(super) fn repair_in_background(self: &Arc<Self>, node: NodeIndex, target: KeyRef, record: Record) {
        let this = self.clone();
        tokio::spawn(async move {
            metrics::counter!(m::REPAIRS, "kind" => "background").increment(1);
            let repair = Request::Repair(Repair { req: this.ids.next(), target, record });
            let _ = this.pool.call(node, repair).await;
        });
    }
}
