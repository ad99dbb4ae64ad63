//! What a recorder writes down: one [`Entry`] per command a client sent, and its JSON form.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One command a client sent, with what it saw.
///
/// Times are **microseconds** of one monotonic clock of the recording process: `invoked_at_us` is read just
/// before the command is written to the socket, `completed_at_us` just after its reply was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who sent it. Only used for reporting: the checker does not assume a client's commands are sequential
    /// (a pipelining client is just several overlapping windows).
    pub client: u32,
    #[serde(with = "bytes_serde")]
    pub key: Vec<u8>,
    pub op: Op,
    pub invoked_at_us: u64,
    /// `None`: the outcome is unknown (a timeout, a dropped connection, an error reply other than INCR's
    /// "not an integer"): the command may have taken effect once, at any time after its invocation, or never.
    #[serde(default)]
    pub completed_at_us: Option<u64>,
    /// What the client saw; `None` exactly when `completed_at_us` is `None`.
    #[serde(default)]
    pub result: Option<OpResult>,
}

impl Entry {
    /// A command that completed with `result`.
    pub fn ok(
        client: u32,
        key: impl Into<Vec<u8>>,
        op: Op,
        invoked_at_us: u64,
        completed_at_us: u64,
        result: OpResult,
    ) -> Self {
        Entry {
            client,
            key: key.into(),
            op,
            invoked_at_us,
            completed_at_us: Some(completed_at_us),
            result: Some(result),
        }
    }

    /// A command whose outcome is unknown (timeout, connection error, error reply).
    pub fn unknown(client: u32, key: impl Into<Vec<u8>>, op: Op, invoked_at_us: u64) -> Self {
        Entry { client, key: key.into(), op, invoked_at_us, completed_at_us: None, result: None }
    }
}

/// A single-key Redis string command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// GET → `Nil` | `Value`.
    Get,
    /// SET [NX|XX|IFEQ v] [PX ttl] → `Ok` when written, `Nil` when the condition failed. Without a TTL it
    /// clears the key's TTL, as Redis does.
    Set {
        #[serde(with = "bytes_serde")]
        value: Vec<u8>,
        #[serde(default, skip_serializing_if = "SetCond::is_none")]
        cond: SetCond,
        /// Relative TTL (EX/PX converted to ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// INCR → `Int(new value)` (an absent key counts as 0; the TTL is kept) | `Error` (the value is not an
    /// integer, or the increment would overflow: nothing written).
    Incr,
    /// DEL → `Int(1)` when the key existed, `Int(0)` otherwise.
    Del,
    /// EXPIRE / PEXPIRE with a relative TTL in ms → `Int(1)` when the key existed, `Int(0)` otherwise. `ms == 0`
    /// stands for any TTL ≤ 0, which deletes the key (still answering 1).
    Expire { ms: u64 },
}

/// SET's condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetCond {
    #[default]
    None,
    /// NX: only if absent.
    Nx,
    /// XX: only if present.
    Xx,
    /// IFEQ (Redis 8.4): only if present and equal to these bytes.
    IfEq(#[serde(with = "bytes_serde")] Vec<u8>),
}

impl SetCond {
    fn is_none(&self) -> bool {
        matches!(self, SetCond::None)
    }
}

/// What a client saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpResult {
    Nil,
    Value(#[serde(with = "bytes_serde")] Vec<u8>),
    Ok,
    Int(i64),
    /// INCR's definite refusal ("value is not an integer or out of range", "would overflow"). Any other
    /// error reply is not a definite outcome: record it as unknown.
    Error,
}

/// Reading or writing a history file failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a history: {source}")]
    Json { path: String, source: serde_json::Error },
}

/// The JSON form of a history: an array of entries, one per line (so a saved history diffs and greps well).
pub fn to_json(history: &[Entry]) -> String {
    let mut out = String::from("[\n");
    for (i, e) in history.iter().enumerate() {
        // An Entry holds only strings, integers and enums: serialising it cannot fail.
        let line = serde_json::to_string(e).unwrap_or_else(|err| panic!("serialising an entry: {err}"));
        out.push_str(&line);
        out.push_str(if i + 1 < history.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    out
}

/// Parses the JSON form of a history (any JSON layout of an array of entries).
pub fn from_json(text: &str) -> Result<Vec<Entry>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Saves a history to a file (see [`to_json`]).
pub fn save_json(path: impl AsRef<Path>, history: &[Entry]) -> Result<(), HistoryError> {
    let path = path.as_ref();
    std::fs::write(path, to_json(history))
        .map_err(|source| HistoryError::Io { path: path.display().to_string(), source })
}

/// Loads a history saved by [`save_json`].
pub fn load_json(path: impl AsRef<Path>) -> Result<Vec<Entry>, HistoryError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|source| HistoryError::Io { path: path.display().to_string(), source })?;
    from_json(&text).map_err(|source| HistoryError::Json { path: path.display().to_string(), source })
}

/// Keys and values are bytes, but nearly always text: they are written as a JSON string when they are UTF-8,
/// and as an array of byte values otherwise, so a saved history stays readable and still round-trips.
pub(crate) mod bytes_serde {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(bytes),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(BytesVisitor)
    }
}

/// Bytes for humans: `"text"` with escapes for anything unprintable.
pub(crate) struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0 {
            match b {
                b'"' => f.write_str("\\\"")?,
                b'\\' => f.write_str("\\\\")?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => f.write_str("GET"),
            Op::Set { value, cond, ttl_ms } => {
                write!(f, "SET {}", Shown(value))?;
                match cond {
                    SetCond::None => {}
                    SetCond::Nx => f.write_str(" NX")?,
                    SetCond::Xx => f.write_str(" XX")?,
                    SetCond::IfEq(v) => write!(f, " IFEQ {}", Shown(v))?,
                }
                if let Some(ms) = ttl_ms {
                    write!(f, " PX {ms}")?;
                }
                Ok(())
            }
            Op::Incr => f.write_str("INCR"),
            Op::Del => f.write_str("DEL"),
            Op::Expire { ms } => write!(f, "PEXPIRE {ms}"),
        }
    }
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::Nil => f.write_str("nil"),
            OpResult::Value(v) => write!(f, "{}", Shown(v)),
            OpResult::Ok => f.write_str("OK"),
            OpResult::Int(n) => write!(f, "{n}"),
            OpResult::Error => f.write_str("ERR"),
        }
    }
}
