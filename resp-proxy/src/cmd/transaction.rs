//! MULTI EXEC DISCARD WATCH UNWATCH.
//!
//! EXEC runs the queued commands in order on one snapshot of all their keys, taken under prepare
//! leases on a write quorum of every key (plus the WATCHed ones), and commits every change in one
//! two-phase commit (`Coordinator::write_many`; its module says exactly what is atomic). WATCH remembers
//! the (HLC, origin) of each key's newest copy; EXEC answers nil if any of them differs under the leases.
//!
//! Queue-time errors (unknown command, wrong arity) make EXEC answer EXECABORT; errors of a command
//! while it runs are its reply in the EXEC array, and the other commands still apply — as in Redis.
//! A transaction holding SCAN, KEYS, DBSIZE, RANDOMKEY or FLUSH* runs its commands one by one instead
//! (each atomic on its own), since those do not fit in one snapshot.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::snapshot::Snapshot;
use super::{keyspace, read_all, Access, DataCommand};
use crate::coordinator::{CoordError, Coordinator, KeyName, ManyDecision};
use crate::resp::Reply;
use crate::session::{Queued, Session, Watched};

/// A copy's (HLC, origin), or `None` for no copy at all.
type Stamp = Option<vesta_proto::Order>;

/// A queued command, resolved at EXEC time (a SELECT queued before it decides its database).
pub enum Step {
    /// Already answered: connection and server commands, and commands that failed to parse.
    Done(Reply),
    Data(DataCommand, Bytes),
    Keyspace(keyspace::Cmd, Bytes),
}

pub fn multi(s: &mut Session) -> Reply {
    if s.multi.is_some() {
        return Reply::error("ERR MULTI calls can not be nested");
    }
    s.multi = Some(Queued::default());
    Reply::OK
}

pub fn discard(s: &mut Session) -> Reply {
    if s.multi.take().is_none() {
        return Reply::error("ERR DISCARD without MULTI");
    }
    s.watched.clear();
    Reply::OK
}

/// Registers the keys; the returned future reads their copies and records them.
pub fn watch(
    s: &mut Session,
    coord: Arc<Coordinator>,
    keys: &[Bytes],
) -> Result<(Vec<KeyName>, impl std::future::Future<Output = Reply> + Send + 'static), Reply> {
    if s.multi.is_some() {
        return Err(Reply::error("ERR WATCH inside MULTI is not allowed"));
    }
    let mut fresh = Vec::new();
    for key in keys {
        let key = KeyName { namespace: s.namespace.clone(), key: key.clone() };
        if s.watched.iter().any(|w| w.key == key) {
            continue;
        }
        let seen = Arc::new(OnceLock::new());
        s.watched.push(Watched { key: key.clone(), seen: seen.clone() });
        fresh.push((key, seen));
    }
    let names = fresh.iter().map(|(k, _)| k.clone()).collect();
    Ok((names, async move {
        let reads = fresh.iter().map(|(k, _)| coord.read_copy(&k.namespace, &k.key));
        for ((_, seen), copy) in fresh.iter().zip(futures::future::join_all(reads).await) {
            match copy {
                Ok(copy) => {
                    let _ = seen.set(copy.map(|r| r.meta.order()));
                }
                Err(e) => return e.reply(),
            }
        }
        Reply::OK
    }))
}

/// The keys EXEC must hold: every data command's, then the watched ones.
pub fn keys_of(steps: &[Step], watched: &[Watched]) -> Vec<KeyName> {
    let mut keys: Vec<KeyName> = Vec::new();
    let mut add = |k: KeyName| {
        if !keys.contains(&k) {
            keys.push(k);
        }
    };
    for step in steps {
        if let Step::Data(c, ns) = step {
            c.keys(ns).into_iter().for_each(&mut add);
        }
    }
    watched.iter().for_each(|w| add(w.key.clone()));
    keys
}

/// Runs the transaction; `keys` is [`keys_of`].
pub async fn exec(coord: Arc<Coordinator>, steps: Vec<Step>, watched: Vec<Watched>, keys: Vec<KeyName>) -> Reply {
    let stamps: Vec<(usize, Option<Stamp>)> = watched
        .iter()
        .map(|w| (keys.iter().position(|k| *k == w.key).unwrap_or(usize::MAX), w.seen.get().copied()))
        .collect();
    let unchanged =
        |copies: &[Stamp]| stamps.iter().all(|(i, seen)| matches!(seen, Some(s) if copies.get(*i) == Some(s)));

    if steps.iter().any(|s| matches!(s, Step::Keyspace(..))) {
        return exec_one_by_one(coord, steps, &keys, unchanged).await.unwrap_or_else(|e| e.reply());
    }
    let read_only = watched.is_empty()
        && steps.iter().all(|s| match s {
            Step::Data(c, _) => c.access() == Access::Read,
            _ => true,
        });
    let result = if read_only {
        match read_all(&coord, &keys).await {
            Ok(copies) => {
                let mut snapshot = Snapshot::new(Bytes::new(), coord.now_ms(), &keys, copies);
                Ok(Reply::Array(apply_all(&steps, &mut snapshot)))
            }
            Err(e) => Err(e),
        }
    } else {
        coord
            .write_many(&keys, |copies, now| {
                let orders: Vec<_> = copies.iter().map(|c| c.map(|r| r.meta.order())).collect();
                if !unchanged(&orders) {
                    return ManyDecision::Answer(Reply::NilArray);
                }
                let mut snapshot = Snapshot::new(Bytes::new(), now, &keys, copies.iter().map(|c| c.cloned()).collect());
                let replies = apply_all(&steps, &mut snapshot);
                let changes = snapshot.into_changes();
                if changes.is_empty() {
                    ManyDecision::Answer(Reply::Array(replies))
                } else {
                    ManyDecision::Write(changes, Reply::Array(replies))
                }
            })
            .await
    };
    result.unwrap_or_else(|e| e.reply())
}

fn apply_all(steps: &[Step], snapshot: &mut Snapshot) -> Vec<Reply> {
    steps
        .iter()
        .map(|step| match step {
            Step::Done(reply) => reply.clone(),
            Step::Data(c, ns) => {
                snapshot.set_namespace(ns.clone());
                c.apply(snapshot)
            }
            Step::Keyspace(..) => unreachable!("transactions with key-space commands run one by one"),
        })
        .collect()
}

async fn exec_one_by_one(
    coord: Arc<Coordinator>,
    steps: Vec<Step>,
    keys: &[KeyName],
    unchanged: impl Fn(&[Stamp]) -> bool,
) -> Result<Reply, CoordError> {
    let copies = futures::future::join_all(keys.iter().map(|k| coord.read_copy(&k.namespace, &k.key))).await;
    let mut orders = vec![None; keys.len()];
    for (i, copy) in copies.into_iter().enumerate() {
        orders[i] = copy?.map(|r| r.meta.order());
    }
    if !unchanged(&orders) {
        return Ok(Reply::NilArray);
    }
    let mut replies = Vec::with_capacity(steps.len());
    for step in steps {
        replies.push(match step {
            Step::Done(reply) => reply,
            Step::Data(c, ns) => c.execute(coord.clone(), ns).await,
            Step::Keyspace(c, ns) => c.execute(coord.clone(), ns).await,
        });
    }
    Ok(Reply::Array(replies))
}
