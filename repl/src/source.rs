//! Change logs read through the proxy's store-node pool, one `ReadLogs` round trip per node for every
//! shard feed that asks at about the same time.
//!
//! A sender follows every shard of the site, and most shards are idle most of the time: asking each
//! replica of each shard on its own would cost thousands of round trips per poll. The feeds of one poll
//! ask concurrently, so their requests to one node queue up while the previous batch is on the wire; the
//! node's batcher sends whatever has queued as one request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use vesta_proto::{LogPage, ReadLog, Request, Response};
use vesta_proxy::coordinator::Coordinator;
use vesta_proxy::topology::NodeIndex;

use crate::feed::LogSource;

/// How long one batched read may take: a batch covers many shards, so it gets more than a single
/// key operation's timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most shards asked in one request.
const MAX_BATCH: usize = 1024;

type Waiter = (ReadLog, oneshot::Sender<Result<LogPage, String>>);

/// One batcher per store node, created on first use.
#[derive(Clone)]
pub struct NodeLogs {
    coordinator: Arc<Coordinator>,
    batchers: Arc<Mutex<HashMap<NodeIndex, mpsc::UnboundedSender<Waiter>>>>,
}

impl NodeLogs {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        NodeLogs { coordinator, batchers: Arc::default() }
    }

    /// The change log of `node`, as a feed reads it.
    pub fn of(&self, node: NodeIndex) -> NodeLog {
        let mut batchers = self.batchers.lock();
        let tx = batchers
            .entry(node)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(batch_reads(self.coordinator.clone(), node, rx));
                tx
            })
            .clone();
        NodeLog { node, tx }
    }
}

/// A store node's change log, read in batches with other feeds' reads.
#[derive(Clone)]
pub struct NodeLog {
    node: NodeIndex,
    tx: mpsc::UnboundedSender<Waiter>,
}

impl NodeLog {
    pub fn node(&self) -> NodeIndex {
        self.node
    }
}

impl LogSource for NodeLog {
    async fn read_log(&self, request: ReadLog) -> Result<LogPage, String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((request, tx)).map_err(|_| "log reader stopped".to_string())?;
        rx.await.map_err(|_| "log reader stopped".to_string())?
    }
}

/// Sends what has queued for `node` as one `ReadLogs`, until every [`NodeLog`] of it is dropped.
async fn batch_reads(coordinator: Arc<Coordinator>, node: NodeIndex, mut rx: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (reads, waiters): (Vec<ReadLog>, Vec<_>) = batch.into_iter().unzip();
        let asked = reads.len();
        match coordinator.pool().call_within(node, Request::ReadLogs(reads), READ_TIMEOUT).await {
            Ok(Response::Logs(pages)) if pages.len() == asked => {
                for (page, waiter) in pages.into_iter().zip(waiters) {
                    let _ = waiter.send(page.map_err(|r| format!("{}: {}", r.status.as_str(), r.message)));
                }
            }
            other => {
                let why = match other {
                    Ok(Response::Reply(r)) => format!("{}: {}", r.status.as_str(), r.message),
                    Ok(_) => "unexpected answer to read_logs".to_string(),
                    Err(e) => format!("{e:?}"),
                };
                for waiter in waiters {
                    let _ = waiter.send(Err(why.clone()));
                }
            }
        }
    }
}
