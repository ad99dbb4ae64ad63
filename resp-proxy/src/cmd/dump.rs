//! DUMP RESTORE: a string in Redis's serialization format (see [`crate::rdb`]), so values move between
//! Redis and Vesta with the tools that already speak it (redis-cli, RedisShake, client libraries).

use bytes::Bytes;
use vesta_proto::PrepareKind;

use super::snapshot::Snapshot;
use super::{int_arg, syntax_error, Access};
use crate::coordinator::NewValue;
use crate::rdb::{self, PayloadError};
use crate::resp::Reply;

#[derive(Debug)]
pub enum Cmd {
    Dump(Bytes),
    Restore(Restore),
}

#[derive(Debug)]
pub struct Restore {
    key: Bytes,
    replace: bool,
    /// The TTL and the value, or the error for them. Redis judges them only after it found the key
    /// free (a busy key answers BUSYKEY whatever the rest), so a bad TTL or payload waits for that.
    checked: Result<(Expiry, Bytes), Reply>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Never,
    /// Milliseconds from when the command runs.
    In(u64),
    /// Unix milliseconds (`ABSTTL`).
    At(u64),
}

impl Cmd {
    pub fn parse(name: &str, a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
        Some(match name {
            "dump" => Ok(Cmd::Dump(a[0].clone())),
            "restore" => parse_restore(a).map(Cmd::Restore),
            _ => return None,
        })
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Cmd::Dump(key) | Cmd::Restore(Restore { key, .. }) => key,
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Cmd::Dump(_) => Access::Read,
            Cmd::Restore(Restore { replace: true, .. }) => Access::Write(PrepareKind::Set, false),
            // Without REPLACE, RESTORE creates: the key's absence is the condition, as for SET NX.
            Cmd::Restore(Restore { replace: false, .. }) => Access::Write(PrepareKind::Create, false),
        }
    }

    pub fn apply(&self, s: &mut Snapshot) -> Reply {
        match self {
            Cmd::Dump(key) => s.get(key).map_or(Reply::Nil, |r| Reply::Bulk(rdb::dump_string(&r.value).into())),
            Cmd::Restore(Restore { key, replace, checked }) => {
                if !replace && s.get(key).is_some() {
                    return Reply::error("BUSYKEY Target key name already exists.");
                }
                let (expiry, value) = match checked {
                    Ok(c) => c.clone(),
                    Err(e) => return e.clone(),
                };
                let expires_at = match expiry {
                    Expiry::Never => 0,
                    Expiry::In(ms) => s.now().saturating_add(ms),
                    Expiry::At(ms) => ms,
                };
                if expires_at != 0 && expires_at <= s.now() {
                    // Redis does not create a key whose absolute TTL has passed; with REPLACE the old
                    // one is deleted all the same.
                    s.delete(key);
                    return Reply::OK;
                }
                s.put(key, NewValue::plain(value, expires_at));
                Reply::OK
            }
        }
    }
}

/// `RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]`, checked in
/// Redis's order: options, then (when the command runs) the key, then the TTL and the payload.
fn parse_restore(a: &[Bytes]) -> Result<Restore, Reply> {
    let (mut replace, mut absolute, mut idle, mut freq) = (false, false, false, false);
    let mut i = 3;
    while i < a.len() {
        let more = i + 1 < a.len();
        match a[i].to_ascii_uppercase().as_slice() {
            b"REPLACE" => replace = true,
            b"ABSTTL" => absolute = true,
            // Access times and frequencies are not kept (no LRU/LFU eviction), so they are only checked.
            b"IDLETIME" if more && !freq => {
                if int_arg(&a[i + 1])? < 0 {
                    return Err(Reply::error("ERR Invalid IDLETIME value, must be >= 0"));
                }
                idle = true;
                i += 1;
            }
            b"FREQ" if more && !idle => {
                if !(0..=255).contains(&int_arg(&a[i + 1])?) {
                    return Err(Reply::error("ERR Invalid FREQ value, must be >= 0 and <= 255"));
                }
                freq = true;
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    let checked = int_arg(&a[1]).and_then(|ttl| {
        let expiry = match ttl {
            ..=-1 => return Err(Reply::error("ERR Invalid TTL value, must be >= 0")),
            0 => Expiry::Never,
            ms if absolute => Expiry::At(ms as u64),
            ms => Expiry::In(ms as u64),
        };
        let value = rdb::restore_string(&a[2]).map_err(payload_error)?;
        Ok((expiry, value))
    });
    Ok(Restore { key: a[0].clone(), replace, checked })
}

fn payload_error(e: PayloadError) -> Reply {
    Reply::error(format!("ERR {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::KeyName;

    fn args(a: &[&[u8]]) -> Vec<Bytes> {
        a.iter().map(|s| Bytes::copy_from_slice(s)).collect()
    }

    fn run(cmd: &Cmd, existing: Option<&[u8]>) -> (Reply, Option<NewValue>) {
        let ns = Bytes::from_static(b"0");
        let keys = [KeyName { namespace: ns.clone(), key: cmd.key().clone() }];
        let copy = existing.map(|v| vesta_proto::Record::new(vesta_proto::Meta::default(), Bytes::copy_from_slice(v)));
        let mut s = Snapshot::new(ns, 1_000_000, &keys, vec![copy]);
        let reply = cmd.apply(&mut s);
        (reply, s.into_changes().pop().map(|(_, c)| c))
    }

    fn parse(a: &[&[u8]]) -> Result<Cmd, Reply> {
        Cmd::parse("restore", &args(a)).expect("restore is this family's")
    }

    #[test]
    fn options_are_checked_as_redis_does() {
        let p = rdb::dump_string(b"v");
        let err = |a: &[&[u8]]| parse(a).expect_err("refused");
        assert_eq!(err(&[b"k", b"0", &p, b"bogus"]), syntax_error());
        assert_eq!(err(&[b"k", b"0", &p, b"IDLETIME"]), syntax_error());
        assert_eq!(
            err(&[b"k", b"0", &p, b"idletime", b"-1"]),
            Reply::error("ERR Invalid IDLETIME value, must be >= 0")
        );
        assert_eq!(
            err(&[b"k", b"0", &p, b"FREQ", b"256"]),
            Reply::error("ERR Invalid FREQ value, must be >= 0 and <= 255")
        );
        assert_eq!(err(&[b"k", b"0", &p, b"FREQ", b"1", b"IDLETIME", b"1"]), syntax_error());
        assert_eq!(err(&[b"k", b"0", &p, b"IDLETIME", b"x"]), super::super::not_an_integer());
    }

    #[test]
    fn a_busy_key_is_reported_before_a_bad_ttl_or_payload() {
        let busy = Reply::error("BUSYKEY Target key name already exists.");
        for a in [&[&b"k"[..], b"-1", b"x"][..], &[b"k", b"abc", b"x"], &[b"k", b"0", b"x"]] {
            assert_eq!(run(&parse(a).expect("parses"), Some(b"old")).0, busy);
        }
        let free = |a: &[&[u8]]| run(&parse(a).expect("parses"), None).0;
        assert_eq!(free(&[b"k", b"-1", b"x"]), Reply::error("ERR Invalid TTL value, must be >= 0"));
        assert_eq!(free(&[b"k", b"0", b"x"]), Reply::error("ERR DUMP payload version or checksum are wrong"));
    }

    #[test]
    fn restore_sets_value_and_ttl() {
        let p = rdb::dump_string(b"hello");
        let (reply, change) = run(&parse(&[b"k", b"5000", &p]).expect("parses"), None);
        assert_eq!(reply, Reply::OK);
        let change = change.expect("written");
        assert_eq!((change.value.as_ref(), change.expires_at), (&b"hello"[..], 1_005_000));
        let (_, change) = run(&parse(&[b"k", b"2000000", &p, b"ABSTTL", b"REPLACE"]).expect("parses"), Some(b"x"));
        assert_eq!(change.expect("written").expires_at, 2_000_000);
        // An absolute TTL already past: nothing created, and REPLACE still removes the old value.
        let (reply, change) = run(&parse(&[b"k", b"999", &p, b"ABSTTL"]).expect("parses"), None);
        assert_eq!((reply, change.is_none()), (Reply::OK, true));
        let (_, change) = run(&parse(&[b"k", b"999", &p, b"ABSTTL", b"REPLACE"]).expect("parses"), Some(b"x"));
        assert!(change.expect("deleted").tombstone);
    }

    #[test]
    fn dump_of_a_missing_key_is_nil() {
        let cmd = Cmd::parse("dump", &args(&[b"k"])).expect("dump").expect("parses");
        assert_eq!(run(&cmd, None).0, Reply::Nil);
        let Reply::Bulk(p) = run(&cmd, Some(b"v")).0 else { panic!("a payload") };
        assert_eq!(rdb::restore_string(&p).as_deref(), Ok(&b"v"[..]));
    }
}
