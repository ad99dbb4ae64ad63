//! PING ECHO HELLO AUTH SELECT QUIT RESET CLIENT: commands about the connection itself. They run in
//! order on the connection (a SELECT applies to exactly the commands after it).

use bytes::Bytes;

use super::{int_arg, shown, wrong_arity};
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
        // CLIENT LIST and KILL look at other connections: the server family answers them.
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
    sub.eq_ignore_ascii_case(b"list") || sub.eq_ignore_ascii_case(b"kill")
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
        (b"id" | b"getname" | b"setname" | b"setinfo" | b"info" | b"reply" | b"no-evict" | b"no-touch", _) => {
            wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub)))
        }
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", shown(&a[0]))),
    }
}
