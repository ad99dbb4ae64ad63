//! ACL LOG: the latest refused AUTHs and commands, in Redis 7.2's format. A refusal like the one
//! before it (same reason, context, object and user, within a minute) adds to its count instead of
//! taking a new entry, as in Redis.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::resp::Reply;

/// Redis's default `acllog-max-len`.
const MAX_ENTRIES: usize = 128;
/// Redis's ACL_LOG_GROUPING_MAX_TIME_DELTA.
const GROUPING: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Auth,
    Command,
    Key,
    /// Vesta's (and Valkey 9's) database ACLs: a namespace the user is not bound to.
    Database,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Auth => "auth",
            Reason::Command => "command",
            Reason::Key => "key",
            Reason::Database => "database",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Toplevel,
    Multi,
    Lua,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::Toplevel => "toplevel",
            Context::Multi => "multi",
            Context::Lua => "lua",
        }
    }
}

/// What was refused.
pub struct Denial {
    pub reason: Reason,
    pub context: Context,
    pub object: String,
    pub username: String,
    pub client_info: String,
}

struct Entry {
    denial: Denial,
    count: u64,
    id: u64,
    created: Instant,
    updated: Instant,
    created_ms: u64,
    updated_ms: u64,
}

#[derive(Default)]
pub struct AclLog {
    entries: parking_lot::Mutex<(VecDeque<Entry>, u64)>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl AclLog {
    pub fn add(&self, denial: Denial) {
        let now = Instant::now();
        let mut guard = self.entries.lock();
        let (entries, next_id) = &mut *guard;
        let same = |e: &Entry| {
            e.denial.reason == denial.reason
                && e.denial.context == denial.context
                && e.denial.object == denial.object
                && e.denial.username == denial.username
                && now.duration_since(e.updated) < GROUPING
        };
        if let Some(pos) = entries.iter().position(same) {
            let mut e = entries.remove(pos).expect("position is in range");
            e.count += 1;
            e.updated = now;
            e.updated_ms = unix_ms();
            e.denial.client_info = denial.client_info;
            entries.push_front(e);
            return;
        }
        let ms = unix_ms();
        entries.push_front(Entry {
            denial,
            count: 1,
            id: *next_id,
            created: now,
            updated: now,
            created_ms: ms,
            updated_ms: ms,
        });
        *next_id += 1;
        entries.truncate(MAX_ENTRIES);
    }

    pub fn reset(&self) {
        self.entries.lock().0.clear();
    }

    /// The newest `count` entries (all when `None`), newest first.
    pub fn reply(&self, count: Option<usize>) -> Reply {
        let guard = self.entries.lock();
        let now = Instant::now();
        let entries = guard.0.iter().take(count.unwrap_or(usize::MAX)).map(|e| {
            let age = now.duration_since(e.created).as_secs_f64();
            Reply::Map(vec![
                (Reply::text("count"), Reply::Int(e.count as i64)),
                (Reply::text("reason"), Reply::text(e.denial.reason.as_str())),
                (Reply::text("context"), Reply::text(e.denial.context.as_str())),
                (Reply::text("object"), Reply::text(&e.denial.object)),
                (Reply::text("username"), Reply::text(&e.denial.username)),
                (Reply::text("age-seconds"), Reply::text(&format!("{age:.3}"))),
                (Reply::text("client-info"), Reply::text(&e.denial.client_info)),
                (Reply::text("entry-id"), Reply::Int(e.id as i64)),
                (Reply::text("timestamp-created"), Reply::Int(e.created_ms as i64)),
                (Reply::text("timestamp-last-updated"), Reply::Int(e.updated_ms as i64)),
            ])
        });
        Reply::Array(entries.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(object: &str) -> Denial {
        Denial {
            reason: Reason::Command,
            context: Context::Toplevel,
            object: object.into(),
            username: "alice".into(),
            client_info: "id=1".into(),
        }
    }

    #[test]
    fn groups_repeats_and_keeps_the_newest_first() {
        let log = AclLog::default();
        log.add(denial("set"));
        log.add(denial("flushall"));
        log.add(denial("set"));
        let Reply::Array(entries) = log.reply(None) else { panic!("not an array") };
        assert_eq!(entries.len(), 2);
        let Reply::Map(first) = &entries[0] else { panic!("not a map") };
        assert_eq!(first[0].1, Reply::Int(2));
        assert_eq!(first[3].1, Reply::text("set"));
        let Reply::Array(one) = log.reply(Some(1)) else { panic!("not an array") };
        assert_eq!(one.len(), 1);
        log.reset();
        assert_eq!(log.reply(None), Reply::Array(vec![]));
        for i in 0..200 {
            log.add(denial(&format!("c{i}")));
        }
        let Reply::Array(all) = log.reply(None) else { panic!("not an array") };
        assert_eq!(all.len(), MAX_ENTRIES);
    }
}
