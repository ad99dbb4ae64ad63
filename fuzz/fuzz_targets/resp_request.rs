//! Arbitrary bytes on a client's socket, as the proxy's RESP request parser sees them:
//!
//! * it never panics;
//! * fed the bytes in pieces (split where the input says), the resumable parser answers exactly what a
//!   fresh parse of the same buffer answers, at every step;
//! * the buffer's capacity stays bounded by the bytes received (plus the parser's one reserved chunk and
//!   `BytesMut`'s geometric growth), whatever lengths the input declares;
//! * well-formed requests are decoded as `redis-protocol`'s RESP2 decoder decodes them: whenever it
//!   decodes an array of bulk strings written canonically, the parser returns exactly those arguments
//!   (or the error its limits call for) and consumes exactly as many bytes; whenever the parser accepts a
//!   multibulk request, redis-protocol decodes the same arguments from the same bytes.
//!
//! The first input byte picks the limits (Vesta's defaults, or small ones, so that limit errors are
//! reached) and seeds the split points.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use vesta_resp::request::{parse_request, ParseError, RequestLimits, RequestParser, RESERVE_CHUNK};

type Parsed = Result<Option<Vec<Bytes>>, ParseError>;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else { return };
    let limits = if control & 1 == 0 {
        RequestLimits::default()
    } else {
        // Small enough for a short input to cross every limit.
        RequestLimits { max_bulk_len: usize::from(control >> 3) * 3, max_multibulk_len: 5, max_inline_len: 40 }
    };
    let whole = whole_input(input, &limits);
    let pieces = pieces(input, control);
    let steps = incremental(&pieces, &limits);
    compare_with_whole(&steps, &whole);
    oracle(input, &whole, &limits);
});

/// Every result of parsing `input` received at once, with the offset each request started at.
fn whole_input(input: &[u8], limits: &RequestLimits) -> Vec<(usize, Parsed)> {
    let mut buf = BytesMut::from(input);
    let mut results = Vec::new();
    loop {
        let at = input.len() - buf.len();
        let result = parse_request(&mut buf, limits);
        let more = matches!(result, Ok(Some(_)));
        results.push((at, result));
        if !more {
            return results;
        }
    }
}

/// The input cut into pieces whose sizes come from a generator seeded by the input (reproducible).
fn pieces(input: &[u8], control: u8) -> Vec<&[u8]> {
    let mut state = u64::from(control).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ input.len() as u64 | 1;
    let mut rest = input;
    let mut out = Vec::new();
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Mostly tiny pieces (where resuming matters), sometimes large ones.
        let size = if state % 4 == 0 { (state >> 8) as usize % 512 + 1 } else { (state >> 8) as usize % 7 + 1 };
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

/// Feeds the pieces to the resumable parser and, on a copy of the same buffer, to a fresh parse; they
/// must agree at every step. Returns the results that were not `Ok(None)`.
fn incremental(pieces: &[&[u8]], limits: &RequestLimits) -> Vec<Parsed> {
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut received = 0;
    let mut results = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        received += piece.len();
        loop {
            let mut fresh = BytesMut::from(&buf[..]);
            let expected = parse_request(&mut fresh, limits);
            let got = parser.parse(&mut buf, limits);
            assert_eq!(got, expected, "resumed parse differs from a fresh one after {received} bytes");
            assert_eq!(buf.len(), fresh.len(), "resumed parse consumed differently after {received} bytes");
            // Growth follows what arrived: BytesMut at most doubles what it must hold, and the parser adds
            // at most one chunk for an argument still arriving. A declared length adds nothing.
            let bound = 2 * (received + RESERVE_CHUNK) + 64;
            assert!(buf.capacity() <= bound, "capacity {} after {received} bytes", buf.capacity());
            match got {
                Ok(None) => break,
                Ok(Some(_)) => results.push(got),
                Err(_) => {
                    results.push(got);
                    return results;
                }
            }
        }
    }
    results
}

/// Pieces or whole, the same requests come out, except that an over-long line is refused as soon as
/// the buffered part of it is too long, even if its end would have come in the same read (Redis alike).
fn compare_with_whole(steps: &[Parsed], whole: &[(usize, Parsed)]) {
    let whole: Vec<&Parsed> = whole.iter().map(|(_, r)| r).filter(|r| !matches!(r, Ok(None))).collect();
    let line_too_long = matches!(
        steps.last(),
        Some(Err(ParseError::InlineTooLong | ParseError::MultibulkCountTooLong | ParseError::BulkCountTooLong))
    );
    if line_too_long {
        let before = steps.len() - 1;
        assert!(before <= whole.len(), "more requests in pieces than whole");
        for (a, b) in steps[..before].iter().zip(&whole) {
            assert_eq!(a, *b);
        }
    } else {
        assert_eq!(steps.len(), whole.len(), "pieces and whole yield different request counts");
        for (a, b) in steps.iter().zip(&whole) {
            assert_eq!(a, *b);
        }
    }
}

/// `*N\r\n` then `$len\r\narg\r\n` for each argument: how a well-behaved client writes a request.
fn canonical(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The arguments of an array of bulk strings; `None` for any other frame.
fn bulk_array(frame: &OwnedFrame) -> Option<Vec<Vec<u8>>> {
    match frame {
        OwnedFrame::Array(items) => items
            .iter()
            .map(|f| match f {
                OwnedFrame::BulkString(b) => Some(b.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// What the parser must answer for a canonical request under `limits`.
fn expected(args: &[Vec<u8>], limits: &RequestLimits) -> Result<Vec<Vec<u8>>, ParseError> {
    if args.len() > limits.max_multibulk_len {
        return Err(ParseError::InvalidMultibulkLength);
    }
    if let Some(a) = args.iter().find(|a| a.len() > limits.max_bulk_len) {
        return Err(ParseError::BulkTooLong { len: a.len() as u64, max: limits.max_bulk_len });
    }
    Ok(args.to_vec())
}

/// redis-protocol as the oracle, at the start of every request the whole-input parse found.
fn oracle(input: &[u8], whole: &[(usize, Parsed)], limits: &RequestLimits) {
    for (at, ours) in whole {
        let rest = &input[*at..];
        // redis-protocol recurses once per nested array: keep its stack shallow.
        if rest.first() != Some(&b'*') || rest.iter().filter(|&&b| b == b'*').count() > 256 {
            continue;
        }
        let theirs = decode(rest).ok().flatten().and_then(|(frame, used)| Some((bulk_array(&frame)?, used)));
        // redis-protocol decodes a canonical array of bulk strings: so must we.
        if let Some((args, used)) = &theirs {
            if canonical(args) == rest[..*used] {
                let ours_now = ours.clone().map(|r| r.map(|v| v.iter().map(|a| a.to_vec()).collect::<Vec<_>>()));
                match expected(args, limits) {
                    Ok(args) if args.is_empty() => {
                        assert_eq!(ours_now, Ok(Some(Vec::new())), "empty array at {at}")
                    }
                    Ok(args) => {
                        assert_eq!(ours_now, Ok(Some(args)), "array at {at}");
                        let next = whole.iter().find(|(n, _)| n > at).map(|(n, _)| *n);
                        assert_eq!(next, Some(at + used), "consumed bytes differ at {at}");
                    }
                    Err(e) => assert_eq!(ours_now, Err(e), "limit error at {at}"),
                }
            }
        }
        // We accepted a request with arguments: redis-protocol must decode the same from the same bytes.
        if let Ok(Some(args)) = ours {
            if !args.is_empty() {
                let Some((theirs_args, used)) = &theirs else {
                    panic!("accepted at {at}, redis-protocol does not decode an array of bulk strings")
                };
                let ours_args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
                assert_eq!(&ours_args, theirs_args, "arguments differ at {at}");
                let next = whole.iter().find(|(n, _)| n > at).map(|(n, _)| *n);
                assert_eq!(next, Some(at + used), "consumed bytes differ at {at}");
            }
        }
    }
}
