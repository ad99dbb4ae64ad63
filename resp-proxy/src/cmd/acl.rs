//! ACL WHOAMI LIST USERS GETUSER CAT LOG GENPASS HELP. Users come from `proxy.toml` (`[acl] users`,
//! `requirepass`) and are the same on every proxy of a cluster only if their files are: ACL SETUSER,
//! DELUSER, LOAD and SAVE are refused, since a change made on one proxy would not reach the others.

use bytes::Bytes;

use super::{int_arg, shown, wrong_arity};
use crate::acl::{categories, User};
use crate::resp::Reply;
use crate::session::{Session, Shared};

const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Print this help.",
    "(Vesta: users are set in proxy.toml; SETUSER, DELUSER, LOAD and SAVE are not supported.)",
];

pub fn run(shared: &Shared, s: &Session, a: &[Bytes]) -> Reply {
    let acl = &shared.acl;
    let sub = a[0].to_ascii_lowercase();
    let rest = &a[1..];
    match (sub.as_slice(), rest) {
        (b"whoami", []) => Reply::bulk(s.user.name.clone()),
        (b"users", []) => Reply::Array(acl.users().map(|u| Reply::bulk(u.name.clone())).collect()),
        (b"list", []) => Reply::Array(acl.users().map(|u| Reply::bulk(u.describe())).collect()),
        (b"getuser", [name]) => acl.user(&String::from_utf8_lossy(name)).map_or(Reply::Nil, |u| getuser(u)),
        (b"cat", []) => Reply::Array(categories::ALL.iter().map(|c| Reply::text(c)).collect()),
        (b"cat", [cat]) => {
            let cat = String::from_utf8_lossy(cat).to_ascii_lowercase();
            if !categories::ALL.contains(&cat.as_str()) {
                return Reply::error(format!("ERR Unknown category '{}'", shown(rest[0].as_ref())));
            }
            Reply::Array(categories::commands_in(&cat).map(Reply::text).collect())
        }
        (b"log", []) => acl.log.reply(None),
        (b"log", [arg]) if arg.eq_ignore_ascii_case(b"reset") => {
            acl.log.reset();
            Reply::OK
        }
        (b"log", [count]) => match int_arg(count) {
            Ok(n) if n >= 0 => acl.log.reply(Some(n as usize)),
            Ok(_) => Reply::error("ERR value is out of range, must be positive"),
            Err(e) => e,
        },
        (b"genpass", []) => genpass(256),
        (b"genpass", [bits]) => match int_arg(bits) {
            Ok(n) if (1..=4096).contains(&n) => genpass(n as usize),
            _ => Reply::error("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096"),
        },
        (b"help", []) => Reply::Array(HELP.iter().map(|l| Reply::text(l)).collect()),
        (b"setuser" | b"deluser" | b"load" | b"save" | b"dryrun", _) => Reply::error(format!(
            "ERR ACL {} is not supported by Vesta: users are set in proxy.toml (requirepass, [acl] users) on every \
             proxy and read at start",
            String::from_utf8_lossy(&sub).to_ascii_uppercase()
        )),
        (b"whoami" | b"users" | b"list" | b"getuser" | b"cat" | b"log" | b"genpass" | b"help", _) => {
            wrong_arity(&format!("acl|{}", String::from_utf8_lossy(&sub)))
        }
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try ACL HELP.", shown(&a[0]))),
    }
}

/// ACL GETUSER, as Redis 7 answers it, plus Vesta's `databases`.
fn getuser(u: &User) -> Reply {
    let mut flags = vec![Reply::text(if u.enabled { "on" } else { "off" })];
    if u.nopass {
        flags.push(Reply::text("nopass"));
    }
    Reply::Map(vec![
        (Reply::text("flags"), Reply::Array(flags)),
        (Reply::text("passwords"), Reply::Array(u.password_hashes().iter().map(|h| Reply::text(h)).collect())),
        (Reply::text("commands"), Reply::text(&u.command_rules())),
        (Reply::text("keys"), Reply::text(if u.all_keys { "~*" } else { "" })),
        (Reply::text("channels"), Reply::text(if u.all_channels { "&*" } else { "" })),
        (Reply::text("databases"), Reply::text(&u.dbs_rule())),
        (Reply::text("selectors"), Reply::Array(vec![])),
    ])
}

/// Random hex from the OS-seeded generator, `bits` rounded up to whole hex digits, as Redis does.
fn genpass(bits: usize) -> Reply {
    let digits = bits.div_ceil(4);
    let text: String = (0..digits).map(|_| format!("{:x}", rand::random::<u8>() & 0x0f)).collect();
    Reply::bulk(text)
}
