//! MEMORY USAGE / MEMORY HELP. Vesta's values live on the store nodes (encrypted, with metadata,
//! replicated), so no figure of the proxy's own memory would mean anything per key. MEMORY USAGE
//! answers what a Redis 7 server would report for the same key and value: the key's string, the value
//! object (Redis's `int`, `embstr` or `raw` encoding by its length) and the dictionary entry, each
//! rounded up to jemalloc's size classes. It is an estimate of the footprint in Redis, useful to compare
//! keys and to size a Redis-based cache, not what Vesta stores.

use bytes::Bytes;

use super::snapshot::Snapshot;
use super::{help, int_arg, parse_i64, subcommand, syntax_error};
use crate::resp::Reply;

/// A parsed `MEMORY USAGE key [SAMPLES n]` (only strings exist, so SAMPLES changes nothing).
#[derive(Debug)]
pub struct Usage {
    pub key: Bytes,
}

pub const SUBCOMMANDS: &[(&str, i64)] = &[("usage", -3), ("help", 2)];

/// Whether `a` (MEMORY's arguments) asks for MEMORY USAGE, the one subcommand that reads a key.
pub fn is_usage(a: &[Bytes]) -> bool {
    a.first().is_some_and(|s| s.eq_ignore_ascii_case(b"usage"))
}

impl Usage {
    pub fn parse(a: &[Bytes]) -> Result<Usage, Reply> {
        subcommand("memory", SUBCOMMANDS, a)?;
        let mut rest = &a[2..];
        while let [opt, tail @ ..] = rest {
            match tail {
                [n, more @ ..] if opt.eq_ignore_ascii_case(b"samples") => {
                    if int_arg(n)? < 0 {
                        return Err(syntax_error());
                    }
                    rest = more;
                }
                _ => return Err(syntax_error()),
            }
        }
        Ok(Usage { key: a[1].clone() })
    }

    pub fn apply(&self, s: &Snapshot) -> Reply {
        s.get(&self.key).map_or(Reply::Nil, |r| Reply::Int(redis_footprint(self.key.len(), &r.value) as i64))
    }
}

/// MEMORY HELP, and MEMORY's errors for anything but USAGE.
pub fn command(a: &[Bytes]) -> Reply {
    match subcommand("memory", SUBCOMMANDS, a) {
        Ok("help") => help(
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            &[
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key> and its value. Nested values are",
                "    sampled up to <count> times (default: 5, 0 means sample all).",
            ],
        ),
        Ok(_) => match Usage::parse(a) {
            Ok(_) => Reply::error("ERR internal error: MEMORY USAGE reached the wrong handler"),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// What Redis 7's MEMORY USAGE reports for a string key: `sdsZmallocSize(key)`, the value object
/// (`objectComputeSize`) and `sizeof(dictEntry)`.
fn redis_footprint(key_len: usize, value: &[u8]) -> usize {
    const ROBJ: usize = 16;
    const DICT_ENTRY: usize = 24;
    let value_size = if value.len() <= 20 && parse_i64(value).is_some() {
        ROBJ
    } else if value.len() <= 44 {
        // embstr: object, sds header and string in one allocation.
        jemalloc_size(ROBJ + 3 + value.len() + 1)
    } else {
        ROBJ + jemalloc_size(sds_header(value.len()) + value.len() + 1)
    };
    jemalloc_size(sds_header(key_len) + key_len + 1) + value_size + DICT_ENTRY
}

/// The header of an sds string of `len` bytes.
fn sds_header(len: usize) -> usize {
    match len {
        0..32 => 1,
        32..256 => 3,
        256..65_536 => 5,
        65_536..4_294_967_296 => 9,
        _ => 17,
    }
}

/// jemalloc's size class for `size`: 8, then multiples of 16 up to 128, then four classes per doubling.
fn jemalloc_size(size: usize) -> usize {
    match size {
        0..=8 => 8,
        9..=128 => size.div_ceil(16) * 16,
        _ => {
            let group = 1usize << (usize::BITS - (size - 1).leading_zeros() - 1);
            let step = group / 4;
            size.div_ceil(step) * step
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    #[test]
    fn footprints_as_redis_7_reports_them() {
        // Figures from redis-server 7.0: MEMORY USAGE after SET mk hello / SET mk2 <100 x> / SET mk3 12345.
        assert_eq!(redis_footprint(2, b"hello"), 64);
        assert_eq!(redis_footprint(3, &[b'x'; 100]), 160);
        assert_eq!(redis_footprint(3, b"12345"), 48);
        assert_eq!(jemalloc_size(129), 160);
        assert_eq!(jemalloc_size(257), 320);
        assert_eq!(jemalloc_size(4097), 5120);
    }

    #[test]
    fn parses_like_redis() {
        assert!(Usage::parse(&args(&["usage", "k"])).is_ok());
        assert!(Usage::parse(&args(&["usage", "k", "samples", "0"])).is_ok());
        assert_eq!(Usage::parse(&args(&["usage", "k", "samples"])).err(), Some(syntax_error()));
        assert_eq!(Usage::parse(&args(&["usage", "k", "samples", "-1"])).err(), Some(syntax_error()));
        assert_eq!(Usage::parse(&args(&["usage", "k", "foo", "1"])).err(), Some(syntax_error()));
        assert_eq!(
            Usage::parse(&args(&["usage", "k", "samples", "x"])).err(),
            Some(Reply::error("ERR value is not an integer or out of range"))
        );
        assert_eq!(command(&args(&["foo"])), Reply::error("ERR unknown subcommand 'foo'. Try MEMORY HELP."));
        assert_eq!(
            command(&args(&["usage"])),
            Reply::error("ERR wrong number of arguments for 'memory|usage' command")
        );
    }
}
