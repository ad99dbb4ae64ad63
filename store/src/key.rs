//! Storage keys: `[shard u32 BE][namespace length u8][namespace][key]`.
//!
//! The shard comes first so that a shard is one contiguous key range (scans and redistribution move a
//! range, and a node drops a shard it no longer owns with one range delete). The namespace is
//! length-prefixed so that no (namespace, key) pair can be confused with another.

use bytes::Bytes;

pub const MAX_NAMESPACE: usize = u8::MAX as usize;

/// Most shards a cluster may have: the 4-byte prefix `ff ff ff ff` is kept for the node's own records
/// (when it was last in service, whether it is being rebuilt: `ff ff ff ff 00`; the change log:
/// `ff ff ff ff 01`, see `changelog.rs`), outside every shard's range.
pub const MAX_SHARDS: u32 = u32::MAX - 1;

/// The storage key of one of the node's own records.
pub fn node_meta(name: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff; 4];
    out.push(0);
    out.extend_from_slice(name);
    out
}

/// Whether a storage key is one of the node's own records rather than a shard's.
pub fn is_node_own(raw: &[u8]) -> bool {
    raw.starts_with(&[0xff; 4])
}

pub fn encode(shard: u32, namespace: &[u8], key: &[u8]) -> Vec<u8> {
    debug_assert!(namespace.len() <= MAX_NAMESPACE);
    let mut out = Vec::with_capacity(5 + namespace.len() + key.len());
    out.extend_from_slice(&shard.to_be_bytes());
    out.push(namespace.len() as u8);
    out.extend_from_slice(namespace);
    out.extend_from_slice(key);
    out
}

/// The first storage key of `shard`; `shard_start(s + 1)` is one past its last.
pub fn shard_start(shard: u64) -> Vec<u8> {
    match u32::try_from(shard) {
        Ok(s) => s.to_be_bytes().to_vec(),
        // One past the last possible shard: greater than every 4-byte shard prefix.
        Err(_) => vec![0xff; 5],
    }
}

/// The shard of a storage key, without copying anything out of it.
pub fn shard_of(raw: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(raw.get(..4)?.try_into().ok()?))
}

/// Splits a storage key into (shard, namespace, key); `None` if it is not one of ours.
pub fn decode(raw: &[u8]) -> Option<(u32, Bytes, Bytes)> {
    let shard = shard_of(raw)?;
    let ns_len = *raw.get(4)? as usize;
    let namespace = raw.get(5..5 + ns_len)?;
    let key = raw.get(5 + ns_len..)?;
    Some((shard, Bytes::copy_from_slice(namespace), Bytes::copy_from_slice(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_by_shard() {
        let k = encode(7, b"ns", b"key");
        assert_eq!(decode(&k), Some((7, Bytes::from_static(b"ns"), Bytes::from_static(b"key"))));
        assert!(encode(7, b"zz", b"zz") < encode(8, b"", b""));
        assert!(shard_start(7) <= encode(7, b"", b"") && encode(7, b"\xff", b"\xff") < shard_start(8));
        assert!(encode(u32::MAX, b"\xff", b"\xff\xff") < shard_start(u32::MAX as u64 + 1));
        assert_eq!(decode(&[0, 0, 0, 1, 9, b'a']), None);
    }
}
