//! The sizes a client's requests are held to, as Redis names them: `proto-max-bulk-len` (the largest
//! bulk string, and the largest string APPEND, SETRANGE and SETBIT may build) and
//! `client-query-buffer-limit` (the most unparsed bytes one connection may hold). Set by the proxy's
//! configuration; CONFIG SET changes them for every request parsed after it.
//!
//! Why Vesta's `proto-max-bulk-len` is bounded (Redis's default is 512 MB): a value travels to the store
//! nodes in one internal frame of at most 64 MiB (`vesta_proto::frame::DEFAULT_MAX_FRAME`), together with
//! its key and metadata. A larger value could be accepted from the client but never stored.

use std::sync::atomic::{AtomicUsize, Ordering};

use vesta_proto::frame::DEFAULT_MAX_FRAME;
use vesta_resp::RequestLimits;

/// 32 MiB.
pub const DEFAULT_PROTO_MAX_BULK_LEN: usize = vesta_resp::request::DEFAULT_MAX_BULK_LEN;
/// Redis's own minimum (1 MiB).
pub const MIN_PROTO_MAX_BULK_LEN: usize = 1024 * 1024;
/// The internal frame limit minus 1 MiB of headroom for the key and the record's metadata.
pub const MAX_PROTO_MAX_BULK_LEN: usize = DEFAULT_MAX_FRAME - 1024 * 1024;
/// Without an explicit `client_query_buffer_limit`: room for this many values of the largest size in
/// one request (an MSET of a few large values must still arrive whole), and it follows
/// `proto-max-bulk-len` when that changes.
pub const QUERY_BUFFER_BULKS: usize = 4;
/// Redis's own minimum (1 MiB).
pub const MIN_QUERY_BUFFER_LIMIT: usize = 1024 * 1024;

/// `proto_max_bulk_len` within its bounds, or why not (the reason in Redis's CONFIG SET wording).
pub fn check_proto_max_bulk_len(value: u64) -> Result<usize, String> {
    match usize::try_from(value) {
        Ok(v) if (MIN_PROTO_MAX_BULK_LEN..=MAX_PROTO_MAX_BULK_LEN).contains(&v) => Ok(v),
        _ => Err(format!("argument must be between {MIN_PROTO_MAX_BULK_LEN} and {MAX_PROTO_MAX_BULK_LEN} inclusive")),
    }
}

/// `client_query_buffer_limit` within its bounds, or why not.
pub fn check_query_buffer_limit(value: u64) -> Result<usize, String> {
    match usize::try_from(value) {
        Ok(v) if v >= MIN_QUERY_BUFFER_LIMIT && value <= i64::MAX as u64 => Ok(v),
        _ => Err(format!("argument must be between {MIN_QUERY_BUFFER_LIMIT} and {} inclusive", i64::MAX)),
    }
}

/// The limits in force, shared by every connection of a proxy.
#[derive(Debug)]
pub struct ClientLimits {
    proto_max_bulk_len: AtomicUsize,
    /// 0: automatic ([`QUERY_BUFFER_BULKS`] × `proto_max_bulk_len`).
    query_buffer_limit: AtomicUsize,
}

/// The two CONFIG parameters [`ClientLimits`] owns.
pub const PROTO_MAX_BULK_LEN: &str = "proto-max-bulk-len";
pub const CLIENT_QUERY_BUFFER_LIMIT: &str = "client-query-buffer-limit";

impl ClientLimits {
    /// From validated configuration values (`None`: the automatic query-buffer limit).
    pub fn new(proto_max_bulk_len: usize, client_query_buffer_limit: Option<usize>) -> Self {
        ClientLimits {
            proto_max_bulk_len: AtomicUsize::new(proto_max_bulk_len),
            query_buffer_limit: AtomicUsize::new(client_query_buffer_limit.unwrap_or(0)),
        }
    }

    pub fn proto_max_bulk_len(&self) -> usize {
        self.proto_max_bulk_len.load(Ordering::Relaxed)
    }

    /// The most unparsed bytes (one partial request) a connection may hold.
    pub fn query_buffer_limit(&self) -> usize {
        match self.query_buffer_limit.load(Ordering::Relaxed) {
            0 => self.proto_max_bulk_len().saturating_mul(QUERY_BUFFER_BULKS),
            explicit => explicit,
        }
    }

    /// What the request parser enforces.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits { max_bulk_len: self.proto_max_bulk_len(), ..RequestLimits::default() }
    }

    /// The value CONFIG SET would give parameter `name`: `None` if the parameter is not one of these
    /// limits, else the value or Redis's reason for refusing it.
    pub fn parse_setting(name: &str, value: &[u8]) -> Option<Result<usize, String>> {
        let check = match name {
            PROTO_MAX_BULK_LEN => check_proto_max_bulk_len,
            CLIENT_QUERY_BUFFER_LIMIT => check_query_buffer_limit,
            _ => return None,
        };
        Some(memtoull(value).ok_or_else(|| "argument must be a memory value".to_string()).and_then(check))
    }

    /// Applies a value [`ClientLimits::parse_setting`] accepted.
    pub fn set(&self, name: &str, value: usize) {
        match name {
            PROTO_MAX_BULK_LEN => self.proto_max_bulk_len.store(value, Ordering::Relaxed),
            CLIENT_QUERY_BUFFER_LIMIT => self.query_buffer_limit.store(value, Ordering::Relaxed),
            _ => {}
        }
    }

    /// CONFIG GET's view: (name, value) of both parameters.
    pub fn settings(&self) -> [(&'static str, String); 2] {
        [
            (PROTO_MAX_BULK_LEN, self.proto_max_bulk_len().to_string()),
            (CLIENT_QUERY_BUFFER_LIMIT, self.query_buffer_limit().to_string()),
        ]
    }
}

/// Redis's `memtoull`: decimal digits with an optional unit (`b`, `k` = 1000, `kb` = 1024, `m`, `mb`,
/// `g`, `gb`, any case). `None`: not a memory value. Too large saturates (and then fails the bounds,
/// as in Redis).
pub fn memtoull(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, unit) = text.split_at(digits);
    let mul: u64 = match unit.to_ascii_lowercase().as_slice() {
        b"" | b"b" => 1,
        b"k" => 1000,
        b"kb" => 1024,
        b"m" => 1000 * 1000,
        b"mb" => 1024 * 1024,
        b"g" => 1000 * 1000 * 1000,
        b"gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    // Only ASCII digits are left, so parsing fails only on overflow (and the empty string, 0 to Redis).
    let n: u64 = match std::str::from_utf8(number).ok()?.parse() {
        Ok(n) => n,
        Err(_) if number.is_empty() => 0,
        Err(_) => u64::MAX,
    };
    Some(n.saturating_mul(mul))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_like_redis() {
        assert_eq!(memtoull(b"1048576"), Some(1048576));
        assert_eq!(memtoull(b"1mb"), Some(1048576));
        assert_eq!(memtoull(b"1MB"), Some(1048576));
        assert_eq!(memtoull(b"2m"), Some(2_000_000));
        assert_eq!(memtoull(b"1024kb"), Some(1048576));
        assert_eq!(memtoull(b"1g"), Some(1_000_000_000));
        assert_eq!(memtoull(b""), Some(0));
        assert_eq!(memtoull(b"99999999999999999999"), Some(u64::MAX));
        for bad in [&b"-1"[..], b"+1", b" 1", b"1 ", b"1.5mb", b"1tb", b"abc"] {
            assert_eq!(memtoull(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn config_set_values_and_redis_reasons() {
        let parse = |name, value: &str| ClientLimits::parse_setting(name, value.as_bytes());
        assert_eq!(parse(PROTO_MAX_BULK_LEN, "1mb"), Some(Ok(1048576)));
        assert_eq!(parse(PROTO_MAX_BULK_LEN, "63mb"), Some(Ok(MAX_PROTO_MAX_BULK_LEN)));
        assert_eq!(
            parse(PROTO_MAX_BULK_LEN, "64mb"),
            Some(Err("argument must be between 1048576 and 66060288 inclusive".into()))
        );
        assert_eq!(
            parse(PROTO_MAX_BULK_LEN, "1000"),
            Some(Err("argument must be between 1048576 and 66060288 inclusive".into()))
        );
        assert_eq!(parse(PROTO_MAX_BULK_LEN, "abc"), Some(Err("argument must be a memory value".into())));
        assert_eq!(parse(CLIENT_QUERY_BUFFER_LIMIT, "1gb"), Some(Ok(1 << 30)));
        assert!(matches!(parse(CLIENT_QUERY_BUFFER_LIMIT, "1kb"), Some(Err(_))));
        assert_eq!(parse("maxmemory", "1mb"), None);
    }

    #[test]
    fn the_automatic_query_buffer_limit_follows_proto_max_bulk_len() {
        let limits = ClientLimits::new(DEFAULT_PROTO_MAX_BULK_LEN, None);
        assert_eq!(limits.query_buffer_limit(), 4 * DEFAULT_PROTO_MAX_BULK_LEN);
        limits.set(PROTO_MAX_BULK_LEN, 2 << 20);
        assert_eq!(limits.request_limits().max_bulk_len, 2 << 20);
        assert_eq!(limits.query_buffer_limit(), 8 << 20);
        limits.set(CLIENT_QUERY_BUFFER_LIMIT, 3 << 20);
        assert_eq!(limits.query_buffer_limit(), 3 << 20);
        assert_eq!(limits.settings()[1], (CLIENT_QUERY_BUFFER_LIMIT, (3u64 << 20).to_string()));
    }
}
