//! Redis's ACL command categories (`ACL CAT`), per command and per container subcommand, as Redis 7
//! assigns them (copied from `COMMAND INFO` of redis-server 7; Vesta's own commands and the Redis 8
//! string commands follow the same rules: `@write`/`@read` from the flags, `@fast` or `@slow`,
//! `@admin @dangerous` for administration).

/// Every category Redis knows, in `ACL CAT` order.
pub const ALL: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

const STRING_READ_FAST: &[&str] = &["read", "string", "fast"];
const STRING_READ_SLOW: &[&str] = &["read", "string", "slow"];
const STRING_WRITE_FAST: &[&str] = &["write", "string", "fast"];
const STRING_WRITE_SLOW: &[&str] = &["write", "string", "slow"];
const KEYSPACE_READ_FAST: &[&str] = &["keyspace", "read", "fast"];
const KEYSPACE_READ_SLOW: &[&str] = &["keyspace", "read", "slow"];
const KEYSPACE_WRITE_FAST: &[&str] = &["keyspace", "write", "fast"];
const KEYSPACE_WRITE_SLOW: &[&str] = &["keyspace", "write", "slow"];
const KEYSPACE_WRITE_DANGEROUS: &[&str] = &["keyspace", "write", "slow", "dangerous"];
const CONNECTION_FAST: &[&str] = &["fast", "connection"];
const CONNECTION_SLOW: &[&str] = &["slow", "connection"];
const CONNECTION_ADMIN: &[&str] = &["admin", "slow", "dangerous", "connection"];
const TRANSACTION_FAST: &[&str] = &["fast", "transaction"];
const SCRIPTING: &[&str] = &["slow", "scripting"];
const SCRIPTING_WRITE: &[&str] = &["write", "slow", "scripting"];
const ADMIN: &[&str] = &["admin", "slow", "dangerous"];
const SLOW: &[&str] = &["slow"];

/// (full name, categories): top-level commands, and `container|subcommand` for the subcommands Redis
/// gives their own categories. Permissions are kept per full name.
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("get", STRING_READ_FAST),
    ("set", STRING_WRITE_SLOW),
    ("setnx", STRING_WRITE_FAST),
    ("setex", STRING_WRITE_SLOW),
    ("psetex", STRING_WRITE_SLOW),
    ("getset", STRING_WRITE_FAST),
    ("getdel", STRING_WRITE_FAST),
    ("getex", STRING_WRITE_FAST),
    ("mget", STRING_READ_FAST),
    ("mset", STRING_WRITE_SLOW),
    ("append", STRING_WRITE_FAST),
    ("strlen", STRING_READ_FAST),
    ("getrange", STRING_READ_SLOW),
    ("substr", STRING_READ_SLOW),
    ("setrange", STRING_WRITE_SLOW),
    ("incr", STRING_WRITE_FAST),
    ("incrby", STRING_WRITE_FAST),
    ("decr", STRING_WRITE_FAST),
    ("decrby", STRING_WRITE_FAST),
    ("incrbyfloat", STRING_WRITE_FAST),
    ("msetnx", STRING_WRITE_SLOW),
    ("msetex", STRING_WRITE_SLOW),
    ("lcs", STRING_READ_SLOW),
    ("setbit", &["write", "bitmap", "slow"]),
    ("getbit", &["read", "bitmap", "fast"]),
    ("digest", STRING_READ_FAST),
    ("delex", STRING_WRITE_FAST),
    ("del", KEYSPACE_WRITE_SLOW),
    ("unlink", KEYSPACE_WRITE_FAST),
    ("exists", KEYSPACE_READ_FAST),
    ("touch", KEYSPACE_READ_FAST),
    ("type", KEYSPACE_READ_FAST),
    ("expire", KEYSPACE_WRITE_FAST),
    ("pexpire", KEYSPACE_WRITE_FAST),
    ("expireat", KEYSPACE_WRITE_FAST),
    ("pexpireat", KEYSPACE_WRITE_FAST),
    ("persist", KEYSPACE_WRITE_FAST),
    ("ttl", KEYSPACE_READ_FAST),
    ("pttl", KEYSPACE_READ_FAST),
    ("expiretime", KEYSPACE_READ_FAST),
    ("pexpiretime", KEYSPACE_READ_FAST),
    ("rename", KEYSPACE_WRITE_SLOW),
    ("renamenx", KEYSPACE_WRITE_FAST),
    ("copy", KEYSPACE_WRITE_SLOW),
    ("move", KEYSPACE_WRITE_FAST),
    ("dump", KEYSPACE_READ_SLOW),
    ("restore", KEYSPACE_WRITE_DANGEROUS),
    ("object", SLOW),
    ("object|encoding", KEYSPACE_READ_SLOW),
    ("object|freq", KEYSPACE_READ_SLOW),
    ("object|idletime", KEYSPACE_READ_SLOW),
    ("object|refcount", KEYSPACE_READ_SLOW),
    ("object|help", &["keyspace", "slow"]),
    ("randomkey", KEYSPACE_READ_SLOW),
    ("scan", KEYSPACE_READ_SLOW),
    ("keys", &["keyspace", "read", "slow", "dangerous"]),
    ("dbsize", KEYSPACE_READ_FAST),
    ("flushdb", KEYSPACE_WRITE_DANGEROUS),
    ("flushall", KEYSPACE_WRITE_DANGEROUS),
    ("multi", TRANSACTION_FAST),
    ("exec", &["slow", "transaction"]),
    ("discard", TRANSACTION_FAST),
    ("watch", TRANSACTION_FAST),
    ("unwatch", TRANSACTION_FAST),
    ("wait", CONNECTION_SLOW),
    ("eval", SCRIPTING),
    ("evalsha", SCRIPTING),
    ("script", SLOW),
    ("script|load", SCRIPTING),
    ("script|exists", SCRIPTING),
    ("script|flush", SCRIPTING),
    ("script|kill", SCRIPTING),
    ("script|help", SCRIPTING),
    ("function", SLOW),
    ("function|list", SCRIPTING),
    ("function|stats", SCRIPTING),
    ("function|dump", SCRIPTING),
    ("function|kill", SCRIPTING),
    ("function|help", SCRIPTING),
    ("function|load", SCRIPTING_WRITE),
    ("function|flush", SCRIPTING_WRITE),
    ("function|delete", SCRIPTING_WRITE),
    ("function|restore", SCRIPTING_WRITE),
    ("ping", CONNECTION_FAST),
    ("echo", CONNECTION_FAST),
    ("hello", CONNECTION_FAST),
    ("auth", CONNECTION_FAST),
    ("select", CONNECTION_FAST),
    ("quit", CONNECTION_FAST),
    ("reset", CONNECTION_FAST),
    ("client", SLOW),
    ("client|id", CONNECTION_SLOW),
    ("client|getname", CONNECTION_SLOW),
    ("client|setname", CONNECTION_SLOW),
    ("client|setinfo", CONNECTION_SLOW),
    ("client|info", CONNECTION_SLOW),
    ("client|reply", CONNECTION_SLOW),
    ("client|no-touch", CONNECTION_SLOW),
    ("client|help", CONNECTION_SLOW),
    ("client|no-evict", CONNECTION_ADMIN),
    ("client|list", CONNECTION_ADMIN),
    ("client|kill", CONNECTION_ADMIN),
    ("client|pause", CONNECTION_ADMIN),
    ("client|unpause", CONNECTION_ADMIN),
    ("client|unblock", CONNECTION_ADMIN),
    ("client|tracking", CONNECTION_SLOW),
    ("client|trackinginfo", CONNECTION_SLOW),
    ("client|getredir", CONNECTION_SLOW),
    ("client|caching", CONNECTION_SLOW),
    ("command", CONNECTION_SLOW),
    ("command|count", CONNECTION_SLOW),
    ("command|docs", CONNECTION_SLOW),
    ("command|info", CONNECTION_SLOW),
    ("command|list", CONNECTION_SLOW),
    ("command|help", CONNECTION_SLOW),
    ("command|getkeys", CONNECTION_SLOW),
    ("command|getkeysandflags", CONNECTION_SLOW),
    ("info", &["slow", "dangerous"]),
    ("time", &["fast"]),
    ("vesta.repl", ADMIN),
    ("vesta.reencrypt", ADMIN),
    ("config", SLOW),
    ("config|get", ADMIN),
    ("config|set", ADMIN),
    ("config|resetstat", ADMIN),
    ("config|rewrite", ADMIN),
    ("config|help", SLOW),
    ("acl", SLOW),
    ("acl|whoami", SLOW),
    ("acl|cat", SLOW),
    ("acl|help", SLOW),
    ("acl|genpass", SLOW),
    ("acl|list", ADMIN),
    ("acl|users", ADMIN),
    ("acl|getuser", ADMIN),
    ("acl|setuser", ADMIN),
    ("acl|deluser", ADMIN),
    ("acl|log", ADMIN),
    ("acl|load", ADMIN),
    ("acl|save", ADMIN),
    ("acl|dryrun", ADMIN),
    ("slowlog", SLOW),
    ("slowlog|get", ADMIN),
    ("slowlog|len", ADMIN),
    ("slowlog|reset", ADMIN),
    ("slowlog|help", SLOW),
    ("latency", SLOW),
    ("latency|latest", ADMIN),
    ("latency|history", ADMIN),
    ("latency|reset", ADMIN),
    ("latency|help", SLOW),
    ("memory", SLOW),
    ("memory|usage", &["read", "slow"]),
    ("memory|help", SLOW),
    ("cluster", SLOW),
    ("readonly", CONNECTION_FAST),
    ("readwrite", CONNECTION_FAST),
    ("asking", CONNECTION_FAST),
];

/// The full names of the commands in `category`.
pub fn commands_in(category: &str) -> impl Iterator<Item = &'static str> + '_ {
    COMMANDS.iter().filter(move |(_, cats)| cats.contains(&category)).map(|(name, _)| *name)
}

/// The categories of a command by its full name; empty for a name not in the table.
pub fn of(full_name: &str) -> &'static [&'static str] {
    INDEX.by_name.get(full_name).map_or(&[], |(_, cats)| *cats)
}

/// [`COMMANDS`] by name, and the containers among them: every command a client sends is looked up
/// here (the ACL check runs on each), so once, not by a scan and an allocation per command.
struct Index {
    by_name: std::collections::HashMap<&'static str, (&'static str, &'static [&'static str])>,
    containers: std::collections::HashSet<&'static str>,
}

static INDEX: std::sync::LazyLock<Index> = std::sync::LazyLock::new(|| Index {
    by_name: COMMANDS.iter().map(|(n, cats)| (*n, (*n, *cats))).collect(),
    containers: COMMANDS.iter().filter_map(|(n, _)| n.split_once('|').map(|(container, _)| container)).collect(),
});

/// The full name a request is checked under: `container|sub` when the table has that subcommand,
/// else the command's own name.
pub fn full_name(name: &str, first_arg: Option<&[u8]>) -> &'static str {
    if let Some(sub) = first_arg.filter(|_| INDEX.containers.contains(name)) {
        let wanted = format!("{name}|{}", String::from_utf8_lossy(sub).to_ascii_lowercase());
        if let Some((n, _)) = INDEX.by_name.get(wanted.as_str()) {
            return n;
        }
    }
    INDEX.by_name.get(name).map_or("", |(n, _)| *n)
}

/// Whether `name` is a container whose subcommands have their own entries.
pub fn is_container(name: &str) -> bool {
    INDEX.containers.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_of_the_table_has_categories_and_every_category_is_known() {
        for spec in crate::cmd::TABLE {
            assert!(!of(spec.name).is_empty(), "{} has no ACL categories", spec.name);
        }
        for (name, cats) in COMMANDS {
            for c in *cats {
                assert!(ALL.contains(c), "{name}: unknown category {c}");
            }
            let top = name.split('|').next().unwrap_or(name);
            assert!(crate::cmd::spec(top).is_some(), "{name} is not a command Vesta has");
        }
        assert_eq!(full_name("client", Some(b"KILL")), "client|kill");
        assert_eq!(full_name("client", Some(b"nope")), "client");
        assert_eq!(full_name("get", Some(b"k")), "get");
        assert!(commands_in("dangerous").any(|c| c == "flushall"));
        assert!(is_container("client") && !is_container("get"));
    }
}
