//! Copying shards between store nodes, driven from here page by page (`Transfer`): the data goes
//! straight from the source node to the target; this side paces the pages and keeps count.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::stream::{self, StreamExt};
use vesta_proto::client::NodeConnection;
use vesta_proto::frame::DEFAULT_MAX_FRAME;
use vesta_proto::{Pong, Request, Response, Transfer, Transferred};

use super::progress::Progress;

/// The progress line, shared by the copies running at once.
pub type Bar = Arc<parking_lot::Mutex<Progress>>;

/// Runs `copy` for every item, `parallel` at a time, counting each one done on `bar`; the first error
/// is returned once the copies under way have ended (a rerun carries on from there).
pub async fn copy_each<T, F, Fut>(items: Vec<T>, parallel: usize, bar: &Bar, copy: F) -> Result<(), String>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let results: Vec<Result<(), String>> = stream::iter(items)
        .map(|item| {
            let copied = copy(item);
            async move {
                copied.await?;
                bar.lock().finish_one();
                Ok(())
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    bar.lock().done();
    results.into_iter().collect()
}

#[derive(Args, Clone, Debug)]
pub struct CopyOptions {
    /// Copy rate limit in KB/s over all shards at once (0: unlimited).
    #[arg(long, default_value_t = 10_240)]
    pub max_rate_kb: u64,
    /// Records per page.
    #[arg(long, default_value_t = 500)]
    pub page_keys: u32,
    /// Shards copied at the same time.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

/// The admin tool's mutual TLS to the store nodes (`--tls-*` of `vesta admin`), set once at start: every
/// command of one invocation talks to the same cluster.
pub static STORE_TLS: std::sync::OnceLock<Option<vesta_tls::ClientTls>> = std::sync::OnceLock::new();

/// One connection per store node, opened on first use.
#[derive(Default)]
pub struct Nodes {
    connections: tokio::sync::Mutex<HashMap<String, NodeConnection>>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Nodes {
    pub async fn call(&self, addr: &str, request: Request, timeout: Duration) -> Result<Response, String> {
        let conn = {
            let mut conns = self.connections.lock().await;
            match conns.get(addr).filter(|c| !c.is_closed()) {
                Some(c) => c.clone(),
                None => {
                    let tls = STORE_TLS.get().and_then(Option::as_ref);
                    let c = tokio::time::timeout(timeout, vesta_tls::dial(addr, tls, DEFAULT_MAX_FRAME))
                        .await
                        .map_err(|_| format!("{addr}: connect timed out"))?
                        .map_err(|e| e.to_string())?;
                    conns.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        match tokio::time::timeout(timeout, conn.call(request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.connections.lock().await.remove(addr);
                Err(format!("{addr}: {e}"))
            }
            Err(_) => Err(format!("{addr}: no answer within {timeout:?}")),
        }
    }

    pub async fn ping(&self, addr: &str, timeout: Duration) -> Option<Pong> {
        match self.call(addr, Request::Ping, timeout).await {
            Ok(Response::Pong(p)) => Some(p),
            _ => None,
        }
    }

    /// One page of `shard` from the node at `from` to the node at `to`. Transient failures (a node
    /// restarting, a target that has not seen the redistribution yet) are retried for about a minute.
    pub async fn transfer_page(
        &self,
        from: &str,
        to: &str,
        shard: u32,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Transferred, String> {
        let request =
            Request::Transfer(Transfer { shard, after: after.map(Into::into), limit, target: to.to_string() });
        let mut wait = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..30 {
            match self.call(from, request.clone(), CALL_TIMEOUT).await {
                Ok(Response::Transferred(t)) => return Ok(t),
                Ok(Response::Reply(r)) => last = format!("{from}: {} {}", r.status, r.message),
                Ok(other) => last = format!("{from}: unexpected answer {other:?}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        Err(format!("copying shard {shard} from {from} to {to}: {last}"))
    }
}

/// Paces copies to `kb_per_sec` over everything copied since it was made.
pub struct RateLimit {
    bytes_per_sec: f64,
    started: Instant,
    sent: tokio::sync::Mutex<u64>,
}

impl RateLimit {
    pub fn new(kb_per_sec: u64) -> Self {
        RateLimit { bytes_per_sec: kb_per_sec as f64 * 1024.0, started: Instant::now(), sent: Default::default() }
    }

    /// Waits until the budget allows another page, then counts the bytes the last page moved.
    pub async fn account(&self, bytes: u64) {
        if self.bytes_per_sec <= 0.0 {
            return;
        }
        let due = {
            let mut sent = self.sent.lock().await;
            *sent += bytes;
            Duration::from_secs_f64(*sent as f64 / self.bytes_per_sec)
        };
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}
