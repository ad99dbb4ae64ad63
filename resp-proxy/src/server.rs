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

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vesta_proto::clock::{Clock, SkewedClock, SystemClock};

use crate::cmd::connection::After;
use crate::cmd::transaction::{self, Step};
use crate::cmd::{self, keyspace, DataCommand};
use crate::config::ProxyConfig;
use crate::coordinator::{Coordinator, KeyName, QuorumSettings};
use crate::limits::ClientLimits;
use crate::metrics as m;
use crate::pool::LocalNodes;
use crate::resp::{Reply, RequestParser};
use crate::session::{ReplyMode, Session, Shared};
use crate::topology::Topology;
use vesta_tls::handshake::Side;

type Pending = Pin<Box<dyn Future<Output = (bool, Reply)> + Send>>;

pub struct Proxy {
    pub coordinator: Arc<Coordinator>,
    pub shared: Shared,
    max_clients: usize,
    max_pipeline: usize,
}

impl Proxy {
    pub fn new(config: &ProxyConfig, topology: &Topology, port: u16, locals: &LocalNodes) -> Arc<Self> {
        let clock: Arc<dyn Clock> = match config.clock_offset_ms {
            0 => Arc::new(SystemClock::default()),
            offset => {
                tracing::warn!(offset_ms = offset, "test setting: this proxy's clock is deliberately off");
                Arc::new(SkewedClock::new(offset))
            }
        };
        Self::with_clock(config, topology, port, locals, clock)
    }

    /// [`Proxy::new`] on a given clock (tests drive time, or skew it).
    pub fn with_clock(
        config: &ProxyConfig,
        topology: &Topology,
        port: u16,
        locals: &LocalNodes,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let settings = QuorumSettings {
            write_quorum: topology.write_quorum,
            read_quorum: topology.read_quorum,
            deadline: Duration::from_millis(config.deadline_ms),
            origin: config.origin,
            max_clock_drift_ms: config.max_clock_drift_ms,
        };
        let coordinator =
            Coordinator::new(topology, Duration::from_millis(config.node_timeout_ms), settings, locals, clock);
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
            map_view: parking_lot::RwLock::new((topology.version, topology.down_zones.clone())),
            clients: Default::default(),
            config: parking_lot::Mutex::new(cmd::server::default_config(port, config.max_clients)),
            stats: Default::default(),
            limits: ClientLimits::new(config.proto_max_bulk_len, config.client_query_buffer_limit),
            query_buffer_disconnections: 0.into(),
            replication: Default::default(),
            encryption: coordinator.encryption().clone(),
            acl: config.build_acl().unwrap_or_else(|e| {
                // `run_proxy` refuses such a configuration before it gets here.
                tracing::error!(error = %e, "bad ACL configuration: nobody can log in");
                crate::acl::Acl::locked()
            }),
        };
        Arc::new(Proxy { coordinator, shared, max_clients: config.max_clients, max_pipeline: config.max_pipeline })
    }

    /// Routes by a new shard map version (or zone states) from now on.
    pub fn install(&self, topology: &Topology) -> Result<(), String> {
        self.coordinator.install(topology)?;
        *self.shared.map_view.write() = (topology.version, topology.down_zones.clone());
        Ok(())
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
    run_proxy(config, topology, locals, |addr, _| on_listening(addr), shutdown).await
}

/// [`run_with_local_nodes`], handing the running proxy to `on_started` (which may follow the cluster's
/// shard map and install new versions into its coordinator).
pub async fn run_proxy(
    config: &ProxyConfig,
    topology: &Topology,
    locals: &LocalNodes,
    on_started: impl FnOnce(SocketAddr, Arc<Proxy>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    topology.validate()?;
    config.build_acl().map_err(|e| e.to_string())?;
    let tls = config.client_port_tls()?;
    let store_tls = match &config.internal_tls {
        Some(files) => {
            Some(vesta_tls::ClientTls::internal(files, Side::ToStore).map_err(|e| format!("internal TLS: {e}"))?)
        }
        None => None,
    };
    let bind =
        |addr: SocketAddr| async move { TcpListener::bind(addr).await.map_err(|e| format!("listen on {addr}: {e}")) };
    let plain = if config.plaintext { Some(bind(config.listen).await?) } else { None };
    let secure = match (config.tls_listen(), tls) {
        (Some(addr), Some(tls)) => Some((bind(addr).await?, tls)),
        _ => None,
    };
    // The address reported (and INFO's tcp_port): the plaintext port, or the TLS one when it is alone.
    let first = plain.as_ref().or(secure.as_ref().map(|(l, _)| l)).ok_or("no client port configured")?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    let ring = crate::crypto::load_ring(config.encryption.keys_file.as_deref(), config.encryption.current_key)
        .map_err(|e| e.to_string())?;
    let proxy = Proxy::new(config, topology, addr.port(), locals);
    if let Some(ring) = ring {
        let bound = config.encryption.records_per_data_key;
        let sealer = Arc::new(crate::crypto::Sealer::with_bound(ring, bound));
        proxy.coordinator.encryption().enable(sealer, config.encryption.refuse_clear);
    }
    if let Some(tls) = store_tls {
        proxy.coordinator.pool().set_tls(tls);
    }
    if let Some((listener, _)) = &secure {
        if let Ok(tls_addr) = listener.local_addr() {
            tracing::info!(%tls_addr, "TLS client port");
        }
    }
    on_started(addr, proxy.clone());
    let shutdown = shutdown.shared();
    let plain = plain.map(|l| serve_port(proxy.clone(), l, None, shutdown.clone()));
    let secure = secure.map(|(l, tls)| serve_port(proxy.clone(), l, Some(tls), shutdown.clone()));
    match (plain, secure) {
        (Some(p), Some(s)) => {
            futures::future::join(p, s).await;
        }
        (Some(p), None) => p.await,
        (None, Some(s)) => s.await,
        (None, None) => {}
    }
    Ok(())
}

pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    serve_port(proxy, listener, None, shutdown).await
}

/// Serves one client port: plaintext, or TLS with `tls` (Redis's `tls-port`).
pub async fn serve_port(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Option<vesta_tls::ServerTls>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let proxy = proxy.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let stream = match tls {
                            None => ClientStream::Plain(stream),
                            // A failed handshake (plaintext on the TLS port, an unknown client
                            // certificate…) is counted and the socket closed; no Redis reply exists.
                            Some(tls) => match tls.accept(stream).await {
                                Ok(session) => ClientStream::Tls(Box::new(session)),
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "TLS client refused");
                                    return;
                                }
                            },
                        };
                        proxy.shared.total_connections.fetch_add(1, Ordering::Relaxed);
                        let clients = proxy.shared.connected_clients.fetch_add(1, Ordering::Relaxed) + 1;
                        metrics::gauge!(m::CLIENT_CONNECTIONS).increment(1.0);
                        if proxy.shared.acl.refuses_connection(peer.ip()) {
                            metrics::counter!(m::PROTECTED_MODE_REFUSALS).increment(1);
                            tracing::debug!(%peer, "protected mode: refused a client from beyond loopback");
                            let _ = refuse(stream, crate::acl::DENIED.as_bytes()).await;
                        } else if clients as usize > proxy.max_clients {
                            proxy.shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
                            let _ = refuse(stream, b"-ERR max number of clients reached\r\n").await;
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

async fn connection(proxy: &Arc<Proxy>, stream: ClientStream, peer: SocketAddr) -> std::io::Result<()> {
    match stream {
        ClientStream::Plain(tcp) => {
            let local = tcp.local_addr()?;
            let (mut rd, mut wr) = tcp.into_split();
            session(proxy, peer, local, &mut rd, &mut wr).await
        }
        ClientStream::Tls(tls) => {
            let local = tls.get_ref().0.local_addr()?;
            let (mut rd, mut wr) = tokio::io::split(*tls);
            session(proxy, peer, local, &mut rd, &mut wr).await
        }
    }
}

/// A client's connection: a bare socket, or a TLS session on the TLS port.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<vesta_tls::tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn session(
    proxy: &Arc<Proxy>,
    peer: SocketAddr,
    local: SocketAddr,
    rd: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let id = proxy.shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(id, peer, local);
    proxy.shared.acl.start_session(&mut session);
    let me = proxy.shared.clients.register(&session);
    let result = serve_client(proxy, &mut session, &me, rd, wr).await;
    proxy.shared.clients.unregister(id);
    result
}

async fn serve_client(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    me: &crate::clients::Client,
    rd: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(INPUT_BUFFER);
    let mut parser = RequestParser::new();
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut order = KeyOrder::default();
    // No more requests are read once set: the client hung up, sent QUIT, or broke the protocol.
    let mut closing = false;
    loop {
        if in_flight.is_empty() {
            order.clear();
        }
        // Read per pass, so that CONFIG SET takes effect for the next request.
        let limits = proxy.shared.limits.request_limits();
        let query_limit = proxy.shared.limits.query_buffer_limit();
        while !closing && in_flight.len() < proxy.max_pipeline {
            match parser.parse(&mut input, &limits) {
                Ok(None) => {
                    // What is left is one request still arriving (reads are capped to keep it in sight).
                    if input.len() > query_limit {
                        query_buffer_exceeded(proxy, session, input.len(), query_limit);
                        input = BytesMut::new();
                        parser = RequestParser::new();
                        closing = true;
                    }
                    break;
                }
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => {
                    let (pending, after) = dispatch(proxy, session, &mut order, args);
                    in_flight.push_back(pending);
                    if let After::Close = after {
                        closing = true;
                    }
                }
                Err(e) => {
                    metrics::counter!(m::PROTOCOL_ERRORS, "reason" => e.reason()).increment(1);
                    let reply = Reply::Error(format!("ERR {e}"));
                    in_flight.push_back(Box::pin(futures::future::ready((session.resp3, reply))));
                    closing = true;
                }
            }
        }
        shrink_input(&mut input);
        me.set_query_buffer(input.len(), input.capacity() - input.len());
        if me.is_killed() {
            // CLIENT KILL: drop the connection at once, as Redis does.
            return Ok(());
        }
        if closing && in_flight.is_empty() {
            wr.shutdown().await.ok();
            return Ok(());
        }
        // At most one byte past the query buffer limit, so that an over-long request is caught while it
        // arrives and memory stays bounded by the limit, whatever the socket holds.
        let room = (query_limit + 1).saturating_sub(input.len()).max(1);
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
            _ = me.kill.notified() => {}
            read = read_at_most(rd, &mut input, room), if !closing && in_flight.len() < proxy.max_pipeline => {
                if read? == 0 {
                    // Half-closed: answer what was sent, then go.
                    closing = true;
                    while let Ok(Some(args)) = parser.parse(&mut input, &limits) {
                        if !args.is_empty() {
                            in_flight.push_back(dispatch(proxy, session, &mut order, args).0);
                        }
                    }
                }
            }
        }
    }
}

/// Answers a connection with one error and closes it.
async fn refuse(stream: ClientStream, error: &[u8]) -> std::io::Result<()> {
    match stream {
        ClientStream::Plain(mut tcp) => tcp.write_all(error).await,
        ClientStream::Tls(mut tls) => {
            tls.write_all(error).await?;
            tls.shutdown().await
        }
    }
}

/// Reads what the socket has into `input`, at most `max` bytes.
async fn read_at_most(rd: &mut (impl AsyncRead + Unpin), input: &mut BytesMut, max: usize) -> std::io::Result<usize> {
    rd.read_buf(&mut input.limit(max)).await
}

/// A connection's input buffer when it holds nothing, and what it shrinks back to after a large request.
const INPUT_BUFFER: usize = 16 * 1024;

/// Gives back the memory of a large request once it has been parsed: a buffer that grew for a large
/// value would otherwise stay allocated (and the value's allocation pinned) for the life of the
/// connection. Only small leftovers are copied.
fn shrink_input(input: &mut BytesMut) {
    if input.capacity() > 16 * INPUT_BUFFER && input.len() <= INPUT_BUFFER {
        let mut fresh = BytesMut::with_capacity(INPUT_BUFFER);
        fresh.extend_from_slice(input);
        *input = fresh;
    }
}

/// Redis's `client-query-buffer-limit`: the connection is closed (no reply, as in Redis), and counted.
fn query_buffer_exceeded(proxy: &Proxy, session: &Session, held: usize, limit: usize) {
    proxy.shared.query_buffer_disconnections.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(m::QUERY_BUFFER_DISCONNECTIONS).increment(1);
    tracing::warn!(
        client = session.id,
        peer = %session.peer,
        held,
        limit,
        "closing a client that reached client-query-buffer-limit"
    );
}

/// Turns one request into its (ordered) pending reply, applying connection-state changes now.
/// Pipelined commands run concurrently, but a command must see the effect of every earlier command of
/// its connection on the same key (SET then GET answers the new value, as in Redis). Each key keeps the
/// completion signal of its latest command; a new command on that key waits for it first.
#[derive(Default)]
struct KeyOrder {
    /// The latest command on each key: its sender is dropped when it finishes.
    last: HashMap<KeyName, watch::Receiver<()>>,
    /// The latest command over the whole key space (SCAN, FLUSHDB, …): every later command waits for it.
    barrier: Option<watch::Receiver<()>>,
}

/// Keys remembered before finished commands are forgotten (a connection that never pauses its pipeline
/// would otherwise remember every key it ever touched).
const KEY_ORDER_PRUNE_AT: usize = 4096;

impl KeyOrder {
    /// Registers a command on `keys`; returns what it must wait for, and the sender it drops when done.
    fn enter(&mut self, mut keys: Vec<KeyName>) -> (Vec<watch::Receiver<()>>, watch::Sender<()>) {
        if self.last.len() >= KEY_ORDER_PRUNE_AT {
            self.last.retain(|_, done| done.has_changed().is_ok());
        }
        keys.sort();
        keys.dedup();
        let (done_tx, done_rx) = watch::channel(());
        let mut waits: Vec<_> = keys.into_iter().filter_map(|k| self.last.insert(k, done_rx.clone())).collect();
        waits.extend(self.barrier.clone());
        (waits, done_tx)
    }

    /// Registers a command over the whole key space: it waits for every command before it, and every
    /// command after it waits for it (a SET pipelined after FLUSHDB survives it, as in Redis).
    fn enter_everything(&mut self) -> (Vec<watch::Receiver<()>>, watch::Sender<()>) {
        let mut waits: Vec<_> = self.last.values().cloned().collect();
        waits.extend(self.barrier.clone());
        let (done_tx, done_rx) = watch::channel(());
        self.barrier = Some(done_rx);
        (waits, done_tx)
    }

    /// Nothing is in flight: forget everything.
    fn clear(&mut self) {
        self.last.clear();
        self.barrier = None;
    }
}

/// Runs `reply` once the commands it must follow have finished — as a task of its own, so that a
/// command's two-phase commit goes on whatever its connection does: the connection's task stops polling
/// while it waits for a client that reads its replies slowly, and a command left unpolled between its
/// prepares and its commits would sit on its leases until they expire. Only the reply waits for the
/// client.
fn after_earlier(
    resp3: bool,
    name: &'static str,
    earlier: Vec<watch::Receiver<()>>,
    done: Option<watch::Sender<()>>,
    reply: impl Future<Output = Reply> + Send + 'static,
) -> Pending {
    let task = tokio::spawn(async move {
        let started = Instant::now();
        for mut e in earlier {
            // Resolves (with an error) once that command's sender is dropped, i.e. it finished.
            let _ = e.wait_for(|_| false).await;
        }
        let reply = reply.await;
        drop(done);
        metrics::histogram!(m::COMMAND_SECONDS, "cmd" => name).record(started.elapsed().as_secs_f64());
        reply
    });
    Box::pin(async move {
        let reply = task.await.unwrap_or_else(|e| {
            tracing::error!(command = name, error = %e, "command task failed");
            Reply::error("ERR internal error while running the command")
        });
        (resp3, reply)
    })
}

/// Runs a read in the connection's own task once the commands it must follow have finished. A read
/// takes no leases, so nothing waits on it while a slow client holds its connection up, and a task of
/// its own per GET was a good part of what a GET cost.
fn in_connection(
    resp3: bool,
    name: &'static str,
    earlier: Vec<watch::Receiver<()>>,
    done: watch::Sender<()>,
    reply: impl Future<Output = Reply> + Send + 'static,
) -> Pending {
    Box::pin(async move {
        let started = Instant::now();
        for mut e in earlier {
            let _ = e.wait_for(|_| false).await;
        }
        let reply = reply.await;
        drop(done);
        metrics::histogram!(m::COMMAND_SECONDS, "cmd" => name).record(started.elapsed().as_secs_f64());
        (resp3, reply)
    })
}

fn ready(resp3: bool, reply: Reply) -> Pending {
    Box::pin(futures::future::ready((resp3, reply)))
}

/// Commands that act on a transaction rather than being queued in it.
const NOT_QUEUED: &[&str] = &["exec", "discard", "multi", "watch", "quit", "reset"];

fn dispatch(proxy: &Arc<Proxy>, session: &mut Session, order: &mut KeyOrder, args: Vec<Bytes>) -> (Pending, After) {
    let before = session.reply_mode;
    if before == ReplyMode::Skip {
        session.reply_mode = ReplyMode::On;
    }
    let (pending, after) = run_command(proxy, session, order, args);
    // CLIENT REPLY OFF silences every reply until CLIENT REPLY ON (whose OK is sent); SKIP the next one.
    let silent = match before {
        ReplyMode::On => false,
        ReplyMode::Skip => true,
        ReplyMode::Off => session.reply_mode == ReplyMode::Off,
    };
    if silent {
        return (Box::pin(pending.map(|(resp3, _)| (resp3, Reply::NoReply))), after);
    }
    (pending, after)
}

fn run_command(proxy: &Arc<Proxy>, session: &mut Session, order: &mut KeyOrder, args: Vec<Bytes>) -> (Pending, After) {
    proxy.shared.total_commands.fetch_add(1, Ordering::Relaxed);
    let resp3 = session.resp3;
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    // Inside MULTI, commands are only checked (name, arity and permissions, as Redis does) and queued; a
    // refusal aborts EXEC.
    if session.multi.is_some() && !NOT_QUEUED.contains(&name.as_str()) {
        let refusal = match cmd::spec(&name) {
            None => Some(cmd::unknown_command(&args[0], &args[1..])),
            Some(spec) if !cmd::arity_ok(spec, args.len()) => Some(cmd::wrong_arity(spec.name)),
            Some(spec) => proxy.shared.acl.check(session, spec, &args).err(),
        };
        if let Some(queued) = session.multi.as_mut() {
            let reply = match refusal {
                Some(refused) => {
                    queued.failed = true;
                    refused
                }
                None => {
                    queued.commands.push(args);
                    Reply::Status("QUEUED")
                }
            };
            return (ready(resp3, reply), After::Continue);
        }
    }
    let Some(spec) = cmd::spec(&name) else {
        return (ready(resp3, cmd::unknown_command(&args[0], &args[1..])), After::Continue);
    };
    metrics::counter!(m::COMMANDS, "cmd" => spec.name).increment(1);
    let arity_ok = cmd::arity_ok(spec, args.len());
    proxy.shared.count_command(spec.name, !arity_ok);
    if !arity_ok {
        if spec.name == "exec" {
            // Redis discards the transaction when EXEC itself is refused.
            session.multi = None;
            session.watched.clear();
            let reply = "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command";
            return (ready(resp3, Reply::error(reply)), After::Continue);
        }
        return (ready(resp3, cmd::wrong_arity(spec.name)), After::Continue);
    }
    if let Err(refused) = proxy.shared.acl.check(session, spec, &args) {
        return (ready(resp3, refused), After::Continue);
    }
    let params = &args[1..];
    let coordinator = proxy.coordinator.clone();
    match name.as_str() {
        "multi" => return (ready(resp3, transaction::multi(session)), After::Continue),
        "discard" => return (ready(resp3, transaction::discard(session)), After::Continue),
        "unwatch" => {
            session.watched.clear();
            return (ready(resp3, Reply::OK), After::Continue);
        }
        "watch" => {
            return match transaction::watch(session, coordinator, params) {
                Err(reply) => (ready(resp3, reply), After::Continue),
                Ok((keys, read)) => {
                    let (earlier, done) = order.enter(keys);
                    (after_earlier(resp3, spec.name, earlier, Some(done), read), After::Continue)
                }
            };
        }
        "exec" => return (exec(proxy, session, order), After::Continue),
        _ => {}
    }
    if let Some((reply, after)) = cmd::connection::run(session, &proxy.shared.acl, &name, params) {
        proxy.shared.clients.update(session);
        return (ready(session.resp3, reply), after);
    }
    if name == "vesta.reencrypt" {
        let run = cmd::reencrypt::run(coordinator, params.to_vec());
        return (after_earlier(resp3, spec.name, Vec::new(), None, run), After::Continue);
    }
    if let Some(reply) = cmd::server::run(&proxy.shared, session, &name, params) {
        return (ready(resp3, reply), After::Continue);
    }
    let namespace = session.namespace.clone();
    if let Some(parsed) = keyspace::Cmd::parse(&name, params) {
        return match parsed {
            Ok(command) => {
                let (earlier, done) = order.enter_everything();
                let run = command.execute(coordinator, namespace);
                (after_earlier(resp3, spec.name, earlier, Some(done), run), After::Continue)
            }
            Err(reply) => (ready(resp3, reply), After::Continue),
        };
    }
    let pending = match DataCommand::parse(&name, params, proxy.shared.limits.proto_max_bulk_len()) {
        Some(Ok(command)) => {
            let (earlier, done) = order.enter(command.keys(&namespace));
            let read = command.access() == cmd::Access::Read;
            let run = command.execute(coordinator, namespace);
            if read {
                in_connection(resp3, spec.name, earlier, done, run)
            } else {
                after_earlier(resp3, spec.name, earlier, Some(done), run)
            }
        }
        Some(Err(reply)) => ready(resp3, reply),
        None => ready(resp3, cmd::unknown_command(&args[0], params)),
    };
    (pending, After::Continue)
}

/// EXEC: resolves the queued commands in order (connection commands take effect now, a queued SELECT
/// decides the database of the commands after it) and runs them as one transaction.
fn exec(proxy: &Arc<Proxy>, session: &mut Session, order: &mut KeyOrder) -> Pending {
    let resp3 = session.resp3;
    let Some(queued) = session.multi.take() else {
        return ready(resp3, Reply::error("ERR EXEC without MULTI"));
    };
    let watched = std::mem::take(&mut session.watched);
    if queued.failed {
        return ready(resp3, Reply::error("EXECABORT Transaction discarded because of previous errors."));
    }
    let mut steps = Vec::with_capacity(queued.commands.len());
    for args in queued.commands {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let params = &args[1..];
        let step = if let Some((reply, _)) = cmd::connection::run(session, &proxy.shared.acl, &name, params) {
            Step::Done(reply)
        } else if let Some(reply) = cmd::server::run(&proxy.shared, session, &name, params) {
            Step::Done(reply)
        } else if let Some(parsed) = keyspace::Cmd::parse(&name, params) {
            parsed.map_or_else(Step::Done, |c| Step::Keyspace(c, session.namespace.clone()))
        } else {
            match DataCommand::parse(&name, params, proxy.shared.limits.proto_max_bulk_len()) {
                Some(Ok(c)) => Step::Data(c, session.namespace.clone()),
                Some(Err(reply)) => Step::Done(reply),
                None => Step::Done(cmd::unknown_command(&args[0], params)),
            }
        };
        steps.push(step);
    }
    proxy.shared.clients.update(session);
    let keys = transaction::keys_of(&steps, &watched);
    let (waits, done) = if steps.iter().any(|s| matches!(s, Step::Keyspace(..))) {
        order.enter_everything()
    } else {
        order.enter(keys.clone())
    };
    let run = transaction::exec(proxy.coordinator.clone(), steps, watched, keys);
    after_earlier(session.resp3, "exec", waits, Some(done), run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_order_waits_for_the_earlier_command_and_forgets_finished_ones() {
        let mut order = KeyOrder::default();
        let ns = Bytes::from_static(b"0");
        let k = KeyName { namespace: ns.clone(), key: Bytes::from_static(b"k") };
        let (none, first) = order.enter(vec![k.clone()]);
        assert!(none.is_empty());
        let (mut waits, _second) = order.enter(vec![k.clone(), k]);
        assert_eq!(waits.len(), 1, "a key named twice waits once");
        let mut wait = waits.pop().unwrap();
        let waiter = tokio::spawn(async move { wait.wait_for(|_| false).await.is_err() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the earlier command runs");
        drop(first);
        assert!(waiter.await.unwrap());

        for i in 0..3 * KEY_ORDER_PRUNE_AT {
            let (_, done) = order.enter(vec![KeyName { namespace: ns.clone(), key: Bytes::from(i.to_string()) }]);
            drop(done);
        }
        assert!(order.last.len() <= KEY_ORDER_PRUNE_AT + 1, "{}", order.last.len());
    }
}
