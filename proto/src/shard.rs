//! Which shard a key lives in.

/// The part of a key that is hashed: the content of the first `{…}` when it is non-empty, otherwise the
/// whole key — Redis Cluster's hash-tag rule, so `{user1}.a` and `{user1}.b` share a shard.
pub fn hash_slice(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// `shard = hash(key or its {tag}) % shards`. The hash is CRC-32 (IEEE): fixed forever, since changing
/// it would move every key.
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    debug_assert!(shards > 0);
    crc32fast::hash(hash_slice(key)) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_redis_cluster_rules() {
        assert_eq!(hash_slice(b"{user1}.following"), b"user1");
        assert_eq!(hash_slice(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_slice(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_slice(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_slice(b"plain"), b"plain");
        assert_eq!(hash_slice(b"open{only"), b"open{only");
        assert_eq!(shard_of(b"{a}x", 1024), shard_of(b"{a}y", 1024));
    }

    #[test]
    fn shards_are_spread() {
        let mut seen = vec![0u32; 16];
        for i in 0..16_000 {
            seen[shard_of(format!("key:{i}").as_bytes(), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (700..1300).contains(&n)), "{seen:?}");
    }

    #[test]
    fn hash_is_stable() {
        // Changing these moves data between shards: never do it.
        assert_eq!(shard_of(b"foo", 1024), crc32fast::hash(b"foo") % 1024);
        assert_eq!(crc32fast::hash(b"foo"), 0x8c73_6521);
    }
}
