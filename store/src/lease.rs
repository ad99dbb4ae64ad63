//! The prepare-lock table: which request holds a short lease on which storage key.
//!
//! Leases live only in memory. That is safe because a prepare writes nothing: after a crash every lease
//! is gone, and so is every prepare that could have relied on one (a late commit is refused).

use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::oneshot;
use vesta_proto::{Order, RequestId};

/// A deadline meaning "being committed": a commit in progress cannot lose its lease half-way through
/// writing, or another request could prepare on the old copy and overwrite the commit (a lost update).
const COMMITTING: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    owner: RequestId,
    /// Monotonic ms.
    deadline: u64,
    /// When the owner first took it (monotonic ms; kept when a retried prepare renews it): a write
    /// committed under this lease is stamped no earlier than about then (see [`LeaseTable::oldest_grant`]).
    granted: u64,
    /// The order of the copy the owner's prepare found, once it has looked (see [`LeaseTable::seen`]).
    seen: Option<Seen>,
}

/// What a prepare found under its lease: the order of the copy there, or no copy.
pub type Seen = Option<Order>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// Newly taken; `reclaimed` when it replaced another request's expired lease.
    Taken { reclaimed: bool },
    /// This request already held it (a retried prepare); the lease was renewed.
    Reentrant,
    /// Another request holds a live lease.
    HeldBy(RequestId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The lease is this request's and is now pinned until [`LeaseTable::release`].
    Pinned,
    /// This request's lease ran out before the commit arrived (it has been removed).
    Expired,
    /// Another request holds the key.
    HeldBy(RequestId),
    /// Nobody holds the key.
    Free,
}

#[derive(Default)]
pub struct LeaseTable {
    leases: DashMap<Vec<u8>, Lease>,
}

impl LeaseTable {
    /// Takes (or renews) `owner`'s lease on `key` until `now + lease_ms`.
    pub fn acquire(&self, key: &[u8], owner: RequestId, now: u64, lease_ms: u64) -> Acquire {
        let deadline = now.saturating_add(lease_ms);
        match self.leases.entry(key.to_vec()) {
            Entry::Vacant(v) => {
                v.insert(Lease { owner, deadline, granted: now, seen: None });
                Acquire::Taken { reclaimed: false }
            }
            Entry::Occupied(mut o) => {
                let held = *o.get();
                if held.owner == owner {
                    if held.deadline != COMMITTING {
                        o.get_mut().deadline = deadline;
                    }
                    Acquire::Reentrant
                } else if held.deadline > now {
                    Acquire::HeldBy(held.owner)
                } else {
                    o.insert(Lease { owner, deadline, granted: now, seen: None });
                    Acquire::Taken { reclaimed: true }
                }
            }
        }
    }

    /// For a commit: pins `owner`'s live lease so that it cannot expire while the record is written.
    pub fn claim(&self, key: &[u8], owner: RequestId, now: u64) -> Claim {
        match self.leases.entry(key.to_vec()) {
            Entry::Vacant(_) => Claim::Free,
            Entry::Occupied(mut o) => {
                let held = *o.get();
                if held.owner != owner {
                    if held.deadline > now {
                        Claim::HeldBy(held.owner)
                    } else {
                        Claim::Free
                    }
                } else if held.deadline > now {
                    o.get_mut().deadline = COMMITTING;
                    Claim::Pinned
                } else {
                    o.remove();
                    Claim::Expired
                }
            }
        }
    }

    /// Remembers what `owner`'s prepare found on `key` under its lease.
    pub fn saw(&self, key: &[u8], owner: RequestId, seen: Seen) {
        if let Some(mut l) = self.leases.get_mut(key).filter(|l| l.owner == owner) {
            l.seen = Some(seen);
        }
    }

    /// What `owner`'s prepare found on `key`, if it holds the lease and its prepare looked. Every writer
    /// of a record holds the key's lease (commits, repairs, copies from other nodes), so while the lease
    /// has been `owner`'s without a break — which a commit's [`LeaseTable::claim`] establishes — this
    /// is still the copy on disk, and the commit need not read it again.
    pub fn seen(&self, key: &[u8], owner: RequestId) -> Option<Seen> {
        self.leases.get(key).filter(|l| l.owner == owner).and_then(|l| l.seen)
    }

    /// When `owner` was granted its lease on `key` (monotonic ms), if it holds it.
    pub fn granted(&self, key: &[u8], owner: RequestId) -> Option<u64> {
        self.leases.get(key).filter(|l| l.owner == owner).map(|l| l.granted)
    }

    /// Releases `owner`'s lease; false when `owner` did not hold it (never releases another's).
    pub fn release(&self, key: &[u8], owner: RequestId) -> bool {
        self.leases.remove_if(key, |_, l| l.owner == owner).is_some()
    }

    /// Whether a request other than `me` holds a live lease on `key`.
    pub fn held_by_other(&self, key: &[u8], me: RequestId, now: u64) -> Option<RequestId> {
        self.leases.get(key).filter(|l| l.owner != me && l.deadline > now).map(|l| l.owner)
    }

    /// Drops expired leases (abandoned prepares); returns how many.
    pub fn reap(&self, now: u64) -> usize {
        let before = self.leases.len();
        self.leases.retain(|_, l| l.deadline > now);
        before - self.leases.len()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether any live lease (or commit in progress) is on a key `matches` selects.
    pub fn any_live(&self, now: u64, matches: impl Fn(&[u8]) -> bool) -> bool {
        self.leases.iter().any(|e| e.value().deadline > now && matches(e.key()))
    }

    /// When the oldest live lease (or commit in progress) on a key `matches` selects was granted, in
    /// monotonic ms. A commit can only land under such a lease, so every write still to come on those
    /// keys is stamped after its coordinator saw the grant — the change log's closed timestamp rests
    /// on this.
    pub fn oldest_grant(&self, now: u64, matches: impl Fn(&[u8]) -> bool) -> Option<u64> {
        self.leases.iter().filter(|e| e.value().deadline > now && matches(e.key())).map(|e| e.value().granted).min()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

/// The leases a write in progress has pinned ([`LeaseTable::claim`]). They are released when the guard
/// goes, whatever ends the operation — its end, an error, or the caller dropping it half-way (a timeout,
/// a client that went away). A lease must not outlive its write (a pinned lease never expires: the key
/// would stay locked until restart), nor end before the write reached the engine (another request could
/// then prepare on the old copy and overwrite the write). So while an engine write is under way the
/// release waits for it: the write itself, once handed to the group-commit thread, always finishes.
pub(crate) struct Pinned {
    table: Arc<LeaseTable>,
    /// Each key with the request whose lease on it is pinned (a batch of commits pins several
    /// requests' leases behind one engine write).
    keys: Vec<(Vec<u8>, RequestId)>,
    write: Option<oneshot::Receiver<Result<(), String>>>,
}

impl Pinned {
    pub fn new(table: Arc<LeaseTable>, keys: Vec<Vec<u8>>, owner: RequestId) -> Self {
        Pinned { table, keys: keys.into_iter().map(|k| (k, owner)).collect(), write: None }
    }

    /// One more key whose lease `owner` has pinned.
    pub fn add(&mut self, key: Vec<u8>, owner: RequestId) {
        self.keys.push((key, owner));
    }

    /// Takes over the leases `other` pinned, to release them after this one's write.
    pub fn absorb(&mut self, mut other: Pinned) {
        self.keys.append(&mut other.keys);
    }

    /// Waits for an engine write handed over with the leases pinned; if this wait is abandoned, the
    /// leases are released once the write has landed.
    pub async fn wait(&mut self, write: oneshot::Receiver<Result<(), String>>) -> Result<(), String> {
        let pending = self.write.insert(write);
        let result = pending.await.unwrap_or_else(|_| Err("writer stopped".into()));
        self.write = None;
        result
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        if let (Some(write), Ok(runtime)) = (self.write.take(), tokio::runtime::Handle::try_current()) {
            let table = self.table.clone();
            runtime.spawn(async move {
                let _ = write.await;
                for (key, owner) in keys {
                    table.release(&key, owner);
                }
            });
            return;
        }
        for (key, owner) in keys {
            self.table.release(&key, owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RequestId = RequestId(1);
    const B: RequestId = RequestId(2);

    #[test]
    fn lease_lifecycle() {
        let t = LeaseTable::default();
        assert_eq!(t.acquire(b"k", A, 100, 50), Acquire::Taken { reclaimed: false });
        assert_eq!(t.acquire(b"k", B, 120, 50), Acquire::HeldBy(A));
        assert_eq!(t.acquire(b"k", A, 140, 50), Acquire::Reentrant); // renewed to 190
        assert_eq!(t.acquire(b"k", B, 170, 50), Acquire::HeldBy(A));
        assert_eq!(t.acquire(b"k", B, 190, 50), Acquire::Taken { reclaimed: true });
        assert_eq!(t.claim(b"k", A, 191), Claim::HeldBy(B));
        assert!(!t.release(b"k", A));
        assert_eq!(t.claim(b"k", B, 200), Claim::Pinned);
        // Pinned: neither time nor another request takes it.
        assert_eq!(t.acquire(b"k", A, 10_000, 50), Acquire::HeldBy(B));
        assert!(t.release(b"k", B));
        assert_eq!(t.claim(b"k", B, 200), Claim::Free);
    }

    #[test]
    fn late_claim_is_expired_and_reap_cleans_up() {
        let t = LeaseTable::default();
        t.acquire(b"k", A, 0, 10);
        assert_eq!(t.claim(b"k", A, 10), Claim::Expired);
        assert!(t.is_empty());
        t.acquire(b"x", A, 0, 10);
        t.acquire(b"y", B, 0, 100);
        assert_eq!(t.reap(50), 1);
        assert_eq!(t.len(), 1);
    }
}
