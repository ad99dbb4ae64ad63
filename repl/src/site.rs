//! This site's replication, run inside a proxy: a [`Sender`] per peer site (when this proxy ships), the
//! receiver of the peers' writes (when it listens), and the trimming of the change logs behind what
//! every peer confirmed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vesta_proto::{Request, TrimLog};
use vesta_proxy::coordinator::Coordinator;
use vesta_proxy::session::ReplicationReport;
use vesta_proxy::ReplicationConfig;

use crate::confirmations::{self, FullSync, Watermarks};
use crate::election;
use crate::feed::ShardFeed;
use crate::sender::Sender;
use crate::source::{NodeLog, NodeLogs};
use crate::status::PeerStatus;

pub struct Site {
    /// This site itself, for tasks started from `&self`.
    this: std::sync::Weak<Site>,
    pub coordinator: Arc<Coordinator>,
    /// This site's origin id (what its store nodes log, what its proxies stamp).
    pub origin: u32,
    pub config: ReplicationConfig,
    logs: NodeLogs,
    pub peers: Vec<Arc<PeerStatus>>,
    /// Per peer origin, the confirmations last saved.
    saved: Mutex<HashMap<u32, Watermarks>>,
    /// Per shard, the HLC of the newest entry seen in its log (`u64::MAX` until one is: the log may hold
    /// entries from before this process started).
    logged: Vec<AtomicU64>,
    /// Per shard, through where its log was last trimmed.
    trimmed: Mutex<Vec<u64>>,
    /// Whether this proxy ships now (it holds the site's shipping lease).
    shipping: std::sync::atomic::AtomicBool,
    /// Mutual TLS to the peer sites' listeners, when the cluster's hops are encrypted.
    pub tls: Option<vesta_tls::ClientTls>,
}

impl Site {
    pub fn new(
        coordinator: Arc<Coordinator>,
        origin: u32,
        config: ReplicationConfig,
        tls: Option<vesta_tls::ClientTls>,
    ) -> Arc<Self> {
        let shards = coordinator.map().shards() as usize;
        let peers = config.peers.iter().map(|p| Arc::new(PeerStatus::new(&p.name, p.origin))).collect();
        Arc::new_cyclic(|this| Site {
            this: this.clone(),
            logs: NodeLogs::new(coordinator.clone()),
            coordinator,
            origin,
            config,
            peers,
            saved: Mutex::default(),
            logged: (0..shards).map(|_| AtomicU64::new(u64::MAX)).collect(),
            trimmed: Mutex::new(vec![0; shards]),
            shipping: Default::default(),
            tls,
        })
    }

    /// Starts the candidacy for shipping (if this proxy has `ship`): while this proxy holds the site's
    /// shipping lease ([`election`]), it runs a sender per peer and the trimming; the receiver is started
    /// by whoever owns the listener ([`crate::receiver::serve`]).
    pub fn start(self: &Arc<Self>) {
        if !self.config.ship {
            return;
        }
        let site = self.clone();
        tokio::spawn(async move { site.stand_for_shipping().await });
    }

    async fn stand_for_shipping(self: Arc<Self>) {
        // This candidate's id in the election: random per process.
        let me = rand::random::<u128>();
        let drift = Duration::from_millis(self.coordinator.settings().max_clock_drift_ms);
        let mut renewed: Option<Instant> = None;
        let mut running: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        loop {
            match election::hold(&self.coordinator, self.origin, me).await {
                Ok(true) => renewed = Some(Instant::now()),
                Ok(false) => renewed = None,
                // Cannot tell: go on shipping while the lease surely holds.
                Err(e) => tracing::debug!(error = %e, "cannot renew the shipping lease"),
            }
            let ship = election::still_held(renewed, drift);
            if ship && running.is_empty() {
                tracing::info!(
                    origin = self.origin,
                    peers = self.config.peers.len(),
                    "this proxy ships the site's writes"
                );
                running = self.run_shipping();
            } else if !ship && !running.is_empty() {
                tracing::warn!(origin = self.origin, "another proxy ships the site's writes now; this one stands by");
                for task in running.drain(..) {
                    task.abort();
                }
                for p in &self.peers {
                    p.set_connected(false);
                }
            }
            self.shipping.store(!running.is_empty(), Ordering::Relaxed);
            tokio::time::sleep(election::RENEW).await;
        }
    }

    /// A sender per peer and the trimming, as tasks.
    fn run_shipping(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (peer, status) in self.config.peers.iter().zip(&self.peers) {
            let sender = Sender::new(self.clone(), peer.clone(), status.clone());
            tasks.push(tokio::spawn(sender.run()));
        }
        let site = self.clone();
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_millis(site.config.confirm_ms.saturating_mul(5));
            loop {
                tokio::time::sleep(every).await;
                site.trim().await;
            }
        }));
        tasks
    }

    /// What identifies the current placement of shards: a change means feeds read other replicas.
    pub(crate) fn routing(&self) -> (u64, Vec<String>) {
        let map = self.coordinator.map();
        (map.version(), map.down_zones().to_vec())
    }

    /// A feed of `shard` from after `from_hlc`, over its replicas in service, reading N − W + 1 of them.
    pub(crate) fn feed(&self, shard: u32, from_hlc: u64) -> ShardFeed<NodeLog> {
        let map = self.coordinator.map();
        let group = map.storage_group(shard);
        let replicas = group.len() + map.down_zones().len();
        let reads =
            (replicas + 1).saturating_sub(self.coordinator.settings().write_quorum).clamp(1, group.len().max(1));
        let sources = group.iter().map(|&n| self.logs.of(n)).collect();
        ShardFeed::resume(shard, sources, reads, from_hlc)
    }

    pub(crate) fn logged(&self, shard: u32, hlc: u64) {
        if let Some(l) = self.logged.get(shard as usize) {
            // MAX (unknown) stays until trimmed; otherwise keep the newest.
            let _ = l.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old != u64::MAX && hlc > old).then_some(hlc)
            });
        }
    }

    pub(crate) fn saved(&self, peer: u32, marks: &Watermarks) {
        self.saved.lock().insert(peer, marks.clone());
    }

    /// The HLC below which the logs keep nothing (`max_backlog_secs` ago).
    pub(crate) fn log_floor(&self) -> u64 {
        let ms = self.coordinator.now_ms().saturating_sub(self.config.max_backlog_secs.saturating_mul(1000));
        ms << vesta_proto::record::HLC_LOGICAL_BITS
    }

    /// Marks `peer` as needing a full sync, persisted before anything it has not confirmed is trimmed.
    pub(crate) async fn mark_needs_full_sync(&self, peer: &PeerStatus, why: &str) -> bool {
        let marked = confirmations::update_sync(&self.coordinator, self.origin, peer.origin, |s| {
            (!s.needed).then_some(FullSync { needed: true, start: Vec::new(), shards_done: 0, ..s })
        })
        .await;
        match marked {
            Ok(_) => {
                if !peer.needs_full_sync() {
                    tracing::error!(peer = %peer.name, "replication: {why}; the peer needs a full sync");
                }
                peer.set_needs_full_sync(true);
                true
            }
            Err(e) => {
                peer.error("save", format!("cannot mark the need of a full sync: {e}"));
                false
            }
        }
    }

    /// Drops log entries every peer confirmed (saved confirmations only: a restart resumes from them),
    /// and entries older than the logs' bound: a peer that has not confirmed those is first switched to
    /// "needs full sync", and no longer holds the logs back until its full sync begins.
    async fn trim(&self) {
        let floor = self.log_floor();
        let saved: HashMap<u32, Watermarks> = self.saved.lock().clone();
        if saved.len() < self.config.peers.len() {
            return;
        }
        let mut holding = Vec::new();
        for peer in &self.peers {
            let Some(marks) = saved.get(&peer.origin) else { return };
            if marks.iter().any(|&m| m < floor) {
                if !peer.needs_full_sync()
                    && !self.mark_needs_full_sync(peer, "it fell behind the change logs' bound").await
                {
                    return; // not marked: nothing it lacks may be trimmed yet
                }
                continue;
            }
            holding.push(marks);
        }
        let shards = self.logged.len();
        let through: Vec<u64> = (0..shards)
            .map(|s| holding.iter().map(|m| m.get(s).copied().unwrap_or(0)).min().unwrap_or(floor).max(floor))
            .collect();
        let map = self.coordinator.map();
        let mut trimmed_now = Vec::new();
        {
            let trimmed = self.trimmed.lock();
            for (shard, &t) in through.iter().enumerate() {
                let logged = self.logged[shard].load(Ordering::Relaxed);
                if t > trimmed[shard] && logged > trimmed[shard] {
                    trimmed_now.push((shard as u32, t));
                }
            }
        }
        let calls = trimmed_now.iter().map(|&(shard, t)| {
            let map = map.clone();
            async move {
                let mut ok = true;
                for &node in map.storage_group(shard) {
                    let request = Request::TrimLog(TrimLog { shard, through: t });
                    ok &= matches!(self.coordinator.pool().call(node, request).await, Ok(r) if r.status() == vesta_proto::Status::Ok);
                }
                (shard, t, ok)
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut trimmed = self.trimmed.lock();
        for (shard, t, ok) in results {
            if ok {
                trimmed[shard as usize] = t;
                if let Some(l) = self.logged.get(shard as usize) {
                    let _ = l.compare_exchange(u64::MAX, t, Ordering::Relaxed, Ordering::Relaxed);
                }
            }
        }
    }
}

impl ReplicationReport for Site {
    fn info_fields(&self) -> Vec<(String, String)> {
        let now = self.coordinator.now_ms();
        let mut fields = vec![
            ("vesta_repl_origin".to_string(), self.origin.to_string()),
            (
                "vesta_repl_shipping".to_string(),
                match (self.config.ship, self.shipping.load(Ordering::Relaxed)) {
                    (false, _) => "0",
                    (true, true) => "1",
                    (true, false) => "standby",
                }
                .to_string(),
            ),
            ("vesta_repl_listen".to_string(), self.config.listen.map_or_else(|| "-".to_string(), |a| a.to_string())),
            ("vesta_repl_peers".to_string(), self.peers.len().to_string()),
        ];
        if self.shipping.load(Ordering::Relaxed) {
            for (i, p) in self.peers.iter().enumerate() {
                fields.push((format!("vesta_repl_peer{i}"), p.info_value(now)));
            }
        }
        fields
    }

    fn request_full_sync(&self, peer: Option<&str>) -> Result<usize, String> {
        if !self.config.ship {
            return Err("this proxy does not ship (replication.ship is off)".into());
        }
        let peers: Vec<Arc<PeerStatus>> =
            self.peers.iter().filter(|p| peer.is_none_or(|name| p.name == name)).cloned().collect();
        for p in &peers {
            // Marked at once in memory (the sender stops shipping from the logs), persisted in the
            // background: the sender persists the sync's start itself before sending anything.
            p.set_needs_full_sync(true);
            if let Some(site) = self.this.upgrade() {
                let p = p.clone();
                tokio::spawn(async move {
                    site.mark_needs_full_sync(&p, "an operator asked for it").await;
                });
            }
        }
        Ok(peers.len())
    }

    fn set_paused(&self, peer: Option<&str>, paused: bool) -> Result<usize, String> {
        if !self.config.ship {
            return Err("this proxy does not ship (replication.ship is off)".into());
        }
        let peers: Vec<Arc<PeerStatus>> =
            self.peers.iter().filter(|p| peer.is_none_or(|name| p.name == name)).cloned().collect();
        for p in &peers {
            p.steer(paused);
            tracing::info!(peer = %p.name, paused, "replication");
            // Persisted, so that the proxy shipping now (perhaps another) and any later one honour it.
            if let Some(site) = self.this.upgrade() {
                let p = p.clone();
                tokio::spawn(async move {
                    if let Err(e) = confirmations::save_paused(&site.coordinator, site.origin, p.origin, paused).await {
                        p.error("save", format!("cannot save the pause: {e}"));
                    }
                });
            }
        }
        Ok(peers.len())
    }
}
