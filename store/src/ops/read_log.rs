use bytes::Bytes;
use vesta_proto::{LogEntry, LogPage, ReadLog, Record, Reply, Status};

use crate::changelog;
use crate::key;
use crate::node::{internal, StoreNode};
use crate::ops::scan::MAX_PAGE_BYTES;

/// Largest page a node returns, whatever was asked.
const MAX_PAGE: usize = 10_000;

impl StoreNode {
    /// One page of a shard's change log, in the order of copies, never past its closed timestamp (see
    /// `changelog.rs`). Served whatever the node's shard ownership: the log holds what this replica
    /// committed, and a shipper reads it from several replicas.
    pub(crate) fn read_log(&self, r: ReadLog) -> Result<LogPage, Reply> {
        self.check_changelog(r.shard)?;
        // Taken before the scan: an entry logged while the page is read may land below a closed
        // timestamp taken later, but never below this one.
        let closed_hlc = self.closed_hlc(r.shard);
        let (first, end) = changelog::shard_range(r.shard);
        let start = match r.after.as_deref() {
            Some(cursor) => crate::ops::resume_after(Some(cursor), first, &end, "change-log")?,
            None => changelog::from_hlc(r.shard, r.since_hlc),
        };
        let limit = (r.limit as usize).clamp(1, MAX_PAGE);
        let (mut entries, mut bytes, mut last, mut full, mut bad) = (Vec::new(), 0usize, None, false, None);
        self.engine
            .scan(&start, &end, &mut |k, v| {
                let Some((hlc, skey)) = changelog::parse(k) else {
                    bad = Some("a malformed change-log key".to_string());
                    return false;
                };
                if hlc > closed_hlc {
                    return false;
                }
                let (Some((_, namespace, key)), Ok(record)) = (key::decode(skey), Record::decode(v, true)) else {
                    bad = Some(format!("a malformed change-log entry at hlc {hlc}"));
                    return false;
                };
                bytes += k.len() + v.len();
                entries.push(LogEntry { namespace, key, record });
                last = Some(k.to_vec());
                full = entries.len() >= limit || bytes >= MAX_PAGE_BYTES;
                !full
            })
            .map_err(internal)?;
        if let Some(why) = bad {
            return Err(Reply::error(Status::Internal, why));
        }
        Ok(LogPage { entries, next: last.map(Bytes::from).or(r.after), more: full, closed_hlc })
    }

    pub(crate) fn check_changelog(&self, shard: u32) -> Result<(), Reply> {
        if self.settings.changelog_origin.is_none() {
            return Err(Reply::error(Status::BadRequest, "this node keeps no change log (changelog_origin is unset)"));
        }
        if shard >= self.settings.shards {
            return Err(Reply::error(
                Status::BadRequest,
                format!("shard {shard} out of range: the cluster has {}", self.settings.shards),
            ));
        }
        Ok(())
    }

    /// See `changelog.rs`: no commit can still be logged for `shard` at or below this HLC.
    pub(crate) fn closed_hlc(&self, shard: u32) -> u64 {
        let (mono, wall) = (self.clock.mono_ms(), self.clock.wall_ms());
        let prefix = shard.to_be_bytes();
        let since = match self.leases.oldest_grant(mono, |k| k.starts_with(&prefix) && !key::is_node_own(k)) {
            Some(granted) => wall.saturating_sub(mono.saturating_sub(granted)),
            None => wall,
        };
        changelog::closed_hlc(since, self.settings.max_clock_drift_ms)
    }
}
