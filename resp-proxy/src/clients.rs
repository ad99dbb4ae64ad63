//! The proxy's client connections, for CLIENT LIST and CLIENT KILL.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::session::Session;

/// What CLIENT LIST shows of a connection; refreshed when a connection command changes it.
/// What CLIENT LIST shows of a connection's choices.
#[derive(Clone, Default)]
pub struct Details {
    name: Option<Bytes>,
    db: u32,
    resp3: bool,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    user: String,
}

impl Details {
    pub fn of(s: &Session) -> Details {
        Details {
            name: s.name.clone(),
            db: s.db,
            resp3: s.resp3,
            lib_name: s.lib_name.clone(),
            lib_ver: s.lib_ver.clone(),
            user: s.user.name.clone(),
        }
    }
}

pub struct Client {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    created: Instant,
    details: Mutex<Details>,
    killed: AtomicBool,
    /// Wakes the connection's task when it is killed.
    pub kill: Notify,
    /// Unparsed input bytes held, and the input buffer's spare room (CLIENT LIST `qbuf`, `qbuf-free`).
    qbuf: AtomicUsize,
    qbuf_free: AtomicUsize,
}

impl Client {
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Records the connection's input buffer for CLIENT LIST.
    pub fn set_query_buffer(&self, len: usize, free: usize) {
        self.qbuf.store(len, Ordering::Relaxed);
        self.qbuf_free.store(free, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Clients {
    by_id: DashMap<u64, Arc<Client>>,
}

/// Which clients CLIENT KILL selects (all given filters must match).
#[derive(Default)]
pub struct KillFilter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    /// `SKIPME yes` (the default): never the calling connection.
    pub skip: Option<u64>,
    /// `MAXAGE n`: only connections older than n seconds.
    pub max_age: Option<u64>,
    /// A TYPE or USER no Vesta client has (every client is a normal client of the default user).
    pub nobody: bool,
}

impl Clients {
    pub fn register(&self, s: &Session) -> Arc<Client> {
        let client = Arc::new(Client {
            id: s.id,
            peer: s.peer,
            local: s.local,
            created: s.created,
            details: Mutex::default(),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            qbuf: AtomicUsize::new(0),
            qbuf_free: AtomicUsize::new(0),
        });
        self.by_id.insert(s.id, client.clone());
        client
    }

    pub fn unregister(&self, id: u64) {
        self.by_id.remove(&id);
    }

    /// Copies what CLIENT LIST shows from the session.
    pub fn update(&self, s: &Session) {
        if let Some(c) = self.by_id.get(&s.id) {
            *c.details.lock() = Details::of(s);
        }
    }

    /// CLIENT LIST: one line per connection, `ids` only when given.
    pub fn list(&self, ids: Option<&[u64]>) -> String {
        let mut clients: Vec<Arc<Client>> = self.by_id.iter().map(|e| e.value().clone()).collect();
        clients.sort_by_key(|c| c.id);
        clients
            .iter()
            .filter(|c| ids.is_none_or(|ids| ids.contains(&c.id)))
            .map(|c| {
                let d = c.details.lock().clone();
                let qbuf = (c.qbuf.load(Ordering::Relaxed), c.qbuf_free.load(Ordering::Relaxed));
                line(c.id, c.peer, c.local, c.created, &d, qbuf, "client|list")
            })
            .collect()
    }

    /// Marks the matching connections killed and wakes them; returns how many.
    pub fn kill(&self, f: &KillFilter) -> usize {
        let mut n = 0;
        for c in self.by_id.iter() {
            let matches = f.id.is_none_or(|id| id == c.id)
                && f.addr.as_ref().is_none_or(|a| *a == c.peer.to_string())
                && f.laddr.as_ref().is_none_or(|a| *a == c.local.to_string())
                && f.skip != Some(c.id)
                && f.max_age.is_none_or(|age| c.created.elapsed().as_secs() > age)
                && !f.nobody;
            if matches && !c.killed.swap(true, Ordering::Relaxed) {
                c.kill.notify_one();
                n += 1;
            }
        }
        n
    }
}

/// One CLIENT LIST / CLIENT INFO line, with Redis's fields (those Vesta does not track read 0). `qbuf`:
/// the input buffer's unparsed bytes and spare room.
pub fn line(
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    created: Instant,
    d: &Details,
    qbuf: (usize, usize),
    cmd: &str,
) -> String {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    format!(
        "id={id} addr={peer} laddr={local} fd=0 name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 \
         multi=-1 qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
         cmd={cmd} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
        text(&d.name),
        created.elapsed().as_secs(),
        d.db,
        qbuf.0,
        qbuf.1,
        d.user,
        if d.resp3 { 3 } else { 2 },
        text(&d.lib_name),
        text(&d.lib_ver),
    )
}
