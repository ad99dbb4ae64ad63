//! Where encryption at rest meets the two-phase commit: every copy that a command decides on is opened
//! when it comes from a quorum, and every record a decision writes is sealed before it leaves for one.
//! Copies moved between replicas as they are (read repair, late commits, admin copies, replication's
//! change logs) stay sealed: only this file turns ciphertext into values.
//!
//! What is sealed is the value and the counter section together (a counter's per-site sums and base
//! spell out the value), as `0 ‖ value` or `1 ‖ counter length (u32) ‖ counter ‖ value`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use vesta_proto::counter::Counter;
use vesta_proto::{Flags, Meta, Record};

use super::{CoordError, Coordinator};
use crate::crypto::{Binding, EncryptionState, OpenError};
use crate::metrics as m;

const PLAIN: u8 = 0;
const WITH_COUNTER: u8 = 1;

fn binding<'a>(namespace: &'a [u8], key: &'a [u8], meta: &Meta) -> Binding<'a> {
    Binding { namespace, key, key_id: meta.key_id, flags: meta.flags.0, created_at: meta.created_at }
}

fn encode_plaintext(record: &Record) -> Vec<u8> {
    let counter = record.counter.as_ref().map(|c| postcard::to_stdvec(c).unwrap_or_default());
    let mut out = Vec::with_capacity(1 + counter.as_ref().map_or(0, |c| 4 + c.len()) + record.value.len());
    match counter {
        Some(c) => {
            out.put_u8(WITH_COUNTER);
            out.put_u32(c.len() as u32);
            out.extend_from_slice(&c);
        }
        None => out.put_u8(PLAIN),
    }
    out.extend_from_slice(&record.value);
    out
}

fn decode_plaintext(plain: Vec<u8>) -> Result<(Bytes, Option<Box<Counter>>), OpenError> {
    let mut rest = Bytes::from(plain);
    if rest.is_empty() {
        return Err(OpenError::Malformed);
    }
    match rest.get_u8() {
        PLAIN => Ok((rest, None)),
        WITH_COUNTER if rest.len() >= 4 => {
            let len = rest.get_u32() as usize;
            if rest.len() < len {
                return Err(OpenError::Malformed);
            }
            let counter: Counter = postcard::from_bytes(&rest[..len]).map_err(|_| OpenError::Malformed)?;
            rest.advance(len);
            Ok((rest, Some(Box::new(counter))))
        }
        _ => Err(OpenError::Malformed),
    }
}

/// A key as an error message shows it: printable, on one line, at most 128 bytes.
fn shown_key(key: &[u8]) -> String {
    key[..key.len().min(128)].escape_ascii().to_string().replace('\'', "\\'")
}

impl Coordinator {
    /// This proxy's encryption (keys, counts of failures).
    pub fn encryption(&self) -> &Arc<EncryptionState> {
        &self.encryption
    }

    /// `record` as a command sees it: value and counter in the clear, metadata as stored (flags and key
    /// id included, so that a caller can tell which key sealed it). A record not sealed is returned as
    /// it is. A value that does not open — unknown key id, a tampered header or value, a value moved
    /// from another key — is an error, counted, never garbage.
    pub fn open(&self, namespace: &[u8], key: &[u8], record: Record) -> Result<Record, CoordError> {
        let clear = !record.meta.flags.encrypted();
        // In the clear is fine unless refused; a tombstone has nothing to seal either way.
        let refused = self.encryption.refuses_clear() && !record.meta.flags.tombstone();
        if clear && !refused {
            return Ok(record);
        }
        let opened = match self.encryption.sealer() {
            _ if clear => Err(OpenError::NotEncrypted),
            None => Err(OpenError::UnknownKey),
            Some(s) => s.open(binding(namespace, key, &record.meta), &record.value).and_then(decode_plaintext),
        };
        match opened {
            Ok((value, counter)) => Ok(Record { meta: record.meta, value, counter }),
            Err(why) => {
                self.encryption.decrypt_failures.fetch_add(1, Ordering::Relaxed);
                let reason = match why {
                    OpenError::UnknownKey => "unknown_key",
                    OpenError::Authentication => "authentication",
                    OpenError::Malformed => "malformed",
                    OpenError::NotEncrypted => "not_encrypted",
                };
                metrics::counter!(m::DECRYPT_FAILURES, "reason" => reason).increment(1);
                tracing::warn!(key = %shown_key(key), key_id = record.meta.key_id, %why, "a stored value failed to decrypt");
                Err(CoordError::Decrypt { key: shown_key(key), key_id: record.meta.key_id, why })
            }
        }
    }

    /// [`Coordinator::open`] of an optional copy.
    pub(super) fn open_copy(
        &self,
        namespace: &[u8],
        key: &[u8],
        copy: Option<Record>,
    ) -> Result<Option<Record>, CoordError> {
        copy.map(|r| self.open(namespace, key, r)).transpose()
    }

    /// `record` as it goes to the store nodes: with encryption on, value and counter sealed under the
    /// current key (whatever key the copy it came from used); tombstones carry nothing to seal.
    pub(super) fn seal(&self, namespace: &[u8], key: &[u8], record: Record) -> Result<Record, CoordError> {
        let Some(sealer) = self.encryption.sealer() else { return Ok(record) };
        if record.meta.flags.tombstone() {
            return Ok(Record {
                meta: Meta { flags: Flags(record.meta.flags.0 & !Flags::ENCRYPTED), key_id: 0, ..record.meta },
                ..record
            });
        }
        let flags = record.meta.flags.with(Flags::ENCRYPTED);
        let plain = encode_plaintext(&record);
        let at = Binding { flags: flags.0, ..binding(namespace, key, &record.meta) };
        let (key_id, sealed) = sealer.seal(at, &plain).map_err(CoordError::Seal)?;
        Ok(Record { meta: Meta { flags, key_id, ..record.meta }, value: Bytes::from(sealed), counter: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_layout_round_trips_with_and_without_a_counter() {
        let mut r = Record::new(Meta::default(), Bytes::from_static(b"12"));
        assert_eq!(decode_plaintext(encode_plaintext(&r)).unwrap(), (r.value.clone(), None));
        let mut c = Counter::on(Default::default(), Bytes::from_static(b"10"));
        c.add(1, 2, 0.0);
        r.counter = Some(Box::new(c));
        assert_eq!(decode_plaintext(encode_plaintext(&r)).unwrap(), (r.value.clone(), r.counter.clone()));
        assert_eq!(decode_plaintext(vec![]), Err(OpenError::Malformed));
        assert_eq!(decode_plaintext(vec![1, 0, 0, 0, 9]), Err(OpenError::Malformed));
        assert_eq!(decode_plaintext(vec![7]), Err(OpenError::Malformed));
    }
}
