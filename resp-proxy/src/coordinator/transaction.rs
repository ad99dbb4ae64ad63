//! Multi-key writes (MSET, MSETNX, RENAME, COPY, multi-key DEL, MULTI/EXEC): every key is prepared
//! under one request id, the command decides on the newest copies of all of them at once, and the
//! changes are committed together.
//!
//! What holds (docs/compatibility.md repeats it for users):
//! - All keys are leased on a write quorum before anything is written, so no other writer interleaves:
//!   conditions (NX, WATCH, IFEQ) are judged on one consistent picture, and two transactions on a
//!   common key are serialised.
//! - Each replica node applies its share of the transaction in one engine write batch: all or none.
//!   With keys in one storage group (a `{hash tag}`), every replica holds all of it or none of it.
//! - Reads take no leases: while the commits are in flight a reader may see some keys new and others
//!   old. If the proxy dies between its commits, the keys that reached a write quorum stay, the others
//!   keep their old values until read repair spreads whatever reached some replica ("outcome unknown").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use vesta_proto::{
    Commit, CommitBatch, KeyRef, Prepare, PrepareKind, Record, Reply as NodeReply, Request, RequestId, Response,
    Status,
};

use super::write::{Answer, Failed};
use super::{back_off, newest, wall_ms, CoordError, Coordinator, NewValue};
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

/// What phase one gathered for one key.
struct Leases<P> {
    leased: Vec<(NodeIndex, Option<Record>)>,
    locked: usize,
    failed: usize,
    pending: FuturesUnordered<P>,
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
            match tokio::time::timeout_at(deadline.into(), self.queue.turn(&k.namespace, &k.key)).await {
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
            match self.write_many_once(&targets, &mut decide).await {
                Ok(reply) => {
                    metrics::counter!(m::QUORUM, "op" => "write_many", "outcome" => "ok").increment(1);
                    return Ok(reply);
                }
                Err(Failed::Contended) if Instant::now() < deadline => {
                    metrics::counter!(m::QUORUM, "op" => "write_many", "outcome" => "retried_locked").increment(1);
                    back_off(attempt).await;
                    attempt += 1;
                }
                Err(Failed::Contended) => {
                    metrics::counter!(m::QUORUM, "op" => "write_many", "outcome" => "contended").increment(1);
                    return Err(CoordError::Contended);
                }
                Err(Failed::Final(e)) => {
                    metrics::counter!(m::QUORUM, "op" => "write_many", "outcome" => "failed").increment(1);
                    return Err(e);
                }
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

        // Phase one, all keys at once: W leases on each.
        let gathering = targets.iter().map(|target| {
            let prepare = Request::Prepare(Prepare {
                req,
                target: target.clone(),
                kind: PrepareKind::ReadModifyWrite,
                condition: None,
                want_value: true,
            });
            gather(self.fan_out(target.shard, &prepare), w)
        });
        let mut keys: Vec<Leases<_>> = futures::future::join_all(gathering).await;

        let short: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].leased.len() < w).collect();
        if !short.is_empty() {
            let mut contended = true;
            let mut reached = usize::MAX;
            for &i in &short {
                let group = self.map.storage_group(targets[i].shard).len();
                let here = group - keys[i].failed;
                reached = reached.min(here);
                contended &= here >= w && keys[i].locked > 0;
            }
            self.abandon(req, targets, &mut keys);
            return Err(if contended {
                Failed::Contended
            } else {
                Failed::Final(CoordError::Unavailable { reached, needed: w })
            });
        }

        let newest: Vec<Option<Record>> =
            keys.iter().map(|k| newest(k.leased.iter().map(|(_, c)| c)).cloned()).collect();
        let refs: Vec<Option<&Record>> = newest.iter().map(Option::as_ref).collect();
        let now = wall_ms();
        let (values, reply) = match decide(&refs, now) {
            ManyDecision::Answer(reply) => {
                self.abandon(req, targets, &mut keys);
                return Ok(reply);
            }
            ManyDecision::Write(values, reply) => (values, reply),
        };

        // One HLC for the whole transaction, newer than every copy of every key it read.
        let seen = keys.iter().flat_map(|k| k.leased.iter()).filter_map(|(_, c)| c.as_ref()).map(|r| r.meta.hlc).max();
        let hlc = self.hlc.next(seen.unwrap_or(0));
        let mut records: Vec<Option<Record>> = vec![None; targets.len()];
        for (i, value) in values {
            if let Some(slot) = records.get_mut(i) {
                *slot = Some(self.new_record(newest[i].as_ref(), value, hlc, req, now));
            }
        }
        // Keys only read are released; late prepares get the commit or the abort their key gets.
        self.settle_all(req, targets, &mut keys, |i| records[i].clone());
        for (i, k) in keys.iter().enumerate() {
            if records[i].is_none() {
                self.abort(req, &targets[i], k.leased.iter().map(|(n, _)| *n));
            }
        }

        // Phase two: one commit message per node, carrying every key of the transaction it prepared.
        let mut per_node: HashMap<NodeIndex, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if records[i].is_some() {
                for &(node, _) in &k.leased {
                    per_node.entry(node).or_default().push(i);
                }
            }
        }
        let timeout = self.settings.deadline.max(self.pool.timeout());
        let mut commits: FuturesUnordered<_> = per_node
            .into_iter()
            .map(|(node, items)| {
                let request = commit_request(req, targets, &records, &items);
                let this = self.clone();
                async move { (node, items, this.pool.call_within(node, request, timeout).await) }
            })
            .collect();
        let mut acked = vec![0usize; targets.len()];
        while let Some((node, items, answer)) = commits.next().await {
            let ok = matches!(answer.map(|r| r.status()), Ok(Status::Ok | Status::AlreadyDone));
            for i in items {
                if ok {
                    acked[i] += 1;
                } else if let Some(record) = &records[i] {
                    self.repair_in_background(node, targets[i].clone(), record.clone());
                }
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

    /// Settles each key's prepares still in flight with `record(i)`: the commit when key `i` is written,
    /// an abort when it is not.
    fn settle_all<P>(
        self: &Arc<Self>,
        req: RequestId,
        targets: &[KeyRef],
        keys: &mut [Leases<P>],
        record: impl Fn(usize) -> Option<Record>,
    ) where
        P: std::future::Future<Output = Answer> + Send + 'static,
    {
        for (i, k) in keys.iter_mut().enumerate() {
            self.settle_late(std::mem::take(&mut k.pending), req, targets[i].clone(), record(i));
        }
    }

    /// Gives up an attempt: every lease taken is released.
    fn abandon<P>(self: &Arc<Self>, req: RequestId, targets: &[KeyRef], keys: &mut [Leases<P>])
    where
        P: std::future::Future<Output = Answer> + Send + 'static,
    {
        for (i, k) in keys.iter().enumerate() {
            self.abort(req, &targets[i], k.leased.iter().map(|(n, _)| *n));
        }
        self.settle_all(req, targets, keys, |_| None);
    }
}

/// Collects W leases for one key from its storage group (or every answer, if W never come).
async fn gather<P>(mut pending: FuturesUnordered<P>, w: usize) -> Leases<P>
where
    P: std::future::Future<Output = Answer> + Send + 'static,
{
    let (mut leased, mut locked, mut failed) = (Vec::new(), 0, 0);
    while leased.len() < w {
        let Some((node, answer)) = pending.next().await else { break };
        match answer {
            Ok(Response::Reply(r)) if r.status.holds_lease() => leased.push((node, r.copy)),
            Ok(Response::Reply(NodeReply { status: Status::Locked, .. })) => locked += 1,
            _ => failed += 1,
        }
    }
    Leases { leased, locked, failed, pending }
}

fn commit_request(req: RequestId, targets: &[KeyRef], records: &[Option<Record>], items: &[usize]) -> Request {
    let mut batch: Vec<(KeyRef, Record)> =
        items.iter().filter_map(|&i| Some((targets[i].clone(), records[i].clone()?))).collect();
    if batch.len() == 1 {
        let (target, record) = batch.remove(0);
        Request::Commit(Commit { req, target, record })
    } else {
        Request::CommitBatch(CommitBatch { req, items: batch })
    }
}
