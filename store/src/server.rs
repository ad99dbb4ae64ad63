//! The node's TCP front: frames in, operations run concurrently, replies out as they finish (matched
//! by correlation id, so out of order). A global cap on requests in flight answers the excess with
//! `Overloaded` at once rather than queueing without bound or silently dropping.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use vesta_proto::frame::Envelope;
use vesta_proto::serve::{Frames, Replies, Writer};
use vesta_proto::{Reply, Response, Status};
use vesta_tls::handshake::Side;
use vesta_tls::{Admitted, Gate, ServerTls};

use crate::metrics as m;
use crate::node::StoreNode;

#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_in_flight: usize,
    pub max_frame_bytes: usize,
}

/// Serves until `shutdown` resolves, then stops accepting, waits (bounded) for requests in flight to
/// finish, and returns.
pub async fn serve(
    node: Arc<StoreNode>,
    listener: TcpListener,
    limits: ServerLimits,
    gate: Gate,
    shutdown: impl Future<Output = ()>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "connection");
                    let (node, in_flight, max_frame) = (node.clone(), in_flight.clone(), limits.max_frame_bytes);
                    let max_in_flight = limits.max_in_flight;
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        // Only proxies, the admin tool and other store nodes get in: by certificate, or
                        // by address when TLS is off.
                        let ended = match gate.admit(stream, peer).await {
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "peer refused");
                                return;
                            }
                            Ok(Admitted::Plain(stream)) => {
                                metrics::gauge!(m::CONNECTIONS).increment(1.0);
                                connection(node, vesta_proto::serve::split(stream, max_frame), in_flight, max_in_flight).await
                            }
                            Ok(Admitted::Tls(session)) => {
                                metrics::gauge!(m::CONNECTIONS).increment(1.0);
                                connection(node, vesta_proto::serve::split_io(*session, max_frame), in_flight, max_in_flight).await
                            }
                        };
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
                    });
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    let drained = in_flight.acquire_many(limits.max_in_flight as u32);
    if tokio::time::timeout(Duration::from_secs(5), drained).await.is_err() {
        tracing::warn!("requests still in flight after 5 s; stopping anyway");
    }
}

async fn connection<R: AsyncRead + Unpin>(
    node: Arc<StoreNode>,
    (mut frames, tx, writer): (Frames<R>, Replies, Writer),
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
) -> std::io::Result<()> {
    while let Some(frame) = frames.next().await {
        let env = match frame? {
            Ok(env) => env,
            Err((corr, e)) => {
                let body = Response::Reply(Reply::error(Status::BadRequest, e.to_string()));
                let _ = tx.send(Envelope { corr, body });
                continue;
            }
        };
        // A batch counts as the requests in it (but never as more than the cap, or no batch that large
        // could ever run).
        let weight = match &env.body {
            vesta_proto::Request::Batch(items) => items.len().clamp(1, max_in_flight),
            _ => 1,
        };
        let Ok(permit) = in_flight.clone().try_acquire_many_owned(u32::try_from(weight).unwrap_or(u32::MAX)) else {
            metrics::counter!(m::OVERLOADED).increment(1);
            let body = Response::Reply(Reply::error(Status::Overloaded, "too many requests in flight"));
            let _ = tx.send(Envelope { corr: env.corr, body });
            continue;
        };
        // Most operations (prepare, read, abort, …) finish without waiting: run them right here and
        // spare a task. Only those that wait for the group commit get a task of their own.
        let corr = env.corr;
        let node2 = node.clone();
        let mut op = Box::pin(async move {
            metrics::gauge!(m::IN_FLIGHT).increment(weight as f64);
            let body = node2.handle(env.body).await;
            metrics::gauge!(m::IN_FLIGHT).decrement(weight as f64);
            drop(permit);
            body
        });
        match op.as_mut().now_or_never() {
            Some(body) => {
                let _ = tx.send(Envelope { corr, body });
            }
            None => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let body = op.await;
                    let _ = tx.send(Envelope { corr, body });
                });
            }
        }
    }
    // Let replies to the requests already running go out before the socket closes.
    writer.finish(tx).await
}

/// Runs a whole store node from its configuration until `shutdown`: opens the engine, serves metrics
/// and the protocol, and calls `on_listening` with the bound address (which differs from the configured
/// one when that asked for port 0).
pub async fn run(
    config: &crate::StoreConfig,
    on_listening: impl FnOnce(std::net::SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let node = StoreNode::open(config).map_err(|e| format!("open {}: {e}", config.data_dir.display()))?;
    run_node(node, config, on_listening, shutdown).await
}

/// [`run`] for a node opened by the caller (who may also call it directly, in-process).
pub async fn run_node(
    node: Arc<StoreNode>,
    config: &crate::StoreConfig,
    on_listening: impl FnOnce(std::net::SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    if let Some(addr) = config.metrics_listen {
        m::install_exporter(addr)?;
    }
    let tls = match &config.tls {
        Some(files) => {
            let server = ServerTls::internal(files, Side::StoreNode).map_err(|e| e.to_string())?;
            let client = vesta_tls::ClientTls::internal(files, Side::ToStore).map_err(|e| e.to_string())?;
            *node.peers.tls.write() = Some(client);
            Some(server)
        }
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let gate = Gate::new(tls, config.allowed_peers.clone(), addr, "store node");
    let housekeeping = node.spawn_housekeeping();
    on_listening(addr);
    let limits = ServerLimits { max_in_flight: config.max_in_flight, max_frame_bytes: config.max_frame_bytes };
    serve(node.clone(), listener, limits, gate, shutdown).await;
    housekeeping.abort();
    node.engine().sync().map_err(|e| format!("final sync: {e}"))?;
    Ok(())
}
