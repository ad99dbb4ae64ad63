//! The RESP server: one task per client connection. Pipelined commands are parsed as they arrive and
//! run concurrently; replies leave strictly in request order (a `FuturesOrdered`). Connection-state
//! commands (SELECT, HELLO, …) take effect at their place in the stream, so each data command runs in
//! the namespace — and its reply is encoded in the protocol — that was current when it arrived.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cmd::connection::After;
use crate::cmd::{self, DataCommand};
use crate::config::ProxyConfig;
use crate::coordinator::{Coordinator, QuorumSettings};
use crate::metrics as m;
use crate::pool::LocalNodes;
use crate::resp::{parse_request, Reply, RequestLimits};
use crate::session::{Session, Shared};
use crate::topology::{StaticMap, Topology};

type Pending = Pin<Box<dyn Future<Output = (bool, Reply)> + Send>>;

pub struct Proxy {
    pub coordinator: Arc<Coordinator>,
    pub shared: Shared,
    limits: RequestLimits,
    max_clients: usize,
    max_pipeline: usize,
}

impl Proxy {
    pub fn new(config: &ProxyConfig, topology: &Topology, port: u16, locals: &LocalNodes) -> Arc<Self> {
        let settings = QuorumSettings {
            write_quorum: topology.write_quorum,
            read_quorum: topology.read_quorum,
            deadline: Duration::from_millis(config.deadline_ms),
            origin: config.origin,
        };
        let map = Arc::new(StaticMap::new(topology));
        let coordinator = Coordinator::new(map, Duration::from_millis(config.node_timeout_ms), settings, locals);
        let shared = Shared {
            started: Instant::now(),
            run_id: format!("{:040x}", rand::random::<u128>()),
            port,
            next_client_id: 1.into(),
            connected_clients: 0.into(),
            total_connections: 0.into(),
            total_commands: 0.into(),
            rejected_connections: 0.into(),
            zones: topology.zone_count(),
            write_quorum: topology.write_quorum,
            read_quorum: topology.read_quorum,
        };
        Arc::new(Proxy {
            coordinator,
            shared,
            limits: RequestLimits::default(),
            max_clients: config.max_clients,
            max_pipeline: config.max_pipeline,
        })
    }
}

/// Runs a proxy from its configuration until `shutdown`; `on_listening` gets the bound address.
pub async fn run(
    config: &ProxyConfig,
    topology: &Topology,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    run_with_local_nodes(config, topology, &LocalNodes::new(), on_listening, shutdown).await
}

/// [`run`], with some store nodes of the topology living in this process (`vesta dev`).
pub async fn run_with_local_nodes(
    config: &ProxyConfig,
    topology: &Topology,
    locals: &LocalNodes,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    topology.validate()?;
    let listener = TcpListener::bind(config.listen).await.map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let proxy = Proxy::new(config, topology, addr.port(), locals);
    on_listening(addr);
    serve(proxy, listener, shutdown).await;
    Ok(())
}

pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        proxy.shared.total_connections.fetch_add(1, Ordering::Relaxed);
                        let clients = proxy.shared.connected_clients.fetch_add(1, Ordering::Relaxed) + 1;
                        metrics::gauge!(m::CLIENT_CONNECTIONS).increment(1.0);
                        if clients as usize > proxy.max_clients {
                            proxy.shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
                            let mut s = stream;
                            let _ = s.write_all(b"-ERR max number of clients reached\r\n").await;
                        } else if let Err(e) = connection(&proxy, stream, peer).await {
                            tracing::debug!(%peer, error = %e, "client connection ended");
                        }
                        proxy.shared.connected_clients.fetch_sub(1, Ordering::Relaxed);
                        metrics::gauge!(m::CLIENT_CONNECTIONS).decrement(1.0);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn connection(proxy: &Arc<Proxy>, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let local = stream.local_addr()?;
    let (mut rd, mut wr) = stream.into_split();
    let id = proxy.shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(id, peer, local);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut order = KeyOrder::default();
    // No more requests are read once set: the client hung up, sent QUIT, or broke the protocol.
    let mut closing = false;
    loop {
        if in_flight.is_empty() {
            order.last.clear();
        }
        while !closing && in_flight.len() < proxy.max_pipeline {
            match parse_request(&mut input, &proxy.limits) {
                Ok(None) => break,
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => {
                    let (pending, after) = dispatch(proxy, &mut session, &mut order, args);
                    in_flight.push_back(pending);
                    if let After::Close = after {
                        closing = true;
                    }
                }
                Err(e) => {
                    let reply = Reply::Error(format!("ERR {e}"));
                    in_flight.push_back(Box::pin(futures::future::ready((session.resp3, reply))));
                    closing = true;
                }
            }
        }
        if closing && in_flight.is_empty() {
            wr.shutdown().await.ok();
            return Ok(());
        }
        tokio::select! {
            Some((resp3, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                reply.encode(resp3, &mut output);
                // Everything else already finished goes out in the same write.
                while let Some(Some((resp3, reply))) = in_flight.next().now_or_never() {
                    reply.encode(resp3, &mut output);
                }
                wr.write_all(&output).await?;
                output.clear();
            }
            read = rd.read_buf(&mut input), if !closing && in_flight.len() < proxy.max_pipeline => {
                if read? == 0 {
                    // Half-closed: answer what was sent, then go.
                    closing = true;
                    while let Ok(Some(args)) = parse_request(&mut input, &proxy.limits) {
                        if !args.is_empty() {
                            in_flight.push_back(dispatch(proxy, &mut session, &mut order, args).0);
                        }
                    }
                }
            }
        }
    }
}

/// Turns one request into its (ordered) pending reply, applying connection-state changes now.
/// Pipelined commands run concurrently, but a command must see the effect of every earlier command of
/// its connection on the same key (SET then GET answers the new value, as in Redis). Each key keeps the
/// completion signal of its latest command; a new command on that key waits for it first.
#[derive(Default)]
struct KeyOrder {
    /// The latest command on each key: its sender is dropped when it finishes.
    last: HashMap<(Bytes, Bytes), watch::Receiver<()>>,
}

/// Keys remembered before finished commands are forgotten (a connection that never pauses its pipeline
/// would otherwise remember every key it ever touched).
const KEY_ORDER_PRUNE_AT: usize = 4096;

impl KeyOrder {
    /// Registers a command on `keys`; returns what it must wait for, and the sender it drops when done.
    fn enter(&mut self, namespace: &Bytes, mut keys: Vec<Bytes>) -> (Vec<watch::Receiver<()>>, watch::Sender<()>) {
        if self.last.len() >= KEY_ORDER_PRUNE_AT {
            self.last.retain(|_, done| done.has_changed().is_ok());
        }
        keys.sort();
        keys.dedup();
        let (done_tx, done_rx) = watch::channel(());
        let waits =
            keys.into_iter().filter_map(|k| self.last.insert((namespace.clone(), k), done_rx.clone())).collect();
        (waits, done_tx)
    }
}

/// The key arguments of a command, by its table entry (first, last, step; last < 0 counts from the end).
fn command_keys(spec: &cmd::Spec, args: &[Bytes]) -> Vec<Bytes> {
    let (first, last, step) = spec.keys;
    if first <= 0 || step <= 0 {
        return Vec::new();
    }
    let last = if last < 0 { args.len() as i64 + last } else { last };
    (first..=last).step_by(step as usize).filter_map(|i| args.get(i as usize).cloned()).collect()
}

fn dispatch(proxy: &Arc<Proxy>, session: &mut Session, order: &mut KeyOrder, args: Vec<Bytes>) -> (Pending, After) {
    proxy.shared.total_commands.fetch_add(1, Ordering::Relaxed);
    let ready = |resp3: bool, reply: Reply| -> Pending { Box::pin(futures::future::ready((resp3, reply))) };
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let Some(spec) = cmd::spec(&name) else {
        return (ready(session.resp3, cmd::unknown_command(&args[0], &args[1..])), After::Continue);
    };
    metrics::counter!(m::COMMANDS, "cmd" => spec.name).increment(1);
    if !cmd::arity_ok(spec, args.len()) {
        return (ready(session.resp3, cmd::wrong_arity(spec.name)), After::Continue);
    }
    let params = &args[1..];
    if let Some((reply, after)) = cmd::connection::run(session, &name, params) {
        return (ready(session.resp3, reply), after);
    }
    if let Some(reply) = cmd::server::run(&proxy.shared, &name, params) {
        return (ready(session.resp3, reply), After::Continue);
    }
    let pending = match DataCommand::parse(&name, params) {
        Some(Ok(command)) => {
            let (coordinator, namespace, resp3) = (proxy.coordinator.clone(), session.namespace.clone(), session.resp3);
            let cmd_name = spec.name;
            let (earlier, done) = order.enter(&namespace, command_keys(spec, &args));
            Box::pin(async move {
                let started = Instant::now();
                for mut e in earlier {
                    // Resolves (with an error) once that command's sender is dropped, i.e. it finished.
                    let _ = e.wait_for(|_| false).await;
                }
                let reply = command.execute(coordinator, namespace).await;
                drop(done);
                metrics::histogram!(m::COMMAND_SECONDS, "cmd" => cmd_name).record(started.elapsed().as_secs_f64());
                (resp3, reply)
            }) as Pending
        }
        Some(Err(reply)) => ready(session.resp3, reply),
        None => ready(session.resp3, cmd::unknown_command(&args[0], params)),
    };
    (pending, After::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_order_waits_for_the_earlier_command_and_forgets_finished_ones() {
        let mut order = KeyOrder::default();
        let ns = Bytes::from_static(b"0");
        let (none, first) = order.enter(&ns, vec![Bytes::from_static(b"k")]);
        assert!(none.is_empty());
        let (mut waits, _second) = order.enter(&ns, vec![Bytes::from_static(b"k"), Bytes::from_static(b"k")]);
        assert_eq!(waits.len(), 1, "a key named twice waits once");
        let mut wait = waits.pop().unwrap();
        let waiter = tokio::spawn(async move { wait.wait_for(|_| false).await.is_err() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the earlier command runs");
        drop(first);
        assert!(waiter.await.unwrap());

        for i in 0..3 * KEY_ORDER_PRUNE_AT {
            let (_, done) = order.enter(&ns, vec![Bytes::from(i.to_string())]);
            drop(done);
        }
        assert!(order.last.len() <= KEY_ORDER_PRUNE_AT + 1, "{}", order.last.len());
    }
}
