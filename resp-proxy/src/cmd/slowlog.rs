//! SLOWLOG GET/LEN/RESET/HELP over the commands this proxy ran, with Redis's entry format and its
//! `slowlog-log-slower-than` / `slowlog-max-len` settings (CONFIG SET changes them at once).
//!
//! A command's duration is its execution in the proxy: for a data command, from the moment it may run
//! (the commands it must follow done, a slot of the admission gate taken) to its reply — the quorum
//! round trips to the store nodes included, since that is where a Vesta command spends its time. Time
//! spent waiting behind earlier commands or in the surge queue is not counted, as Redis does not count
//! the time a command waits in the event loop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{help, parse_i64, subcommand};
use crate::resp::Reply;

/// Arguments kept per entry; the last one kept says how many more there were.
const MAX_ARGS: usize = 32;
/// Bytes kept per argument; the rest is replaced by `... (N more bytes)`.
const MAX_STRING: usize = 128;

pub const DEFAULT_SLOWER_THAN_US: i64 = 10_000;
pub const DEFAULT_MAX_LEN: i64 = 128;

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    unix_time: i64,
    micros: i64,
    args: Vec<Bytes>,
    peer: String,
    name: Bytes,
}

pub struct SlowLog {
    /// `slowlog-log-slower-than` in µs; negative: the log is off.
    slower_than: AtomicI64,
    max_len: AtomicI64,
    next_id: AtomicU64,
    /// Newest first.
    entries: Mutex<VecDeque<Entry>>,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            slower_than: AtomicI64::new(DEFAULT_SLOWER_THAN_US),
            max_len: AtomicI64::new(DEFAULT_MAX_LEN),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(VecDeque::new()),
        }
    }
}

impl SlowLog {
    /// Whether a command that took `took` goes into the log (checked before anything is copied).
    pub fn wants(&self, took: Duration) -> bool {
        let threshold = self.slower_than.load(Ordering::Relaxed);
        threshold >= 0 && took.as_micros() as i64 >= threshold
    }

    /// Logs a command (the caller checked [`SlowLog::wants`]); `args` includes the command's name.
    pub fn push(&self, took: Duration, args: &[Bytes], peer: SocketAddr, name: Option<Bytes>) {
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            micros: took.as_micros().min(i64::MAX as u128) as i64,
            args: logged_args(args),
            peer: peer.to_string(),
            name: name.unwrap_or_default(),
        };
        let max = self.max_len.load(Ordering::Relaxed).max(0) as usize;
        let mut entries = self.entries.lock();
        entries.push_front(entry);
        entries.truncate(max);
    }

    /// CONFIG GET's view of the two settings.
    pub fn settings(&self) -> [(&'static str, String); 2] {
        [
            ("slowlog-log-slower-than", self.slower_than.load(Ordering::Relaxed).to_string()),
            ("slowlog-max-len", self.max_len.load(Ordering::Relaxed).to_string()),
        ]
    }

    /// Validates a CONFIG SET value of one of the two settings (`None`: not one of them), as Redis's
    /// numeric configs do.
    pub fn parse_setting(name: &str, value: &[u8]) -> Option<Result<i64, String>> {
        let min = match name {
            "slowlog-log-slower-than" => -1,
            "slowlog-max-len" => 0,
            _ => return None,
        };
        Some(match parse_i64(value) {
            None => Err("argument couldn't be parsed into an integer".into()),
            Some(v) if v < min => Err(format!("argument must be between {min} and {} inclusive", i64::MAX)),
            Some(v) => Ok(v),
        })
    }

    pub fn set(&self, name: &str, value: i64) {
        match name {
            "slowlog-log-slower-than" => self.slower_than.store(value, Ordering::Relaxed),
            "slowlog-max-len" => {
                self.max_len.store(value, Ordering::Relaxed);
                self.entries.lock().truncate(value.max(0) as usize);
            }
            _ => {}
        }
    }

    /// SLOWLOG (arity already checked).
    pub fn command(&self, a: &[Bytes]) -> Reply {
        const SUBCOMMANDS: &[(&str, i64)] = &[("get", -2), ("len", 2), ("reset", 2), ("help", 2)];
        let sub = match subcommand("slowlog", SUBCOMMANDS, a) {
            Ok(sub) => sub,
            Err(e) => return e,
        };
        match (sub, &a[1..]) {
            ("len", _) => Reply::Int(self.entries.lock().len() as i64),
            ("reset", _) => {
                self.entries.lock().clear();
                Reply::OK
            }
            ("help", _) => help(
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                &[
                    "GET [<count>]",
                    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                    "    Entries are made of:",
                    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                    "    client name",
                    "LEN",
                    "    Return the length of the slowlog.",
                    "RESET",
                    "    Reset the slowlog.",
                ],
            ),
            ("get", rest) if rest.len() <= 1 => {
                let count = match rest.first().map(|c| parse_i64(c)) {
                    None => 10,
                    Some(Some(-1)) => usize::MAX,
                    Some(Some(n)) if n >= 0 => n as usize,
                    Some(_) => return Reply::error("ERR count should be greater than or equal to -1"),
                };
                let entries = self.entries.lock();
                Reply::Array(entries.iter().take(count).map(Entry::reply).collect())
            }
            _ => super::subcommand_syntax_error("slowlog", &a[0]),
        }
    }
}

impl Entry {
    fn reply(&self) -> Reply {
        Reply::Array(vec![
            Reply::Int(self.id as i64),
            Reply::Int(self.unix_time),
            Reply::Int(self.micros),
            Reply::Array(self.args.iter().cloned().map(Reply::Bulk).collect()),
            Reply::Bulk(Bytes::from(self.peer.clone())),
            Reply::Bulk(self.name.clone()),
        ])
    }
}

/// The arguments as Redis logs them: at most 32 (the last saying how many more there were), each cut
/// to 128 bytes (saying how many more there were), secrets redacted. Copied, so that an entry does not
/// pin the memory of the request it came from.
fn logged_args(args: &[Bytes]) -> Vec<Bytes> {
    let redacted = redacted_positions(args);
    let kept = args.len().min(MAX_ARGS);
    (0..kept)
        .map(|i| {
            if kept < args.len() && i == kept - 1 {
                Bytes::from(format!("... ({} more arguments)", args.len() - kept + 1))
            } else if redacted(i) {
                Bytes::from_static(b"(redacted)")
            } else if args[i].len() > MAX_STRING {
                let mut cut = args[i][..MAX_STRING].to_vec();
                cut.extend_from_slice(format!("... ({} more bytes)", args[i].len() - MAX_STRING).as_bytes());
                Bytes::from(cut)
            } else {
                Bytes::copy_from_slice(&args[i])
            }
        })
        .collect()
}

/// Which arguments Redis never shows: AUTH's, and HELLO's AUTH username and password.
fn redacted_positions(args: &[Bytes]) -> impl Fn(usize) -> bool {
    let is = |i: usize, name: &str| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()));
    let auth = is(0, "auth");
    let hello_auth: Vec<usize> = if is(0, "hello") {
        (2..args.len()).filter(|&i| is(i, "auth")).flat_map(|i| [i + 1, i + 2]).collect()
    } else {
        Vec::new()
    };
    move |i| (auth && i > 0) || hello_auth.contains(&i)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    #[test]
    fn logs_and_truncates_like_redis() {
        let log = SlowLog::default();
        let peer = "127.0.0.1:5000".parse().unwrap();
        log.set("slowlog-log-slower-than", 0);
        assert!(log.wants(Duration::ZERO));
        let long = "x".repeat(130);
        log.push(Duration::from_micros(12), &args(&["SET", "k", &long]), peer, Some(Bytes::from("me")));
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let many: Vec<&str> = std::iter::once("MGET").chain(many.iter().map(|s| s.as_str())).collect();
        log.push(Duration::from_micros(5), &args(&many), peer, None);
        log.push(Duration::from_micros(5), &args(&["AUTH", "user", "secret"]), peer, None);
        assert_eq!(log.command(&args(&["len"])), Reply::Int(3));
        let Reply::Array(entries) = log.command(&args(&["get", "-1"])) else { panic!() };
        let Reply::Array(auth) = &entries[0] else { panic!() };
        assert_eq!(auth[0], Reply::Int(2), "newest first");
        assert_eq!(
            auth[3],
            Reply::Array(vec![Reply::bulk("AUTH"), Reply::bulk("(redacted)"), Reply::bulk("(redacted)")])
        );
        let Reply::Array(mget) = &entries[1] else { panic!() };
        let Reply::Array(mget_args) = &mget[3] else { panic!() };
        assert_eq!(mget_args.len(), 32);
        assert_eq!(mget_args[31], Reply::bulk("... (10 more arguments)"));
        let Reply::Array(set) = &entries[2] else { panic!() };
        assert_eq!(set[2], Reply::Int(12));
        let Reply::Array(set_args) = &set[3] else { panic!() };
        assert_eq!(set_args[2], Reply::bulk(format!("{}... (2 more bytes)", "x".repeat(128))));
        assert_eq!(set[4], Reply::bulk("127.0.0.1:5000"));
        assert_eq!(set[5], Reply::bulk("me"));
        assert!(matches!(log.command(&args(&["get", "1"])), Reply::Array(e) if e.len() == 1));
        assert_eq!(log.command(&args(&["get", "-2"])), Reply::error("ERR count should be greater than or equal to -1"));
        log.set("slowlog-max-len", 1);
        assert_eq!(log.command(&args(&["len"])), Reply::Int(1));
        assert_eq!(log.command(&args(&["reset"])), Reply::OK);
        assert_eq!(log.command(&args(&["len"])), Reply::Int(0));
        log.set("slowlog-log-slower-than", -1);
        assert!(!log.wants(Duration::from_secs(100)));
        assert_eq!(log.command(&args(&["foo"])), Reply::error("ERR unknown subcommand 'foo'. Try SLOWLOG HELP."));
        assert_eq!(
            log.command(&args(&["len", "x"])),
            Reply::error("ERR wrong number of arguments for 'slowlog|len' command")
        );
        assert_eq!(
            SlowLog::parse_setting("slowlog-log-slower-than", b"-2"),
            Some(Err("argument must be between -1 and 9223372036854775807 inclusive".into()))
        );
    }
}
