//! `--from redis://…`: Vesta's importer as a replica of a running Redis. It asks for a full
//! resynchronisation (`PSYNC ? -1`), loads the RDB the master sends (a `$len` bulk, or the diskless
//! `$EOF:<mark>` form), then applies the master's command stream in order through one proxy connection,
//! acknowledging what Vesta acknowledged (`REPLCONF ACK`, every second and on `REPLCONF GETACK`), until
//! Ctrl-C or SIGTERM.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redis::Value;
use vesta_resp::{RequestLimits, RequestParser};

use super::proxy::Proxy;
use super::rdb_source::{load, Sink};
use super::{ImportError, ImportFlags, Pacer, Tally};
use crate::admin::progress::Progress;

/// Where the master is and how to log in (`redis://[[user]:password@]host[:port]`, or `host:port`).
#[derive(Debug, PartialEq, Eq)]
struct Master {
    addr: String,
    user: Option<String>,
    password: Option<String>,
}

fn parse_url(url: &str) -> Result<Master, ImportError> {
    let bad = || ImportError::BadSource(format!("--from takes redis://[[USER]:PASSWORD@]HOST:PORT, not {url:?}"));
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    let (login, host) = match rest.rsplit_once('@') {
        Some((login, host)) => (Some(login), host),
        None => (None, rest),
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    let addr = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:6379")
    };
    let (user, password) = match login.map(|l| l.split_once(':')) {
        None => (None, None),
        Some(None) => (None, login.map(str::to_string)),
        Some(Some((u, p))) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
    };
    Ok(Master { addr, user, password })
}

/// The replication connection: commands out (shared with the acknowledging thread), lines and the
/// stream in.
struct Link<'a> {
    addr: String,
    /// Ctrl-C or SIGTERM: also while waiting for the master to prepare the RDB.
    stop: &'a AtomicBool,
    writer: Arc<Mutex<TcpStream>>,
    reader: BufReader<TcpStream>,
}

impl Link<'_> {
    fn failed(&self, message: impl Into<String>) -> ImportError {
        ImportError::Master { addr: self.addr.clone(), message: message.into() }
    }

    fn send(&self, args: &[&str]) -> Result<(), ImportError> {
        send(&self.writer, args).map_err(|e| self.failed(format!("write: {e}")))
    }

    /// The next line that is not a keep-alive (the master sends bare newlines while it prepares the RDB).
    fn line(&mut self) -> Result<String, ImportError> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(ImportError::Interrupted);
            }
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| ImportError::Master { addr: self.addr.clone(), message: format!("read: {e}") })?;
            if n == 0 {
                return Err(self.failed("closed the connection"));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if !line.is_empty() {
                return Ok(line.to_string());
            }
        }
    }

    /// Sends a command and expects a `+` reply.
    fn command(&mut self, args: &[&str]) -> Result<String, ImportError> {
        self.send(args)?;
        let reply = self.line()?;
        match reply.strip_prefix('+') {
            Some(ok) => Ok(ok.to_string()),
            None => Err(self.failed(format!("{} answered {reply}", args[0]))),
        }
    }
}

fn send(writer: &Mutex<TcpStream>, args: &[&str]) -> std::io::Result<()> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let mut w = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    w.write_all(out.as_bytes())
}

/// The RDB of a diskless sync: the bytes up to a 40-byte mark the master announced. Nothing follows the
/// mark until the replica acknowledges (Redis starts the command stream on the first `REPLCONF ACK`), so
/// the mark is the end of what has arrived.
struct UntilMark<'a, R> {
    inner: &'a mut R,
    mark: Vec<u8>,
    /// Bytes read but not passed on: they may be the start of the mark.
    held: Vec<u8>,
    ready: VecDeque<u8>,
    done: bool,
}

impl<R: Read> Read for UntilMark<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.ready.is_empty() && !self.done {
            let mut chunk = [0u8; 64 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the end of the RDB"));
            }
            self.held.extend_from_slice(&chunk[..n]);
            if self.held.ends_with(&self.mark) {
                self.held.truncate(self.held.len() - self.mark.len());
                self.done = true;
                self.ready.extend(self.held.drain(..));
            } else if self.held.len() > self.mark.len() {
                let settled = self.held.len() - self.mark.len();
                self.ready.extend(self.held.drain(..settled));
            }
        }
        let n = buf.len().min(self.ready.len());
        for (slot, b) in buf.iter_mut().zip(self.ready.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

/// The master's offset as its `INFO replication` says, sampled every second, for the lag.
#[derive(Default)]
struct Lag {
    master_offset: AtomicU64,
    /// (when, master offset) samples not yet applied here, oldest first.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Lag {
    fn sample(&self, offset: u64) {
        self.master_offset.store(offset, Ordering::SeqCst);
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.push_back((Instant::now(), offset));
        if s.len() > 3600 {
            s.pop_front();
        }
    }

    /// Bytes and seconds behind: the age of the oldest sample the applied offset has not reached.
    fn behind(&self, applied: u64) -> (u64, f64) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        while s.front().is_some_and(|(_, off)| *off <= applied) {
            s.pop_front();
        }
        let secs = s.front().map_or(0.0, |(t, _)| t.elapsed().as_secs_f64());
        (self.master_offset.load(Ordering::SeqCst).saturating_sub(applied), secs)
    }
}

fn master_offset(conn: &mut redis::Connection) -> Option<u64> {
    let info: String = redis::cmd("INFO").arg("replication").query(conn).ok()?;
    info.lines().find_map(|l| l.strip_prefix("master_repl_offset:")).and_then(|v| v.trim().parse().ok())
}

pub fn sync(flags: &ImportFlags, url: &str, stop: &AtomicBool, tally: &mut Tally) -> Result<(), ImportError> {
    let master = parse_url(url)?;
    let mut proxy = Proxy::connect(flags)?;
    let stream = TcpStream::connect(&master.addr)
        .map_err(|e| ImportError::Master { addr: master.addr.clone(), message: format!("cannot connect: {e}") })?;
    let _ = stream.set_nodelay(true);
    let io_error = |e: std::io::Error| ImportError::Master { addr: master.addr.clone(), message: e.to_string() };
    let local_port = stream.local_addr().map_err(io_error)?.port();
    // Redis's `repl-timeout`: a master preparing the RDB sends a newline every second, so a minute of
    // silence is a dead master, not a slow one.
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(io_error)?;
    let mut link = Link {
        addr: master.addr.clone(),
        stop,
        writer: Arc::new(Mutex::new(stream.try_clone().map_err(io_error)?)),
        reader: BufReader::with_capacity(1 << 20, stream.try_clone().map_err(io_error)?),
    };

    match (&master.user, &master.password) {
        (Some(u), Some(p)) => link.command(&["AUTH", u, p])?,
        (None, Some(p)) => link.command(&["AUTH", p])?,
        _ => String::new(),
    };
    link.command(&["PING"])?;
    link.command(&["REPLCONF", "listening-port", &local_port.to_string()])?;
    link.command(&["REPLCONF", "capa", "eof", "capa", "psync2"])?;
    let answer = link.command(&["PSYNC", "?", "-1"])?;
    let (replid, start) = match answer.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["FULLRESYNC", id, offset] => (id.to_string(), offset.parse::<u64>().ok()),
        _ => (String::new(), None),
    };
    let Some(start) = start else { return Err(link.failed(format!("PSYNC answered +{answer}"))) };
    eprintln!("full resynchronisation from {} (replication id {replid}, offset {start})", master.addr);

    let header = link.line()?;
    let mut pacer = Pacer::new(flags.rate);
    let read = Arc::new(AtomicU64::new(0));
    {
        let mut sink = Sink { proxy: &mut proxy, pacer: &mut pacer, batch: flags.batch as usize, stop, skip: 0 };
        let no_checkpoint = |_| Ok(());
        let loaded = if let Some(mark) = header.strip_prefix("$EOF:") {
            let mut progress = Progress::new("KB of the RDB", 0);
            let input = UntilMark {
                inner: &mut link.reader,
                mark: mark.as_bytes().to_vec(),
                held: Vec::new(),
                ready: VecDeque::new(),
                done: false,
            };
            let r = load(input, &mut sink, tally, &mut progress, &read, 0, no_checkpoint);
            progress.done();
            r
        } else if let Some(len) = header.strip_prefix('$').and_then(|l| l.parse::<u64>().ok()) {
            let kb = len.div_ceil(1024);
            let mut progress = Progress::new("KB of the RDB", kb);
            let r = load((&mut link.reader).take(len), &mut sink, tally, &mut progress, &read, kb, no_checkpoint);
            progress.done();
            r
        } else {
            return Err(link.failed(format!("expected the RDB, got {header:?}")));
        };
        let keys = loaded?;
        eprintln!("RDB loaded: {keys} keys; applying the command stream (Ctrl-C or SIGTERM to stop)");
    }
    // The RDB may have left the connection on any database; the stream says which with its own SELECT.
    proxy.selected_by_stream(None);

    let applied = Arc::new(AtomicU64::new(start));
    let lag = Arc::new(Lag::default());
    let finished = Arc::new(AtomicBool::new(false));
    // A diskless master starts the stream on the first acknowledgement.
    link.send(&["REPLCONF", "ACK", &start.to_string()])?;
    let ticker = {
        let (writer, applied, lag, finished) = (link.writer.clone(), applied.clone(), lag.clone(), finished.clone());
        let info =
            redis::Client::open(if url.starts_with("redis://") { url.to_string() } else { format!("redis://{url}") })
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)));
        std::thread::spawn(move || {
            let mut info = info.ok();
            while !finished.load(Ordering::SeqCst) {
                let _ = send(&writer, &["REPLCONF", "ACK", &applied.load(Ordering::SeqCst).to_string()]);
                if let Some(offset) = info.as_mut().and_then(master_offset) {
                    lag.sample(offset);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let result = stream_commands(flags, &mut link, &mut proxy, &mut pacer, stop, tally, start, &applied, &lag);
    finished.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = ticker.join();
    let (bytes, _) = lag.behind(applied.load(Ordering::SeqCst));
    eprintln!(
        "stopped at replication offset {} ({bytes} bytes behind the master's last known offset)",
        applied.load(Ordering::SeqCst)
    );
    result
}

/// Whether a command from the stream is written to Vesta: the writes Vesta knows, and the commands that
/// frame them. Everything else is counted as not applied.
fn forwarded(name: &str) -> bool {
    matches!(name, "select" | "multi" | "exec" | "discard")
        || vesta_proxy::cmd::spec(name).is_some_and(|s| s.flags.contains(&"write"))
}

#[allow(clippy::too_many_arguments)]
fn stream_commands(
    flags: &ImportFlags,
    link: &mut Link<'_>,
    proxy: &mut Proxy,
    pacer: &mut Pacer,
    stop: &AtomicBool,
    tally: &mut Tally,
    start: u64,
    applied: &AtomicU64,
    lag: &Lag,
) -> Result<(), ImportError> {
    let limits = RequestLimits { max_bulk_len: 512 * 1024 * 1024, ..RequestLimits::default() };
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::from(link.reader.buffer());
    link.reader.consume(buf.len());
    link.reader.get_ref().set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| link.failed(e.to_string()))?;
    let mut progress = Progress::new("commands applied", 0);
    let mut offset = start;
    let mut commands = 0u64;
    while !stop.load(Ordering::SeqCst) {
        // What has arrived, up to a batch: forwarded commands are pipelined, in order.
        let mut sent: Vec<Vec<Bytes>> = Vec::new();
        let mut ack_asked = false;
        while sent.len() < flags.batch as usize {
            let before = buf.len();
            let Some(args) = parser.parse(&mut buf, &limits).map_err(|e| link.failed(format!("stream: {e}")))? else {
                break;
            };
            offset += (before - buf.len()) as u64;
            let Some(first) = args.first() else { continue };
            let name = String::from_utf8_lossy(first).to_ascii_lowercase();
            commands += 1;
            match name.as_str() {
                "ping" => {}
                "replconf" if args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(b"getack")) => ack_asked = true,
                name if forwarded(name) => {
                    if name == "select" {
                        let db = args.get(1).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| d.parse().ok());
                        proxy.selected_by_stream(db);
                    }
                    proxy.queue(&args);
                    sent.push(args);
                }
                other => *tally.not_applied.entry(other.to_string()).or_default() += 1,
            }
        }
        if !sent.is_empty() {
            pacer.take(sent.len() as u64);
            let replies = proxy.flush()?;
            for (args, reply) in sent.iter().zip(replies) {
                let shown = || {
                    let words: Vec<String> =
                        args.iter().take(2).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                    words.join(" ")
                };
                match reply {
                    Err(e) => tally.refuse(shown(), &e),
                    // EXEC answers each queued command: an error among them is a refusal too.
                    Ok(Value::Array(items)) if args[0].eq_ignore_ascii_case(b"exec") => {
                        for item in items {
                            if let Value::ServerError(e) = item {
                                tally.refuse(
                                    "EXEC".into(),
                                    &format!("{} {}", e.code(), e.details().unwrap_or_default()),
                                );
                            }
                        }
                    }
                    Ok(_) if matches!(args[0].to_ascii_lowercase().as_slice(), b"select" | b"multi" | b"exec") => {}
                    Ok(_) => tally.applied += 1,
                }
            }
        }
        applied.store(offset, Ordering::SeqCst);
        if ack_asked {
            link.send(&["REPLCONF", "ACK", &offset.to_string()])?;
        }
        let (bytes, secs) = lag.behind(offset);
        progress.set_note(format!("({commands} received)  offset {offset}  lag {bytes} B / {secs:.1} s"));
        progress.set_done(tally.applied);
        if sent.is_empty() && !ack_asked {
            let mut chunk = [0u8; 64 * 1024];
            match link.reader.read(&mut chunk) {
                Ok(0) => return Err(link.failed("closed the replication connection")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(link.failed(format!("read: {e}"))),
            }
        }
    }
    progress.done();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let m = |addr: &str, user: Option<&str>, password: Option<&str>| Master {
            addr: addr.into(),
            user: user.map(Into::into),
            password: password.map(Into::into),
        };
        assert_eq!(parse_url("redis://127.0.0.1:6380").ok(), Some(m("127.0.0.1:6380", None, None)));
        assert_eq!(parse_url("redis://:pw@h:1/").ok(), Some(m("h:1", None, Some("pw"))));
        assert_eq!(parse_url("redis://u:pw@h").ok(), Some(m("h:6379", Some("u"), Some("pw"))));
        assert_eq!(parse_url("h:7000").ok(), Some(m("h:7000", None, None)));
        assert!(parse_url("redis://").is_err());
    }

    #[test]
    fn the_mark_ends_the_rdb_wherever_reads_split_it() {
        let mark = b"0123456789012345678901234567890123456789";
        let mut data = b"REDIS0010-payload-bytes".to_vec();
        data.extend_from_slice(mark);
        for split in [1, 7, 30, 41, 63] {
            // A reader that hands out at most `split` bytes at a time.
            struct Trickle<'a>(&'a [u8], usize);
            impl Read for Trickle<'_> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.1.min(self.0.len()).min(buf.len());
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut inner = Trickle(&data, split);
            let mut r =
                UntilMark { inner: &mut inner, mark: mark.to_vec(), held: vec![], ready: VecDeque::new(), done: false };
            let mut out = Vec::new();
            r.read_to_end(&mut out).expect("reads to the mark");
            assert_eq!(out, b"REDIS0010-payload-bytes", "split {split}");
        }
    }
}
