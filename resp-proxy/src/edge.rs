//! The client edge's guards, shared by every connection of a proxy: Redis's idle `timeout`, the
//! `client-output-buffer-limit` of normal clients, `maxclients` against the process's open-file limit, and
//! the accept-rate limit. CONFIG SET changes the first three while the proxy runs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::limits::memtoull;

/// File descriptors kept for everything but client connections (listeners, store-node connections,
/// metrics, etcd, replication, log files), as Redis keeps `CONFIG_MIN_RESERVED_FDS`.
pub const RESERVED_FDS: u64 = 128;

/// Redis's `client-output-buffer-limit` for one client class: a client holding more than `hard` bytes of
/// replies not yet written, or more than `soft` for longer than `soft_seconds`, is disconnected. 0: no
/// such limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputBufferLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_seconds: u64,
}

impl OutputBufferLimit {
    pub const UNLIMITED: OutputBufferLimit = OutputBufferLimit { hard: 0, soft: 0, soft_seconds: 0 };

    /// Vesta's default for normal clients. Redis sets none (a slow reader may hold any amount); a proxy in
    /// front of many clients needs one: 256 MiB is room for several of the largest values (32 MiB by
    /// default) in one pipeline, and a client past 64 MiB for a minute is not reading.
    pub const DEFAULT_NORMAL: OutputBufferLimit =
        OutputBufferLimit { hard: 256 * 1024 * 1024, soft: 64 * 1024 * 1024, soft_seconds: 60 };

    /// Redis's defaults for the classes Vesta has no clients of (shown by CONFIG GET, settable).
    const DEFAULT_REPLICA: OutputBufferLimit =
        OutputBufferLimit { hard: 256 * 1024 * 1024, soft: 64 * 1024 * 1024, soft_seconds: 60 };
    const DEFAULT_PUBSUB: OutputBufferLimit =
        OutputBufferLimit { hard: 32 * 1024 * 1024, soft: 8 * 1024 * 1024, soft_seconds: 60 };

    /// Whether `held` bytes break the limit, `over_soft_since` being when the client went over the soft
    /// limit (kept up to date here: set when it goes over, cleared when it comes back under).
    pub fn exceeded(&self, held: u64, over_soft_since: &mut Option<Instant>, now: Instant) -> Option<Breach> {
        if self.hard > 0 && held >= self.hard {
            return Some(Breach::Hard);
        }
        if self.soft == 0 || held < self.soft {
            *over_soft_since = None;
            return None;
        }
        let since = *over_soft_since.get_or_insert(now);
        (now.duration_since(since) > Duration::from_secs(self.soft_seconds)).then_some(Breach::Soft)
    }

    /// When a client over the soft limit since `since` breaks it, unless it reads on.
    pub fn soft_deadline(&self, since: Instant) -> Instant {
        // Just past `soft_seconds`, so that the check then finds it exceeded.
        since + Duration::from_secs(self.soft_seconds) + Duration::from_millis(1)
    }
}

/// Which part of [`OutputBufferLimit`] a client broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    Hard,
    Soft,
}

impl Breach {
    pub fn name(self) -> &'static str {
        match self {
            Breach::Hard => "hard",
            Breach::Soft => "soft",
        }
    }
}

/// The client classes of Redis's `client-output-buffer-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClass {
    Normal,
    Replica,
    Pubsub,
}

/// Redis's reasons, as CONFIG SET gives them.
const WRONG_COUNT: &str = "Wrong number of arguments in buffer limit configuration.";
const BAD_CLASS: &str = "Invalid client class specified in buffer limit configuration.";
const BAD_VALUE: &str = "Error in hard, soft or soft_seconds setting in buffer limit configuration.";

/// Parses Redis's `<class> <hard> <soft> <soft-seconds> …` (classes `normal`, `replica`/`slave`,
/// `pubsub`; sizes with Redis's units), checking all of it before anything is used, as Redis does.
pub fn parse_output_buffer_limits(text: &str) -> Result<Vec<(ClientClass, OutputBufferLimit)>, &'static str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.chunks_exact(4).remainder().is_empty() {
        return Err(WRONG_COUNT);
    }
    let mut out = Vec::new();
    for group in words.chunks(4) {
        let class = match group[0].to_ascii_lowercase().as_str() {
            "normal" => ClientClass::Normal,
            "replica" | "slave" => ClientClass::Replica,
            "pubsub" => ClientClass::Pubsub,
            _ => return Err(BAD_CLASS),
        };
        let hard = memtoull(group[1].as_bytes()).ok_or(BAD_VALUE)?;
        let soft = memtoull(group[2].as_bytes()).ok_or(BAD_VALUE)?;
        let soft_seconds = group[3].parse::<i64>().ok().and_then(|s| u64::try_from(s).ok()).ok_or(BAD_VALUE)?;
        out.push((class, OutputBufferLimit { hard, soft, soft_seconds }));
    }
    Ok(out)
}

impl std::str::FromStr for OutputBufferLimit {
    type Err = String;

    /// The normal class's limit in proxy.toml or a flag: `"<hard> <soft> <soft-seconds>"`, or Redis's
    /// `"normal <hard> <soft> <soft-seconds>"`.
    fn from_str(s: &str) -> Result<Self, String> {
        let text = if s.split_whitespace().count() == 3 { format!("normal {s}") } else { s.to_string() };
        let bad = |why: &str| format!("client_output_buffer_limit {s:?}: {why} (e.g. \"256mb 64mb 60\")");
        match parse_output_buffer_limits(&text).map_err(bad)?.as_slice() {
            [(ClientClass::Normal, limit)] => Ok(*limit),
            _ => Err(bad("only the normal class is configured here")),
        }
    }
}

impl<'de> Deserialize<'de> for OutputBufferLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One class's limit held for CONFIG SET to change.
#[derive(Debug, Default)]
struct AtomicLimit {
    hard: AtomicU64,
    soft: AtomicU64,
    soft_seconds: AtomicU64,
}

impl AtomicLimit {
    fn new(l: OutputBufferLimit) -> Self {
        let a = AtomicLimit::default();
        a.set(l);
        a
    }

    fn get(&self) -> OutputBufferLimit {
        OutputBufferLimit {
            hard: self.hard.load(Ordering::Relaxed),
            soft: self.soft.load(Ordering::Relaxed),
            soft_seconds: self.soft_seconds.load(Ordering::Relaxed),
        }
    }

    fn set(&self, l: OutputBufferLimit) {
        self.hard.store(l.hard, Ordering::Relaxed);
        self.soft.store(l.soft, Ordering::Relaxed);
        self.soft_seconds.store(l.soft_seconds, Ordering::Relaxed);
    }
}

/// The CONFIG parameters [`Edge`] owns.
pub const TIMEOUT: &str = "timeout";
pub const CLIENT_OUTPUT_BUFFER_LIMIT: &str = "client-output-buffer-limit";
pub const MAXCLIENTS: &str = "maxclients";

/// Redis's largest `timeout` (an int).
pub const MAX_TIMEOUT: u64 = i32::MAX as u64;

/// A value CONFIG SET accepted for one of [`Edge`]'s parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Timeout(u64),
    OutputBufferLimits(Vec<(ClientClass, OutputBufferLimit)>),
    MaxClients(usize),
}

/// The client-edge settings in force, shared by every connection of a proxy.
#[derive(Debug)]
pub struct Edge {
    /// Redis's `timeout`, seconds (0: never).
    timeout: AtomicU64,
    normal: AtomicLimit,
    replica: AtomicLimit,
    pubsub: AtomicLimit,
    max_clients: AtomicUsize,
    /// The most clients the open-file limit leaves room for.
    fd_capacity: usize,
}

impl Edge {
    pub fn new(timeout: u64, normal: OutputBufferLimit, max_clients: usize, fd_capacity: usize) -> Self {
        Edge {
            timeout: AtomicU64::new(timeout),
            normal: AtomicLimit::new(normal),
            replica: AtomicLimit::new(OutputBufferLimit::DEFAULT_REPLICA),
            pubsub: AtomicLimit::new(OutputBufferLimit::DEFAULT_PUBSUB),
            max_clients: AtomicUsize::new(max_clients.min(fd_capacity).max(1)),
            fd_capacity,
        }
    }

    /// Redis's `timeout`: how long a connection with nothing in flight may stay silent (`None`: forever).
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.timeout.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        }
    }

    pub fn output_limit(&self) -> OutputBufferLimit {
        self.normal.get()
    }

    pub fn max_clients(&self) -> usize {
        self.max_clients.load(Ordering::Relaxed)
    }

    /// The value CONFIG SET would give parameter `name`: `None` if it is not one of these settings, else
    /// the value or Redis's reason for refusing it.
    pub fn parse_setting(&self, name: &str, value: &[u8]) -> Option<Result<Setting, String>> {
        let text = String::from_utf8_lossy(value);
        Some(match name {
            TIMEOUT => int_setting(value, 0, MAX_TIMEOUT).map(Setting::Timeout),
            CLIENT_OUTPUT_BUFFER_LIMIT => {
                parse_output_buffer_limits(&text).map(Setting::OutputBufferLimits).map_err(str::to_string)
            }
            MAXCLIENTS => int_setting(value, 1, u64::from(u32::MAX)).and_then(|n| {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > self.fd_capacity {
                    Err(format!(
                        "The operating system is not able to handle the specified number of clients, try with {}",
                        self.fd_capacity
                    ))
                } else {
                    Ok(Setting::MaxClients(n))
                }
            }),
            _ => return None,
        })
    }

    /// Applies a value [`Edge::parse_setting`] accepted.
    pub fn set(&self, setting: Setting) {
        match setting {
            Setting::Timeout(secs) => self.timeout.store(secs, Ordering::Relaxed),
            Setting::OutputBufferLimits(limits) => {
                for (class, limit) in limits {
                    match class {
                        ClientClass::Normal => self.normal.set(limit),
                        ClientClass::Replica => self.replica.set(limit),
                        ClientClass::Pubsub => self.pubsub.set(limit),
                    }
                }
            }
            Setting::MaxClients(n) => self.max_clients.store(n, Ordering::Relaxed),
        }
    }

    /// CONFIG GET's view of these parameters, in Redis's formats.
    pub fn settings(&self) -> [(&'static str, String); 3] {
        let l = |a: &AtomicLimit| {
            let l = a.get();
            format!("{} {} {}", l.hard, l.soft, l.soft_seconds)
        };
        [
            (TIMEOUT, self.timeout.load(Ordering::Relaxed).to_string()),
            (
                CLIENT_OUTPUT_BUFFER_LIMIT,
                format!("normal {} slave {} pubsub {}", l(&self.normal), l(&self.replica), l(&self.pubsub)),
            ),
            (MAXCLIENTS, self.max_clients().to_string()),
        ]
    }
}

/// A Redis integer parameter: `string2ll`, then the bounds, with Redis's reasons.
fn int_setting(value: &[u8], min: u64, max: u64) -> Result<u64, String> {
    let n = crate::cmd::parse_i64(value).ok_or_else(|| "argument couldn't be parsed into an integer".to_string())?;
    match u64::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("argument must be between {min} and {max} inclusive")),
    }
}

/// Raises this process's soft open-file limit to its hard limit (as Redis does at start), returning the
/// limit in force: each client connection is one file descriptor.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        } else {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "could not raise the open-file limit"
            );
        }
    }
    Ok(limit.rlim_cur)
}

/// The most client connections `open_files` descriptors leave room for, `reserved` kept for the rest.
pub fn clients_allowed(open_files: u64, reserved: u64) -> usize {
    usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX).max(1)
}

/// A token bucket for accepting connections: `rate` per second, bursts of a tenth of a second's worth
/// (at least one).
#[derive(Debug)]
pub struct AcceptRate {
    per_token: Duration,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl AcceptRate {
    pub fn new(rate: u64, now: Instant) -> Self {
        let burst = (rate as f64 / 10.0).max(1.0);
        AcceptRate { per_token: Duration::from_secs_f64(1.0 / rate.max(1) as f64), burst, tokens: burst, last: now }
    }

    /// Takes a token to accept one connection; when none is left, how long until one is.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() / self.per_token.as_secs_f64();
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.per_token.mul_f64(1.0 - self.tokens))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_buffer_limits_in_redis_syntax() {
        let normal = |hard, soft, soft_seconds| (ClientClass::Normal, OutputBufferLimit { hard, soft, soft_seconds });
        assert_eq!(parse_output_buffer_limits("normal 1mb 512kb 10"), Ok(vec![normal(1 << 20, 512 << 10, 10)]));
        assert_eq!(parse_output_buffer_limits("NORMAL 0 0 0"), Ok(vec![normal(0, 0, 0)]));
        assert_eq!(parse_output_buffer_limits(""), Ok(vec![]));
        let two = parse_output_buffer_limits("slave 1 2 3 pubsub 4 5 6").unwrap();
        assert_eq!(two[0].0, ClientClass::Replica);
        assert_eq!(two[1], (ClientClass::Pubsub, OutputBufferLimit { hard: 4, soft: 5, soft_seconds: 6 }));
        assert_eq!(parse_output_buffer_limits("normal 1 2"), Err(WRONG_COUNT));
        assert_eq!(parse_output_buffer_limits("master 1 2 3"), Err(BAD_CLASS));
        assert_eq!(parse_output_buffer_limits("normal 1 2 -1"), Err(BAD_VALUE));
        assert_eq!(parse_output_buffer_limits("normal 1 2x 1"), Err(BAD_VALUE));
        // Checked whole before anything is used.
        assert_eq!(parse_output_buffer_limits("normal 1 2 3 foo 1 2 3"), Err(BAD_CLASS));

        assert_eq!("256mb 64mb 60".parse(), Ok(OutputBufferLimit::DEFAULT_NORMAL));
        assert_eq!("normal 0 0 0".parse(), Ok(OutputBufferLimit::UNLIMITED));
        assert!("pubsub 1 2 3".parse::<OutputBufferLimit>().is_err());
        assert!("1 2".parse::<OutputBufferLimit>().is_err());
    }

    #[test]
    fn hard_and_soft_limits() {
        let limit = OutputBufferLimit { hard: 100, soft: 50, soft_seconds: 2 };
        let t0 = Instant::now();
        let mut since = None;
        assert_eq!(limit.exceeded(10, &mut since, t0), None);
        assert_eq!(limit.exceeded(100, &mut since, t0), Some(Breach::Hard));
        assert_eq!(limit.exceeded(60, &mut since, t0), None);
        assert_eq!(since, Some(t0));
        assert_eq!(limit.exceeded(60, &mut since, t0 + Duration::from_secs(2)), None);
        assert_eq!(limit.exceeded(60, &mut since, limit.soft_deadline(t0)), Some(Breach::Soft));
        // Back under the soft limit: the clock starts again.
        assert_eq!(limit.exceeded(10, &mut since, t0 + Duration::from_secs(3)), None);
        assert_eq!(since, None);
        assert_eq!(OutputBufferLimit::UNLIMITED.exceeded(u64::MAX, &mut since, t0), None);
    }

    #[test]
    fn config_set_values_and_redis_reasons() {
        let edge = Edge::new(0, OutputBufferLimit::DEFAULT_NORMAL, 10_000, 19_872);
        let parse = |name, value: &str| edge.parse_setting(name, value.as_bytes());
        assert_eq!(parse(TIMEOUT, "300"), Some(Ok(Setting::Timeout(300))));
        assert_eq!(parse(TIMEOUT, "abc"), Some(Err("argument couldn't be parsed into an integer".into())));
        assert_eq!(parse(TIMEOUT, "-1"), Some(Err("argument must be between 0 and 2147483647 inclusive".into())));
        assert_eq!(parse(MAXCLIENTS, "0"), Some(Err("argument must be between 1 and 4294967295 inclusive".into())));
        assert_eq!(
            parse(MAXCLIENTS, "19873"),
            Some(Err(
                "The operating system is not able to handle the specified number of clients, try with 19872".into()
            ))
        );
        assert_eq!(parse("maxmemory", "1"), None);
        edge.set(parse(MAXCLIENTS, "12000").unwrap().unwrap());
        edge.set(parse(CLIENT_OUTPUT_BUFFER_LIMIT, "normal 1kb 0 0").unwrap().unwrap());
        edge.set(parse(TIMEOUT, "5").unwrap().unwrap());
        assert_eq!(edge.max_clients(), 12_000);
        assert_eq!(edge.idle_timeout(), Some(Duration::from_secs(5)));
        assert_eq!(edge.output_limit(), OutputBufferLimit { hard: 1024, soft: 0, soft_seconds: 0 });
        assert_eq!(
            edge.settings()[1].1,
            "normal 1024 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
            "Redis's CONFIG GET format"
        );
    }

    #[test]
    fn max_clients_follows_the_open_file_limit() {
        // Redis's arithmetic: a hard limit of 20000 leaves 19872 clients beside 128 reserved descriptors.
        assert_eq!(clients_allowed(20_000, RESERVED_FDS), 19_872);
        assert_eq!(clients_allowed(100, RESERVED_FDS), 1);
        let edge = Edge::new(0, OutputBufferLimit::DEFAULT_NORMAL, 4_000_000_000, clients_allowed(20_000, 128));
        assert_eq!(edge.max_clients(), 19_872, "lowered to what the limit allows");
        let edge = Edge::new(0, OutputBufferLimit::DEFAULT_NORMAL, 12_000, clients_allowed(20_000, 128));
        assert_eq!(edge.max_clients(), 12_000, "beyond 10000 where the limit allows");
    }

    #[test]
    fn accept_rate_token_bucket() {
        let t0 = Instant::now();
        let mut bucket = AcceptRate::new(100, t0);
        // A burst of a tenth of a second's worth, then one per 10 ms.
        for _ in 0..10 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        let wait = bucket.take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(9) && wait <= Duration::from_millis(10), "{wait:?}");
        assert_eq!(bucket.take(t0 + wait), Ok(()));
        assert!(bucket.take(t0 + wait).is_err());
        // Idle time refills up to the burst only.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
        let mut slow = AcceptRate::new(2, t0);
        assert_eq!(slow.take(t0), Ok(()));
        assert_eq!(slow.take(t0), Err(Duration::from_millis(500)));
    }
}
