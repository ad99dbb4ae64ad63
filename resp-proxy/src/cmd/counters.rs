//! INCR INCRBY DECR DECRBY INCRBYFLOAT: one two-phase commit each, so concurrent increments are never
//! lost or doubled.

use bytes::Bytes;

use super::snapshot::Snapshot;
use super::{int_arg, parse_i64};
use crate::coordinator::{CounterChange, NewValue};
use crate::resp::Reply;

#[derive(Debug)]
pub enum Cmd {
    /// INCR / INCRBY / DECR / DECRBY.
    Add {
        key: Bytes,
        by: i64,
    },
    AddFloat {
        key: Bytes,
        by: f64,
    },
}

impl Cmd {
    pub fn parse(name: &str, a: &[Bytes]) -> Option<Result<Cmd, Reply>> {
        let key = a.first().cloned().unwrap_or_default();
        Some(match name {
            "incr" => Ok(Cmd::Add { key, by: 1 }),
            "decr" => Ok(Cmd::Add { key, by: -1 }),
            "incrby" => int_arg(&a[1]).map(|by| Cmd::Add { key, by }),
            "decrby" => match int_arg(&a[1]) {
                Err(e) => Err(e),
                Ok(i64::MIN) => Err(Reply::error("ERR decrement would overflow")),
                Ok(by) => Ok(Cmd::Add { key, by: -by }),
            },
            "incrbyfloat" => parse_float(&a[1]).map(|by| Cmd::AddFloat { key, by }).ok_or_else(not_a_float),
            _ => return None,
        })
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Cmd::Add { key, .. } | Cmd::AddFloat { key, .. } => key,
        }
    }

    pub fn apply(&self, s: &mut Snapshot) -> Reply {
        match self {
            Cmd::Add { key, by } => {
                let change = CounterChange::Add { int: *by, float: 0.0 };
                add(s, key, parse_i64, 0, super::not_an_integer, change, |current| match current.checked_add(*by) {
                    Some(next) => Ok((Bytes::from(next.to_string()), Reply::Int(next))),
                    None => Err(Reply::error("ERR increment or decrement would overflow")),
                })
            }
            Cmd::AddFloat { key, by } => {
                add(s, key, parse_float, 0.0, not_a_float, CounterChange::Add { int: 0, float: *by }, |current| {
                    let next = current + by;
                    if !next.is_finite() {
                        return Err(Reply::error("ERR increment would produce NaN or Infinity"));
                    }
                    let text = Bytes::from(format_float(next));
                    Ok((text.clone(), Reply::Bulk(text)))
                })
            }
        }
    }
}

/// The shared shape of every counter: parse the current value (absent = `zero`), compute the next one
/// and its reply, keep the TTL, add `change` to this site's contribution.
fn add<T>(
    s: &mut Snapshot,
    key: &Bytes,
    parse: fn(&[u8]) -> Option<T>,
    zero: T,
    not_a_number: fn() -> Reply,
    change: CounterChange,
    next: impl FnOnce(T) -> Result<(Bytes, Reply), Reply>,
) -> Reply {
    let live = s.get(key);
    let current = match live {
        None => zero,
        Some(r) => match parse(&r.value) {
            Some(n) => n,
            None => return not_a_number(),
        },
    };
    match next(current) {
        Ok((value, reply)) => {
            // Besides the new total, this site's contribution grows: increments in several sites add up.
            let value = NewValue { counter: change, ..NewValue::keeping_ttl(live, value) };
            s.put(key, value);
            reply
        }
        Err(error) => error,
    }
}

fn not_a_float() -> Reply {
    Reply::error("ERR value is not a valid float")
}

/// Like Redis's `string2ld`: a number, no surrounding spaces, not NaN (infinity parses; the sum is
/// refused later with its own error).
fn parse_float(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.len() > 5000 || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| !f.is_nan())
}

/// Redis prints INCRBYFLOAT results in fixed notation with trailing zeros removed (`10.6`, `3`,
/// `5000`). Redis computes in long double; 15 significant digits reproduce its output for the values
/// f64 can carry exactly enough.
pub fn format_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let int_digits = (f.abs().log10().floor() as i64 + 1).max(1);
    let decimals = (15 - int_digits).clamp(0, 17) as usize;
    let mut s = format!("{f:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_redis() {
        assert_eq!(format_float(10.5 + 0.1), "10.6");
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(5.0e3), "5000");
        assert_eq!(format_float(-1.5), "-1.5");
        assert_eq!(parse_float(b" 1"), None);
        assert_eq!(parse_float(b"inf"), Some(f64::INFINITY));
        assert_eq!(parse_float(b"nan"), None);
        assert_eq!(parse_float(b"1e3"), Some(1000.0));
    }
}
