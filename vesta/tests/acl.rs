//! Users, AUTH and protected mode through real `vesta proxy` processes: requirepass, users bound to
//! namespaces (every command that names or touches a database), command categories, HELLO AUTH, the
//! ACL subcommands, disabled users, the per-address AUTH failure limit and protected mode — over raw
//! RESP (exact reply bytes), redis-cli and redis-py.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use common::{Cluster, ClusterOptions, RawConn};

const REQUIREPASS: &str = "s3cret";
/// sha256("ninapw"): nina's password is given in Redis's `#<hash>` form.
const NINA_HASH: &str = "daa0bcc95b34569a6068fce402d63427e62624cd3ab22abd928c1f46e2d3da34";
/// sha256("alicepw").
const ALICE_HASH: &str = "6624974ea2baffac164422e4490376c1c31313cd97724ae8ce62fb3f0a0370f2";

/// The users of the shared cluster. Each test uses users and databases of its own, since tests run in
/// parallel on the same proxies.
fn users_toml() -> String {
    let users = [
        // Bound to namespace 5, every command.
        format!("nina on #{NINA_HASH} ~* &* db=5 +@all"),
        // Bound to namespace 1, nothing dangerous.
        "alice on >alicepw ~* &* db=1 +@all -@dangerous".to_string(),
        // Reads only (and the connection commands).
        "reader on >readpw ~* &* db=7 +@read +@connection".to_string(),
        "carl off >carlpw ~* &* +@all".to_string(),
        // May run the lock scripts but not DEL, which the release script runs.
        "evie on >eviepw ~* &* db=8 +@all -del".to_string(),
        // Two namespaces, the first one allowed being 3.
        "bob on >bobpw ~* &* db=3,4 +@all".to_string(),
    ];
    let lines: Vec<String> = users.iter().map(|u| format!("  {u:?},")).collect();
    format!(
        "requirepass = {REQUIREPASS:?}\n[acl]\n# Tests send wrong passwords on purpose: no limit here.\n\
         auth_max_failures = 1000000\nusers = [\n{}\n]\n",
        lines.join("\n")
    )
}

struct Shared {
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

/// Two proxies with [`users_toml`].
fn cluster() -> Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let (dir, path) = write_config(&users_toml());
            let cluster = Cluster::start_with(ClusterOptions {
                proxies: 2,
                proxy_flags: vec!["--config".into(), path],
                ..ClusterOptions::default()
            });
            Arc::new(Shared { cluster, _dir: dir })
        })
        .clone()
}

async fn logged_in(addr: SocketAddr, user: &str, pass: &str) -> RawConn {
    let mut c = RawConn::connect(addr).await;
    assert_eq!(c.call(&["AUTH", user, pass]).await, "+OK\r\n", "AUTH {user}");
    c
}

fn noperm_cmd(user: &str, cmd: &str) -> String {
    format!("-NOPERM User {user} has no permissions to run the '{cmd}' command\r\n")
}

const DB_DENIED: &str = "-NOPERM No permissions to access database\r\n";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

/// The value of `field` in INFO's text.
fn info_field(info: &str, field: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {info}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn requirepass_works_like_redis_default_user() {
    let s = cluster();
    let addr = s.cluster.proxy_addr();
    let mut c = RawConn::connect(addr).await;
    assert_eq!(c.call(&["GET", "k"]).await, "-NOAUTH Authentication required.\r\n");
    assert_eq!(c.call(&["SELECT", "1"]).await, "-NOAUTH Authentication required.\r\n");
    // As Redis: an unknown command or a wrong arity is reported before NOAUTH.
    assert!(c.call(&["NOSUCH"]).await.starts_with("-ERR unknown command 'NOSUCH'"));
    assert_eq!(c.call(&["GET"]).await, "-ERR wrong number of arguments for 'get' command\r\n");
    assert_eq!(
        c.call(&["HELLO", "3"]).await,
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH \
         <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the \
         same time\r\n"
    );
    assert_eq!(c.call(&["PING"]).await, "-NOAUTH Authentication required.\r\n");
    let before = info_field(
        &logged_in(addr, "default", REQUIREPASS).await.call(&["INFO", "stats"]).await,
        "acl_access_denied_auth",
    );
    assert_eq!(c.call(&["AUTH", "wrong"]).await, WRONGPASS);
    assert_eq!(c.call(&["AUTH", "default", "wrong"]).await, WRONGPASS);
    assert_eq!(c.call(&["AUTH", "nobody", REQUIREPASS]).await, WRONGPASS);
    assert_eq!(c.call(&["GET", "k"]).await, "-NOAUTH Authentication required.\r\n");
    assert_eq!(c.call(&["AUTH", REQUIREPASS]).await, "+OK\r\n");
    assert_eq!(c.call(&["ACL", "WHOAMI"]).await, "$7\r\ndefault\r\n");
    assert_eq!(c.call(&["AUTH", "default", REQUIREPASS]).await, "+OK\r\n");
    assert_eq!(c.call(&["PING"]).await, "+PONG\r\n");
    let after = info_field(&c.call(&["INFO", "stats"]).await, "acl_access_denied_auth");
    assert!(after >= before + 3, "three failures counted: {before} → {after}");
    // RESET logs the connection out again (the default user needs a password).
    assert_eq!(c.call(&["RESET"]).await, "+RESET\r\n");
    assert_eq!(c.call(&["GET", "k"]).await, "-NOAUTH Authentication required.\r\n");
    // A failed AUTH is in ACL LOG, with Redis's fields.
    let log = c.call(&["HELLO", "3", "AUTH", "default", REQUIREPASS]).await;
    assert!(log.starts_with("%7\r\n") && log.contains("proto\r\n:3\r\n"), "{log}");
    let log = c.call(&["ACL", "LOG"]).await;
    for field in ["reason", "auth", "context", "toplevel", "object", "AUTH", "username", "nobody", "client-info"] {
        assert!(log.contains(&format!("\r\n{field}\r\n")), "{field} in {log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_auth_and_disabled_users() {
    let s = cluster();
    let addr = s.cluster.proxy_addr_for(1);
    let mut c = RawConn::connect(addr).await;
    assert_eq!(c.call(&["HELLO", "3", "AUTH", "alice", "nope"]).await, WRONGPASS);
    let hello = c.call(&["HELLO", "3", "AUTH", "alice", "alicepw"]).await;
    assert!(hello.starts_with("%7\r\n") && hello.contains("proto\r\n:3\r\n"), "{hello}");
    assert_eq!(c.call(&["ACL", "WHOAMI"]).await, "$5\r\nalice\r\n");
    // A disabled user cannot log in, even with its password.
    let mut d = RawConn::connect(addr).await;
    assert_eq!(d.call(&["AUTH", "carl", "carlpw"]).await, WRONGPASS);
    assert_eq!(d.call(&["GET", "k"]).await, "-NOAUTH Authentication required.\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_bound_to_one_namespace_reaches_no_other() {
    let s = cluster();
    let (p0, p1) = (s.cluster.proxy_addr_for(0), s.cluster.proxy_addr_for(1));
    // The default user puts keys in namespaces 0 and 6, and one in nina's namespace 5.
    let mut admin = logged_in(p1, "default", REQUIREPASS).await;
    assert_eq!(admin.call(&["SET", "ns-other", "zero"]).await, "+OK\r\n");
    assert_eq!(admin.call(&["SELECT", "6"]).await, "+OK\r\n");
    assert_eq!(admin.call(&["SET", "ns-other6", "six"]).await, "+OK\r\n");
    assert_eq!(admin.call(&["SELECT", "5"]).await, "+OK\r\n");
    assert_eq!(admin.call(&["SET", "ns-five", "five"]).await, "+OK\r\n");

    // nina logs in from database 0 and lands in her namespace 5.
    let mut nina = logged_in(p0, "nina", "ninapw").await;
    assert!(nina.call(&["CLIENT", "INFO"]).await.contains(" db=5 "), "AUTH moved nina to namespace 5");
    assert_eq!(nina.call(&["GET", "ns-five"]).await, "$4\r\nfive\r\n");
    assert_eq!(nina.call(&["GET", "ns-other"]).await, "$-1\r\n");
    assert_eq!(nina.call(&["SET", "ns-mine", "m"]).await, "+OK\r\n");
    for db in ["0", "6", "15"] {
        assert_eq!(nina.call(&["SELECT", db]).await, DB_DENIED, "SELECT {db}");
    }
    assert_eq!(nina.call(&["SELECT", "5"]).await, "+OK\r\n");
    assert_eq!(nina.call(&["SELECT", "99"]).await, "-ERR DB index is out of range\r\n");
    assert_eq!(nina.call(&["MOVE", "ns-mine", "0"]).await, DB_DENIED);
    assert_eq!(nina.call(&["COPY", "ns-mine", "ns-copy", "DB", "6"]).await, DB_DENIED);
    assert_eq!(nina.call(&["COPY", "ns-mine", "ns-copy", "DB", "5"]).await, ":1\r\n");
    assert_eq!(nina.call(&["FLUSHALL"]).await, DB_DENIED);
    assert_eq!(nina.call(&["SWAPDB", "5", "0"]).await.split(',').next().unwrap(), "-ERR unknown command 'SWAPDB'");
    // Whole-namespace commands see namespace 5 only.
    let keys = nina.call(&["KEYS", "ns-*"]).await;
    assert!(keys.contains("ns-five") && keys.contains("ns-mine") && !keys.contains("ns-other"), "{keys}");
    let scan = nina.call(&["SCAN", "0", "MATCH", "ns-*", "COUNT", "100000"]).await;
    assert!(!scan.contains("ns-other"), "{scan}");
    assert_eq!(nina.call(&["DBSIZE"]).await, ":3\r\n");
    let random = nina.call(&["RANDOMKEY"]).await;
    assert!(!random.contains("ns-other"), "{random}");
    // A transaction cannot switch namespaces: the refused SELECT aborts it.
    assert_eq!(nina.call(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(nina.call(&["SELECT", "0"]).await, DB_DENIED);
    assert_eq!(nina.call(&["GET", "ns-other"]).await, "+QUEUED\r\n");
    assert_eq!(nina.call(&["EXEC"]).await, "-EXECABORT Transaction discarded because of previous errors.\r\n");
    assert_eq!(nina.call(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(nina.call(&["MOVE", "ns-mine", "6"]).await, DB_DENIED);
    assert_eq!(nina.call(&["EXEC"]).await, "-EXECABORT Transaction discarded because of previous errors.\r\n");
    // The same user on the other proxy is bound the same way.
    let mut nina1 = logged_in(p1, "nina", "ninapw").await;
    assert_eq!(nina1.call(&["GET", "ns-mine"]).await, "$1\r\nm\r\n");
    assert_eq!(nina1.call(&["SELECT", "0"]).await, DB_DENIED);
    // FLUSHDB empties namespace 5 only.
    assert_eq!(nina1.call(&["FLUSHDB"]).await, "+OK\r\n");
    assert_eq!(nina.call(&["DBSIZE"]).await, ":0\r\n");
    assert_eq!(admin.call(&["SELECT", "0"]).await, "+OK\r\n");
    assert_eq!(admin.call(&["GET", "ns-other"]).await, "$4\r\nzero\r\n");
    assert_eq!(admin.call(&["SELECT", "6"]).await, "+OK\r\n");
    assert_eq!(admin.call(&["GET", "ns-other6"]).await, "$3\r\nsix\r\n");
    // Refusals are counted (per proxy: nina's on proxy 0) and logged with Valkey's reason.
    let info = logged_in(p0, "default", REQUIREPASS).await.call(&["INFO", "stats"]).await;
    assert!(info_field(&info, "acl_access_denied_db") >= 7, "{info}");
    let log = admin.call(&["ACL", "LOG"]).await;
    assert!(log.contains("\r\ndatabase\r\n") && log.contains("\r\nnina\r\n"), "{log}");

    // bob (databases 3 and 4) starts in 3 and may switch to 4.
    let mut bob = logged_in(p0, "bob", "bobpw").await;
    assert!(bob.call(&["CLIENT", "INFO"]).await.contains(" db=3 "));
    assert_eq!(bob.call(&["SELECT", "4"]).await, "+OK\r\n");
    assert_eq!(bob.call(&["SET", "bobkey", "4"]).await, "+OK\r\n");
    assert_eq!(bob.call(&["MOVE", "bobkey", "3"]).await, ":1\r\n");
    assert_eq!(bob.call(&["MOVE", "bobkey", "2"]).await, DB_DENIED);
}

#[tokio::test(flavor = "multi_thread")]
async fn command_categories_refuse_with_redis_texts() {
    let s = cluster();
    let addr = s.cluster.proxy_addr();
    let mut alice = logged_in(addr, "alice", "alicepw").await;
    assert_eq!(alice.call(&["SET", "cat-k", "v"]).await, "+OK\r\n");
    assert_eq!(alice.call(&["FLUSHALL"]).await, noperm_cmd("alice", "flushall"));
    assert_eq!(alice.call(&["FLUSHDB"]).await, noperm_cmd("alice", "flushdb"));
    assert_eq!(alice.call(&["KEYS", "*"]).await, noperm_cmd("alice", "keys"));
    assert_eq!(alice.call(&["CLIENT", "KILL", "ID", "1"]).await, noperm_cmd("alice", "client|kill"));
    assert_eq!(alice.call(&["CONFIG", "GET", "maxclients"]).await, noperm_cmd("alice", "config|get"));
    assert!(alice.call(&["CLIENT", "ID"]).await.starts_with(':'));
    assert_eq!(alice.call(&["ACL", "LIST"]).await, noperm_cmd("alice", "acl|list"));
    // AUTH, HELLO, QUIT and RESET are never refused.
    assert_eq!(alice.call(&["AUTH", "alice", "alicepw"]).await, "+OK\r\n");

    let mut reader = logged_in(addr, "reader", "readpw").await;
    assert_eq!(reader.call(&["GET", "cat-k"]).await, "$-1\r\n");
    assert_eq!(reader.call(&["SET", "cat-k", "v"]).await, noperm_cmd("reader", "set"));
    assert_eq!(reader.call(&["DEL", "cat-k"]).await, noperm_cmd("reader", "del"));
    assert_eq!(reader.call(&["MULTI"]).await, noperm_cmd("reader", "multi"));
    assert_eq!(reader.call(&["PING"]).await, "+PONG\r\n");

    // A script's commands need the user's permission too (the redis-py lock release runs GET and DEL).
    let mut evie = logged_in(addr, "evie", "eviepw").await;
    // redis-py's `Lock` release script (GET, then DEL), by its SHA1.
    let release = "c3f8721cbb97f72bc19e972846bd7aaf91901658";
    assert_eq!(evie.call(&["SET", "lock", "tok"]).await, "+OK\r\n");
    assert_eq!(
        evie.call(&["EVALSHA", release, "1", "lock", "tok"]).await,
        "-ERR ACL failure in script: User evie has no permissions to run the 'del' command script: \
         c3f8721cbb97f72bc19e972846bd7aaf91901658\r\n"
    );
    assert_eq!(evie.call(&["GET", "lock"]).await, "$3\r\ntok\r\n");
    let mut bob = logged_in(addr, "bob", "bobpw").await;
    assert_eq!(bob.call(&["SET", "lock", "tok"]).await, "+OK\r\n");
    assert_eq!(bob.call(&["EVALSHA", release, "1", "lock", "tok"]).await, ":1\r\n");

    let mut admin = logged_in(addr, "default", REQUIREPASS).await;
    let info = admin.call(&["INFO", "stats"]).await;
    assert!(info_field(&info, "acl_access_denied_cmd") >= 9, "{info}");
    let log = admin.call(&["ACL", "LOG", "50"]).await;
    assert!(log.contains("\r\nflushall\r\n") && log.contains("\r\nalice\r\n") && log.contains("\r\nlua\r\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_subcommands_answer_like_redis() {
    let s = cluster();
    let mut admin = logged_in(s.cluster.proxy_addr(), "default", REQUIREPASS).await;
    let list = admin.call(&["ACL", "LIST"]).await;
    assert!(list.contains(&format!("user alice on #{ALICE_HASH} ~* &* db=1 +@all -@dangerous\r\n")), "{list}");
    assert!(list.contains(&format!("user nina on #{NINA_HASH} ~* &* db=5 +@all\r\n")), "{list}");
    assert!(list.contains("user carl off #"), "{list}");
    assert!(list.contains("user reader on #") && list.contains("db=7 -@all +@read +@connection\r\n"), "{list}");
    assert!(!list.contains("alicepw") && !list.contains(REQUIREPASS), "no clear passwords: {list}");
    assert_eq!(
        admin.call(&["ACL", "USERS"]).await,
        "*7\r\n$5\r\nalice\r\n$3\r\nbob\r\n$4\r\ncarl\r\n$7\r\ndefault\r\n$4\r\nevie\r\n$4\r\nnina\r\n$6\r\nreader\r\n"
    );
    let cats = admin.call(&["ACL", "CAT"]).await;
    assert!(cats.starts_with("*21\r\n$8\r\nkeyspace\r\n"), "{cats}");
    let dangerous = admin.call(&["ACL", "CAT", "dangerous"]).await;
    assert!(
        dangerous.contains("\r\nflushall\r\n")
            && dangerous.contains("\r\nkeys\r\n")
            && !dangerous.contains("\r\nget\r\n")
    );
    assert_eq!(admin.call(&["ACL", "CAT", "nope"]).await, "-ERR Unknown category 'nope'\r\n");
    let getuser = admin.call(&["ACL", "GETUSER", "nina"]).await;
    assert!(getuser.contains(NINA_HASH) && getuser.contains("db=5"), "{getuser}");
    assert_eq!(admin.call(&["ACL", "GETUSER", "nobody"]).await, "$-1\r\n");
    let setuser = admin.call(&["ACL", "SETUSER", "x", "on"]).await;
    assert!(
        setuser.starts_with("-ERR ACL SETUSER is not supported by Vesta: users are set in proxy.toml"),
        "{setuser}"
    );
    assert!(admin.call(&["ACL", "NOPE"]).await.starts_with("-ERR unknown subcommand 'NOPE'"));
    let info = admin.call(&["COMMAND", "INFO", "flushall"]).await;
    assert!(info.contains("@dangerous"), "COMMAND INFO shows Redis's categories: {info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cli_and_redis_py_see_the_same_errors() {
    let s = cluster();
    let port = s.cluster.proxy_addr().port().to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port, "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["--user", "alice", "--pass", "alicepw", "SET", "cli-k", "v"]), "OK");
    assert_eq!(
        cli(&["--user", "alice", "--pass", "alicepw", "FLUSHALL"]),
        "NOPERM User alice has no permissions to run the 'flushall' command"
    );
    assert_eq!(cli(&["-a", REQUIREPASS, "ACL", "WHOAMI"]), "default");
    assert_eq!(cli(&["GET", "cli-k"]), "NOAUTH Authentication required.");

    let python = std::path::Path::new("/usr/bin/python3");
    let has_redis_py = python.exists()
        && std::process::Command::new(python).args(["-c", "import redis"]).status().is_ok_and(|s| s.success());
    if !has_redis_py {
        eprintln!("SKIPPED redis-py part: /usr/bin/python3 with the redis module is not installed");
        return;
    }
    let script = format!(
        "import redis\n\
         r = redis.Redis(port={port}, username='alice', password='alicepw', socket_timeout=30)\n\
         r.set('py-k', 'v')\n\
         try:\n    r.flushall()\n    print('FLUSHALL ALLOWED')\nexcept redis.exceptions.NoPermissionError as e:\n    print('NOPERM', e)\n\
         try:\n    redis.Redis(port={port}, username='alice', password='bad', socket_timeout=30).ping()\n    print('PING ALLOWED')\n\
         except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as e:\n    print('AUTHERR', str(e).removeprefix('WRONGPASS '))\n\
         print(redis.Redis(port={port}, username='nina', password='ninapw', db=5).get('py-k'))\n\
         try:\n    redis.Redis(port={port}, username='nina', password='ninapw', db=6).ping()\n    print('DB6 ALLOWED')\n\
         except redis.exceptions.NoPermissionError as e:\n    print('DB6', e)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl_check.py");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new(python).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "NOPERM User alice has no permissions to run the 'flushall' command",
            "AUTHERR invalid username-password pair or user is disabled.",
            "None",
            "DB6 No permissions to access database",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_auths_are_limited_per_client_address() {
    let (_dir, path) = write_config(
        "requirepass = \"right\"\n[acl]\nauth_max_failures = 3\n# Long enough that the test never sees it end.\n\
         auth_failure_window_secs = 3600\n",
    );
    let cluster =
        Cluster::start_with(ClusterOptions { proxy_flags: vec!["--config".into(), path], ..Default::default() });
    let addr = cluster.proxy_addr();
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let mut c = RawConn::connect_from(addr, local).await;
    for _ in 0..3 {
        assert_eq!(c.call(&["AUTH", "wrong"]).await, WRONGPASS);
    }
    let refused = c.call(&["AUTH", "right"]).await;
    assert!(refused.starts_with("-ERR too many failed AUTH attempts from this address; retry in "), "{refused}");
    assert!(c.call(&["HELLO", "3", "AUTH", "default", "right"]).await.starts_with("-ERR too many failed AUTH"));
    let mut again = RawConn::connect_from(addr, local).await;
    assert!(again.call(&["AUTH", "right"]).await.starts_with("-ERR too many failed AUTH"), "a new connection too");
    assert_eq!(again.call(&["GET", "k"]).await, "-NOAUTH Authentication required.\r\n");
    // Another client address is not affected.
    let mut other = RawConn::connect_from(addr, "127.0.0.2".parse().unwrap()).await;
    assert_eq!(other.call(&["AUTH", "right"]).await, "+OK\r\n");
    assert!(other.call(&["CLIENT", "INFO"]).await.contains("addr=127.0.0.2:"));
    assert_eq!(other.call(&["GET", "k"]).await, "$-1\r\n");
    let log = other.call(&["ACL", "LOG", "1"]).await;
    assert!(log.starts_with("*1\r\n") && log.contains("\r\ncount\r\n:3\r\n"), "three failures, one entry: {log}");
    assert_eq!(other.call(&["ACL", "LOG", "RESET"]).await, "+OK\r\n");
    assert_eq!(other.call(&["ACL", "LOG"]).await, "*0\r\n");
}

/// The address this machine would use to reach beyond loopback, if it has one.
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route and source address.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_mode_denies_clients_beyond_loopback() {
    let Some(outside) = non_loopback_address() else {
        eprintln!("SKIPPED: this machine has no non-loopback address to connect from (unit tests cover the rule)");
        return;
    };
    // Proxy 0 has protected mode off, proxy 1 the default (on); neither has a password.
    let cluster = Cluster::start_with(ClusterOptions {
        proxies: 2,
        listen: Some("0.0.0.0:0".into()),
        first_proxy_flags: vec!["--protected-mode".into(), "false".into()],
        ..Default::default()
    });
    let port_of = |i: usize| cluster.proxy_addr_for(i).port();
    // The refusal is sent as soon as the connection is accepted, before any request (as Redis does).
    let mut denied = RawConn::connect(SocketAddr::new(outside, port_of(1))).await;
    let reply = denied.read_reply().await;
    assert!(
        reply.starts_with("-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user.")
            && reply.ends_with("in order for the server to start accepting connections from the outside.\r\n"),
        "{reply}"
    );
    assert!(denied.closed_by_server().await);
    let mut local = RawConn::connect(SocketAddr::new("127.0.0.1".parse().unwrap(), port_of(1))).await;
    assert_eq!(local.call(&["PING"]).await, "+PONG\r\n");
    let mut open = RawConn::connect(SocketAddr::new(outside, port_of(0))).await;
    assert_eq!(open.call(&["PING"]).await, "+PONG\r\n");

    // With a password, protected mode lets the client in to authenticate.
    let (_dir, path) = write_config("requirepass = \"pw\"\n");
    let guarded = Cluster::start_with(ClusterOptions {
        listen: Some("0.0.0.0:0".into()),
        proxy_flags: vec!["--config".into(), path],
        ..Default::default()
    });
    let mut c = RawConn::connect(SocketAddr::new(outside, guarded.proxy_addr().port())).await;
    assert_eq!(c.call(&["PING"]).await, "-NOAUTH Authentication required.\r\n");
    assert_eq!(c.call(&["AUTH", "pw"]).await, "+OK\r\n");
}

#[test]
fn a_bad_acl_rule_is_a_one_line_startup_error() {
    let (_dir, path) = write_config("[acl]\nusers = [\"alice on >pw +@nope\"]\n");
    let out = std::process::Command::new(vesta_testkit::vesta_bin())
        .args(["proxy", "--listen", "127.0.0.1:0", "--topology", "/nonexistent.toml", "--config", &path])
        .env("VESTA_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "acl.users, user line 1: Error in ACL SETUSER modifier '+@nope': Unknown command or category name in ACL"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
