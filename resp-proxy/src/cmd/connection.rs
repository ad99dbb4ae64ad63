//! PING ECHO HELLO AUTH SELECT QUIT RESET CLIENT: commands about the connection itself. They run in
//! order on the connection (a SELECT applies to exactly the commands after it).

use bytes::Bytes;

use super::{int_arg, shown, tracking, wrong_arity};
use crate::acl::{Acl, DB_DENIED};
use crate::resp::Reply;
use crate::session::{ReplyMode, Session};

/// Databases `SELECT` accepts, as Redis's default `databases 16`.
pub const DATABASES: u32 = 16;
/// The Redis version Vesta answers as (commands follow Redis 7 semantics).
pub const REDIS_VERSION: &str = "7.2.0";

pub enum After {
    Continue,
    /// Send the reply, then close (QUIT).
    Close,
}

/// Runs a connection command; `None` when `name` is not one.
pub fn run(s: &mut Session, acl: &Acl, name: &str, a: &[Bytes]) -> Option<(Reply, After)> {
    let reply = match name {
        "ping" => match a {
            [] => Reply::Status("PONG"),
            [msg] => Reply::Bulk(msg.clone()),
            _ => wrong_arity("ping"),
        },
        "echo" => Reply::Bulk(a[0].clone()),
        "quit" => return Some((Reply::OK, After::Close)),
        "reset" => {
            s.reset();
            acl.start_session(s);
            Reply::Status("RESET")
        }
        "select" => match int_arg(&a[0]) {
            Err(e) => e,
            Ok(db) if db < 0 || db >= DATABASES as i64 => Reply::error("ERR DB index is out of range"),
            // `Acl::check` refused it already; checked again here for SELECTs queued in a transaction.
            Ok(db) if !s.user.may_use_db(db as u32) => Reply::error(DB_DENIED),
            Ok(db) => {
                s.select(db as u32);
                Reply::OK
            }
        },
        "auth" => auth(s, acl, a),
        "hello" => hello(s, acl, a),
        // CLIENT LIST, KILL, PAUSE, UNPAUSE and TRACKING look at other connections or the proxy's state:
        // the server family answers them.
        "client" if is_registry_subcommand(&a[0]) => return None,
        "client" => client(s, a),
        _ => return None,
    };
    Some((reply, After::Continue))
}

/// `AUTH password` (as the default user, Redis's requirepass form) or `AUTH username password`.
fn auth(s: &mut Session, acl: &Acl, a: &[Bytes]) -> Reply {
    let (user, password) = match a {
        [_] if acl.default_user().nopass => {
            return Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        }
        [password] => (&b"default"[..], password),
        [user, password] => (user.as_ref(), password),
        _ => return Reply::error("ERR syntax error"),
    };
    match acl.authenticate(s, user, password) {
        Ok(()) => Reply::OK,
        Err(e) => e,
    }
}

fn hello(s: &mut Session, acl: &Acl, a: &[Bytes]) -> Reply {
    let mut resp3 = s.resp3;
    if let Some(v) = a.first() {
        match super::parse_i64(v) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => return Reply::error("NOPROTO unsupported protocol version"),
            None => return Reply::error("ERR Protocol version is not an integer or out of range"),
        }
    }
    let mut i = 1;
    let mut name = None;
    while i < a.len() {
        let more = a.len() - i - 1;
        match a[i].to_ascii_uppercase().as_slice() {
            b"AUTH" if more >= 2 => {
                if let Reply::Error(e) = auth(s, acl, &a[i + 1..i + 3]) {
                    return Reply::Error(e);
                }
                i += 3;
            }
            b"SETNAME" if more >= 1 => {
                if !valid_name(&a[i + 1]) {
                    return Reply::error("ERR Client names cannot contain spaces, newlines or special characters.");
                }
                name = Some(a[i + 1].clone());
                i += 2;
            }
            _ => return Reply::error(format!("ERR Syntax error in HELLO option '{}'", shown(&a[i]))),
        }
    }
    if !s.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH \
             <user> <pass> option can be used to authenticate the client and select the RESP protocol version at \
             the same time",
        );
    }
    s.resp3 = resp3;
    if let Some(n) = name {
        s.name = (!n.is_empty()).then_some(n);
    }
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("redis")),
        (Reply::text("version"), Reply::text(REDIS_VERSION)),
        (Reply::text("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
        (Reply::text("id"), Reply::Int(s.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(vec![])),
    ])
}

pub fn is_registry_subcommand(sub: &[u8]) -> bool {
    ["list", "kill", "pause", "unpause", "tracking"].iter().any(|s| sub.eq_ignore_ascii_case(s.as_bytes()))
}

/// Redis's rule for client names and library info: printable ASCII without spaces.
fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn client(s: &mut Session, a: &[Bytes]) -> Reply {
    let sub = a[0].to_ascii_lowercase();
    let rest = &a[1..];
    match (sub.as_slice(), rest) {
        (b"id", []) => Reply::Int(s.id as i64),
        (b"getname", []) => s.name.clone().map_or(Reply::Nil, Reply::Bulk),
        (b"setname", [name]) => {
            if !valid_name(name) {
                return Reply::error("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            s.name = (!name.is_empty()).then(|| name.clone());
            Reply::OK
        }
        (b"setinfo", [attr, value]) => {
            if !valid_name(value) {
                let what = if attr.eq_ignore_ascii_case(b"lib-name") { "lib-name" } else { "lib-ver" };
                return Reply::error(format!("ERR {what} cannot contain spaces, newlines or special characters."));
            }
            match attr.to_ascii_lowercase().as_slice() {
                b"lib-name" => s.lib_name = Some(value.clone()),
                b"lib-ver" => s.lib_ver = Some(value.clone()),
                _ => return Reply::error(format!("ERR Unrecognized option '{}'", shown(attr))),
            }
            Reply::OK
        }
        (b"info", []) => Reply::Verbatim(s.client_info("client|info")),
        (b"reply", [mode]) => match mode.to_ascii_lowercase().as_slice() {
            b"on" => {
                s.reply_mode = ReplyMode::On;
                Reply::OK
            }
            b"off" => {
                s.reply_mode = ReplyMode::Off;
                Reply::NoReply
            }
            b"skip" => {
                if s.reply_mode == ReplyMode::On {
                    s.reply_mode = ReplyMode::Skip;
                }
                Reply::NoReply
            }
            _ => Reply::error("ERR syntax error"),
        },
        // Nothing is evicted and access times are not kept: both switches are accepted and change nothing.
        (b"no-evict" | b"no-touch", [flag]) => {
            if flag.eq_ignore_ascii_case(b"on") || flag.eq_ignore_ascii_case(b"off") {
                Reply::OK
            } else {
                Reply::error("ERR syntax error")
            }
        }
        (b"trackinginfo", []) => tracking::info(&s.tracking),
        (b"getredir", []) => tracking::getredir(&s.tracking),
        (b"caching", [opt]) => tracking::caching(&mut s.tracking, opt),
        // No Vesta command ever blocks, so there is never a client to unblock: 0, after Redis's checks.
        (b"unblock", [id, reason @ ..]) if reason.len() <= 1 => {
            if reason.first().is_some_and(|r| !r.eq_ignore_ascii_case(b"timeout") && !r.eq_ignore_ascii_case(b"error"))
            {
                return Reply::error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
            }
            match int_arg(id) {
                Ok(_) => Reply::Int(0),
                Err(e) => e,
            }
        }
        (b"unblock", [_, ..]) => super::subcommand_syntax_error("client", &a[0]),
        (b"help", []) => super::help("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", HELP),
        (
            b"id" | b"getname" | b"setname" | b"setinfo" | b"info" | b"reply" | b"no-evict" | b"no-touch"
            | b"trackinginfo" | b"getredir" | b"caching" | b"unblock" | b"help",
            _,
        ) => wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub))),
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", shown(&a[0]))),
    }
}

/// CLIENT HELP, Redis 7.2's text.
const HELP: &[&str] = &[
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
];
