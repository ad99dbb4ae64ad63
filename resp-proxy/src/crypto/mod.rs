//! Encryption at rest (docs/security.md): record values are sealed with AES-256-GCM in the proxy, so
//! store nodes, their disks, their change logs and the replication links carry only ciphertext. Keys,
//! TTLs, versions and sizes stay visible: the store routes, scans, expires and orders copies by them.

mod keyring;
mod seal;

pub use keyring::{parse, EnvSource, FileSource, KeyId, KeyRing, KeyRingError, KeySource, MasterKey};
pub use seal::{Binding, OpenError, SealError, Sealer, SealerStats, DEFAULT_RECORDS_PER_DATA_KEY, OVERHEAD};

/// The environment variable read for keys when set (`ID:BASE64KEY`, comma-separated).
pub const KEYS_ENV: &str = "VESTA_ENCRYPTION_KEYS";

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

/// A proxy's encryption: the sealer once keys are loaded, and what went wrong opening values (counted
/// with or without keys: a proxy without keys meeting encrypted records is a failure worth seeing).
#[derive(Default)]
pub struct EncryptionState {
    sealer: OnceLock<Arc<Sealer>>,
    pub decrypt_failures: AtomicU64,
    refuse_clear: AtomicBool,
}

impl EncryptionState {
    pub fn sealer(&self) -> Option<&Arc<Sealer>> {
        self.sealer.get()
    }

    /// Turns encryption on; `false` if it already was (the ring is fixed for the process's life: a
    /// rotation restarts the proxies with the new ring).
    pub fn enable(&self, sealer: Arc<Sealer>, refuse_clear: bool) -> bool {
        self.refuse_clear.store(refuse_clear, std::sync::atomic::Ordering::Relaxed);
        self.sealer.set(sealer).is_ok()
    }

    /// Whether a value stored in the clear is refused (once every record is encrypted, this makes a
    /// cleared encrypted flag an error rather than ciphertext handed out as a value).
    pub fn refuses_clear(&self) -> bool {
        self.sealer().is_some() && self.refuse_clear.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// INFO's `# Encryption` fields.
    pub fn info_fields(&self) -> Vec<(&'static str, String)> {
        use std::sync::atomic::Ordering::Relaxed;
        let failures = self.decrypt_failures.load(Relaxed).to_string();
        let Some(s) = self.sealer() else {
            return vec![("encryption_enabled", "0".into()), ("encryption_decrypt_failures", failures)];
        };
        let ids: Vec<String> = s.ring().ids().map(|id| id.to_string()).collect();
        vec![
            ("encryption_enabled", "1".into()),
            ("encryption_cipher", "aes-256-gcm".into()),
            ("encryption_current_key_id", s.current().to_string()),
            ("encryption_key_ids", ids.join(",")),
            ("encryption_refuse_clear", (self.refuses_clear() as u8).to_string()),
            ("encryption_decrypt_failures", failures),
            ("encryption_values_sealed", s.stats.sealed.load(Relaxed).to_string()),
            ("encryption_values_opened", s.stats.opened.load(Relaxed).to_string()),
            ("encryption_data_keys_drawn", s.stats.data_keys.load(Relaxed).to_string()),
        ]
    }
}

/// The key ring of a proxy's configuration: keys from `keys_file` and from the environment variable
/// [`KEYS_ENV`]; `None` when neither gives any (encryption off).
pub fn load_ring(keys_file: Option<&std::path::Path>, current: Option<KeyId>) -> Result<Option<KeyRing>, KeyRingError> {
    let file = keys_file.map(|p| FileSource(p.to_path_buf()));
    let env = EnvSource(KEYS_ENV.to_string());
    let mut sources: Vec<&dyn KeySource> = Vec::new();
    if let Some(f) = &file {
        sources.push(f);
    }
    if std::env::var_os(KEYS_ENV).is_some_and(|v| !v.is_empty()) {
        sources.push(&env);
    }
    if sources.is_empty() {
        return match current {
            Some(id) => Err(KeyRingError::MissingCurrent { id }),
            None => Ok(None),
        };
    }
    let ring = KeyRing::load(&sources, current)?;
    let names: Vec<String> = sources.iter().map(|s| s.describe()).collect();
    tracing::info!(sources = %names.join(", "), current = ring.current(), "encryption at rest is on");
    Ok(Some(ring))
}
