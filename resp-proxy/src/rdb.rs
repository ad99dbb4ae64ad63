//! Redis's serialization of one value, as `DUMP` writes and `RESTORE` reads it: an RDB type byte, the
//! value in RDB encoding, the RDB version (2 bytes, little-endian) and a CRC-64 of all that (Redis's
//! `crc64.c`: the Jones polynomial, reflected, 8 bytes little-endian).
//!
//! Vesta holds only strings, so only RDB type 0 is encoded and decoded; for every other type the payload
//! is recognised and named, so RESTORE can say what it refused.

use bytes::Bytes;
use crc::{Crc, CRC_64_REDIS};

/// Redis's `crc64(0, …)`.
pub const CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_REDIS);

/// The RDB version DUMP writes. A string's encoding has not changed since RDB 6, and Redis's RESTORE
/// accepts any version up to its own, so 9 (Redis 6.0) lets every Redis from 6.0 on restore Vesta's
/// payloads (a rollback path), where 11 (what Redis 7.2 writes) would be refused by Redis 7.0.
pub const DUMP_VERSION: u16 = 9;

/// The newest RDB version RESTORE accepts (Redis 7.4 and 8.0 write 12, 8.6 writes 13). Redis refuses payloads newer
/// than itself; Vesta reads strings of every version up to this one.
pub const NEWEST_VERSION: u16 = 13;

/// RDB value type of a string.
pub const TYPE_STRING: u8 = 0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Too short, a version newer than [`NEWEST_VERSION`], or a CRC that does not match.
    #[error("DUMP payload version or checksum are wrong")]
    VersionOrChecksum,
    /// The checksum holds but the value does not decode.
    #[error("Bad data format")]
    BadData,
    /// A valid payload of a type Vesta cannot hold (`list`, `hash`, …).
    #[error("Bad data format: the payload holds a {0}, and Vesta stores only strings")]
    NotAString(&'static str),
}

/// The Redis type an RDB value type byte encodes (every encoding Redis 2.x to 8.x writes).
pub fn type_name(rdb_type: u8) -> Option<&'static str> {
    Some(match rdb_type {
        0 => "string",
        1 | 10 | 14 | 18 => "list",
        2 | 11 | 20 => "set",
        3 | 5 | 12 | 17 => "zset",
        4 | 9 | 13 | 16 | 22..=25 => "hash",
        15 | 19 | 21 | 26 => "stream",
        6 | 7 => "module",
        _ => return None,
    })
}

/// The DUMP payload of a string value.
pub fn dump_string(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 20);
    out.push(TYPE_STRING);
    encode_string(&mut out, value);
    out.extend_from_slice(&DUMP_VERSION.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the trailer of a DUMP payload (Redis's `verifyDumpPayload`) and returns the string it holds.
pub fn restore_string(payload: &[u8]) -> Result<Bytes, PayloadError> {
    let Some(body_len) = payload.len().checked_sub(10) else { return Err(PayloadError::VersionOrChecksum) };
    let (body, footer) = payload.split_at(body_len);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    if version > NEWEST_VERSION {
        return Err(PayloadError::VersionOrChecksum);
    }
    let crc = CRC64.checksum(&payload[..body_len + 2]);
    if crc.to_le_bytes() != footer[2..10] {
        return Err(PayloadError::VersionOrChecksum);
    }
    let (&rdb_type, value) = body.split_first().ok_or(PayloadError::BadData)?;
    if rdb_type != TYPE_STRING {
        return Err(type_name(rdb_type).map_or(PayloadError::BadData, PayloadError::NotAString));
    }
    let mut input = value;
    // Redis ignores bytes after the value too.
    decode_string(&mut input).map(Bytes::from)
}

/// Appends `value` as an RDB string, as Redis's `rdbSaveRawString` does without compression: a short
/// canonical integer as an int encoding, anything else length-prefixed.
pub fn encode_string(out: &mut Vec<u8>, value: &[u8]) {
    if value.len() <= 11 {
        if let Some(n) = crate::cmd::parse_i64(value) {
            if let Ok(n) = i8::try_from(n) {
                out.push(0xC0);
                out.extend_from_slice(&n.to_le_bytes());
                return;
            }
            if let Ok(n) = i16::try_from(n) {
                out.push(0xC1);
                out.extend_from_slice(&n.to_le_bytes());
                return;
            }
            if let Ok(n) = i32::try_from(n) {
                out.push(0xC2);
                out.extend_from_slice(&n.to_le_bytes());
                return;
            }
        }
    }
    encode_len(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Appends an RDB length: 6, 14, 32 or 64 bits.
pub fn encode_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if let Ok(len) = u32::try_from(len) {
        out.push(0x80);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// A length, or the special encoding a string's first byte announces.
enum Len {
    Plain(u64),
    Int8,
    Int16,
    Int32,
    Lzf,
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], PayloadError> {
    if input.len() < n {
        return Err(PayloadError::BadData);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn decode_len(input: &mut &[u8]) -> Result<Len, PayloadError> {
    let first = take(input, 1)?[0];
    Ok(match first >> 6 {
        0 => Len::Plain(u64::from(first & 0x3F)),
        1 => Len::Plain(u64::from(first & 0x3F) << 8 | u64::from(take(input, 1)?[0])),
        2 if first == 0x80 => {
            Len::Plain(u64::from(u32::from_be_bytes(take(input, 4)?.try_into().map_err(|_| PayloadError::BadData)?)))
        }
        2 if first == 0x81 => {
            Len::Plain(u64::from_be_bytes(take(input, 8)?.try_into().map_err(|_| PayloadError::BadData)?))
        }
        3 => match first & 0x3F {
            0 => Len::Int8,
            1 => Len::Int16,
            2 => Len::Int32,
            3 => Len::Lzf,
            _ => return Err(PayloadError::BadData),
        },
        _ => return Err(PayloadError::BadData),
    })
}

fn plain_len(input: &mut &[u8]) -> Result<usize, PayloadError> {
    match decode_len(input)? {
        Len::Plain(n) => usize::try_from(n).map_err(|_| PayloadError::BadData),
        _ => Err(PayloadError::BadData),
    }
}

/// Reads an RDB string in any of its encodings: length-prefixed, integer, or LZF-compressed.
pub fn decode_string(input: &mut &[u8]) -> Result<Vec<u8>, PayloadError> {
    Ok(match decode_len(input)? {
        Len::Plain(n) => take(input, usize::try_from(n).map_err(|_| PayloadError::BadData)?)?.to_vec(),
        Len::Int8 => (take(input, 1)?[0] as i8).to_string().into_bytes(),
        Len::Int16 => {
            let b = take(input, 2)?;
            i16::from_le_bytes([b[0], b[1]]).to_string().into_bytes()
        }
        Len::Int32 => {
            let b = take(input, 4)?;
            i32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string().into_bytes()
        }
        Len::Lzf => {
            let compressed_len = plain_len(input)?;
            let len = plain_len(input)?;
            let compressed = take(input, compressed_len)?;
            // A declared length is not trusted with memory before the data proves it: LZF expands at
            // most about 1:100, so a larger claim is corrupt.
            if len == 0 || len > compressed_len.saturating_mul(128) {
                return Err(PayloadError::BadData);
            }
            let value = lzf::decompress(compressed, len).map_err(|_| PayloadError::BadData)?;
            if value.len() != len {
                return Err(PayloadError::BadData);
            }
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_redis_crc64() {
        // Redis's crc64.c self-test vector.
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn payloads_written_by_redis_7_restore() {
        // `DUMP` output of redis-server 7.0.15 (RDB 10) for "bar", 12345 (int16) and 100 × "a" (LZF).
        let bar = b"\x00\x03bar\n\x00\xe6\xbeI`\xeef\xfd\x17";
        assert_eq!(restore_string(bar).as_deref(), Ok(&b"bar"[..]));
        let n = b"\x00\xc190\n\x00\x9d\x94\xea'\x93\xfc\x08\xb9";
        assert_eq!(restore_string(n).as_deref(), Ok(&b"12345"[..]));
        let big = b"\x00\xc3\t@d\x01aa\xe0W\x00\x01aa\n\x00\xe8\xa3\xb5\x07\xb0m\xf2q";
        assert_eq!(restore_string(big).as_deref(), Ok(&[b'a'; 100][..]));
        let list = b"\x12\x01\x02\n\n\x00\x00\x00\x01\x00\x81a\x02\xff\n\x00\t\xb9\xed\xf5\x94\xde\xd9\x95";
        assert_eq!(restore_string(list), Err(PayloadError::NotAString("list")));
    }

    #[test]
    fn dumps_round_trip_and_match_redis_encodings() {
        for v in [&b""[..], b"bar", b"12345", b"-1", b"01", b"2147483648", &[7u8; 300][..], &[1u8; 70_000][..]] {
            assert_eq!(restore_string(&dump_string(v)).as_deref(), Ok(v));
        }
        // Redis 7.0's bytes for "bar", but for the version.
        let d = dump_string(b"bar");
        assert_eq!(&d[..5], b"\x00\x03bar");
        assert_eq!(&dump_string(b"12345")[..4], b"\x00\xc190");
    }

    #[test]
    fn damaged_payloads_are_refused() {
        let good = dump_string(b"value");
        assert_eq!(restore_string(&good[..9]), Err(PayloadError::VersionOrChecksum));
        let mut flipped = good.clone();
        flipped[2] ^= 1;
        assert_eq!(restore_string(&flipped), Err(PayloadError::VersionOrChecksum));
        // A version newer than any Redis Vesta knows.
        let mut body = vec![TYPE_STRING, 1, b'x'];
        body.extend_from_slice(&(NEWEST_VERSION + 1).to_le_bytes());
        let crc = CRC64.checksum(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(restore_string(&body), Err(PayloadError::VersionOrChecksum));
        // A valid trailer over a truncated value.
        let mut short = vec![TYPE_STRING, 10, b'x'];
        short.extend_from_slice(&DUMP_VERSION.to_le_bytes());
        let crc = CRC64.checksum(&short);
        short.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(restore_string(&short), Err(PayloadError::BadData));
    }
}
