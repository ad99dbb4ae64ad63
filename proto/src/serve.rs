//! A node's side of one connection (a store node, a proxy's replication listener): requests come in as
//! frames; replies go out as they are ready — in any order, matched by correlation id — and whatever
//! replies are ready together leave in one write.

use futures::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::frame::{Envelope, FrameCodec};
use crate::message::{Request, Response};

/// The requests of a connection.
pub type Frames<R = OwnedReadHalf> = FramedRead<R, FrameCodec<Response, Request>>;
/// Where replies are sent; any task may hold a clone.
pub type Replies = mpsc::UnboundedSender<Envelope<Response>>;

/// The task writing a connection's replies.
pub struct Writer(JoinHandle<std::io::Result<()>>);

/// Splits an accepted connection into its requests, a sender of replies, and the task writing them.
pub fn split(stream: TcpStream, max_frame: usize) -> (Frames, Replies, Writer) {
    let (rd, wr) = stream.into_split();
    split_halves(rd, wr, max_frame)
}

/// [`split`] for any byte stream — a TLS session (tokio-rustls), say — instead of a bare socket.
pub fn split_io<S: AsyncRead + AsyncWrite + Send + 'static>(
    io: S,
    max_frame: usize,
) -> (Frames<ReadHalf<S>>, Replies, Writer) {
    let (rd, wr) = tokio::io::split(io);
    split_halves(rd, wr, max_frame)
}

fn split_halves<R: AsyncRead, W: AsyncWrite + Unpin + Send + 'static>(
    rd: R,
    wr: W,
    max_frame: usize,
) -> (Frames<R>, Replies, Writer) {
    let frames = FramedRead::new(rd, FrameCodec::<Response, Request>::new(max_frame));
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope<Response>>();
    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(wr, FrameCodec::<Response, Request>::new(max_frame));
        while let Some(env) = rx.recv().await {
            sink.feed(env).await?;
            // Whatever else is ready goes out in the same write.
            while let Ok(env) = rx.try_recv() {
                sink.feed(env).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    (frames, tx, Writer(writer))
}

impl Writer {
    /// Lets the replies to requests still running go out (every clone of `replies` dropped), then ends.
    pub async fn finish(self, replies: Replies) -> std::io::Result<()> {
        drop(replies);
        self.0.await.map_err(std::io::Error::other)?
    }
}
