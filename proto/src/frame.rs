//! Framing: `[len u32][protocol version u8][correlation id u64][postcard message]`, all big-endian.
//!
//! The correlation id sits outside the message so that a node can still answer a frame whose message it
//! cannot decode (a newer protocol version, a corrupt body) with `BadRequest` under the right id instead
//! of dropping the connection and every other request in flight on it.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The protocol version this build speaks. Bump on any incompatible change to [`crate::message`].
pub const PROTOCOL_VERSION: u8 = 3;

/// Default cap on one frame. Redis allows 512 MB values; the internal protocol needs the value plus a
/// small header, and a cap keeps one bad length prefix from reserving unbounded memory.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

const PREFIX_LEN: usize = 4;
const FRAME_HEADER_LEN: usize = 1 + 8;

/// One message with its correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<T> {
    pub corr: u64,
    pub body: T,
}

/// A frame that arrived whole but whose message could not be used; the connection stays usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    Version(u8),
    #[error("undecodable message: {0}")]
    Body(String),
}

/// What the decoder yields per frame: the message, or the correlation id (0 if even that was missing)
/// with the reason it could not be decoded.
pub type Inbound<T> = Result<Envelope<T>, (u64, FrameError)>;

/// Codec that encodes `E` and decodes `D`: a node encodes responses and decodes requests, a client the
/// other way round.
pub struct FrameCodec<E, D> {
    inner: LengthDelimitedCodec,
    _types: PhantomData<fn(E) -> D>,
}

impl<E, D> FrameCodec<E, D> {
    pub fn new(max_frame: usize) -> Self {
        let inner =
            LengthDelimitedCodec::builder().length_field_length(PREFIX_LEN).max_frame_length(max_frame).new_codec();
        FrameCodec { inner, _types: PhantomData }
    }
}

impl<E, D> Default for FrameCodec<E, D> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

/// The value of `body`'s length prefix (protocol version, correlation id and message): what the peer's
/// decoder compares with its `max_frame`. Computed without encoding.
pub fn frame_len<T: Serialize + ?Sized>(body: &T) -> Result<usize, postcard::Error> {
    Ok(FRAME_HEADER_LEN + postcard::experimental::serialized_size(body)?)
}

/// Decodes one frame body (everything after the length prefix).
pub fn decode_body<D: DeserializeOwned>(mut frame: &[u8]) -> Inbound<D> {
    if frame.len() < FRAME_HEADER_LEN {
        return Err((0, FrameError::Short(frame.len())));
    }
    let version = frame.get_u8();
    let corr = frame.get_u64();
    if version != PROTOCOL_VERSION {
        return Err((corr, FrameError::Version(version)));
    }
    match postcard::from_bytes::<D>(frame) {
        Ok(body) => Ok(Envelope { corr, body }),
        Err(e) => Err((corr, FrameError::Body(e.to_string()))),
    }
}

impl<E, D: DeserializeOwned> Decoder for FrameCodec<E, D> {
    type Item = Inbound<D>;
    /// Only framing failures (I/O, an over-long length prefix) are errors; they end the connection.
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        Ok(self.inner.decode(src)?.map(|frame| decode_body(&frame)))
    }
}

impl<E: Serialize, D> Encoder<Envelope<E>> for FrameCodec<E, D> {
    type Error = std::io::Error;

    fn encode(&mut self, item: Envelope<E>, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let start = dst.len();
        dst.put_u32(0); // patched below, once the body's length is known
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u64(item.corr);
        postcard::to_io(&item.body, dst.writer())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let len = dst.len() - start - PREFIX_LEN;
        let len = u32::try_from(len).map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
        dst[start..start + PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, Response};

    #[test]
    fn wrong_version_keeps_correlation_id() {
        let mut codec: FrameCodec<Request, Request> = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(Envelope { corr: 42, body: Request::Ping }, &mut buf).unwrap();
        buf[4] = 99;
        let got = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, Err((42, FrameError::Version(99))));
    }

    #[test]
    fn frame_len_is_the_encoded_length_prefix() {
        let mut codec: FrameCodec<Request, Request> = FrameCodec::default();
        let commit = Request::Commit(crate::message::Commit {
            req: crate::RequestId(u128::MAX),
            target: crate::KeyRef { shard: 7, namespace: bytes::Bytes::from_static(b"0"), key: vec![1; 200].into() },
            record: crate::Record { value: vec![7; 70_000].into(), ..Default::default() },
            keep_writer: false,
        });
        for body in [Request::Ping, Request::Inventory, commit] {
            let mut buf = BytesMut::new();
            codec.encode(Envelope { corr: u64::MAX, body: body.clone() }, &mut buf).unwrap();
            let prefix = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            assert_eq!(frame_len(&body).unwrap(), prefix);
            assert_eq!(buf.len(), PREFIX_LEN + prefix);
        }
    }

    #[test]
    fn over_long_length_prefix_is_a_connection_error() {
        let mut codec: FrameCodec<Response, Request> = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0u8, 1, 0, 0, 0][..]);
        assert!(codec.decode(&mut buf).is_err());
    }
}
