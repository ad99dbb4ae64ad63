//! The key ring: 256-bit master keys by id. New writes use the current key; the others only open what
//! they sealed before a rotation, until `vesta admin reencrypt` has moved every record off them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;

/// A key's id, as stored in each record's header. 0 means "not encrypted" and is never a key.
pub type KeyId = u32;

/// 32 bytes of key material. Its `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(pub [u8; 32]);

impl MasterKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        MasterKey(rand::random())
    }

    /// The `ID:BASE64KEY` entry [`parse`] reads back.
    pub fn entry(&self, id: KeyId) -> String {
        format!("{id}:{}", base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    #[error("encryption key entry {entry:?}: expected ID:BASE64KEY (a positive integer id, 32 bytes in base64)")]
    Syntax { entry: String },
    #[error("encryption key {id}: key id 0 is reserved for unencrypted records")]
    ZeroId { id: KeyId },
    #[error("encryption key {id}: {len} bytes after base64 decoding, AES-256 needs 32")]
    Length { id: KeyId, len: usize },
    #[error("encryption key {id} is given twice")]
    Duplicate { id: KeyId },
    #[error("the current encryption key {id} is not in the key ring")]
    MissingCurrent { id: KeyId },
    #[error("the encryption key ring is empty")]
    Empty,
    #[error("cannot read encryption keys from {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Where master keys come from. A file and an environment variable are built in; a KMS is one more
/// implementation (fetch or unwrap the keys at start, return them here): nothing else in the proxy
/// changes.
pub trait KeySource: Send + Sync {
    /// Every key the proxy may need: the current one and any still used by stored records.
    fn load(&self) -> Result<Vec<(KeyId, MasterKey)>, KeyRingError>;
    /// What to name in logs (never the keys).
    fn describe(&self) -> String;
}

/// Keys in a file, one `ID:BASE64KEY` per line (`#` comments and blank lines allowed).
pub struct FileSource(pub PathBuf);

impl KeySource for FileSource {
    fn load(&self) -> Result<Vec<(KeyId, MasterKey)>, KeyRingError> {
        let text = std::fs::read_to_string(&self.0)
            .map_err(|e| KeyRingError::Unreadable { path: self.0.display().to_string(), reason: e.to_string() })?;
        parse(&text)
    }
    fn describe(&self) -> String {
        format!("file {}", self.0.display())
    }
}

/// Keys in an environment variable, `ID:BASE64KEY` entries separated by commas, spaces or newlines.
pub struct EnvSource(pub String);

impl KeySource for EnvSource {
    fn load(&self) -> Result<Vec<(KeyId, MasterKey)>, KeyRingError> {
        parse(&std::env::var(&self.0).unwrap_or_default())
    }
    fn describe(&self) -> String {
        format!("environment variable {}", self.0)
    }
}

/// Parses `ID:BASE64KEY` entries separated by newlines, commas or spaces; `#` starts a comment.
pub fn parse(text: &str) -> Result<Vec<(KeyId, MasterKey)>, KeyRingError> {
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for entry in line.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()) {
            let syntax = || KeyRingError::Syntax { entry: entry.chars().take(12).collect::<String>() + "…" };
            let (id, b64) = entry.split_once(':').ok_or_else(syntax)?;
            let id: KeyId = id.parse().map_err(|_| syntax())?;
            if id == 0 {
                return Err(KeyRingError::ZeroId { id });
            }
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| syntax())?;
            let key: [u8; 32] =
                bytes.as_slice().try_into().map_err(|_| KeyRingError::Length { id, len: bytes.len() })?;
            keys.push((id, MasterKey(key)));
        }
    }
    Ok(keys)
}

/// The keys a proxy holds and which one seals new writes.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, MasterKey>,
    current: KeyId,
}

impl KeyRing {
    /// A ring of `keys`; the current key is `current`, or the highest id (adding a key with a higher id
    /// is a rotation).
    pub fn new(keys: Vec<(KeyId, MasterKey)>, current: Option<KeyId>) -> Result<Self, KeyRingError> {
        let mut map = BTreeMap::new();
        for (id, key) in keys {
            if id == 0 {
                return Err(KeyRingError::ZeroId { id });
            }
            if map.insert(id, key).is_some() {
                return Err(KeyRingError::Duplicate { id });
            }
        }
        let highest = *map.keys().next_back().ok_or(KeyRingError::Empty)?;
        let current = current.unwrap_or(highest);
        if !map.contains_key(&current) {
            return Err(KeyRingError::MissingCurrent { id: current });
        }
        Ok(KeyRing { keys: map, current })
    }

    /// Loads every source (file, env var, a KMS) into one ring.
    pub fn load(sources: &[&dyn KeySource], current: Option<KeyId>) -> Result<Self, KeyRingError> {
        let mut keys = Vec::new();
        for s in sources {
            keys.extend(s.load()?);
        }
        Self::new(keys, current)
    }

    pub fn current(&self) -> KeyId {
        self.current
    }

    pub fn get(&self, id: KeyId) -> Option<&MasterKey> {
        self.keys.get(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(byte: u8, len: usize) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![byte; len])
    }

    #[test]
    fn entries_parse_from_lines_commas_and_comments() {
        let text = format!("# the ring\n1:{}\n  2:{} , 3:{} # newest\n\n", b64(1, 32), b64(2, 32), b64(3, 32));
        let keys = parse(&text).unwrap();
        assert_eq!(keys.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(keys[1].1, MasterKey([2; 32]));
        let ring = KeyRing::new(keys.clone(), None).unwrap();
        assert_eq!(ring.current(), 3, "the highest id is current");
        assert_eq!(KeyRing::new(keys, Some(2)).unwrap().current(), 2);
    }

    #[test]
    fn bad_entries_are_refused_with_what_is_wrong() {
        assert!(matches!(parse("1"), Err(KeyRingError::Syntax { .. })));
        assert!(matches!(parse("x:AAAA"), Err(KeyRingError::Syntax { .. })));
        assert!(matches!(parse("1:not base64!"), Err(KeyRingError::Syntax { .. })));
        assert_eq!(parse(&format!("1:{}", b64(1, 16))).unwrap_err(), KeyRingError::Length { id: 1, len: 16 });
        assert_eq!(parse(&format!("0:{}", b64(1, 32))).unwrap_err(), KeyRingError::ZeroId { id: 0 });
        let dup = parse(&format!("4:{0},4:{0}", b64(1, 32))).unwrap();
        assert_eq!(KeyRing::new(dup, None).unwrap_err(), KeyRingError::Duplicate { id: 4 });
        assert_eq!(KeyRing::new(Vec::new(), None).unwrap_err(), KeyRingError::Empty);
        let one = parse(&format!("1:{}", b64(1, 32))).unwrap();
        assert_eq!(KeyRing::new(one, Some(2)).unwrap_err(), KeyRingError::MissingCurrent { id: 2 });
    }

    #[test]
    fn a_key_never_shows_in_debug_output() {
        assert_eq!(format!("{:?}", MasterKey([7; 32])), "MasterKey(..)");
    }
}
