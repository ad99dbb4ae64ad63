//! GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX MGET MSET MSETNX MSETEX APPEND STRLEN GETRANGE SUBSTR
//! SETRANGE LCS DIGEST DELEX SETBIT GETBIT.

use bytes::{Bytes, BytesMut};
use vesta_proto::{PrepareKind, Record};

use super::expiry::{invalid_expire, Unit, When};
use super::snapshot::Snapshot;
use super::{int_arg, syntax_error, Access};
use crate::coordinator::NewValue;
use crate::resp::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Only {
    Always,
    IfAbsent,
    IfPresent,
    /// Redis 8.4 compare-and-set.
    If(Compare),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Clear any expiry (plain SET).
    Clear,
    Keep,
    Set(When),
}

/// Redis 8.4's compare-and-set conditions (SET … IFEQ, DELEX …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The value equals this (absent: no).
    Eq(Bytes),
    /// The value differs from this (absent: yes).
    Ne(Bytes),
    /// The value's DIGEST equals this hex text (absent: no).
    DigestEq(Bytes),
    /// The value's DIGEST differs (absent: yes).
    DigestNe(Bytes),
}

impl Compare {
    /// Parses `IFEQ v` etc. (option upper-cased).
    pub fn from_option(opt: &[u8], arg: &Bytes) -> Option<Compare> {
        Some(match opt {
            b"IFEQ" => Compare::Eq(arg.clone()),
            b"IFNE" => Compare::Ne(arg.clone()),
            b"IFDEQ" => Compare::DigestEq(arg.clone()),
            b"IFDNE" => Compare::DigestNe(arg.clone()),
            _ => return None,
        })
    }

    pub fn holds(&self, live: Option<&Record>) -> bool {
        let same_digest = |d: &Bytes, r: &Record| digest(&r.value).as_bytes().eq_ignore_ascii_case(d);
        match (self, live) {
            (Compare::Eq(v), Some(r)) => r.value == *v,
            (Compare::Ne(v), Some(r)) => r.value != *v,
            (Compare::DigestEq(d), Some(r)) => same_digest(d, r),
            (Compare::DigestNe(d), Some(r)) => !same_digest(d, r),
            (Compare::Eq(_) | Compare::DigestEq(_), None) => false,
            (Compare::Ne(_) | Compare::DigestNe(_), None) => true,
        }
    }
}

/// DIGEST: the XXH3 64-bit hash of the value, as 16 hex digits.
pub fn digest(value: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(value))
}

#[derive(Debug)]
pub enum Cmd {
    Get(Bytes),
    Set {
        key: Bytes,
        value: Bytes,
        only: Only,
        ttl: Ttl,
        get: bool,
        reply: SetReply,
        name: &'static str,
    },
    GetDel(Bytes),
    GetEx {
        key: Bytes,
        ttl: Option<Ttl>,
    },
    MGet(Vec<Bytes>),
    /// MSET, MSETNX, MSETEX: all keys or none.
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
        only: Only,
        ttl: Ttl,
        reply: SetReply,
    },
    /// Key, suffix, and the longest string it may build (`proto-max-bulk-len` when parsed).
    Append(Bytes, Bytes, usize),
    StrLen(Bytes),
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
    SetRange {
        key: Bytes,
        offset: usize,
        value: Bytes,
    },
    Lcs(Lcs),
    Digest(Bytes),
    DelEx {
        key: Bytes,
        compare: Option<Compare>,
    },
    SetBit {
        key: Bytes,
        offset: u64,
        on: bool,
    },
    GetBit {
        key: Bytes,
        offset: u64,
    },
}

#[derive(Debug)]
pub struct Lcs {
    a: Bytes,
    b: Bytes,
    len: bool,
    idx: bool,
    min_match_len: usize,
    with_match_len: bool,
    /// `proto-max-bulk-len` when parsed: Redis's bound on LCS's working memory.
    max_memory: usize,
}

/// The error of a string that would grow past `proto-max-bulk-len` (APPEND, SETRANGE).
fn too_long() -> Reply {
    Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
}

/// How a SET-family command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// `+OK`, or nil when NX/XX stopped it (SET, SETEX, PSETEX).
    Ok,
    /// `:1` / `:0` (SETNX).
    Bool,
}

impl Cmd {
    /// `max_len`: `proto-max-bulk-len`, the longest string APPEND, SETRANGE and SETBIT may build.
    pub fn parse(name: &str, a: &[Bytes], max_len: usize) -> Option<Result<Cmd, Reply>> {
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
            "mset" | "msetnx" => {
                if !a.len().is_multiple_of(2) {
                    Err(super::wrong_arity(name))
                } else {
                    let pairs = a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                    let (only, reply) =
                        if name == "mset" { (Only::Always, SetReply::Ok) } else { (Only::IfAbsent, SetReply::Bool) };
                    Ok(Cmd::MSet { pairs, only, ttl: Ttl::Clear, reply })
                }
            }
            "msetex" => parse_msetex(a),
            "append" => Ok(Cmd::Append(a[0].clone(), a[1].clone(), max_len)),
            "strlen" => Ok(Cmd::StrLen(a[0].clone())),
            "getrange" | "substr" => {
                int_arg(&a[1]).and_then(|start| Ok(Cmd::GetRange { key: a[0].clone(), start, end: int_arg(&a[2])? }))
            }
            "setrange" => match int_arg(&a[1]) {
                Err(e) => Err(e),
                Ok(o) if o < 0 => Err(Reply::error("ERR offset is out of range")),
                // An empty value writes nothing, so Redis answers before checking the size.
                Ok(o) if !a[2].is_empty() && o as u64 + a[2].len() as u64 > max_len as u64 => Err(too_long()),
                Ok(o) => Ok(Cmd::SetRange { key: a[0].clone(), offset: o as usize, value: a[2].clone() }),
            },
            "lcs" => parse_lcs(a, max_len),
            "setbit" => bit_offset(&a[1], max_len).and_then(|offset| match super::parse_i64(&a[2]) {
                Some(b @ (0 | 1)) => Ok(Cmd::SetBit { key: a[0].clone(), offset, on: b == 1 }),
                _ => Err(Reply::error("ERR bit is not an integer or out of range")),
            }),
            "getbit" => bit_offset(&a[1], max_len).map(|offset| Cmd::GetBit { key: a[0].clone(), offset }),
            "digest" => Ok(Cmd::Digest(a[0].clone())),
            "delex" => match &a[1..] {
                [] => Ok(Cmd::DelEx { key: a[0].clone(), compare: None }),
                [opt, arg] => match Compare::from_option(&opt.to_ascii_uppercase(), arg) {
                    Some(c) => Ok(Cmd::DelEx { key: a[0].clone(), compare: Some(c) }),
                    None => Err(syntax_error()),
                },
                _ => Err(syntax_error()),
            },
            _ => return None,
        })
    }

    pub fn keys(&self) -> Vec<Bytes> {
        match self {
            Cmd::Get(k)
            | Cmd::Set { key: k, .. }
            | Cmd::GetDel(k)
            | Cmd::GetEx { key: k, .. }
            | Cmd::Append(k, ..)
            | Cmd::StrLen(k)
            | Cmd::GetRange { key: k, .. }
            | Cmd::SetRange { key: k, .. }
            | Cmd::Digest(k)
            | Cmd::DelEx { key: k, .. }
            | Cmd::SetBit { key: k, .. }
            | Cmd::GetBit { key: k, .. } => vec![k.clone()],
            Cmd::MGet(keys) => keys.clone(),
            Cmd::MSet { pairs, .. } => pairs.iter().map(|(k, _)| k.clone()).collect(),
            Cmd::Lcs(l) => vec![l.a.clone(), l.b.clone()],
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Cmd::Get(_)
            | Cmd::MGet(_)
            | Cmd::StrLen(_)
            | Cmd::GetRange { .. }
            | Cmd::Lcs(_)
            | Cmd::Digest(_)
            | Cmd::GetBit { .. } => Access::Read,
            Cmd::GetEx { ttl: None, .. } => Access::Read,
            Cmd::Set { get: true, .. } | Cmd::Set { only: Only::If(_), .. } => {
                Access::Write(PrepareKind::ReadModifyWrite, true)
            }
            Cmd::Set { only: Only::IfAbsent, .. } => Access::Write(PrepareKind::Create, false),
            Cmd::Set { only: Only::IfPresent, .. } => Access::Write(PrepareKind::Update, false),
            Cmd::Set { only: Only::Always, .. } => Access::Write(PrepareKind::Set, false),
            Cmd::MSet { .. } => Access::Write(PrepareKind::Set, false),
            Cmd::GetDel(_) => Access::Write(PrepareKind::Delete, true),
            Cmd::DelEx { compare: None, .. } => Access::Write(PrepareKind::Delete, false),
            Cmd::DelEx { .. } => Access::Write(PrepareKind::Delete, true),
            Cmd::GetEx { .. } | Cmd::Append(..) | Cmd::SetRange { .. } | Cmd::SetBit { .. } => {
                Access::Write(PrepareKind::ReadModifyWrite, true)
            }
        }
    }

    pub fn apply(&self, s: &mut Snapshot) -> Reply {
        let value_of = |r: Option<&Record>| r.map_or(Reply::Nil, |r| Reply::Bulk(r.value.clone()));
        match self {
            Cmd::Get(key) => value_of(s.get(key)),
            Cmd::Set { key, value, only, ttl, get, reply, name } => set(s, key, value, only, *ttl, *get, *reply, name),
            Cmd::GetDel(key) => {
                let old = value_of(s.get(key));
                s.delete(key);
                old
            }
            Cmd::GetEx { key, ttl: None } => value_of(s.get(key)),
            Cmd::GetEx { key, ttl: Some(ttl) } => {
                let Some(r) = s.get(key).cloned() else { return Reply::Nil };
                let expires_at = match ttl {
                    Ttl::Clear => 0,
                    Ttl::Keep => r.meta.expires_at,
                    Ttl::Set(when) => match when.resolve(s.now()) {
                        Some(at) if at > s.now() as i64 => at as u64,
                        Some(_) => {
                            s.delete(key);
                            return Reply::Bulk(r.value);
                        }
                        None => return invalid_expire("getex"),
                    },
                };
                s.put(key, NewValue::same_value(r.value.clone(), expires_at));
                Reply::Bulk(r.value)
            }
            Cmd::MGet(keys) => Reply::Array(keys.iter().map(|k| value_of(s.get(k))).collect()),
            Cmd::MSet { pairs, only, ttl, reply } => {
                let allowed = match only {
                    Only::IfAbsent => pairs.iter().all(|(k, _)| s.get(k).is_none()),
                    Only::IfPresent => pairs.iter().all(|(k, _)| s.get(k).is_some()),
                    _ => true,
                };
                if !allowed {
                    return Reply::Int(0);
                }
                for (k, v) in pairs {
                    let expires_at = match ttl {
                        Ttl::Clear => 0,
                        Ttl::Keep => s.get(k).map_or(0, |r| r.meta.expires_at),
                        Ttl::Set(when) => match when.resolve(s.now()) {
                            Some(at) if at > 0 => at as u64,
                            _ => return invalid_expire("msetex"),
                        },
                    };
                    s.put(k, NewValue::plain(v.clone(), expires_at));
                }
                match reply {
                    SetReply::Ok => Reply::OK,
                    SetReply::Bool => Reply::Int(1),
                }
            }
            Cmd::Append(key, suffix, max_len) => {
                let live = s.get(key);
                if live.map_or(0, |r| r.value.len()) + suffix.len() > *max_len {
                    return too_long();
                }
                let mut value = BytesMut::from(live.map_or(&b""[..], |r| &r.value[..]));
                value.extend_from_slice(suffix);
                let len = value.len() as i64;
                let next = NewValue::keeping_ttl(live, value.freeze());
                s.put(key, next);
                Reply::Int(len)
            }
            Cmd::StrLen(key) => Reply::Int(s.get(key).map_or(0, |r| r.value.len() as i64)),
            Cmd::GetRange { key, start, end } => {
                let value = s.get(key).map(|r| r.value.clone()).unwrap_or_default();
                Reply::Bulk(range(&value, *start, *end))
            }
            Cmd::SetRange { key, offset, value } => {
                let live = s.get(key);
                let current = live.map_or(&b""[..], |r| &r.value[..]);
                if value.is_empty() {
                    // Nothing to write: Redis answers the length and creates no key.
                    return Reply::Int(current.len() as i64);
                }
                let mut next = BytesMut::from(current);
                if next.len() < offset + value.len() {
                    next.resize(offset + value.len(), 0);
                }
                next[*offset..offset + value.len()].copy_from_slice(value);
                let len = next.len() as i64;
                let next = NewValue::keeping_ttl(live, next.freeze());
                s.put(key, next);
                Reply::Int(len)
            }
            Cmd::Lcs(l) => {
                let a = s.get(&l.a).map(|r| r.value.clone()).unwrap_or_default();
                let b = s.get(&l.b).map(|r| r.value.clone()).unwrap_or_default();
                l.run(&a, &b)
            }
            Cmd::Digest(key) => s.get(key).map_or(Reply::Nil, |r| Reply::Bulk(Bytes::from(digest(&r.value)))),
            Cmd::GetBit { key, offset } => {
                let value = s.get(key).map(|r| r.value.clone()).unwrap_or_default();
                Reply::Int(bit(&value, *offset) as i64)
            }
            Cmd::SetBit { key, offset, on } => {
                let live = s.get(key);
                let mut value = BytesMut::from(live.map_or(&b""[..], |r| &r.value[..]));
                let byte = (offset >> 3) as usize;
                if value.len() <= byte {
                    value.resize(byte + 1, 0);
                }
                let mask = 1u8 << (7 - (offset & 7));
                let old = value[byte] & mask != 0;
                if *on {
                    value[byte] |= mask;
                } else {
                    value[byte] &= !mask;
                }
                let next = NewValue::keeping_ttl(live, value.freeze());
                s.put(key, next);
                Reply::Int(old as i64)
            }
            Cmd::DelEx { key, compare } => {
                let live = s.get(key);
                if live.is_none() || compare.as_ref().is_some_and(|c| !c.holds(live)) {
                    return Reply::Int(0);
                }
                s.delete(key);
                Reply::Int(1)
            }
        }
    }
}

/// A SETBIT / GETBIT offset: a bit inside the largest string (`max_len`: `proto-max-bulk-len`).
fn bit_offset(b: &[u8], max_len: usize) -> Result<u64, Reply> {
    match super::parse_i64(b) {
        Some(o) if o >= 0 && ((o as u64) >> 3) < max_len as u64 => Ok(o as u64),
        _ => Err(Reply::error("ERR bit offset is not an integer or out of range")),
    }
}

/// Bit `offset` of `value`, counting from the most significant bit of the first byte (0 past the end).
fn bit(value: &[u8], offset: u64) -> bool {
    value.get((offset >> 3) as usize).is_some_and(|b| b & (1 << (7 - (offset & 7))) != 0)
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

#[allow(clippy::too_many_arguments)]
fn set(
    s: &mut Snapshot,
    key: &Bytes,
    value: &Bytes,
    only: &Only,
    ttl: Ttl,
    get: bool,
    reply: SetReply,
    name: &str,
) -> Reply {
    let live = s.get(key);
    let old = live.map_or(Reply::Nil, |r| Reply::Bulk(r.value.clone()));
    let allowed = match only {
        Only::IfAbsent => live.is_none(),
        Only::IfPresent => live.is_some(),
        Only::Always => true,
        Only::If(compare) => compare.holds(live),
    };
    if !allowed {
        return match (get, reply) {
            (true, _) => old,
            (false, SetReply::Bool) => Reply::Int(0),
            (false, SetReply::Ok) => Reply::Nil,
        };
    }
    let expires_at = match ttl {
        Ttl::Clear => 0,
        Ttl::Keep => live.map_or(0, |r| r.meta.expires_at),
        Ttl::Set(when) => match when.resolve(s.now()) {
            Some(at) if at > 0 => at as u64,
            _ => return invalid_expire(name),
        },
    };
    s.put(key, NewValue::plain(value.clone(), expires_at));
    match (get, reply) {
        (true, _) => old,
        (false, SetReply::Bool) => Reply::Int(1),
        (false, SetReply::Ok) => Reply::OK,
    }
}

fn parse_set(a: &[Bytes]) -> Result<Cmd, Reply> {
    let (mut only, mut ttl, mut get) = (Only::Always, Ttl::Clear, false);
    let mut i = 2;
    while i < a.len() {
        let opt = a[i].to_ascii_uppercase();
        let next = a.get(i + 1);
        match (opt.as_slice(), next) {
            (b"NX", _) if matches!(only, Only::Always | Only::IfAbsent) => only = Only::IfAbsent,
            (b"XX", _) if matches!(only, Only::Always | Only::IfPresent) => only = Only::IfPresent,
            (b"IFEQ" | b"IFNE" | b"IFDEQ" | b"IFDNE", Some(v)) if only == Only::Always => {
                only = Only::If(Compare::from_option(&opt, v).ok_or_else(syntax_error)?);
                i += 1;
            }
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

/// `MSETEX numkeys key value [key value …] [NX | XX] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`.
fn parse_msetex(a: &[Bytes]) -> Result<Cmd, Reply> {
    let n = int_arg(&a[0])?;
    if n <= 0 || n as u64 > (a.len() as u64 - 1) / 2 {
        return Err(Reply::error("ERR invalid numkeys value"));
    }
    let n = n as usize;
    let pairs = a[1..1 + 2 * n].chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    let (mut only, mut ttl) = (Only::Always, Ttl::Clear);
    let mut i = 1 + 2 * n;
    while i < a.len() {
        let opt = a[i].to_ascii_uppercase();
        match (opt.as_slice(), a.get(i + 1)) {
            (b"NX", _) if only == Only::Always => only = Only::IfAbsent,
            (b"XX", _) if only == Only::Always => only = Only::IfPresent,
            (b"KEEPTTL", _) if ttl == Ttl::Clear => ttl = Ttl::Keep,
            (b"EX" | b"PX" | b"EXAT" | b"PXAT", Some(v)) if ttl == Ttl::Clear => {
                let n = int_arg(v)?;
                let Some(when) = When::from_option(&opt, n) else { return Err(syntax_error()) };
                if n <= 0 || when.resolve(0).is_none() {
                    return Err(invalid_expire("msetex"));
                }
                ttl = Ttl::Set(when);
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    Ok(Cmd::MSet { pairs, only, ttl, reply: SetReply::Bool })
}

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]`.
fn parse_lcs(a: &[Bytes], max_memory: usize) -> Result<Cmd, Reply> {
    let mut l = Lcs {
        a: a[0].clone(),
        b: a[1].clone(),
        len: false,
        idx: false,
        min_match_len: 0,
        with_match_len: false,
        max_memory,
    };
    let mut i = 2;
    while i < a.len() {
        match (a[i].to_ascii_uppercase().as_slice(), a.get(i + 1)) {
            (b"LEN", _) => l.len = true,
            (b"IDX", _) => l.idx = true,
            (b"WITHMATCHLEN", _) => l.with_match_len = true,
            (b"MINMATCHLEN", Some(v)) => {
                l.min_match_len = int_arg(v)?.max(0) as usize;
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    if l.len && l.idx {
        return Err(Reply::error("ERR If you want both the length and indexes, please just use IDX."));
    }
    Ok(Cmd::Lcs(l))
}

impl Lcs {
    /// The longest common subsequence by dynamic programming, walked back from the end the way Redis
    /// walks it, so that IDX reports the same ranges in the same order.
    fn run(&self, a: &[u8], b: &[u8]) -> Reply {
        let (alen, blen) = (a.len(), b.len());
        if (alen as u64 + 1) * (blen as u64 + 1) * 4 > self.max_memory as u64 {
            return Reply::error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
        }
        let width = blen + 1;
        let mut table = vec![0u32; (alen + 1) * width];
        for i in 1..=alen {
            for j in 1..=blen {
                table[i * width + j] = if a[i - 1] == b[j - 1] {
                    table[(i - 1) * width + j - 1] + 1
                } else {
                    table[(i - 1) * width + j].max(table[i * width + j - 1])
                };
            }
        }
        let lcs = |i: usize, j: usize| table[i * width + j];
        let total = lcs(alen, blen) as usize;
        if self.len {
            return Reply::Int(total as i64);
        }
        let mut result = vec![0u8; total];
        let mut matches = Vec::new();
        let (mut i, mut j, mut idx) = (alen, blen, total);
        // `arange_start == alen` means "no range open".
        let (mut arange_start, mut arange_end, mut brange_start, mut brange_end) = (alen, 0, 0, 0);
        while i > 0 && j > 0 {
            let mut emit = false;
            if a[i - 1] == b[j - 1] {
                result[idx - 1] = a[i - 1];
                if arange_start == alen {
                    (arange_start, arange_end, brange_start, brange_end) = (i - 1, i - 1, j - 1, j - 1);
                } else if arange_start == i && brange_start == j {
                    arange_start -= 1;
                    brange_start -= 1;
                } else {
                    emit = true;
                }
                if arange_start == 0 || brange_start == 0 {
                    emit = true;
                }
                idx -= 1;
                i -= 1;
                j -= 1;
            } else {
                if lcs(i - 1, j) > lcs(i, j - 1) {
                    i -= 1;
                } else {
                    j -= 1;
                }
                if arange_start != alen {
                    emit = true;
                }
            }
            if emit {
                let match_len = arange_end - arange_start + 1;
                if self.min_match_len == 0 || match_len >= self.min_match_len {
                    let mut m = vec![
                        Reply::Array(vec![Reply::Int(arange_start as i64), Reply::Int(arange_end as i64)]),
                        Reply::Array(vec![Reply::Int(brange_start as i64), Reply::Int(brange_end as i64)]),
                    ];
                    if self.with_match_len {
                        m.push(Reply::Int(match_len as i64));
                    }
                    matches.push(Reply::Array(m));
                }
                arange_start = alen;
            }
        }
        if self.idx {
            Reply::Map(vec![
                (Reply::text("matches"), Reply::Array(matches)),
                (Reply::text("len"), Reply::Int(total as i64)),
            ])
        } else {
            Reply::Bulk(Bytes::from(result))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// APPEND, SETRANGE, SETBIT and GETBIT are held to the `proto-max-bulk-len` they were parsed under
    /// (a hard-coded 512 MB before).
    #[test]
    fn strings_grow_up_to_proto_max_bulk_len() {
        use super::super::snapshot::Snapshot;
        use crate::coordinator::KeyName;
        let max = 1024;
        let ns = Bytes::from_static(b"0");
        let key = Bytes::from_static(b"k");
        let keys = [KeyName { namespace: ns.clone(), key: key.clone() }];
        let holding = |len: usize| {
            let record = Record { value: vec![b'x'; len].into(), ..Default::default() };
            Snapshot::new(ns.clone(), 1, &keys, vec![Some(record)])
        };
        let parse = |args: &[&str]| {
            let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
            Cmd::parse(std::str::from_utf8(&args[0]).unwrap(), &args[1..], max).unwrap()
        };
        let too_long = Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");

        let append = |suffix: usize| parse(&["append", "k", &"y".repeat(suffix)]).unwrap();
        assert_eq!(append(24).apply(&mut holding(1000)), Reply::Int(1024));
        assert_eq!(append(25).apply(&mut holding(1000)), too_long);

        assert!(parse(&["setrange", "k", "1023", "v"]).is_ok());
        assert_eq!(parse(&["setrange", "k", "1024", "v"]).unwrap_err(), too_long);
        assert_eq!(parse(&["setrange", "k", "1020", "vvvvv"]).unwrap_err(), too_long);

        let out_of_range = Reply::error("ERR bit offset is not an integer or out of range");
        assert!(parse(&["setbit", "k", &(8 * 1024 - 1).to_string(), "1"]).is_ok());
        assert_eq!(parse(&["setbit", "k", &(8 * 1024).to_string(), "1"]).unwrap_err(), out_of_range);
        assert_eq!(parse(&["getbit", "k", &(8 * 1024).to_string()]).unwrap_err(), out_of_range);
    }

    #[test]
    fn digest_is_xxh3_in_hex() {
        assert_eq!(digest(b"Hello world"), "b6acb9d84a38ff74");
        assert_eq!(digest(b"test"), "9ec9f7918d7dfc40");
        assert_eq!(digest(b"hello"), "9555e8555c62dcfd");
    }

    #[test]
    fn lcs_like_redis() {
        let lcs = |len, idx, min, with| Lcs {
            a: Bytes::new(),
            b: Bytes::new(),
            len,
            idx,
            min_match_len: min,
            with_match_len: with,
            max_memory: 1 << 20,
        };
        let (a, b) = (b"ohmytext", b"mynewtext");
        assert_eq!(lcs(false, false, 0, false).run(a, b), Reply::bulk("mytext"));
        assert_eq!(lcs(true, false, 0, false).run(a, b), Reply::Int(6));
        let range = |x: i64, y: i64| Reply::Array(vec![Reply::Int(x), Reply::Int(y)]);
        let Reply::Map(m) = lcs(false, true, 4, true).run(a, b) else { panic!() };
        assert_eq!(m[0].1, Reply::Array(vec![Reply::Array(vec![range(4, 7), range(5, 8), Reply::Int(4)])]));
        assert_eq!(m[1].1, Reply::Int(6));
        let Reply::Map(m) = lcs(false, true, 0, false).run(a, b) else { panic!() };
        assert_eq!(
            m[0].1,
            Reply::Array(vec![
                Reply::Array(vec![range(4, 7), range(5, 8)]),
                Reply::Array(vec![range(2, 3), range(0, 1)])
            ])
        );
    }

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
