//! The Redis command table. Each family file parses its commands (arguments → a typed command, or
//! Redis's exact error) separately from executing them against the coordinator.
//!
//! Connection-state commands (HELLO, SELECT, CLIENT, …) live in `connection.rs` and `server.rs` and run
//! in order on the connection; data commands run concurrently and their replies are reordered.

pub mod acl;
pub mod cluster;
pub mod command;
pub mod connection;
pub mod counters;
pub mod dump;
mod expiry;
pub mod info_keyspace;
pub mod keys;
pub mod keyspace;
pub mod latency;
pub mod memory;
mod pattern;
pub mod pause;
pub mod reencrypt;
pub mod scripts;
pub mod server;
pub mod slowlog;
pub mod snapshot;
pub mod strings;
pub mod tracking;
pub mod transaction;

use std::sync::Arc;

use bytes::Bytes;
use vesta_proto::{PrepareKind, Record};

use crate::coordinator::{CoordError, Coordinator, Decision, KeyName, KeyWrite, ManyDecision};
use crate::resp::Reply;
use snapshot::Snapshot;

/// A command's arguments from text, for the command families' unit tests.
#[cfg(test)]
pub(crate) fn test_args(a: &[&str]) -> Vec<Bytes> {
    a.iter().map(|s| Bytes::from(s.to_string())).collect()
}

/// Name, arity (negative: at least that many), flags, first key, last key, key step — as `COMMAND` shows.
pub struct Spec {
    pub name: &'static str,
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub keys: (i64, i64, i64),
    pub group: &'static str,
}

const W: &[&str] = &["write", "denyoom"];
const R: &[&str] = &["readonly", "fast"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const WO: &[&str] = &["write", "fast"];
const C: &[&str] = &["fast", "stale", "loading"];
const S: &[&str] = &["stale", "loading"];

pub const TABLE: &[Spec] = &[
    Spec { name: "get", arity: 2, flags: R, keys: (1, 1, 1), group: "string" },
    Spec { name: "set", arity: -3, flags: W, keys: (1, 1, 1), group: "string" },
    Spec { name: "setnx", arity: 3, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "setex", arity: 4, flags: W, keys: (1, 1, 1), group: "string" },
    Spec { name: "psetex", arity: 4, flags: W, keys: (1, 1, 1), group: "string" },
    Spec { name: "getset", arity: 3, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "getdel", arity: 2, flags: WO, keys: (1, 1, 1), group: "string" },
    Spec { name: "getex", arity: -2, flags: WO, keys: (1, 1, 1), group: "string" },
    Spec { name: "mget", arity: -2, flags: R, keys: (1, -1, 1), group: "string" },
    Spec { name: "mset", arity: -3, flags: W, keys: (1, -1, 2), group: "string" },
    Spec { name: "append", arity: 3, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "strlen", arity: 2, flags: R, keys: (1, 1, 1), group: "string" },
    Spec { name: "getrange", arity: 4, flags: &["readonly"], keys: (1, 1, 1), group: "string" },
    Spec { name: "substr", arity: 4, flags: &["readonly"], keys: (1, 1, 1), group: "string" },
    Spec { name: "setrange", arity: 4, flags: W, keys: (1, 1, 1), group: "string" },
    Spec { name: "incr", arity: 2, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "incrby", arity: 3, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "decr", arity: 2, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "decrby", arity: 3, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "incrbyfloat", arity: 3, flags: WF, keys: (1, 1, 1), group: "string" },
    Spec { name: "msetnx", arity: -3, flags: W, keys: (1, -1, 2), group: "string" },
    Spec { name: "msetex", arity: -4, flags: &["write", "denyoom", "movablekeys"], keys: (0, 0, 0), group: "string" },
    Spec { name: "lcs", arity: -3, flags: &["readonly"], keys: (1, 2, 1), group: "string" },
    Spec { name: "setbit", arity: 4, flags: W, keys: (1, 1, 1), group: "bitmap" },
    Spec { name: "getbit", arity: 3, flags: R, keys: (1, 1, 1), group: "bitmap" },
    Spec { name: "digest", arity: 2, flags: R, keys: (1, 1, 1), group: "string" },
    Spec { name: "delex", arity: -2, flags: WO, keys: (1, 1, 1), group: "string" },
    Spec { name: "del", arity: -2, flags: &["write"], keys: (1, -1, 1), group: "generic" },
    Spec { name: "unlink", arity: -2, flags: WO, keys: (1, -1, 1), group: "generic" },
    Spec { name: "exists", arity: -2, flags: R, keys: (1, -1, 1), group: "generic" },
    Spec { name: "touch", arity: -2, flags: R, keys: (1, -1, 1), group: "generic" },
    Spec { name: "type", arity: 2, flags: R, keys: (1, 1, 1), group: "generic" },
    Spec { name: "expire", arity: -3, flags: WO, keys: (1, 1, 1), group: "generic" },
    Spec { name: "pexpire", arity: -3, flags: WO, keys: (1, 1, 1), group: "generic" },
    Spec { name: "expireat", arity: -3, flags: WO, keys: (1, 1, 1), group: "generic" },
    Spec { name: "pexpireat", arity: -3, flags: WO, keys: (1, 1, 1), group: "generic" },
    Spec { name: "persist", arity: 2, flags: WO, keys: (1, 1, 1), group: "generic" },
    Spec { name: "ttl", arity: 2, flags: R, keys: (1, 1, 1), group: "generic" },
    Spec { name: "pttl", arity: 2, flags: R, keys: (1, 1, 1), group: "generic" },
    Spec { name: "expiretime", arity: 2, flags: R, keys: (1, 1, 1), group: "generic" },
    Spec { name: "pexpiretime", arity: 2, flags: R, keys: (1, 1, 1), group: "generic" },
    Spec { name: "rename", arity: 3, flags: &["write"], keys: (1, 2, 1), group: "generic" },
    Spec { name: "renamenx", arity: 3, flags: WO, keys: (1, 2, 1), group: "generic" },
    Spec { name: "copy", arity: -3, flags: W, keys: (1, 2, 1), group: "generic" },
    Spec { name: "move", arity: 3, flags: WO, keys: (1, 1, 1), group: "generic" },
    Spec { name: "dump", arity: 2, flags: &["readonly"], keys: (1, 1, 1), group: "generic" },
    Spec { name: "restore", arity: -4, flags: W, keys: (1, 1, 1), group: "generic" },
    Spec { name: "object", arity: -2, flags: &["readonly"], keys: (2, 2, 1), group: "generic" },
    Spec { name: "randomkey", arity: 1, flags: &["readonly"], keys: (0, 0, 0), group: "generic" },
    Spec { name: "scan", arity: -2, flags: &["readonly"], keys: (0, 0, 0), group: "generic" },
    Spec { name: "keys", arity: 2, flags: &["readonly"], keys: (0, 0, 0), group: "generic" },
    Spec { name: "dbsize", arity: 1, flags: R, keys: (0, 0, 0), group: "server" },
    Spec { name: "flushdb", arity: -1, flags: &["write"], keys: (0, 0, 0), group: "server" },
    Spec { name: "flushall", arity: -1, flags: &["write"], keys: (0, 0, 0), group: "server" },
    Spec {
        name: "multi",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (0, 0, 0),
        group: "transactions",
    },
    Spec {
        name: "exec",
        arity: 1,
        flags: &["noscript", "loading", "stale", "skip_slowlog"],
        keys: (0, 0, 0),
        group: "transactions",
    },
    Spec {
        name: "discard",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (0, 0, 0),
        group: "transactions",
    },
    Spec {
        name: "watch",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (1, -1, 1),
        group: "transactions",
    },
    Spec {
        name: "unwatch",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (0, 0, 0),
        group: "transactions",
    },
    Spec { name: "wait", arity: 3, flags: &[], keys: (0, 0, 0), group: "generic" },
    Spec {
        name: "eval",
        arity: -3,
        flags: &["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys", "movablekeys"],
        keys: (0, 0, 0),
        group: "scripting",
    },
    Spec {
        name: "evalsha",
        arity: -3,
        flags: &["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys", "movablekeys"],
        keys: (0, 0, 0),
        group: "scripting",
    },
    Spec { name: "script", arity: -2, flags: &[], keys: (0, 0, 0), group: "scripting" },
    Spec { name: "function", arity: -2, flags: &[], keys: (0, 0, 0), group: "scripting" },
    Spec { name: "ping", arity: -1, flags: C, keys: (0, 0, 0), group: "connection" },
    Spec { name: "echo", arity: 2, flags: C, keys: (0, 0, 0), group: "connection" },
    Spec {
        name: "hello",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        keys: (0, 0, 0),
        group: "connection",
    },
    Spec {
        name: "auth",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        keys: (0, 0, 0),
        group: "connection",
    },
    Spec { name: "select", arity: 2, flags: C, keys: (0, 0, 0), group: "connection" },
    Spec {
        name: "quit",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        keys: (0, 0, 0),
        group: "connection",
    },
    Spec {
        name: "reset",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        keys: (0, 0, 0),
        group: "connection",
    },
    Spec { name: "client", arity: -2, flags: S, keys: (0, 0, 0), group: "connection" },
    Spec { name: "command", arity: -1, flags: S, keys: (0, 0, 0), group: "server" },
    Spec { name: "info", arity: -1, flags: S, keys: (0, 0, 0), group: "server" },
    Spec { name: "time", arity: 1, flags: &["loading", "stale", "fast"], keys: (0, 0, 0), group: "server" },
    // Vesta's own: cross-site replication of this proxy (`vesta admin repl …` sends it).
    Spec {
        name: "vesta.repl",
        arity: -2,
        flags: &["admin", "noscript", "loading", "stale"],
        keys: (0, 0, 0),
        group: "server",
    },
    Spec { name: "config", arity: -2, flags: S, keys: (0, 0, 0), group: "server" },
    // Vesta's own: rewriting records under the current encryption key (`vesta admin reencrypt`).
    Spec { name: "vesta.reencrypt", arity: -2, flags: &["admin", "noscript"], keys: (0, 0, 0), group: "server" },
    Spec { name: "acl", arity: -2, flags: S, keys: (0, 0, 0), group: "server" },
    // Containers Redis gives no flags of their own (their subcommands have them).
    Spec { name: "slowlog", arity: -2, flags: &[], keys: (0, 0, 0), group: "server" },
    Spec { name: "latency", arity: -2, flags: &[], keys: (0, 0, 0), group: "server" },
    Spec { name: "memory", arity: -2, flags: &[], keys: (0, 0, 0), group: "server" },
    Spec { name: "cluster", arity: -2, flags: &[], keys: (0, 0, 0), group: "cluster" },
    Spec { name: "readonly", arity: 1, flags: &["loading", "stale", "fast"], keys: (0, 0, 0), group: "cluster" },
    Spec { name: "readwrite", arity: 1, flags: &["loading", "stale", "fast"], keys: (0, 0, 0), group: "cluster" },
    Spec { name: "asking", arity: 1, flags: &["fast"], keys: (0, 0, 0), group: "cluster" },
];

pub fn spec(name: &str) -> Option<&'static Spec> {
    TABLE.iter().find(|s| s.name == name)
}

/// Redis's arity rule: exact for positive arity, at least |arity| for negative (name included).
pub fn arity_ok(spec: &Spec, argc: usize) -> bool {
    let argc = argc as i64;
    if spec.arity >= 0 {
        argc == spec.arity
    } else {
        argc >= -spec.arity
    }
}

pub fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!("ERR wrong number of arguments for '{name}' command"))
}

/// `-ERR unknown command 'x', with args beginning with: 'a' 'b' `, exactly as Redis words it.
pub fn unknown_command(name: &[u8], args: &[Bytes]) -> Reply {
    // Redis lists arguments while the list is under 128 bytes, cutting each to what is left of that.
    let mut list = String::new();
    for a in args {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        let text = String::from_utf8_lossy(&a[..a.len().min(room)]).replace(['\r', '\n'], " ");
        list.push_str(&format!("'{text}' "));
    }
    Reply::Error(format!("ERR unknown command '{}', with args beginning with: {list}", shown(name)))
}

/// A container's subcommand (`a[0]`) checked against its table of (name, arity), arity counting the
/// container's name as Redis does: the subcommand's name, or Redis's unknown-subcommand or
/// wrong-arity error.
pub fn subcommand(container: &str, table: &[(&'static str, i64)], a: &[Bytes]) -> Result<&'static str, Reply> {
    let Some((name, arity)) = table.iter().find(|(n, _)| a[0].eq_ignore_ascii_case(n.as_bytes())) else {
        return Err(unknown_subcommand(container, &a[0]));
    };
    let argc = a.len() as i64 + 1;
    if (*arity >= 0 && argc != *arity) || argc < -*arity {
        return Err(wrong_arity(&format!("{}|{name}", container.to_ascii_lowercase())));
    }
    Ok(name)
}

/// `-ERR unknown subcommand 'x'. Try CONTAINER HELP.`
pub fn unknown_subcommand(container: &str, sub: &[u8]) -> Reply {
    Reply::error(format!("ERR unknown subcommand '{}'. Try {} HELP.", shown(sub), container.to_ascii_uppercase()))
}

/// What Redis answers when a known subcommand's handler finds its arguments wrong
/// (`addReplySubcommandSyntaxError`).
pub fn subcommand_syntax_error(container: &str, sub: &[u8]) -> Reply {
    Reply::error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        shown(sub),
        container.to_ascii_uppercase()
    ))
}

/// Redis's HELP reply: `header` (`"X <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"`), the
/// lines, then HELP's own entry, each a status line.
pub fn help(header: &'static str, lines: &[&'static str]) -> Reply {
    let mut all = Vec::with_capacity(lines.len() + 3);
    all.push(Reply::Status(header));
    all.extend(lines.iter().map(|l| Reply::Status(l)));
    all.push(Reply::Status("HELP"));
    all.push(Reply::Status("    Print this help."));
    Reply::Array(all)
}

/// Text of an argument in an error message: at most 128 bytes, lossy UTF-8, no line breaks.
pub fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(128)]).replace(['\r', '\n'], " ")
}

/// How a command touches its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Quorum reads, no leases.
    Read,
    /// Two-phase commit: the prepare kind, and whether the command needs the current values.
    Write(PrepareKind, bool),
}

/// A parsed data command, ready to run.
#[derive(Debug)]
pub enum DataCommand {
    Strings(strings::Cmd),
    Keys(keys::Cmd),
    Counters(counters::Cmd),
    Scripts(scripts::Cmd),
    Memory(memory::Usage),
    Dump(dump::Cmd),
}

impl DataCommand {
    /// Parses a data command (`name` lower-case, `args` without the name). `None`: not a data command.
    /// `max_len`: `proto-max-bulk-len`, the longest string a command may build (APPEND, SETRANGE, …).
    pub fn parse(name: &str, args: &[Bytes], max_len: usize) -> Option<Result<DataCommand, Reply>> {
        if let Some(c) = strings::Cmd::parse(name, args, max_len) {
            return Some(c.map(DataCommand::Strings));
        }
        if let Some(c) = keys::Cmd::parse(name, args) {
            return Some(c.map(DataCommand::Keys));
        }
        if let Some(c) = scripts::Cmd::parse(name, args) {
            return Some(c.map(DataCommand::Scripts));
        }
        if name == "memory" && memory::is_usage(args) {
            return Some(memory::Usage::parse(args).map(DataCommand::Memory));
        }
        if let Some(c) = dump::Cmd::parse(name, args) {
            return Some(c.map(DataCommand::Dump));
        }
        counters::Cmd::parse(name, args).map(|c| c.map(DataCommand::Counters))
    }

    /// The distinct keys the command reads or writes, in `ns` unless it names another database.
    pub fn keys(&self, ns: &Bytes) -> Vec<KeyName> {
        let here = |k: Bytes| KeyName { namespace: ns.clone(), key: k };
        let mut keys: Vec<KeyName> = match self {
            DataCommand::Strings(c) => c.keys().into_iter().map(here).collect(),
            DataCommand::Keys(c) => c.keys(ns),
            DataCommand::Counters(c) => vec![here(c.key().clone())],
            DataCommand::Scripts(c) => vec![here(c.key().clone())],
            DataCommand::Memory(c) => vec![here(c.key.clone())],
            DataCommand::Dump(c) => vec![here(c.key().clone())],
        };
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.clone()));
        keys
    }

    pub fn access(&self) -> Access {
        match self {
            DataCommand::Strings(c) => c.access(),
            DataCommand::Keys(c) => c.access(),
            DataCommand::Counters(_) => Access::Write(PrepareKind::ReadModifyWrite, true),
            DataCommand::Scripts(c) => c.access(),
            DataCommand::Memory(_) => Access::Read,
            DataCommand::Dump(c) => c.access(),
        }
    }

    /// Runs the command on a snapshot of its keys.
    pub fn apply(&self, s: &mut Snapshot) -> Reply {
        match self {
            DataCommand::Strings(c) => c.apply(s),
            DataCommand::Keys(c) => c.apply(s),
            DataCommand::Counters(c) => c.apply(s),
            DataCommand::Scripts(c) => c.apply(s),
            DataCommand::Memory(c) => c.apply(s),
            DataCommand::Dump(c) => c.apply(s),
        }
    }

    /// The command, whose keys (`self.keys(&ns)`) are `keys`, as a write of one key (which
    /// [`Coordinator::write_group`] can run with others), or both back if it is not one.
    pub fn into_key_write(self, ns: Bytes, keys: Vec<KeyName>) -> Result<KeyWrite, (DataCommand, Vec<KeyName>)> {
        let Access::Write(kind, want_value) = self.access() else { return Err((self, keys)) };
        let [key] = keys.as_slice() else { return Err((self, keys)) };
        let (namespace, key) = (key.namespace.clone(), key.key.clone());
        let decide = move |live: Option<&Record>, now: u64| {
            let mut s = Snapshot::new(ns.clone(), now, &keys, vec![live.cloned()]);
            let reply = self.apply(&mut s);
            match s.into_changes().pop() {
                Some((_, change)) => Decision::Write(change, reply),
                None => Decision::Answer(reply),
            }
        };
        Ok(KeyWrite { namespace, key, kind, want_value, decide: Box::new(decide) })
    }

    /// The reply of a read of one key, `key`, on its newest live copy (as [`Coordinator::read`] returns
    /// it) at `now`.
    pub fn answer_read(&self, ns: Bytes, key: KeyName, copy: Option<Record>, now: u64) -> Reply {
        let mut s = Snapshot::new(ns, now, &[key], vec![copy]);
        self.apply(&mut s)
    }

    /// Runs the command on its own: quorum reads for a read, one two-phase commit over all its keys for
    /// a write.
    pub async fn execute(self, coord: Arc<Coordinator>, ns: Bytes) -> Reply {
        let keys = self.keys(&ns);
        let result = match self.access() {
            Access::Read => match read_all(&coord, &keys).await {
                Ok(copies) => {
                    let mut s = Snapshot::new(ns, coord.now_ms(), &keys, copies);
                    Ok(self.apply(&mut s))
                }
                Err(e) => Err(e),
            },
            Access::Write(..) => match self.into_key_write(ns.clone(), keys) {
                Ok(w) => coord.write(&w.namespace, &w.key, w.kind, w.want_value, w.decide).await,
                Err((command, keys)) => {
                    coord
                        .write_many(&keys, |copies, now| {
                            let copies = copies.iter().map(|c| c.cloned()).collect();
                            let mut s = Snapshot::new(ns.clone(), now, &keys, copies);
                            let reply = command.apply(&mut s);
                            let changes = s.into_changes();
                            if changes.is_empty() {
                                ManyDecision::Answer(reply)
                            } else {
                                ManyDecision::Write(changes, reply)
                            }
                        })
                        .await
                }
            },
        };
        result.unwrap_or_else(|e| e.reply())
    }
}

/// The newest live copy of each key, from read quorums: several keys (MGET, a read-only transaction)
/// in one batch of reads per store node (see [`Coordinator::read_group`]).
pub async fn read_all(coord: &Arc<Coordinator>, keys: &[KeyName]) -> Result<Vec<Option<Record>>, CoordError> {
    match keys {
        [key] => Ok(vec![coord.read(&key.namespace, &key.key).await?]),
        _ => {
            let keys = keys.iter().map(|k| (k.namespace.clone(), k.key.clone())).collect();
            coord.read_group(keys).await.into_iter().collect()
        }
    }
}

/// Redis's `string2ll`: optional `-`, digits, no `+`, no spaces, no leading zeros, fits in i64.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    if b == b"-0" {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

pub fn not_an_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

pub fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

/// The argument as an integer, or Redis's error.
pub fn int_arg(b: &[u8]) -> Result<i64, Reply> {
    parse_i64(b).ok_or_else(not_an_integer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_like_string2ll() {
        assert_eq!(parse_i64(b"123"), Some(123));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"+1", b" 1", b"01", b"-0", b"1.0", b"9223372036854775808", b"-", b"abc"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unknown_command_text() {
        let r = unknown_command(b"foo", &[Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(r, Reply::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' "));
        assert_eq!(unknown_command(b"x", &[]), Reply::error("ERR unknown command 'x', with args beginning with: "));
    }
}
