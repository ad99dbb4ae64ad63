//! EVAL EVALSHA (and SCRIPT LOAD / EXISTS / FLUSH): Vesta runs no Lua. It recognises, by SHA1, the
//! scripts that client libraries' lock helpers send — redis-py's `Lock` release, extend and reacquire —
//! and runs each natively as one compare-and-set on the lock key. Any other script is refused.

use bytes::Bytes;
use vesta_proto::PrepareKind;

use super::snapshot::Snapshot;
use super::{shown, Access};
use crate::coordinator::NewValue;
use crate::resp::Reply;

/// redis-py (5.x–8.x) `Lock.LUA_RELEASE_SCRIPT`: delete the key if it still holds the token.
const REDIS_PY_RELEASE: &str = "c3f8721cbb97f72bc19e972846bd7aaf91901658";
/// `Lock.LUA_EXTEND_SCRIPT`: add to (or replace) the TTL if the key holds the token and has a TTL.
const REDIS_PY_EXTEND: &str = "a4e8783852e6b949f9ef3a97212805108459a890";
/// `Lock.LUA_REACQUIRE_SCRIPT`: reset the TTL if the key holds the token.
const REDIS_PY_REACQUIRE: &str = "1cac51482acf5858da00f6d685d68f886cd6b6b2";

pub const KNOWN: &[&str] = &[REDIS_PY_RELEASE, REDIS_PY_EXTEND, REDIS_PY_REACQUIRE];

pub fn sha1_hex(script: &[u8]) -> String {
    sha1_smol::Sha1::from(script).digest().to_string()
}

pub fn unsupported_script() -> Reply {
    Reply::error(
        "ERR Vesta does not run Lua scripts; only the lock scripts of known client libraries are recognised \
         (see docs/compatibility.md)",
    )
}

#[derive(Debug)]
pub enum Cmd {
    Release {
        key: Bytes,
        token: Bytes,
    },
    /// `replace`: the new TTL is `ms`; otherwise `ms` is added to the current one.
    Extend {
        key: Bytes,
        token: Bytes,
        ms: Bytes,
        replace: bool,
    },
    Reacquire {
        key: Bytes,
        token: Bytes,
        ms: Bytes,
    },
}

impl Cmd {
    /// `EVAL script numkeys key… arg…` / `EVALSHA sha1 numkeys key… arg…`.
    pub fn parse(name: &str, a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
        let sha = match name {
            "eval" => sha1_hex(&a[0]),
            "evalsha" => String::from_utf8_lossy(&a[0]).to_ascii_lowercase(),
            _ => return None,
        };
        let Some(numkeys) = super::parse_i64(&a[1]) else {
            return Some(Err(super::not_an_integer()));
        };
        if numkeys < 0 {
            return Some(Err(Reply::error("ERR Number of keys can't be negative")));
        }
        if numkeys as usize > a.len() - 2 {
            return Some(Err(Reply::error("ERR Number of keys can't be greater than number of args")));
        }
        let (keys, args) = a[2..].split_at(numkeys as usize);
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let key = keys.first().cloned().unwrap_or_default();
        Some(match sha.as_str() {
            // Unknown to Vesta: NOSCRIPT, so that clients fall back to SCRIPT LOAD (which then says why).
            s if !KNOWN.contains(&s) && name == "evalsha" => {
                Err(Reply::error("NOSCRIPT No matching script. Please use EVAL."))
            }
            _ if keys.len() != 1 => Err(unsupported_script()),
            REDIS_PY_RELEASE => Ok(Cmd::Release { key, token: arg(0) }),
            REDIS_PY_EXTEND => Ok(Cmd::Extend { key, token: arg(0), ms: arg(1), replace: arg(2).as_ref() != b"0" }),
            REDIS_PY_REACQUIRE => Ok(Cmd::Reacquire { key, token: arg(0), ms: arg(1) }),
            _ => Err(unsupported_script()),
        })
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Cmd::Release { key, .. } | Cmd::Extend { key, .. } | Cmd::Reacquire { key, .. } => key,
        }
    }

    /// The Redis commands the script runs (`redis.call`), which its user must be allowed to run.
    pub fn commands(&self) -> &'static [&'static str] {
        match self {
            Cmd::Release { .. } => &["get", "del"],
            Cmd::Extend { .. } => &["get", "pttl", "pexpire"],
            Cmd::Reacquire { .. } => &["get", "pexpire"],
        }
    }

    pub fn access(&self) -> Access {
        Access::Write(PrepareKind::ReadModifyWrite, true)
    }

    pub fn apply(&self, s: &mut Snapshot) -> Reply {
        let now = s.now();
        let (key, token) = match self {
            Cmd::Release { key, token } | Cmd::Extend { key, token, .. } | Cmd::Reacquire { key, token, .. } => {
                (key, token)
            }
        };
        let Some(r) = s.get(key).filter(|r| r.value == *token).cloned() else { return Reply::Int(0) };
        let ms = |b: &Bytes| -> Result<i64, Reply> {
            // Lua would coerce the text to a number; a non-number is a script error.
            std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .map(|f| f as i64)
                .ok_or_else(|| Reply::error(format!("ERR Error running script: '{}' is not a number", shown(b))))
        };
        let new_ttl = match self {
            Cmd::Release { .. } => {
                s.delete(key);
                return Reply::Int(1);
            }
            Cmd::Reacquire { ms: m, .. } => ms(m),
            Cmd::Extend { ms: m, replace, .. } => {
                if r.meta.expires_at == 0 {
                    return Reply::Int(0);
                }
                let remaining = r.meta.expires_at.saturating_sub(now) as i64;
                ms(m).map(|add| if *replace { add } else { add + remaining })
            }
        };
        match new_ttl {
            Err(e) => e,
            Ok(ttl) if ttl <= 0 => {
                s.delete(key);
                Reply::Int(1)
            }
            Ok(ttl) => {
                s.put(key, NewValue::same_value(r.value, now + ttl as u64));
                Reply::Int(1)
            }
        }
    }
}

/// `SCRIPT LOAD | EXISTS | FLUSH`.
pub fn script(a: &[Bytes]) -> Reply {
    let sub = a[0].to_ascii_lowercase();
    match (sub.as_slice(), &a[1..]) {
        (b"load", [body]) => {
            let sha = sha1_hex(body);
            if KNOWN.contains(&sha.as_str()) {
                Reply::Bulk(Bytes::from(sha))
            } else {
                unsupported_script()
            }
        }
        (b"exists", shas) if !shas.is_empty() => Reply::Array(
            shas.iter()
                .map(|s| Reply::Int(KNOWN.contains(&String::from_utf8_lossy(s).to_ascii_lowercase().as_str()) as i64))
                .collect(),
        ),
        (b"flush", []) => Reply::OK,
        (b"flush", [mode]) if mode.eq_ignore_ascii_case(b"async") || mode.eq_ignore_ascii_case(b"sync") => Reply::OK,
        (b"load" | b"exists" | b"flush", _) => super::wrong_arity(&format!("script|{}", String::from_utf8_lossy(&sub))),
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try SCRIPT HELP.", shown(&a[0]))),
    }
}
