//! Receiving peer sites' writes: the replication listener of a proxy.
//!
//! Each [`Replicate`] batch is installed through this site's own two-phase commit
//! ([`Coordinator::install_copy`]): on a write quorum, under the same leases as local writes, only where
//! the copy is newer by the order of copies. The batch is answered `Ok` only once every entry is
//! installed or found older than what is here, so the sender may count it as applied; any failure
//! answers an error and the sender sends the whole batch again (installing twice changes nothing).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use vesta_proto::frame::{Envelope, DEFAULT_MAX_FRAME};
use vesta_proto::serve::{Frames, Replies, Writer};
use vesta_proto::{LogEntry, Replicate, Reply, Request, Response, Status};
use vesta_proxy::coordinator::Coordinator;
use vesta_tls::{Admitted, Gate};

use crate::status::metric;

/// Batches being installed at once, over all connections.
const BATCHES_IN_FLIGHT: usize = 64;
/// Copies of one batch installed at once.
const INSTALLS_IN_FLIGHT: usize = 32;

/// Installs copies from other sites (a trait so that tests can count what arrives).
pub trait Installer: Send + Sync + 'static {
    /// `Ok(true)` installed, `Ok(false)` an equal or newer copy is here.
    fn install(&self, entry: LogEntry) -> impl Future<Output = Result<bool, String>> + Send;
}

impl Installer for Arc<Coordinator> {
    async fn install(&self, e: LogEntry) -> Result<bool, String> {
        self.install_copy(&e.namespace, &e.key, e.record).await.map_err(|e| e.to_string())
    }
}

/// Serves the replication listener until `shutdown`. `peers` maps the accepted origins to their names.
pub async fn serve<I: Installer>(
    listener: TcpListener,
    gate: Gate,
    installer: Arc<I>,
    peers: HashMap<u32, String>,
    shutdown: impl Future<Output = ()>,
) {
    let peers = Arc::new(peers);
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let (installer, peers, in_flight, gate) = (installer.clone(), peers.clone(), in_flight.clone(), gate.clone());
                    tokio::spawn(async move {
                        // Only peer sites get in: by a certificate of the cluster CA, or by address.
                        let ended = match gate.admit(stream, addr).await {
                            Err(e) => {
                                tracing::warn!(%addr, error = %e, "replication peer refused");
                                return;
                            }
                            Ok(Admitted::Plain(stream)) => {
                                connection(vesta_proto::serve::split(stream, DEFAULT_MAX_FRAME), installer, peers, in_flight).await
                            }
                            Ok(Admitted::Tls(session)) => {
                                let halves = vesta_proto::serve::split_io(*session, DEFAULT_MAX_FRAME);
                                connection(halves, installer, peers, in_flight).await
                            }
                        };
                        if let Err(e) = ended {
                            tracing::debug!(%addr, error = %e, "replication connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replication accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn connection<I: Installer, R: AsyncRead + Unpin>(
    (mut frames, tx, writer): (Frames<R>, Replies, Writer),
    installer: Arc<I>,
    peers: Arc<HashMap<u32, String>>,
    in_flight: Arc<Semaphore>,
) -> std::io::Result<()> {
    while let Some(frame) = frames.next().await {
        let (corr, body) = match frame? {
            Ok(env) => (env.corr, env.body),
            Err((corr, e)) => {
                let _ = tx.send(Envelope { corr, body: reply(Status::BadRequest, e.to_string()) });
                continue;
            }
        };
        let batch = match body {
            Request::Replicate(batch) => batch,
            Request::Ping => {
                let _ = tx.send(Envelope { corr, body: reply(Status::Ok, "") });
                continue;
            }
            other => {
                let why = format!("a replication listener takes replicate batches, not {}", other.kind());
                let _ = tx.send(Envelope { corr, body: reply(Status::BadRequest, why) });
                continue;
            }
        };
        // Waits here when many batches are being installed: the sender's frames then wait in the
        // socket, which is how it learns to slow down.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let (installer, peers, tx) = (installer.clone(), peers.clone(), tx.clone());
        tokio::spawn(async move {
            let body = apply(&*installer, &peers, batch).await;
            drop(permit);
            let _ = tx.send(Envelope { corr, body });
        });
    }
    writer.finish(tx).await
}

fn reply(status: Status, message: impl Into<String>) -> Response {
    if status == Status::Ok {
        return Response::Reply(Reply::default());
    }
    Response::Reply(Reply::error(status, message))
}

/// Installs one batch; `Ok` only if every entry is in (or older than what is here).
pub async fn apply<I: Installer>(installer: &I, peers: &HashMap<u32, String>, batch: Replicate) -> Response {
    let Some(peer) = peers.get(&batch.from_origin) else {
        return reply(Status::BadRequest, format!("origin {} is not a peer site of this one", batch.from_origin));
    };
    if let Some(e) = batch.entries.iter().find(|e| e.record.meta.origin != batch.from_origin) {
        // Only a site's own writes cross from it: a copy it received is never sent on.
        return reply(
            Status::BadRequest,
            format!("an entry of origin {} in a batch from origin {}", e.record.meta.origin, batch.from_origin),
        );
    }
    // Only the newest copy of each key matters: the others would be found older.
    let mut newest: HashMap<(bytes::Bytes, bytes::Bytes), LogEntry> = HashMap::new();
    for e in batch.entries {
        let k = (e.namespace.clone(), e.key.clone());
        match newest.get(&k) {
            Some(have) if have.record.meta.order() >= e.record.meta.order() => {}
            _ => {
                newest.insert(k, e);
            }
        }
    }
    let results: Vec<Result<bool, String>> = futures::stream::iter(newest.into_values())
        .map(|e| installer.install(e))
        .buffer_unordered(INSTALLS_IN_FLIGHT)
        .collect()
        .await;
    let (mut installed, mut older, mut failed) = (0u64, 0u64, None);
    for r in results {
        match r {
            Ok(true) => installed += 1,
            Ok(false) => older += 1,
            Err(e) => failed = Some(e),
        }
    }
    metrics::counter!(metric::RECEIVED_ENTRIES, "from" => peer.clone(), "outcome" => "installed").increment(installed);
    metrics::counter!(metric::RECEIVED_ENTRIES, "from" => peer.clone(), "outcome" => "older").increment(older);
    match failed {
        None => reply(Status::Ok, ""),
        Some(e) => {
            metrics::counter!(metric::APPLY_ERRORS, "from" => peer.clone()).increment(1);
            reply(Status::Overloaded, format!("not every copy could be installed, send again: {e}"))
        }
    }
}
