//! The import's one connection to a Vesta proxy: commands are queued, sent in one write, and their
//! replies read back in order (pipelining), so each batch costs one round trip. One connection keeps
//! a replication stream's commands in the master's order (the proxy answers a connection in order, and
//! a command sees the earlier ones of its connection on the same key).

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use redis::Value;

use super::ImportError;

pub struct Proxy {
    addr: String,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    parser: redis::Parser,
    out: Vec<u8>,
    queued: usize,
    /// The database the connection is on once the queued commands ran.
    selected: Option<u32>,
}

/// A reply: `Ok` or the error text the proxy answered.
pub type Outcome = Result<Value, String>;

impl Proxy {
    pub fn connect(flags: &super::ImportFlags) -> Result<Proxy, ImportError> {
        let addr = flags.proxy.as_str();
        let failed = |message: String| ImportError::Proxy { addr: addr.to_string(), message };
        let writer = TcpStream::connect(addr).map_err(|e| failed(format!("cannot connect: {e}")))?;
        let _ = writer.set_nodelay(true);
        // Far above the proxy's own deadline (1 s): only a hung proxy trips it.
        writer.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| failed(e.to_string()))?;
        let reader = BufReader::new(writer.try_clone().map_err(|e| failed(e.to_string()))?);
        let mut proxy = Proxy {
            addr: addr.to_string(),
            writer,
            reader,
            parser: redis::Parser::new(),
            out: Vec::new(),
            queued: 0,
            selected: None,
        };
        let auth = match (&flags.proxy_user, &flags.proxy_password) {
            (Some(user), Some(password)) => Some(vec!["AUTH", user.as_str(), password.as_str()]),
            (None, Some(password)) => Some(vec!["AUTH", password.as_str()]),
            _ => None,
        };
        if let Some(auth) = auth {
            if let Err(e) = proxy.round_trip(&auth)? {
                return Err(failed(format!("AUTH answered {e}")));
            }
        }
        match proxy.round_trip(&[b"PING"])? {
            Ok(_) => Ok(proxy),
            Err(e) => Err(failed(format!("PING answered {e}"))),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn queue<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            let a = a.as_ref();
            self.out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
        self.queued += 1;
    }

    /// Queues a SELECT unless the connection is on `db` already. Returns whether it queued one.
    pub fn select(&mut self, db: u32) -> bool {
        if self.selected == Some(db) {
            return false;
        }
        self.queue(&[b"SELECT".to_vec(), db.to_string().into_bytes()]);
        self.selected = Some(db);
        true
    }

    /// A SELECT that reached the proxy some other way (a replication stream's, queued with `queue`).
    pub fn selected_by_stream(&mut self, db: Option<u32>) {
        self.selected = db;
    }

    /// Sends what is queued and reads a reply for each queued command, in order.
    pub fn flush(&mut self) -> Result<Vec<Outcome>, ImportError> {
        let failed = |addr: &str, message: String| ImportError::Proxy { addr: addr.to_string(), message };
        self.writer.write_all(&self.out).map_err(|e| failed(&self.addr, format!("write: {e}")))?;
        self.out.clear();
        let mut replies = Vec::with_capacity(self.queued);
        for _ in 0..std::mem::take(&mut self.queued) {
            let value =
                self.parser.parse_value(&mut self.reader).map_err(|e| failed(&self.addr, format!("read: {e}")))?;
            replies.push(match value {
                Value::ServerError(e) => Err(format!("{} {}", e.code(), e.details().unwrap_or_default())),
                v => Ok(v),
            });
        }
        Ok(replies)
    }

    /// One command on its own.
    pub fn round_trip<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Outcome, ImportError> {
        self.queue(args);
        let mut replies = self.flush()?;
        replies.pop().ok_or_else(|| ImportError::Proxy { addr: self.addr.clone(), message: "no reply".into() })
    }
}
