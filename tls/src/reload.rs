//! Configurations that follow their files: a task rebuilds the configuration when a file's modification
//! time or size changes, or when the process gets SIGHUP. A reload only swaps what *new* connections
//! get — a session already established keeps the configuration it started with, so none is dropped. A
//! reload that fails (a half-written file, a key that does not match) keeps the previous configuration
//! and says so in the log; the next change tries again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;

use crate::TlsError;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// A configuration and the files it was built from.
pub(crate) struct Reloading<T> {
    current: RwLock<Arc<T>>,
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    what: &'static str,
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

impl<T: Send + Sync + 'static> Reloading<T> {
    pub(crate) fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, TlsError> {
        let first = build()?;
        let me = Arc::new(Reloading { current: RwLock::new(Arc::new(first)), paths, build: Box::new(build), what });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watch(Arc::downgrade(&me)));
        }
        Ok(me)
    }

    pub(crate) fn current(&self) -> Arc<T> {
        self.current.read().clone()
    }

    /// Rebuilds from the files now.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let fresh = (self.build)()?;
        *self.current.write() = Arc::new(fresh);
        tracing::info!(what = self.what, "TLS configuration reloaded from its files");
        metrics::counter!("vesta_tls_reloads_total", "what" => self.what, "result" => "ok").increment(1);
        Ok(())
    }

    fn stamp(&self) -> Stamp {
        self.paths.iter().map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
    }

    fn try_reload(&self, why: &str) {
        if let Err(e) = self.reload() {
            tracing::warn!(what = self.what, why, error = %e, "TLS reload failed; keeping the previous configuration");
            metrics::counter!("vesta_tls_reloads_total", "what" => self.what, "result" => "failed").increment(1);
        }
    }
}

/// Runs while the configuration is alive (a weak handle: dropping the configuration ends the task).
async fn watch<T: Send + Sync + 'static>(me: std::sync::Weak<Reloading<T>>) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = match me.upgrade() {
        Some(m) => m.stamp(),
        None => return,
    };
    loop {
        let signalled = tokio::select! {
            _ = tokio::time::sleep(POLL) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let Some(me) = me.upgrade() else { return };
        let now = me.stamp();
        if signalled {
            me.try_reload("SIGHUP");
        } else if now != last {
            me.try_reload("files changed");
        }
        last = now;
    }
}
