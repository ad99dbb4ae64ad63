//! Loading an RDB stream (a file, or what a master sends in a full resynchronisation) into Vesta. The
//! `rdb` crate decodes it (RDB 1 to 13: every opcode, every encoding of every type); this side keeps
//! the strings, counts the keys of other types without decoding them, checks the trailing CRC-64, and
//! writes the strings through the proxy in pipelined, paced batches.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdb::{Filter, RdbDecoder, RdbValue};

use super::proxy::Proxy;
use super::{now_ms, ImportError, ImportFlags, Pacer, StringKey, Tally};
use crate::admin::progress::Progress;

/// A reader that computes Redis's CRC-64 of everything but the last 8 bytes it passed on (the RDB
/// trailer is the checksum of what precedes it), and counts the bytes for the progress line.
pub struct CrcReader<R> {
    inner: R,
    digest: crc::Digest<'static, u64>,
    /// The most recent bytes (at most 8), not yet in the digest.
    tail: Vec<u8>,
    read: Arc<AtomicU64>,
}

impl<R: Read> CrcReader<R> {
    pub fn new(inner: R, read: Arc<AtomicU64>) -> Self {
        CrcReader { inner, digest: vesta_proxy::rdb::CRC64.digest(), tail: Vec::with_capacity(16), read }
    }

    /// The CRC of all but the last 8 bytes, and those 8 bytes (the stored checksum, little-endian).
    pub fn finish(self) -> (u64, Option<u64>) {
        let stored = <[u8; 8]>::try_from(self.tail.as_slice()).ok().map(u64::from_le_bytes);
        (self.digest.finalize(), stored)
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 8 {
            let settled = self.tail.len() - 8;
            self.digest.update(&self.tail[..settled]);
            self.tail.drain(..settled);
        }
        Ok(n)
    }
}

/// Keeps only strings; counts every other key by its Redis type (the crate then skips its bytes).
#[derive(Default)]
struct OtherTypes(RefCell<BTreeMap<&'static str, u64>>);

impl OtherTypes {
    fn total(&self) -> u64 {
        self.0.borrow().values().sum()
    }
}

impl Filter for &OtherTypes {
    fn matches_type(&self, enc_type: u8) -> bool {
        if enc_type == vesta_proxy::rdb::TYPE_STRING {
            return true;
        }
        let name = vesta_proxy::rdb::type_name(enc_type).unwrap_or("unknown");
        *self.0.borrow_mut().entry(name).or_default() += 1;
        false
    }
}

/// Where to write and how fast, and how far an earlier run got.
pub struct Sink<'a> {
    pub proxy: &'a mut Proxy,
    pub pacer: &'a mut Pacer,
    pub batch: usize,
    pub stop: &'a AtomicBool,
    /// Keys (of every type, in file order) an earlier run finished: skipped.
    pub skip: u64,
}

/// Loads an RDB stream; `checkpoint(n)` is called after the first `n` keys are all written. Returns
/// the number of keys (of every type) in the stream.
pub fn load(
    input: impl Read,
    sink: &mut Sink,
    tally: &mut Tally,
    progress: &mut Progress,
    read: &Arc<AtomicU64>,
    kb_total: u64,
    mut checkpoint: impl FnMut(u64) -> Result<(), ImportError>,
) -> Result<u64, ImportError> {
    let mut reader = CrcReader::new(input, read.clone());
    let others = OtherTypes::default();
    let decoder = RdbDecoder::new(&mut reader, &others)?;
    let version = decoder.version();
    let (mut db, mut strings) = (0u32, 0u64);
    let mut batch = Vec::with_capacity(sink.batch);
    let stream = || -> Result<(), ImportError> {
        for item in decoder {
            match item? {
                RdbValue::SelectDb(n) => db = n,
                RdbValue::String { key, value, expiry } => {
                    let position = strings + others.total();
                    strings += 1;
                    if position < sink.skip {
                        tally.resumed += 1;
                        continue;
                    }
                    if expiry.is_some_and(|at| at <= now_ms()) {
                        tally.expired += 1;
                        continue;
                    }
                    batch.push(StringKey { db, key, value, expires_at: expiry });
                    if batch.len() >= sink.batch {
                        progress.set_done(read.load(Ordering::Relaxed) / 1024);
                        write_batch(sink, &mut batch, tally, progress)?;
                        checkpoint(position + 1)?;
                        if sink.stop.load(Ordering::SeqCst) {
                            return Err(ImportError::Interrupted);
                        }
                    }
                }
                // Metadata, and the checksum (checked below from what was read).
                _ => {}
            }
        }
        write_batch(sink, &mut batch, tally, progress)?;
        checkpoint(strings + others.total())
    };
    let streamed = stream();
    // Counted also when the import stops early, so that the report says what was seen.
    let keys = strings + others.total();
    for (t, n) in others.0.take() {
        *tally.other_types.entry(t).or_default() += n;
    }
    streamed?;
    progress.set_done(kb_total.max(read.load(Ordering::Relaxed) / 1024));
    // RDB 5 added the checksum; Redis writes zeros in its place with `rdbchecksum no`.
    if version >= 5 {
        if let (computed, Some(stored)) = reader.finish() {
            if stored != 0 && stored != computed {
                return Err(ImportError::Checksum { computed, stored });
            }
        }
    }
    Ok(keys)
}

/// Writes a batch of strings (`SET key value [PXAT ms]`, in their databases), retrying the ones the
/// proxy refused for a while: each write is idempotent and a key appears once in a dump, so a retry
/// cannot reorder anything.
fn write_batch(
    sink: &mut Sink,
    batch: &mut Vec<StringKey>,
    tally: &mut Tally,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 0;
    while !batch.is_empty() {
        attempt += 1;
        sink.pacer.take(batch.len() as u64);
        let mut slots = Vec::with_capacity(batch.len());
        for s in batch.iter() {
            if sink.proxy.select(s.db) {
                slots.push(None);
            }
            match s.expires_at {
                Some(at) => sink.proxy.queue(&[&b"SET"[..], &s.key, &s.value, b"PXAT", at.to_string().as_bytes()]),
                None => sink.proxy.queue(&[&b"SET"[..], &s.key, &s.value]),
            }
            slots.push(Some(s));
        }
        let replies = sink.proxy.flush()?;
        let mut failed = Vec::new();
        let (mut keys, mut bytes) = (0, 0);
        let mut last_error = String::new();
        for (slot, reply) in slots.into_iter().zip(replies) {
            match (slot, reply) {
                (None, Ok(_)) => {}
                (None, Err(e)) => {
                    return Err(ImportError::Proxy {
                        addr: sink.proxy.addr().to_string(),
                        message: format!("SELECT: {e}"),
                    })
                }
                (Some(s), Ok(_)) => {
                    *tally.written.entry(s.db).or_default() += 1;
                    tally.bytes += s.value.len() as u64;
                    keys += 1;
                    bytes += s.value.len() as u64;
                }
                (Some(s), Err(e)) => {
                    last_error = format!("SET {} (db {}): {e}", String::from_utf8_lossy(&s.key), s.db);
                    failed.push(s.clone());
                }
            }
        }
        progress.add(keys, bytes);
        if !failed.is_empty() && attempt >= ATTEMPTS {
            return Err(ImportError::Proxy {
                addr: sink.proxy.addr().to_string(),
                message: format!("{} writes still refused after {ATTEMPTS} attempts, e.g. {last_error}", failed.len()),
            });
        }
        if !failed.is_empty() {
            std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
        }
        *batch = failed;
    }
    Ok(())
}

/// The resume file: which dump (size and modification time), and how many of its keys are done.
struct Checkpoint {
    path: std::path::PathBuf,
    identity: String,
}

impl Checkpoint {
    const MAGIC: &'static str = "vesta-import-rdb";

    fn open(path: &Path, dump: &Path) -> Result<(Checkpoint, u64), ImportError> {
        let meta = std::fs::metadata(dump).map_err(ImportError::io(dump.display().to_string()))?;
        let mtime =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
        let identity = format!("{} {mtime}", meta.len());
        let checkpoint = Checkpoint { path: path.to_path_buf(), identity };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((checkpoint, 0)),
            Err(e) => return Err(ImportError::Io { what: path.display().to_string(), source: e }),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let done = match words.as_slice() {
            [magic, size, mtime, done] if *magic == Self::MAGIC => {
                if format!("{size} {mtime}") != checkpoint.identity {
                    return Err(ImportError::Resume(format!(
                        "{} is the checkpoint of another dump (size and time differ from {}); delete it to start over",
                        path.display(),
                        dump.display()
                    )));
                }
                done.parse().ok()
            }
            _ => None,
        };
        let done =
            done.ok_or_else(|| ImportError::Resume(format!("{} is not an import checkpoint", path.display())))?;
        Ok((checkpoint, done))
    }

    fn save(&self, done: u64) -> Result<(), ImportError> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{} {} {done}\n", Self::MAGIC, self.identity))
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(ImportError::io(self.path.display().to_string()))
    }
}

pub fn import_file(flags: &ImportFlags, path: &Path, stop: &AtomicBool, tally: &mut Tally) -> Result<(), ImportError> {
    let file = std::fs::File::open(path).map_err(ImportError::io(path.display().to_string()))?;
    let len = file.metadata().map_err(ImportError::io(path.display().to_string()))?.len();
    let (checkpoint, skip) = match &flags.resume_file {
        Some(f) => {
            let (c, done) = Checkpoint::open(f, path)?;
            (Some(c), done)
        }
        None => (None, 0),
    };
    let mut proxy = Proxy::connect(flags)?;
    if skip > 0 {
        eprintln!("resuming: the first {skip} keys of {} were imported by an earlier run", path.display());
    }
    let mut pacer = Pacer::new(flags.rate);
    let mut sink = Sink { proxy: &mut proxy, pacer: &mut pacer, batch: flags.batch as usize, stop, skip };
    let kb = len.div_ceil(1024);
    let mut progress = Progress::new("KB of the dump", kb);
    let read = Arc::new(AtomicU64::new(0));
    let input = std::io::BufReader::with_capacity(1 << 20, file);
    let result = load(input, &mut sink, tally, &mut progress, &read, kb, |done| match &checkpoint {
        Some(c) => c.save(done),
        None => Ok(()),
    });
    progress.done();
    result.map(|keys| eprintln!("{} read: {keys} keys", path.display()))
}
