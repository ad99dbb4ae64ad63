//! SCAN KEYS DBSIZE RANDOMKEY FLUSHDB FLUSHALL: commands over the whole key space, run as a walk over
//! the shards (see `coordinator::scan`).
//!
//! A SCAN cursor is the number of the next shard to walk. A call walks whole shards until COUNT keys
//! have been seen, so a key that exists for the whole iteration is returned, and one that is added or
//! removed meanwhile may or may not be — Redis's guarantee. FLUSHDB and FLUSHALL delete key by key (a
//! tombstone each): they are not atomic; a key written while a flush runs may survive it.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};

use super::pattern;
use super::{int_arg, syntax_error, DataCommand};
use crate::coordinator::{CoordError, Coordinator, ScanRequest};
use crate::resp::Reply;

/// Deletes a flush keeps in flight at once.
const FLUSH_CONCURRENCY: usize = 64;

#[derive(Debug)]
pub enum Cmd {
    Scan { cursor: u32, pattern: Option<Bytes>, count: usize, only_strings: bool },
    Keys(Bytes),
    DbSize,
    RandomKey,
    Flush { all: bool },
}

impl Cmd {
    pub fn parse(name: &str, a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
        Some(match name {
            "scan" => parse_scan(a),
            "keys" => Ok(Cmd::Keys(a[0].clone())),
            "dbsize" => Ok(Cmd::DbSize),
            "randomkey" => Ok(Cmd::RandomKey),
            "flushdb" | "flushall" => match a {
                [] => Ok(Cmd::Flush { all: name == "flushall" }),
                [mode] if mode.eq_ignore_ascii_case(b"async") || mode.eq_ignore_ascii_case(b"sync") => {
                    Ok(Cmd::Flush { all: name == "flushall" })
                }
                _ => Err(syntax_error()),
            },
            _ => return None,
        })
    }

    pub async fn execute(self, c: Arc<Coordinator>, ns: Bytes) -> Reply {
        self.run(&c, &ns).await.unwrap_or_else(|e| e.reply())
    }

    async fn run(self, c: &Arc<Coordinator>, ns: &Bytes) -> Result<Reply, CoordError> {
        let walk = |from_shard, want, namespace: Option<Bytes>| ScanRequest {
            namespace,
            from_shard,
            want,
            want_values: false,
            include_dead: false,
            node_timeout: None,
        };
        Ok(match self {
            Cmd::Scan { cursor, pattern, count, only_strings } => {
                if cursor >= c.shard_count() {
                    return Ok(Reply::Array(vec![Reply::bulk("0"), Reply::Array(vec![])]));
                }
                let page = c.scan(&walk(cursor, count, Some(ns.clone()))).await?;
                let keys = page
                    .keys
                    .into_iter()
                    .filter(|(_, k, _)| only_strings && pattern.as_ref().is_none_or(|p| pattern::matches(p, k)))
                    .map(|(_, k, _)| Reply::Bulk(k))
                    .collect();
                let next = page.next_shard.unwrap_or(0);
                Reply::Array(vec![Reply::Bulk(Bytes::from(next.to_string())), Reply::Array(keys)])
            }
            Cmd::Keys(p) => {
                let page = c.scan(&walk(0, usize::MAX, Some(ns.clone()))).await?;
                let all = p.as_ref() == b"*";
                Reply::Array(
                    page.keys
                        .into_iter()
                        .filter(|(_, k, _)| all || pattern::matches(&p, k))
                        .map(|(_, k, _)| Reply::Bulk(k))
                        .collect(),
                )
            }
            Cmd::DbSize => Reply::Int(c.scan(&walk(0, usize::MAX, Some(ns.clone()))).await?.keys.len() as i64),
            Cmd::RandomKey => {
                // From a random shard to the end, then from the start: the first shard with keys gives one.
                let start = rand::random::<u32>() % c.shard_count();
                let mut page = c.scan(&walk(start, 1, Some(ns.clone()))).await?;
                if page.keys.is_empty() && start > 0 {
                    page = c.scan(&walk(0, 1, Some(ns.clone()))).await?;
                }
                if page.keys.is_empty() {
                    Reply::Nil
                } else {
                    let i = rand::random::<u32>() as usize % page.keys.len();
                    Reply::Bulk(page.keys.swap_remove(i).1)
                }
            }
            Cmd::Flush { all } => {
                let page = c.scan(&walk(0, usize::MAX, (!all).then(|| ns.clone()))).await?;
                let deletes = page.keys.into_iter().map(|(namespace, key, _)| {
                    let c = c.clone();
                    async move { DataCommand::Keys(super::keys::Cmd::Del(vec![key])).execute(c, namespace).await }
                });
                let failed = stream::iter(deletes)
                    .buffer_unordered(FLUSH_CONCURRENCY)
                    .filter(|r| std::future::ready(r.is_error()))
                    .next()
                    .await;
                failed.unwrap_or(Reply::OK)
            }
        })
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
fn parse_scan(a: &[Bytes]) -> Result<Cmd, Reply> {
    let cursor = std::str::from_utf8(&a[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::error("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut only_strings) = (None, 10usize, true);
    let mut i = 1;
    while i < a.len() {
        let Some(arg) = a.get(i + 1) else { return Err(syntax_error()) };
        match a[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(arg.clone()).filter(|p| p.as_ref() != b"*"),
            b"COUNT" => match int_arg(arg)? {
                n if n < 1 => return Err(syntax_error()),
                n => count = n as usize,
            },
            // Every Vesta key holds a string.
            b"TYPE" => only_strings = arg.eq_ignore_ascii_case(b"string"),
            _ => return Err(syntax_error()),
        }
        i += 2;
    }
    Ok(Cmd::Scan { cursor: u32::try_from(cursor).unwrap_or(u32::MAX), pattern, count, only_strings })
}
