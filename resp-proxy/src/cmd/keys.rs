//! DEL UNLINK EXISTS TOUCH TYPE EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST TTL PTTL EXPIRETIME PEXPIRETIME.

use std::sync::Arc;

use bytes::Bytes;
use vesta_proto::PrepareKind;

use super::expiry::{invalid_expire, Unit, When};
use super::int_arg;
use super::strings::tombstone;
use crate::coordinator::{CoordError, Coordinator, Decision, NewValue};
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
    Expire { key: Bytes, when: When, condition: Condition, name: &'static str },
    Persist(Bytes),
    Show(Bytes, Show),
}

impl Cmd {
    pub fn parse(name: &str, a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
        let expire = |name: &'static str, f: fn(i64) -> When| -> Result<Cmd, Reply> {
            let when = f(int_arg(&a[1])?);
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
            _ => return None,
        })
    }

    pub async fn execute(self, c: &Arc<Coordinator>, ns: &Bytes) -> Result<Reply, CoordError> {
        match self {
            Cmd::Del(keys) => {
                let deletes = keys.iter().map(|k| {
                    c.write(ns, k, PrepareKind::Delete, false, |live, _| match live {
                        Some(r) => Decision::Write(tombstone(r), Reply::Int(1)),
                        None => Decision::Answer(Reply::Int(0)),
                    })
                });
                let mut n = 0;
                for r in futures::future::join_all(deletes).await {
                    if let Reply::Int(i) = r? {
                        n += i;
                    }
                }
                Ok(Reply::Int(n))
            }
            Cmd::Exists(keys) => {
                let reads = futures::future::join_all(keys.iter().map(|k| c.read(ns, k))).await;
                let mut n = 0;
                for r in reads {
                    n += r?.is_some() as i64;
                }
                Ok(Reply::Int(n))
            }
            Cmd::Type(key) => Ok(Reply::Status(if c.read(ns, &key).await?.is_some() { "string" } else { "none" })),
            Cmd::Expire { key, when, condition, name } => {
                c.write(ns, &key, PrepareKind::ReadModifyWrite, true, |live, now| {
                    let Some(r) = live else { return Decision::Answer(Reply::Int(0)) };
                    let Some(at) = when.resolve(now) else { return Decision::Answer(invalid_expire(name)) };
                    let current = r.meta.expires_at;
                    let allowed = match condition {
                        Condition::Always => true,
                        Condition::Nx => current == 0,
                        Condition::Xx => current != 0,
                        Condition::Gt => current != 0 && at > current as i64,
                        Condition::Lt(xx) => (current == 0 && !xx) || (current != 0 && at < current as i64),
                    };
                    if !allowed {
                        return Decision::Answer(Reply::Int(0));
                    }
                    if at <= now as i64 {
                        // An expiry in the past deletes the key, as in Redis.
                        return Decision::Write(tombstone(r), Reply::Int(1));
                    }
                    let value = NewValue { value: r.value.clone(), expires_at: at as u64, tombstone: false };
                    Decision::Write(value, Reply::Int(1))
                })
                .await
            }
            Cmd::Persist(key) => {
                c.write(ns, &key, PrepareKind::ReadModifyWrite, true, |live, _| match live {
                    Some(r) if r.meta.expires_at != 0 => Decision::Write(
                        NewValue { value: r.value.clone(), expires_at: 0, tombstone: false },
                        Reply::Int(1),
                    ),
                    _ => Decision::Answer(Reply::Int(0)),
                })
                .await
            }
            Cmd::Show(key, show) => {
                let now = crate::coordinator::wall_ms();
                let Some(r) = c.read(ns, &key).await? else { return Ok(Reply::Int(-2)) };
                let at = r.meta.expires_at;
                if at == 0 {
                    return Ok(Reply::Int(-1));
                }
                Ok(Reply::Int(match show {
                    // Redis rounds the remaining time to the nearest second.
                    Show::Ttl(Unit::Seconds) => (at.saturating_sub(now) as i64 + 500) / 1000,
                    Show::Ttl(Unit::Millis) => at.saturating_sub(now) as i64,
                    Show::ExpireTime(Unit::Seconds) => (at as i64 + 500) / 1000,
                    Show::ExpireTime(Unit::Millis) => at as i64,
                }))
            }
        }
    }
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
