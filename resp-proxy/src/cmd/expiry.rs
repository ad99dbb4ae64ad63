//! Expiry arguments: relative (EX / PX) or absolute (EXAT / PXAT) times to Unix milliseconds, with
//! Redis's overflow rules.

use crate::resp::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `EX` / `PX` / `EXPIRE`: from now.
    In(Unit, i64),
    /// `EXAT` / `PXAT` / `EXPIREAT`: a Unix time.
    At(Unit, i64),
}

pub fn invalid_expire(cmd: &str) -> Reply {
    Reply::error(format!("ERR invalid expire time in '{cmd}' command"))
}

impl When {
    /// `EX n`, `PX n`, `EXAT n`, `PXAT n` (option upper-cased).
    pub fn from_option(opt: &[u8], n: i64) -> Option<When> {
        Some(match opt {
            b"EX" => When::In(Unit::Seconds, n),
            b"PX" => When::In(Unit::Millis, n),
            b"EXAT" => When::At(Unit::Seconds, n),
            b"PXAT" => When::At(Unit::Millis, n),
            _ => return None,
        })
    }

    /// The absolute expiry in ms; `None` when it overflows (Redis: "invalid expire time").
    pub fn resolve(self, now_ms: u64) -> Option<i64> {
        let (unit, v, base) = match self {
            When::In(u, v) => (u, v, now_ms as i64),
            When::At(u, v) => (u, v, 0),
        };
        let ms = match unit {
            Unit::Seconds => v.checked_mul(1000)?,
            Unit::Millis => v,
        };
        ms.checked_add(base)
    }

    pub fn unit(self) -> Unit {
        match self {
            When::In(u, _) | When::At(u, _) => u,
        }
    }
}
