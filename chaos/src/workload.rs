//! The load a schedule runs: clients spread over the proxies, each sending random single-key commands
//! (GET, SET, SET NX PX, SET IFEQ, INCR, DEL, PEXPIRE) on a few shared keys, and writing keys of its own
//! whose fate is known (written once and never again; written then deleted; written with a short TTL).
//! Every command goes into the history with the times it was sent and answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vesta_lincheck::{Entry, Op, OpResult, SetCond};

use crate::client::{Client, Reply};

/// How long a client waits for one reply before it counts the outcome as unknown and reconnects.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The shared keys every client works on.
pub const SHARED_KEYS: usize = 5;

/// The history, and the clock its times are read from.
pub struct Recorder {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { start: Instant::now(), entries: Mutex::new(Vec::new()) }
    }
}

impl Recorder {
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn push(&self, entry: Entry) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    pub fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.entries.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One command as sent, and what it means to the checker.
#[derive(Debug, Clone)]
pub struct Command {
    pub key: Vec<u8>,
    pub op: Op,
    pub args: Vec<Vec<u8>>,
}

impl Command {
    pub fn get(key: &[u8]) -> Command {
        Command { key: key.to_vec(), op: Op::Get, args: vec![b"GET".to_vec(), key.to_vec()] }
    }

    /// What the reply means for the history.
    pub fn outcome(&self, reply: &Reply) -> Outcome {
        Outcome::Done(match (&self.op, reply) {
            (_, Reply::Error(e)) if matches!(self.op, Op::Incr) && e.starts_with("ERR value is not an integer") => {
                OpResult::Error
            }
            // A read that failed observed nothing; a write refused before its commit phase wrote nothing
            // (what Vesta promises for these errors — a history that shows otherwise is flagged).
            (Op::Get, Reply::Error(_)) => return Outcome::NotApplied,
            (_, Reply::Error(e)) if NOTHING_WRITTEN.iter().any(|p| e.starts_with(p)) => return Outcome::NotApplied,
            (_, Reply::Error(_)) => return Outcome::Unknown,
            (Op::Get, Reply::Bulk(v)) => OpResult::Value(v.clone()),
            (_, Reply::Nil) => OpResult::Nil,
            (_, Reply::Ok) => OpResult::Ok,
            (_, Reply::Int(n)) => OpResult::Int(*n),
            (_, Reply::Bulk(v)) => OpResult::Value(v.clone()),
        })
    }
}

/// Error replies Vesta answers only before a write's commit phase began: nothing was written.
const NOTHING_WRITTEN: &[&str] = &["TRYAGAIN", "CLUSTERDOWN only", "CLUSTERDOWN clock skew"];

/// What a command came to, as far as the history is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(OpResult),
    /// It may or may not have taken effect (an error after the commit phase began, a timeout, a lost
    /// connection).
    Unknown,
    /// It certainly did not take effect: left out of the history.
    NotApplied,
}

/// A key written once and then left alone (`Durable`), or whose end is known (`Gone`): after the run
/// it must read as written, or as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Durable(Vec<u8>),
    Gone,
}

pub struct Shared {
    pub recorder: Recorder,
    pub stop: AtomicBool,
    /// Keys whose acknowledged fate is known, checked after the run.
    pub fates: Mutex<Vec<(Vec<u8>, Fate)>>,
    /// Per client: hold the next pipeline's replies this many ms (a slow reader), 0 for none.
    pub slow: Vec<AtomicU64>,
    pub ops: AtomicU64,
}

impl Shared {
    pub fn new(clients: usize) -> Shared {
        Shared {
            recorder: Recorder::default(),
            stop: AtomicBool::new(false),
            fates: Mutex::new(Vec::new()),
            slow: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            ops: AtomicU64::new(0),
        }
    }
}

/// One client: sends commands one at a time, or now and then a pipeline of four (of eight when told to
/// read slowly), until `stop`.
pub async fn client(id: usize, addr: SocketAddr, seed: u64, shared: Arc<Shared>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut conn: Option<Client> = None;
    let mut state = ClientState { id, seq: 0, last_seen: vec![None; SHARED_KEYS], to_delete: None };
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            match Client::connect(addr, Duration::from_secs(1)).await {
                Ok(c) => conn = Some(c),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            continue;
        };
        let hold = shared.slow[id].swap(0, Ordering::Relaxed);
        // Some pipelines of a few commands: a proxy runs those on distinct keys as one group (one batch
        // of prepares and commits per store node), whose members must each stay linearizable.
        let batch = if hold > 0 {
            8
        } else if rng.random_range(0..4) == 0 {
            4
        } else {
            1
        };
        let commands: Vec<Planned> = (0..batch).map(|_| next_command(&mut state, &mut rng)).collect();
        let invoked = shared.recorder.now_us();
        let sent = c.send(&commands.iter().map(|(cmd, _)| cmd.args.clone()).collect::<Vec<_>>()).await;
        if hold > 0 {
            tokio::time::sleep(Duration::from_millis(hold)).await;
        }
        let mut broken = sent.is_err();
        for (cmd, fate) in commands {
            let reply = if broken { None } else { c.read(REPLY_TIMEOUT).await.ok() };
            broken |= reply.is_none();
            let outcome = reply.as_ref().map_or(Outcome::Unknown, |r| cmd.outcome(r));
            shared.ops.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Outcome::NotApplied => {}
                Outcome::Done(result) => {
                    remember(&mut state.last_seen, &cmd, &result);
                    if let (Some((key, fate)), true) = (fate, acknowledged(&cmd, &result)) {
                        shared.fates.lock().unwrap_or_else(|p| p.into_inner()).push((key, fate));
                    }
                    let completed = shared.recorder.now_us();
                    shared.recorder.push(Entry::ok(id as u32, cmd.key, cmd.op, invoked, completed, result));
                }
                Outcome::Unknown => shared.recorder.push(Entry::unknown(id as u32, cmd.key, cmd.op, invoked)),
            }
        }
        if broken {
            conn = None;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
    }
}

fn acknowledged(cmd: &Command, result: &OpResult) -> bool {
    match cmd.op {
        Op::Set { .. } => *result == OpResult::Ok,
        Op::Del => *result == OpResult::Int(1),
        _ => false,
    }
}

/// The value a client last saw in a shared key: what its next `SET … IFEQ` compares against.
fn remember(last_seen: &mut [Option<Vec<u8>>], cmd: &Command, result: &OpResult) {
    let Some(i) = shared_index(&cmd.key) else { return };
    match (&cmd.op, result) {
        (Op::Get, OpResult::Value(v)) => last_seen[i] = Some(v.clone()),
        (Op::Set { value, .. }, OpResult::Ok) => last_seen[i] = Some(value.clone()),
        (Op::Incr, OpResult::Int(n)) => last_seen[i] = Some(n.to_string().into_bytes()),
        _ => {}
    }
}

pub fn shared_key(i: usize) -> Vec<u8> {
    format!("shared:{i}").into_bytes()
}

fn shared_index(key: &[u8]) -> Option<usize> {
    std::str::from_utf8(key.strip_prefix(b"shared:")?).ok()?.parse().ok()
}

fn set(key: Vec<u8>, value: Vec<u8>, cond: SetCond, ttl_ms: Option<u64>) -> Command {
    let mut args = vec![b"SET".to_vec(), key.clone(), value.clone()];
    match &cond {
        SetCond::None => {}
        SetCond::Nx => args.push(b"NX".to_vec()),
        SetCond::Xx => args.push(b"XX".to_vec()),
        SetCond::IfEq(old) => args.extend([b"IFEQ".to_vec(), old.clone()]),
    }
    if let Some(ms) = ttl_ms {
        args.extend([b"PX".to_vec(), ms.to_string().into_bytes()]);
    }
    Command { key, op: Op::Set { value, cond, ttl_ms }, args }
}

/// What a client remembers between commands.
struct ClientState {
    id: usize,
    seq: u64,
    /// The value last seen in each shared key (for `SET … IFEQ`).
    last_seen: Vec<Option<Vec<u8>>>,
    /// A key of this client's written and not yet deleted.
    to_delete: Option<Vec<u8>>,
}

/// A command, and the fate its key will have if it is acknowledged (when it has a known one).
type Planned = (Command, Option<(Vec<u8>, Fate)>);

/// The next command of a client.
fn next_command(state: &mut ClientState, rng: &mut StdRng) -> Planned {
    state.seq += 1;
    let (id, seq) = (state.id, state.seq);
    // Integers, unique per client and command, so that INCR works on any value and every write is told
    // apart from every other.
    let value = format!("{}", (id as u64 + 1) * 1_000_000_000 + seq).into_bytes();
    let i = rng.random_range(0..SHARED_KEYS);
    let key = shared_key(i);
    let command = match rng.random_range(0..100) {
        0..=24 => Command::get(&key),
        25..=37 => set(key, value, SetCond::None, None),
        38..=45 => set(key, value, SetCond::Nx, Some(rng.random_range(200..2_000))),
        46..=53 => match &state.last_seen[i] {
            Some(old) => set(key, value, SetCond::IfEq(old.clone()), None),
            None => set(key, value, SetCond::Xx, None),
        },
        54..=72 => Command { key: key.clone(), op: Op::Incr, args: vec![b"INCR".to_vec(), key] },
        73..=79 => Command { key: key.clone(), op: Op::Del, args: vec![b"DEL".to_vec(), key] },
        80..=87 => {
            let ms: u64 = rng.random_range(100..1_500);
            Command {
                key: key.clone(),
                op: Op::Expire { ms },
                args: vec![b"PEXPIRE".to_vec(), key, ms.to_string().into_bytes()],
            }
        }
        88..=93 => {
            let key = format!("durable:{id}:{seq}").into_bytes();
            return (set(key.clone(), value.clone(), SetCond::None, None), Some((key, Fate::Durable(value))));
        }
        94..=96 => {
            let key = format!("gone:{id}:{seq}").into_bytes();
            return (set(key.clone(), value, SetCond::None, Some(rng.random_range(50..300))), Some((key, Fate::Gone)));
        }
        _ => match state.to_delete.take() {
            // A key of this client's, written before and deleted now: once the DEL is acknowledged it
            // must stay gone.
            Some(key) => {
                let del = Command { key: key.clone(), op: Op::Del, args: vec![b"DEL".to_vec(), key.clone()] };
                return (del, Some((key, Fate::Gone)));
            }
            None => {
                let key = format!("deleted:{id}:{seq}").into_bytes();
                state.to_delete = Some(key.clone());
                set(key, value, SetCond::None, None)
            }
        },
    };
    (command, None)
}
