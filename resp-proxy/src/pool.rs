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
    /// Calls timed out in a row. A connection whose peer vanished (cut off, moved to another address)
    /// may never be closed by the kernel in useful time: after a few silent timeouts it is dropped and
    /// the node reconnected.
    timeouts: std::sync::atomic::AtomicU32,
}

/// Consecutive timeouts after which a connection is given up.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// Nodes are only ever added (a new shard map may name new ones), so a [`NodeIndex`] stays valid for
/// the life of the process and maps of different versions can share one pool.
pub struct NodePool {
    nodes: parking_lot::RwLock<Vec<Arc<Node>>>,
    locals: LocalNodes,
    timeout: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl NodePool {
    pub fn new(timeout: Duration, locals: &LocalNodes) -> Self {
        NodePool { nodes: Default::default(), locals: locals.clone(), timeout }
    }

    /// The index of the node at `addr`, added to the pool if it is new.
    pub fn index_of(&self, addr: &str) -> NodeIndex {
        if let Some(i) = self.nodes.read().iter().position(|n| n.addr == addr) {
            return i;
        }
        let mut nodes = self.nodes.write();
        if let Some(i) = nodes.iter().position(|n| n.addr == addr) {
            return i;
        }
        nodes.push(Arc::new(Node {
            addr: addr.to_string(),
            local: self.locals.get(addr).cloned(),
            conn: Mutex::new(None),
            retry: Mutex::new((Instant::now(), MIN_BACKOFF)),
            connecting: tokio::sync::Mutex::new(()),
            timeouts: Default::default(),
        }));
        nodes.len() - 1
    }

    fn node(&self, node: NodeIndex) -> Arc<Node> {
        self.nodes.read()[node].clone()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn addr(&self, node: NodeIndex) -> String {
        self.node(node).addr.clone()
    }

    pub fn len(&self) -> usize {
        self.nodes.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.read().is_empty()
    }

    /// Whether the node currently has a live connection.
    pub fn is_up(&self, node: NodeIndex) -> bool {
        let n = self.node(node);
        n.local.is_some() || lock(&n.conn).as_ref().is_some_and(|c| !c.is_closed())
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
        let n = self.node(node);
        if let Some(local) = &n.local {
            return tokio::time::timeout(timeout, local.call(request)).await.map_err(|_| NodeError::Timeout);
        }
        let conn = self.connection(&n).await?;
        match tokio::time::timeout(timeout, conn.call(request)).await {
            Ok(Ok(response)) => {
                n.timeouts.store(0, std::sync::atomic::Ordering::Relaxed);
                Ok(response)
            }
            Ok(Err(_closed)) => {
                self.mark_down(&n);
                Err(NodeError::Down)
            }
            Err(_elapsed) => {
                if n.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= TIMEOUTS_BEFORE_RECONNECT {
                    n.timeouts.store(0, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(node = %n.addr, "store node silent; reconnecting");
                    self.mark_down(&n);
                }
                Err(NodeError::Timeout)
            }
        }
    }

    async fn connection(&self, n: &Node) -> Result<NodeConnection, NodeError> {
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
                self.mark_down(n);
                Err(NodeError::Down)
            }
        }
    }

    fn mark_down(&self, n: &Node) {
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
