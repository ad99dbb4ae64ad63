//! GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX MGET MSET APPEND STRLEN GETRANGE SUBSTR SETRANGE.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use vesta_proto::{PrepareKind, Record};

use super::expiry::{invalid_expire, Unit, When};
use super::{int_arg, syntax_error};
use crate::coordinator::{CoordError, Coordinator, Decision, NewValue};
use crate::resp::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    Always,
    IfAbsent,
    IfPresent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Clear any expiry (plain SET).
    Clear,
    Keep,
    Set(When),
}

#[derive(Debug)]
pub enum Cmd {
    Get(Bytes),
    Set { key: Bytes, value: Bytes, only: Only, ttl: Ttl, get: bool, reply: SetReply, name: &'static str },
    GetDel(Bytes),
    GetEx { key: Bytes, ttl: Option<Ttl> },
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    Append(Bytes, Bytes),
    StrLen(Bytes),
    GetRange { key: Bytes, start: i64, end: i64 },
    SetRange { key: Bytes, offset: usize, value: Bytes },
}

/// `proto-max-bulk-len`: the largest string SETRANGE and APPEND may build.
const MAX_STRING: usize = 512 * 1024 * 1024;

/// How a SET-family command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// `+OK`, or nil when NX/XX stopped it (SET, SETEX, PSETEX).
    Ok,
    /// `:1` / `:0` (SETNX).
    Bool,
}

impl Cmd {
    pub fn parse(name: &str, a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
        let set = |key: &Bytes, value: &Bytes, only, ttl, get, reply, name| Cmd::Set {
            key: key.clone(),
            value: value.clone(),
            only,
            ttl,
            get,
            reply,
            name,
        };
        Some(match name {
            "get" => Ok(Cmd::Get(a[0].clone())),
            "set" => parse_set(a),
            "setnx" => Ok(set(&a[0], &a[1], Only::IfAbsent, Ttl::Clear, false, SetReply::Bool, "setnx")),
            "setex" | "psetex" => {
                let (unit, cmd) = if name == "setex" { (Unit::Seconds, "setex") } else { (Unit::Millis, "psetex") };
                match int_arg(&a[1]) {
                    Err(e) => Err(e),
                    Ok(n) if n <= 0 => Err(invalid_expire(cmd)),
                    Ok(n) => Ok(set(&a[0], &a[2], Only::Always, Ttl::Set(When::In(unit, n)), false, SetReply::Ok, cmd)),
                }
            }
            "getset" => Ok(set(&a[0], &a[1], Only::Always, Ttl::Clear, true, SetReply::Ok, "getset")),
            "getdel" => Ok(Cmd::GetDel(a[0].clone())),
            "getex" => parse_getex(a),
            "mget" => Ok(Cmd::MGet(a.to_vec())),
            "mset" => {
                if !a.len().is_multiple_of(2) {
                    Err(super::wrong_arity("mset"))
                } else {
                    Ok(Cmd::MSet(a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()))
                }
            }
            "append" => Ok(Cmd::Append(a[0].clone(), a[1].clone())),
            "strlen" => Ok(Cmd::StrLen(a[0].clone())),
            "getrange" | "substr" => {
                int_arg(&a[1]).and_then(|start| Ok(Cmd::GetRange { key: a[0].clone(), start, end: int_arg(&a[2])? }))
            }
            "setrange" => match int_arg(&a[1]) {
                Err(e) => Err(e),
                Ok(o) if o < 0 => Err(Reply::error("ERR offset is out of range")),
                Ok(o) if o as u64 + a[2].len() as u64 > MAX_STRING as u64 => {
                    Err(Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)"))
                }
                Ok(o) => Ok(Cmd::SetRange { key: a[0].clone(), offset: o as usize, value: a[2].clone() }),
            },
            _ => return None,
        })
    }

    pub async fn execute(self, c: &Arc<Coordinator>, ns: &Bytes) -> Result<Reply, CoordError> {
        match self {
            Cmd::Get(key) => Ok(c.read(ns, &key).await?.map_or(Reply::Nil, |r| Reply::Bulk(r.value))),
            Cmd::Set { key, value, only, ttl, get, reply, name } => {
                set(c, ns, &key, value, only, ttl, get, reply, name).await
            }
            Cmd::GetDel(key) => {
                c.write(ns, &key, PrepareKind::Delete, true, |live, _| match live {
                    Some(r) => Decision::Write(tombstone(r), Reply::Bulk(r.value.clone())),
                    None => Decision::Answer(Reply::Nil),
                })
                .await
            }
            Cmd::GetEx { key, ttl: None } => Ok(c.read(ns, &key).await?.map_or(Reply::Nil, |r| Reply::Bulk(r.value))),
            Cmd::GetEx { key, ttl: Some(ttl) } => {
                c.write(ns, &key, PrepareKind::ReadModifyWrite, true, |live, now| {
                    let Some(r) = live else { return Decision::Answer(Reply::Nil) };
                    let expires_at = match ttl {
                        Ttl::Clear => 0,
                        Ttl::Keep => r.meta.expires_at,
                        Ttl::Set(when) => match when.resolve(now) {
                            Some(at) if at > now as i64 => at as u64,
                            Some(_) => return Decision::Write(tombstone(r), Reply::Bulk(r.value.clone())),
                            None => return Decision::Answer(invalid_expire("getex")),
                        },
                    };
                    let value = NewValue { value: r.value.clone(), expires_at, tombstone: false };
                    Decision::Write(value, Reply::Bulk(r.value.clone()))
                })
                .await
            }
            Cmd::MGet(keys) => {
                let reads = keys.iter().map(|k| c.read(ns, k));
                let copies = futures::future::join_all(reads).await;
                let mut out = Vec::with_capacity(copies.len());
                for copy in copies {
                    out.push(copy?.map_or(Reply::Nil, |r| Reply::Bulk(r.value)));
                }
                Ok(Reply::Array(out))
            }
            Cmd::MSet(pairs) => {
                // Each key is its own two-phase commit: MSET is not atomic across keys here (see README).
                let writes = pairs.into_iter().map(|(k, v)| async move {
                    set(c, ns, &k, v, Only::Always, Ttl::Clear, false, SetReply::Ok, "mset").await
                });
                for result in futures::future::join_all(writes).await {
                    result?;
                }
                Ok(Reply::OK)
            }
            Cmd::Append(key, suffix) => {
                c.write(ns, &key, PrepareKind::ReadModifyWrite, true, |live, _| {
                    let mut value = BytesMut::from(live.map_or(&b""[..], |r| &r.value[..]));
                    value.extend_from_slice(&suffix);
                    let len = value.len() as i64;
                    Decision::Write(NewValue::keeping_ttl(live, value.freeze()), Reply::Int(len))
                })
                .await
            }
            Cmd::StrLen(key) => Ok(Reply::Int(c.read(ns, &key).await?.map_or(0, |r| r.value.len() as i64))),
            Cmd::GetRange { key, start, end } => {
                let value = c.read(ns, &key).await?.map(|r| r.value).unwrap_or_default();
                Ok(Reply::Bulk(range(&value, start, end)))
            }
            Cmd::SetRange { key, offset, value } => {
                c.write(ns, &key, PrepareKind::ReadModifyWrite, true, |live, _| {
                    let current = live.map_or(&b""[..], |r| &r.value[..]);
                    if value.is_empty() {
                        // Nothing to write: Redis answers the length and creates no key.
                        return Decision::Answer(Reply::Int(current.len() as i64));
                    }
                    let mut next = BytesMut::from(current);
                    if next.len() < offset + value.len() {
                        next.resize(offset + value.len(), 0);
                    }
                    next[offset..offset + value.len()].copy_from_slice(&value);
                    let len = next.len() as i64;
                    Decision::Write(NewValue::keeping_ttl(live, next.freeze()), Reply::Int(len))
                })
                .await
            }
        }
    }
}

/// GETRANGE's slice, with Redis's rules for negative and out-of-range indices.
fn range(value: &Bytes, start: i64, end: i64) -> Bytes {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Bytes::new();
    }
    let start = if start < 0 { (len + start).max(0) } else { start };
    let end = if end < 0 { (len + end).max(0) } else { end.min(len - 1) };
    if len == 0 || start > end {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

/// A tombstone for a live record: it lives as long as the record would have.
pub fn tombstone(r: &Record) -> NewValue {
    NewValue { value: Bytes::new(), expires_at: r.meta.expires_at, tombstone: true }
}

#[allow(clippy::too_many_arguments)]
async fn set(
    c: &Arc<Coordinator>,
    ns: &Bytes,
    key: &Bytes,
    value: Bytes,
    only: Only,
    ttl: Ttl,
    get: bool,
    reply: SetReply,
    name: &'static str,
) -> Result<Reply, CoordError> {
    let kind = match (only, get) {
        (Only::IfAbsent, _) => PrepareKind::Create,
        (Only::IfPresent, _) => PrepareKind::Update,
        (Only::Always, true) => PrepareKind::ReadModifyWrite,
        (Only::Always, false) => PrepareKind::Set,
    };
    // KEEPTTL needs only the copy's metadata, which every prepare returns.
    c.write(ns, key, kind, get, |live, now| {
        let old = || live.map_or(Reply::Nil, |r| Reply::Bulk(r.value.clone()));
        let blocked = match only {
            Only::IfAbsent => live.is_some(),
            Only::IfPresent => live.is_none(),
            Only::Always => false,
        };
        if blocked {
            return Decision::Answer(match (get, reply) {
                (true, _) => old(),
                (false, SetReply::Bool) => Reply::Int(0),
                (false, SetReply::Ok) => Reply::Nil,
            });
        }
        let expires_at = match ttl {
            Ttl::Clear => 0,
            Ttl::Keep => live.map_or(0, |r| r.meta.expires_at),
            Ttl::Set(when) => match when.resolve(now) {
                Some(at) if at > 0 => at as u64,
                _ => return Decision::Answer(invalid_expire(name)),
            },
        };
        let answer = match (get, reply) {
            (true, _) => old(),
            (false, SetReply::Bool) => Reply::Int(1),
            (false, SetReply::Ok) => Reply::OK,
        };
        Decision::Write(NewValue { value: value.clone(), expires_at, tombstone: false }, answer)
    })
    .await
}

fn parse_set(a: &[Bytes]) -> Result<Cmd, Reply> {
    let (mut only, mut ttl, mut get) = (Only::Always, Ttl::Clear, false);
    let mut i = 2;
    while i < a.len() {
        let opt = a[i].to_ascii_uppercase();
        let next = a.get(i + 1);
        match (opt.as_slice(), next) {
            (b"NX", _) if only != Only::IfPresent => only = Only::IfAbsent,
            (b"XX", _) if only != Only::IfAbsent => only = Only::IfPresent,
            (b"GET", _) => get = true,
            (b"KEEPTTL", _) if matches!(ttl, Ttl::Clear | Ttl::Keep) => ttl = Ttl::Keep,
            (b"EX" | b"PX" | b"EXAT" | b"PXAT", Some(v)) => {
                let n = int_arg(v)?;
                let Some(when) = When::from_option(&opt, n) else { return Err(syntax_error()) };
                // The same option may repeat (the last wins); two different ones conflict.
                let same_kind = match ttl {
                    Ttl::Clear => true,
                    Ttl::Set(prev) => {
                        std::mem::discriminant(&prev) == std::mem::discriminant(&when) && prev.unit() == when.unit()
                    }
                    Ttl::Keep => false,
                };
                if !same_kind {
                    return Err(syntax_error());
                }
                if n <= 0 || when.resolve(0).is_none() {
                    return Err(invalid_expire("set"));
                }
                ttl = Ttl::Set(when);
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    Ok(Cmd::Set { key: a[0].clone(), value: a[1].clone(), only, ttl, get, reply: SetReply::Ok, name: "set" })
}

fn parse_getex(a: &[Bytes]) -> Result<Cmd, Reply> {
    let mut ttl = None;
    let mut i = 1;
    while i < a.len() {
        let opt = a[i].to_ascii_uppercase();
        match (opt.as_slice(), a.get(i + 1)) {
            (b"PERSIST", _) if matches!(ttl, None | Some(Ttl::Clear)) => ttl = Some(Ttl::Clear),
            (b"EX" | b"PX" | b"EXAT" | b"PXAT", Some(v)) if ttl.is_none() => {
                let n = int_arg(v)?;
                if n <= 0 {
                    return Err(invalid_expire("getex"));
                }
                let Some(when) = When::from_option(&opt, n) else { return Err(syntax_error()) };
                ttl = Some(Ttl::Set(when));
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    Ok(Cmd::GetEx { key: a[0].clone(), ttl })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_like_redis() {
        let v = Bytes::from_static(b"This is a string");
        assert_eq!(range(&v, 0, 3), "This");
        assert_eq!(range(&v, -3, -1), "ing");
        assert_eq!(range(&v, 0, -1), v);
        assert_eq!(range(&v, 10, 100), "string");
        assert_eq!(range(&v, 5, 3), "");
        assert_eq!(range(&v, -1, -5), "");
        assert_eq!(range(&v, -100, 2), "Thi");
        assert_eq!(range(&Bytes::new(), 0, -1), "");
    }
}
