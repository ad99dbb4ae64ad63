//! Replies, encoded for the connection's protocol (RESP2 or RESP3) with the `redis-protocol` crate.

use bytes::{Bytes, BytesMut};
use redis_protocol::bytes_utils::Str;
use redis_protocol::resp2::types::BytesFrame as Frame2;
use redis_protocol::resp3::types::{BytesFrame as Frame3, FrameMap, VerbatimStringFormat};

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+text`
    Status(&'static str),
    /// `-TEXT…`: the whole line after `-`, e.g. `ERR syntax error`.
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// A missing array (EXEC when a WATCHed key changed): `*-1` in RESP2, `_` in RESP3.
    NilArray,
    Array(Vec<Reply>),
    /// A set in RESP3 (`COMMAND` flags); an array in RESP2.
    Set(Vec<Reply>),
    /// A map in RESP3; a flat key, value, … array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Nothing at all: the reply of a command run under CLIENT REPLY OFF or SKIP.
    NoReply,
    /// Text meant for humans (`INFO`, `CLIENT INFO`): verbatim `txt` in RESP3, a bulk string in RESP2.
    Verbatim(String),
}

impl Reply {
    pub const OK: Reply = Reply::Status("OK");

    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    pub fn text(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoded reply to `out`.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        // Encoding a well-formed frame into a growable buffer cannot fail.
        if *self == Reply::NoReply {
            return;
        }
        if *self == Reply::NilArray && !resp3 {
            out.extend_from_slice(b"*-1\r\n");
        } else if resp3 {
            let _ = redis_protocol::resp3::encode::complete::extend_encode(out, &self.frame3(), false);
        } else {
            let _ = redis_protocol::resp2::encode::extend_encode(out, &self.frame2(), false);
        }
    }

    fn frame2(&self) -> Frame2 {
        match self {
            Reply::Status(s) => Frame2::SimpleString(Bytes::from_static(s.as_bytes())),
            Reply::Error(e) => Frame2::Error(Str::from(e.as_str())),
            Reply::Int(i) => Frame2::Integer(*i),
            Reply::Bulk(b) => Frame2::BulkString(b.clone()),
            Reply::Nil | Reply::NilArray | Reply::NoReply => Frame2::Null,
            Reply::Array(items) | Reply::Set(items) => Frame2::Array(items.iter().map(Reply::frame2).collect()),
            Reply::Map(pairs) => Frame2::Array(pairs.iter().flat_map(|(k, v)| [k.frame2(), v.frame2()]).collect()),
            Reply::Verbatim(s) => Frame2::BulkString(Bytes::copy_from_slice(s.as_bytes())),
        }
    }

    fn frame3(&self) -> Frame3 {
        match self {
            Reply::Status(s) => Frame3::SimpleString { data: Bytes::from_static(s.as_bytes()), attributes: None },
            Reply::Error(e) => Frame3::SimpleError { data: Str::from(e.as_str()), attributes: None },
            Reply::Int(i) => Frame3::Number { data: *i, attributes: None },
            Reply::Bulk(b) => Frame3::BlobString { data: b.clone(), attributes: None },
            Reply::Nil | Reply::NilArray | Reply::NoReply => Frame3::Null,
            Reply::Array(items) => Frame3::Array { data: items.iter().map(Reply::frame3).collect(), attributes: None },
            Reply::Set(items) => Frame3::Set { data: items.iter().map(Reply::frame3).collect(), attributes: None },
            Reply::Map(pairs) => {
                let mut map = FrameMap::with_capacity(pairs.len());
                for (k, v) in pairs {
                    map.insert(k.frame3(), v.frame3());
                }
                Frame3::Map { data: map, attributes: None }
            }
            Reply::Verbatim(s) => Frame3::VerbatimString {
                data: Bytes::copy_from_slice(s.as_bytes()),
                format: VerbatimStringFormat::Text,
                attributes: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, resp3: bool) -> String {
        let mut b = BytesMut::new();
        r.encode(resp3, &mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn encodes_like_redis() {
        assert_eq!(enc(&Reply::OK, false), "+OK\r\n");
        assert_eq!(enc(&Reply::error("ERR syntax error"), false), "-ERR syntax error\r\n");
        assert_eq!(enc(&Reply::Nil, false), "$-1\r\n");
        assert_eq!(enc(&Reply::Nil, true), "_\r\n");
        assert_eq!(enc(&Reply::NilArray, false), "*-1\r\n");
        assert_eq!(enc(&Reply::NilArray, true), "_\r\n");
        assert_eq!(enc(&Reply::Int(-3), true), ":-3\r\n");
        let m = Reply::Map(vec![(Reply::text("a"), Reply::Int(1)), (Reply::text("b"), Reply::Int(2))]);
        assert_eq!(enc(&m, false), "*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n");
        assert_eq!(enc(&m, true), "%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n");
        assert_eq!(enc(&Reply::Verbatim("x".into()), true), "=5\r\ntxt:x\r\n");
    }
}
