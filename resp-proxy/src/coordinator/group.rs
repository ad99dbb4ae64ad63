//! A group of independent single-key writes — a connection's pipeline — through one round of prepares
//! and one round of commits per store node, instead of a round each.
//!
//! Each write keeps its own request id, leases, decision, record and outcome, exactly as if it ran
//! alone through [`Coordinator::write`]: the group shares only the messages (one `Batch` per node and
//! phase, whose commits a node writes in one engine write). A write whose key another write of this
//! proxy holds, or whose attempt in the group is contended, late or meets a moving shard, goes on alone
//! through `write`'s queue and retries, within the same deadline; the others are not held back by it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use vesta_proto::{Abort, Commit, KeyRef, Prepare, PrepareKind, Record, Request, RequestId, Response};

use super::key_queue::Turn;
use super::write::{CommitOutcome, Commits, Decided, Failed, Leases};
use super::{CoordError, Coordinator, Decision};
use crate::pool::NodeError;
use crate::resp::Reply;
use crate::topology::{NodeIndex, ShardMap};

/// One single-key write of a group: what [`Coordinator::write`] takes.
pub struct KeyWrite {
    pub namespace: Bytes,
    pub key: Bytes,
    pub kind: PrepareKind,
    pub want_value: bool,
    /// The command's decision on the newest live copy (see [`Coordinator::write`]).
    pub decide: Box<dyn FnMut(Option<&Record>, u64) -> Decision + Send>,
}

/// A write of the group that holds its key's turn, through its attempt.
struct Member {
    write: KeyWrite,
    _turn: Turn,
    target: KeyRef,
    req: RequestId,
    leases: Leases,
    /// The record it commits (and whether it keeps its writer), once decided.
    commit: Option<(Record, bool)>,
    outcome: Option<Result<Reply, Failed>>,
}

/// Requests to one node in one batch, and the member each is for.
#[derive(Default)]
struct ToNode {
    members: Vec<usize>,
    requests: Vec<Request>,
}

/// A node's answer to a batch, one per member it was for (an `Err` for each when the batch failed).
fn spread(answer: Result<Response, NodeError>, n: usize) -> Vec<Result<Response, NodeError>> {
    match answer {
        Ok(Response::Batch(responses)) if responses.len() == n => responses.into_iter().map(Ok).collect(),
        Ok(other) => {
            // A node that cannot take batches (or a confused one): as if it had not answered.
            tracing::warn!(status = ?other.status(), "a store node answered a batch with something else");
            (0..n).map(|_| Err(NodeError::Unencodable)).collect()
        }
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

impl Coordinator {
    /// Runs independent single-key writes (distinct keys) as one group; one result per write, in order.
    pub async fn write_group(self: &Arc<Self>, writes: Vec<KeyWrite>) -> Vec<Result<Reply, CoordError>> {
        let deadline = Instant::now() + self.settings.deadline;
        let map = self.map();
        let mut members = Vec::with_capacity(writes.len());
        // Writes that go alone, with their place in the results.
        let mut alone = Vec::new();
        let mut place = Vec::with_capacity(writes.len());
        for (i, write) in writes.into_iter().enumerate() {
            match self.queue.try_turn(&write.namespace, &write.key) {
                Some(turn) => {
                    let target = self.target(&write.namespace, &write.key);
                    let group = map.storage_group(target.shard).len();
                    members.push(Member {
                        write,
                        _turn: turn,
                        target,
                        req: self.ids.next(),
                        leases: Leases::new(group),
                        commit: None,
                        outcome: None,
                    });
                    place.push(i);
                }
                None => alone.push((i, write, None)),
            }
        }
        let mut results: Vec<Option<Result<Reply, CoordError>>> =
            (0..place.len() + alone.len()).map(|_| None).collect();
        if !members.is_empty() {
            self.attempt_group(&*map, &mut members, deadline).await;
        }
        // The turns pass on here: a write that retries alone queues behind whoever waits for its key.
        for (member, i) in members.into_iter().zip(place) {
            let Member { write, outcome, .. } = member;
            match outcome.unwrap_or(Err(Failed::Contended)) {
                Err(retry @ (Failed::Contended | Failed::Late | Failed::Moved)) => alone.push((i, write, Some(retry))),
                outcome => {
                    let mut attempt = 0;
                    results[i] = self.after_attempt("write", outcome, deadline, &mut attempt).await;
                }
            }
        }
        let alone = alone.into_iter().map(|(i, w, failed)| {
            let this = self.clone();
            async move {
                // Counted, and backed off from, as `write` does after an attempt of its own.
                let mut attempt = 0;
                if let Some(failed) = failed {
                    if let Some(done) = this.after_attempt("write", Err(failed), deadline, &mut attempt).await {
                        return (i, done);
                    }
                }
                let result =
                    this.write_by(&w.namespace, &w.key, w.kind, w.want_value, w.decide, deadline, attempt).await;
                (i, result)
            }
        });
        for (i, result) in futures::future::join_all(alone).await {
            results[i] = Some(result);
        }
        results.into_iter().map(|r| r.unwrap_or(Err(CoordError::Contended))).collect()
    }

    /// One attempt of every member: prepares in one batch per node, decisions, then the commits (and
    /// the aborts) in one batch per node. Leaves each member's outcome.
    async fn attempt_group(self: &Arc<Self>, map: &dyn ShardMap, members: &mut [Member], deadline: Instant) {
        let w = self.settings.write_quorum;
        let mut prepares: HashMap<NodeIndex, ToNode> = HashMap::new();
        for (at, m) in members.iter().enumerate() {
            for &node in map.storage_group(m.target.shard) {
                let to = prepares.entry(node).or_default();
                to.members.push(at);
                to.requests.push(Request::Prepare(Prepare {
                    req: m.req,
                    target: m.target.clone(),
                    kind: m.write.kind,
                    condition: None,
                    want_value: m.write.want_value,
                }));
            }
        }
        // Leases are counted from here: a node grants its lease no earlier than this.
        let sent = (Instant::now(), self.now_ms());
        let mut pending: FuturesUnordered<_> = prepares
            .into_iter()
            .map(|(node, to)| {
                let this = self.clone();
                async move {
                    let answer = this.pool.call(node, Request::Batch(to.requests)).await;
                    (node, to.members, answer)
                }
            })
            .collect();
        // Phase one: until every member holds W leases or has heard from its whole storage group.
        while members.iter().any(|m| !m.leases.enough(w) && !m.leases.all_in()) {
            let Some((node, at, answer)) = pending.next().await else { break };
            for (m, answer) in at.iter().zip(spread(answer, at.len())) {
                members[*m].leases.take(node, answer);
            }
        }
        // Decisions, each on its own leases; commits and aborts gathered per node.
        let mut second: HashMap<NodeIndex, ToNode> = HashMap::new();
        for (at, m) in members.iter_mut().enumerate() {
            let decided = if m.leases.enough(w) {
                self.decide_on(&m.target, m.req, sent, &m.leases, m.write.want_value, &mut m.write.decide)
            } else {
                Err(m.leases.shortfall(w))
            };
            let request = match decided {
                Ok(Decided::Commit { record, reply, keep_writer }) => {
                    m.commit = Some((record.clone(), keep_writer));
                    m.outcome = Some(Ok(reply));
                    Request::Commit(Commit { req: m.req, target: m.target.clone(), record, keep_writer })
                }
                Ok(Decided::Answer(reply)) => {
                    m.outcome = Some(Ok(reply));
                    Request::Abort(Abort { req: m.req, target: m.target.clone() })
                }
                Err(failed) => {
                    m.outcome = Some(Err(failed));
                    Request::Abort(Abort { req: m.req, target: m.target.clone() })
                }
            };
            for node in m.leases.nodes() {
                let to = second.entry(node).or_default();
                to.members.push(at);
                to.requests.push(request.clone());
            }
        }
        // Late prepares that take a lease get the member's commit where it is newer than their copy,
        // else an abort (see `settle_late`).
        self.settle_late_group(pending, members);

        // Phase two. From here on a failure means "outcome unknown", never "not written".
        let commit_timeout = self.commit_timeout(deadline);
        let mut commits: FuturesUnordered<_> = second
            .into_iter()
            .map(|(node, to)| {
                let this = self.clone();
                async move {
                    let answer = this.pool.call_within(node, Request::Batch(to.requests), commit_timeout).await;
                    (node, to.members, answer)
                }
            })
            .collect();
        let mut outcomes: Vec<Commits> = members.iter().map(|_| Commits::default()).collect();
        while let Some((node, at, answer)) = commits.next().await {
            for (m, answer) in at.iter().zip(spread(answer, at.len())) {
                if members[*m].commit.is_some() {
                    outcomes[*m].take(node, CommitOutcome::of(&answer));
                }
            }
        }
        for (m, commits) in members.iter_mut().zip(outcomes) {
            if let Some((record, _)) = &m.commit {
                if let Err(failed) = self.after_commits(&m.target, record, commits) {
                    m.outcome = Some(Err(failed));
                }
            }
        }
    }

    /// The prepare batches still unanswered once every member was decided: where a late prepare takes
    /// a lease, the member's commit goes there if it is newer than that replica's copy (the write went
    /// ahead), else an abort — one batch per late node.
    fn settle_late_group(
        self: &Arc<Self>,
        mut pending: FuturesUnordered<
            impl std::future::Future<Output = (NodeIndex, Vec<usize>, Result<Response, NodeError>)> + Send + 'static,
        >,
        members: &[Member],
    ) {
        if pending.is_empty() {
            return;
        }
        let decided: Vec<(RequestId, KeyRef, Option<(Record, bool)>)> =
            members.iter().map(|m| (m.req, m.target.clone(), m.commit.clone())).collect();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((node, at, answer)) = pending.next().await {
                let mut requests = Vec::new();
                for (m, answer) in at.iter().zip(spread(answer, at.len())) {
                    let Ok(Response::Reply(r)) = answer else { continue };
                    if !r.status.holds_lease() {
                        continue;
                    }
                    let (req, target, commit) = &decided[*m];
                    let older = |rec: &Record| r.copy.as_ref().is_none_or(|c| rec.meta.newer_than(&c.meta));
                    requests.push(match commit {
                        Some((record, keep_writer)) if older(record) => Request::Commit(Commit {
                            req: *req,
                            target: target.clone(),
                            record: record.clone(),
                            keep_writer: *keep_writer,
                        }),
                        _ => Request::Abort(Abort { req: *req, target: target.clone() }),
                    });
                }
                if !requests.is_empty() {
                    let _ = this.pool.call(node, Request::Batch(requests)).await;
                }
            }
        });
    }
}
