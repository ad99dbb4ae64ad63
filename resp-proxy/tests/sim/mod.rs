//! A deterministic cluster for coordinator tests.
//!
//! Store nodes run in this process on the memory engine; proxies (coordinators) reach them through
//! links whose faults the test controls — delay a request or its reply, drop either, per proxy, node,
//! operation, key and number of times — and every node and proxy keeps its own clock (tokio's time,
//! shifted by an offset). Tests run under `#[tokio::test(start_paused = true)]`: time moves only when
//! every task waits, so a schedule of delays plays out the same way on every run, however loaded the
//! machine.
//!
//! Why not turmoil: the coordinator already talks to in-process nodes through one seam
//! ([`LocalNode`]); faults sit in that seam, with no simulated network stack to keep in line with the
//! real one, and tokio's paused clock provides the virtual time. Each delivered request is logged, so a
//! test can check what reached which node (e.g. "no repair after a refused commit").

#![allow(dead_code)] // each test uses a different part

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use vesta_proto::clock::{Clock, TokioClock};
use vesta_proto::{KeyRef, Read, Record, Request, RequestId, Response, Status};
use vesta_proxy::cmd::DataCommand;
use vesta_proxy::coordinator::{Coordinator, QuorumSettings};
use vesta_proxy::pool::{LocalNode, LocalNodes};
use vesta_proxy::resp::Reply;
use vesta_proxy::topology::{Topology, Zone};
use vesta_store::engine::MemoryEngine;
use vesta_store::node::NodeSettings;
use vesta_store::StoreNode;

pub const SHARDS: u32 = 8;
pub const NS: &[u8] = b"0";

/// What a link does to a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request is in the network this long before the node gets it.
    DelayRequest(Duration),
    /// The node handles it at once; the reply is in the network this long.
    DelayReply(Duration),
    /// The request never arrives.
    Drop,
    /// The node handles it; the reply never arrives.
    DropReply,
}

#[derive(Debug, Clone)]
pub struct Rule {
    op: Option<&'static str>,
    key: Option<Bytes>,
    fault: Fault,
    /// How many more requests it applies to; `None`: all.
    times: Option<usize>,
}

impl Rule {
    /// Every request.
    pub fn all(fault: Fault) -> Rule {
        Rule { op: None, key: None, fault, times: None }
    }
    /// Requests of one operation (`"prepare"`, `"commit"`, `"read"`, `"repair"`, … as
    /// `Request::kind` names them).
    pub fn on(op: &'static str, fault: Fault) -> Rule {
        Rule { op: Some(op), key: None, fault, times: None }
    }
    pub fn key(mut self, key: &str) -> Rule {
        self.key = Some(Bytes::copy_from_slice(key.as_bytes()));
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
}

/// A request as a node received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub proxy: usize,
    pub op: &'static str,
    pub req: Option<RequestId>,
    pub key: Option<Bytes>,
    /// Since the simulation started.
    pub at: Duration,
    /// What the node answered.
    pub status: Status,
    /// It came in a batch (logged once more as `op == "batch"`).
    pub batched: bool,
}

pub struct SimNode {
    pub name: String,
    pub store: Arc<StoreNode>,
    pub clock: Arc<TokioClock>,
    pub log: Mutex<Vec<Delivered>>,
    started: Instant,
}

impl SimNode {
    /// This node's copy of `key`, live or dead, straight from the node.
    pub async fn copy(&self, key: &str) -> Option<Record> {
        let read = Request::Read(Read { target: target(key), want_value: true });
        match self.store.handle(read).await {
            Response::Reply(r) => r.copy,
            other => panic!("read from {}: {other:?}", self.name),
        }
    }

    /// Requests of `op` this node received from `proxy`.
    pub fn received(&self, proxy: usize, op: &str) -> Vec<Delivered> {
        self.log.lock().unwrap().iter().filter(|d| d.proxy == proxy && d.op == op).cloned().collect()
    }
}

/// One proxy's link to one node.
pub struct Link {
    node: Arc<SimNode>,
    proxy: usize,
    rules: Mutex<Vec<Rule>>,
}

impl Link {
    fn fault_for(&self, request: &Request) -> Option<Fault> {
        let (op, key) = (request.kind(), key_of(request));
        let mut rules = self.rules.lock().unwrap();
        let i = rules
            .iter()
            .position(|r| r.op.is_none_or(|o| o == op) && r.key.as_ref().is_none_or(|k| key.as_ref() == Some(k)))?;
        let fault = rules[i].fault;
        if let Some(n) = rules[i].times.as_mut() {
            *n -= 1;
            if *n == 0 {
                rules.remove(i);
            }
        }
        Some(fault)
    }
}

impl LocalNode for Link {
    fn call(&self, request: Request) -> Pin<Box<dyn Future<Output = Response> + Send + 'static>> {
        let fault = self.fault_for(&request);
        if fault == Some(Fault::Drop) {
            return Box::pin(std::future::pending());
        }
        let (node, proxy) = (self.node.clone(), self.proxy);
        let (tx, rx) = oneshot::channel();
        // The node's side runs as a task of its own, as across a network: a caller that gives up
        // waiting does not stop the node from handling what it received.
        tokio::spawn(async move {
            if let Some(Fault::DelayRequest(d)) = fault {
                tokio::time::sleep(d).await;
            }
            // A batch is logged as its requests, each with its own answer (and once as a batch).
            let items: Vec<_> = match &request {
                Request::Batch(requests) => requests.iter().map(|r| (r.kind(), req_of(r), key_of(r))).collect(),
                _ => Vec::new(),
            };
            let (op, req, key) = (request.kind(), req_of(&request), key_of(&request));
            let response = node.store.handle(request).await;
            let at = node.started.elapsed();
            {
                let mut log = node.log.lock().unwrap();
                if let Response::Batch(answers) = &response {
                    for ((op, req, key), answer) in items.into_iter().zip(answers) {
                        log.push(Delivered { proxy, op, req, key, at, status: answer.status(), batched: true });
                    }
                }
                log.push(Delivered { proxy, op, req, key, at, status: response.status(), batched: false });
            }
            match fault {
                Some(Fault::DropReply) => return,
                Some(Fault::DelayReply(d)) => tokio::time::sleep(d).await,
                _ => {}
            }
            let _ = tx.send(response);
        });
        Box::pin(async move {
            match rx.await {
                Ok(response) => response,
                Err(_) => std::future::pending().await,
            }
        })
    }
}

fn key_of(request: &Request) -> Option<Bytes> {
    match request {
        Request::Prepare(p) => Some(p.target.key.clone()),
        Request::Commit(c) => Some(c.target.key.clone()),
        Request::Abort(a) => Some(a.target.key.clone()),
        Request::Read(r) => Some(r.target.key.clone()),
        Request::Repair(r) => Some(r.target.key.clone()),
        _ => None,
    }
}

fn req_of(request: &Request) -> Option<RequestId> {
    match request {
        Request::Prepare(p) => Some(p.req),
        Request::Commit(c) => Some(c.req),
        Request::Abort(a) => Some(a.req),
        Request::Repair(r) => Some(r.req),
        Request::CommitBatch(c) => Some(c.req),
        _ => None,
    }
}

pub fn target(key: &str) -> KeyRef {
    let key = Bytes::copy_from_slice(key.as_bytes());
    KeyRef { shard: vesta_proto::shard::shard_of(&key, SHARDS), namespace: Bytes::from_static(NS), key }
}

/// How the simulated cluster is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub zones: usize,
    pub lease_ms: u64,
    pub grace_ms: u64,
    pub node_timeout: Duration,
    pub deadline: Duration,
    pub max_clock_drift_ms: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            zones: 3,
            lease_ms: 600,
            grace_ms: 60_000,
            node_timeout: Duration::from_millis(100),
            deadline: Duration::from_secs(1),
            max_clock_drift_ms: 100,
        }
    }
}

pub struct Sim {
    pub nodes: Vec<Arc<SimNode>>,
    pub options: SimOptions,
    proxies: usize,
}

pub struct SimProxy {
    pub index: usize,
    pub coordinator: Arc<Coordinator>,
    pub clock: Arc<TokioClock>,
    links: Vec<Arc<Link>>,
}

impl Sim {
    pub fn new(options: SimOptions) -> Sim {
        let started = Instant::now();
        let nodes = (1..=options.zones)
            .map(|z| {
                let clock = Arc::new(TokioClock::new(0));
                let mut settings = NodeSettings::all_shards(&format!("zone{z}"), SHARDS);
                settings.lease_ms = options.lease_ms;
                settings.grace_ms = options.grace_ms;
                settings.sync_writes = false;
                settings.max_clock_drift_ms = options.max_clock_drift_ms;
                let store = StoreNode::with_engine(settings, Arc::new(MemoryEngine::new()), clock.clone())
                    .expect("a store node on the memory engine");
                Arc::new(SimNode { name: format!("zone{z}"), store, clock, log: Mutex::default(), started })
            })
            .collect();
        Sim { nodes, options, proxies: 0 }
    }

    /// A new proxy's links to every node, and the topology that names them.
    fn links(&mut self) -> (usize, Vec<Arc<Link>>, LocalNodes, Topology) {
        let index = self.proxies;
        self.proxies += 1;
        let links: Vec<Arc<Link>> = self
            .nodes
            .iter()
            .map(|n| Arc::new(Link { node: n.clone(), proxy: index, rules: Mutex::default() }))
            .collect();
        let mut locals = LocalNodes::new();
        for (node, link) in self.nodes.iter().zip(&links) {
            locals.insert(node.name.clone(), link.clone() as Arc<dyn LocalNode>);
        }
        let topology = Topology {
            shards: SHARDS,
            write_quorum: self.options.zones / 2 + 1,
            read_quorum: self.options.zones / 2 + 1,
            zones: self.nodes.iter().map(|n| Zone { name: n.name.clone(), nodes: vec![n.name.clone()] }).collect(),
            placement: None,
            down_zones: Vec::new(),
            version: 0,
        };
        (index, links, locals, topology)
    }

    /// A whole RESP proxy (its server and connections, as `vesta proxy` runs them) over the simulated
    /// nodes, serving on a loopback port until the returned sender is dropped; its links take faults
    /// like any [`SimProxy`]'s.
    pub async fn resp_server(&mut self) -> (std::net::SocketAddr, SimProxy, oneshot::Sender<()>) {
        let (index, links, locals, topology) = self.links();
        let config = vesta_proxy::ProxyConfig {
            node_timeout_ms: self.options.node_timeout.as_millis() as u64,
            deadline_ms: self.options.deadline.as_millis() as u64,
            max_clock_drift_ms: self.options.max_clock_drift_ms,
            ..vesta_proxy::ProxyConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let clock = Arc::new(TokioClock::new(0));
        let proxy = vesta_proxy::server::Proxy::with_clock(
            &config,
            &topology,
            addr.port(),
            &locals,
            clock.clone() as Arc<dyn Clock>,
        );
        let coordinator = proxy.coordinator.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(vesta_proxy::server::serve(proxy, listener, async move {
            let _ = stopped.await;
        }));
        (addr, SimProxy { index, coordinator, clock, links }, stop)
    }

    /// A proxy whose wall clock is `offset_ms` off.
    pub fn proxy(&mut self, offset_ms: i64) -> SimProxy {
        let (index, links, locals, topology) = self.links();
        let settings = QuorumSettings {
            write_quorum: topology.write_quorum,
            read_quorum: topology.read_quorum,
            deadline: self.options.deadline,
            origin: 1,
            max_clock_drift_ms: self.options.max_clock_drift_ms,
        };
        let clock = Arc::new(TokioClock::new(offset_ms));
        let coordinator =
            Coordinator::new(&topology, self.options.node_timeout, settings, &locals, clock.clone() as Arc<dyn Clock>);
        SimProxy { index, coordinator, clock, links }
    }

    pub fn node(&self, zone: usize) -> &Arc<SimNode> {
        &self.nodes[zone]
    }
}

impl SimProxy {
    /// Adds a fault on this proxy's link to node `zone`.
    pub fn fault(&self, zone: usize, rule: Rule) -> &Self {
        self.links[zone].rules.lock().unwrap().push(rule);
        self
    }

    /// Cuts this proxy off node `zone` (every request dropped) until [`SimProxy::heal`].
    pub fn cut(&self, zone: usize) -> &Self {
        self.fault(zone, Rule::all(Fault::Drop))
    }

    /// Removes every fault on the link to node `zone`.
    pub fn heal(&self, zone: usize) -> &Self {
        self.links[zone].rules.lock().unwrap().clear();
        self
    }

    /// Runs single-key writes (as redis-cli would type them, distinct keys) as one group, as a pipeline
    /// of them runs through a proxy.
    pub async fn run_group(&self, commands: &[&[&str]]) -> Vec<Reply> {
        let ns = Bytes::from_static(NS);
        let writes = commands
            .iter()
            .map(|args| {
                let command = data_command(args).unwrap_or_else(|reply| panic!("{args:?}: {reply:?}"));
                let keys = command.keys(&ns);
                match command.into_key_write(ns.clone(), keys) {
                    Ok(write) => write,
                    Err((other, _)) => panic!("{other:?} is not a write of one key"),
                }
            })
            .collect();
        self.coordinator.write_group(writes).await.into_iter().map(|r| r.unwrap_or_else(|e| e.reply())).collect()
    }

    /// Runs single-key reads (as redis-cli would type them) as one group, as a pipeline of them runs
    /// through a proxy.
    pub async fn run_read_group(&self, commands: &[&[&str]]) -> Vec<Reply> {
        let ns = Bytes::from_static(NS);
        let parsed: Vec<_> = commands
            .iter()
            .map(|args| {
                let command = data_command(args).unwrap_or_else(|reply| panic!("{args:?}: {reply:?}"));
                let key = command.keys(&ns).pop().expect("a command of one key");
                (command, key)
            })
            .collect();
        let keys = parsed.iter().map(|(_, k)| (k.namespace.clone(), k.key.clone())).collect();
        let copies = self.coordinator.read_group(keys).await;
        let now = self.coordinator.now_ms();
        parsed
            .into_iter()
            .zip(copies)
            .map(|((command, key), copy)| match copy {
                Ok(copy) => command.answer_read(ns.clone(), key, copy, now),
                Err(e) => e.reply(),
            })
            .collect()
    }

    /// Runs one Redis data command (as redis-cli would type it) through this proxy's coordinator.
    pub async fn run(&self, args: &[&str]) -> Reply {
        match data_command(args) {
            Ok(command) => command.execute(self.coordinator.clone(), Bytes::from_static(NS)).await,
            Err(reply) => reply,
        }
    }
}

/// A Redis data command as redis-cli would type it, parsed as the proxy parses it (its error reply if it
/// is malformed).
fn data_command(args: &[&str]) -> Result<DataCommand, Reply> {
    let name = args[0].to_ascii_lowercase();
    let params: Vec<Bytes> = args[1..].iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    match DataCommand::parse(&name, &params, vesta_proxy::limits::DEFAULT_PROTO_MAX_BULK_LEN) {
        Some(parsed) => parsed,
        None => panic!("{name} is not a data command"),
    }
}

/// Redis's reply for a bulk string.
pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// Sleeps in simulated time.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Every request id of the delivered requests, by op (for "which attempt sent what").
pub fn by_op(log: &[Delivered]) -> HashMap<&'static str, usize> {
    let mut out = HashMap::new();
    for d in log {
        *out.entry(d.op).or_default() += 1;
    }
    out
}
