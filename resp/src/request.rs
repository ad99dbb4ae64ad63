//! Request parsing with Redis's own rules and error texts: multibulk arrays of bulk strings, and inline
//! commands (`PING\r\n`, what `telnet` and `redis-cli` in some modes send).
//!
//! Parsing is hand-written rather than done with a general RESP decoder because what matters here is
//! what Redis *refuses* and how: a request may only be an array of bulk strings, lengths have Redis's
//! limits, and each violation has an exact `Protocol error: …` text after which Redis closes the
//! connection.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// `proto-max-bulk-len`: largest bulk string (512 MB in Redis).
    pub max_bulk_len: usize,
    /// Largest multibulk count Redis accepts (1024 * 1024 for unauthenticated-size sanity).
    pub max_multibulk_len: usize,
    /// Largest inline request (64 KiB in Redis).
    pub max_inline_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_bulk_len: 512 * 1024 * 1024, max_multibulk_len: 1024 * 1024, max_inline_len: 64 * 1024 }
    }
}

/// A protocol violation: Redis replies `-ERR Protocol error: …` and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ParseError(pub String);

fn protocol(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// Parses one request from the front of `buf`. `Ok(None)`: incomplete, read more. An empty inline line
/// yields `Ok(Some(vec![]))`, which callers skip (Redis ignores empty lines).
pub fn parse_request(buf: &mut BytesMut, limits: &RequestLimits) -> Result<Option<Vec<Bytes>>, ParseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'*' {
        parse_multibulk(buf, limits)
    } else {
        parse_inline(buf, limits)
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|p| p + from)
}

/// Parses the integer of a `*N` or `$N` header line; Redis accepts only plain decimal digits (and `-`).
fn parse_len(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse::<i64>().ok()
}

fn parse_multibulk(buf: &mut BytesMut, limits: &RequestLimits) -> Result<Option<Vec<Bytes>>, ParseError> {
    let Some(end) = find_crlf(buf, 1) else {
        if buf.len() > limits.max_inline_len {
            return Err(protocol("too big mbulk count string"));
        }
        return Ok(None);
    };
    let count = match parse_len(&buf[1..end]) {
        Some(n) if n <= limits.max_multibulk_len as i64 => n,
        _ => return Err(protocol("invalid multibulk length")),
    };
    let mut pos = end + 2;
    if count <= 0 {
        buf.advance(pos);
        return Ok(Some(Vec::new()));
    }
    // First pass: find where every argument ends, without consuming, so that a partial request costs
    // nothing but a re-scan when more bytes arrive.
    let mut spans = Vec::with_capacity((count as usize).min(1024));
    for _ in 0..count {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(protocol(format!("expected '$', got '{}'", buf[pos] as char)));
        }
        let Some(line_end) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > limits.max_inline_len {
                return Err(protocol("too big bulk count string"));
            }
            return Ok(None);
        };
        let len = match parse_len(&buf[pos + 1..line_end]) {
            Some(n) if n >= 0 && n as usize <= limits.max_bulk_len => n as usize,
            _ => return Err(protocol("invalid bulk length")),
        };
        let start = line_end + 2;
        if buf.len() < start + len + 2 {
            // Make room for the whole argument at once instead of growing in small steps.
            let need = start + len + 2 - buf.len();
            buf.reserve(need.min(limits.max_bulk_len));
            return Ok(None);
        }
        spans.push((start, len));
        pos = start + len + 2;
    }
    let frame = buf.split_to(pos).freeze();
    Ok(Some(spans.into_iter().map(|(s, l)| frame.slice(s..s + l)).collect()))
}

fn parse_inline(buf: &mut BytesMut, limits: &RequestLimits) -> Result<Option<Vec<Bytes>>, ParseError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_len {
            return Err(protocol("too big inline request"));
        }
        return Ok(None);
    };
    let line = buf.split_to(nl + 1);
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    split_inline(text).map(Some).ok_or_else(|| protocol("unbalanced quotes in request"))
}

/// Splits an inline request like Redis's `sdssplitargs`: whitespace-separated, with "double quotes"
/// (supporting \n \r \t \b \a \\ \" \xHH escapes) and 'single quotes'.
fn split_inline(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut cur = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let c = *line.get(i)?;
                    if c == b'"' {
                        i += 1;
                        break;
                    }
                    if c == b'\\' && i + 1 < line.len() {
                        let e = line[i + 1];
                        if e == b'x' && i + 3 < line.len() {
                            let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok();
                            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                                cur.push(v);
                                i += 4;
                                continue;
                            }
                        }
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        i += 2;
                    } else {
                        cur.push(c);
                        i += 1;
                    }
                }
                // A closing quote must be followed by a space or the end (Redis's rule).
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return None;
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let c = *line.get(i)?;
                    if c == b'\'' {
                        i += 1;
                        break;
                    }
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        cur.push(b'\'');
                        i += 2;
                    } else {
                        cur.push(c);
                        i += 1;
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return None;
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    cur.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(cur));
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<Vec<Bytes>>, ParseError> {
        parse_request(&mut BytesMut::from(input), &RequestLimits::default())
    }

    #[test]
    fn multibulk_whole_and_partial() {
        let full = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(parse(full).unwrap().unwrap(), vec![Bytes::from_static(b"GET"), Bytes::from_static(b"k")]);
        for cut in 1..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut two = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let l = RequestLimits::default();
        assert!(parse_request(&mut two, &l).unwrap().is_some());
        assert!(parse_request(&mut two, &l).unwrap().is_some());
        assert!(two.is_empty());
    }

    #[test]
    fn redis_protocol_errors() {
        assert_eq!(parse(b"*x\r\n").unwrap_err().to_string(), "Protocol error: invalid multibulk length");
        assert_eq!(parse(b"*99999999\r\n").unwrap_err().to_string(), "Protocol error: invalid multibulk length");
        assert_eq!(parse(b"*1\r\n+OK\r\n").unwrap_err().to_string(), "Protocol error: expected '$', got '+'");
        assert_eq!(parse(b"*1\r\n$-5\r\n").unwrap_err().to_string(), "Protocol error: invalid bulk length");
        assert_eq!(parse(b"*1\r\n$999999999999\r\n").unwrap_err().to_string(), "Protocol error: invalid bulk length");
        assert_eq!(parse(b"*0\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn inline_commands() {
        assert_eq!(parse(b"PING\r\n").unwrap().unwrap(), vec![Bytes::from_static(b"PING")]);
        assert_eq!(
            parse(b"set k \"a b\\x41\\n\" 'it\\'s'\n").unwrap().unwrap(),
            vec![
                Bytes::from_static(b"set"),
                Bytes::from_static(b"k"),
                Bytes::from_static(b"a bA\n"),
                Bytes::from_static(b"it's")
            ]
        );
        assert_eq!(parse(b"\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
        assert_eq!(parse(b"set k \"abc\n").unwrap_err().to_string(), "Protocol error: unbalanced quotes in request");
        assert_eq!(parse(b"PING").unwrap(), None);
    }
}
