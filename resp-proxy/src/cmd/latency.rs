//! LATENCY LATEST/HISTORY/RESET/HELP: Redis's latency monitor over this proxy's commands. With
//! `latency-monitor-threshold` (ms, CONFIG SET; 0, the default, turns it off) a command that took at
//! least that long adds a sample to the event `command` (or `fast-command` for a command flagged
//! `fast`), as Redis records them: one sample per second (the largest), the last 160 kept, and the
//! largest ever. A command's duration is measured as for SLOWLOG.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{help, parse_i64, subcommand};
use crate::resp::Reply;

/// Samples kept per event.
const HISTORY: usize = 160;

#[derive(Default)]
struct Series {
    /// (unix seconds, ms), oldest first.
    samples: std::collections::VecDeque<(i64, i64)>,
    max: i64,
}

#[derive(Default)]
pub struct LatencyMonitor {
    threshold_ms: AtomicI64,
    events: Mutex<BTreeMap<&'static str, Series>>,
}

impl LatencyMonitor {
    /// Records a command that took `took` if it reaches the threshold; `fast`: the command is flagged
    /// `fast` (event `fast-command`).
    pub fn record(&self, took: Duration, fast: bool) {
        let threshold = self.threshold_ms.load(Ordering::Relaxed);
        let ms = took.as_millis().min(i64::MAX as u128) as i64;
        if threshold <= 0 || ms < threshold {
            return;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let event = if fast { "fast-command" } else { "command" };
        let mut events = self.events.lock();
        let series = events.entry(event).or_default();
        series.max = series.max.max(ms);
        match series.samples.back_mut() {
            Some((t, worst)) if *t == now => *worst = (*worst).max(ms),
            _ => {
                if series.samples.len() == HISTORY {
                    series.samples.pop_front();
                }
                series.samples.push_back((now, ms));
            }
        }
    }

    /// Whether any command could be recorded (the caller skips the work otherwise).
    pub fn enabled(&self) -> bool {
        self.threshold_ms.load(Ordering::Relaxed) > 0
    }

    pub fn setting(&self) -> (&'static str, String) {
        ("latency-monitor-threshold", self.threshold_ms.load(Ordering::Relaxed).to_string())
    }

    /// Validates a CONFIG SET `latency-monitor-threshold` value; `None`: another name.
    pub fn parse_setting(name: &str, value: &[u8]) -> Option<Result<i64, String>> {
        (name == "latency-monitor-threshold").then(|| match parse_i64(value) {
            None => Err("argument couldn't be parsed into an integer".into()),
            Some(v) if v < 0 => Err(format!("argument must be between 0 and {} inclusive", i64::MAX)),
            Some(v) => Ok(v),
        })
    }

    pub fn set_threshold(&self, ms: i64) {
        self.threshold_ms.store(ms, Ordering::Relaxed);
    }

    /// LATENCY (arity already checked). DOCTOR, GRAPH and HISTOGRAM are not offered.
    pub fn command(&self, a: &[Bytes]) -> Reply {
        const SUBCOMMANDS: &[(&str, i64)] = &[("latest", 2), ("history", 3), ("reset", -2), ("help", 2)];
        let sub = match subcommand("latency", SUBCOMMANDS, a) {
            Ok(sub) => sub,
            Err(e) => return e,
        };
        let mut events = self.events.lock();
        match sub {
            "latest" => Reply::Array(
                events
                    .iter()
                    .filter_map(|(name, s)| s.samples.back().map(|last| (name, last, s.max)))
                    .map(|(name, &(time, ms), max)| {
                        Reply::Array(vec![Reply::bulk(*name), Reply::Int(time), Reply::Int(ms), Reply::Int(max)])
                    })
                    .collect(),
            ),
            "history" => Reply::Array(
                events.iter().find(|(name, _)| name.as_bytes() == a[1].as_ref()).map_or(vec![], |(_, s)| {
                    s.samples.iter().map(|&(t, ms)| Reply::Array(vec![Reply::Int(t), Reply::Int(ms)])).collect()
                }),
            ),
            "reset" if a.len() == 1 => {
                let n = events.len();
                events.clear();
                Reply::Int(n as i64)
            }
            "reset" => {
                let mut n = 0;
                for event in &a[1..] {
                    let before = events.len();
                    events.retain(|name, _| !name.as_bytes().eq_ignore_ascii_case(event));
                    n += before - events.len();
                }
                Reply::Int(n as i64)
            }
            _ => help(
                "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                &[
                    "HISTORY <event>",
                    "    Return time-latency samples for the <event> class.",
                    "LATEST",
                    "    Return the latest latency samples for all events.",
                    "RESET [<event> ...]",
                    "    Reset latency data of one or more <event> classes.",
                    "    (default: reset all data for all event classes)",
                ],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    #[test]
    fn samples_above_the_threshold_only() {
        let m = LatencyMonitor::default();
        m.record(Duration::from_secs(5), false);
        assert_eq!(m.command(&args(&["latest"])), Reply::Array(vec![]), "off by default");
        m.set_threshold(10);
        m.record(Duration::from_millis(9), false);
        m.record(Duration::from_millis(15), false);
        m.record(Duration::from_millis(12), false);
        m.record(Duration::from_millis(20), true);
        let Reply::Array(latest) = m.command(&args(&["latest"])) else { panic!() };
        assert_eq!(latest.len(), 2);
        let Reply::Array(command) = &latest[0] else { panic!() };
        assert_eq!(command[0], Reply::bulk("command"));
        assert_eq!(command[2], Reply::Int(15), "the largest of the second");
        assert_eq!(command[3], Reply::Int(15));
        let Reply::Array(history) = m.command(&args(&["history", "command"])) else { panic!() };
        assert_eq!(history.len(), 1);
        assert_eq!(m.command(&args(&["history", "nope"])), Reply::Array(vec![]));
        assert_eq!(m.command(&args(&["reset", "COMMAND", "nope"])), Reply::Int(1));
        assert_eq!(m.command(&args(&["reset"])), Reply::Int(1));
        assert_eq!(
            m.command(&args(&["history"])),
            Reply::error("ERR wrong number of arguments for 'latency|history' command")
        );
        assert_eq!(m.command(&args(&["doctorx"])), Reply::error("ERR unknown subcommand 'doctorx'. Try LATENCY HELP."));
    }
}
