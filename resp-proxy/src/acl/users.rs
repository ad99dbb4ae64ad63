//! One ACL user, built from Redis's rule syntax (`on >secret ~* &* +@read -@dangerous`), plus Vesta's
//! namespace rules taken from Valkey 9's database ACLs: `db=0,3` (only those databases), `alldbs`,
//! `resetdbs` (none). A Vesta namespace is a Redis database number.
//!
//! Passwords are kept only as SHA-256 digests (Redis's `#<hex>` form) and compared in constant time.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::categories;
use crate::cmd::connection::DATABASES;

/// Every database: the bit mask of `alldbs`.
pub const ALL_DBS: u32 = (1 << DATABASES) - 1;

/// A rule Vesta cannot take, with Redis's wording (`Error in ACL SETUSER modifier '…': …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error in ACL SETUSER modifier '{rule}': {why}")]
pub struct RuleError {
    pub rule: String,
    pub why: String,
}

fn bad(rule: &str, why: impl Into<String>) -> RuleError {
    RuleError { rule: rule.to_string(), why: why.into() }
}

pub type PasswordHash = [u8; 32];

pub fn hash_password(password: &[u8]) -> PasswordHash {
    Sha256::digest(password).into()
}

fn hex(h: &PasswordHash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex_hash(s: &str) -> Option<PasswordHash> {
    if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    passwords: Vec<PasswordHash>,
    /// Full command names (`get`, `client|kill`) the user may run.
    allowed: BTreeSet<&'static str>,
    /// The command rules as given (normalised), for ACL LIST and ACL GETUSER.
    command_rules: Vec<String>,
    /// `~*` given: every key. Vesta has no key patterns.
    pub all_keys: bool,
    pub all_channels: bool,
    /// Bit `n`: database (namespace) `n` may be used.
    pub dbs: u32,
}

impl User {
    /// A user as `ACL SETUSER name` creates it: off, no password, no commands, no keys; every
    /// database (so that a rule line written for Redis means what it meant there).
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            allowed: BTreeSet::new(),
            command_rules: Vec::new(),
            all_keys: false,
            all_channels: false,
            dbs: ALL_DBS,
        }
    }

    /// Redis's default user: `on nopass ~* &* +@all`, every database.
    pub fn open_default() -> User {
        let mut u = User::new("default");
        for r in ["on", "nopass", "~*", "&*", "+@all"] {
            // These rules are fixed and valid.
            let _ = u.apply(r);
        }
        u
    }

    /// Parses a line `name rule rule …`.
    pub fn parse_line(line: &str) -> Result<User, RuleError> {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or_else(|| bad(line, "an ACL user line starts with the user's name"))?;
        if name.starts_with(['>', '<', '#', '!', '~', '&', '+', '-', '%']) || name.contains('=') {
            return Err(bad(name, "an ACL user line starts with the user's name"));
        }
        let mut user = User::new(name);
        for rule in words {
            user.apply(rule)?;
        }
        Ok(user)
    }

    /// Applies one rule, in Redis's order-sensitive way.
    pub fn apply(&mut self, rule: &str) -> Result<(), RuleError> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" | "~*" | "%rw~*" => self.all_keys = true,
            "resetkeys" => self.all_keys = false,
            "allchannels" | "&*" => self.all_channels = true,
            "resetchannels" => self.all_channels = false,
            "allcommands" | "+@all" => self.set_all_commands(true),
            "nocommands" | "-@all" => self.set_all_commands(false),
            "alldbs" => self.dbs = ALL_DBS,
            "resetdbs" => self.dbs = 0,
            "clearselectors" => {}
            "reset" => *self = User::new(&self.name.clone()),
            _ => return self.apply_with_argument(rule, &lower),
        }
        Ok(())
    }

    fn apply_with_argument(&mut self, rule: &str, lower: &str) -> Result<(), RuleError> {
        if let Some(pass) = rule.strip_prefix('>') {
            let h = hash_password(pass.as_bytes());
            self.nopass = false;
            if !self.passwords.contains(&h) {
                self.passwords.push(h);
            }
        } else if let Some(pass) = rule.strip_prefix('<') {
            let h = hash_password(pass.as_bytes());
            let before = self.passwords.len();
            self.passwords.retain(|p| *p != h);
            if self.passwords.len() == before {
                return Err(bad(rule, "no such password"));
            }
        } else if let Some(hash) = rule.strip_prefix('#') {
            let h = parse_hex_hash(hash).ok_or_else(|| {
                bad(
                    rule,
                    "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters",
                )
            })?;
            self.nopass = false;
            if !self.passwords.contains(&h) {
                self.passwords.push(h);
            }
        } else if let Some(hash) = rule.strip_prefix('!') {
            let h = parse_hex_hash(hash).ok_or_else(|| bad(rule, "Syntax error"))?;
            let before = self.passwords.len();
            self.passwords.retain(|p| *p != h);
            if self.passwords.len() == before {
                return Err(bad(rule, "no such password"));
            }
        } else if rule.starts_with('~') || rule.starts_with('%') {
            return Err(bad(rule, "Vesta supports only '~*' (allkeys): key patterns are not implemented; bind users to databases with db=…"));
        } else if rule.starts_with('&') {
            // Vesta has no pub/sub: channel patterns restrict nothing, and are accepted for Redis rule lines.
        } else if rule.starts_with('(') {
            return Err(bad(rule, "selectors are not supported by Vesta"));
        } else if let Some(list) = lower.strip_prefix("db=") {
            let mut dbs = 0u32;
            for part in list.split(',') {
                match part.parse::<u32>() {
                    Ok(db) if db < DATABASES => dbs |= 1 << db,
                    _ => return Err(bad(rule, "The provided database ID is out of range")),
                }
            }
            self.dbs = dbs;
        } else if let Some(cat) = lower.strip_prefix("+@") {
            self.set_category(rule, cat, true)?;
        } else if let Some(cat) = lower.strip_prefix("-@") {
            self.set_category(rule, cat, false)?;
        } else if let Some(cmd) = lower.strip_prefix('+') {
            self.set_command(rule, cmd, true)?;
        } else if let Some(cmd) = lower.strip_prefix('-') {
            self.set_command(rule, cmd, false)?;
        } else {
            return Err(bad(rule, "Syntax error"));
        }
        Ok(())
    }

    fn set_all_commands(&mut self, on: bool) {
        self.allowed = if on { categories::COMMANDS.iter().map(|(n, _)| *n).collect() } else { BTreeSet::new() };
        self.command_rules = vec![if on { "+@all" } else { "-@all" }.to_string()];
    }

    fn set_category(&mut self, rule: &str, cat: &str, on: bool) -> Result<(), RuleError> {
        if !categories::ALL.contains(&cat) {
            return Err(bad(rule, "Unknown command or category name in ACL"));
        }
        for name in categories::commands_in(cat) {
            self.set(name, on);
        }
        self.command_rules.push(format!("{}@{cat}", if on { '+' } else { '-' }));
        Ok(())
    }

    fn set_command(&mut self, rule: &str, cmd: &str, on: bool) -> Result<(), RuleError> {
        let known: Vec<&'static str> = categories::COMMANDS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n == cmd || (!cmd.contains('|') && n.strip_prefix(cmd).is_some_and(|r| r.starts_with('|'))))
            .collect();
        // Denying a Redis command Vesta does not have (`-debug`) denies nothing and is fine; allowing
        // one is a mistake worth a clear error.
        if known.is_empty() && on {
            return Err(bad(rule, "Unknown command or category name in ACL"));
        }
        for name in known {
            self.set(name, on);
        }
        self.command_rules.push(format!("{}{cmd}", if on { '+' } else { '-' }));
        Ok(())
    }

    fn set(&mut self, name: &'static str, on: bool) {
        if on {
            self.allowed.insert(name);
        } else {
            self.allowed.remove(name);
        }
    }

    /// Whether the user may run the command of this full name.
    pub fn may_run(&self, full_name: &str) -> bool {
        self.allowed.contains(full_name)
    }

    pub fn may_use_db(&self, db: u32) -> bool {
        db < DATABASES && self.dbs & (1 << db) != 0
    }

    pub fn first_db(&self) -> Option<u32> {
        (0..DATABASES).find(|&db| self.may_use_db(db))
    }

    /// A password is needed to log in as this user (it is not `nopass`).
    pub fn needs_password(&self) -> bool {
        !self.nopass
    }

    /// Whether `password` is one of the user's: every stored hash is compared, each in constant time,
    /// so that the time taken says nothing about which (or whether one) matched.
    pub fn password_matches(&self, password: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        let given = hash_password(password);
        self.passwords.iter().fold(0u8, |found, h| found | h[..].ct_eq(&given[..]).unwrap_u8()) == 1
    }

    pub fn password_hashes(&self) -> Vec<String> {
        self.passwords.iter().map(hex).collect()
    }

    /// The command rules in ACL LIST's form: they start from `-@all` unless they start from `+@all`.
    pub fn command_rules(&self) -> String {
        let mut rules = self.command_rules.clone();
        if rules.first().is_none_or(|r| r.as_str() != "+@all" && r.as_str() != "-@all") {
            rules.insert(0, "-@all".into());
        }
        rules.join(" ")
    }

    pub fn keys_rule(&self) -> &'static str {
        if self.all_keys {
            "~*"
        } else {
            "resetkeys"
        }
    }

    pub fn channels_rule(&self) -> &'static str {
        if self.all_channels {
            "&*"
        } else {
            "resetchannels"
        }
    }

    /// `alldbs`, `resetdbs` or `db=0,3`.
    pub fn dbs_rule(&self) -> String {
        match self.dbs {
            ALL_DBS => "alldbs".into(),
            0 => "resetdbs".into(),
            _ => {
                let list: Vec<String> = (0..DATABASES).filter(|&d| self.may_use_db(d)).map(|d| d.to_string()).collect();
                format!("db={}", list.join(","))
            }
        }
    }

    /// The user as one ACL LIST line.
    pub fn describe(&self) -> String {
        let mut parts = vec!["user".to_string(), self.name.clone(), if self.enabled { "on" } else { "off" }.into()];
        if self.nopass {
            parts.push("nopass".into());
        }
        parts.extend(self.password_hashes().into_iter().map(|h| format!("#{h}")));
        parts.push(self.keys_rule().into());
        parts.push(self.channels_rule().into());
        parts.push(self.dbs_rule());
        parts.push(self.command_rules());
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // "test"

    #[test]
    fn rules_build_a_user_like_redis() {
        let u = User::parse_line("alice on >pw ~* &* db=0,3 +@read +@write -@dangerous").unwrap();
        assert!(u.enabled && !u.nopass);
        assert!(u.password_matches(b"pw") && !u.password_matches(b"pW") && !u.password_matches(b""));
        assert!(u.may_run("get") && u.may_run("set") && !u.may_run("flushall") && !u.may_run("keys"));
        assert!(!u.may_run("auth"), "connection commands are not in @read/@write");
        assert!(u.may_use_db(0) && u.may_use_db(3) && !u.may_use_db(1) && !u.may_use_db(16));
        assert_eq!(u.first_db(), Some(0));
        assert_eq!(
            u.describe(),
            "user alice on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~* &* db=0,3 \
             -@all +@read +@write -@dangerous"
        );
        assert!(!u.describe().contains(">pw"), "no clear password kept");

        let h = User::parse_line(&format!("bob on #{PASS_HASH} allkeys allcommands -flushall")).unwrap();
        assert!(h.password_matches(b"test") && !h.password_matches(b"pw"));
        assert!(h.may_run("client|kill") && !h.may_run("flushall"));
        assert_eq!(h.dbs_rule(), "alldbs");
        assert!(h.describe().ends_with("resetchannels alldbs +@all -flushall"), "{}", h.describe());

        let c = User::parse_line("carol on nopass +client|id +get -debug").unwrap();
        assert!(c.may_run("client|id") && !c.may_run("client|kill") && c.may_run("get"));
        assert!(c.password_matches(b"anything"));
        let all_client = User::parse_line("dave +client").unwrap();
        assert!(all_client.may_run("client|kill") && all_client.may_run("client") && !all_client.enabled);
        assert_eq!(User::open_default().describe(), "user default on nopass ~* &* alldbs +@all");
    }

    #[test]
    fn bad_rules_are_named() {
        for (line, rule) in [
            ("x on +@nope", "+@nope"),
            ("x on +hset", "+hset"),
            ("x on #abc", "#abc"),
            ("x on db=16", "db=16"),
            ("x on db=a", "db=a"),
            ("x on ~foo:*", "~foo:*"),
            ("x on (+get)", "(+get)"),
            ("x on whatever", "whatever"),
            ("x on <nope", "<nope"),
        ] {
            let e = User::parse_line(line).unwrap_err();
            assert_eq!(e.rule, rule, "{line}");
            assert!(e.to_string().starts_with(&format!("Error in ACL SETUSER modifier '{rule}': ")), "{e}");
        }
        assert!(User::parse_line("").is_err());
        assert!(User::parse_line(">pw on").is_err());
    }

    #[test]
    fn resetting_rules() {
        let u = User::parse_line("u on >a >b <a resetdbs db=2 nopass").unwrap();
        assert!(u.nopass && u.password_hashes().is_empty());
        assert_eq!(u.dbs_rule(), "db=2");
        let r = User::parse_line("u on >a +@all reset").unwrap();
        assert_eq!(r, User::new("u"));
        let none = User::parse_line("u on resetdbs").unwrap();
        assert_eq!((none.first_db(), none.dbs_rule()), (None, "resetdbs".to_string()));
    }
}
