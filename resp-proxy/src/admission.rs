//! The proxy-wide bound on data commands executing at once (`max_in_flight`), with a surge queue managed
//! by CoDel in front of it — the bouncer of eBay's HERA, and Facebook's CoDel for server queues.
//!
//! A command that finds every slot taken waits in a FIFO queue. CoDel watches the time commands spend
//! there: while the *smallest* wait over an interval (`codel_interval_ms`, 200 ms) stays above the target
//! (`codel_target_ms`, 20 ms), the queue is not absorbing a burst but standing, and the proxy is
//! overloaded. Then a waiting command that has waited more than twice the target is answered at once
//! with `-TRYAGAIN proxy overloaded, try again` instead of being run, so the commands that do run have
//! queued briefly and their latency stays bounded while the excess is refused; and a command arriving
//! while the queue's head has waited past the target is refused at the door: it would wait at least as
//! long in a queue CoDel already holds standing, most likely to be refused after (refusing it costs no queue place, channel or wake-up: in a 3x GET burst
//! queued-then-refused commands were 94% of the refusals, and the proxy could not refuse as fast as they
//! came, so refusals themselves took seconds). Nothing is dropped in
//! silence and the queue is bounded: beyond `surge_queue_len` waiting commands, a new one is refused at
//! once, and a command that has waited for its whole deadline is refused then.
//!
//! CoDel's usual 5 ms / 100 ms refused most commands of pipelining clients at capacity (50 connections
//! × 16 pipelined commands keep more than `max_in_flight` waiting), so the defaults are 20 ms / 200 ms.
//! On 2 cores such a pipeline stands 30–40 ms in the queue and is still refused in part in some runs; a
//! 50 ms target runs it unrefused but let a 3x burst's p99 past the client deadline, which 20 ms keeps
//! (README → Benchmarks has the figures).
//!
//! Only data commands (those that reach the store nodes) are admitted here; proxy-local commands (PING,
//! INFO, CONFIG …) answer whatever the load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::metrics as m;

/// The reply of a refused command (TRYAGAIN: clients retry it, after a pause).
pub const OVERLOADED: &str = "TRYAGAIN proxy overloaded, try again";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    pub max_in_flight: usize,
    pub queue_len: usize,
    pub target: Duration,
    pub interval: Duration,
    /// The longest a command waits in the queue (its deadline: it could not finish in time after).
    pub max_wait: Duration,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full.
    QueueFull,
    /// CoDel: overloaded, and this command had waited too long.
    Codel,
    /// It waited for its whole deadline.
    Timeout,
}

impl Refusal {
    fn name(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::Codel => "codel",
            Refusal::Timeout => "timeout",
        }
    }
}

/// CoDel's state: the smallest queueing delay of the current interval, and whether the last interval's
/// smallest delay was above the target.
#[derive(Debug)]
struct Codel {
    interval_end: Instant,
    min_delay: Option<Duration>,
    overloaded: bool,
}

impl Codel {
    /// Records the queueing delay of a command leaving the queue (0 for one that never waited); whether
    /// it must be refused instead of run.
    fn leaves(&mut self, delay: Duration, now: Instant, config: &AdmissionConfig) -> bool {
        if now >= self.interval_end {
            self.overloaded = self.min_delay.is_some_and(|d| d > config.target);
            self.min_delay = None;
            self.interval_end = now + config.interval;
        }
        self.min_delay = Some(self.min_delay.map_or(delay, |d| d.min(delay)));
        self.overloaded && delay > 2 * config.target
    }

    /// Whether CoDel holds the proxy overloaded now (without recording anything).
    fn overloaded_at(&self, now: Instant, config: &AdmissionConfig) -> bool {
        if now >= self.interval_end {
            self.min_delay.is_some_and(|d| d > config.target)
        } else {
            self.overloaded
        }
    }

    /// Whether a command that has waited `delay` would be refused now.
    fn would_refuse(&self, delay: Duration, now: Instant, config: &AdmissionConfig) -> bool {
        self.overloaded_at(now, config) && delay > 2 * config.target
    }

    /// Whether the proxy is overloaded and the queue, whose head has waited `head_delay`, stands.
    fn standing(&self, head_delay: Duration, now: Instant, config: &AdmissionConfig) -> bool {
        self.overloaded_at(now, config) && head_delay > config.target
    }
}

struct Waiter {
    since: Instant,
    grant: oneshot::Sender<Grant>,
}

enum Grant {
    Run(Permit),
    Refused,
}

struct State {
    running: usize,
    queue: VecDeque<Waiter>,
    codel: Codel,
}

/// The gate every data command passes before it starts executing.
pub struct Admission {
    config: AdmissionConfig,
    state: Mutex<State>,
    refused: AtomicU64,
}

/// What [`Admission::admit`] decided.
pub enum Admit {
    Now(Permit),
    Refused(Refusal),
    Wait(Waiting),
}

/// A command in the surge queue.
pub struct Waiting {
    gate: Arc<Admission>,
    grant: oneshot::Receiver<Grant>,
}

impl Waiting {
    /// The slot, once a command finishes and CoDel lets this one run; `Err` when it is refused instead
    /// or its deadline passes first.
    pub async fn granted(self) -> Result<Permit, Refusal> {
        match tokio::time::timeout(self.gate.config.max_wait, self.grant).await {
            Ok(Ok(Grant::Run(permit))) => Ok(permit),
            // Counted by whoever refused it.
            Ok(Ok(Grant::Refused)) => Err(Refusal::Codel),
            // The wait ran out (or the gate went away, which cannot happen while this holds an Arc of
            // it); a slot granted meanwhile is given back when the channel drops it.
            Ok(Err(_)) | Err(_) => {
                self.gate.count(Refusal::Timeout);
                Err(Refusal::Timeout)
            }
        }
    }
}

/// A slot among `max_in_flight`: given back when dropped (to the next waiting command, if any).
pub struct Permit {
    gate: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Admission {
            config,
            state: Mutex::new(State {
                running: 0,
                queue: VecDeque::new(),
                codel: Codel { interval_end: now + config.interval, min_delay: None, overloaded: false },
            }),
            refused: AtomicU64::new(0),
        })
    }

    /// Commands refused so far (INFO).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// (commands executing, commands waiting).
    pub fn load(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.running, s.queue.len())
    }

    /// A slot to run one command in: at once, refused at once, or to wait for ([`Waiting::granted`]).
    /// Not `async` itself: the command's task carries only the permit, and a future only when it waits.
    pub fn admit(self: &Arc<Self>) -> Admit {
        let mut s = self.state.lock();
        let now = Instant::now();
        if s.running < self.config.max_in_flight && s.queue.is_empty() {
            s.running += 1;
            s.codel.leaves(Duration::ZERO, now, &self.config);
            return Admit::Now(Permit { gate: self.clone() });
        }
        // Overloaded: the stale waiters at the head are answered now, not when a slot frees.
        while s.queue.front().is_some_and(|w| s.codel.would_refuse(now - w.since, now, &self.config)) {
            if let Some(w) = s.queue.pop_front() {
                s.codel.leaves(now - w.since, now, &self.config);
                self.refuse(w, Refusal::Codel);
            }
        }
        if s.queue.len() >= self.config.queue_len {
            drop(s);
            self.count(Refusal::QueueFull);
            return Admit::Refused(Refusal::QueueFull);
        }
        // Overloaded, behind a queue that stands: this command would wait at least as long as the head
        // has, most likely to be refused after. Refused at the door instead, it costs no wait, no place in
        // the queue and no wake-up (measured in a 3x burst: 94% of the refusals were of commands that had queued first).
        if s.queue.front().is_some_and(|w| s.codel.standing(now - w.since, now, &self.config)) {
            drop(s);
            self.count(Refusal::Codel);
            return Admit::Refused(Refusal::Codel);
        }
        let (grant, waiting) = oneshot::channel();
        s.queue.push_back(Waiter { since: now, grant });
        Admit::Wait(Waiting { gate: self.clone(), grant: waiting })
    }

    /// [`Admission::admit`], waiting if it must.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, Refusal> {
        match self.admit() {
            Admit::Now(permit) => Ok(permit),
            Admit::Refused(why) => Err(why),
            Admit::Wait(waiting) => waiting.granted().await,
        }
    }

    fn count(&self, why: Refusal) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::OVERLOAD_REFUSALS, "reason" => why.name()).increment(1);
    }

    fn refuse(&self, w: Waiter, why: Refusal) {
        // A waiter that already gave up was counted then.
        if w.grant.send(Grant::Refused).is_ok() {
            self.count(why);
        }
    }

    /// A command finished: its slot goes to the first waiter CoDel lets run.
    fn release(self: &Arc<Self>) {
        let mut s = self.state.lock();
        let now = Instant::now();
        while let Some(w) = s.queue.pop_front() {
            let delay = now - w.since;
            if s.codel.leaves(delay, now, &self.config) {
                self.refuse(w, Refusal::Codel);
                continue;
            }
            match w.grant.send(Grant::Run(Permit { gate: self.clone() })) {
                Ok(()) => return,
                // That waiter gave up: the slot is still this one, for the next.
                Err(Grant::Run(permit)) => std::mem::forget(permit),
                Err(Grant::Refused) => {}
            }
        }
        s.running -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_in_flight: usize, queue_len: usize) -> AdmissionConfig {
        AdmissionConfig {
            max_in_flight,
            queue_len,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_slots_and_a_bounded_queue() {
        let gate = Admission::new(config(2, 1));
        let a = gate.acquire().await.unwrap();
        let b = gate.acquire().await.unwrap();
        assert_eq!(gate.load(), (2, 0));
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(gate.load(), (2, 1));
        assert_eq!(gate.acquire().await.err(), Some(Refusal::QueueFull), "beyond the queue: refused at once");
        drop(a);
        assert_eq!(waiting.await.unwrap(), Ok(()), "a freed slot goes to the waiter");
        assert_eq!(gate.load(), (1, 0), "the waiter's permit was dropped when it finished");
        drop(b);
        assert_eq!(gate.load(), (0, 0));
        assert_eq!(gate.refused(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_refused_after_its_deadline() {
        let gate = Admission::new(config(1, 10));
        let _held = gate.acquire().await.unwrap();
        assert_eq!(gate.acquire().await.err(), Some(Refusal::Timeout));
        assert_eq!(gate.refused(), 1);
        assert_eq!(gate.load(), (1, 1), "the waiter that gave up is still queued");
        drop(_held);
        assert_eq!(gate.load(), (0, 0), "the freed slot skipped it");
        let again = gate.acquire().await.unwrap();
        drop(again);
        assert_eq!(gate.load(), (0, 0));
        assert_eq!(gate.refused(), 1);
    }

    /// A standing queue: once the smallest wait of an interval is above the target, commands that waited
    /// longer than twice the target are refused at once, and the ones that run waited little.
    #[tokio::test(start_paused = true)]
    async fn codel_refuses_stale_waiters_under_a_standing_queue() {
        let gate = Admission::new(config(1, 1000));
        // One slot, each command takes 10 ms, and four arrive every 10 ms: three times the capacity and
        // more.
        let mut tasks = Vec::new();
        for _round in 0..50 {
            for _ in 0..4 {
                let gate = gate.clone();
                tasks.push(tokio::spawn(async move {
                    let arrived = tokio::time::Instant::now();
                    match gate.acquire().await {
                        Ok(permit) => {
                            let waited = arrived.elapsed();
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            drop(permit);
                            Some(waited)
                        }
                        Err(_) => None,
                    }
                }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut served = Vec::new();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Some(waited) => served.push(waited),
                None => refused += 1,
            }
        }
        assert!(refused > 100, "the excess is refused: {refused}");
        assert!(served.len() >= 45, "the slot stays busy: {}", served.len());
        served.sort();
        let late = &served[served.len() * 9 / 10..];
        // Without CoDel the queue would grow by 3 commands every 10 ms: waits of seconds.
        assert!(late.iter().all(|w| *w <= Duration::from_millis(150)), "waits of the served: {late:?}");
        assert_eq!(gate.refused(), refused);
    }

    /// Overloaded, behind a queue whose head has waited past the target, a newcomer would wait at least
    /// as long: it is refused at once, without a place in the queue.
    #[tokio::test(start_paused = true)]
    async fn a_newcomer_behind_a_standing_queue_is_refused_at_the_door() {
        let gate = Admission::new(config(1, 1000));
        let held = gate.acquire().await.unwrap();
        let Admit::Wait(first) = gate.admit() else { panic!("the slot is taken: the first waits") };
        // Past the first interval (whose smallest wait is the 0 of the command admitted at once).
        tokio::time::sleep(Duration::from_millis(110)).await;
        drop(held);
        // It waited 110 ms: the second interval's smallest wait, far above the target.
        let _running = first.granted().await.unwrap();
        tokio::time::sleep(Duration::from_millis(95)).await;
        let Admit::Wait(_second) = gate.admit() else { panic!("an empty queue takes a command") };
        // The second interval is over (overloaded), and the head has waited 8 ms: past the target, not
        // yet stale (twice the target).
        tokio::time::sleep(Duration::from_millis(8)).await;
        assert!(matches!(gate.admit(), Admit::Refused(Refusal::Codel)), "a newcomer waits behind a standing queue");
        assert_eq!(gate.load(), (1, 1), "the newcomer took no place in the queue");
        assert_eq!(gate.refused(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_burst_is_absorbed() {
        let gate = Admission::new(config(1, 100));
        let first = gate.acquire().await.unwrap();
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.acquire().await.is_ok() })
            })
            .collect();
        tokio::task::yield_now().await;
        drop(first);
        for w in waiters {
            assert!(w.await.unwrap(), "not overloaded: every waiter runs");
        }
        assert_eq!(gate.refused(), 0);
    }
}
