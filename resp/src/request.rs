//! Request parsing with Redis's own rules and error texts: multibulk arrays of bulk strings, and inline
//! commands (`PING\r\n`, what `telnet` and `redis-cli` in some modes send).
//!
//! Parsing is hand-written rather than done with a general RESP decoder because what matters here is
//! what Redis *refuses* and how: a request may only be an array of bulk strings, lengths are Redis's
//! `string2ll` integers within Redis's limits, and each violation has an exact `Protocol error: …` text
//! after which Redis closes the connection. Well-formed requests decode exactly as the `redis-protocol`
//! crate decodes them (the fuzz target `resp_request` checks both).
//!
//! Memory follows the bytes that arrived, never the lengths a client declares: a `$33554000` header
//! followed by nothing costs a few bytes of state, not 32 MB (see [`RESERVE_CHUNK`]).

use bytes::{Bytes, BytesMut};

/// Vesta's default `proto-max-bulk-len` (Redis: 512 MB). The proxy's `proto_max_bulk_len`.
pub const DEFAULT_MAX_BULK_LEN: usize = 32 * 1024 * 1024;

/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline request, and the longest `*N` / `$N` line.
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// The most the parser reserves at once for an argument that is still arriving. Reserving only what is
/// missing would let a client make the proxy allocate its declared length before sending it; reserving
/// nothing would leave the next socket read only the buffer's spare room. Beyond this, the buffer grows
/// (geometrically, by `BytesMut`) as bytes arrive.
pub const RESERVE_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// `proto-max-bulk-len`: the largest bulk string.
    pub max_bulk_len: usize,
    /// The largest multibulk count (Redis: `INT_MAX`; Vesta: 1024 * 1024).
    pub max_multibulk_len: usize,
    /// The largest inline request, and the longest unterminated `*N` / `$N` line (64 KiB in Redis).
    pub max_inline_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: MAX_INLINE_LEN,
        }
    }
}

/// A protocol violation: Redis replies `-ERR Protocol error: …` and closes the connection. The texts
/// are Redis's; the variants tell apart what Redis words alike (an over-long bulk is an "invalid bulk
/// length" to the client, but the proxy counts it separately).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A well-formed length above `proto-max-bulk-len`.
    #[error("Protocol error: invalid bulk length")]
    BulkTooLong { len: u64, max: usize },
    /// Something other than `$` where an argument's header should start.
    #[error("Protocol error: expected '$', got '{}'", shown_byte(*.0))]
    ExpectedBulk(u8),
    #[error("Protocol error: too big mbulk count string")]
    MultibulkCountTooLong,
    #[error("Protocol error: too big bulk count string")]
    BulkCountTooLong,
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

impl ParseError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::InvalidMultibulkLength => "invalid_multibulk_length",
            ParseError::InvalidBulkLength => "invalid_bulk_length",
            ParseError::BulkTooLong { .. } => "bulk_too_long",
            ParseError::ExpectedBulk(_) => "expected_bulk",
            ParseError::MultibulkCountTooLong => "multibulk_count_too_long",
            ParseError::BulkCountTooLong => "bulk_count_too_long",
            ParseError::InlineTooLong => "inline_too_long",
            ParseError::UnbalancedQuotes => "unbalanced_quotes",
        }
    }
}

/// The byte Redis shows in "expected '$', got 'x'": its error replies turn CR and LF into spaces (a line
/// break would end the reply early).
fn shown_byte(b: u8) -> char {
    match b {
        b'\r' | b'\n' => ' ',
        other => char::from(other),
    }
}

/// Parses the requests of one connection, remembering how far it got into a request that has not fully
/// arrived: each call looks only at the new bytes, so a request of a million small arguments (or a long
/// header line) arriving over many reads is scanned once, not once per read.
///
/// Feed it one connection's input buffer, only ever appended to between calls; a parsed request is
/// split off the front. After an error the connection must be closed (the parser starts afresh).
#[derive(Debug, Default)]
pub struct RequestParser {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    /// At the start of a request.
    #[default]
    Idle,
    /// An inline request whose `\n` has not arrived; bytes before `scanned` hold none.
    Inline {
        scanned: usize,
    },
    Multibulk(Multibulk),
}

#[derive(Debug)]
struct Multibulk {
    /// The declared argument count, once the `*N` line is complete.
    count: Option<usize>,
    /// Where each complete argument lies in the buffer: (start, length).
    spans: Vec<(usize, usize)>,
    /// Where the next `$N` line starts or, once `bulk` is known, the argument's data.
    pos: usize,
    /// The length of the argument whose data starts at `pos`.
    bulk: Option<usize>,
    /// Bytes before this hold no CRLF ending the header line being read (`*N`, or `$N` at `pos`).
    scanned: usize,
}

/// Parses one request from the front of `buf` with no memory of earlier calls (a partial request is
/// scanned again from its start on every call). `Ok(None)`: incomplete, read more. An empty request
/// (an empty inline line, `*0`, `*-1`) yields `Ok(Some(vec![]))`, which callers skip, as Redis does.
pub fn parse_request(buf: &mut BytesMut, limits: &RequestLimits) -> Result<Option<Vec<Bytes>>, ParseError> {
    RequestParser::default().parse(buf, limits)
}

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one request from the front of `buf`, continuing where the previous call stopped.
    /// `Ok(None)`: incomplete, read more. An empty request yields `Ok(Some(vec![]))` (callers skip it).
    pub fn parse(&mut self, buf: &mut BytesMut, limits: &RequestLimits) -> Result<Option<Vec<Bytes>>, ParseError> {
        let state = std::mem::take(&mut self.state);
        let result = match state {
            State::Inline { scanned } if scanned <= buf.len() => parse_inline(buf, limits, scanned),
            State::Multibulk(m) if m.scanned.max(m.pos) <= buf.len() => parse_multibulk(buf, limits, m),
            // Idle, or a buffer that is not the one the state describes: start from its front.
            _ => match buf.first() {
                None => Ok(Step::Incomplete(State::Idle)),
                Some(b'*') => parse_multibulk(
                    buf,
                    limits,
                    Multibulk { count: None, spans: Vec::new(), pos: 0, bulk: None, scanned: 1 },
                ),
                Some(_) => parse_inline(buf, limits, 0),
            },
        };
        match result? {
            Step::Incomplete(state) => {
                self.state = state;
                Ok(None)
            }
            Step::Done(args) => Ok(Some(args)),
        }
    }
}

enum Step {
    Incomplete(State),
    Done(Vec<Bytes>),
}

/// The first CRLF at or after `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|p| p + from)
}

/// Redis's `string2ll`: an optional `-`, then digits without a leading zero (but `0` itself), within
/// `i64`. No `+`, no spaces, no `-0`.
fn string2ll(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == b.len(),
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical || b.len() > 20 {
        return None;
    }
    // Canonical ASCII digits: only the range can still fail.
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Makes room for part of an argument that is `missing` bytes short: at most [`RESERVE_CHUNK`].
fn reserve_some(buf: &mut BytesMut, missing: usize) {
    let want = missing.min(RESERVE_CHUNK);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

fn parse_multibulk(buf: &mut BytesMut, limits: &RequestLimits, mut m: Multibulk) -> Result<Step, ParseError> {
    let count = match m.count {
        Some(count) => count,
        None => {
            let Some(end) = find_crlf(buf, m.scanned) else {
                if buf.len() > limits.max_inline_len {
                    return Err(ParseError::MultibulkCountTooLong);
                }
                // The last byte may be the CR of a CRLF still on its way.
                m.scanned = buf.len().saturating_sub(1).max(1);
                return Ok(Step::Incomplete(State::Multibulk(m)));
            };
            let count = match string2ll(&buf[1..end]) {
                Some(n) if n <= limits.max_multibulk_len as i64 => n,
                _ => return Err(ParseError::InvalidMultibulkLength),
            };
            if count <= 0 {
                // Redis skips `*0` and negative counts (`*-1`) as empty requests.
                let _ = buf.split_to(end + 2);
                return Ok(Step::Done(Vec::new()));
            }
            m.pos = end + 2;
            m.scanned = m.pos;
            m.spans = Vec::with_capacity((count as usize).min(1024));
            m.count = Some(count as usize);
            count as usize
        }
    };
    while m.spans.len() < count {
        let len = match m.bulk {
            Some(len) => len,
            None => {
                let Some(end) = find_crlf(buf, m.scanned) else {
                    if buf.len() - m.pos > limits.max_inline_len {
                        return Err(ParseError::BulkCountTooLong);
                    }
                    m.scanned = buf.len().saturating_sub(1).max(m.pos);
                    return Ok(Step::Incomplete(State::Multibulk(m)));
                };
                // Redis looks at the header's first byte only once the whole line is there.
                if buf[m.pos] != b'$' {
                    return Err(ParseError::ExpectedBulk(buf[m.pos]));
                }
                let len = match string2ll(&buf[m.pos + 1..end]) {
                    None => return Err(ParseError::InvalidBulkLength),
                    Some(n) if n < 0 => return Err(ParseError::InvalidBulkLength),
                    Some(n) if n as u64 > limits.max_bulk_len as u64 => {
                        return Err(ParseError::BulkTooLong { len: n as u64, max: limits.max_bulk_len })
                    }
                    Some(n) => n as usize,
                };
                m.pos = end + 2;
                m.bulk = Some(len);
                len
            }
        };
        // The data and the two bytes after it, which Redis (and redis-protocol) skip without looking.
        let end = m.pos.saturating_add(len).saturating_add(2);
        if buf.len() < end {
            reserve_some(buf, end - buf.len());
            return Ok(Step::Incomplete(State::Multibulk(m)));
        }
        m.spans.push((m.pos, len));
        m.pos = end;
        m.scanned = end;
        m.bulk = None;
    }
    let frame = buf.split_to(m.pos).freeze();
    Ok(Step::Done(m.spans.into_iter().map(|(start, len)| frame.slice(start..start + len)).collect()))
}

fn parse_inline(buf: &mut BytesMut, limits: &RequestLimits, scanned: usize) -> Result<Step, ParseError> {
    let Some(nl) = buf[scanned..].iter().position(|&b| b == b'\n').map(|p| p + scanned) else {
        if buf.len() > limits.max_inline_len {
            return Err(ParseError::InlineTooLong);
        }
        return Ok(Step::Incomplete(State::Inline { scanned: buf.len() }));
    };
    let line = buf.split_to(nl + 1);
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    split_inline(text).map(Step::Done).ok_or(ParseError::UnbalancedQuotes)
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
    use proptest::prelude::*;

    fn parse(input: &[u8]) -> Result<Option<Vec<Bytes>>, ParseError> {
        parse_request(&mut BytesMut::from(input), &RequestLimits::default())
    }

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
    }

    fn encode(list: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", list.len()).into_bytes();
        for a in list {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn multibulk_whole_and_partial() {
        let full = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(parse(full).unwrap().unwrap(), args(&["GET", "k"]));
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
        let err = |input: &[u8]| parse(input).unwrap_err().to_string();
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*99999999\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*1\r\n+OK\r\n"), "Protocol error: expected '$', got '+'");
        assert_eq!(err(b"*1\r\n\r\r\n"), "Protocol error: expected '$', got ' '");
        assert_eq!(err(b"*1\r\n\r\n"), "Protocol error: expected '$', got ' '");
        assert_eq!(err(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$999999999999\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(parse(b"*0\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
        assert_eq!(parse(b"*-1\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
    }

    /// Lengths are Redis's `string2ll` integers (checked against redis-server 7.0.15).
    #[test]
    fn lengths_are_canonical_integers() {
        for count in ["01", "+1", "-0", " 1", "1 ", "00"] {
            let input = format!("*{count}\r\n$4\r\nPING\r\n");
            assert_eq!(parse(input.as_bytes()), Err(ParseError::InvalidMultibulkLength), "*{count}");
        }
        for len in ["04", "+4", "-0", " 4", "4 ", ""] {
            let input = format!("*1\r\n${len}\r\nPING\r\n");
            assert_eq!(parse(input.as_bytes()), Err(ParseError::InvalidBulkLength), "${len}");
        }
        assert_eq!(parse(b"*-2147483649\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
        assert_eq!(parse(b"*1\r\n$0\r\n\r\n").unwrap().unwrap(), vec![Bytes::new()]);
        // Like Redis, the two bytes after an argument's data are skipped unchecked.
        assert_eq!(parse(b"*1\r\n$4\r\nPINGxx").unwrap().unwrap(), args(&["PING"]));
    }

    #[test]
    fn a_header_line_is_judged_once_complete() {
        // Redis waits for the whole `$…` line before it looks at its first byte.
        assert_eq!(parse(b"*1\r\n+OK"), Ok(None));
        let mut long = b"*1\r\nX".to_vec();
        long.resize(4 + MAX_INLINE_LEN + 2, b'x');
        assert_eq!(parse(&long), Err(ParseError::BulkCountTooLong));
        let mut count = b"*1".to_vec();
        count.resize(MAX_INLINE_LEN + 2, b'1');
        assert_eq!(parse(&count), Err(ParseError::MultibulkCountTooLong));
    }

    #[test]
    fn bulk_length_limit_is_proto_max_bulk_len() {
        let limits = RequestLimits { max_bulk_len: 1024 * 1024, ..RequestLimits::default() };
        let at = format!("*2\r\n$3\r\nGET\r\n${}\r\n", 1024 * 1024);
        assert_eq!(parse_request(&mut BytesMut::from(at.as_bytes()), &limits), Ok(None));
        let over = format!("*2\r\n$3\r\nGET\r\n${}\r\n", 1024 * 1024 + 1);
        let e = parse_request(&mut BytesMut::from(over.as_bytes()), &limits).unwrap_err();
        assert_eq!(e, ParseError::BulkTooLong { len: 1024 * 1024 + 1, max: 1024 * 1024 });
        assert_eq!(e.to_string(), "Protocol error: invalid bulk length");
        // Exactly at the limit, whole: accepted.
        let mut whole = BytesMut::from(at.as_bytes());
        whole.extend_from_slice(&vec![b'v'; 1024 * 1024]);
        whole.extend_from_slice(b"\r\n");
        let got = parse_request(&mut whole, &limits).unwrap().unwrap();
        assert_eq!(got[1].len(), 1024 * 1024);
        assert!(whole.is_empty());
    }

    /// A declared length costs nothing until its bytes arrive: the old parser reserved all of it.
    #[test]
    fn a_declared_huge_bulk_reserves_only_a_chunk() {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$33554000\r\nabc");
        let mut parser = RequestParser::new();
        let limits = RequestLimits::default();
        assert_eq!(parser.parse(&mut buf, &limits), Ok(None));
        assert!(buf.capacity() <= 16 * 1024 + RESERVE_CHUNK, "capacity {}", buf.capacity());
        // More bytes arriving grow the buffer with them, not with the declared length.
        for _ in 0..64 {
            buf.extend_from_slice(&[b'v'; 4096]);
            assert_eq!(parser.parse(&mut buf, &limits), Ok(None));
            // BytesMut grows geometrically: at most twice what it holds, plus one chunk each way.
            assert!(buf.capacity() <= 2 * (buf.len() + RESERVE_CHUNK), "capacity {} for {}", buf.capacity(), buf.len());
        }
        // The stateless entry point behaves the same.
        let mut fresh = BytesMut::from(&b"*1\r\n$536870000\r\n"[..]);
        let limits = RequestLimits { max_bulk_len: 512 * 1024 * 1024, ..limits };
        assert_eq!(parse_request(&mut fresh, &limits), Ok(None));
        assert!(fresh.capacity() <= 64 + RESERVE_CHUNK, "capacity {}", fresh.capacity());
    }

    #[test]
    fn incremental_parse_resumes_and_splits_requests() {
        let mut input = encode(&[b"SET", b"key", &[7u8; 100_000]]);
        input.extend_from_slice(b"PING\r\n");
        input.extend_from_slice(&encode(&[b"GET", b"key"]));
        let limits = RequestLimits::default();
        for step in [1, 2, 3, 7, 1000, 65_536] {
            let mut parser = RequestParser::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in input.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(request) = parser.parse(&mut buf, &limits).unwrap() {
                    got.push(request);
                }
            }
            assert!(buf.is_empty(), "step {step}");
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(got[0][2].len(), 100_000);
            assert_eq!(got[1], args(&["PING"]));
            assert_eq!(got[2], args(&["GET", "key"]));
        }
    }

    /// Many small arguments over many small reads (the case resuming is for: without it, every read
    /// would rescan every argument so far).
    #[test]
    fn many_small_arguments_over_many_reads() {
        let items: Vec<&[u8]> = vec![b"k"; 100_000];
        let input = encode(&items);
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let limits = RequestLimits::default();
        let mut done = None;
        for piece in input.chunks(64) {
            buf.extend_from_slice(piece);
            if let Some(request) = parser.parse(&mut buf, &limits).unwrap() {
                done = Some(request);
            }
        }
        assert_eq!(done.map(|r| r.len()), Some(100_000));
        match parser.state {
            State::Idle => {}
            other => panic!("parser left in {other:?}"),
        }
    }

    #[test]
    fn inline_commands() {
        assert_eq!(parse(b"PING\r\n").unwrap().unwrap(), args(&["PING"]));
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
        let long = vec![b'a'; MAX_INLINE_LEN + 1];
        assert_eq!(parse(&long), Err(ParseError::InlineTooLong));
    }

    #[test]
    fn a_parser_handed_another_buffer_starts_afresh() {
        let limits = RequestLimits::default();
        let mut parser = RequestParser::new();
        let mut first = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$10\r\nab"[..]);
        assert_eq!(parser.parse(&mut first, &limits), Ok(None));
        let mut other = BytesMut::from(&b"PING\r\n"[..]);
        assert_eq!(parser.parse(&mut other, &limits), Ok(Some(args(&["PING"]))));
    }

    proptest! {
        /// Any pipeline of requests, cut anywhere, parses to the same requests as when whole.
        #[test]
        fn split_anywhere(
            requests in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6), 1..6),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut input = Vec::new();
            for r in &requests {
                let refs: Vec<&[u8]> = r.iter().map(Vec::as_slice).collect();
                input.extend_from_slice(&encode(&refs));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let limits = RequestLimits::default();
            let mut parser = RequestParser::new();
            let mut buf = BytesMut::new();
            let mut got: Vec<Vec<Vec<u8>>> = Vec::new();
            let mut from = 0;
            for cut in cuts {
                buf.extend_from_slice(&input[from..cut]);
                from = cut;
                while let Some(request) = parser.parse(&mut buf, &limits).unwrap() {
                    got.push(request.iter().map(|a| a.to_vec()).collect());
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, requests);
        }
    }
}
