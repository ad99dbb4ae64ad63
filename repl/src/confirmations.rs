//! How far each peer site has applied each shard's writes, kept in this site's own storage.
//!
//! The confirmations are a record like any other, written through the two-phase commit on a write
//! quorum, in a namespace no Redis client can select (clients' namespaces are database numbers). So
//! they survive whatever a written key survives, need no etcd, and whichever proxy ships next reads
//! them. They only move forward: a save keeps, per shard, the greater of what is stored and what it
//! brings, so two shippers running at once (a misconfiguration) can never move a confirmation back.
//!
//! The record's own commit is logged like any write of this site; the sender skips this namespace.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use vesta_proto::PrepareKind;
use vesta_proxy::coordinator::{CoordError, Coordinator, Decision, NewValue};
use vesta_proxy::resp::Reply;

/// The namespace of replication's own records (not a database number, so never a client's).
pub const INTERNAL_NAMESPACE: &[u8] = b"vesta.repl";

fn key(from: u32, to: u32) -> Bytes {
    Bytes::from(format!("confirmed/{from}/{to}"))
}

/// Per shard, the HLC through which the peer applied every write of this site.
pub type Watermarks = Vec<u64>;

fn encode(marks: &[u64]) -> Bytes {
    let mut b = BytesMut::with_capacity(marks.len() * 8);
    for m in marks {
        b.put_u64(*m);
    }
    b.freeze()
}

fn decode(mut value: &[u8], shards: usize) -> Watermarks {
    let mut marks = vec![0; shards];
    for m in marks.iter_mut() {
        if value.remaining() < 8 {
            break;
        }
        *m = value.get_u64();
    }
    marks
}

/// The value of replication's own record `key`, if there is one.
async fn read(coordinator: &Arc<Coordinator>, key: &Bytes) -> Result<Option<Bytes>, CoordError> {
    let ns = Bytes::from_static(INTERNAL_NAMESPACE);
    Ok(coordinator.read(&ns, key).await?.map(|r| r.value))
}

/// Writes replication's own record `key` with what `change` makes of its current value (and the time,
/// Unix ms), through the two-phase commit; `Ok(false)` when `change` declined (`None`): nothing written.
pub(crate) async fn update(
    coordinator: &Arc<Coordinator>,
    key: &Bytes,
    change: impl Fn(Option<&[u8]>, u64) -> Option<Bytes> + Send + 'static,
) -> Result<bool, CoordError> {
    let ns = Bytes::from_static(INTERNAL_NAMESPACE);
    let reply = coordinator
        .write(&ns, key, PrepareKind::ReadModifyWrite, true, move |live, now| {
            match change(live.map(|r| r.value.as_ref()), now) {
                Some(value) => Decision::Write(NewValue::plain(value, 0), Reply::Int(1)),
                None => Decision::Answer(Reply::Int(0)),
            }
        })
        .await?;
    Ok(reply == Reply::Int(1))
}

/// The confirmations of site `to` for this site (`from`); `None` if none were ever saved (a new peer).
pub async fn load(
    coordinator: &Arc<Coordinator>,
    from: u32,
    to: u32,
    shards: usize,
) -> Result<Option<Watermarks>, CoordError> {
    Ok(read(coordinator, &key(from, to)).await?.map(|v| decode(&v, shards)))
}

/// Saves `marks`, never moving a stored confirmation back.
pub async fn save(coordinator: &Arc<Coordinator>, from: u32, to: u32, marks: &[u64]) -> Result<(), CoordError> {
    let marks = marks.to_vec();
    update(coordinator, &key(from, to), move |stored, _| {
        let stored = stored.map_or_else(|| vec![0; marks.len()], |v| decode(v, marks.len()));
        Some(encode(&marks.iter().zip(&stored).map(|(a, b)| *a.max(b)).collect::<Vec<u64>>()))
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_pads() {
        let marks = vec![1, u64::MAX, 0, 42];
        assert_eq!(decode(&encode(&marks), 4), marks);
        // A map saved with fewer shards (never happens: the count is fixed) reads as zeros beyond it.
        assert_eq!(decode(&encode(&[7]), 3), vec![7, 0, 0]);
    }
}

/// A full sync of site `to` from this site (`sync/<from>/<to>`): whether one is needed (the peer fell
/// behind the logs' bound, or an operator asked), and once begun, the watermarks from which the logs take
/// over and how many shards are done — so that a shipper that restarts resumes the sync where it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullSync {
    pub needed: bool,
    /// Empty until the sync begins.
    pub start: Watermarks,
    pub shards_done: u32,
    /// Full syncs completed so far.
    pub completed: u64,
}

impl FullSync {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(17 + self.start.len() * 8);
        b.put_u8(u8::from(self.needed));
        b.put_u32(self.shards_done);
        b.put_u64(self.completed);
        b.put_u32(self.start.len() as u32);
        for m in &self.start {
            b.put_u64(*m);
        }
        b.freeze()
    }

    fn decode(mut v: &[u8]) -> FullSync {
        if v.remaining() < 17 {
            return FullSync::default();
        }
        let needed = v.get_u8() != 0;
        let shards_done = v.get_u32();
        let completed = v.get_u64();
        let n = v.get_u32() as usize;
        let start = (0..n).map_while(|_| (v.remaining() >= 8).then(|| v.get_u64())).collect();
        FullSync { needed, start, shards_done, completed }
    }
}

fn sync_key(from: u32, to: u32) -> Bytes {
    Bytes::from(format!("sync/{from}/{to}"))
}

pub async fn load_sync(coordinator: &Arc<Coordinator>, from: u32, to: u32) -> Result<FullSync, CoordError> {
    Ok(read(coordinator, &sync_key(from, to)).await?.map(|v| FullSync::decode(&v)).unwrap_or_default())
}

/// Changes the stored full-sync state with `change` (which sees it as stored); `Ok(false)` when
/// `change` declined (returned `None`), nothing written.
pub async fn update_sync(
    coordinator: &Arc<Coordinator>,
    from: u32,
    to: u32,
    change: impl Fn(FullSync) -> Option<FullSync> + Send + 'static,
) -> Result<bool, CoordError> {
    update(coordinator, &sync_key(from, to), move |stored, _| {
        change(stored.map(FullSync::decode).unwrap_or_default()).map(|next| next.encode())
    })
    .await
}

fn paused_key(from: u32, to: u32) -> Bytes {
    Bytes::from(format!("paused/{from}/{to}"))
}

/// Whether shipping from this site (`from`) to site `to` is paused: kept in the site's storage, so that
/// whichever proxy ships honours a pause given to any of them, also after a restart.
pub async fn load_paused(coordinator: &Arc<Coordinator>, from: u32, to: u32) -> Result<bool, CoordError> {
    Ok(read(coordinator, &paused_key(from, to)).await?.is_some_and(|v| v.as_ref() == b"1"))
}

pub async fn save_paused(coordinator: &Arc<Coordinator>, from: u32, to: u32, paused: bool) -> Result<(), CoordError> {
    let value = Bytes::from_static(if paused { b"1" } else { b"0" });
    update(coordinator, &paused_key(from, to), move |_, _| Some(value.clone())).await.map(|_| ())
}

#[cfg(test)]
mod sync_tests {
    use super::*;

    #[test]
    fn full_sync_state_round_trips() {
        let s = FullSync { needed: true, start: vec![5, 6, 7], shards_done: 2, completed: 3 };
        assert_eq!(FullSync::decode(&s.encode()), s);
        assert_eq!(FullSync::decode(&[]), FullSync::default());
    }
}
