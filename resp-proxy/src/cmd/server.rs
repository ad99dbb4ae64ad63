//! COMMAND INFO CONFIG TIME: what client libraries, redis-cli and redis-benchmark ask a server about itself.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::connection::REDIS_VERSION;
use super::{shown, Spec, TABLE};
use crate::resp::Reply;
use crate::session::Shared;

pub fn run(shared: &Shared, name: &str, a: &[Bytes]) -> Option<Reply> {
    Some(match name {
        "command" => command(a),
        "info" => Reply::Verbatim(info(shared, a)),
        "config" => config(a),
        "time" => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Reply::Array(vec![Reply::text(&now.as_secs().to_string()), Reply::text(&now.subsec_micros().to_string())])
        }
        _ => return None,
    })
}

fn spec_reply(s: &Spec) -> Reply {
    let flags = s.flags.iter().map(|f| Reply::Status(f)).collect();
    let category = Reply::Status(match s.group {
        "string" => "@string",
        "generic" => "@keyspace",
        "connection" => "@connection",
        _ => "@admin",
    });
    Reply::Array(vec![
        Reply::text(s.name),
        Reply::Int(s.arity),
        Reply::Set(flags),
        Reply::Int(s.keys.0),
        Reply::Int(s.keys.1),
        Reply::Int(s.keys.2),
        Reply::Set(vec![category]),
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

fn command(a: &[Bytes]) -> Reply {
    let Some(sub) = a.first() else { return Reply::Array(TABLE.iter().map(spec_reply).collect()) };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" if a.len() == 1 => Reply::Int(TABLE.len() as i64),
        b"info" => {
            let names: Vec<&Bytes> = a[1..].iter().collect();
            if names.is_empty() {
                return Reply::Array(TABLE.iter().map(spec_reply).collect());
            }
            Reply::Array(
                names
                    .iter()
                    .map(|n| {
                        let lower = String::from_utf8_lossy(n).to_ascii_lowercase();
                        super::spec(&lower).map_or(Reply::Nil, spec_reply)
                    })
                    .collect(),
            )
        }
        b"count" => super::wrong_arity("command|count"),
        // Docs for named commands. Without names (what interactive redis-cli asks on connect) the answer
        // is an error, so that redis-cli falls back to its built-in help: its argument hints are better
        // than docs without argument lists would give.
        b"docs" if a.len() > 1 => Reply::Map(
            a[1..]
                .iter()
                .filter_map(|n| super::spec(&String::from_utf8_lossy(n).to_ascii_lowercase()))
                .map(|s| (Reply::text(s.name), docs(s)))
                .collect(),
        ),
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", shown(sub))),
    }
}

/// The configuration parameters clients and tools ask for, with the values that describe Vesta.
const PARAMETERS: &[(&str, &str)] = &[
    ("appendonly", "no"),
    ("save", ""),
    ("databases", "16"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("maxclients", "10000"),
    ("timeout", "0"),
    ("proto-max-bulk-len", "536870912"),
    ("cluster-enabled", "no"),
    ("port", "6379"),
    ("bind", "127.0.0.1"),
];

fn config(a: &[Bytes]) -> Reply {
    let sub = a[0].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" if a.len() >= 2 => {
            let mut pairs = Vec::new();
            for (k, v) in PARAMETERS {
                if a[1..].iter().any(|p| glob_match(&p.to_ascii_lowercase(), k.as_bytes())) {
                    pairs.push((Reply::text(k), Reply::text(v)));
                }
            }
            Reply::Map(pairs)
        }
        b"get" => super::wrong_arity("config|get"),
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", shown(&a[0]))),
    }
}

/// Redis's glob subset: `*`, `?`, literal bytes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&pattern[1..], text) || (!text.is_empty() && glob_match(pattern, &text[1..])),
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

fn info(shared: &Shared, a: &[Bytes]) -> String {
    let wanted: Vec<String> = a.iter().map(|x| String::from_utf8_lossy(x).to_ascii_lowercase()).collect();
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "all" || w == "everything" || w == "default");
    let want = |section: &str| all || wanted.iter().any(|w| w == section);
    let mut out = String::new();
    let uptime = shared.started.elapsed().as_secs();
    if want("server") {
        out += &format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nvesta_version:{}\r\nos:{}\r\n\
             arch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
             uptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.run_id,
            shared.port,
            uptime / 86_400
        );
    }
    if want("clients") {
        out += &format!(
            "# Clients\r\nconnected_clients:{}\r\nblocked_clients:0\r\n\r\n",
            shared.connected_clients.load(Ordering::Relaxed)
        );
    }
    if want("persistence") {
        out += "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_bgsave_in_progress:0\r\naof_enabled:0\r\n\r\n";
    }
    if want("stats") {
        out += &format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n\r\n",
            shared.total_connections.load(Ordering::Relaxed),
            shared.total_commands.load(Ordering::Relaxed),
            shared.rejected_connections.load(Ordering::Relaxed),
        );
    }
    if want("replication") {
        out += "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n";
    }
    if want("cluster") {
        out += &format!(
            "# Cluster\r\ncluster_enabled:0\r\nvesta_zones:{}\r\nvesta_write_quorum:{}\r\nvesta_read_quorum:{}\r\n\r\n",
            shared.zones, shared.write_quorum, shared.read_quorum
        );
    }
    if want("keyspace") {
        // Key counts need a scan of every shard (DBSIZE, a later issue); the section is present and empty.
        out += "# Keyspace\r\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"save"));
        assert!(glob_match(b"sa?e", b"save"));
        assert!(glob_match(b"*only", b"appendonly"));
        assert!(!glob_match(b"save", b"saves"));
    }
}
