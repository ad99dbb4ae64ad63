//! One multiplexed connection per store node, reconnected with back-off; every call has the per-node
//! timeout. A node that cannot be reached fails fast until its back-off ends, so a dead zone costs
//! nothing per request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vesta_proto::client::{check_frame, ClientError, NodeConnection};
use vesta_proto::frame::DEFAULT_MAX_FRAME;
use vesta_proto::{Request, Response};

use crate::metrics as m;
use crate::topology::NodeIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeError {
    /// No connection (refused, reset, or in back-off after a failure).
    Down,
    /// No answer within the per-node timeout.
    Timeout,
    /// Refused before sending: the request's frame would be `len` bytes, over the node's limit `max`
    /// (the node would close the connection every other request shares). The node is fine.
    TooLarge { len: usize, max: usize },
    /// Refused before sending: the request cannot be encoded (a bug, not a node failure).
    Unencodable,
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
    /// Calls timed out in a row with nothing received meanwhile. A connection whose peer vanished (cut
    /// off, moved to another address) may never be closed by the kernel in useful time: after a few
    /// silent timeouts it is dropped and the node reconnected.
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
    /// The largest frame a store node accepts (its `max_frame_bytes`, 64 MiB by default).
    max_frame: usize,
    /// Mutual TLS to the store nodes, when the cluster's hops are encrypted.
    tls: parking_lot::RwLock<Option<vesta_tls::ClientTls>>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl NodePool {
    pub fn new(timeout: Duration, locals: &LocalNodes) -> Self {
        NodePool {
            nodes: Default::default(),
            locals: locals.clone(),
            timeout,
            max_frame: DEFAULT_MAX_FRAME,
            tls: Default::default(),
        }
    }

    /// Connections made from now on use mutual TLS.
    pub fn set_tls(&self, tls: vesta_tls::ClientTls) {
        *self.tls.write() = Some(tls);
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

    /// `Err(NodeError::TooLarge)` when no store node would accept `request` in one frame. Cheap: the
    /// length is computed, not encoded.
    pub fn fits(&self, request: &Request) -> Result<(), NodeError> {
        match check_frame(request, self.max_frame) {
            Err(ClientError::TooLarge { len, max }) => Err(NodeError::TooLarge { len, max }),
            // Not a matter of size: the call itself reports it.
            _ => Ok(()),
        }
    }

    /// Whether the node currently has a live connection.
    pub fn is_up(&self, node: NodeIndex) -> bool {
        let n = self.node(node);
        n.local.is_some() || lock(&n.conn).as_ref().is_some_and(|c| !c.is_closed())
    }

    pub fn call(
        &self,
        node: NodeIndex,
        request: Request,
    ) -> impl Future<Output = Result<Response, NodeError>> + Send + '_ {
        self.call_within(node, request, self.timeout)
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
            // An in-process node (`vesta dev`) has no frames, but gets the same limit as one over TCP:
            // what works in development must work in a cluster of processes.
            self.fits(&request)?;
            return tokio::time::timeout(timeout, local.call(request)).await.map_err(|_| NodeError::Timeout);
        }
        // Boxed: the call over a connection holds the request a few times over (KiBs), and every call's
        // future (in-process ones included) would otherwise be that large, copied as it moves.
        Box::pin(self.call_remote(&n, request, timeout)).await
    }

    async fn call_remote(&self, n: &Node, request: Request, timeout: Duration) -> Result<Response, NodeError> {
        let conn = self.connection(n).await?;
        let received = conn.bytes_received();
        match tokio::time::timeout(timeout, conn.call(request)).await {
            Ok(Ok(response)) => {
                n.timeouts.store(0, std::sync::atomic::Ordering::Relaxed);
                Ok(response)
            }
            // Refused before sending: this request's problem, not the node's or the connection's.
            Ok(Err(ClientError::TooLarge { len, max })) => Err(NodeError::TooLarge { len, max }),
            Ok(Err(ClientError::Encode(e))) => {
                tracing::error!(node = %n.addr, error = %e, "request cannot be encoded");
                Err(NodeError::Unencodable)
            }
            Ok(Err(_closed)) => {
                self.mark_down(n);
                Err(NodeError::Down)
            }
            // Silent only if nothing at all arrived meanwhile: a connection carrying a large value to
            // another call (or to this one) is alive, and dropping it would fail every call on it.
            Err(_elapsed) if conn.bytes_received() != received => Err(NodeError::Timeout),
            Err(_elapsed) => {
                if n.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= TIMEOUTS_BEFORE_RECONNECT {
                    n.timeouts.store(0, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(node = %n.addr, "store node silent; reconnecting");
                    self.mark_down(n);
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
        // Dialling (a TLS handshake included) takes a large future; boxed, it does not make every
        // call's future that large.
        Box::pin(self.connect(n)).await
    }

    async fn connect(&self, n: &Node) -> Result<NodeConnection, NodeError> {
        let _one_at_a_time = n.connecting.lock().await;
        if let Some(c) = lock(&n.conn).as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let tls = self.tls.read().clone();
        // A TLS handshake is a few round trips more than a TCP connect.
        let patience = self.timeout.max(Duration::from_millis(if tls.is_some() { 1000 } else { 200 }));
        match tokio::time::timeout(patience, vesta_tls::dial(&n.addr, tls.as_ref(), self.max_frame)).await {
            Ok(Ok(c)) => {
                *lock(&n.conn) = Some(c.clone());
                *lock(&n.retry) = (Instant::now(), MIN_BACKOFF);
                metrics::gauge!(m::STORE_UP, "node" => n.addr.clone()).set(1.0);
                tracing::info!(node = %n.addr, "connected to store node");
                Ok(c)
            }
            Ok(Err(e @ vesta_tls::DialError::Handshake { .. })) => {
                // Not a node that is down: a certificate problem an operator must hear about.
                tracing::warn!(node = %n.addr, error = %e, "TLS to store node refused");
                self.mark_down(n);
                Err(NodeError::Down)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vesta_proto::{Commit, KeyRef, Record, Reply, RequestId, Status};

    struct Answers;

    impl LocalNode for Answers {
        fn call(&self, _request: Request) -> Pin<Box<dyn Future<Output = Response> + Send + 'static>> {
            Box::pin(async { Response::Reply(Reply::status(Status::Ok)) })
        }
    }

    fn commit(value_len: usize) -> Request {
        Request::Commit(Commit {
            req: RequestId(1),
            target: KeyRef { shard: 0, namespace: Bytes::from_static(b"0"), key: Bytes::from_static(b"k") },
            // Zeroed and never written: the pages are not touched.
            record: Record { value: vec![0u8; value_len].into(), ..Default::default() },
            keep_writer: false,
        })
    }

    /// A node over TCP that answers every request with a 1 MiB copy trickled out over about 300 ms, or
    /// (`answer` false) never answers at all.
    async fn tcp_node(answer: bool) -> String {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        use tokio_util::codec::{Encoder, FramedRead};
        use vesta_proto::frame::{Envelope, FrameCodec};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut frames = FramedRead::new(rd, FrameCodec::<Response, Request>::default());
                    while let Some(Ok(Ok(Envelope { corr, .. }))) = frames.next().await {
                        if !answer {
                            continue;
                        }
                        let copy = Record { value: vec![b'v'; 1 << 20].into(), ..Default::default() };
                        let body = Response::Reply(Reply::with_copy(Status::Ok, Some(copy)));
                        let mut out = bytes::BytesMut::new();
                        FrameCodec::<Response, Request>::default().encode(Envelope { corr, body }, &mut out).unwrap();
                        for chunk in out.chunks(out.len() / 30 + 1) {
                            if wr.write_all(chunk).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Timeouts while the node is sending are not silence: the connection, which every other call to the
    /// node shares, stays up. A node that sends nothing is given up after a few timeouts, as before.
    #[tokio::test]
    async fn a_slow_transfer_is_not_a_silent_node() {
        let pool = NodePool::new(Duration::from_millis(30), &LocalNodes::new());
        let slow = pool.index_of(&tcp_node(true).await);
        for _ in 0..2 * TIMEOUTS_BEFORE_RECONNECT {
            assert_eq!(pool.call(slow, Request::Ping).await.unwrap_err(), NodeError::Timeout);
            assert!(pool.is_up(slow), "dropped the connection of a node that is sending");
        }
        let silent = pool.index_of(&tcp_node(false).await);
        for _ in 0..TIMEOUTS_BEFORE_RECONNECT {
            assert_eq!(pool.call(silent, Request::Ping).await.unwrap_err(), NodeError::Timeout);
        }
        assert!(!pool.is_up(silent), "kept the connection of a silent node");
    }

    /// An in-process node (`vesta dev`) refuses what a node over TCP would: the same limit everywhere.
    #[tokio::test]
    async fn a_request_over_the_frame_limit_is_refused_as_too_large() {
        let mut locals = LocalNodes::new();
        locals.insert("local".to_string(), Arc::new(Answers) as Arc<dyn LocalNode>);
        let pool = NodePool::new(Duration::from_secs(5), &locals);
        let node = pool.index_of("local");
        assert!(pool.call(node, commit(1024)).await.is_ok());
        let big = commit(DEFAULT_MAX_FRAME);
        match pool.fits(&big) {
            Err(NodeError::TooLarge { len, max }) => assert!(len > max && max == DEFAULT_MAX_FRAME),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(pool.call(node, big).await, Err(NodeError::TooLarge { .. })));
        assert!(pool.is_up(node));
        assert!(pool.call(node, commit(1024)).await.is_ok());
    }
}
