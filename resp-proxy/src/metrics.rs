//! Metric names and the Prometheus endpoint.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Commands by `cmd`.
pub const COMMANDS: &str = "vesta_proxy_commands_total";
/// Command latency by `cmd`, seconds.
pub const COMMAND_SECONDS: &str = "vesta_proxy_command_seconds";
/// Quorum outcomes by `op` (read, write, write_many) and `outcome` (ok, retried_locked, retried_late,
/// retried_moved, contended, moved, carried: settled in another write's two-phase commit, below_quorum, outcome_unknown, clock_skew, too_large, encryption:
/// a value that failed to decrypt, or to seal).
pub const QUORUM: &str = "vesta_proxy_quorum_total";
/// Writes taken along by another write of the same key (`carried`/`carried_failed` in [`QUORUM`]):
/// how many one write took, per write that took any.
pub const RIDERS: &str = "vesta_proxy_write_riders";
/// Commands of one pipeline run as one group (writes: one round of prepares and one of commits per
/// store node; reads: one batch of reads per node), per group of more than one; `op` = write or read.
pub const GROUPED: &str = "vesta_proxy_grouped_commands";
/// Write attempts started over because the prepare leases were (nearly) over when the decision could
/// be made (a stalled coordinator, slow replies).
pub const LATE_DECISIONS: &str = "vesta_proxy_late_decisions_total";
/// Writes refused because clocks disagree by more than `max_clock_drift_ms`.
pub const CLOCK_SKEW: &str = "vesta_proxy_clock_skew_refusals_total";
/// Repairs sent, by `kind` (read: before answering; background: stale or failed replicas).
pub const REPAIRS: &str = "vesta_proxy_repairs_total";
/// 1 while the proxy holds a connection to the store node `node`.
pub const STORE_UP: &str = "vesta_proxy_store_up";
pub const CLIENT_CONNECTIONS: &str = "vesta_proxy_client_connections";
/// The shard map version this proxy routes by.
pub const MAP_VERSION: &str = "vesta_proxy_map_version";
/// Requests refused with `Protocol error: …` (the connection is closed), by `reason` (bulk_too_long:
/// a value over `proto-max-bulk-len`; see `vesta_resp::ParseError::reason` for the others).
pub const PROTOCOL_ERRORS: &str = "vesta_proxy_protocol_errors_total";
/// Connections closed for holding more than `client-query-buffer-limit` bytes of one unparsed request.
pub const QUERY_BUFFER_DISCONNECTIONS: &str = "vesta_proxy_query_buffer_limit_disconnections_total";
/// Connections closed for holding more replies than `client-output-buffer-limit` allows, by `limit`
/// (hard, soft).
pub const OUTPUT_BUFFER_DISCONNECTIONS: &str = "vesta_proxy_output_buffer_limit_disconnections_total";
/// Connections closed by the idle `timeout`.
pub const IDLE_TIMEOUT_DISCONNECTIONS: &str = "vesta_proxy_idle_timeout_disconnections_total";
/// Connections whose accept waited for the accept-rate limit (`max_accept_rate`).
pub const ACCEPTS_DELAYED: &str = "vesta_proxy_accepts_delayed_total";
/// Data commands refused with `-TRYAGAIN proxy overloaded, try again`, by `reason` (queue_full: the
/// surge queue was full; codel: overloaded and waited too long; timeout: waited for its whole deadline).
pub const OVERLOAD_REFUSALS: &str = "vesta_proxy_overload_refusals_total";
/// ACL refusals by `reason`: auth (a wrong password or unknown/disabled user), auth_rate_limited (an
/// AUTH refused unchecked: too many failures from that address), command, key, database.
pub const ACL_DENIED: &str = "vesta_proxy_acl_denied_total";
/// Connections refused by protected mode (a non-loopback client while the default user has no password).
pub const PROTECTED_MODE_REFUSALS: &str = "vesta_proxy_protected_mode_refusals_total";

/// Stored values that failed to decrypt, by `reason` (unknown_key, authentication: tampered or moved,
/// malformed). The client gets an error, never the bytes.
pub const DECRYPT_FAILURES: &str = "vesta_proxy_decrypt_failures_total";
/// Records rewritten under the current key by `VESTA.REENCRYPT`.
pub const REENCRYPTED: &str = "vesta_proxy_reencrypted_records_total";

const LATENCY_BUCKETS: &[f64] =
    &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Serves `/metrics` on `addr` (inside a tokio runtime). One exporter per process: `vesta dev` runs
/// stores and proxy in one process and shares it.
pub fn install_exporter(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| b.install())
        .map_err(|e| format!("metrics endpoint on {addr}: {e}"))
}
