//! One multiplexed connection to a store node: many calls in flight, matched to their replies by
//! correlation id. No retries and no timeouts here — those are the coordinator's policy.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::frame::{frame_len, Envelope, FrameCodec, DEFAULT_MAX_FRAME};
use crate::message::{Reply, Request, Response};
use crate::status::Status;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection to store node closed")]
    Closed,
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    /// Refused before sending: the node would close the connection on a frame this long, failing every
    /// call in flight on it. Only this call fails; the connection stays up.
    #[error("request of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge { len: usize, max: usize },
    /// The request cannot be encoded (refused before sending, like `TooLarge`).
    #[error("request cannot be encoded: {0}")]
    Encode(String),
}

/// A cheap-to-clone handle; the connection closes when every handle is dropped.
#[derive(Clone)]
pub struct NodeConnection {
    outbound: mpsc::Sender<(Request, usize, oneshot::Sender<Response>)>,
    max_frame: usize,
    /// Bytes received from the node so far.
    received: Arc<AtomicU64>,
}

/// Whether `request` fits in a frame of at most `max_frame` bytes (what a node's decoder accepts).
pub fn check_frame(request: &Request, max_frame: usize) -> Result<usize, ClientError> {
    let len = frame_len(request).map_err(|e| ClientError::Encode(e.to_string()))?;
    if len > max_frame {
        return Err(ClientError::TooLarge { len, max: max_frame });
    }
    Ok(len)
}

/// Who waits for the reply to one frame: one call, or every call of a batch (in order).
enum Waiter {
    One(oneshot::Sender<Response>),
    Batch(Vec<oneshot::Sender<Response>>),
}

impl Waiter {
    fn answer(self, response: Response) {
        match (self, response) {
            (Waiter::One(call), response) => {
                let _ = call.send(response);
            }
            (Waiter::Batch(calls), Response::Batch(responses)) if responses.len() == calls.len() => {
                for (call, response) in calls.into_iter().zip(responses) {
                    let _ = call.send(response);
                }
            }
            // One answer for the whole batch (refused as such: overloaded, malformed): every call's.
            (Waiter::Batch(calls), response) => {
                for call in calls {
                    let _ = call.send(response.clone());
                }
            }
        }
    }
}

/// Calls being folded into one batch frame.
#[derive(Default)]
struct Batching {
    requests: Vec<Request>,
    calls: Vec<oneshot::Sender<Response>>,
    bytes: usize,
}

/// Framing a batch adds to its requests' own (the envelope, the variant, the length of the list).
const BATCH_OVERHEAD: usize = 64;

impl Batching {
    fn add(&mut self, request: Request, len: usize, call: oneshot::Sender<Response>) {
        self.requests.push(request);
        self.calls.push(call);
        self.bytes += len;
    }

    /// The frame the calls so far make (none, one alone, or a batch), leaving this empty.
    fn frame(&mut self) -> Option<(Request, Waiter)> {
        self.bytes = 0;
        let (mut requests, mut calls) = (std::mem::take(&mut self.requests), std::mem::take(&mut self.calls));
        match requests.len() {
            0 => None,
            1 => Some((requests.remove(0), Waiter::One(calls.remove(0)))),
            _ => Some((Request::Batch(requests), Waiter::Batch(calls))),
        }
    }
}

/// Replies still owed by the node, by correlation id.
type Pending = Arc<std::sync::Mutex<HashMap<u64, Waiter>>>;

/// Most calls the writer folds into one batch frame.
const MAX_BATCH: usize = 256;

impl NodeConnection {
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::from_stream(stream))
    }

    /// A connection to a node whose frame limit is the default (64 MiB).
    pub fn from_stream(stream: TcpStream) -> Self {
        Self::from_stream_with_max_frame(stream, DEFAULT_MAX_FRAME)
    }

    /// A connection whose requests must fit in `max_frame`-byte frames (the node's `max_frame_bytes`).
    pub fn from_stream_with_max_frame(stream: TcpStream, max_frame: usize) -> Self {
        let (rd, wr) = stream.into_split();
        Self::start(rd, wr, max_frame)
    }

    /// A connection over any byte stream — a TLS session (tokio-rustls), say — instead of a bare socket.
    pub fn from_io<S: AsyncRead + AsyncWrite + Send + 'static>(io: S, max_frame: usize) -> Self {
        let (rd, wr) = tokio::io::split(io);
        Self::start(rd, wr, max_frame)
    }

    fn start<R, W>(rd: R, wr: W, max_frame: usize) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(Request, usize, oneshot::Sender<Response>)>(4096);
        let pending: Pending = Arc::default();
        let next = Arc::new(AtomicU64::new(1));
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = closed.clone();
        let received = Arc::new(AtomicU64::new(0));
        let rd = Counting { inner: rd, received: received.clone() };

        let writer_pending = pending.clone();
        let batches = Arc::new(AtomicBool::new(true));
        let writer_batches = batches.clone();
        tokio::spawn(async move {
            let mut sink = FramedWrite::new(wr, FrameCodec::<Request, Response>::new(max_frame));
            let mut queued = Vec::new();
            while let Some(first) = rx.recv().await {
                queued.push(first);
                // Coalesce whatever else is queued into one write — and the key operations among it into
                // one batch frame, which the node handles at once (one engine write for its commits).
                while queued.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => queued.push(item),
                        Err(_) => break,
                    }
                }
                let mut frames = Vec::with_capacity(queued.len());
                // Commits apart from the rest: a batch is answered once all of it is done, and a
                // prepare or read must not wait for the commits' engine write (an fsync, with sync on).
                let (mut commits, mut others) = (Batching::default(), Batching::default());
                for (body, len, reply) in queued.drain(..) {
                    if writer_batches.load(Ordering::Relaxed) && body.batchable() && len <= MAX_BATCHED_BYTES {
                        let batch = if matches!(body, Request::Commit(_)) { &mut commits } else { &mut others };
                        // A batch stays inside the node's frame limit (with room for its own framing).
                        if batch.bytes + len + BATCH_OVERHEAD > max_frame {
                            frames.extend(batch.frame());
                        }
                        batch.add(body, len, reply);
                    } else {
                        frames.push((body, Waiter::One(reply)));
                    }
                }
                frames.extend(others.frame());
                frames.extend(commits.frame());
                for (body, waiter) in frames {
                    let corr = next.fetch_add(1, Ordering::Relaxed);
                    lock(&writer_pending).insert(corr, waiter);
                    if closed.load(Ordering::Acquire) {
                        // The reader is gone: nobody would ever complete this call.
                        lock(&writer_pending).clear();
                        return;
                    }
                    if sink.feed(Envelope { corr, body }).await.is_err() {
                        lock(&writer_pending).clear();
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    lock(&writer_pending).clear();
                    return;
                }
            }
        });

        let reader_batches = batches;
        tokio::spawn(async move {
            let mut stream = FramedRead::new(rd, FrameCodec::<Request, Response>::new(max_frame));
            while let Some(Ok(inbound)) = stream.next().await {
                let (corr, response) = match inbound {
                    Ok(env) => (env.corr, env.body),
                    Err((corr, e)) => (corr, Response::Reply(Reply::error(Status::BadRequest, e.to_string()))),
                };
                let Some(waiter) = lock(&pending).remove(&corr) else { continue };
                if matches!(&waiter, Waiter::Batch(_))
                    && matches!(&response, Response::Reply(r) if r.status == Status::BadRequest)
                {
                    // A node of an older version cannot read a batch: later calls go to it one by one.
                    reader_batches.store(false, Ordering::Relaxed);
                }
                waiter.answer(response);
            }
            // Dropping the senders wakes every caller still waiting with `Closed`.
            reader_closed.store(true, Ordering::Release);
            lock(&pending).clear();
        });

        NodeConnection { outbound: tx, max_frame, received }
    }

    /// Sends one request and waits for its reply. A request too large for one frame is refused
    /// ([`ClientError::TooLarge`]) without touching the connection.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        // Checked here, per call: once a frame is on the wire, the node's only answer to an over-long
        // one is to close the connection that every other call in flight shares.
        let len = check_frame(&request, self.max_frame)?;
        let (tx, rx) = oneshot::channel();
        self.outbound.send((request, len, tx)).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.outbound.is_closed()
    }

    /// The largest frame this connection sends.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes received from the node so far. A call that times out while this grows is slow, not lost:
    /// the node is sending (a large value takes a while), so the connection is alive.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Largest request folded into a batch frame: a large value gains nothing from company, and a batch
/// must stay well inside the frame limit.
pub const MAX_BATCHED_BYTES: usize = 16 * 1024;

/// A read half that counts what it reads.
struct Counting<R> {
    inner: R,
    received: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.received.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        polled
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map half-updated (single insert/remove calls).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
