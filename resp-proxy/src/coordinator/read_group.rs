//! A group of single-key reads — a connection's pipeline — in one `Batch` of reads per store node.
//!
//! Each key is read from R replicas of its storage group, as [`Coordinator::read`] does. A key whose
//! replicas all answer and agree is answered from the group; any other (a replica that failed or no
//! longer serves the shard, copies that disagree and must be settled first, clocks that disagree) is
//! read again alone through `read`, which asks spare replicas, repairs and retries.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use vesta_proto::{Read, Record, Request, Response, Status};

use super::{order, CoordError, Coordinator};
use crate::metrics as m;
use crate::topology::NodeIndex;

/// One key's copies as its replicas answered, in the order asked.
struct Asked {
    namespace: Bytes,
    key: Bytes,
    replicas: usize,
    copies: Vec<Option<Record>>,
    /// A replica failed, did not serve the shard, or answered something unexpected.
    spoiled: bool,
}

impl Coordinator {
    /// The newest live copy of each key (as [`Coordinator::read`] returns it), in order.
    pub async fn read_group(self: &Arc<Self>, keys: Vec<(Bytes, Bytes)>) -> Vec<Result<Option<Record>, CoordError>> {
        let r = self.settings.read_quorum;
        let map = self.map();
        // One starting zone for the whole group (to spread load, as `read` does per key).
        let start = rand::random::<u32>() as usize;
        let mut asked = Vec::with_capacity(keys.len());
        let mut to_nodes: HashMap<NodeIndex, (Vec<usize>, Vec<Request>)> = HashMap::new();
        for (at, (namespace, key)) in keys.into_iter().enumerate() {
            let target = self.target(&namespace, &key);
            let group = map.storage_group(target.shard);
            let replicas = r.min(group.len());
            for i in 0..replicas {
                let node = group[(start + i) % group.len()];
                let to = to_nodes.entry(node).or_default();
                to.0.push(at);
                to.1.push(Request::Read(Read { target: target.clone(), want_value: true }));
            }
            asked.push(Asked { namespace, key, replicas, copies: Vec::with_capacity(replicas), spoiled: replicas < r });
        }
        let sent_wall = self.now_ms();
        let mut answers: FuturesUnordered<_> = to_nodes
            .into_iter()
            .map(|(node, (at, requests))| {
                let this = self.clone();
                async move { (at, this.pool.call(node, Request::Batch(requests)).await) }
            })
            .collect();
        let mut walls = Vec::new();
        while let Some((at, answer)) = answers.next().await {
            let responses = match answer {
                Ok(Response::Batch(responses)) if responses.len() == at.len() => responses,
                _ => {
                    for a in at {
                        asked[a].spoiled = true;
                    }
                    continue;
                }
            };
            for (a, response) in at.into_iter().zip(responses) {
                match response {
                    Response::Reply(reply) if matches!(reply.status, Status::Ok | Status::Absent) => {
                        walls.push(reply.node_wall_ms);
                        asked[a].copies.push(reply.copy);
                    }
                    _ => asked[a].spoiled = true,
                }
            }
        }
        // Expiry is judged by this proxy's clock: it must agree with the nodes' (else every key is read
        // alone, and refused there with the reason).
        let clocks_agree = self.check_clock(sent_wall, self.now_ms(), &walls).is_ok();
        let now = self.now_ms();
        let mut results: Vec<Option<Result<Option<Record>, CoordError>>> = Vec::with_capacity(asked.len());
        let mut alone = Vec::new();
        for (at, a) in asked.iter().enumerate() {
            let first = a.copies.first().map(order);
            let agreed = clocks_agree
                && !a.spoiled
                && a.copies.len() == a.replicas
                && a.copies.iter().all(|c| Some(order(c)) == first);
            if agreed {
                metrics::counter!(m::QUORUM, "op" => "read", "outcome" => "ok").increment(1);
                let live = a.copies.first().cloned().flatten().filter(|r| r.meta.live_at(now));
                results.push(Some(self.open_copy(&a.namespace, &a.key, live)));
            } else {
                results.push(None);
                alone.push(at);
            }
        }
        let alone = alone.into_iter().map(|at| {
            let (this, namespace, key) = (self.clone(), asked[at].namespace.clone(), asked[at].key.clone());
            async move { (at, this.read(&namespace, &key).await) }
        });
        for (at, result) in futures::future::join_all(alone).await {
            results[at] = Some(result);
        }
        results.into_iter().map(|r| r.unwrap_or(Err(CoordError::Contended))).collect()
    }
}
