//! CLIENT PAUSE / CLIENT UNPAUSE, as failover tooling uses them: while a pause lasts, the proxy holds
//! the commands its clients send (every command, or in WRITE mode the ones that may write) and runs
//! them once the pause ends or is lifted. A held connection runs nothing after the held command either,
//! so its commands keep their order, as in Redis where the whole client is blocked.
//!
//! A pause is per proxy process: the other proxies of the cluster keep serving. Pausing a cluster means
//! pausing every proxy (README → "Pausing clients, slow log, latency monitor").

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{parse_i64, Spec};
use crate::resp::Reply;
use crate::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum PauseMode {
    Off = 0,
    /// Only commands that may write (or replicate) are held.
    Write = 1,
    /// Every command is held.
    All = 2,
}

/// A parsed `CLIENT PAUSE timeout [WRITE|ALL]`.
#[derive(Debug, PartialEq, Eq)]
pub struct PauseRequest {
    pub timeout: Duration,
    pub mode: PauseMode,
}

/// Parses CLIENT PAUSE's arguments (after `PAUSE`): Redis checks the mode before the timeout.
pub fn parse(a: &[Bytes]) -> Result<PauseRequest, Reply> {
    let mode = match a.get(1) {
        None => PauseMode::All,
        Some(m) if m.eq_ignore_ascii_case(b"write") => PauseMode::Write,
        Some(m) if m.eq_ignore_ascii_case(b"all") => PauseMode::All,
        Some(_) => return Err(Reply::error("ERR CLIENT PAUSE mode must be WRITE or ALL")),
    };
    match parse_i64(&a[0]) {
        None => Err(Reply::error("ERR timeout is not an integer or out of range")),
        Some(ms) if ms < 0 => Err(Reply::error("ERR timeout is negative")),
        Some(ms) => Ok(PauseRequest { timeout: Duration::from_millis(ms as u64), mode }),
    }
}

/// The proxy's pause. Checking it costs one atomic load per command while no pause is set.
pub struct Pause {
    mode: AtomicU8,
    /// The mode and when it ends; the atomic above mirrors the mode for the fast path.
    state: Mutex<(PauseMode, Instant)>,
    /// Bumped whenever a pause is lifted or becomes less strict, waking the held connections to look again.
    lifted: watch::Sender<u64>,
    /// Connections holding a command (INFO's `blocked_clients`, as Redis counts paused clients).
    held: AtomicU64,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            mode: AtomicU8::new(PauseMode::Off as u8),
            state: Mutex::new((PauseMode::Off, Instant::now())),
            lifted: watch::channel(0).0,
            held: AtomicU64::new(0),
        }
    }
}

/// A connection counted in [`Pause::held_clients`].
pub struct HeldClient<'a>(&'a AtomicU64);

impl Drop for HeldClient<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves when a held command should be looked at again: its pause ended, or was lifted or relaxed.
pub type PauseWait = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Pause {
    /// Starts (or extends) a pause, as Redis does: the later end wins, and WRITE does not relax a running
    /// ALL pause.
    pub fn pause(&self, request: &PauseRequest) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let (mut mode, mut until) = *state;
        if until <= now {
            mode = PauseMode::Off;
            until = now;
        }
        let mode = mode.max(request.mode);
        let until = until.max(now + request.timeout);
        *state = (mode, until);
        self.mode.store(mode as u8, Ordering::Release);
    }

    /// Connections holding a command now.
    pub fn held_clients(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts a connection among the held ones for as long as the guard lives.
    pub fn count_held(&self) -> HeldClient<'_> {
        self.held.fetch_add(1, Ordering::Relaxed);
        HeldClient(&self.held)
    }

    /// CLIENT UNPAUSE.
    pub fn unpause(&self) {
        let mut state = self.state.lock();
        *state = (PauseMode::Off, Instant::now());
        self.mode.store(PauseMode::Off as u8, Ordering::Release);
        drop(state);
        self.lifted.send_modify(|n| *n += 1);
    }

    /// The pause in force now, and when it ends.
    fn current(&self) -> (PauseMode, Instant) {
        let mut state = self.state.lock();
        if state.0 != PauseMode::Off && state.1 <= Instant::now() {
            state.0 = PauseMode::Off;
            self.mode.store(PauseMode::Off as u8, Ordering::Release);
        }
        *state
    }

    /// Whether the command `args` of `session` must wait: then what to wait on before asking again.
    /// Commands Redis refuses before its pause check (unknown, wrong arity) are never held.
    pub fn holds(&self, session: &Session, args: &[Bytes]) -> Option<PauseWait> {
        if self.mode.load(Ordering::Acquire) == PauseMode::Off as u8 {
            return None;
        }
        // Subscribed before looking, so that an UNPAUSE between the look and the wait is not missed.
        let mut lifted = self.lifted.subscribe();
        let (mode, until) = self.current();
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let spec = super::spec(&name).filter(|s| super::arity_ok(s, args.len()))?;
        let held = match mode {
            PauseMode::Off => false,
            PauseMode::All => true,
            PauseMode::Write => may_write(spec, &args[1..], session),
        };
        held.then(|| {
            Box::pin(async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = lifted.changed() => {}
                }
            }) as PauseWait
        })
    }
}

/// Redis's "may replicate" test of a WRITE pause: write commands, commands that may replicate (EVAL,
/// EVALSHA), the writing FUNCTION subcommands, and an EXEC whose queued commands include one.
fn may_write(spec: &Spec, args: &[Bytes], session: &Session) -> bool {
    if spec.flags.iter().any(|f| *f == "write" || *f == "may_replicate") {
        return true;
    }
    match spec.name {
        "function" => args.first().is_some_and(|sub| {
            ["load", "delete", "flush", "restore"].iter().any(|w| sub.eq_ignore_ascii_case(w.as_bytes()))
        }),
        // Rewrites records under the current encryption key.
        "vesta.reencrypt" => true,
        "exec" => session.multi.as_ref().is_some_and(|q| {
            q.commands.iter().any(|c| {
                let name = String::from_utf8_lossy(&c[0]).to_ascii_lowercase();
                super::spec(&name).is_some_and(|s| may_write(s, &c[1..], session))
            })
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    fn session() -> Session {
        let addr = "127.0.0.1:1".parse().unwrap();
        Session::new(1, addr, addr)
    }

    #[test]
    fn parses_like_redis() {
        assert_eq!(
            parse(&args(&["100"])),
            Ok(PauseRequest { timeout: Duration::from_millis(100), mode: PauseMode::All })
        );
        assert_eq!(parse(&args(&["5", "write"])).map(|r| r.mode), Ok(PauseMode::Write));
        assert_eq!(parse(&args(&["x"])), Err(Reply::error("ERR timeout is not an integer or out of range")));
        assert_eq!(parse(&args(&["-1"])), Err(Reply::error("ERR timeout is negative")));
        assert_eq!(parse(&args(&["x", "nope"])), Err(Reply::error("ERR CLIENT PAUSE mode must be WRITE or ALL")));
    }

    #[tokio::test]
    async fn write_pause_holds_writes_only_and_unpause_releases_them() {
        let pause = Pause::default();
        let s = session();
        assert!(pause.holds(&s, &args(&["set", "k", "v"])).is_none());
        pause.pause(&PauseRequest { timeout: Duration::from_secs(60), mode: PauseMode::Write });
        assert!(pause.holds(&s, &args(&["get", "k"])).is_none());
        assert!(pause.holds(&s, &args(&["nosuchcommand"])).is_none());
        assert!(pause.holds(&s, &args(&["set", "k"])).is_none(), "wrong arity is answered at once");
        let wait = pause.holds(&s, &args(&["SET", "k", "v"])).expect("a write is held");
        assert!(pause.holds(&s, &args(&["evalsha", "x", "0"])).is_some());
        assert!(pause.holds(&s, &args(&["function", "flush"])).is_some());
        // WRITE does not relax a running ALL pause, and ALL holds reads.
        pause.pause(&PauseRequest { timeout: Duration::from_secs(1), mode: PauseMode::All });
        pause.pause(&PauseRequest { timeout: Duration::from_secs(1), mode: PauseMode::Write });
        assert!(pause.holds(&s, &args(&["get", "k"])).is_some());
        pause.unpause();
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("UNPAUSE wakes the held command");
        assert!(pause.holds(&s, &args(&["set", "k", "v"])).is_none());
    }

    #[tokio::test]
    async fn a_pause_ends_by_itself() {
        let pause = Pause::default();
        let s = session();
        pause.pause(&PauseRequest { timeout: Duration::from_millis(50), mode: PauseMode::All });
        let wait = pause.holds(&s, &args(&["ping"])).expect("held");
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("the timeout ends the pause");
        assert!(pause.holds(&s, &args(&["ping"])).is_none());
    }
}
