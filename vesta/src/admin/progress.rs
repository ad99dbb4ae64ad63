//! The progress line of long operations (redistribution, zone repair): shards done of all, records,
//! bytes, rate and time left. On a terminal it redraws one line; otherwise (logs, CI) it prints a line
//! every few seconds, so that progress is visible either way.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    keys: u64,
    bytes: u64,
    started: Instant,
    /// Done/bytes already there when this run started (a resumed copy), left out of the rates.
    resumed: (u64, u64),
    last_drawn: Option<Instant>,
    tty: bool,
    /// Said after the counts (a live import's replication lag).
    note: String,
}

const WIDTH: usize = 30;

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Self {
        Progress {
            what,
            total,
            done: 0,
            keys: 0,
            bytes: 0,
            started: Instant::now(),
            resumed: (0, 0),
            last_drawn: None,
            tty: std::io::stderr().is_terminal(),
            note: String::new(),
        }
    }

    /// Counts carried over from an earlier, interrupted run.
    pub fn resume(&mut self, done: u64, keys: u64, bytes: u64) {
        self.done = done;
        self.keys = keys;
        self.bytes = bytes;
        self.resumed = (done, bytes);
    }

    pub fn add(&mut self, keys: u64, bytes: u64) {
        self.keys += keys;
        self.bytes += bytes;
        self.draw(false);
    }

    /// Moves the bar to `done` of `total` (progress measured in bytes of a file rather than items).
    pub fn set_done(&mut self, done: u64) {
        // A total of 0 is unknown (a stream): nothing to clamp to.
        self.done = if self.total == 0 { done } else { done.min(self.total) };
        self.draw(false);
    }

    pub fn set_note(&mut self, note: String) {
        self.note = note;
    }

    pub fn finish_one(&mut self) {
        self.done += 1;
        self.draw(false);
    }

    pub fn line(&self) -> String {
        if self.note.is_empty() {
            self.counts()
        } else {
            format!("{}  {}", self.counts(), self.note)
        }
    }

    fn counts(&self) -> String {
        if self.total == 0 {
            // No known end (a stream): no bar and no ETA, only how far and how fast.
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            if self.keys == 0 && self.bytes == 0 {
                return format!("{} {}  {:.0}/s", self.done, self.what, self.done as f64 / secs);
            }
            return format!(
                "{} {}  {} records  {}  {}/s",
                self.done,
                self.what,
                self.keys,
                human_bytes(self.bytes as f64),
                human_bytes(self.bytes as f64 / secs)
            );
        }
        let filled = (self.done * WIDTH as u64).checked_div(self.total).map_or(WIDTH, |f| f as usize);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (self.bytes - self.resumed.1) as f64 / secs;
        let new_done = self.done - self.resumed.0;
        let eta = if self.done >= self.total {
            "0s".to_string()
        } else if new_done == 0 {
            "?".to_string()
        } else {
            let left = secs / new_done as f64 * (self.total - self.done) as f64;
            format!("{}s", left.ceil() as u64)
        };
        let bar = format!("[{}{}]", "#".repeat(filled.min(WIDTH)), "-".repeat(WIDTH - filled.min(WIDTH)));
        if self.keys == 0 && self.bytes == 0 {
            // A count of items and nothing copied (a comparison): records and bytes would say nothing.
            let rate = new_done as f64 / secs;
            return format!("{bar} {}/{} {}  {rate:.0}/s  ETA {eta}", self.done, self.total, self.what);
        }
        format!(
            "{bar} {}/{} {}  {} records  {}  {}/s  ETA {eta}",
            self.done,
            self.total,
            self.what,
            self.keys,
            human_bytes(self.bytes as f64),
            human_bytes(rate),
        )
    }

    pub fn draw(&mut self, force: bool) {
        let every = if self.tty { Duration::from_millis(100) } else { Duration::from_secs(2) };
        if !force && self.last_drawn.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_drawn = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = if self.tty { write!(err, "\r{}\x1b[K", self.line()) } else { writeln!(err, "{}", self.line()) };
        let _ = err.flush();
    }

    /// The final line.
    pub fn done(&mut self) {
        self.draw(true);
        if self.tty {
            eprintln!();
        }
    }
}

pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_shards_records_bytes_and_eta() {
        let mut p = Progress::new("shards", 4);
        p.tty = true;
        p.last_drawn = Some(Instant::now() + Duration::from_secs(60)); // draw nothing during the test
        p.add(10, 2048);
        p.finish_one();
        let line = p.line();
        assert!(line.starts_with(&format!("[{}{}] 1/4 shards", "#".repeat(7), "-".repeat(23))), "{line}");
        assert!(line.contains("10 records") && line.contains("2.0 KB"), "{line}");
        assert_eq!(human_bytes(1536.0 * 1024.0), "1.5 MB");
    }
}
