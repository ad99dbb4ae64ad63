//! COMMAND [COUNT | INFO | DOCS | LIST | GETKEYS | GETKEYSANDFLAGS | HELP]: Vesta's command table as
//! Redis 7 describes its own. ACL categories come from `acl::categories`, the one list the ACL checks
//! use too; the key flags of GETKEYSANDFLAGS are Redis 7.2's key specs of each command.

use bytes::Bytes;

use super::{help, pattern, shown, subcommand, Spec, TABLE};
use crate::acl::categories;
use crate::resp::Reply;

const SUBCOMMANDS: &[(&str, i64)] =
    &[("count", 2), ("info", -2), ("docs", -2), ("list", -2), ("getkeys", -3), ("getkeysandflags", -3), ("help", 2)];

pub fn command(a: &[Bytes]) -> Reply {
    if a.is_empty() {
        return Reply::Array(TABLE.iter().map(spec_reply).collect());
    }
    let sub = match subcommand("command", SUBCOMMANDS, a) {
        Ok(sub) => sub,
        Err(e) => return e,
    };
    match sub {
        "count" => Reply::Int(TABLE.len() as i64),
        "info" if a.len() == 1 => Reply::Array(TABLE.iter().map(spec_reply).collect()),
        "info" => Reply::Array(
            a[1..]
                .iter()
                .map(|n| super::spec(&String::from_utf8_lossy(n).to_ascii_lowercase()).map_or(Reply::Nil, spec_reply))
                .collect(),
        ),
        // Docs for named commands. Without names (what interactive redis-cli asks on connect) the answer
        // is an error, so that redis-cli falls back to its built-in help: its argument hints are better
        // than docs without argument lists would give.
        "docs" if a.len() > 1 => Reply::Map(
            a[1..]
                .iter()
                .filter_map(|n| super::spec(&String::from_utf8_lossy(n).to_ascii_lowercase()))
                .map(|s| (Reply::text(s.name), docs(s)))
                .collect(),
        ),
        "docs" => Reply::error(format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", shown(&a[0]))),
        "list" => list(&a[1..]),
        "getkeys" => get_keys(&a[1..], false),
        "getkeysandflags" => get_keys(&a[1..], true),
        _ => help(
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            &[
                "(no subcommand)",
                "    Return details about all Redis commands.",
                "COUNT",
                "    Return the total number of commands in this Redis server.",
                "LIST",
                "    Return a list of all commands in this Redis server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "GETKEYS <full-command>",
                "    Return the keys from a full Redis command.",
                "GETKEYSANDFLAGS <full-command>",
                "    Return the keys and the access flags from a full Redis command.",
            ],
        ),
    }
}

fn spec_reply(s: &Spec) -> Reply {
    let flags = s.flags.iter().map(|f| Reply::Status(f)).collect();
    let categories: Vec<Reply> = categories::of(s.name).iter().map(|c| Reply::text(&format!("@{c}"))).collect();
    Reply::Array(vec![
        Reply::text(s.name),
        Reply::Int(s.arity),
        Reply::Set(flags),
        Reply::Int(s.keys.0),
        Reply::Int(s.keys.1),
        Reply::Int(s.keys.2),
        Reply::Set(categories),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

fn docs(s: &Spec) -> Reply {
    Reply::Map(vec![
        (Reply::text("summary"), Reply::text(&format!("Redis {} command, served by Vesta", s.name.to_uppercase()))),
        (Reply::text("since"), Reply::text("1.0.0")),
        (Reply::text("group"), Reply::text(s.group)),
        (Reply::text("complexity"), Reply::text("O(1)")),
    ])
}

/// Every full command name: the table's commands, each followed by the subcommands it has its own
/// entry for (as Redis lists `client`, `client|list`, …).
fn full_names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().flat_map(|s| {
        std::iter::once(s.name).chain(
            categories::COMMANDS
                .iter()
                .filter(move |(n, _)| n.split_once('|').is_some_and(|(container, _)| container == s.name))
                .map(|(n, _)| *n),
        )
    })
}

/// `COMMAND LIST [FILTERBY MODULE m | ACLCAT cat | PATTERN p]`.
fn list(a: &[Bytes]) -> Reply {
    enum Filter {
        All,
        Module,
        Category(String),
        Pattern(Vec<u8>),
    }
    let filter = match a {
        [] => Filter::All,
        [by, kind, arg] if by.eq_ignore_ascii_case(b"filterby") => match kind.to_ascii_lowercase().as_slice() {
            // Vesta loads no modules.
            b"module" => Filter::Module,
            b"aclcat" => Filter::Category(String::from_utf8_lossy(arg).to_ascii_lowercase()),
            b"pattern" => Filter::Pattern(arg.to_ascii_lowercase()),
            _ => return super::syntax_error(),
        },
        _ => return super::syntax_error(),
    };
    Reply::Array(
        full_names()
            .filter(|name| match &filter {
                Filter::All => true,
                Filter::Module => false,
                Filter::Category(c) => categories::of(name).contains(&c.as_str()),
                Filter::Pattern(p) => pattern::matches(p, name.as_bytes()),
            })
            .map(Reply::text)
            .collect(),
    )
}

/// `COMMAND GETKEYS cmd args…` / `COMMAND GETKEYSANDFLAGS cmd args…` (`a`: the command and its args).
fn get_keys(a: &[Bytes], with_flags: bool) -> Reply {
    let name = String::from_utf8_lossy(&a[0]).to_ascii_lowercase();
    let Some(spec) = super::spec(&name) else {
        return Reply::error("ERR Invalid command specified");
    };
    let movable = spec.flags.contains(&"movablekeys");
    let object_help = spec.name == "object" && a.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"help"));
    if (spec.keys.0 == 0 && !movable) || object_help {
        return Reply::error("ERR The command has no key arguments");
    }
    if !super::arity_ok(spec, a.len()) {
        return Reply::error("ERR Invalid number of arguments specified for command");
    }
    let positions = match key_positions(spec, a) {
        Some(p) => p,
        None if spec.flags.contains(&"no_mandatory_keys") => vec![],
        None => return Reply::error("ERR Invalid arguments specified for command"),
    };
    Reply::Array(
        positions
            .into_iter()
            .map(|(i, flags)| {
                let key = Reply::Bulk(a[i].clone());
                if with_flags {
                    Reply::Array(vec![key, Reply::Set(flags.iter().map(|f| Reply::Status(f)).collect())])
                } else {
                    key
                }
            })
            .collect(),
    )
}

/// The positions of the keys in `a` (the command's name at 0) and each one's key flags; `None` when
/// the arguments name keys that are not there (a bad `numkeys`).
fn key_positions(spec: &Spec, a: &[Bytes]) -> Option<Vec<(usize, &'static [&'static str])>> {
    let numkeys = || a.get(if spec.name == "msetex" { 1 } else { 2 }).and_then(|n| super::parse_i64(n));
    let positions: Vec<usize> = match spec.name {
        "eval" | "evalsha" => {
            let n = usize::try_from(numkeys()?).ok()?;
            (3..3 + n).collect()
        }
        "msetex" => {
            let n = usize::try_from(numkeys()?).ok().filter(|&n| n > 0)?;
            (0..n).map(|i| 2 + 2 * i).collect()
        }
        _ => {
            let (first, last, step) = spec.keys;
            let last = if last < 0 { a.len() as i64 + last } else { last };
            (first..=last).step_by(step.max(1) as usize).map(|i| i as usize).collect()
        }
    };
    if positions.iter().any(|&i| i >= a.len()) {
        return None;
    }
    Some(positions.into_iter().enumerate().map(|(nth, i)| (i, key_flags(spec.name, nth, a))).collect())
}

const RO: &[&str] = &["RO"];
const RO_ACCESS: &[&str] = &["RO", "access"];
const RW_ACCESS_UPDATE: &[&str] = &["RW", "access", "update"];
const RW_ACCESS_DELETE: &[&str] = &["RW", "access", "delete"];
const RW_UPDATE: &[&str] = &["RW", "update"];
const OW_UPDATE: &[&str] = &["OW", "update"];
const OW_INSERT: &[&str] = &["OW", "insert"];
const RM_DELETE: &[&str] = &["RM", "delete"];

/// Redis 7.2's key-spec flags of the `nth` key of a command (Redis 8.4's for its string commands).
fn key_flags(name: &str, nth: usize, a: &[Bytes]) -> &'static [&'static str] {
    match (name, nth) {
        // SET's flags depend on GET (Redis's `setGetKeys`).
        ("set", _) if a[3..].iter().any(|x| x.eq_ignore_ascii_case(b"get")) => RW_ACCESS_UPDATE,
        ("set" | "setex" | "psetex" | "mset" | "msetex", _) => OW_UPDATE,
        ("setnx" | "msetnx", _) => OW_INSERT,
        ("append", _) => &["RW", "insert"],
        ("strlen" | "exists" | "touch" | "type" | "watch", _) => RO,
        ("setrange" | "expire" | "pexpire" | "expireat" | "pexpireat" | "persist", _) => RW_UPDATE,
        ("getdel" | "delex", _) => RW_ACCESS_DELETE,
        ("del" | "unlink", _) => RM_DELETE,
        ("rename" | "renamenx", 0) => RW_ACCESS_DELETE,
        ("rename", _) | ("copy", 1) => OW_UPDATE,
        ("renamenx", _) => OW_INSERT,
        (
            "getset" | "getex" | "incr" | "incrby" | "decr" | "decrby" | "incrbyfloat" | "setbit" | "move" | "eval"
            | "evalsha",
            _,
        ) => RW_ACCESS_UPDATE,
        _ => RO_ACCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    fn keys_of(a: &[&str]) -> Reply {
        command(&args(&[&["getkeys"], a].concat()))
    }

    #[test]
    fn getkeys_like_redis() {
        let bulks = |ks: &[&str]| Reply::Array(ks.iter().map(|k| Reply::bulk(k.to_string())).collect());
        assert_eq!(keys_of(&["mset", "a", "1", "b"]), bulks(&["a", "b"]));
        assert_eq!(keys_of(&["GET", "k"]), bulks(&["k"]));
        assert_eq!(keys_of(&["eval", "s", "2", "a", "b", "c"]), bulks(&["a", "b"]));
        assert_eq!(keys_of(&["eval", "s", "3", "a"]), bulks(&[]));
        assert_eq!(keys_of(&["eval", "s", "x"]), bulks(&[]));
        assert_eq!(keys_of(&["msetex", "2", "a", "1", "b", "2", "ex", "5"]), bulks(&["a", "b"]));
        assert_eq!(keys_of(&["foo", "a"]), Reply::error("ERR Invalid command specified"));
        assert_eq!(keys_of(&["ping", "a"]), Reply::error("ERR The command has no key arguments"));
        assert_eq!(keys_of(&["get", "a", "b"]), Reply::error("ERR Invalid number of arguments specified for command"));
        assert_eq!(
            command(&args(&["getkeys", "get"])),
            Reply::error("ERR Invalid number of arguments specified for command")
        );
        assert_eq!(
            command(&args(&["getkeys"])),
            Reply::error("ERR wrong number of arguments for 'command|getkeys' command")
        );
        let flagged = |k: &str, f: &[&'static str]| {
            Reply::Array(vec![Reply::Array(vec![
                Reply::bulk(k.to_string()),
                Reply::Set(f.iter().map(|x| Reply::Status(x)).collect()),
            ])])
        };
        assert_eq!(command(&args(&["getkeysandflags", "set", "a", "b"])), flagged("a", &["OW", "update"]));
        assert_eq!(
            command(&args(&["getkeysandflags", "set", "a", "b", "get"])),
            flagged("a", &["RW", "access", "update"])
        );
        assert_eq!(command(&args(&["getkeysandflags", "get", "a"])), flagged("a", &["RO", "access"]));
    }

    #[test]
    fn list_with_filters() {
        let Reply::Array(all) = command(&args(&["list"])) else { panic!() };
        assert!(all.contains(&Reply::text("get")) && all.contains(&Reply::text("client|list")));
        assert_eq!(all.len(), full_names().count());
        let Reply::Array(by_cat) = command(&args(&["list", "filterby", "aclcat", "STRING"])) else { panic!() };
        assert!(by_cat.contains(&Reply::text("get")) && !by_cat.contains(&Reply::text("del")));
        let Reply::Array(by_pattern) = command(&args(&["list", "filterby", "pattern", "CL*"])) else { panic!() };
        assert!(by_pattern.iter().all(|r| matches!(r, Reply::Bulk(b) if b.starts_with(b"cl"))), "{by_pattern:?}");
        assert!(by_pattern.contains(&Reply::text("client|pause")));
        assert_eq!(command(&args(&["list", "filterby", "aclcat", "nope"])), Reply::Array(vec![]));
        assert_eq!(command(&args(&["list", "filterby", "module", "json"])), Reply::Array(vec![]));
        assert_eq!(command(&args(&["list", "foo"])), super::super::syntax_error());
        assert_eq!(command(&args(&["list", "filterby", "pattern"])), super::super::syntax_error());
    }
}
