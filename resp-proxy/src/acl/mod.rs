//! Users, AUTH and protected mode, as Redis has them (ACL users from `proxy.toml`), with users bound
//! to namespaces (Redis databases) by Valkey 9's `db=` rules.
//!
//! Every command passes [`Acl::check`] before it runs or is queued: NOAUTH for a connection that has
//! not authenticated, then the user's command permissions, keys and databases. A session's database is
//! always one its user may use (SELECT refuses the others; AUTH moves to the user's first one), and the
//! commands that name another database (MOVE, COPY … DB, FLUSHALL, SELECT) are checked on that database.

pub mod auth_limit;
pub mod categories;
pub mod log;
pub mod users;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use crate::cmd::connection::DATABASES;
use crate::cmd::{self, Spec};
use crate::metrics as m;
use crate::resp::Reply;
use crate::session::Session;
use auth_limit::AuthLimiter;
use log::{AclLog, Context, Denial, Reason};
pub use users::{RuleError, User};

/// `[acl]` of `proxy.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// Users in Redis's ACL rule syntax, one line each: `"alice on #<sha256> ~* &* db=0,1 +@read"`.
    pub users: Vec<String>,
    /// Failed AUTHs from one IP address within `auth_failure_window_secs` before that address is
    /// refused for the rest of the window.
    pub auth_max_failures: u32,
    pub auth_failure_window_secs: u64,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig { users: Vec::new(), auth_max_failures: 5, auth_failure_window_secs: 10 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AclConfigError {
    #[error("acl.users, user line {line}: {error}")]
    Rule { line: usize, error: RuleError },
    #[error("acl.users: user '{0}' is defined twice")]
    Duplicate(String),
    #[error("requirepass and an acl.users line for 'default' both set the default user: keep one")]
    TwoDefaults,
    #[error("acl.auth_max_failures and acl.auth_failure_window_secs must be at least 1")]
    Limits,
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis 7's reply to a non-loopback client in protected mode (sent before closing).
pub const DENIED: &str = "-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Redis you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Setup a an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

static OPEN_DEFAULT: LazyLock<Arc<User>> = LazyLock::new(|| Arc::new(User::open_default()));

/// The user of a connection before the ACL is consulted: Redis's default user.
pub fn open_default_user() -> Arc<User> {
    OPEN_DEFAULT.clone()
}

/// Refusals, for INFO stats (Redis 7's `acl_access_denied_*`).
#[derive(Default)]
pub struct Denials {
    pub auth: AtomicU64,
    pub cmd: AtomicU64,
    pub key: AtomicU64,
    pub db: AtomicU64,
}

pub struct Acl {
    users: BTreeMap<String, Arc<User>>,
    protected_mode: bool,
    /// Failures are limited only where there is a password to guess: without any, every AUTH but one
    /// naming a `nopass` user fails whatever is tried, as in a fresh Redis.
    limit_failures: bool,
    limiter: AuthLimiter,
    pub log: AclLog,
    pub denied: Denials,
}

impl Acl {
    pub fn new(requirepass: Option<&str>, config: &AclConfig, protected_mode: bool) -> Result<Acl, AclConfigError> {
        if config.auth_max_failures == 0 || config.auth_failure_window_secs == 0 {
            return Err(AclConfigError::Limits);
        }
        let mut users = BTreeMap::new();
        for (i, line) in config.users.iter().enumerate() {
            let user = User::parse_line(line).map_err(|error| AclConfigError::Rule { line: i + 1, error })?;
            if users.contains_key(&user.name) {
                return Err(AclConfigError::Duplicate(user.name));
            }
            users.insert(user.name.clone(), Arc::new(user));
        }
        let mut default = match users.get("default") {
            Some(_) if requirepass.is_some() => return Err(AclConfigError::TwoDefaults),
            Some(d) => User::clone(d),
            None => User::open_default(),
        };
        if let Some(pass) = requirepass.filter(|p| !p.is_empty()) {
            // As Redis's requirepass: the default user's only password.
            for rule in ["resetpass".to_string(), format!(">{pass}")] {
                default.apply(&rule).map_err(|error| AclConfigError::Rule { line: 0, error })?;
            }
        }
        users.insert("default".into(), Arc::new(default));
        let window = Duration::from_secs(config.auth_failure_window_secs);
        let limit_failures = users.values().any(|u| !u.password_hashes().is_empty());
        Ok(Acl {
            users,
            protected_mode,
            limit_failures,
            limiter: AuthLimiter::new(config.auth_max_failures, window),
            log: AclLog::default(),
            denied: Denials::default(),
        })
    }

    /// Nobody can log in: what a proxy falls back to if its ACL configuration cannot be read (it is
    /// validated before the proxy starts, so only a caller that skipped validation meets this).
    pub fn locked() -> Acl {
        let mut users = BTreeMap::new();
        users.insert("default".to_string(), Arc::new(User::new("default")));
        Acl {
            users,
            protected_mode: true,
            limit_failures: true,
            limiter: AuthLimiter::new(1, Duration::from_secs(10)),
            log: AclLog::default(),
            denied: Denials::default(),
        }
    }

    pub fn default_user(&self) -> Arc<User> {
        self.users.get("default").cloned().unwrap_or_else(|| Arc::new(User::new("default")))
    }

    pub fn user(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }

    /// A fresh (or RESET) connection: the default user, authenticated when it needs no password —
    /// Redis's `clientSetDefaultAuth`.
    pub fn start_session(&self, s: &mut Session) {
        let default = self.default_user();
        let open = default.nopass && default.enabled;
        log_in(s, default, open);
    }

    /// Protected mode (Redis's rule): the default user has no password and the client is not on
    /// loopback.
    pub fn refuses_connection(&self, peer: IpAddr) -> bool {
        self.protected_mode && self.default_user().nopass && !is_loopback(peer)
    }

    /// AUTH / HELLO AUTH: logs the session in, or answers WRONGPASS (counted, logged, and limited per
    /// client address).
    pub fn authenticate(&self, s: &mut Session, username: &[u8], password: &[u8]) -> Result<(), Reply> {
        let ip = s.peer.ip();
        let now = Instant::now();
        if let Some(secs) = self.limiter.blocked(ip, now).filter(|_| self.limit_failures) {
            self.denied.auth.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::ACL_DENIED, "reason" => "auth_rate_limited").increment(1);
            tracing::debug!(%ip, "AUTH refused: too many failures from this address");
            return Err(Reply::error(format!(
                "ERR too many failed AUTH attempts from this address; retry in {secs} s"
            )));
        }
        let name = String::from_utf8_lossy(username);
        let user = self.users.get(name.as_ref());
        // An unknown user costs the same hashing and comparison as a known one.
        let matches = match user {
            Some(u) => u.password_matches(password) && u.enabled,
            None => {
                let _ = open_default_user().password_matches(password);
                false
            }
        };
        match user {
            Some(u) if matches => {
                log_in(s, u.clone(), true);
                Ok(())
            }
            _ => {
                if self.limit_failures {
                    self.limiter.record_failure(ip, now);
                }
                self.denied.auth.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::ACL_DENIED, "reason" => "auth").increment(1);
                tracing::warn!(user = %cmd::shown(username), peer = %s.peer, "AUTH failed");
                self.log.add(Denial {
                    reason: Reason::Auth,
                    context: if s.multi.is_some() { Context::Multi } else { Context::Toplevel },
                    object: "AUTH".into(),
                    username: name.into_owned(),
                    client_info: s.client_info("auth").trim_end().to_string(),
                });
                Err(Reply::error(WRONGPASS))
            }
        }
    }

    /// Whether the session may run this command, before it runs or is queued (Redis's order: after the
    /// command is known and its arity checked).
    pub fn check(&self, s: &Session, spec: &Spec, args: &[Bytes]) -> Result<(), Reply> {
        // AUTH, HELLO, QUIT and RESET: always allowed, as in Redis, so that any connection can
        // authenticate or leave.
        let no_auth = spec.flags.contains(&"no_auth");
        if !s.authenticated && !no_auth {
            return Err(Reply::error(NOAUTH));
        }
        let user = &s.user;
        let full = categories::full_name(spec.name, args.get(1).map(|a| a.as_ref()));
        if !no_auth && !user.may_run(full) {
            return Err(self.refuse(s, Reason::Command, Context::Toplevel, full, full, command_denied(user, full)));
        }
        let keyed = spec.keys.0 > 0 || spec.flags.contains(&"movablekeys");
        if keyed && !user.all_keys {
            let text = "NOPERM No permissions to access a key".to_string();
            return Err(self.refuse(s, Reason::Key, Context::Toplevel, full, full, text));
        }
        // A user of every namespace (the default user, most users) is spared working out which ones.
        let restricted = user.dbs != users::ALL_DBS;
        let denied = restricted.then(|| databases_named(spec, args, s.db).into_iter().find(|d| !d.allowed_for(user)));
        if let Some(db) = denied.flatten() {
            return Err(self.refuse(s, Reason::Database, Context::Toplevel, full, &db.object(), DB_DENIED.into()));
        }
        if matches!(spec.name, "eval" | "evalsha") {
            self.check_script(s, spec.name, &args[1..])?;
        }
        Ok(())
    }

    /// A script runs commands: each must be allowed to the user too (Redis checks every `redis.call`).
    fn check_script(&self, s: &Session, name: &str, params: &[Bytes]) -> Result<(), Reply> {
        let Some(Ok(script)) = cmd::scripts::Cmd::parse(name, params) else { return Ok(()) };
        let sha = match name {
            "eval" => cmd::scripts::sha1_hex(&params[0]),
            _ => String::from_utf8_lossy(&params[0]).to_ascii_lowercase(),
        };
        match script.commands().iter().find(|c| !s.user.may_run(c)) {
            Some(inner) => {
                let text = format!("ERR ACL failure in script: {} script: {sha}", &command_denied(&s.user, inner)[7..]);
                Err(self.refuse(s, Reason::Command, Context::Lua, name, inner, text))
            }
            None => Ok(()),
        }
    }

    /// Counts, logs and words a refusal of the command `full` (its ACL LOG object: `object`).
    fn refuse(&self, s: &Session, reason: Reason, context: Context, full: &str, object: &str, text: String) -> Reply {
        let counter = match reason {
            Reason::Auth => &self.denied.auth,
            Reason::Command => &self.denied.cmd,
            Reason::Key => &self.denied.key,
            Reason::Database => &self.denied.db,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::ACL_DENIED, "reason" => reason.as_str()).increment(1);
        self.log.add(Denial {
            reason,
            context,
            object: object.to_string(),
            username: s.user.name.clone(),
            client_info: s.client_info(full).trim_end().to_string(),
        });
        Reply::Error(text)
    }
}

/// Valkey 9's reply to a command on a database the user is not bound to.
pub const DB_DENIED: &str = "NOPERM No permissions to access database";

fn command_denied(user: &User, full: &str) -> String {
    format!("NOPERM User {} has no permissions to run the '{full}' command", user.name)
}

fn log_in(s: &mut Session, user: Arc<User>, authenticated: bool) {
    // The session's database stays one its user may use.
    if !user.may_use_db(s.db) {
        if let Some(db) = user.first_db() {
            s.select(db);
        }
    }
    s.user = user;
    s.authenticated = authenticated;
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// A database a command touches.
#[derive(Debug, PartialEq, Eq)]
enum Db {
    One(u32),
    /// FLUSHALL: every database.
    All,
}

impl Db {
    fn allowed_for(&self, user: &User) -> bool {
        match self {
            Db::One(db) => user.may_use_db(*db),
            Db::All => user.dbs == users::ALL_DBS,
        }
    }

    fn object(&self) -> String {
        match self {
            Db::One(db) => db.to_string(),
            Db::All => "flushall".into(),
        }
    }
}

/// Commands over the whole current database that name no key.
const WHOLE_DB: &[&str] = &["scan", "keys", "dbsize", "randomkey", "flushdb"];

/// The databases a command touches: the current one for commands on keys or on the whole database,
/// and those it names (SELECT n, MOVE key n, COPY … DB n, FLUSHALL). A database argument that does not
/// parse is left to the command's own error.
fn databases_named(spec: &Spec, args: &[Bytes], current: u32) -> Vec<Db> {
    // Out of range: the command answers its own `DB index is out of range`.
    let number = |b: &Bytes| cmd::parse_i64(b).and_then(|n| u32::try_from(n).ok()).filter(|&n| n < DATABASES);
    let mut dbs = Vec::new();
    if spec.keys.0 > 0 || spec.flags.contains(&"movablekeys") || WHOLE_DB.contains(&spec.name) {
        dbs.push(Db::One(current));
    }
    match spec.name {
        "select" => dbs.extend(args.get(1).and_then(number).map(Db::One)),
        "move" => dbs.extend(args.get(2).and_then(number).map(Db::One)),
        "copy" => {
            let named = args.iter().skip(3).position(|a| a.eq_ignore_ascii_case(b"db"));
            dbs.extend(named.and_then(|i| args.get(3 + i + 1)).and_then(number).map(Db::One));
        }
        "flushall" => dbs.push(Db::All),
        _ => {}
    }
    dbs
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    fn named(a: &[&str], current: u32) -> Vec<Db> {
        let a = args(a);
        let spec = cmd::spec(&String::from_utf8_lossy(&a[0]).to_ascii_lowercase()).unwrap();
        databases_named(spec, &a, current)
    }

    #[test]
    fn databases_a_command_touches() {
        assert_eq!(named(&["SELECT", "3"], 0), vec![Db::One(3)]);
        assert_eq!(named(&["GET", "k"], 2), vec![Db::One(2)]);
        assert_eq!(named(&["MOVE", "k", "5"], 1), vec![Db::One(1), Db::One(5)]);
        assert_eq!(named(&["COPY", "a", "b", "REPLACE", "db", "7"], 0), vec![Db::One(0), Db::One(7)]);
        assert_eq!(named(&["COPY", "a", "b"], 4), vec![Db::One(4)]);
        assert_eq!(named(&["FLUSHALL"], 0), vec![Db::All]);
        assert_eq!(named(&["SCAN", "0"], 9), vec![Db::One(9)]);
        assert_eq!(named(&["EVAL", "x", "0"], 1), vec![Db::One(1)]);
        assert_eq!(named(&["PING"], 1), vec![]);
        assert_eq!(named(&["SELECT", "x"], 1), vec![]);
        assert_eq!(named(&["SELECT", "16"], 1), vec![]);
    }

    #[test]
    fn configuration_errors_are_one_clear_line() {
        let with =
            |users: &[&str]| AclConfig { users: users.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let e = Acl::new(None, &with(&["alice on +@nope"]), true).err().unwrap().to_string();
        assert_eq!(
            e,
            "acl.users, user line 1: Error in ACL SETUSER modifier '+@nope': Unknown command or category name in ACL"
        );
        assert!(matches!(Acl::new(None, &with(&["a on", "a off"]), true), Err(AclConfigError::Duplicate(_))));
        assert!(matches!(Acl::new(Some("x"), &with(&["default on >y +@all"]), true), Err(AclConfigError::TwoDefaults)));
        let acl = Acl::new(Some("secret"), &with(&[]), true).unwrap();
        let d = acl.default_user();
        assert!(!d.nopass && d.password_matches(b"secret") && d.may_run("flushall"));
    }

    #[test]
    fn protected_mode_refuses_only_non_loopback_clients_of_a_passwordless_default_user() {
        let open = Acl::new(None, &AclConfig::default(), true).unwrap();
        let outside: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(open.refuses_connection(outside));
        for local in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(!open.refuses_connection(local.parse().unwrap()), "{local}");
        }
        assert!(open.refuses_connection("::ffff:192.0.2.7".parse().unwrap()));
        let off = Acl::new(None, &AclConfig::default(), false).unwrap();
        assert!(!off.refuses_connection(outside));
        let protected = Acl::new(Some("pw"), &AclConfig::default(), true).unwrap();
        assert!(!protected.refuses_connection(outside));
        assert!(DENIED.starts_with("-DENIED ") && DENIED.ends_with(".\r\n"));
    }
}
