use bytes::Bytes;
use vesta_proto::{Record, Reply, Scan, ScanEntry, ScanPage, Status};

use crate::key;
use crate::node::StoreNode;
use crate::ops::reply_copy;

/// Largest page a node returns, whatever was asked.
const MAX_PAGE: usize = 10_000;
/// Keys examined per page beyond the page size (filtered-out keys still cost a visit); bounds how long
/// one scan request can hold a worker when most keys are filtered out.
const EXAMINE_SLACK: usize = 1_000;
/// Bytes of keys and values per page, at most (plus one record): a page of large values must fit in one
/// frame of the internal protocol, far below its 64 MiB limit, and never hold much memory at once.
pub(crate) const MAX_PAGE_BYTES: usize = 4 << 20;

impl StoreNode {
    /// One page of the live records (and dead ones within their grace period, when asked) of a shard
    /// range, in storage-key order.
    /// The `next` cursor resumes after the last key examined, so a page can be short — even empty — and
    /// still not be the end; only `next: None` is the end.
    pub(crate) fn scan(&self, s: Scan) -> Result<ScanPage, Reply> {
        self.scan_page(s, true)
    }

    /// [`scan`](Self::scan); `serving_only` refuses shards this node does not serve to proxies.
    pub(crate) fn scan_page(&self, s: Scan, serving_only: bool) -> Result<ScanPage, Reply> {
        if s.shard_from >= s.shard_to || s.shard_to > self.settings.shards {
            return Err(Reply::error(
                Status::BadRequest,
                format!("bad shard range {}..{} (the cluster has {})", s.shard_from, s.shard_to, self.settings.shards),
            ));
        }
        if serving_only {
            self.check_serving()?;
            let ownership = self.ownership();
            if let Some(shard) = (s.shard_from..s.shard_to).find(|&sh| !ownership.serves(sh)) {
                return Err(crate::node::not_owner(shard));
            }
            (s.shard_from..s.shard_to).try_for_each(|sh| self.fence().check(&ownership, sh))?;
        }
        let range_start = key::shard_start(s.shard_from as u64);
        let range_end = key::shard_start(s.shard_to as u64);
        let start = crate::ops::resume_after(s.after.as_deref(), range_start, &range_end, "scan")?;
        let limit = (s.limit as usize).clamp(1, MAX_PAGE);
        let budget = limit + EXAMINE_SLACK;
        let (now, grace) = (self.clock.wall_ms(), self.settings.grace_ms);
        let (mut entries, mut examined, mut last) = (Vec::new(), 0usize, None::<Vec<u8>>);
        let (mut bytes, mut bad) = (0usize, None);
        self.engine
            .scan(&start, &range_end, &mut |k, v| {
                examined += 1;
                last = Some(k.to_vec());
                let Some((shard, namespace, user_key)) = key::decode(k) else {
                    return examined < budget;
                };
                if s.namespace.as_ref().is_some_and(|ns| *ns != namespace) {
                    return examined < budget;
                }
                match Record::decode(v, s.want_values) {
                    // Dead past the grace period: as good as purged.
                    Ok(rec) if rec.meta.purgeable_at(now, grace) => {}
                    Ok(rec) if !s.include_dead && !rec.meta.live_at(now) => {}
                    Ok(rec) => {
                        let record = reply_copy(rec, s.want_values);
                        bytes += namespace.len() + user_key.len() + record.encoded_len();
                        entries.push(ScanEntry { shard, namespace, key: user_key, record });
                    }
                    Err(e) => {
                        bad = Some(e.to_string());
                        return false;
                    }
                }
                entries.len() < limit && examined < budget && bytes < MAX_PAGE_BYTES
            })
            .map_err(crate::node::internal)?;
        if let Some(e) = bad {
            return Err(Reply::error(Status::Internal, e));
        }
        let exhausted = entries.len() < limit && examined < budget && bytes < MAX_PAGE_BYTES;
        let next = if exhausted { None } else { last.map(Bytes::from) };
        Ok(ScanPage { entries, next })
    }
}
