//! Just enough RESP for the load generators: commands encoded as arrays of bulk strings, and replies
//! parsed from a read buffer into what a benchmark needs to know of them.

use bytes::{Buf, BytesMut};

/// One reply, reduced to what the benchmarks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+…`, a bulk string, nil, or an aggregate (array, map, set, …).
    Ok,
    Integer(i64),
    /// A bulk string's bytes (only kept when asked for with [`parse`]'s `keep_bulk`).
    Bulk(Vec<u8>),
    Nil,
    /// `-PREFIX rest`: the whole message without the `-`.
    Error(String),
}

impl Reply {
    /// The first word of an error reply (`TRYAGAIN`, `ERR`, …).
    pub fn error_prefix(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e.split_whitespace().next().unwrap_or("")),
            _ => None,
        }
    }
}

/// Appends `args` as one RESP command.
pub fn encode(out: &mut BytesMut, args: &[&[u8]]) {
    use std::io::Write;
    let mut w = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    let _ = write!(w, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(w, "${}\r\n", a.len());
        w.extend_from_slice(a);
        w.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&w);
}

/// A reply that is not RESP.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Takes one whole reply off the front of `buf`; `Ok(None)` when more bytes are needed (nothing is
/// consumed then). `keep_bulk`: keep bulk strings' bytes (`Reply::Bulk`), else they are `Reply::Ok`.
pub fn parse(buf: &mut BytesMut, keep_bulk: bool) -> Result<Option<Reply>, ProtocolError> {
    match scan(buf, 0, keep_bulk)? {
        Some((reply, used)) => {
            buf.advance(used);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

/// The line starting at `at` (without CRLF) and where the next one starts.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError(format!("bad number {:?}", String::from_utf8_lossy(text))))
}

fn scan(buf: &[u8], at: usize, keep_bulk: bool) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some((head, next)) = line(buf, at) else { return Ok(None) };
    let Some((&kind, text)) = head.split_first() else {
        return Err(ProtocolError("empty line".into()));
    };
    match kind {
        b'+' => Ok(Some((Reply::Ok, next))),
        b'-' => Ok(Some((Reply::Error(String::from_utf8_lossy(text).into_owned()), next))),
        b':' => Ok(Some((Reply::Integer(number(text)?), next))),
        b'_' => Ok(Some((Reply::Nil, next))),
        b'#' | b',' | b'(' => Ok(Some((Reply::Ok, next))),
        b'$' | b'!' | b'=' => {
            let len = number(text)?;
            if len < 0 {
                return Ok(Some((Reply::Nil, next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string without CRLF".into()));
            }
            let reply = if kind == b'!' {
                Reply::Error(String::from_utf8_lossy(&buf[next..end]).into_owned())
            } else if keep_bulk {
                Reply::Bulk(buf[next..end].to_vec())
            } else {
                Reply::Ok
            };
            Ok(Some((reply, end + 2)))
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let n = number(text)?;
            if n < 0 {
                return Ok(Some((Reply::Nil, next)));
            }
            let items = if kind == b'%' || kind == b'|' { n * 2 } else { n };
            let mut at = next;
            for _ in 0..items {
                match scan(buf, at, false)? {
                    Some((_, after)) => at = after,
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Ok, at)))
        }
        other => Err(ProtocolError(format!("unknown reply type {:?}", other as char))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Reply> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = parse(&mut buf, true).unwrap() {
            out.push(r);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn encodes_commands() {
        let mut b = BytesMut::new();
        encode(&mut b, &[b"SET", b"k", b"v1"]);
        assert_eq!(&b[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n");
    }

    #[test]
    fn parses_each_kind() {
        let replies = all(b"+OK\r\n:42\r\n:-7\r\n$3\r\nabc\r\n$-1\r\n-TRYAGAIN proxy overloaded\r\n*2\r\n$1\r\na\r\n:1\r\n*-1\r\n_\r\n%1\r\n+k\r\n+v\r\n");
        assert_eq!(
            replies,
            vec![
                Reply::Ok,
                Reply::Integer(42),
                Reply::Integer(-7),
                Reply::Bulk(b"abc".to_vec()),
                Reply::Nil,
                Reply::Error("TRYAGAIN proxy overloaded".into()),
                Reply::Ok,
                Reply::Nil,
                Reply::Nil,
                Reply::Ok,
            ]
        );
        assert_eq!(replies[5].error_prefix(), Some("TRYAGAIN"));
        assert_eq!(replies[1].error_prefix(), None);
    }

    #[test]
    fn waits_for_whole_replies() {
        let whole = b"*2\r\n$5\r\nhello\r\n:3\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buf, false).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
        let mut buf = BytesMut::from(&whole[..]);
        assert_eq!(parse(&mut buf, false).unwrap(), Some(Reply::Ok));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(&mut BytesMut::from(&b"?x\r\n"[..]), false).is_err());
        assert!(parse(&mut BytesMut::from(&b":x\r\n"[..]), false).is_err());
        assert!(parse(&mut BytesMut::from(&b"$1\r\nab\r\n"[..]), false).is_err());
    }
}
