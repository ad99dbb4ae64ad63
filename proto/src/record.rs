//! The record: a value plus the metadata every copy carries, and its versioned on-disk encoding.

use bytes::{Buf, BufMut, Bytes};
use serde::{Deserialize, Serialize};

use crate::counter::Counter;

/// The id of one client request, the same at every replica and on every retry of it. Operations are
/// idempotent by it: a node that already applied request `r` answers `AlreadyDone` to `r` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct RequestId(pub u128);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Record flags, kept as bits so that unknown future bits survive a round trip through an older node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Flags(pub u8);

impl Flags {
    /// The record is a delete marker: absent to every reader, but its metadata stops an older copy from
    /// being repaired back (a resurrection) for the grace period after the delete.
    pub const TOMBSTONE: u8 = 0x01;
    /// The value is ciphertext, sealed by the proxy with key `Meta::key_id`.
    pub const ENCRYPTED: u8 = 0x02;

    pub fn tombstone(self) -> bool {
        self.0 & Self::TOMBSTONE != 0
    }
    pub fn encrypted(self) -> bool {
        self.0 & Self::ENCRYPTED != 0
    }
    pub fn with(self, bit: u8) -> Self {
        Flags(self.0 | bit)
    }
}

/// Metadata of one copy of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// +1 per write of the key; 1 for a freshly created record.
    pub version: u64,
    /// Unix ms when the record (not this version of it) was created.
    pub created_at: u64,
    /// Unix ms after which the record is gone; 0 = never. For a tombstone: when the key was deleted.
    pub expires_at: u64,
    /// Hybrid-logical-clock timestamp of the write that made this copy.
    pub hlc: u64,
    /// Data centre the write came from; breaks HLC ties across data centres.
    pub origin: u32,
    /// The request that wrote this copy (idempotent retries).
    pub last_writer: RequestId,
    pub flags: Flags,
    /// Encryption key id when `flags.encrypted()`; 0 otherwise.
    pub key_id: u32,
}

/// The place of a copy in the order of writes to its key. The newest copy has the greatest HLC; equal
/// HLCs (two data centres, or two proxies in the same logical millisecond) are broken by origin, then by
/// the writing request, so that any two *different* copies are ordered the same way on every replica —
/// a replica never keeps a different copy than its peers because both looked "equally new".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Order {
    pub hlc: u64,
    pub origin: u32,
    pub writer: RequestId,
}

/// Bits of an HLC timestamp below its milliseconds: a logical counter for writes in the same ms.
pub const HLC_LOGICAL_BITS: u32 = 16;

/// The wall-clock milliseconds an HLC timestamp stands for.
pub fn hlc_ms(hlc: u64) -> u64 {
    hlc >> HLC_LOGICAL_BITS
}

impl Meta {
    /// Where this copy stands among the copies of its key.
    pub fn order(&self) -> Order {
        Order { hlc: self.hlc, origin: self.origin, writer: self.last_writer }
    }

    /// Whether this copy is strictly newer than `other`.
    pub fn newer_than(&self, other: &Meta) -> bool {
        self.order() > other.order()
    }

    /// Whether the record has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }

    /// Whether this copy is a live value at `now_ms` (neither a tombstone nor expired).
    pub fn live_at(&self, now_ms: u64) -> bool {
        !self.flags.tombstone() && !self.expired_at(now_ms)
    }

    /// Whether the copy may be dropped from storage at `now_ms`: it has been dead (expired, or deleted —
    /// a tombstone's `expires_at` is the time of the delete) for at least `grace_ms`. Until then a dead
    /// copy keeps its place in the order of copies, so that an older live copy on a replica that missed
    /// the delete or the expiry can never win a repair and bring the key back.
    pub fn purgeable_at(&self, now_ms: u64, grace_ms: u64) -> bool {
        purgeable(self.expires_at, now_ms, grace_ms)
    }
}

/// The purge rule on a bare `expires_at` (what a compaction filter reads from the header).
pub fn purgeable(expires_at: u64, now_ms: u64, grace_ms: u64) -> bool {
    expires_at != 0 && expires_at.saturating_add(grace_ms) <= now_ms
}

/// One copy of a record: metadata and value (empty for tombstones).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    pub meta: Meta,
    pub value: Bytes,
    /// For a key changed only by increments since its last SET or DEL: what each site contributed (the
    /// value is their total). See [`crate::counter`].
    pub counter: Option<Box<Counter>>,
}

impl Record {
    pub fn new(meta: Meta, value: Bytes) -> Self {
        Record { meta, value, counter: None }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record too short: {0} bytes, the header needs {HEADER_LEN}")]
    Truncated(usize),
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("undecodable counter section")]
    Counter,
}

/// On-disk format of the header. A node refuses to guess at a format it does not know.
pub const FORMAT_V1: u8 = 1;
/// The same header, followed by a counter section (`u32` length, then the counter) before the value.
pub const FORMAT_V2: u8 = 2;

/// Header layout, big-endian:
///
/// | off | len | field |
/// |-----|-----|-------|
/// | 0   | 1   | format (1) |
/// | 1   | 1   | flags |
/// | 2   | 4   | key id |
/// | 6   | 8   | expires at (ms) — first after the small fields so a compaction filter reads it cheaply |
/// | 14  | 8   | version |
/// | 22  | 8   | created at (ms) |
/// | 30  | 8   | HLC |
/// | 38  | 4   | origin |
/// | 42  | 16  | last writer request id |
/// | 58  | …   | value (format 1); counter length (`u32`), counter, value (format 2) |
pub const HEADER_LEN: usize = 58;
const EXPIRES_AT_OFFSET: usize = 6;

impl Record {
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.counter_section().map_or(0, |c| 4 + c.len()) + self.value.len()
    }

    fn counter_section(&self) -> Option<Vec<u8>> {
        // A counter is a few integers per site: it always encodes.
        self.counter.as_ref().map(|c| postcard::to_stdvec(c).unwrap_or_default())
    }

    /// Encodes the record for storage.
    pub fn encode(&self) -> Vec<u8> {
        let counter = self.counter_section();
        let mut out = Vec::with_capacity(HEADER_LEN + counter.as_ref().map_or(0, |c| 4 + c.len()) + self.value.len());
        let m = &self.meta;
        out.put_u8(if counter.is_some() { FORMAT_V2 } else { FORMAT_V1 });
        out.put_u8(m.flags.0);
        out.put_u32(m.key_id);
        out.put_u64(m.expires_at);
        out.put_u64(m.version);
        out.put_u64(m.created_at);
        out.put_u64(m.hlc);
        out.put_u32(m.origin);
        out.put_u128(m.last_writer.0);
        if let Some(c) = counter {
            out.put_u32(c.len() as u32);
            out.extend_from_slice(&c);
        }
        out.extend_from_slice(&self.value);
        out
    }

    /// Decodes a stored record; the value (and a counter's contributions) are copied out of `raw` only
    /// when `with_value`.
    pub fn decode(raw: &[u8], with_value: bool) -> Result<Record, RecordError> {
        let meta = Self::decode_meta(raw)?;
        if !with_value {
            return Ok(Record::new(meta, Bytes::new()));
        }
        let mut rest = &raw[HEADER_LEN..];
        let mut counter = None;
        if raw[0] == FORMAT_V2 {
            if rest.len() < 4 {
                return Err(RecordError::Counter);
            }
            let len = rest.get_u32() as usize;
            if rest.len() < len {
                return Err(RecordError::Counter);
            }
            let c: Counter = postcard::from_bytes(&rest[..len]).map_err(|_| RecordError::Counter)?;
            counter = Some(Box::new(c));
            rest = &rest[len..];
        }
        Ok(Record { meta, value: Bytes::copy_from_slice(rest), counter })
    }

    /// Decodes only the metadata of a stored record.
    pub fn decode_meta(raw: &[u8]) -> Result<Meta, RecordError> {
        if raw.len() < HEADER_LEN {
            return Err(RecordError::Truncated(raw.len()));
        }
        let mut b = raw;
        let format = b.get_u8();
        if format != FORMAT_V1 && format != FORMAT_V2 {
            return Err(RecordError::UnknownFormat(format));
        }
        let flags = Flags(b.get_u8());
        let key_id = b.get_u32();
        let expires_at = b.get_u64();
        let version = b.get_u64();
        let created_at = b.get_u64();
        let hlc = b.get_u64();
        let origin = b.get_u32();
        let last_writer = RequestId(b.get_u128());
        Ok(Meta { version, created_at, expires_at, hlc, origin, last_writer, flags, key_id })
    }

    /// Reads only the expiry of a stored record (the compaction filter's hot path). `None` when the bytes
    /// are not a record this node understands, so the caller keeps them rather than destroying data.
    pub fn peek_expires_at(raw: &[u8]) -> Option<u64> {
        if raw.len() < HEADER_LEN || (raw[0] != FORMAT_V1 && raw[0] != FORMAT_V2) {
            return None;
        }
        let mut b = &raw[EXPIRES_AT_OFFSET..EXPIRES_AT_OFFSET + 8];
        Some(b.get_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_meta() -> impl Strategy<Value = Meta> {
        (any::<[u64; 4]>(), any::<u32>(), any::<u128>(), any::<u8>(), any::<u32>()).prop_map(
            |([version, created_at, expires_at, hlc], origin, w, flags, key_id)| Meta {
                version,
                created_at,
                expires_at,
                hlc,
                origin,
                last_writer: RequestId(w),
                flags: Flags(flags),
                key_id,
            },
        )
    }

    proptest! {
        #[test]
        fn record_round_trips(meta in arb_meta(), value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut rec = Record::new(meta, Bytes::from(value));
            for counted in [false, true] {
                if counted {
                    let mut c = Counter::on(meta.order(), Bytes::from_static(b"12"));
                    c.add(3, -5, 0.0);
                    rec.counter = Some(Box::new(c));
                }
                let raw = rec.encode();
                prop_assert_eq!(raw.len(), rec.encoded_len());
                prop_assert_eq!(Record::decode(&raw, true).unwrap(), rec.clone());
                prop_assert_eq!(Record::decode(&raw, false).unwrap(), Record::new(rec.meta, Bytes::new()));
                prop_assert_eq!(Record::decode_meta(&raw).unwrap(), rec.meta);
                prop_assert_eq!(Record::peek_expires_at(&raw), Some(rec.meta.expires_at));
            }
        }

        #[test]
        fn decoding_garbage_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Record::decode(&raw, true);
            let _ = Record::peek_expires_at(&raw);
        }
    }

    #[test]
    fn short_and_unknown_headers_are_errors() {
        assert_eq!(Record::decode_meta(&[1; 10]), Err(RecordError::Truncated(10)));
        let mut raw = Record::default().encode();
        raw[0] = 9;
        assert_eq!(Record::decode_meta(&raw), Err(RecordError::UnknownFormat(9)));
        assert_eq!(Record::peek_expires_at(&raw), None);
    }

    #[test]
    fn newest_copy_is_greatest_hlc_then_origin_then_writer() {
        let a = Meta { hlc: 10, origin: 1, ..Meta::default() };
        let b = Meta { hlc: 10, origin: 2, ..Meta::default() };
        let c = Meta { hlc: 11, origin: 0, ..Meta::default() };
        assert!(b.newer_than(&a) && c.newer_than(&b) && !a.newer_than(&a));
        // Same HLC and origin, different writers: still strictly ordered, the same way everywhere.
        let d = Meta { last_writer: RequestId(7), ..a };
        let e = Meta { last_writer: RequestId(9), ..a };
        assert!(e.newer_than(&d) && !d.newer_than(&e));
    }

    #[test]
    fn dead_copies_are_kept_for_the_grace_period() {
        let expiring = Meta { expires_at: 1_000, ..Meta::default() };
        assert!(!expiring.purgeable_at(1_000, 500) && !expiring.purgeable_at(1_499, 500));
        assert!(expiring.purgeable_at(1_500, 500));
        assert!(!Meta::default().purgeable_at(u64::MAX, 0), "a record without expiry is never purged");
    }
}
