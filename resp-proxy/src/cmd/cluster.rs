//! CLUSTER READONLY READWRITE ASKING: Vesta presents itself as a standalone Redis (its sharding is
//! internal), so these answer as a Redis started without `cluster-enabled` does: every known CLUSTER
//! subcommand, and the three connection switches, with `-ERR This instance has cluster support
//! disabled`. Cluster-aware clients (redis-py's `RedisCluster`, Jedis' `JedisCluster`, …) take that
//! answer to mean "not a cluster" and fall back to a plain connection.

use bytes::Bytes;

use super::subcommand;
use crate::resp::Reply;

pub const DISABLED: &str = "ERR This instance has cluster support disabled";

/// Redis 7.2's CLUSTER subcommands and their arities (name included), so that an unknown subcommand or
/// a wrong argument count gets the error Redis checks for before the command runs.
const SUBCOMMANDS: &[(&str, i64)] = &[
    ("addslots", -3),
    ("addslotsrange", -4),
    ("bumpepoch", 2),
    ("count-failure-reports", 3),
    ("countkeysinslot", 3),
    ("delslots", -3),
    ("delslotsrange", -4),
    ("failover", -2),
    ("flushslots", 2),
    ("forget", 3),
    ("getkeysinslot", 4),
    ("help", 2),
    ("info", 2),
    ("keyslot", 3),
    ("links", 2),
    ("meet", -4),
    ("myid", 2),
    ("myshardid", 2),
    ("nodes", 2),
    ("replicas", 3),
    ("replicate", 3),
    ("reset", -2),
    ("saveconfig", 2),
    ("set-config-epoch", 3),
    ("setslot", -4),
    ("shards", 2),
    ("slaves", 3),
    ("slots", 2),
];

/// Runs CLUSTER, READONLY, READWRITE or ASKING (arity already checked); `None` for any other command.
pub fn run(name: &str, a: &[Bytes]) -> Option<Reply> {
    Some(match name {
        "cluster" => match subcommand("cluster", SUBCOMMANDS, a) {
            Ok(_) => Reply::error(DISABLED),
            Err(e) => e,
        },
        "readonly" | "readwrite" | "asking" => Reply::error(DISABLED),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    #[test]
    fn answers_as_a_standalone_redis() {
        assert_eq!(run("cluster", &args(&["INFO"])), Some(Reply::error(DISABLED)));
        assert_eq!(run("cluster", &args(&["slots"])), Some(Reply::error(DISABLED)));
        assert_eq!(run("readonly", &[]), Some(Reply::error(DISABLED)));
        assert_eq!(
            run("cluster", &args(&["foo"])),
            Some(Reply::error("ERR unknown subcommand 'foo'. Try CLUSTER HELP."))
        );
        assert_eq!(
            run("cluster", &args(&["info", "x"])),
            Some(Reply::error("ERR wrong number of arguments for 'cluster|info' command"))
        );
        assert_eq!(run("get", &[]), None);
    }
}
