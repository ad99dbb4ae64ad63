//! Reads: R replicas answer, the newest copy wins, and a disagreement is settled before answering.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use vesta_proto::{KeyRef, Read, Record, Repair, Request, Response, Status};

use super::{after_moved, back_off, newest, order, CoordError, Coordinator};
use crate::metrics as m;
use crate::topology::NodeIndex;

enum Failed {
    /// The newest copy could not be made to stick on a write quorum yet (a writer holds the key).
    Unsettled,
    /// Replicas no longer serve the shard (a handoff, or a stale map).
    Moved,
    Final(CoordError),
}

impl Coordinator {
    /// The newest live copy of `key` on a read quorum (`None`: absent, expired or deleted).
    ///
    /// When the replicas that answered disagree, the newest copy is first written back until a write
    /// quorum holds it, and only then returned: once a value has been read, no later read can return an
    /// older one. That holds for dead copies too: a tombstone or an expired record that is the newest
    /// copy is what gets written back, so a replica that missed the delete or the expiry cannot bring the
    /// key back. Replicas that answer late with an older copy are repaired in the background.
    pub async fn read(self: &Arc<Self>, namespace: &Bytes, key: &Bytes) -> Result<Option<Record>, CoordError> {
        let now = self.now_ms();
        let live = self.read_stored(namespace, key).await?.filter(|r| r.meta.live_at(now));
        self.open_copy(namespace, key, live)
    }

    /// [`Coordinator::read`], but a dead copy is returned as it is: WATCH compares copies, and a delete
    /// is a change.
    pub async fn read_copy(self: &Arc<Self>, namespace: &Bytes, key: &Bytes) -> Result<Option<Record>, CoordError> {
        let copy = self.read_stored(namespace, key).await?;
        self.open_copy(namespace, key, copy)
    }

    /// The newest copy as the store nodes hold it (sealed, with encryption on).
    async fn read_stored(self: &Arc<Self>, namespace: &Bytes, key: &Bytes) -> Result<Option<Record>, CoordError> {
        let target = self.target(namespace, key);
        let deadline = Instant::now() + self.settings.deadline;
        let mut attempt = 0;
        loop {
            match self.read_once(&target).await {
                Ok(copy) => {
                    metrics::counter!(m::QUORUM, "op" => "read", "outcome" => "ok").increment(1);
                    return Ok(copy);
                }
                Err(Failed::Unsettled) if Instant::now() < deadline => {
                    metrics::counter!(m::QUORUM, "op" => "read", "outcome" => "retried_locked").increment(1);
                    back_off(attempt).await;
                    attempt += 1;
                }
                Err(Failed::Unsettled) => return Err(CoordError::Contended),
                Err(Failed::Moved) if Instant::now() < deadline => {
                    metrics::counter!(m::QUORUM, "op" => "read", "outcome" => "retried_moved").increment(1);
                    after_moved(self, attempt).await;
                    attempt += 1;
                }
                Err(Failed::Moved) => return Err(CoordError::Moved),
                Err(Failed::Final(e)) => {
                    let label = if matches!(e, CoordError::ClockSkew(_)) { "clock_skew" } else { "below_quorum" };
                    metrics::counter!(m::QUORUM, "op" => "read", "outcome" => label).increment(1);
                    return Err(e);
                }
            }
        }
    }

    async fn read_once(self: &Arc<Self>, target: &KeyRef) -> Result<Option<Record>, Failed> {
        let r = self.settings.read_quorum;
        let read = Request::Read(Read { target: target.clone(), want_value: true });
        // Ask R replicas (starting at a random zone to spread load); each failure brings in the next one.
        let map = self.map();
        let group = map.storage_group(target.shard);
        let start = rand::random::<u32>() as usize % group.len();
        let mut spare = (0..group.len()).map(|i| group[(start + i) % group.len()]);
        let mut pending = FuturesUnordered::new();
        let sent_wall = self.now_ms();
        for node in spare.by_ref().take(r) {
            pending.push(self.ask(node, read.clone()));
        }
        let mut copies: Vec<(NodeIndex, Option<Record>)> = Vec::new();
        let mut walls = Vec::with_capacity(r);
        let mut moved = 0;
        while copies.len() < r {
            let Some((node, answer)) = pending.next().await else { break };
            match answer {
                Ok(Response::Reply(reply)) if matches!(reply.status, Status::Ok | Status::Absent) => {
                    walls.push(reply.node_wall_ms);
                    copies.push((node, reply.copy))
                }
                other => {
                    if matches!(other, Ok(Response::Reply(ref reply)) if reply.status == Status::NotOwner) {
                        moved += 1;
                    }
                    if let Some(next) = spare.next() {
                        pending.push(self.ask(next, read.clone()));
                    }
                }
            }
        }
        if copies.len() < r {
            if moved > 0 {
                return Err(Failed::Moved);
            }
            return Err(Failed::Final(CoordError::Unavailable { reached: copies.len(), needed: r }));
        }
        // Expiry is judged by this proxy's clock: it must agree with the nodes'.
        if let Err(skew) = self.check_clock(sent_wall, self.now_ms(), &walls) {
            self.report_clock_skew("read", &skew);
            return Err(Failed::Final(CoordError::ClockSkew(skew)));
        }
        let newest = newest(copies.iter().map(|(_, c)| c)).cloned();
        let newest_order = newest.as_ref().map(|r| r.meta.order());
        self.repair_late(pending, target.clone(), newest.clone());

        let stale: Vec<NodeIndex> =
            copies.iter().filter(|(_, c)| order(c) != newest_order).map(|(node, _)| *node).collect();
        let Some(newest_copy) = newest else { return Ok(None) };
        if stale.is_empty() {
            return Ok(Some(newest_copy));
        }
        // Disagreement: write the newest copy back until a write quorum holds it.
        let mut holders = copies.len() - stale.len();
        let mut repairs: FuturesUnordered<_> = stale
            .into_iter()
            .map(|node| {
                let this = self.clone();
                let repair = Request::Repair(Repair {
                    req: self.ids.next(),
                    target: target.clone(),
                    record: newest_copy.clone(),
                });
                async move { this.pool.call(node, repair).await }
            })
            .collect();
        while let Some(answer) = repairs.next().await {
            metrics::counter!(m::REPAIRS, "kind" => "read").increment(1);
            if matches!(answer.map(|a| a.status()), Ok(Status::Ok | Status::AlreadyDone)) {
                holders += 1;
            }
        }
        if holders >= self.settings.write_quorum {
            Ok(Some(newest_copy))
        } else {
            Err(Failed::Unsettled)
        }
    }

    /// Reads still in flight when the quorum answered: repair the ones that turn out to be stale.
    fn repair_late(
        self: &Arc<Self>,
        mut pending: FuturesUnordered<
            impl std::future::Future<Output = (NodeIndex, Result<Response, crate::pool::NodeError>)> + Send + 'static,
        >,
        target: KeyRef,
        newest: Option<Record>,
    ) {
        let Some(newest) = newest else { return };
        if pending.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((node, answer)) = pending.next().await {
                let Ok(Response::Reply(reply)) = answer else { continue };
                if matches!(reply.status, Status::Ok | Status::Absent) && order(&reply.copy) < Some(newest.meta.order())
                {
                    this.repair_in_background(node, target.clone(), newest.clone());
                }
            }
        });
    }
}
