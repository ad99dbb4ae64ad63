//! The change log for cross-site replication: every commit of a write made in this site is also
//! written, in the same engine batch as the record, under a key of the node's own range:
//!
//! `[ff ff ff ff][01][shard u32 BE][hlc u64 BE][origin u32 BE][writer u128 BE][storage key]`
//!
//! So an acknowledged write is durable for replication exactly when it is durable at all (a write
//! quorum of replicas logged it, each in one atomic batch), and a shard's log reads in the order of
//! copies. Only commits are logged — not repairs, clones or transfers: those install copies some
//! commit already logged on at least W replicas, so reading the log of any N − W + 1 replicas of a shard
//! sees every acknowledged write (`docs/replication.md`).
//!
//! A log is read only up to its **closed timestamp**: an HLC at or below which no new entry can appear.
//! A commit lands only under a live lease of its prepare, and its coordinator stamps it no earlier than
//! its own clock when it decided, which came after the lease was granted; proxies whose clock is off by
//! more than `max_clock_drift_ms` write nothing. So nothing can still be logged below the oldest live
//! lease's grant time (or now, with none), less twice the drift bound.

use vesta_proto::record::HLC_LOGICAL_BITS;
use vesta_proto::Order;

const PREFIX: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x01];
/// Prefix + shard + hlc + origin + writer.
const HEAD: usize = PREFIX.len() + 4 + 8 + 4 + 16;

/// The log key of a commit of `order` at storage key `skey` in `shard`.
pub(crate) fn entry_key(shard: u32, order: &Order, skey: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + skey.len());
    out.extend_from_slice(&PREFIX);
    out.extend_from_slice(&shard.to_be_bytes());
    out.extend_from_slice(&order.hlc.to_be_bytes());
    out.extend_from_slice(&order.origin.to_be_bytes());
    out.extend_from_slice(&order.writer.0.to_be_bytes());
    out.extend_from_slice(skey);
    out
}

/// The first log key of `shard` stamped at `hlc` or later.
pub(crate) fn from_hlc(shard: u32, hlc: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + 12);
    out.extend_from_slice(&PREFIX);
    out.extend_from_slice(&shard.to_be_bytes());
    out.extend_from_slice(&hlc.to_be_bytes());
    out
}

/// `[first, end)` of `shard`'s log.
pub(crate) fn shard_range(shard: u32) -> (Vec<u8>, Vec<u8>) {
    let mut end = PREFIX.to_vec();
    match shard.checked_add(1) {
        Some(next) => end.extend_from_slice(&next.to_be_bytes()),
        // Past the last shard's log: the next prefix. (Shards stop below u32::MAX anyway: `key::MAX_SHARDS`.)
        None => end = vec![0xff, 0xff, 0xff, 0xff, 0x02],
    }
    (from_hlc(shard, 0), end)
}

/// The HLC and storage key of a log key; `None` if it is not one.
pub(crate) fn parse(raw: &[u8]) -> Option<(u64, &[u8])> {
    if raw.len() < HEAD || raw[..PREFIX.len()] != PREFIX {
        return None;
    }
    let at = PREFIX.len() + 4;
    let hlc = u64::from_be_bytes(raw[at..at + 8].try_into().ok()?);
    Some((hlc, &raw[HEAD..]))
}

/// The closed timestamp: `since_ms` is the wall time (ms) from which new commits may still be logged
/// (the oldest live lease's grant, or now), `drift_ms` the clock-drift bound.
pub(crate) fn closed_hlc(since_ms: u64, drift_ms: u64) -> u64 {
    (since_ms.saturating_sub(2 * drift_ms) << HLC_LOGICAL_BITS).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesta_proto::RequestId;

    #[test]
    fn entries_of_a_shard_sort_by_order_and_stay_in_its_range() {
        let o = |hlc, writer| Order { hlc, origin: 1, writer: RequestId(writer) };
        let a = entry_key(7, &o(5, 2), b"k");
        let b = entry_key(7, &o(5, 3), b"a");
        let c = entry_key(7, &o(6, 1), b"a");
        assert!(a < b && b < c);
        let (first, end) = shard_range(7);
        assert!(first <= a && c < end);
        assert!(end <= shard_range(8).0);
        assert!(from_hlc(7, 6) <= c && from_hlc(7, 6) > b);
        assert_eq!(parse(&b), Some((5, &b"a"[..])));
        assert_eq!(parse(b"\xff\xff\xff\xff\x00node"), None);
        let (_, last_end) = shard_range(u32::MAX);
        assert!(entry_key(u32::MAX, &o(u64::MAX, u128::MAX), b"\xff") < last_end);
    }

    #[test]
    fn closed_timestamp_trails_by_twice_the_drift() {
        assert_eq!(closed_hlc(10_000, 100), (9_800 << HLC_LOGICAL_BITS) - 1);
        assert_eq!(closed_hlc(0, 100), 0);
    }
}
