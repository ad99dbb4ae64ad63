//! A Redis client that does nothing behind the recorder's back: one connection, commands written as
//! they are given, replies read in order, no retries and no reconnection of its own. (Client libraries
//! resend a command after a connection error — redis-py 6 does by default — and a resent write is a
//! second write, which a linearizability checker would rightly flag.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("unreadable reply: {0}")]
    Protocol(String),
}

/// A reply, as the recorder classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Error(String),
}

pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        stream.set_nodelay(true)?;
        Ok(Client { stream, buf: BytesMut::with_capacity(4096) })
    }

    /// Writes commands (one or a pipeline) without reading anything.
    pub async fn send(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<(), ClientError> {
        let mut out = Vec::new();
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Reads the next reply.
    pub async fn read(&mut self, timeout: Duration) -> Result<Reply, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    let _ = self.buf.split_to(used);
                    return classify(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| ClientError::Timeout(timeout))??;
            if read == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}

fn classify(frame: OwnedFrame) -> Result<Reply, ClientError> {
    Ok(match frame {
        OwnedFrame::SimpleString(s) if s == b"OK" => Reply::Ok,
        OwnedFrame::SimpleString(s) => Reply::Bulk(s),
        OwnedFrame::Error(e) => Reply::Error(e),
        OwnedFrame::Integer(n) => Reply::Int(n),
        OwnedFrame::BulkString(b) => Reply::Bulk(b),
        OwnedFrame::Null => Reply::Nil,
        OwnedFrame::Array(_) => return Err(ClientError::Protocol("an array where a single reply was expected".into())),
    })
}
