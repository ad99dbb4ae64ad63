//! `VESTA.REENCRYPT`: the proxy's side of `vesta admin reencrypt` (docs/security.md → Rotation).
//!
//! - `VESTA.REENCRYPT KEYS` → `[shards, current key id (0: encryption off), key id…]`
//! - `VESTA.REENCRYPT shard offset count [DRYRUN]` → `[next offset (-1: shard done), rewritten, changed,
//!   failed, [key id, records, …]]`: rewrites the records `[offset, offset + count)` of the shard (in
//!   key order) that are under an older key or in the clear; DRYRUN only counts them.

use std::sync::Arc;

use bytes::Bytes;

use super::shown;
use crate::coordinator::Coordinator;
use crate::resp::Reply;

fn number(b: &Bytes) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn usage() -> Reply {
    Reply::error("ERR syntax: VESTA.REENCRYPT KEYS | VESTA.REENCRYPT shard offset count [DRYRUN]")
}

pub async fn run(coordinator: Arc<Coordinator>, a: Vec<Bytes>) -> Reply {
    if a.len() == 1 && a[0].eq_ignore_ascii_case(b"keys") {
        let mut out = vec![Reply::Int(coordinator.shard_count() as i64)];
        match coordinator.encryption().sealer() {
            Some(s) => {
                out.push(Reply::Int(s.current() as i64));
                out.extend(s.ring().ids().map(|id| Reply::Int(id as i64)));
            }
            None => out.push(Reply::Int(0)),
        }
        return Reply::Array(out);
    }
    let dry_run = match a.len() {
        3 => false,
        4 if a[3].eq_ignore_ascii_case(b"dryrun") => true,
        4 => return Reply::error(format!("ERR unknown option '{}'; expected DRYRUN", shown(&a[3]))),
        _ => return usage(),
    };
    let (Some(shard), Some(offset), Some(count)) = (number(&a[0]), number(&a[1]), number(&a[2])) else {
        return Reply::error("ERR shard, offset and count must be non-negative integers");
    };
    if shard >= coordinator.shard_count() as u64 {
        return Reply::error(format!("ERR no shard {shard}: the cluster has {} shards", coordinator.shard_count()));
    }
    if count == 0 {
        return Reply::error("ERR count must be at least 1");
    }
    match coordinator.reencrypt(shard as u32, offset, count, dry_run).await {
        Ok(page) => Reply::Array(vec![
            Reply::Int(page.next.map_or(-1, |n| n as i64)),
            Reply::Int(page.rewritten as i64),
            Reply::Int(page.changed as i64),
            Reply::Int(page.failed as i64),
            Reply::Array(
                page.by_key.iter().flat_map(|(id, n)| [Reply::Int(*id as i64), Reply::Int(*n as i64)]).collect(),
            ),
        ]),
        Err(crate::coordinator::CoordError::Seal(_)) => {
            Reply::error("ERR encryption is off on this proxy: no key to re-encrypt with")
        }
        Err(e) => e.reply(),
    }
}
