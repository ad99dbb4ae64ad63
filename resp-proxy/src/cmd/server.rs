//! INFO CONFIG TIME CLIENT LIST/KILL/PAUSE/TRACKING WAIT FUNCTION OBJECT HELP SLOWLOG LATENCY MEMORY
//! CLUSTER: what client libraries, redis-cli, redis-benchmark, failover tooling and the Redis test
//! harness ask a server about itself.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::connection::REDIS_VERSION;
use super::latency::LatencyMonitor;
use super::pattern;
use super::slowlog::SlowLog;
use super::{int_arg, shown, syntax_error};
use crate::clients::KillFilter;
use crate::limits::ClientLimits;
use crate::resp::Reply;
use crate::session::{Session, Shared};

pub fn run(shared: &Shared, session: &mut Session, name: &str, a: &[Bytes]) -> Option<Reply> {
    Some(match name {
        "command" => super::command::command(a),
        "info" => Reply::Verbatim(info(shared, a, None)),
        "slowlog" => shared.slowlog.command(a),
        "latency" => shared.latency.command(a),
        "memory" if !super::memory::is_usage(a) => super::memory::command(a),
        "cluster" | "readonly" | "readwrite" | "asking" => return super::cluster::run(name, a),
        "config" => config(shared, a),
        "acl" => super::acl::run(shared, session, a),
        "client" => client(shared, session, a),
        "wait" => wait(shared, a),
        "function" => function(a),
        "script" => super::scripts::script(a),
        "object" if a[0].eq_ignore_ascii_case(b"help") => object_help(),
        "vesta.repl" => vesta_repl(shared, a),
        "time" => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Reply::Array(vec![Reply::text(&now.as_secs().to_string()), Reply::text(&now.subsec_micros().to_string())])
        }
        _ => return None,
    })
}

/// `VESTA.REPL STATUS | PAUSE [peer] | RESUME [peer] | SYNC [peer]`: the cross-site replication this proxy
/// runs.
fn vesta_repl(shared: &Shared, a: &[Bytes]) -> Reply {
    let Some(report) = shared.replication.get() else {
        return Reply::error("ERR this proxy runs no cross-site replication (see [replication] in proxy.toml)");
    };
    let peer = a.get(1).map(|p| String::from_utf8_lossy(p).into_owned());
    let sub = a[0].to_ascii_lowercase();
    match (sub.as_slice(), a.len()) {
        (b"status", 1) => {
            Reply::Array(report.info_fields().into_iter().map(|(f, v)| Reply::text(&format!("{f}:{v}"))).collect())
        }
        (b"pause" | b"resume" | b"sync", 1 | 2) => {
            let done = match sub.as_slice() {
                b"sync" => report.request_full_sync(peer.as_deref()),
                s => report.set_paused(peer.as_deref(), s == b"pause"),
            };
            match done {
                Ok(0) => Reply::error("ERR this proxy ships to no such peer site"),
                Ok(n) => Reply::Int(n as i64),
                Err(e) => Reply::error(format!("ERR {e}")),
            }
        }
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try STATUS, PAUSE [peer], RESUME [peer], SYNC [peer]",
            shown(&a[0])
        )),
    }
}

/// The configuration parameters clients, tools and the Redis test harness read or set, with values that
/// describe Vesta. CONFIG SET stores a new value for any of them (so a harness can set and restore it)
/// but changes Vesta's behaviour for none: Vesta is configured by its own files. The exceptions,
/// `proto-max-bulk-len` and `client-query-buffer-limit` (the proxy's [`crate::limits`]) and `timeout`,
/// `client-output-buffer-limit` and `maxclients` (its [`crate::edge`]), are validated as Redis validates
/// them and in force at once.
const PARAMETERS: &[(&str, &str)] = &[
    ("appendonly", "no"),
    ("appendfsync", "everysec"),
    ("save", ""),
    ("databases", "16"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("cluster-enabled", "no"),
    ("bind", "127.0.0.1"),
    ("lazyfree-lazy-user-del", "no"),
    ("lazyfree-lazy-user-flush", "no"),
    ("notify-keyspace-events", ""),
    ("latency-tracking", "no"),
    ("busy-reply-threshold", "5000"),
    ("lua-time-limit", "5000"),
    ("active-expire-enabled", "yes"),
    ("hz", "10"),
    ("loglevel", "notice"),
    ("list-max-listpack-size", "-2"),
    ("set-max-intset-entries", "512"),
    ("hash-max-listpack-entries", "128"),
    ("hash-max-ziplist-entries", "128"),
    ("zset-max-listpack-entries", "128"),
    ("zset-max-ziplist-entries", "128"),
];

pub fn default_config(port: u16) -> BTreeMap<String, String> {
    let mut c: BTreeMap<String, String> = PARAMETERS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    c.insert("port".into(), port.to_string());
    c
}

fn config(shared: &Shared, a: &[Bytes]) -> Reply {
    let sub = a[0].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" if a.len() >= 2 => {
            let mut config = shared.config.lock().clone();
            config.extend(shared.limits.settings().map(|(k, v)| (k.to_string(), v)));
            config.extend(shared.edge.settings().map(|(k, v)| (k.to_string(), v)));
            config.extend(shared.slowlog.settings().map(|(k, v)| (k.to_string(), v)));
            let (k, v) = shared.latency.setting();
            config.insert(k.to_string(), v);
            let pairs = config
                .iter()
                .filter(|(k, _)| a[1..].iter().any(|p| pattern::matches(&p.to_ascii_lowercase(), k.as_bytes())))
                .map(|(k, v)| (Reply::text(k), Reply::text(v)))
                .collect();
            Reply::Map(pairs)
        }
        b"set" if a.len() >= 3 && a.len() % 2 == 1 => {
            let mut config = shared.config.lock();
            let mut changes = Vec::new();
            let mut limits = Vec::new();
            let mut edge = Vec::new();
            let mut monitors = Vec::new();
            // Like Redis: every name is checked before any value, and nothing changes unless all do.
            for pair in a[1..].chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                if let Some(value) = ClientLimits::parse_setting(&name, &pair[1]) {
                    limits.push((name, value));
                } else if let Some(value) =
                    SlowLog::parse_setting(&name, &pair[1]).or_else(|| LatencyMonitor::parse_setting(&name, &pair[1]))
                {
                    monitors.push((name, value));
                } else if let Some(value) = shared.edge.parse_setting(&name, &pair[1]) {
                    edge.push((name, value));
                } else if !config.contains_key(&name) || name == "port" || name == "databases" {
                    return Reply::error(format!(
                        "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                        shown(&pair[0])
                    ));
                } else {
                    changes.push((name, String::from_utf8_lossy(&pair[1]).into_owned()));
                }
            }
            let refused = |name: &str, why: &str| {
                Reply::error(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"))
            };
            let mut accepted = Vec::new();
            for (name, value) in limits {
                match value {
                    Ok(v) => accepted.push((name, v)),
                    Err(why) => return refused(&name, &why),
                }
            }
            let mut accepted_edge = Vec::new();
            for (name, value) in edge {
                match value {
                    Ok(v) => accepted_edge.push(v),
                    Err(why) => return refused(&name, &why),
                }
            }
            let mut accepted_monitors = Vec::new();
            for (name, value) in monitors {
                match value {
                    Ok(v) => accepted_monitors.push((name, v)),
                    Err(why) => return refused(&name, &why),
                }
            }
            for (name, value) in accepted {
                shared.limits.set(&name, value);
            }
            for (name, value) in accepted_monitors {
                if name == "latency-monitor-threshold" {
                    shared.latency.set_threshold(value);
                } else {
                    shared.slowlog.set(&name, value);
                }
            }
            for setting in accepted_edge {
                shared.edge.set(setting);
            }
            config.extend(changes);
            Reply::OK
        }
        b"resetstat" if a.len() == 1 => {
            shared.reset_stats();
            Reply::OK
        }
        b"rewrite" if a.len() == 1 => Reply::error("ERR The server is running without a config file"),
        b"get" | b"set" | b"resetstat" | b"rewrite" => {
            super::wrong_arity(&format!("config|{}", String::from_utf8_lossy(&sub)))
        }
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", shown(&a[0]))),
    }
}

/// CLIENT LIST [ID id …] and CLIENT KILL (the old `addr` form and the filter form).
fn client(shared: &Shared, session: &mut Session, a: &[Bytes]) -> Reply {
    let sub = a[0].to_ascii_lowercase();
    let rest = &a[1..];
    match (sub.as_slice(), rest.len()) {
        (b"pause", 0) => return super::wrong_arity("client|pause"),
        (b"pause", 1 | 2) => {
            return match super::pause::parse(rest) {
                Ok(request) => {
                    shared.pause.pause(&request);
                    Reply::OK
                }
                Err(e) => e,
            }
        }
        (b"pause", _) => return super::subcommand_syntax_error("client", &a[0]),
        (b"unpause", 0) => {
            shared.pause.unpause();
            return Reply::OK;
        }
        (b"unpause", _) => return super::wrong_arity("client|unpause"),
        (b"tracking", 0) => return super::wrong_arity("client|tracking"),
        (b"tracking", _) => {
            return match super::tracking::parse(rest, |id| shared.clients.exists(id)) {
                Ok(request) => super::tracking::apply(&mut session.tracking, request),
                Err(e) => e,
            }
        }
        _ => {}
    }
    if sub.as_slice() == b"list" {
        return match rest {
            [] => Reply::Verbatim(shared.clients.list(None)),
            [t, ty] if t.eq_ignore_ascii_case(b"type") => {
                if ty.eq_ignore_ascii_case(b"normal") {
                    Reply::Verbatim(shared.clients.list(None))
                } else {
                    Reply::Verbatim(String::new())
                }
            }
            [id, ids @ ..] if id.eq_ignore_ascii_case(b"id") && !ids.is_empty() => {
                let mut list = Vec::new();
                for i in ids {
                    match super::parse_i64(i) {
                        Some(n) if n > 0 => list.push(n as u64),
                        _ => return Reply::error("ERR Invalid client ID"),
                    }
                }
                Reply::Verbatim(shared.clients.list(Some(&list)))
            }
            _ => syntax_error(),
        };
    }
    // CLIENT KILL
    match rest {
        [] => super::wrong_arity("client|kill"),
        [addr] => {
            let filter = KillFilter { addr: Some(String::from_utf8_lossy(addr).into_owned()), ..Default::default() };
            if shared.clients.kill(&filter) == 0 {
                Reply::error("ERR No such client")
            } else {
                Reply::OK
            }
        }
        _ if rest.len() % 2 == 1 => syntax_error(),
        _ => {
            let mut filter = KillFilter { skip: Some(session.id), ..Default::default() };
            for pair in rest.chunks(2) {
                let value = String::from_utf8_lossy(&pair[1]).into_owned();
                match pair[0].to_ascii_lowercase().as_slice() {
                    b"id" => match super::parse_i64(&pair[1]) {
                        Some(n) if n > 0 => filter.id = Some(n as u64),
                        _ => return Reply::error("ERR client-id should be greater than 0"),
                    },
                    b"addr" => filter.addr = Some(value),
                    b"laddr" => filter.laddr = Some(value),
                    b"skipme" => match value.to_ascii_lowercase().as_str() {
                        "yes" => filter.skip = Some(session.id),
                        "no" => filter.skip = None,
                        _ => return syntax_error(),
                    },
                    // Every Vesta client is a normal client of the default user.
                    b"type" => match value.to_ascii_lowercase().as_str() {
                        "normal" => {}
                        "master" | "replica" | "slave" | "pubsub" => filter.nobody = true,
                        _ => return Reply::error(format!("ERR Unknown client type '{value}'")),
                    },
                    b"user" => filter.nobody |= value != "default",
                    b"maxage" => match super::parse_i64(&pair[1]) {
                        Some(n) => filter.max_age = Some(n.max(0) as u64),
                        None => return syntax_error(),
                    },
                    _ => return syntax_error(),
                }
            }
            Reply::Int(shared.clients.kill(&filter) as i64)
        }
    }
}

/// WAIT: every write Vesta acknowledged is already on a write quorum of store replicas, so the answer
/// is W at once, whatever was asked.
fn wait(shared: &Shared, a: &[Bytes]) -> Reply {
    if let Err(e) = int_arg(&a[0]) {
        return e;
    }
    match super::parse_i64(&a[1]) {
        None => Reply::error("ERR timeout is not an integer or out of range"),
        Some(t) if t < 0 => Reply::error("ERR timeout is negative"),
        Some(_) => Reply::Int(shared.write_quorum as i64),
    }
}

/// FUNCTION: Vesta runs no functions. FLUSH (which test harnesses send) succeeds on the empty library;
/// LIST answers it.
fn function(a: &[Bytes]) -> Reply {
    let sub = a[0].to_ascii_lowercase();
    match (sub.as_slice(), &a[1..]) {
        (b"flush", []) => Reply::OK,
        (b"flush", [mode]) if mode.eq_ignore_ascii_case(b"async") || mode.eq_ignore_ascii_case(b"sync") => Reply::OK,
        (b"flush", [_]) => Reply::error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option"),
        (b"list", _) => Reply::Array(vec![]),
        (b"flush", _) => super::wrong_arity("function|flush"),
        _ => Reply::error(format!("ERR unknown subcommand '{}'. Try FUNCTION HELP.", shown(&a[0]))),
    }
}

fn object_help() -> Reply {
    let lines = [
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "FREQ <key>",
        "    Return the access frequency index of the <key>. The returned integer is",
        "    proportional to the logarithm of the recent access frequency of the key.",
        "IDLETIME <key>",
        "    Return the idle time of the <key>, that is the approximated number of",
        "    seconds elapsed since the last access to the key.",
        "REFCOUNT <key>",
        "    Return the number of references of the value associated with the specified",
        "    <key>.",
        "HELP",
        "    Print this help.",
    ];
    Reply::Array(lines.iter().map(|l| Reply::Status(l)).collect())
}

/// INFO's sections, in Redis's order; `true`: part of `INFO` / `INFO default`.
const SECTIONS: &[(&str, bool)] = &[
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("persistence", true),
    ("stats", true),
    ("replication", true),
    ("cpu", true),
    ("commandstats", false),
    ("cluster", true),
    ("encryption", true),
    ("keyspace", true),
];

/// Whether INFO with these arguments shows the keyspace section (which may need a walk of the shards).
pub fn info_wants_keyspace(a: &[Bytes]) -> bool {
    a.is_empty()
        || a.iter()
            .any(|x| ["keyspace", "default", "all", "everything"].iter().any(|w| x.eq_ignore_ascii_case(w.as_bytes())))
}

/// INFO's text; `keyspace`: the keyspace section, when the caller walked the shards for it (else the
/// cached figures, or an empty section).
pub fn info(shared: &Shared, a: &[Bytes], keyspace: Option<String>) -> String {
    let wanted: Vec<String> = a.iter().map(|x| String::from_utf8_lossy(x).to_ascii_lowercase()).collect();
    let every = wanted.iter().any(|w| w == "all" || w == "everything");
    let defaults = wanted.is_empty() || wanted.iter().any(|w| w == "default");
    let want = |section: &str, default: bool| every || (defaults && default) || wanted.iter().any(|w| w == section);
    let mut out = String::new();
    let mut keyspace = keyspace;
    for &(section, default) in SECTIONS {
        if !want(section, default) {
            continue;
        }
        if section == "keyspace" {
            out +=
                &keyspace.take().or_else(|| shared.keyspace_figures.fresh()).unwrap_or_else(|| "# Keyspace\r\n".into());
        } else {
            out += &info_section(shared, section);
        }
    }
    out
}

fn info_section(shared: &Shared, section: &str) -> String {
    let uptime = shared.started.elapsed().as_secs();
    match section {
        "server" => format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nvesta_version:{}\r\nos:{}\r\n\
             arch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
             uptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.run_id,
            shared.port,
            uptime / 86_400
        ),
        "clients" => format!(
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            shared.connected_clients.load(Ordering::Relaxed),
            shared.edge.max_clients(),
            // Clients held by CLIENT PAUSE, which Redis counts as blocked (no command blocks otherwise).
            shared.pause.held_clients()
        ),
        "memory" => {
            // The proxy's own memory (the data lives on the store nodes).
            let rss = process_rss_bytes();
            format!(
                "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\n\
                 maxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n",
                rss as f64 / (1024.0 * 1024.0)
            )
        }
        "persistence" => {
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_bgsave_in_progress:0\r\naof_enabled:0\r\n\r\n".into()
        }
        "stats" => {
            // TLS handshakes of this process, every hop (client port, store nodes, replication).
            let tls = vesta_tls::HandshakeStats::now();
            let (running, waiting) = shared.admission.load();
            format!(
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n\
                 client_query_buffer_limit_disconnections:{}\r\nclient_output_buffer_limit_disconnections:{}\r\n\
                 vesta_commands_in_flight:{running}\r\nvesta_surge_queue_length:{waiting}\r\n\
                 vesta_overload_refused_commands:{}\r\nacl_access_denied_auth:{}\r\n\
                 acl_access_denied_cmd:{}\r\nacl_access_denied_key:{}\r\nacl_access_denied_channel:0\r\n\
                 acl_access_denied_db:{}\r\ntls_handshakes_ok:{}\r\ntls_handshakes_failed:{}\r\n\r\n",
                shared.total_connections.load(Ordering::Relaxed),
                shared.total_commands.load(Ordering::Relaxed),
                shared.rejected_connections.load(Ordering::Relaxed),
                shared.query_buffer_disconnections.load(Ordering::Relaxed),
                shared.output_buffer_disconnections.load(Ordering::Relaxed),
                shared.admission.refused(),
                shared.acl.denied.auth.load(Ordering::Relaxed),
                shared.acl.denied.cmd.load(Ordering::Relaxed),
                shared.acl.denied.key.load(Ordering::Relaxed),
                shared.acl.denied.db.load(Ordering::Relaxed),
                tls.ok,
                tls.failed,
            )
        }
        // Replication between store replicas is Vesta's own (quorum commits), not Redis's; every site is
        // writable, so to a Redis client each proxy is a master. Cross-site replication adds its fields.
        "replication" => {
            let mut text =
                String::from("# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n");
            if let Some(report) = shared.replication.get() {
                for (field, value) in report.info_fields() {
                    text.push_str(&format!("{field}:{value}\r\n"));
                }
            }
            text.push_str("\r\n");
            text
        }
        "cpu" => {
            let (user, sys) = process_cpu_seconds();
            format!(
                "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\n\
                 used_cpu_user_children:0.000000\r\n\r\n"
            )
        }
        "commandstats" => {
            let mut out = String::from("# Commandstats\r\n");
            for (name, calls, rejected) in shared.command_stats() {
                out += &format!(
                    "cmdstat_{name}:calls={calls},usec=0,usec_per_call=0.00,rejected_calls={rejected},failed_calls=0\r\n"
                );
            }
            out + "\r\n"
        }
        "cluster" => {
            let (version, down) = shared.map_view.read().clone();
            format!(
                "# Cluster\r\ncluster_enabled:0\r\nvesta_zones:{}\r\nvesta_write_quorum:{}\r\nvesta_read_quorum:{}\r\n\
                 vesta_map_version:{version}\r\nvesta_zones_down:{}\r\n\r\n",
                shared.zones,
                shared.write_quorum,
                shared.read_quorum,
                down.join(",")
            )
        }
        "encryption" => {
            let mut text = String::from("# Encryption\r\n");
            for (field, value) in shared.encryption.info_fields() {
                text.push_str(&format!("{field}:{value}\r\n"));
            }
            text + "\r\n"
        }
        _ => String::new(),
    }
}

/// This process's resident memory, from /proc (0 where there is none).
fn process_rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// This process's (user, system) CPU seconds, from /proc (clock ticks of 1/100 s).
fn process_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let field = |i: usize| rest.split_whitespace().nth(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) / 100.0, field(12) / 100.0)
}
