//! DEL UNLINK EXISTS TOUCH TYPE EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST TTL PTTL EXPIRETIME PEXPIRETIME
//! RENAME RENAMENX COPY MOVE OBJECT.

use bytes::Bytes;
use vesta_proto::PrepareKind;

use super::connection::DATABASES;
use super::expiry::{invalid_expire, Unit, When};
use super::snapshot::Snapshot;
use super::{int_arg, Access};
use crate::coordinator::{KeyName, NewValue};
use crate::resp::Reply;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// Only if the key has no expiry.
    Nx,
    /// Only if the key has an expiry.
    Xx,
    /// Only if the new expiry is later (no expiry counts as infinite).
    Gt,
    /// Only if the new expiry is sooner (no expiry counts as infinite); with `true`, XX as well.
    Lt(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Ttl(Unit),
    ExpireTime(Unit),
}

#[derive(Debug)]
pub enum Cmd {
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    Type(Bytes),
    Expire {
        key: Bytes,
        when: When,
        condition: Condition,
        name: &'static str,
    },
    Persist(Bytes),
    Show(Bytes, Show),
    Rename {
        from: Bytes,
        to: Bytes,
        nx: bool,
    },
    /// COPY, and MOVE (`remove`: the source goes; `replace` is then false).
    Copy {
        from: Bytes,
        to: Bytes,
        db: Option<u32>,
        replace: bool,
        remove: bool,
    },
    Object(Object, Bytes),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Encoding,
    Freq,
    IdleTime,
    RefCount,
}

impl Cmd {
    pub fn parse(name: &str, a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
        let expire = |name: &'static str, f: fn(i64) -> When| -> Result<Cmd, Reply> {
            let when = f(int_arg(&a[1])?);
            // Redis refuses an overflowing time before it looks the key up (any clock will do for that).
            let now = vesta_proto::clock::Clock::wall_ms(&vesta_proto::clock::SystemClock::default());
            if when.resolve(now).is_none() {
                return Err(invalid_expire(name));
            }
            Ok(Cmd::Expire { key: a[0].clone(), when, condition: parse_condition(&a[2..])?, name })
        };
        Some(match name {
            "del" | "unlink" => Ok(Cmd::Del(a.to_vec())),
            // No access times are kept, so TOUCH is EXISTS.
            "exists" | "touch" => Ok(Cmd::Exists(a.to_vec())),
            "type" => Ok(Cmd::Type(a[0].clone())),
            "expire" => expire("expire", |n| When::In(Unit::Seconds, n)),
            "pexpire" => expire("pexpire", |n| When::In(Unit::Millis, n)),
            "expireat" => expire("expireat", |n| When::At(Unit::Seconds, n)),
            "pexpireat" => expire("pexpireat", |n| When::At(Unit::Millis, n)),
            "persist" => Ok(Cmd::Persist(a[0].clone())),
            "ttl" => Ok(Cmd::Show(a[0].clone(), Show::Ttl(Unit::Seconds))),
            "pttl" => Ok(Cmd::Show(a[0].clone(), Show::Ttl(Unit::Millis))),
            "expiretime" => Ok(Cmd::Show(a[0].clone(), Show::ExpireTime(Unit::Seconds))),
            "pexpiretime" => Ok(Cmd::Show(a[0].clone(), Show::ExpireTime(Unit::Millis))),
            "rename" | "renamenx" => Ok(Cmd::Rename { from: a[0].clone(), to: a[1].clone(), nx: name == "renamenx" }),
            "copy" => parse_copy(a),
            "move" => parse_db(&a[1]).map(|db| Cmd::Copy {
                from: a[0].clone(),
                to: a[0].clone(),
                db: Some(db),
                replace: false,
                remove: true,
            }),
            "object" => return parse_object(a),
            _ => return None,
        })
    }

    /// The keys this command reads or writes; `ns` is the connection's database.
    pub fn keys(&self, ns: &Bytes) -> Vec<KeyName> {
        let here = |k: &Bytes| KeyName { namespace: ns.clone(), key: k.clone() };
        match self {
            Cmd::Del(keys) | Cmd::Exists(keys) => keys.iter().map(here).collect(),
            Cmd::Type(k) | Cmd::Expire { key: k, .. } | Cmd::Persist(k) | Cmd::Show(k, _) | Cmd::Object(_, k) => {
                vec![here(k)]
            }
            Cmd::Rename { from, to, .. } => vec![here(from), here(to)],
            Cmd::Copy { from, to, db, .. } => {
                let target = db.map_or_else(|| ns.clone(), |d| Bytes::from(d.to_string()));
                vec![here(from), KeyName { namespace: target, key: to.clone() }]
            }
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Cmd::Exists(_) | Cmd::Type(_) | Cmd::Show(..) | Cmd::Object(..) => Access::Read,
            Cmd::Del(_) => Access::Write(PrepareKind::Delete, false),
            Cmd::Expire { .. } | Cmd::Persist(_) | Cmd::Rename { .. } | Cmd::Copy { .. } => {
                Access::Write(PrepareKind::ReadModifyWrite, true)
            }
        }
    }

    pub fn apply(&self, s: &mut Snapshot) -> Reply {
        let now = s.now();
        match self {
            Cmd::Del(keys) => Reply::Int(keys.iter().filter(|k| s.delete(k)).count() as i64),
            Cmd::Exists(keys) => Reply::Int(keys.iter().filter(|k| s.get(k).is_some()).count() as i64),
            Cmd::Type(key) => Reply::Status(if s.get(key).is_some() { "string" } else { "none" }),
            Cmd::Expire { key, when, condition, name } => {
                let Some(r) = s.get(key).cloned() else { return Reply::Int(0) };
                let Some(at) = when.resolve(now) else { return invalid_expire(name) };
                let current = r.meta.expires_at;
                let allowed = match condition {
                    Condition::Always => true,
                    Condition::Nx => current == 0,
                    Condition::Xx => current != 0,
                    Condition::Gt => current != 0 && at > current as i64,
                    Condition::Lt(xx) => (current == 0 && !xx) || (current != 0 && at < current as i64),
                };
                if !allowed {
                    return Reply::Int(0);
                }
                if at <= now as i64 {
                    // An expiry in the past deletes the key, as in Redis.
                    s.delete(key);
                } else {
                    s.put(key, NewValue::same_value(r.value, at as u64));
                }
                Reply::Int(1)
            }
            Cmd::Persist(key) => match s.get(key).cloned() {
                Some(r) if r.meta.expires_at != 0 => {
                    s.put(key, NewValue::same_value(r.value, 0));
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            },
            Cmd::Show(key, show) => {
                let Some(r) = s.get(key) else { return Reply::Int(-2) };
                let at = r.meta.expires_at;
                if at == 0 {
                    return Reply::Int(-1);
                }
                Reply::Int(match show {
                    // Redis rounds the remaining time to the nearest second.
                    Show::Ttl(Unit::Seconds) => (at.saturating_sub(now) as i64 + 500) / 1000,
                    Show::Ttl(Unit::Millis) => at.saturating_sub(now) as i64,
                    Show::ExpireTime(Unit::Seconds) => (at as i64 + 500) / 1000,
                    Show::ExpireTime(Unit::Millis) => at as i64,
                })
            }
            Cmd::Rename { from, to, nx } => {
                let Some(r) = s.get(from).cloned() else { return Reply::error("ERR no such key") };
                if from == to {
                    return if *nx { Reply::Int(0) } else { Reply::OK };
                }
                if *nx && s.get(to).is_some() {
                    return Reply::Int(0);
                }
                s.put(to, NewValue::plain(r.value, r.meta.expires_at));
                s.delete(from);
                if *nx {
                    Reply::Int(1)
                } else {
                    Reply::OK
                }
            }
            Cmd::Copy { from, to, db, replace, remove } => {
                let ns = s.namespace().clone();
                let target = db.map_or_else(|| ns.clone(), |d| Bytes::from(d.to_string()));
                if target == ns && from == to {
                    return Reply::error("ERR source and destination objects are the same");
                }
                let Some(r) = s.get(from).cloned() else { return Reply::Int(0) };
                if !replace && s.get_in(&target, to).is_some() {
                    return Reply::Int(0);
                }
                s.put_in(&target, to, NewValue::plain(r.value, r.meta.expires_at));
                if *remove {
                    s.delete(from);
                }
                Reply::Int(1)
            }
            Cmd::Object(what, key) => {
                let Some(r) = s.get(key) else { return Reply::Nil };
                match what {
                    Object::Encoding => Reply::bulk(encoding(&r.value)),
                    Object::Freq => Reply::error(
                        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note \
                         that when switching between policies at runtime LRU and LFU data will take some time to \
                         adjust.",
                    ),
                    // Reads are not tracked: the idle time is the time since the last write.
                    Object::IdleTime => Reply::Int((now.saturating_sub(r.meta.hlc >> 16) / 1000) as i64),
                    Object::RefCount => Reply::Int(1),
                }
            }
        }
    }
}

/// The encoding Redis would pick for this string: `int`, `embstr` (≤ 44 bytes) or `raw`.
fn encoding(value: &[u8]) -> &'static str {
    if value.len() <= 20 && super::parse_i64(value).is_some() {
        "int"
    } else if value.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

fn parse_db(b: &Bytes) -> Result<u32, Reply> {
    match int_arg(b)? {
        db if db < 0 || db >= DATABASES as i64 => Err(Reply::error("ERR DB index is out of range")),
        db => Ok(db as u32),
    }
}

/// `COPY source destination [DB destination-db] [REPLACE]`.
fn parse_copy(a: &[Bytes]) -> Result<Cmd, Reply> {
    let (mut db, mut replace) = (None, false);
    let mut i = 2;
    while i < a.len() {
        match (a[i].to_ascii_uppercase().as_slice(), a.get(i + 1)) {
            (b"REPLACE", _) => replace = true,
            (b"DB", Some(d)) => {
                db = Some(parse_db(d)?);
                i += 1;
            }
            _ => return Err(super::syntax_error()),
        }
        i += 1;
    }
    Ok(Cmd::Copy { from: a[0].clone(), to: a[1].clone(), db, replace, remove: false })
}

/// `OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key`; `OBJECT HELP` is answered by the server family.
fn parse_object(a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
    let sub = a[0].to_ascii_lowercase();
    let what = match sub.as_slice() {
        b"encoding" => Object::Encoding,
        b"freq" => Object::Freq,
        b"idletime" => Object::IdleTime,
        b"refcount" => Object::RefCount,
        _ => {
            return Some(Err(Reply::error(format!(
                "ERR unknown subcommand '{}'. Try OBJECT HELP.",
                super::shown(&a[0])
            ))))
        }
    };
    Some(match a {
        [_, key] => Ok(Cmd::Object(what, key.clone())),
        _ => Err(super::wrong_arity(&format!("object|{}", String::from_utf8_lossy(&sub)))),
    })
}

fn parse_condition(opts: &[Bytes]) -> Result<Condition, Reply> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in opts {
        match o.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => return Err(Reply::error(format!("ERR Unsupported option {}", super::shown(o)))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(Reply::error("ERR GT and LT options at the same time are not compatible"));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => Condition::Nx,
        (_, _, true, _) => Condition::Gt,
        (_, xx, _, true) => Condition::Lt(xx),
        (_, true, ..) => Condition::Xx,
        _ => Condition::Always,
    })
}
