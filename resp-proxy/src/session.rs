//! Per-connection state, and the proxy-wide figures INFO reports.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bytes::Bytes;

/// What one client connection has chosen: protocol, database (namespace), name.
pub struct Session {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub resp3: bool,
    pub db: u32,
    /// The namespace of `db`: its decimal text, so `SELECT 3` keys never meet `SELECT 0` keys.
    pub namespace: Bytes,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub created: Instant,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr) -> Self {
        Session {
            id,
            peer,
            local,
            resp3: false,
            db: 0,
            namespace: Bytes::from_static(b"0"),
            name: None,
            lib_name: None,
            lib_ver: None,
            created: Instant::now(),
        }
    }

    pub fn select(&mut self, db: u32) {
        self.db = db;
        self.namespace = Bytes::from(db.to_string());
    }

    /// RESET: back to a fresh connection's state (the id stays).
    pub fn reset(&mut self) {
        let (id, peer, local) = (self.id, self.peer, self.local);
        *self = Session::new(id, peer, local);
    }
}

/// Proxy-wide counters.
pub struct Shared {
    pub started: Instant,
    pub run_id: String,
    pub port: u16,
    pub next_client_id: AtomicU64,
    pub connected_clients: AtomicU64,
    pub total_connections: AtomicU64,
    pub total_commands: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub zones: usize,
    pub write_quorum: usize,
    pub read_quorum: usize,
}
