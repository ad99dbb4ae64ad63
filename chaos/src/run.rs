//! One schedule from start to verdict: start the cluster, run the load, play the faults, heal, read every
//! key once more, check the history.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use vesta_lincheck::{check, Entry, OpResult, Options, Report};

use crate::client::{Client, Reply};
use crate::cluster::{Cluster, ClusterError};
use crate::schedule::{Fault, Schedule};
use crate::workload::{self, Command, Fate, Outcome as Seen, Shared};

/// What one schedule came to.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub seed: u64,
    pub schedule: String,
    /// Commands in the history (those that certainly did nothing — a refused write, a failed read — are
    /// left out), and how many of them ended with an unknown outcome (an error after the commit phase
    /// began, a timeout, a dropped connection).
    pub ops: usize,
    pub unknown: usize,
    /// Keys whose history is not linearizable, and keys the checker could not decide within its budget.
    pub violations: usize,
    pub undecided: usize,
    /// Keys written once and acknowledged that did not read back after the run.
    pub lost: usize,
    /// Keys deleted or expired (acknowledged) that read back after the run.
    pub returned: usize,
    #[serde(skip)]
    pub report: Option<Report>,
    #[serde(skip)]
    pub history: Vec<Entry>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations == 0 && self.undecided == 0 && self.lost == 0 && self.returned == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("{0}")]
    Heal(String),
}

/// A timed step of the fault timeline: a fault's start, or its end.
enum Step {
    Begin(Fault),
    End(Fault),
}

pub fn run(schedule: &Schedule) -> Result<Outcome, RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut cluster = Cluster::start(&schedule.proxy_offsets_ms)?;
    let shared = Arc::new(Shared::new(schedule.clients));
    let proxies: Vec<_> = cluster.proxies.iter().map(|p| p.addr).collect();
    let clients: Vec<_> = (0..schedule.clients)
        .map(|i| runtime.spawn(workload::client(i, proxies[i % proxies.len()], schedule.seed, shared.clone())))
        .collect();

    // The fault timeline, played from this thread (starting and killing processes blocks).
    let mut steps: Vec<(u64, Step)> = Vec::new();
    for (at, fault) in &schedule.faults {
        let end = match fault {
            Fault::KillStore { down_ms, .. } | Fault::KillProxy { down_ms, .. } => Some(at + down_ms),
            Fault::StopStore { ms, .. } => Some(at + ms),
            Fault::SlowReader { .. } | Fault::AddNode => None,
        };
        steps.push((*at, Step::Begin(fault.clone())));
        if let Some(end) = end {
            steps.push((end.min(schedule.load_ms), Step::End(fault.clone())));
        }
    }
    steps.sort_by_key(|(at, _)| *at);
    let started = Instant::now();
    let mut redistribution: Option<std::thread::JoinHandle<Result<String, ClusterError>>> = None;
    for (at, step) in steps {
        let wait = Duration::from_millis(at).saturating_sub(started.elapsed());
        std::thread::sleep(wait);
        match step {
            Step::Begin(Fault::KillStore { node, .. }) => cluster.kill_store(node),
            Step::End(Fault::KillStore { node, .. }) => cluster.start_store(node)?,
            Step::Begin(Fault::StopStore { node, .. }) => cluster.pause_store(node, true),
            Step::End(Fault::StopStore { node, .. }) => cluster.pause_store(node, false),
            Step::Begin(Fault::KillProxy { proxy, .. }) => cluster.kill_proxy(proxy),
            Step::End(Fault::KillProxy { proxy, .. }) => cluster.start_proxy(proxy)?,
            Step::Begin(Fault::SlowReader { client, ms }) => shared.slow[client].store(ms, Ordering::Relaxed),
            Step::Begin(Fault::AddNode) => {
                let (etcd, name, spare) = (cluster.etcd.url.clone(), cluster.name.clone(), cluster.spare_spec());
                redistribution = Some(std::thread::spawn(move || add_node(&etcd, &name, &spare)));
            }
            Step::End(_) => {}
        }
    }
    std::thread::sleep(Duration::from_millis(schedule.load_ms).saturating_sub(started.elapsed()));
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = runtime.block_on(c);
    }

    // Heal: every process back, a redistribution finished (run again if a fault broke it off).
    cluster.heal()?;
    if let Some(add) = redistribution {
        let first = add.join().map_err(|_| RunError::Heal("the add-node thread panicked".into()))?;
        if first.is_err() {
            let mut last = first;
            for _ in 0..3 {
                last = add_node(&cluster.etcd.url, &cluster.name, &cluster.spare_spec());
                if last.is_ok() {
                    break;
                }
            }
            last.map_err(|e| RunError::Heal(format!("add-node did not complete after the faults: {e}")))?;
        }
    }

    // Every key read once more through every proxy, now that nothing is failing.
    let mut history = shared.recorder.take();
    let fates = std::mem::take(&mut *shared.fates.lock().unwrap_or_else(|p| p.into_inner()));
    let mut keys: Vec<Vec<u8>> = history.iter().map(|e| e.key.clone()).collect();
    keys.sort();
    keys.dedup();
    // Past every TTL a "gone" key was given, and past the skew the checker allows.
    std::thread::sleep(Duration::from_millis(300 + schedule.clock_skew_ms()));
    // A proxy whose clock is off beyond the drift bound refuses every command; the others read.
    let readers: Vec<_> = proxies
        .iter()
        .zip(&schedule.proxy_offsets_ms)
        .filter(|(_, offset)| offset.unsigned_abs() <= crate::schedule::DRIFT_BOUND_MS)
        .map(|(addr, _)| *addr)
        .collect();
    let finals = runtime.block_on(final_reads(&readers, &keys, &shared))?;
    history.extend(shared.recorder.take());

    let (mut lost, mut returned) = (0, 0);
    for (key, fate) in &fates {
        let last = finals.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        match (fate, last) {
            (Fate::Durable(v), Some(Some(got))) if got == v => {}
            (Fate::Durable(_), _) => lost += 1,
            (Fate::Gone, Some(None)) => {}
            (Fate::Gone, _) => returned += 1,
        }
    }
    // A generous budget: undecided is a failure too, and memory is plentiful.
    let options = Options { clock_skew_ms: schedule.clock_skew_ms(), max_steps: 60_000_000, ..Options::default() };
    let report = check(&history, &options);
    let unknown = history.iter().filter(|e| e.result.is_none()).count();
    Ok(Outcome {
        seed: schedule.seed,
        schedule: schedule.describe(),
        ops: history.len(),
        unknown,
        violations: report.violations().count(),
        undecided: report.undecided().count(),
        lost,
        returned,
        report: Some(report),
        history,
    })
}

fn add_node(etcd: &str, cluster: &str, spare: &str) -> Result<String, ClusterError> {
    crate::cluster::admin(etcd, cluster, &["add-node", spare, "--max-rate-kb", "0"])
}

/// Reads every key through every proxy given (recorded in the history as client 1000 + proxy), retrying
/// a proxy that is not serving yet; returns the value read per key through the first one.
async fn final_reads(
    proxies: &[std::net::SocketAddr],
    keys: &[Vec<u8>],
    shared: &Shared,
) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>, RunError> {
    let mut last = Vec::new();
    for (p, &addr) in proxies.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn: Option<Client> = None;
        for key in keys {
            let cmd = Command::get(key);
            loop {
                if Instant::now() > deadline {
                    return Err(RunError::Heal(format!("proxy {p} at {addr} does not serve 60 s after healing")));
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Client::connect(addr, Duration::from_secs(1)).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    },
                };
                let invoked = shared.recorder.now_us();
                let reply = match c.send(std::slice::from_ref(&cmd.args)).await {
                    Ok(()) => c.read(workload::REPLY_TIMEOUT).await.ok(),
                    Err(_) => None,
                };
                let completed = shared.recorder.now_us();
                match reply.as_ref().map(|r| cmd.outcome(r)) {
                    Some(Seen::Done(result)) => {
                        let value = match &result {
                            OpResult::Value(v) => Some(v.clone()),
                            _ => None,
                        };
                        if p == 0 {
                            last.push((key.clone(), value));
                        }
                        shared.recorder.push(Entry::ok(
                            1000 + p as u32,
                            key.clone(),
                            cmd.op.clone(),
                            invoked,
                            completed,
                            result,
                        ));
                        break;
                    }
                    _ => {
                        // A failed read observed nothing; the cluster is settling: ask again.
                        if !matches!(reply, Some(Reply::Error(_))) {
                            conn = None;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    Ok(last)
}
