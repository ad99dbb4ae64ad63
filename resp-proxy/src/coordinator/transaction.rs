//! Multi-key writes (MSET, MSETNX, MSETEX, RENAME, COPY, MOVE, multi-key DEL, MULTI/EXEC): every key is
//! prepared under one request id, the command decides on the newest copies of all of them at once, and
//! the changes are committed together.
//!
//! What holds (docs/compatibility.md repeats it for users):
//! - All keys are leased on a write quorum before anything is written, so no other writer interleaves:
//!   conditions (NX, WATCH, IFEQ) are judged on one consistent picture, and two transactions on a
//!   common key are serialised.
//! - A replica node is committed to only if it leased every key of the transaction it holds (its
//!   share), and it applies that share in one engine write batch: all or none. Each key needs W such
//!   nodes. Replicas left out (slow, or refused one key) get the keys later by repair, key by key.
//!   With every key in one storage group (a `{hash tag}`), each committing replica switches from the
//!   old values to the new ones at once.
//! - Reads take no leases: while the commits are in flight, or while a left-out replica is being
//!   repaired, a reader may see some keys new and others old. If the proxy dies between its commits,
//!   the keys that reached a write quorum stay, and the rest surface through read repair if any replica
//!   has them ("outcome unknown").
//! - The rules of single-key writes hold key by key (see `write.rs`): commit only while the leases
//!   surely hold and the clocks agree; repair a key's replicas only once W committed it, and never a
//!   replica that refused the commit.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use vesta_proto::{
    Commit, CommitBatch, KeyRef, Prepare, PrepareKind, Record, Reply as NodeReply, Request, RequestId, Response, Status,
};

use super::write::{Answer, CommitOutcome, Failed, Grant};
use super::{newest, CoordError, Coordinator, NewValue};
use crate::metrics as m;
use crate::resp::Reply;
use crate::topology::NodeIndex;

/// A key of a multi-key write: namespace (database) and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName {
    pub namespace: Bytes,
    pub key: Bytes,
}

/// A multi-key command's decision on the newest copies of its keys.
#[derive(Debug)]
pub enum ManyDecision {
    /// Write these (index into the keys) and answer that once every written key is on a write quorum.
    Write(Vec<(usize, NewValue)>, Reply),
    /// Write nothing and answer this.
    Answer(Reply),
}

impl Coordinator {
    /// Runs a write over several keys (distinct) through one two-phase commit. `decide` sees the newest
    /// copy of each key — tombstones included, so that a WATCH can tell a delete from "never existed" —
    /// and may run more than once, as in [`Coordinator::write`].
    pub async fn write_many(
        self: &Arc<Self>,
        keys: &[KeyName],
        mut decide: impl FnMut(&[Option<&Record>], u64) -> ManyDecision,
    ) -> Result<Reply, CoordError> {
        let deadline = Instant::now() + self.settings.deadline;
        // Turns are taken in key order, so two multi-key writes of this proxy cannot wait on each other.
        let mut order: Vec<&KeyName> = keys.iter().collect();
        order.sort();
        let mut turns = Vec::with_capacity(order.len());
        for k in order {
            match tokio::time::timeout_at(deadline, self.queue.turn(&k.namespace, &k.key)).await {
                Ok(turn) => turns.push(turn),
                Err(_) => {
                    metrics::counter!(m::QUORUM, "op" => "write_many", "outcome" => "contended").increment(1);
                    return Err(CoordError::Contended);
                }
            }
        }
        let targets: Vec<KeyRef> = keys.iter().map(|k| self.target(&k.namespace, &k.key)).collect();
        let mut attempt = 0;
        loop {
            let outcome = self.write_many_once(&targets, &mut decide).await;
            if let Some(done) = self.after_attempt("write_many", outcome, deadline, &mut attempt).await {
                return done;
            }
        }
    }

    async fn write_many_once(
        self: &Arc<Self>,
        targets: &[KeyRef],
        decide: &mut impl FnMut(&[Option<&Record>], u64) -> ManyDecision,
    ) -> Result<Reply, Failed> {
        let req = self.ids.next();
        let w = self.settings.write_quorum;
        let map = self.map();
        let groups: Vec<&[NodeIndex]> = targets.iter().map(|t| map.storage_group(t.shard)).collect();
        // A node's share: the keys of the transaction it holds a replica of.
        let mut share: HashMap<NodeIndex, Vec<usize>> = HashMap::new();
        for (i, group) in groups.iter().enumerate() {
            for &node in group.iter() {
                share.entry(node).or_default().push(i);
            }
        }

        // Phase one, every key on every replica at once. Leases are counted from here.
        let sent = (Instant::now(), self.now_ms());
        let mut pending: FuturesUnordered<_> = targets
            .iter()
            .enumerate()
            .flat_map(|(i, target)| {
                let prepare = Request::Prepare(Prepare {
                    req,
                    target: target.clone(),
                    kind: PrepareKind::ReadModifyWrite,
                    condition: None,
                    want_value: true,
                });
                groups[i].iter().map(move |&node| {
                    let ask = self.ask(node, prepare.clone());
                    async move { (i, ask.await) }
                })
            })
            .collect();
        // Only a node that leased its whole share is committed to (in one batch, so it applies all of it
        // or none); every key needs W such nodes. A node refused or unreachable for one key can never
        // count, so the wait ends as soon as some key cannot reach W.
        let mut leased: HashMap<(NodeIndex, usize), (Option<Record>, Grant)> = HashMap::new();
        let mut spoiled: HashMap<NodeIndex, Status> = HashMap::new();
        let mut missing: HashMap<NodeIndex, usize> = share.iter().map(|(&n, keys)| (n, keys.len())).collect();
        let covered = |missing: &HashMap<NodeIndex, usize>| {
            groups.iter().all(|group| group.iter().filter(|n| missing[n] == 0).count() >= w)
        };
        let hopeless = |spoiled: &HashMap<NodeIndex, Status>| {
            groups.iter().any(|group| group.iter().filter(|n| !spoiled.contains_key(n)).count() < w)
        };
        let outcome = loop {
            let Some((i, (node, answer))) = pending.next().await else { break Err(()) };
            match answer {
                Ok(Response::Reply(r)) if r.status.holds_lease() => {
                    leased.insert((node, i), (r.copy, Grant { lease_ms: r.lease_ms, node_wall_ms: r.node_wall_ms }));
                    let left = missing.entry(node).or_default();
                    *left = left.saturating_sub(1);
                    // Coverage only changes when a node's share becomes whole.
                    if *left == 0 && covered(&missing) {
                        break Ok(());
                    }
                }
                Ok(Response::Reply(NodeReply { status: status @ (Status::Locked | Status::NotOwner), .. })) => {
                    spoiled.entry(node).or_insert(status);
                    if hopeless(&spoiled) {
                        break Err(());
                    }
                }
                _ => {
                    spoiled.insert(node, Status::Internal);
                    if hopeless(&spoiled) {
                        break Err(());
                    }
                }
            }
        };
        let complete = |node: NodeIndex| missing.get(&node) == Some(&0);
        let holders: Vec<NodeIndex> = share.keys().copied().filter(|&n| complete(n)).collect();
        // Leases that will not be committed: everything on a failed attempt, partial shares otherwise.
        let release = |this: &Arc<Self>, all: bool| {
            for (&(node, i), _) in leased.iter() {
                if all || !holders.contains(&node) {
                    this.abort(req, &targets[i], std::iter::once(node));
                }
            }
        };
        // Prepares still in flight are never committed (their node's share is not whole): release them.
        self.settle_late_many(pending, req, targets.to_vec());
        if outcome.is_err() {
            release(self, true);
            let reachable = (0..targets.len())
                .map(|i| groups[i].iter().filter(|n| spoiled.get(n) != Some(&Status::Internal)).count())
                .min()
                .unwrap_or(0);
            let locked = spoiled.values().any(|s| *s == Status::Locked);
            let moved = spoiled.values().any(|s| *s == Status::NotOwner);
            return Err(if moved {
                Failed::Moved
            } else if reachable >= w && locked {
                Failed::Contended
            } else {
                Failed::Final(CoordError::Unavailable { reached: reachable, needed: w })
            });
        }

        // Decide on the newest copy of each key among the nodes that will be committed to — if their
        // leases still hold and the clocks agree.
        let counted =
            || leased.iter().filter(|((n, _), _)| holders.contains(n)).map(|(_, (copy, grant))| (copy.clone(), *grant));
        let grants: Vec<Grant> = counted().map(|(_, g)| g).collect();
        let copies: Vec<Option<Record>> = counted().map(|(c, _)| c).collect();
        let now = self.now_ms();
        if let Err(failed) = self.ready_to_commit(sent, &grants, &copies, now) {
            release(self, true);
            return Err(failed);
        }
        let opened: Result<Vec<Option<Record>>, CoordError> = (0..targets.len())
            .map(|i| {
                let copies = holders.iter().filter_map(|&n| leased.get(&(n, i)).map(|(c, _)| c));
                self.open_copy(&targets[i].namespace, &targets[i].key, newest(copies).cloned())
            })
            .collect();
        let newest = match opened {
            Ok(n) => n,
            Err(e) => {
                release(self, true);
                return Err(Failed::Final(e));
            }
        };
        let refs: Vec<Option<&Record>> = newest.iter().map(Option::as_ref).collect();
        let (values, reply) = match decide(&refs, now) {
            ManyDecision::Answer(reply) => {
                release(self, true);
                return Ok(reply);
            }
            ManyDecision::Write(values, reply) => (values, reply),
        };
        release(self, false);

        // One HLC for the whole transaction, newer than every copy of every key it read.
        let seen = leased.values().filter_map(|(c, _)| c.as_ref()).map(|r| r.meta.hlc).max().unwrap_or(0);
        let hlc = self.hlc.next(seen, now);
        let mut records: Vec<Option<Record>> = vec![None; targets.len()];
        for (i, value) in values {
            if let Some(slot) = records.get_mut(i) {
                let record = self.new_record(newest[i].as_ref(), value, hlc, req, now);
                match self.seal(&targets[i].namespace, &targets[i].key, record) {
                    Ok(r) => *slot = Some(r),
                    Err(e) => {
                        release(self, true);
                        return Err(Failed::Final(e));
                    }
                }
            }
        }

        // One commit message per node, carrying its whole share (built once: checked, then sent). A
        // share too large for one message is refused before any node commits: committing the other
        // shares (and repairing this one key by key) would write part of the transaction.
        let requests: Vec<(NodeIndex, Option<Request>)> =
            holders.iter().map(|&node| (node, commit_request(req, targets, &records, &share[&node]))).collect();
        for request in requests.iter().filter_map(|(_, r)| r.as_ref()) {
            if let Err(e) = self.check_fits(request) {
                release(self, true);
                return Err(Failed::Final(e));
            }
        }

        // Phase two. Keys only read are released too (a batch holds only written keys).
        let timeout = self.settings.deadline.max(self.pool.timeout());
        let mut commits: FuturesUnordered<_> = requests
            .into_iter()
            .map(|(node, request)| {
                let items = share[&node].clone();
                for &i in &items {
                    if records[i].is_none() {
                        self.abort(req, &targets[i], std::iter::once(node));
                    }
                }
                let this = self.clone();
                async move {
                    match request {
                        Some(request) => {
                            let answer = this.pool.call_within(node, request, timeout).await;
                            (node, items, CommitOutcome::of(&answer))
                        }
                        None => (node, items, CommitOutcome::Applied),
                    }
                }
            })
            .collect();
        let mut acked = vec![0usize; targets.len()];
        // Replicas to repair key by key once the key is on W replicas: those whose commit went
        // unanswered, and those left out (a partial share). Never one that refused its commit.
        let mut to_repair: Vec<(NodeIndex, usize)> = Vec::new();
        while let Some((node, items, outcome)) = commits.next().await {
            for i in items {
                match outcome {
                    CommitOutcome::Applied => acked[i] += 1,
                    CommitOutcome::Refused => {}
                    CommitOutcome::Unknown => to_repair.push((node, i)),
                }
            }
        }
        for (node, keys) in &share {
            if !holders.contains(node) {
                to_repair.extend(keys.iter().map(|&i| (*node, i)));
            }
        }
        for (node, i) in to_repair {
            if let (Some(record), true) = (&records[i], acked[i] >= w) {
                self.repair_in_background(node, targets[i].clone(), record.clone());
            }
        }
        let written: Vec<usize> = (0..targets.len()).filter(|&i| records[i].is_some()).collect();
        let least = written.iter().map(|&i| acked[i]).min().unwrap_or(w);
        if least >= w {
            Ok(reply)
        } else {
            Err(Failed::Final(CoordError::OutcomeUnknown { acked: least, needed: w }))
        }
    }

    /// Prepares still in flight when an attempt moved on: release any lease they take.
    fn settle_late_many<P>(self: &Arc<Self>, mut pending: FuturesUnordered<P>, req: RequestId, targets: Vec<KeyRef>)
    where
        P: std::future::Future<Output = (usize, Answer)> + Send + 'static,
    {
        if pending.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((i, (node, answer))) = pending.next().await {
                if matches!(answer, Ok(Response::Reply(ref r)) if r.status.holds_lease()) {
                    let abort = Request::Abort(vesta_proto::Abort { req, target: targets[i].clone() });
                    let _ = this.pool.call(node, abort).await;
                }
            }
        });
    }
}

/// The commit for a node's share: nothing if it writes none of it, a plain commit for one key.
fn commit_request(req: RequestId, targets: &[KeyRef], records: &[Option<Record>], items: &[usize]) -> Option<Request> {
    let mut batch: Vec<(KeyRef, Record)> =
        items.iter().filter_map(|&i| Some((targets[i].clone(), records[i].clone()?))).collect();
    Some(match batch.len() {
        0 => return None,
        1 => {
            let (target, record) = batch.remove(0);
            Request::Commit(Commit { req, target, record, keep_writer: false })
        }
        _ => Request::CommitBatch(CommitBatch { req, items: batch }),
    })
}
