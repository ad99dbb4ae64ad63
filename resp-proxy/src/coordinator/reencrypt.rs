//! Rewriting records under the current key after a rotation (`VESTA.REENCRYPT`, driven shard by shard
//! by `vesta admin reencrypt`). Each record is rewritten through the same two-phase commit as a
//! client's write, and only if it is still the copy that was scanned: a client write that came in
//! meanwhile is newer and already sealed under the current key, and is never overwritten.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use vesta_proto::{PrepareKind, Record};

use super::{CoordError, Coordinator, CounterChange, Decision, NewValue, ScanRequest};
use crate::crypto::KeyId;
use crate::metrics as m;
use crate::resp::Reply;

/// What one call did to one shard's records `[offset, next)` (in key order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReencryptPage {
    /// Where the next call starts; `None` once the shard is done.
    pub next: Option<u64>,
    /// Records rewritten under the current key.
    pub rewritten: u64,
    /// Records that changed between the scan and the rewrite (a newer write is sealed with the
    /// current key already).
    pub changed: u64,
    /// Records that could not be rewritten: they fail to decrypt, or the write failed. Counted under
    /// their key id in `by_key`.
    pub failed: u64,
    /// Per key id (0: stored in the clear), the records of the range after this call; expired records
    /// (not rewritten: they are purged after the grace period) included. Tombstones hold no value and
    /// are not counted.
    pub by_key: BTreeMap<KeyId, u64>,
}

impl Coordinator {
    /// Rewrites under the current key the records of `shard` from `offset` (at most `count`) that are
    /// under an older key or in the clear; with `dry_run`, only counts them.
    pub async fn reencrypt(
        self: &Arc<Self>,
        shard: u32,
        offset: u64,
        count: u64,
        dry_run: bool,
    ) -> Result<ReencryptPage, CoordError> {
        let current = match (self.encryption.sealer(), dry_run) {
            (Some(s), _) => s.current(),
            (None, true) => 0,
            (None, false) => {
                return Err(CoordError::Seal(crate::crypto::SealError::NoCurrentKey));
            }
        };
        let records = self.shard_records(shard).await?;
        let start = (offset as usize).min(records.len());
        let end = start.saturating_add(count as usize).min(records.len());
        let mut page = ReencryptPage { next: (end < records.len()).then_some(end as u64), ..Default::default() };
        let now = self.now_ms();
        for (namespace, key, stored) in &records[start..end] {
            if stored.meta.flags.tombstone() {
                continue;
            }
            let key_id = if stored.meta.flags.encrypted() { stored.meta.key_id } else { 0 };
            if dry_run || key_id == current || !stored.meta.live_at(now) {
                *page.by_key.entry(key_id).or_default() += 1;
                continue;
            }
            match self.rewrite(namespace, key, stored).await {
                Ok(true) => {
                    page.rewritten += 1;
                    *page.by_key.entry(current).or_default() += 1;
                }
                Ok(false) => page.changed += 1,
                Err(_) => {
                    page.failed += 1;
                    *page.by_key.entry(key_id).or_default() += 1;
                }
            }
        }
        metrics::counter!(m::REENCRYPTED).increment(page.rewritten);
        Ok(page)
    }

    /// Every key of one shard with its newest copy (metadata only), dead ones included, in key order.
    async fn shard_records(self: &Arc<Self>, shard: u32) -> Result<Vec<(Bytes, Bytes, Record)>, CoordError> {
        if shard >= self.shards {
            return Ok(Vec::new());
        }
        let req = ScanRequest {
            namespace: None,
            from_shard: shard,
            want: usize::MAX,
            want_values: false,
            include_dead: true,
            node_timeout: Some(std::time::Duration::from_secs(30)),
        };
        let deadline = tokio::time::Instant::now() + self.settings.deadline;
        let mut attempt = 0;
        loop {
            let map = self.map();
            match self.scan_group(map.storage_group(shard), shard, shard + 1, &req, usize::MAX).await {
                Ok((records, _)) => return Ok(records),
                Err(CoordError::Moved) if tokio::time::Instant::now() < deadline => {
                    super::after_moved(self, attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `stored`'s value again (sealed under the current key), keeping its expiry and counter,
    /// if it is still the newest copy; `Ok(false)` if it changed meanwhile.
    async fn rewrite(self: &Arc<Self>, namespace: &Bytes, key: &Bytes, stored: &Record) -> Result<bool, CoordError> {
        let seen = stored.meta.order();
        let reply = self
            .write(namespace, key, PrepareKind::ReadModifyWrite, true, move |live, _| match live {
                Some(r) if r.meta.order() == seen => Decision::Write(
                    NewValue {
                        value: r.value.clone(),
                        expires_at: r.meta.expires_at,
                        tombstone: false,
                        counter: CounterChange::Keep,
                    },
                    Reply::Int(1),
                ),
                _ => Decision::Answer(Reply::Int(0)),
            })
            .await?;
        Ok(reply == Reply::Int(1))
    }
}
