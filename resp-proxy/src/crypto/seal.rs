//! Sealing and opening one record's value with AES-256-GCM.
//!
//! Nonces never repeat under one key (docs/security.md → "Nonces"): each proxy process draws a random
//! 128-bit salt per master key and derives a data key from the two with HKDF-SHA256; under a data key
//! the nonce is a 96-bit counter of this process. Two processes (or two salts of one process) share a
//! data key only if they drew the same salt, 2^-128 per pair. A data key seals at most `bound` values
//! (2^32 by default, far below AES-GCM's limits per key); the value after that draws a fresh salt, so no
//! counter wraps and no state is shared between proxies or kept across restarts.
//!
//! A sealed value is `version (1) ‖ salt (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The associated data
//! binds it to its namespace, key, key id, flags and creation time: a value moved to another key, or a
//! header whose key id or flags were changed, fails authentication instead of opening.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use parking_lot::{Mutex, RwLock};
use sha2::Sha256;

use super::keyring::{KeyId, KeyRing};

/// Values one data key may seal before a fresh salt is drawn.
pub const DEFAULT_RECORDS_PER_DATA_KEY: u64 = 1 << 32;

const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What sealing adds to a value.
pub const OVERHEAD: usize = 1 + SALT_LEN + NONCE_LEN + TAG_LEN;
const AAD_LABEL: &[u8] = b"vesta.record.v1\0";
const HKDF_INFO: &[u8] = b"vesta record data key v1";
/// Data keys of other writers kept for opening; past this the cache starts again (a proxy meets one
/// salt per writing process per key, so this is only reached after very many proxy restarts).
const OPEN_CACHE_LIMIT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("no key with this id in the proxy's key ring")]
    UnknownKey,
    #[error("tampered or wrong key")]
    Authentication,
    #[error("malformed ciphertext")]
    Malformed,
    /// Stored in the clear while `encryption.refuse_clear` is on: a header whose encrypted flag was
    /// cleared, or a record from before encryption that `vesta admin reencrypt` has not reached.
    #[error("stored in the clear, but this proxy refuses unencrypted values (encryption.refuse_clear)")]
    NotEncrypted,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the current key is missing from the key ring")]
    NoCurrentKey,
    #[error("AES-GCM refused the value (too long)")]
    Cipher,
}

/// Where a sealed value belongs: everything bound to it besides its own bytes.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub namespace: &'a [u8],
    pub key: &'a [u8],
    pub key_id: KeyId,
    pub flags: u8,
    pub created_at: u64,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 25 + self.namespace.len() + self.key.len());
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(&self.key_id.to_be_bytes());
        aad.push(self.flags);
        aad.extend_from_slice(&self.created_at.to_be_bytes());
        // Lengths first, so that no two (namespace, key) pairs give the same bytes.
        aad.extend_from_slice(&(self.namespace.len() as u32).to_be_bytes());
        aad.extend_from_slice(self.namespace);
        aad.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        aad.extend_from_slice(self.key);
        aad
    }
}

/// The data key this process seals with under one master key.
struct DataKey {
    key_id: KeyId,
    salt: [u8; SALT_LEN],
    cipher: Aes256Gcm,
    used: AtomicU64,
}

/// What a sealer has done, for INFO and metrics.
#[derive(Debug, Default)]
pub struct SealerStats {
    pub sealed: AtomicU64,
    pub opened: AtomicU64,
    pub data_keys: AtomicU64,
}

/// Data keys derived for opening, by the master key's id and the writer's salt.
type OpeningCache = RwLock<HashMap<(KeyId, [u8; SALT_LEN]), Arc<Aes256Gcm>>>;

pub struct Sealer {
    ring: KeyRing,
    bound: u64,
    writing: Mutex<Option<Arc<DataKey>>>,
    opening: OpeningCache,
    pub stats: SealerStats,
}

fn derive(master: &[u8; 32], key_id: KeyId, salt: &[u8; SALT_LEN]) -> Aes256Gcm {
    let mut okm = [0u8; 32];
    let mut info = HKDF_INFO.to_vec();
    info.extend_from_slice(&key_id.to_be_bytes());
    // HKDF-SHA256 can expand to 255 × 32 bytes; 32 always fits.
    let _ = Hkdf::<Sha256>::new(Some(salt), master).expand(&info, &mut okm);
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&okm))
}

impl Sealer {
    pub fn new(ring: KeyRing) -> Self {
        Self::with_bound(ring, DEFAULT_RECORDS_PER_DATA_KEY)
    }

    /// A sealer whose data keys seal at most `bound` values each (tests inject a tiny one).
    pub fn with_bound(ring: KeyRing, bound: u64) -> Self {
        Sealer {
            ring,
            bound: bound.clamp(1, DEFAULT_RECORDS_PER_DATA_KEY),
            writing: Mutex::new(None),
            opening: RwLock::new(HashMap::new()),
            stats: SealerStats::default(),
        }
    }

    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// The id new writes are sealed with.
    pub fn current(&self) -> KeyId {
        self.ring.current()
    }

    /// A nonce no other seal under the same data key has used, and that data key.
    fn next_nonce(&self) -> Result<(Arc<DataKey>, u64), SealError> {
        loop {
            let data_key = {
                let mut slot = self.writing.lock();
                match slot.as_ref() {
                    Some(k) if k.key_id == self.ring.current() && k.used.load(Ordering::Relaxed) < self.bound => {
                        k.clone()
                    }
                    _ => {
                        let key_id = self.ring.current();
                        let master = self.ring.get(key_id).ok_or(SealError::NoCurrentKey)?;
                        let mut salt = [0u8; SALT_LEN];
                        OsRng.fill_bytes(&mut salt);
                        let k = Arc::new(DataKey {
                            key_id,
                            salt,
                            cipher: derive(&master.0, key_id, &salt),
                            used: AtomicU64::new(0),
                        });
                        self.stats.data_keys.fetch_add(1, Ordering::Relaxed);
                        *slot = Some(k.clone());
                        k
                    }
                }
            };
            // Racing sealers may take numbers past the bound; they are not used, and the next round
            // draws a fresh data key.
            let n = data_key.used.fetch_add(1, Ordering::Relaxed);
            if n < self.bound {
                return Ok((data_key, n));
            }
        }
    }

    /// Seals `plaintext` for `binding` (whose `key_id` is replaced by the current key's); returns the
    /// key id and the sealed bytes.
    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Result<(KeyId, Vec<u8>), SealError> {
        let (data_key, n) = self.next_nonce()?;
        let binding = Binding { key_id: data_key.key_id, ..binding };
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let aad = binding.aad();
        let sealed = data_key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| SealError::Cipher)?;
        let mut out = Vec::with_capacity(1 + SALT_LEN + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&data_key.salt);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        self.stats.sealed.fetch_add(1, Ordering::Relaxed);
        Ok((data_key.key_id, out))
    }

    /// Opens what [`Sealer::seal`] made for the same binding (key id included).
    pub fn open(&self, binding: Binding<'_>, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let master = self.ring.get(binding.key_id).ok_or(OpenError::UnknownKey)?;
        let salt: [u8; SALT_LEN] = sealed[1..1 + SALT_LEN].try_into().map_err(|_| OpenError::Malformed)?;
        let nonce = &sealed[1 + SALT_LEN..1 + SALT_LEN + NONCE_LEN];
        let cached = self.opening.read().get(&(binding.key_id, salt)).cloned();
        let cipher = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(derive(&master.0, binding.key_id, &salt));
                let mut cache = self.opening.write();
                if cache.len() >= OPEN_CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert((binding.key_id, salt), c.clone());
                c
            }
        };
        let aad = binding.aad();
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: &sealed[1 + SALT_LEN + NONCE_LEN..], aad: &aad })
            .map_err(|_| OpenError::Authentication)?;
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn ring(ids: &[KeyId]) -> KeyRing {
        KeyRing::new(ids.iter().map(|&id| (id, MasterKey([id as u8; 32]))).collect(), None).unwrap()
    }

    fn at<'a>(key: &'a [u8]) -> Binding<'a> {
        Binding { namespace: b"0", key, key_id: 0, flags: 2, created_at: 77 }
    }

    #[test]
    fn a_sealed_value_opens_only_where_it_was_sealed() {
        let s = Sealer::new(ring(&[1, 2]));
        let (id, sealed) = s.seal(at(b"k"), b"secret marker").unwrap();
        assert_eq!(id, 2, "new values use the current key");
        assert!(!sealed.windows(6).any(|w| w == b"secret"), "no plaintext in the sealed bytes");
        assert_eq!(sealed.len(), b"secret marker".len() + OVERHEAD);
        let here = Binding { key_id: id, ..at(b"k") };
        assert_eq!(s.open(here, &sealed).unwrap(), b"secret marker");
        // Every bound field matters.
        let wrong = [
            Binding { key: b"other", ..here },
            Binding { namespace: b"1", ..here },
            Binding { key_id: 1, ..here },
            Binding { flags: 0, ..here },
            Binding { created_at: 78, ..here },
        ];
        for b in wrong {
            assert_eq!(s.open(b, &sealed), Err(OpenError::Authentication), "{b:?}");
        }
        assert_eq!(s.open(Binding { key_id: 9, ..here }, &sealed), Err(OpenError::UnknownKey));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(s.open(here, &flipped), Err(OpenError::Authentication));
        assert_eq!(s.open(here, &sealed[..10]), Err(OpenError::Malformed));
    }

    #[test]
    fn another_proxy_with_the_same_ring_opens_it() {
        let (a, b) = (Sealer::new(ring(&[1])), Sealer::new(ring(&[1])));
        let (id, sealed) = a.seal(at(b"k"), b"v").unwrap();
        assert_eq!(b.open(Binding { key_id: id, ..at(b"k") }, &sealed).unwrap(), b"v");
    }

    #[test]
    fn the_nonce_bound_forces_a_fresh_data_key() {
        let s = Sealer::with_bound(ring(&[1]), 3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let (_, sealed) = s.seal(at(b"k"), b"v").unwrap();
            let salt_and_nonce = sealed[1..1 + SALT_LEN + NONCE_LEN].to_vec();
            assert!(seen.insert(salt_and_nonce), "a (data key, nonce) pair was used twice");
            let counter = u64::from_be_bytes(sealed[1 + SALT_LEN + 4..1 + SALT_LEN + NONCE_LEN].try_into().unwrap());
            assert!(counter < 3, "nonce counter {counter} beyond the bound");
            assert_eq!(s.open(Binding { key_id: 1, ..at(b"k") }, &sealed).unwrap(), b"v");
        }
        // Ten seals at three per data key: four data keys.
        assert_eq!(s.stats.data_keys.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn sealing_from_many_threads_never_repeats_a_nonce() {
        let s = Arc::new(Sealer::with_bound(ring(&[1]), 5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| s.seal(at(b"k"), b"v").unwrap().1[1..1 + SALT_LEN + NONCE_LEN].to_vec())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in threads {
            for n in t.join().unwrap() {
                assert!(seen.insert(n), "a (data key, nonce) pair was used twice");
            }
        }
    }
}
