//! Writes to one key from one proxy wait their turn instead of racing for the key's leases — and the
//! writer whose turn it is takes the single-key writes queued behind it along in its own two-phase
//! commit.
//!
//! Without a queue, many clients of one proxy incrementing one counter would each win a lease on some
//! replica and lose on another, abort, and retry: a livelock that starves a hot key. In order, each
//! write would still cost a whole round of prepares and commits, so a hot counter would do one
//! increment per round trip. Instead, a writer that gets its turn *collects the riders* waiting behind
//! it: it decides its own command on the newest copy, then each rider's command on the record the one
//! before it left, in queue order, and commits only the last record — N INCRs become one prepare and
//! one commit of the sum, each client answered the value its own INCR produced, exactly as if they had
//! run one after another. Writers on other proxies still contend through the store leases.
//!
//! A rider whose deadline passes before anyone took it along gives up (`TRYAGAIN`, nothing written);
//! once taken along it shares its carrier's outcome, which the carrier reaches within its own deadline.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use vesta_proto::Record;

use super::{CoordError, Decision};
use crate::resp::Reply;

type Key = (Bytes, Bytes);

/// A command's decision on the newest live copy of its key (see `Coordinator::write`).
pub(super) type Decide = Box<dyn FnMut(Option<&Record>, u64) -> Decision + Send>;

/// What a rider is answered with.
pub(super) type Settled = Result<Reply, CoordError>;

/// A single-key write that the writer ahead of it may take along.
pub(super) struct Ride {
    /// Whether the command decides on the value (else on metadata only).
    pub want_value: bool,
    /// Taken by whoever runs the command: a carrier, or the rider itself when its turn comes (or, to
    /// give up, when its deadline passes first).
    decide: Mutex<Option<Decide>>,
    /// Where a carrier answers.
    settled: Mutex<Option<oneshot::Sender<Settled>>>,
}

/// A rider taken along: its command, and where its answer goes.
pub(super) struct Rider {
    pub decide: Decide,
    answer: Option<oneshot::Sender<Settled>>,
    /// Its reply in the carrier's latest attempt.
    pub reply: Option<Reply>,
}

impl Rider {
    /// Answers the rider: its own reply if the carrier's write went through, else the carrier's error.
    pub fn settle(mut self, outcome: &Result<Reply, CoordError>) {
        let answer = match outcome {
            Ok(_) => Ok(self.reply.take().unwrap_or(Reply::Nil)),
            Err(e) => Err(e.clone()),
        };
        if let Some(tx) = self.answer.take() {
            let _ = tx.send(answer);
        }
    }
}

struct Waiter {
    turn: oneshot::Sender<Turn>,
    /// `None`: a write that only waits for the key (a multi-key write, a copy from another site).
    ride: Option<Arc<Ride>>,
}

/// Writers waiting for each key whose turn is held; a key is in the map exactly while it is.
type Waiting = DashMap<Key, VecDeque<Waiter>>;

#[derive(Default)]
pub struct KeyQueue {
    keys: Arc<Waiting>,
}

/// The turn on a key: while it lives, no other write of this proxy runs on the key. Dropped, it passes
/// to the next waiter.
pub struct Turn {
    keys: Arc<Waiting>,
    key: Key,
    held: bool,
}

/// How a queued single-key write comes out of the queue.
pub(super) enum Joined {
    /// Its turn: it runs itself (and may carry riders), with its command back.
    Turn(Turn, Decide),
    /// A carrier ran it: this is its answer.
    Settled(Settled),
}

impl KeyQueue {
    /// Waits until no other write of this proxy is in progress on (namespace, key). Cancel-safe.
    pub async fn turn(&self, namespace: &Bytes, key: &Bytes) -> Turn {
        loop {
            match self.enter(namespace, key, None) {
                Ok(turn) => return turn,
                // The sender is only dropped with the turn inside it (which passes the turn on) or by a
                // carrier, which takes riders only: an exclusive waiter gets its turn (or queues again).
                Err(waiting) => {
                    if let Ok(turn) = waiting.await {
                        return turn;
                    }
                }
            }
        }
    }

    /// Queues a single-key write that a carrier may take along; gives up (`Contended`, nothing
    /// written) if neither its turn nor a carrier comes before `deadline`.
    pub(super) async fn join(
        &self,
        namespace: &Bytes,
        key: &Bytes,
        want_value: bool,
        decide: Decide,
        deadline: Instant,
    ) -> Joined {
        let (settled_tx, settled_rx) = oneshot::channel();
        let ride =
            Arc::new(Ride { want_value, decide: Mutex::new(Some(decide)), settled: Mutex::new(Some(settled_tx)) });
        let mut waiting = match self.enter(namespace, key, Some(ride.clone())) {
            Ok(turn) => return own_turn(turn, &ride),
            Err(waiting) => waiting,
        };
        tokio::select! {
            turn = &mut waiting => match turn {
                Ok(turn) => own_turn(turn, &ride),
                // A carrier took it along.
                Err(_) => Joined::Settled(carried(settled_rx).await),
            },
            _ = tokio::time::sleep_until(deadline) => {
                if ride.decide.lock().take().is_some() {
                    // Nobody took it: it leaves the queue (the entry is skipped) with nothing written.
                    drop(waiting);
                    Joined::Settled(Err(CoordError::Contended))
                } else {
                    // Taken along just now: the carrier answers.
                    Joined::Settled(carried(settled_rx).await)
                }
            }
        }
    }

    /// The turn on (namespace, key) if no write of this proxy holds it now; `None` (and nothing queued)
    /// otherwise.
    pub(super) fn try_turn(&self, namespace: &Bytes, key: &Bytes) -> Option<Turn> {
        let k = (namespace.clone(), key.clone());
        match self.keys.entry(k.clone()) {
            dashmap::Entry::Vacant(v) => {
                v.insert(VecDeque::new());
                Some(Turn { keys: self.keys.clone(), key: k, held: true })
            }
            dashmap::Entry::Occupied(_) => None,
        }
    }

    /// Takes the turn if the key is free, or queues for it.
    fn enter(&self, namespace: &Bytes, key: &Bytes, ride: Option<Arc<Ride>>) -> Result<Turn, oneshot::Receiver<Turn>> {
        let k = (namespace.clone(), key.clone());
        match self.keys.entry(k.clone()) {
            dashmap::Entry::Vacant(v) => {
                v.insert(VecDeque::new());
                Ok(Turn { keys: self.keys.clone(), key: k, held: true })
            }
            dashmap::Entry::Occupied(mut o) => {
                let (tx, rx) = oneshot::channel();
                o.get_mut().push_back(Waiter { turn: tx, ride });
                Err(rx)
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Turn {
    /// Takes along up to `max` riders from the head of the queue, in order, while `fits` accepts them;
    /// stops at the first that does not fit or at a write that only waits for the key, so no write is
    /// ever overtaken.
    pub(super) fn take_riders(&self, fits: impl Fn(&Ride) -> bool, max: usize) -> Vec<Rider> {
        let mut riders = Vec::new();
        let Some(mut waiting) = self.keys.get_mut(&self.key) else { return riders };
        while riders.len() < max {
            let Some(Waiter { ride: Some(ride), .. }) = waiting.front() else { break };
            if !fits(ride) {
                break;
            }
            let ride = waiting.pop_front().and_then(|w| w.ride);
            let Some(ride) = ride else { break };
            // `None`: its deadline passed and it left; the entry was all that remained.
            let decide = ride.decide.lock().take();
            if let Some(decide) = decide {
                let answer = ride.settled.lock().take();
                riders.push(Rider { decide, answer, reply: None });
            }
        }
        riders
    }
}

fn own_turn(turn: Turn, ride: &Ride) -> Joined {
    match ride.decide.lock().take() {
        Some(decide) => Joined::Turn(turn, decide),
        // Cannot happen (only the rider takes its command back once its turn came), but a turn without a
        // command must still be passed on — dropping it does — and the client told to retry.
        None => Joined::Settled(Err(CoordError::Contended)),
    }
}

async fn carried(settled: oneshot::Receiver<Settled>) -> Settled {
    settled.await.unwrap_or(Err(CoordError::Contended))
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        loop {
            let next = match self.keys.entry(self.key.clone()) {
                dashmap::Entry::Occupied(mut o) => match o.get_mut().pop_front() {
                    Some(next) => next,
                    None => {
                        o.remove();
                        return;
                    }
                },
                dashmap::Entry::Vacant(_) => return,
            };
            let turn = Turn { keys: self.keys.clone(), key: self.key.clone(), held: true };
            match next.turn.send(turn) {
                Ok(()) => return,
                // That waiter gave up: the turn goes to the one after it.
                Err(mut unsent) => unsent.held = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_key() -> (Bytes, Bytes) {
        (Bytes::from_static(b"0"), Bytes::from_static(b"k"))
    }

    #[tokio::test]
    async fn one_writer_at_a_time_and_entries_are_cleaned_up() {
        let q = Arc::new(KeyQueue::default());
        let (ns, k) = ns_key();
        let first = q.turn(&ns, &k).await;
        let q2 = q.clone();
        let (ns2, k2) = (ns.clone(), k.clone());
        let waiter = tokio::spawn(async move {
            let _t = q2.turn(&ns2, &k2).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second writer waits");
        drop(first);
        waiter.await.unwrap();
        assert!(q.is_empty());
    }

    fn answer(n: i64) -> Decide {
        Box::new(move |_, _| Decision::Answer(Reply::Int(n)))
    }

    #[tokio::test]
    async fn riders_are_taken_in_order_up_to_an_exclusive_waiter() {
        let q = Arc::new(KeyQueue::default());
        let (ns, k) = ns_key();
        let carrier = q.turn(&ns, &k).await;
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let join = |n: i64| {
            let (q, ns, k) = (q.clone(), ns.clone(), k.clone());
            tokio::spawn(async move {
                match q.join(&ns, &k, true, answer(n), deadline).await {
                    Joined::Settled(s) => s,
                    Joined::Turn(_, mut own) => match own(None, 0) {
                        Decision::Answer(r) => Ok(r),
                        _ => unreachable!(),
                    },
                }
            })
        };
        let (r1, r2) = (join(1), join(2));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (q2, ns2, k2) = (q.clone(), ns.clone(), k.clone());
        let exclusive = tokio::spawn(async move { drop(q2.turn(&ns2, &k2).await) });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let r3 = join(3);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        let mut riders = carrier.take_riders(|_| true, 10);
        assert_eq!(riders.len(), 2, "stops at the exclusive waiter");
        for (i, rider) in riders.iter_mut().enumerate() {
            match (rider.decide)(None, 0) {
                Decision::Answer(r) => rider.reply = Some(r),
                _ => unreachable!(),
            }
            assert_eq!(rider.reply, Some(Reply::Int(i as i64 + 1)), "in queue order");
        }
        for rider in riders {
            rider.settle(&Ok(Reply::OK));
        }
        assert_eq!(r1.await.unwrap(), Ok(Reply::Int(1)));
        assert_eq!(r2.await.unwrap(), Ok(Reply::Int(2)));
        drop(carrier);
        exclusive.await.unwrap();
        assert_eq!(r3.await.unwrap(), Ok(Reply::Int(3)), "the rider behind the exclusive waiter ran itself");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_rider_past_its_deadline_gives_up_and_the_turn_skips_it() {
        let q = Arc::new(KeyQueue::default());
        let (ns, k) = ns_key();
        let carrier = q.turn(&ns, &k).await;
        let soon = Instant::now() + std::time::Duration::from_millis(10);
        let gave_up = q.join(&ns, &k, false, answer(1), soon).await;
        assert!(matches!(gave_up, Joined::Settled(Err(CoordError::Contended))));
        assert!(carrier.take_riders(|_| true, 10).is_empty(), "a rider that gave up is not taken");
        let (q2, ns2, k2) = (q.clone(), ns.clone(), k.clone());
        let next = tokio::spawn(async move { drop(q2.turn(&ns2, &k2).await) });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(carrier);
        next.await.unwrap();
        assert!(q.is_empty());
    }
}
