//! The RESP server: one task per client connection. Pipelined commands are parsed as they arrive and
//! run concurrently; replies leave strictly in request order. Connection-state commands (SELECT,
//! HELLO, …) take effect at their place in the stream, so each data command runs in the namespace — and
//! its reply is encoded in the protocol — that was current when it arrived.
//!
//! Connections are lean while idle: an idle connection holds no input or output buffer (bytes are read
//! into a stack buffer, and kept only once they have arrived, packed with other connections'; buffers,
//! parser and key order are given back once everything read was parsed and everything answered was
//! written), so a proxy can hold many thousands of them (README → Connections and overload). The task
//! never blocks on a client that reads slowly: it writes as the socket takes bytes and keeps serving,
//! and `client-output-buffer-limit` bounds what such a client can
//! make the proxy hold. Data commands pass the proxy-wide [`Admission`] gate where they start executing.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vesta_proto::clock::{Clock, SkewedClock, SystemClock};

use crate::admission::{Admission, AdmissionConfig, Admit, Permit, Waiting, OVERLOADED};
use crate::clients::{Client, BUSY};
use crate::cmd::connection::After;
use crate::cmd::transaction::{self, Step};
use crate::cmd::{self, keyspace, DataCommand};
use crate::config::ProxyConfig;
use crate::coordinator::{Coordinator, KeyName, QuorumSettings};
use crate::edge::{AcceptRate, Breach, Edge, OutputBufferLimit};
use crate::limits::ClientLimits;
use crate::metrics as m;
use crate::pool::LocalNodes;
use crate::resp::{Reply, RequestParser};
use crate::session::{ReplyMode, Session, Shared};
use crate::topology::Topology;
use vesta_tls::handshake::Side;

mod gather;

use gather::{Gather, Gathered, Op};

/// A command's reply to come.
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A finished reply, the protocol to encode it in, and the bytes it counts for among its connection's
/// finished replies (`client-output-buffer-limit`) until the connection takes it.
struct Done {
    resp3: bool,
    reply: Reply,
    counted: usize,
}

/// About the bytes `reply` encodes to: exact for its payload, headers estimated.
fn encoded_len(reply: &Reply) -> usize {
    match reply {
        Reply::Status(s) => s.len() + 3,
        Reply::Error(e) => e.len() + 3,
        Reply::Int(_) => 24,
        Reply::Bulk(b) => b.len() + 16,
        Reply::Nil | Reply::NilArray => 5,
        Reply::NoReply => 0,
        Reply::Array(items) | Reply::Set(items) => 16 + items.iter().map(encoded_len).sum::<usize>(),
        Reply::Map(pairs) => 16 + pairs.iter().map(|(k, v)| encoded_len(k) + encoded_len(v)).sum::<usize>(),
        Reply::Verbatim(s) => s.len() + 24,
    }
}

pub struct Proxy {
    pub coordinator: Arc<Coordinator>,
    pub shared: Shared,
    max_pipeline: usize,
    /// `max_accept_rate`, when set.
    accept_rate: Option<parking_lot::Mutex<AcceptRate>>,
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
        let edge = edge_settings(config);
        let admission = Admission::new(AdmissionConfig {
            max_in_flight: config.max_in_flight,
            queue_len: config.surge_queue_len,
            target: Duration::from_millis(config.codel_target_ms),
            interval: Duration::from_millis(config.codel_interval_ms),
            max_wait: Duration::from_millis(config.deadline_ms),
        });
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
            config: parking_lot::Mutex::new(cmd::server::default_config(port)),
            stats: Default::default(),
            limits: ClientLimits::new(config.proto_max_bulk_len, config.client_query_buffer_limit),
            query_buffer_disconnections: 0.into(),
            edge,
            output_buffer_disconnections: 0.into(),
            admission,
            replication: Default::default(),
            encryption: coordinator.encryption().clone(),
            pause: Default::default(),
            slowlog: Default::default(),
            latency: Default::default(),
            keyspace_figures: Default::default(),
            acl: config.build_acl().unwrap_or_else(|e| {
                // `run_proxy` refuses such a configuration before it gets here.
                tracing::error!(error = %e, "bad ACL configuration: nobody can log in");
                crate::acl::Acl::locked()
            }),
        };
        let accept_rate = (config.max_accept_rate > 0)
            .then(|| parking_lot::Mutex::new(AcceptRate::new(config.max_accept_rate, Instant::now())));
        Arc::new(Proxy { coordinator, shared, max_pipeline: config.max_pipeline, accept_rate })
    }

    /// Routes by a new shard map version (or zone states) from now on.
    pub fn install(&self, topology: &Topology) -> Result<(), String> {
        self.coordinator.install(topology)?;
        *self.shared.map_view.write() = (topology.version, topology.down_zones.clone());
        Ok(())
    }
}

/// The client-edge settings of `config`, `max_clients` lowered to what the open-file limit allows (the
/// soft limit raised to the hard one first), as Redis does.
fn edge_settings(config: &ProxyConfig) -> Edge {
    let capacity = match crate::edge::raise_open_file_limit() {
        Ok(open_files) => crate::edge::clients_allowed(open_files, config.reserved_fds),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; maxclients is not checked against it");
            usize::MAX
        }
    };
    if config.max_clients > capacity {
        tracing::warn!(
            max_clients = config.max_clients,
            allowed = capacity,
            reserved_fds = config.reserved_fds,
            "the open-file limit is too low for max_clients: lowered (raise the limit: README → Connections and overload)"
        );
    }
    Edge::new(config.timeout, config.client_output_buffer_limit, config.max_clients, capacity)
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
    let ports = async move {
        match (plain, secure) {
            (Some(p), Some(s)) => {
                futures::future::join(p, s).await;
            }
            (Some(p), None) => p.await,
            (None, Some(s)) => s.await,
            (None, None) => {}
        }
    };
    tokio::select! {
        _ = ports => {}
        _ = sweep_idle(&proxy) => {}
    }
    Ok(())
}

pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let sweeper = proxy.clone();
    tokio::select! {
        _ = serve_port(proxy, listener, None, shutdown) => {}
        _ = sweep_idle(&sweeper) => {}
    }
}

/// Redis's `timeout`: wakes the connections idle for longer than it (each closes itself if it still is).
/// A sweep over the registry, like Redis's clients cron, rather than a timer per connection.
async fn sweep_idle(proxy: &Proxy) {
    loop {
        let timeout = proxy.shared.edge.idle_timeout();
        let tick = timeout
            .map_or(Duration::from_secs(1), |t| (t / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)));
        tokio::time::sleep(tick).await;
        if let Some(timeout) = proxy.shared.edge.idle_timeout() {
            let now = proxy.shared.started.elapsed();
            if let Some(before) = now.checked_sub(timeout) {
                proxy.shared.clients.wake_idle(before.as_millis() as u64);
            }
        }
    }
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
        // `max_accept_rate`: beyond it the next accept waits (connections queue in the kernel's backlog).
        if let Some(rate) = &proxy.accept_rate {
            let mut delayed = false;
            loop {
                let wait = rate.lock().take(Instant::now());
                let Err(wait) = wait else { break };
                if !delayed {
                    delayed = true;
                    metrics::counter!(m::ACCEPTS_DELAYED).increment(1);
                }
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(client_task(proxy.clone(), stream, peer, tls.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// One client connection from accept to close. Written so that the task of a plaintext connection is
/// small (its whole state is allocated for as long as the connection lives): the TLS path is boxed, and
/// nothing is held twice.
async fn client_task(proxy: Arc<Proxy>, mut tcp: TcpStream, peer: SocketAddr, tls: Option<vesta_tls::ServerTls>) {
    let _ = tcp.set_nodelay(true);
    if let Some(tls) = tls {
        return Box::pin(tls_client_task(proxy, tcp, peer, tls)).await;
    }
    let _counted = Connected::count(&proxy.shared);
    let result = match refusal(&proxy, peer) {
        Some(refusal) => tcp.write_all(refusal).await,
        None => match tcp.local_addr() {
            Ok(local) => {
                let id = proxy.shared.next_client_id.fetch_add(1, Ordering::Relaxed);
                let mut session = Session::new(id, peer, local);
                let (mut rd, mut wr) = tcp.split();
                serve_session(&proxy, &mut session, &mut rd, &mut wr).await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended");
    }
}

/// [`client_task`] on the TLS port.
async fn tls_client_task(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr, tls: vesta_tls::ServerTls) {
    // A failed handshake (plaintext on the TLS port, an unknown client certificate…) is counted and the
    // socket closed; no Redis reply exists.
    let mut tls = match tls.accept(stream).await {
        Ok(session) => session,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS client refused");
            return;
        }
    };
    let _counted = Connected::count(&proxy.shared);
    let result = match refusal(&proxy, peer) {
        Some(refusal) => match tls.write_all(refusal).await {
            Ok(()) => tls.shutdown().await,
            Err(e) => Err(e),
        },
        None => match tls.get_ref().0.local_addr() {
            Ok(local) => {
                let id = proxy.shared.next_client_id.fetch_add(1, Ordering::Relaxed);
                let mut session = Session::new(id, peer, local);
                let (mut rd, mut wr) = tokio::io::split(tls);
                serve_session(&proxy, &mut session, &mut rd, &mut wr).await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended");
    }
}

/// A connection counted among the connected clients while it lives.
struct Connected<'a>(&'a Shared);

impl<'a> Connected<'a> {
    fn count(shared: &'a Shared) -> Self {
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        shared.connected_clients.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(m::CLIENT_CONNECTIONS).increment(1.0);
        Connected(shared)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.connected_clients.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::CLIENT_CONNECTIONS).decrement(1.0);
    }
}

/// The error a new connection is answered with before it is closed, if it is not served: protected
/// mode, or `maxclients` (this connection already counted).
fn refusal(proxy: &Proxy, peer: SocketAddr) -> Option<&'static [u8]> {
    if proxy.shared.acl.refuses_connection(peer.ip()) {
        metrics::counter!(m::PROTECTED_MODE_REFUSALS).increment(1);
        tracing::debug!(%peer, "protected mode: refused a client from beyond loopback");
        return Some(crate::acl::DENIED.as_bytes());
    }
    if proxy.shared.connected_clients.load(Ordering::Relaxed) as usize > proxy.shared.edge.max_clients() {
        proxy.shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
        return Some(b"-ERR max number of clients reached\r\n");
    }
    None
}

/// Serves a connection's session, registered for CLIENT LIST/KILL meanwhile.
async fn serve_session(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    rd: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    proxy.shared.acl.start_session(session);
    let me = proxy.shared.clients.register(session);
    let result = serve_client(proxy, session, &me, rd, wr).await;
    proxy.shared.clients.unregister(session.id);
    result
}

/// A request CLIENT PAUSE holds, and what wakes its connection to look again.
struct Held<'a> {
    args: Vec<Bytes>,
    wait: cmd::pause::PauseWait,
    _counted: cmd::pause::HeldClient<'a>,
}

/// What a connection needs only while it has requests to parse or commands in flight, allocated then.
#[derive(Default)]
struct Work {
    parser: RequestParser,
    order: KeyOrder,
    /// Commands of the current parsing pass, to run as one group when it ends.
    gather: Gather,
    /// Replies to come, in request order (commands run as tasks of their own).
    in_flight: FuturesOrdered<Pending>,
    /// It once held more than [`SPARE_WORK_DEPTH`] commands (its tables grew with them): not kept spare.
    deep: bool,
}

thread_local! {
    /// Work state of connections that went idle, for the next connection on this thread that has work.
    /// A client that does not pipeline goes idle after every command: making its key order, reply queue
    /// and the box again each time was four allocations per command. (The boxes are what is kept: a
    /// connection holds its work state boxed.)
    #[allow(clippy::vec_box)]
    static SPARE_WORK: std::cell::RefCell<Vec<Box<Work>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare work states kept per runtime thread, whatever the number of connections.
const SPARE_WORK_KEPT: usize = 16;

/// Most commands in flight of a work state that is kept spare: a deeper pipeline's reply queue, gather and
/// key order grew with it, and are freed with it (a spare one stays a few KiB).
const SPARE_WORK_DEPTH: usize = 16;

impl Work {
    /// A work state: a spare one of this thread, else a new one.
    fn take() -> Box<Work> {
        SPARE_WORK.with(|spare| spare.borrow_mut().pop()).unwrap_or_default()
    }

    /// Hands back the state of a connection with nothing to parse and nothing in flight (its parser is
    /// then between requests, its gather empty).
    fn give_back(mut self: Box<Self>) {
        if self.deep || !self.in_flight.is_empty() {
            return;
        }
        self.parser = RequestParser::new();
        self.order.forget();
        SPARE_WORK.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_WORK_KEPT {
                spare.push(self);
            }
        });
    }
}

/// Commands of the connection in flight.
fn in_flight(work: &Option<Box<Work>>) -> usize {
    work.as_ref().map_or(0, |w| w.in_flight.len())
}

async fn serve_client(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    me: &Arc<Client>,
    rd: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    let shared = &proxy.shared;
    // Both buffers are allocated only while bytes are in them.
    let mut input = BytesMut::new();
    // Encoded replies the socket has not taken yet.
    let mut output = BytesMut::new();
    let mut work: Option<Box<Work>> = None;
    // No more requests are read once set: the client hung up, sent QUIT, or broke the protocol.
    let mut closing = false;
    // No more requests are parsed once set: QUIT, a protocol error, an over-long request. (A client that
    // hung up still has what it sent answered.)
    let mut done_parsing = false;
    // A request held by CLIENT PAUSE: nothing of this connection runs until it does.
    let mut paused: Option<Box<Held>> = None;
    // Bytes written that a TLS session may still hold.
    let mut unflushed = false;
    // Over the soft output limit since then; the timer that looks again when it would be broken.
    let mut over_soft_since: Option<Instant> = None;
    let mut soft_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // The last read or write (Redis's `timeout` counts from it).
    let mut last_active = Instant::now();
    loop {
        // Read per pass, so that CONFIG SET takes effect for the next request.
        let query_limit = shared.limits.query_buffer_limit();
        if let Some(h) = paused.take() {
            match shared.pause.holds(session, &h.args) {
                Some(wait) => paused = Some(Box::new(Held { wait, ..*h })),
                None => {
                    let w = work.get_or_insert_with(Work::take);
                    w.gather.more_follow(false);
                    let (pending, after) = dispatch(proxy, session, me, &mut w.order, &mut w.gather, h.args);
                    w.gather.start(proxy, me);
                    w.in_flight.push_back(pending);
                    if let After::Close = after {
                        closing = true;
                        done_parsing = true;
                    }
                }
            }
        }
        if !input.is_empty() || in_flight(&work) > 0 {
            let w = work.get_or_insert_with(Work::take);
            if w.in_flight.is_empty() {
                w.order.forget();
            }
            let limits = shared.limits.request_limits();
            while !done_parsing && paused.is_none() && w.in_flight.len() < proxy.max_pipeline {
                match w.parser.parse(&mut input, &limits) {
                    Ok(None) => {
                        // What is left is one request still arriving (reads are capped to keep it in sight).
                        if input.len() > query_limit {
                            query_buffer_exceeded(proxy, session, input.len(), query_limit);
                            input = BytesMut::new();
                            w.parser = RequestParser::new();
                            closing = true;
                            done_parsing = true;
                        }
                        break;
                    }
                    Ok(Some(args)) if args.is_empty() => continue,
                    Ok(Some(args)) => {
                        if let Some(wait) = shared.pause.holds(session, &args) {
                            paused = Some(Box::new(Held { args, wait, _counted: shared.pause.count_held() }));
                            break;
                        }
                        w.gather.more_follow(!input.is_empty());
                        let (pending, after) = dispatch(proxy, session, me, &mut w.order, &mut w.gather, args);
                        w.in_flight.push_back(pending);
                        if let After::Close = after {
                            closing = true;
                            done_parsing = true;
                        }
                    }
                    Err(e) => {
                        metrics::counter!(m::PROTOCOL_ERRORS, "reason" => e.reason()).increment(1);
                        w.in_flight.push_back(finished(me, session.resp3, Reply::Error(format!("ERR {e}"))));
                        closing = true;
                        done_parsing = true;
                    }
                }
            }
            // What this pass gathered starts now, as one group.
            w.gather.start(proxy, me);
            w.deep |= w.in_flight.len() > SPARE_WORK_DEPTH;
        }
        if input.is_empty() {
            // Everything read was parsed: the buffer goes (the requests' arguments keep what they use),
            // and with nothing in flight, the parser, the key order and the reply queue too.
            input = BytesMut::new();
            if in_flight(&work) == 0 {
                if let Some(w) = work.take() {
                    w.give_back();
                }
            }
        } else {
            shrink_input(&mut input);
        }
        me.set_query_buffer(input.len(), input.capacity() - input.len());
        if me.is_killed() {
            // CLIENT KILL: drop the connection at once, as Redis does.
            return Ok(());
        }
        let now = Instant::now();
        // client-output-buffer-limit: replies finished and not yet written, queued or encoded.
        let limit = shared.edge.output_limit();
        let held = me.held_replies(output.len());
        if let Some(breach) = limit.exceeded(held, &mut over_soft_since, now) {
            output_buffer_exceeded(proxy, session, held, limit, breach);
            return Ok(());
        }
        match over_soft_since {
            Some(since) if soft_timer.is_none() => {
                soft_timer = Some(Box::pin(tokio::time::sleep_until(limit.soft_deadline(since).into())));
            }
            None => soft_timer = None,
            Some(_) => {}
        }
        let pending = in_flight(&work);
        // Redis's `timeout`: only a connection with nothing in flight, held or to write is idle.
        if pending == 0 && paused.is_none() && output.is_empty() && !unflushed {
            if let Some(timeout) = shared.edge.idle_timeout() {
                if now.duration_since(last_active) >= timeout && !closing {
                    metrics::counter!(m::IDLE_TIMEOUT_DISCONNECTIONS).increment(1);
                    tracing::debug!(client = session.id, peer = %session.peer, "closing an idle client (timeout)");
                    return Ok(());
                }
            }
            me.set_idle_since(last_active.saturating_duration_since(shared.started).as_millis() as u64);
        } else {
            me.set_idle_since(BUSY);
        }
        // A client that hung up is gone once what it sent is answered. With nothing in flight or held,
        // what is left unparsed can only be an incomplete request (the parsing above stops at one).
        if closing && pending == 0 && paused.is_none() && output.is_empty() && !unflushed {
            wr.shutdown().await.ok();
            return Ok(());
        }
        if output.is_empty() && output.capacity() > 0 && (pending == 0 || output.capacity() > OUTPUT_KEPT) {
            output = BytesMut::new();
        }
        // At most one byte past the query buffer limit, so that an over-long request is caught while it
        // arrives and memory stays bounded by the limit, whatever the socket holds.
        let room = (query_limit + 1).saturating_sub(input.len()).max(1);
        // A held connection reads nothing more: its client waits, as a paused Redis client does.
        let reading = !closing && pending < proxy.max_pipeline && paused.is_none();
        tokio::select! {
            // The socket takes output (or, all written, a TLS session flushes what it holds).
            sent = poll_fn(|cx| poll_send(&mut *wr, cx, &output)), if !output.is_empty() || unflushed => {
                match sent? {
                    0 => unflushed = false,
                    n => {
                        output.advance(n);
                        unflushed = true;
                        last_active = Instant::now();
                    }
                }
            }
            Some(reply) = next_reply(&mut work), if pending > 0 => {
                take_reply(me, &mut output, reply);
                // Everything else already finished goes out in the same write.
                while let Some(Some(reply)) = next_reply(&mut work).now_or_never() {
                    take_reply(me, &mut output, reply);
                }
                // Straight to the socket when it takes it (the usual case): no pass through the loop.
                while let Some(sent) = poll_fn(|cx| poll_send(&mut *wr, cx, &output)).now_or_never() {
                    match sent? {
                        0 => {
                            unflushed = false;
                            break;
                        }
                        n => {
                            output.advance(n);
                            unflushed = true;
                            last_active = Instant::now();
                        }
                    }
                }
            }
            // Killed, over the output limit, or perhaps idle too long: the next pass looks.
            _ = poll_fn(|cx| me.poll_woken(cx)) => {}
            // The pause holding a request ended, or was lifted: the next pass looks.
            _ = poll_fn(|cx| paused.as_mut().map_or(Poll::Pending, |h| h.wait.as_mut().poll(cx))), if paused.is_some() => {}
            _ = poll_fn(|cx| soft_timer.as_mut().map_or(Poll::Pending, |t| t.as_mut().poll(cx))), if soft_timer.is_some() => {}
            read = poll_fn(|cx| poll_read_some(&mut *rd, cx, &mut input, room)), if reading => {
                last_active = Instant::now();
                if read? == 0 {
                    // Half-closed: answer what was sent (the passes to come parse it), then go.
                    closing = true;
                }
            }
        }
    }
}

/// The next reply, in request order (`None`: nothing in flight).
async fn next_reply(work: &mut Option<Box<Work>>) -> Option<Done> {
    match work {
        Some(w) => w.in_flight.next().await,
        None => None,
    }
}

/// Encodes a finished reply into the output.
fn take_reply(me: &Client, output: &mut BytesMut, done: Done) {
    me.reply_taken(done.counted);
    done.reply.encode(done.resp3, output);
}

/// Writes some of `output` (the bytes written), or with nothing left to write, flushes (0 once done).
fn poll_send(wr: &mut (impl AsyncWrite + Unpin), cx: &mut Context<'_>, output: &[u8]) -> Poll<io::Result<usize>> {
    if output.is_empty() {
        return Pin::new(wr).poll_flush(cx).map_ok(|()| 0);
    }
    match ready!(Pin::new(wr).poll_write(cx, output)) {
        Ok(0) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        done => Poll::Ready(done),
    }
}

/// Output capacity kept between replies while commands are in flight; a larger buffer goes once written.
const OUTPUT_KEPT: usize = 16 * 1024;

/// Reads what the socket has into `input`, at most `max` bytes. Between requests `input` is empty and
/// holds no memory: the read goes to a buffer on the stack (nothing is kept while the socket has nothing
/// to give) and the bytes read are then placed in [`INPUT_ARENA`]. A request still arriving is read
/// straight into `input`.
fn poll_read_some(
    rd: &mut (impl AsyncRead + Unpin),
    cx: &mut Context<'_>,
    input: &mut BytesMut,
    max: usize,
) -> Poll<io::Result<usize>> {
    if input.is_empty() {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); INPUT_BUFFER];
        let mut read = tokio::io::ReadBuf::uninit(&mut stack[..max.min(INPUT_BUFFER)]);
        ready!(Pin::new(rd).poll_read(cx, &mut read))?;
        if !read.filled().is_empty() {
            *input = arena_input(read.filled());
        }
        return Poll::Ready(Ok(read.filled().len()));
    }
    let mut limited = (&mut *input).limit(max);
    std::pin::pin!(rd.read_buf(&mut limited)).poll(cx)
}

thread_local! {
    /// Where the bytes of new requests go, one after the other whatever their connection, in chunks of
    /// [`INPUT_BUFFER`]. A request's arguments are slices of its chunk, and some live on (a value kept by
    /// an in-process store node, a key in the coordinator's tables): packed this way they pin shared
    /// chunks, as a connection's long-lived input buffer used to, rather than an allocation per request
    /// scattered between short-lived ones (which fragments the heap).
    static INPUT_ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// `bytes` copied into [`INPUT_ARENA`]: a buffer of exactly their length.
fn arena_input(bytes: &[u8]) -> BytesMut {
    INPUT_ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() < bytes.len() {
            *arena = BytesMut::with_capacity(INPUT_BUFFER.max(bytes.len()));
        }
        arena.extend_from_slice(bytes);
        arena.split()
    })
}

/// The most a read takes at once between requests, and what the input buffer shrinks back to after a
/// large request.
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

/// Redis's `client-output-buffer-limit`: the connection is closed at once (no reply; what was not
/// written is dropped, as in Redis), counted and logged.
fn output_buffer_exceeded(proxy: &Proxy, session: &Session, held: u64, limit: OutputBufferLimit, breach: Breach) {
    proxy.shared.output_buffer_disconnections.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(m::OUTPUT_BUFFER_DISCONNECTIONS, "limit" => breach.name()).increment(1);
    tracing::warn!(
        client = session.id,
        peer = %session.peer,
        held,
        hard = limit.hard,
        soft = limit.soft,
        soft_seconds = limit.soft_seconds,
        limit = breach.name(),
        "closing a client that reached client-output-buffer-limit (it does not read its replies)"
    );
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

/// Capacity of the key order's table kept in a spare work state (see [`Work::give_back`]).
const KEY_ORDER_KEPT: usize = 64;

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

    /// Nothing is in flight: forget everything, keeping a small table for the next commands (a large one
    /// goes: an idle connection holds none at all, see [`Work::give_back`]).
    fn forget(&mut self) {
        if self.last.capacity() > KEY_ORDER_KEPT {
            *self = KeyOrder::default();
        } else {
            self.last.clear();
            self.barrier = None;
        }
    }
}

/// What a command gives its connection: a reply now (in this protocol), or a reply to come.
enum Outcome {
    Now(bool, Reply),
    Later(Pending),
}

fn ready(resp3: bool, reply: Reply) -> Outcome {
    Outcome::Now(resp3, reply)
}

/// A reply ready now, counted among the connection's finished replies.
fn finished(me: &Client, resp3: bool, reply: Reply) -> Pending {
    let counted = encoded_len(&reply);
    me.reply_finished(counted, 0);
    Box::pin(futures::future::ready(Done { resp3, reply, counted }))
}

/// Runs `reply` once the commands it must follow have finished — as a task of its own, so that a
/// command's two-phase commit goes on whatever its connection does: a command left unpolled between
/// its prepares and its commits would sit on its leases until they expire. The finished reply is
/// counted among the connection's finished replies (`client-output-buffer-limit`) until the connection
/// takes it.
///
/// A `bounded` command (one that reaches the store nodes) takes a slot of the proxy-wide [`Admission`]
/// gate *before* its task exists: refused, it is answered `-TRYAGAIN proxy overloaded, try again` at once;
/// waiting, it waits in the gate's queue (the connection holds it) and gets its task once admitted. Tasks
/// spawned first and admitted inside waited in the runtime's queue instead, where no bound sees them:
/// measured at 1.5x capacity, 0.4 s mean wait between spawn and first poll, while the gate saw 0–1
/// commands in flight and refused nothing.
///
/// A command that must follow earlier ones asks the gate only once they have finished. Its wait is its
/// own connection's order, not the proxy's load: held in the gate, a pipeline of 1,000 commands on a few
/// keys filled every slot with commands waiting for each other and stood in the queue long enough for
/// CoDel to refuse its own commands (and others') on an idle proxy.
#[allow(clippy::too_many_arguments)]
fn after_earlier(
    proxy: &Arc<Proxy>,
    me: &Arc<Client>,
    resp3: bool,
    spec: &'static cmd::Spec,
    args: Vec<Bytes>,
    earlier: Vec<watch::Receiver<()>>,
    done: Option<watch::Sender<()>>,
    bounded: bool,
    reply: impl Future<Output = Reply> + Send + 'static,
) -> Outcome {
    // A command's future holds its whole two-phase commit (KiBs): boxed once here (in `Run`), it is not
    // copied again as it moves into its task.
    let run = Run { resp3, spec, args, done, bounded, started: Instant::now(), reply: Box::pin(reply) };
    if earlier.is_empty() {
        return admit_and_run(proxy, me, run);
    }
    let (proxy, me) = (proxy.clone(), me.clone());
    Outcome::Later(Box::pin(async move {
        for mut e in earlier {
            // Resolves (with an error) once that command's sender is dropped, i.e. it finished.
            let _ = e.wait_for(|_| false).await;
        }
        match admit_and_run(&proxy, &me, run) {
            Outcome::Now(resp3, reply) => finished(&me, resp3, reply).await,
            Outcome::Later(pending) => pending.await,
        }
    }))
}

/// A command of [`after_earlier`], with what it needs once it may start.
struct Run<F> {
    resp3: bool,
    spec: &'static cmd::Spec,
    args: Vec<Bytes>,
    /// Dropped when the command has finished (or will never run): later commands on its keys go on.
    done: Option<watch::Sender<()>>,
    bounded: bool,
    started: Instant,
    reply: Pin<Box<F>>,
}

/// [`after_earlier`] once nothing is left to follow: through the admission gate (when `bounded`) into
/// a task of its own.
fn admit_and_run<F: Future<Output = Reply> + Send + 'static>(
    proxy: &Arc<Proxy>,
    me: &Arc<Client>,
    run: Run<F>,
) -> Outcome {
    let admitted = run.bounded.then(|| proxy.shared.admission.admit());
    start(proxy, me, run, admitted)
}

/// [`admit_and_run`] once the gate has answered (`None`: not bounded by it).
fn start<F: Future<Output = Reply> + Send + 'static>(
    proxy: &Arc<Proxy>,
    me: &Arc<Client>,
    run: Run<F>,
    admitted: Option<Admit>,
) -> Outcome {
    let Run { resp3, spec, args, done, started, reply, .. } = run;
    let (admitted, waiting) = match admitted {
        None => (None, None),
        Some(Admit::Now(permit)) => (Some(permit), None),
        Some(Admit::Wait(waiting)) => (None, Some(waiting)),
        Some(Admit::Refused(_)) => {
            // Nothing ran: later commands on its keys need not wait for it.
            drop(done);
            return ready(resp3, Reply::error(OVERLOADED));
        }
    };
    let client = me.clone();
    let name = spec.name;
    let hard = proxy.shared.edge.output_limit().hard;
    let proxy = proxy.clone();
    let spawn = move |permit: Option<Permit>| {
        tokio::spawn(async move {
            let running = Instant::now();
            let reply = reply.await;
            drop(permit);
            proxy.shared.command_took(running.elapsed(), spec, &args, &client);
            drop(done);
            metrics::histogram!(m::COMMAND_SECONDS, "cmd" => name).record(started.elapsed().as_secs_f64());
            let counted = encoded_len(&reply);
            client.reply_finished(counted, hard);
            Done { resp3, reply, counted }
        })
    };
    // Admitted at once: its task starts now, whatever the connection does next.
    let start = match waiting {
        None => Start::Running(spawn(admitted)),
        Some(waiting) => Start::Waiting(waiting, spawn),
    };
    let client = me.clone();
    Outcome::Later(Box::pin(async move {
        let task = match start {
            Start::Running(task) => task,
            Start::Waiting(waiting, spawn) => match waiting.granted().await {
                Ok(permit) => spawn(Some(permit)),
                Err(_) => {
                    // Refused while it waited (CoDel, or its deadline); the command goes unrun.
                    let reply = Reply::error(OVERLOADED);
                    let counted = encoded_len(&reply);
                    client.reply_finished(counted, 0);
                    return Done { resp3, reply, counted };
                }
            },
        };
        task.await.unwrap_or_else(|e| {
            tracing::error!(command = name, error = %e, "command task failed");
            let reply = Reply::error("ERR internal error while running the command");
            let counted = encoded_len(&reply);
            client.reply_finished(counted, 0);
            Done { resp3, reply, counted }
        })
    }))
}

/// A command's task: started, or to start once the admission gate lets it.
enum Start<F> {
    Running(tokio::task::JoinHandle<Done>),
    Waiting(Waiting, F),
}

/// Commands that act on a transaction rather than being queued in it.
const NOT_QUEUED: &[&str] = &["exec", "discard", "multi", "watch", "quit", "reset"];

fn dispatch(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    me: &Arc<Client>,
    order: &mut KeyOrder,
    gather: &mut Gather,
    mut args: Vec<Bytes>,
) -> (Pending, After) {
    let before = session.reply_mode;
    if before == ReplyMode::Skip {
        session.reply_mode = ReplyMode::On;
    }
    let started = Instant::now();
    // A command that runs later takes its arguments along (and is timed where it runs); one answered
    // now leaves them here.
    let (outcome, after) = run_command(proxy, session, me, order, gather, &mut args);
    if matches!(outcome, Outcome::Now(..)) && !args.is_empty() {
        answered_now(proxy, me, started.elapsed(), &args);
    }
    // CLIENT REPLY OFF silences every reply until CLIENT REPLY ON (whose OK is sent); SKIP the next one.
    let silent = match before {
        ReplyMode::On => false,
        ReplyMode::Skip => true,
        ReplyMode::Off => session.reply_mode == ReplyMode::Off,
    };
    let pending = match outcome {
        Outcome::Now(resp3, _) if silent => {
            Box::pin(futures::future::ready(Done { resp3, reply: Reply::NoReply, counted: 0 }))
        }
        Outcome::Now(resp3, reply) => finished(me, resp3, reply),
        Outcome::Later(pending) if silent => {
            let me = me.clone();
            Box::pin(pending.map(move |done| {
                me.reply_taken(done.counted);
                Done { resp3: done.resp3, reply: Reply::NoReply, counted: 0 }
            }))
        }
        Outcome::Later(pending) => pending,
    };
    (pending, after)
}

/// The slow log and latency monitor for a command answered at once (a connection or server command),
/// which is almost never slow: the command is looked up only when it is.
fn answered_now(proxy: &Proxy, me: &Client, took: Duration, args: &[Bytes]) {
    let shared = &proxy.shared;
    if !shared.slowlog.wants(took) && !shared.latency.enabled() {
        return;
    }
    // Refused commands (unknown, wrong arity) are not logged, as in Redis.
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    if let Some(spec) = cmd::spec(&name).filter(|s| cmd::arity_ok(s, args.len())) {
        shared.command_took(took, spec, args, me);
    }
}

/// Runs one request. A command answered later takes `args` (leaving it empty); a command queued in a
/// transaction too.
fn run_command(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    me: &Arc<Client>,
    order: &mut KeyOrder,
    gather: &mut Gather,
    args: &mut Vec<Bytes>,
) -> (Outcome, After) {
    proxy.shared.total_commands.fetch_add(1, Ordering::Relaxed);
    let resp3 = session.resp3;
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    // CLIENT CACHING applies to the next command only (Redis clears it after any command but CLIENT).
    if let Some(tracking) = session.tracking.as_deref_mut() {
        if name != "client" && session.multi.is_none() {
            tracking.caching = false;
        }
    }
    // Inside MULTI, commands are only checked (name, arity and permissions, as Redis does) and queued; a
    // refusal aborts EXEC.
    if session.multi.is_some() && !NOT_QUEUED.contains(&name.as_str()) {
        let refusal = match cmd::spec(&name) {
            None => Some(cmd::unknown_command(&args[0], &args[1..])),
            Some(spec) if !cmd::arity_ok(spec, args.len()) => Some(cmd::wrong_arity(spec.name)),
            Some(spec) => proxy.shared.acl.check(session, spec, args).err(),
        };
        if let Some(queued) = session.multi.as_mut() {
            let reply = match refusal {
                Some(refused) => {
                    queued.failed = true;
                    refused
                }
                None => {
                    queued.commands.push(std::mem::take(args));
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
    if let Err(refused) = proxy.shared.acl.check(session, spec, args) {
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
                    let args = std::mem::take(args);
                    (after_earlier(proxy, me, resp3, spec, args, earlier, Some(done), true, read), After::Continue)
                }
            };
        }
        "exec" => return (exec(proxy, session, me, order, spec, args), After::Continue),
        _ => {}
    }
    if let Some((reply, after)) = cmd::connection::run(session, &proxy.shared.acl, &name, params) {
        proxy.shared.clients.update(session);
        return (ready(session.resp3, reply), after);
    }
    if name == "vesta.reencrypt" {
        let run = cmd::reencrypt::run(coordinator, params.to_vec());
        // An operator's background rewrite: not bounded by the gate (it paces itself).
        let args = std::mem::take(args);
        return (after_earlier(proxy, me, resp3, spec, args, Vec::new(), None, false, run), After::Continue);
    }
    if name == "info" && cmd::server::info_wants_keyspace(params) && !proxy.shared.keyspace_figures.is_fresh() {
        // The keyspace figures need a walk of the shards: INFO runs as a data command this time.
        let (proxy_, wanted) = (proxy.clone(), params.to_vec());
        let run = async move {
            let keyspace = proxy_.shared.keyspace_figures.section(&proxy_.coordinator).await;
            Reply::Verbatim(cmd::server::info(&proxy_.shared, &wanted, Some(keyspace)))
        };
        let args = std::mem::take(args);
        return (after_earlier(proxy, me, resp3, spec, args, Vec::new(), None, true, run), After::Continue);
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
                let args = std::mem::take(args);
                (after_earlier(proxy, me, resp3, spec, args, earlier, Some(done), true, run), After::Continue)
            }
            Err(reply) => (ready(resp3, reply), After::Continue),
        };
    }
    let pending = match DataCommand::parse(&name, params, proxy.shared.limits.proto_max_bulk_len()) {
        Some(Ok(command)) => {
            let keys = command.keys(&namespace);
            let single = (keys.len() == 1).then(|| keys[0].clone());
            let (earlier, done) = order.enter(keys);
            if let Some(key) = single.filter(|_| earlier.is_empty() && Gather::takes(args)) {
                let outcome = gathered(proxy, me, gather, resp3, spec, args, done, command, namespace, key);
                return (outcome, After::Continue);
            }
            let run = command.execute(coordinator, namespace);
            after_earlier(proxy, me, resp3, spec, std::mem::take(args), earlier, Some(done), true, run)
        }
        Some(Err(reply)) => ready(resp3, reply),
        None => ready(resp3, cmd::unknown_command(&args[0], params)),
    };
    (pending, After::Continue)
}

/// A command of one key that follows nothing of its connection: gathered with the other commands of
/// the parsing pass if the admission gate lets it in now (see `gather`), else — alone in its pass, or
/// not let in at once — on its own way through the gate like any command.
#[allow(clippy::too_many_arguments)]
fn gathered(
    proxy: &Arc<Proxy>,
    me: &Arc<Client>,
    gather: &mut Gather,
    resp3: bool,
    spec: &'static cmd::Spec,
    args: &mut Vec<Bytes>,
    done: watch::Sender<()>,
    command: DataCommand,
    namespace: Bytes,
    key: KeyName,
) -> Outcome {
    let args = std::mem::take(args);
    let started = Instant::now();
    let op = Op::of(command, namespace, key);
    match proxy.shared.admission.admit() {
        Admit::Now(permit) if !gather.alone() => {
            Outcome::Later(gather.push(proxy, me, Gathered { op, resp3, spec, args, done, permit, started }))
        }
        admitted => {
            let run = op.run_alone(proxy.coordinator.clone());
            let run = Run { resp3, spec, args, done: Some(done), bounded: true, started, reply: Box::pin(run) };
            start(proxy, me, run, Some(admitted))
        }
    }
}

/// EXEC: resolves the queued commands in order (connection commands take effect now, a queued SELECT
/// decides the database of the commands after it) and runs them as one transaction.
fn exec(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    me: &Arc<Client>,
    order: &mut KeyOrder,
    spec: &'static cmd::Spec,
    args: &mut Vec<Bytes>,
) -> Outcome {
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
    after_earlier(proxy, me, session.resp3, spec, std::mem::take(args), waits, Some(done), true, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle plaintext connection costs beside its socket: its task (allocated whole for the life
    /// of the connection, whatever state it is in), its registry entry, and nothing else — the buffers,
    /// the parser and the key order exist only while there is work (README → Connections and overload).
    #[tokio::test]
    async fn an_idle_connection_is_small() {
        use crate::topology::Zone;
        let zones = (1..=3).map(|z| Zone { name: format!("zone{z}"), nodes: vec![format!("127.0.0.1:{z}")] }).collect();
        let topology = Topology {
            shards: 8,
            write_quorum: 2,
            read_quorum: 2,
            zones,
            placement: None,
            down_zones: vec![],
            version: 0,
        };
        let proxy = Proxy::new(&ProxyConfig::default(), &topology, 0, &LocalNodes::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let task = client_task(proxy.clone(), stream, peer, None);
        let task_size = std::mem::size_of_val(&task);
        assert!(task_size <= 1024, "a connection's task holds {task_size} bytes");
        assert!(std::mem::size_of::<Client>() <= 192, "{}", std::mem::size_of::<Client>());
        // Only the plaintext connection's own state: the TLS handshake and session are boxed.
        assert!(task_size < std::mem::size_of::<Session>() + 768);
    }

    /// A connection's work state handed back when it went idle comes back to the next one empty: no key
    /// of the last connection's commands ordered, no reply queued.
    #[test]
    fn a_spare_work_state_comes_back_empty() {
        let mut work = Work::take();
        let key = KeyName { namespace: Bytes::from_static(b"0"), key: Bytes::from_static(b"k") };
        let (_, done) = work.order.enter(vec![key.clone()]);
        let (_, barrier) = work.order.enter_everything();
        drop((done, barrier));
        work.give_back();
        let mut again = Work::take();
        assert!(again.order.last.is_empty() && again.order.barrier.is_none() && !again.deep);
        assert!(again.in_flight.is_empty());
        let (earlier, _done) = again.order.enter(vec![key]);
        assert!(earlier.is_empty(), "a command of the next connection waited for one of the last");
    }

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
