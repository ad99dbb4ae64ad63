//! The proxy's client connections, for CLIENT LIST and CLIENT KILL.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use futures::task::AtomicWaker;
use parking_lot::Mutex;

use crate::session::Session;

/// What CLIENT LIST shows of a connection's choices; refreshed when a connection command changes it.
#[derive(Clone, Default)]
pub struct Details {
    name: Option<Bytes>,
    db: u32,
    resp3: bool,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    user: Option<Arc<crate::acl::User>>,
}

impl Details {
    pub fn of(s: &Session) -> Details {
        Details {
            name: s.name.clone(),
            db: s.db,
            resp3: s.resp3,
            lib_name: s.lib_name.clone(),
            lib_ver: s.lib_ver.clone(),
            user: Some(s.user.clone()),
        }
    }
}

/// One connection as the rest of the proxy sees it. Kept small: a proxy holds one per client, and most
/// clients are idle most of the time.
pub struct Client {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    created: Instant,
    /// Set once a connection command changes something CLIENT LIST shows (most clients never do).
    details: Mutex<Option<Box<Details>>>,
    killed: AtomicBool,
    /// Wakes the connection's task ([`Client::wake`]): it was killed, went over its output limit, or may
    /// have been idle for longer than `timeout`; the task checks which.
    waker: AtomicWaker,
    woken: AtomicBool,
    /// Unparsed input bytes held, and the input buffer's spare room (CLIENT LIST `qbuf`, `qbuf-free`).
    qbuf: AtomicUsize,
    qbuf_free: AtomicUsize,
    /// Encoded replies finished and waiting behind an earlier one (output the socket has not taken yet is
    /// in `obuf`): what `client-output-buffer-limit` counts, with `obuf`.
    queued: AtomicU64,
    obuf: AtomicU64,
    /// Milliseconds (on the proxy's clock, see [`Clients::now_ms`]) since when the connection has been
    /// idle — nothing in flight, nothing to write; [`BUSY`] while it is not.
    idle_since_ms: AtomicU64,
}

/// `idle_since_ms` of a connection with a command in flight or replies to write.
pub const BUSY: u64 = u64::MAX;

impl Client {
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Records the connection's input buffer for CLIENT LIST.
    pub fn set_query_buffer(&self, len: usize, free: usize) {
        self.qbuf.store(len, Ordering::Relaxed);
        self.qbuf_free.store(free, Ordering::Relaxed);
    }

    /// Wakes the connection's task, which then looks at its state.
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once [`Client::wake`] was called since the last time it was.
    pub fn poll_woken(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.woken.swap(false, Ordering::Acquire) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// A reply of `bytes` finished; true when the connection now holds at least `hard` bytes of replies
    /// (0: no limit), in which case its task has been woken to close it.
    pub fn reply_finished(&self, bytes: usize, hard: u64) -> bool {
        let queued = self.queued.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        let over = hard > 0 && queued + self.obuf.load(Ordering::Relaxed) >= hard;
        if over {
            self.wake();
        }
        over
    }

    /// A finished reply of `bytes` left the queue (into the output buffer, or silenced).
    pub fn reply_taken(&self, bytes: usize) {
        self.queued.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    /// Replies finished and not yet written: queued ones and the unwritten output (`output` bytes).
    pub fn held_replies(&self, output: usize) -> u64 {
        self.obuf.store(output as u64, Ordering::Relaxed);
        self.queued.load(Ordering::Relaxed) + output as u64
    }

    /// The connection's name (CLIENT SETNAME), as last registered.
    pub fn name(&self) -> Option<Bytes> {
        self.details.lock().as_ref().and_then(|d| d.name.clone())
    }

    /// Idle since `ms` (`BUSY`: not idle).
    pub fn set_idle_since(&self, ms: u64) {
        self.idle_since_ms.store(ms, Ordering::Relaxed);
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
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            qbuf: AtomicUsize::new(0),
            qbuf_free: AtomicUsize::new(0),
            queued: AtomicU64::new(0),
            obuf: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(BUSY),
        });
        self.by_id.insert(s.id, client.clone());
        client
    }

    pub fn unregister(&self, id: u64) {
        self.by_id.remove(&id);
    }

    /// Whether the client `id` is connected to this proxy (CLIENT TRACKING's REDIRECT target).
    pub fn exists(&self, id: i64) -> bool {
        u64::try_from(id).is_ok_and(|id| self.by_id.contains_key(&id))
    }

    /// Copies what CLIENT LIST shows from the session.
    pub fn update(&self, s: &Session) {
        if let Some(c) = self.by_id.get(&s.id) {
            *c.details.lock() = Some(Box::new(Details::of(s)));
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
                let d = c.details.lock().as_deref().cloned().unwrap_or_default();
                let qbuf = (c.qbuf.load(Ordering::Relaxed), c.qbuf_free.load(Ordering::Relaxed));
                let obuf = c.obuf.load(Ordering::Relaxed) + c.queued.load(Ordering::Relaxed);
                line(c.id, c.peer, c.local, c.created, &d, (qbuf, obuf), "client|list")
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
                c.wake();
                n += 1;
            }
        }
        n
    }

    /// Wakes the connections idle since before `before_ms` (Redis's `timeout`: each closes itself if it
    /// is still idle when it looks).
    pub fn wake_idle(&self, before_ms: u64) -> usize {
        let mut n = 0;
        for c in self.by_id.iter() {
            let since = c.idle_since_ms.load(Ordering::Relaxed);
            if since != BUSY && since < before_ms {
                c.wake();
                n += 1;
            }
        }
        n
    }
}

/// One CLIENT LIST / CLIENT INFO line, with Redis's fields (those Vesta does not track read 0). `bufs`:
/// the input buffer's unparsed bytes and spare room, and the replies held (`omem`).
pub fn line(
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    created: Instant,
    d: &Details,
    bufs: ((usize, usize), u64),
    cmd: &str,
) -> String {
    let (qbuf, omem) = bufs;
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    format!(
        "id={id} addr={peer} laddr={local} fd=0 name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 \
         multi=-1 qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={omem} tot-mem=0 events=r \
         cmd={cmd} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
        text(&d.name),
        created.elapsed().as_secs(),
        d.db,
        qbuf.0,
        qbuf.1,
        d.user.as_ref().map_or("default", |u| u.name.as_str()),
        if d.resp3 { 3 } else { 2 },
        text(&d.lib_name),
        text(&d.lib_ver),
    )
}
