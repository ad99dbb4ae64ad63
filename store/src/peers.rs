//! Other store nodes this node sends record copies to: the live writes of shards moving away
//! (forwarding) and pages of a shard (`Transfer`, for redistribution and zone repair). Copies are
//! installed only if newer by (HLC, origin), so a copy that arrives twice or late changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use vesta_proto::client::NodeConnection;
use vesta_proto::frame::DEFAULT_MAX_FRAME;
use vesta_proto::{CloneRecords, KeyRef, Record, Reply, Request, RequestId, Response, Status};

use crate::engine::Mutation;
use crate::key;
use crate::metrics as m;
use crate::node::StoreNode;
use crate::ownership::Ownership;

/// How long one batch of copies may take to be installed on the receiving node.
const COPY_TIMEOUT: Duration = Duration::from_secs(5);

/// Copies bound for one node.
pub(crate) type Outbound = (String, Vec<(KeyRef, Record)>);

#[derive(Default)]
pub(crate) struct Peers {
    connections: parking_lot::Mutex<HashMap<String, NodeConnection>>,
    /// Mutual TLS to other nodes, when the cluster's hops are encrypted.
    pub(crate) tls: parking_lot::RwLock<Option<vesta_tls::ClientTls>>,
}

impl Peers {
    /// The writes of `batch` to shards that are moving away, decoded and grouped by their new node.
    pub(crate) fn forwardable(&self, ownership: &Ownership, batch: &[Mutation]) -> Vec<Outbound> {
        let mut out: Vec<Outbound> = Vec::new();
        for mutation in batch {
            let Mutation::Put { key: skey, value } = mutation else { continue };
            let Some((shard, namespace, key)) = key::decode(skey) else { continue };
            let Some(addr) = ownership.forward_to(shard) else { continue };
            let Ok(record) = Record::decode(value, true) else { continue };
            let item = (KeyRef { shard, namespace, key }, record);
            match out.iter_mut().find(|(a, _)| a == addr) {
                Some((_, items)) => items.push(item),
                None => out.push((addr.to_string(), vec![item])),
            }
        }
        out
    }

    async fn connection(&self, addr: &str) -> Result<NodeConnection, String> {
        if let Some(c) = self.connections.lock().get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let tls = self.tls.read().clone();
        let c = tokio::time::timeout(COPY_TIMEOUT, vesta_tls::dial(addr, tls.as_ref(), DEFAULT_MAX_FRAME))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| e.to_string())?;
        self.connections.lock().insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Installs `items` on the node at `addr`; one retry on a fresh connection if the old one broke.
    pub(crate) async fn send(&self, addr: &str, req: RequestId, items: Vec<(KeyRef, Record)>) -> Result<(), String> {
        let request = Request::Clone(CloneRecords { req, items });
        for attempt in 0..2 {
            let conn = self.connection(addr).await?;
            match tokio::time::timeout(COPY_TIMEOUT, conn.call(request.clone())).await {
                Err(_) => return Err(format!("{addr} did not install the copies within {COPY_TIMEOUT:?}")),
                Ok(Err(_closed)) if attempt == 0 => {
                    self.connections.lock().remove(addr);
                }
                Ok(Err(e)) => return Err(format!("{addr}: {e}")),
                Ok(Ok(Response::Reply(r))) if r.status == Status::Ok => return Ok(()),
                Ok(Ok(other)) => {
                    return Err(format!("{addr} refused the copies: {} {}", other.status(), reply_message(&other)))
                }
            }
        }
        Err(format!("{addr}: connection lost twice"))
    }
}

fn reply_message(r: &Response) -> &str {
    match r {
        Response::Reply(r) => &r.message,
        _ => "",
    }
}

impl StoreNode {
    /// Forwards writes that just landed here to the nodes their shards are moving to. A failure is
    /// reported as this node's failure: the write is applied here, but the coordinator must not count
    /// it, since the node about to own the shard may not have it.
    pub(crate) async fn forward(&self, outbound: Vec<Outbound>) -> Result<(), Reply> {
        for (addr, items) in outbound {
            let n = items.len() as u64;
            match self.peers.send(&addr, self.next_request_id(), items).await {
                Ok(()) => metrics::counter!(m::COPIES_SENT, "why" => "forward", "outcome" => "ok").increment(n),
                Err(e) => {
                    metrics::counter!(m::COPIES_SENT, "why" => "forward", "outcome" => "failed").increment(n);
                    tracing::warn!(target_node = %addr, error = %e, "forwarding a write to a moving shard failed");
                    return Err(Reply::error(Status::Internal, format!("forwarding to the shard's new node: {e}")));
                }
            }
        }
        Ok(())
    }

    /// Deletes every record of `shard` (it moved away); returns how many.
    pub async fn drop_shard(&self, shard: u32) -> Result<u64, String> {
        let (from, to) = (key::shard_start(shard as u64), key::shard_start(shard as u64 + 1));
        let mut dropped = 0;
        loop {
            let mut batch = Vec::new();
            self.engine
                .scan(&from, &to, &mut |k, _| {
                    batch.push(Mutation::Delete { key: k.to_vec() });
                    batch.len() < 1000
                })
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                break;
            }
            dropped += batch.len() as u64;
            self.store_unleased(batch).await.map_err(|r| r.message)?;
            // Let the node's real work in between.
            tokio::task::yield_now().await;
        }
        metrics::counter!(m::DROPPED_RECORDS).increment(dropped);
        Ok(dropped)
    }

    /// Whether any record of `shard` is stored here.
    pub fn has_data(&self, shard: u32) -> bool {
        let (from, to) = (key::shard_start(shard as u64), key::shard_start(shard as u64 + 1));
        let mut any = false;
        let _ = self.engine.scan(&from, &to, &mut |_, _| {
            any = true;
            false
        });
        any
    }
}
