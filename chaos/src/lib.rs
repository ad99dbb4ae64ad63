//! Chaos schedules against a multi-process Vesta cluster (issue 10's proof): random but seeded fault
//! schedules — `kill -9` and restart of store nodes, SIGSTOP/SIGCONT, `kill -9` of a proxy mid-load, a
//! proxy whose clock is off (within the drift bound, or by seconds), clients that read their replies
//! slowly, a redistribution running — while clients spread over three proxies record what they sent
//! and saw. Each history is checked by [`vesta_lincheck`] (linearizability, with key expiry in the
//! model), and keys whose fate is known are read back after the run: every acknowledged write must be
//! there, no acknowledged delete or expiry may be undone.
//!
//! Reading order: [`schedule`] (what goes wrong when) → [`run`] (one schedule end to end) →
//! [`workload`] (the clients and what they record) → [`cluster`] (the processes) → [`client`] (a RESP
//! client that never retries on its own).

pub mod client;
pub mod cluster;
pub mod run;
pub mod schedule;
pub mod workload;

use std::path::Path;

pub use run::{run, Outcome, RunError};
pub use schedule::Schedule;

/// Keeps what a failing schedule needs for a post-mortem: its history (JSON, replayable through the
/// checker) and the checker's report.
pub fn save_failure(dir: &Path, outcome: &Outcome) -> std::io::Result<std::path::PathBuf> {
    let dir = dir.join(format!("seed-{}", outcome.seed));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("history.json"), vesta_lincheck::to_json(&outcome.history))?;
    let report = outcome.report.as_ref().map(|r| r.to_string()).unwrap_or_default();
    std::fs::write(dir.join("report.txt"), format!("{}\n\n{report}", outcome.schedule))?;
    Ok(dir)
}
