//! One multiplexed connection per store node, reconnected with back-off; every call has the per-node
//! timeout. A node that cannot be reached fails fast until its back-off ends, so a dead zone costs
//! nothing per request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vesta_proto::client::NodeConnection;
use vesta_proto::{Request, Response};

use crate::metrics as m;
use crate::topology::NodeIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeError {
    /// No connection (refused, reset, or in back-off after a failure).
    Down,
    /// No answer within the per-node timeout.
    Timeout,
}

/// A store node in this very process (`vesta dev`): requests are handed to it directly instead of
/// crossing a loopback socket. Same operations, same semantics, same timeouts; no framing, no syscalls.
pub trait LocalNode: Send + Sync + 'static {
    fn call(&self, request: Request) -> Pin<Box<dyn Future<Output = Response> + Send + 'static>>;
}

/// In-process store nodes by the address the topology names them with.
pub type LocalNodes = HashMap<String, Arc<dyn LocalNode>>;

struct Node {
    addr: String,
    local: Option<Arc<dyn LocalNode>>,
    conn: Mutex<Option<NodeConnection>>,
    /// When the next connection attempt may happen, and the back-off after that.
    retry: Mutex<(Instant, Duration)>,
    connecting: tokio::sync::Mutex<()>,
}

pub struct NodePool {
    nodes: Vec<Node>,
    timeout: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl NodePool {
    pub fn new(addrs: &[String], timeout: Duration, locals: &LocalNodes) -> Self {
        let nodes = addrs
            .iter()
            .map(|a| Node {
                addr: a.clone(),
                local: locals.get(a).cloned(),
                conn: Mutex::new(None),
                retry: Mutex::new((Instant::now(), MIN_BACKOFF)),
                connecting: tokio::sync::Mutex::new(()),
            })
            .collect();
        NodePool { nodes, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn addr(&self, node: NodeIndex) -> &str {
        &self.nodes[node].addr
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether the node currently has a live connection.
    pub fn is_up(&self, node: NodeIndex) -> bool {
        self.nodes[node].local.is_some() || lock(&self.nodes[node].conn).as_ref().is_some_and(|c| !c.is_closed())
    }

    pub async fn call(&self, node: NodeIndex, request: Request) -> Result<Response, NodeError> {
        self.call_within(node, request, self.timeout).await
    }

    /// Like [`call`](Self::call) with another timeout (a commit may wait for the disk longer than a
    /// prepare may take to show the node is alive).
    pub async fn call_within(
        &self,
        node: NodeIndex,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, NodeError> {
        if let Some(local) = &self.nodes[node].local {
            return tokio::time::timeout(timeout, local.call(request)).await.map_err(|_| NodeError::Timeout);
        }
        let conn = self.connection(node).await?;
        match tokio::time::timeout(timeout, conn.call(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_closed)) => {
                self.mark_down(node);
                Err(NodeError::Down)
            }
            Err(_elapsed) => Err(NodeError::Timeout),
        }
    }

    async fn connection(&self, node: NodeIndex) -> Result<NodeConnection, NodeError> {
        let n = &self.nodes[node];
        if let Some(c) = lock(&n.conn).as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        if lock(&n.retry).0 > Instant::now() {
            return Err(NodeError::Down);
        }
        let _one_at_a_time = n.connecting.lock().await;
        if let Some(c) = lock(&n.conn).as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        match tokio::time::timeout(self.timeout.max(Duration::from_millis(200)), NodeConnection::connect(&n.addr)).await
        {
            Ok(Ok(c)) => {
                *lock(&n.conn) = Some(c.clone());
                *lock(&n.retry) = (Instant::now(), MIN_BACKOFF);
                metrics::gauge!(m::STORE_UP, "node" => n.addr.clone()).set(1.0);
                tracing::info!(node = %n.addr, "connected to store node");
                Ok(c)
            }
            _ => {
                self.mark_down(node);
                Err(NodeError::Down)
            }
        }
    }

    fn mark_down(&self, node: NodeIndex) {
        let n = &self.nodes[node];
        let was_up = lock(&n.conn).take().is_some();
        let mut retry = lock(&n.retry);
        *retry = (Instant::now() + retry.1, (retry.1 * 2).min(MAX_BACKOFF));
        metrics::gauge!(m::STORE_UP, "node" => n.addr.clone()).set(0.0);
        if was_up {
            tracing::warn!(node = %n.addr, "lost connection to store node");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
