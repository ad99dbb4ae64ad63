//! Metric names and the Prometheus endpoint.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Operations by `op` and `status`.
pub const OPERATIONS: &str = "vesta_store_operations_total";
/// Record lookups by `result` (hit, miss) in the cache of records written last (`record_cache.rs`).
pub const RECORD_CACHE: &str = "vesta_store_record_cache_lookups_total";
/// Latency of operations by `op`, in seconds.
pub const OPERATION_SECONDS: &str = "vesta_store_operation_seconds";
/// Prepares (and repairs) refused because another request held the key.
pub const LOCK_CONFLICTS: &str = "vesta_store_lock_conflicts_total";
/// Leases that ran out: reclaimed by another prepare, found expired by a late commit, or reaped.
pub const LEASE_EXPIRIES: &str = "vesta_store_lease_expiries_total";
/// Leases currently held.
pub const LEASES_HELD: &str = "vesta_store_leases_held";
/// Requests being processed.
pub const IN_FLIGHT: &str = "vesta_store_in_flight_requests";
/// Requests refused with `overloaded`.
pub const OVERLOADED: &str = "vesta_store_overloaded_total";
/// Requests per batch (`Request::Batch`: the key operations of concurrent commands, handled at once).
pub const BATCH_REQUESTS: &str = "vesta_store_batch_requests";
/// Commits folded into one engine write.
pub const GROUP_COMMIT_JOBS: &str = "vesta_store_group_commit_jobs";
/// Writes that would have stalled in RocksDB (memtables full, too many level-0 files) and went to the
/// group-commit thread instead of being made in place (`sync = periodic | off`).
pub const WRITES_STALLED: &str = "vesta_store_writes_stalled_total";
pub const CONNECTIONS: &str = "vesta_store_connections";
pub const ENGINE_ESTIMATED_KEYS: &str = "vesta_store_engine_estimated_keys";
pub const ENGINE_SST_BYTES: &str = "vesta_store_engine_sst_bytes";
pub const ENGINE_PENDING_COMPACTION_BYTES: &str = "vesta_store_engine_pending_compaction_bytes";
pub const EXPIRED_PURGED: &str = "vesta_store_expired_purged_total";
/// The shard map version the node serves.
pub const MAP_VERSION: &str = "vesta_store_map_version";
pub const OWNED_SHARDS: &str = "vesta_store_owned_shards";
/// Records sent to other nodes, by `why` (`forward`: a live write to a moving shard; `transfer`: a
/// redistribution or repair copy) and `outcome`.
pub const COPIES_SENT: &str = "vesta_store_copies_sent_total";
/// 1 while the node serves nothing until a full repair (it was out of service longer than the grace).
pub const NEEDS_REPAIR: &str = "vesta_store_needs_repair";
/// Proxy requests refused because the node needs a full repair.
pub const NEEDS_REPAIR_REFUSALS: &str = "vesta_store_needs_repair_refusals_total";
/// Commits refused because a newer copy was already there (a late prepare's commit).
pub const STALE_COMMITS: &str = "vesta_store_stale_commits_refused_total";
/// With the change log on: commits refused because they are stamped earlier than their lease was
/// granted, beyond the clock-drift bound (they could slip below the log's closed timestamp).
pub const CLOCK_BEHIND: &str = "vesta_store_clock_behind_refusals_total";
/// Commits refused because their timestamp is too far ahead of this node's clock.
pub const CLOCK_AHEAD: &str = "vesta_store_clock_ahead_refusals_total";
/// 1 while the node cannot confirm its ownership lease with etcd (it refuses the shards it is moving).
pub const FENCED: &str = "vesta_store_fenced";
/// Prepares, reads and scans of a moving shard refused because the lease was not confirmed in time.
pub const FENCED_REFUSALS: &str = "vesta_store_fenced_refusals_total";
/// Change-log entries written (commits of this site's writes, for cross-site replication).
pub const CHANGELOG_WRITTEN: &str = "vesta_store_changelog_entries_written_total";
/// Change-log entries dropped because every peer site confirmed them.
pub const CHANGELOG_TRIMMED: &str = "vesta_store_changelog_entries_trimmed_total";
/// Records deleted because their shard moved away.
pub const DROPPED_RECORDS: &str = "vesta_store_dropped_records_total";

const LATENCY_BUCKETS: &[f64] =
    &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Serves `/metrics` on `addr` (must be called inside a tokio runtime).
pub fn install_exporter(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(OPERATION_SECONDS.into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(GROUP_COMMIT_JOBS.into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(BATCH_REQUESTS.into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0],
            )
        })
        .and_then(|b| b.install())
        .map_err(|e| format!("metrics endpoint on {addr}: {e}"))
}
