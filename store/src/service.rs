//! Whether this replica is in service, and whether it may serve at all.
//!
//! Dead copies (tombstones, expired records) keep their place in the order of copies for the grace
//! period, then are purged. A replica that was out of service for longer than that — its process down,
//! frozen, or its zone in maintenance — may still hold live copies of keys that were deleted or expired
//! meanwhile and whose dead copies the other replicas have since purged: served or repaired copy by
//! copy, it would bring those keys back. Such a replica serves nothing to proxies until it has been
//! rebuilt from the other zones (`vesta admin repair ZONE --full`).
//!
//! To know, the node writes "last in service" (wall ms) into its own engine every few seconds while in
//! service, and keeps a marker while it must be rebuilt, so that a restart does not forget either.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::engine::{Engine, EngineError, Mutation};
use crate::key;

const LAST_IN_SERVICE: &[u8] = b"last_in_service";
const REBUILD_MARKER: &[u8] = b"rebuild";

/// What the node must write after a tick of [`Service::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tick {
    Nothing,
    /// Note that the node is in service now.
    InService(Mutation),
    /// The node has just found it was away too long: persist the marker, and say so.
    Quarantined(Mutation, String),
}

pub(crate) struct Service {
    grace_ms: u64,
    check: bool,
    /// Why the node must be rebuilt before it serves again; `None` while it may serve.
    needs_repair: RwLock<Option<String>>,
    /// Whether the marker of `needs_repair` is on disk yet.
    marker_written: AtomicBool,
    /// False while the cluster keeps this node out (its zone in maintenance).
    in_service: AtomicBool,
    /// The last time (wall ms) the node was known to be in service.
    last_in_service: AtomicU64,
    /// When `last_in_service` was last persisted.
    persisted_at: AtomicU64,
}

impl Service {
    /// Reads the node's own records: a node that was last in service longer than `grace_ms` before
    /// `now` (or that was being rebuilt) starts out needing a full repair.
    pub fn open(engine: &dyn Engine, now: u64, grace_ms: u64, check: bool) -> Result<Self, EngineError> {
        let marker = engine.get(&key::node_meta(REBUILD_MARKER))?;
        let last = engine
            .get(&key::node_meta(LAST_IN_SERVICE))?
            .and_then(|raw| <[u8; 8]>::try_from(raw.as_slice()).ok())
            .map(u64::from_be_bytes)
            // A new node: in service from now on.
            .unwrap_or(now);
        let service = Service {
            grace_ms,
            check,
            needs_repair: RwLock::new(None),
            marker_written: AtomicBool::new(true),
            in_service: AtomicBool::new(true),
            last_in_service: AtomicU64::new(last),
            persisted_at: AtomicU64::new(0),
        };
        if let Some(why) = marker {
            *service.needs_repair.write() = Some(String::from_utf8_lossy(&why).into_owned());
        } else if let Some(why) = service.away_too_long(now) {
            // On disk before anything is served: a crash right now must not forget it.
            engine.write(
                &[Mutation::Put { key: key::node_meta(REBUILD_MARKER), value: why.clone().into_bytes() }],
                true,
            )?;
            service.quarantine(why);
            service.marker_written.store(true, Ordering::SeqCst);
        }
        Ok(service)
    }

    /// Why the node may not serve, if it may not.
    pub fn needs_repair(&self) -> Option<String> {
        self.needs_repair.read().clone()
    }

    /// How long the node has been out of service (0 while in service).
    pub fn away_ms(&self, now: u64) -> u64 {
        if self.in_service.load(Ordering::SeqCst) && self.needs_repair.read().is_none() {
            return 0;
        }
        now.saturating_sub(self.last_in_service.load(Ordering::SeqCst))
    }

    /// False while the cluster keeps the node out (its zone in maintenance).
    pub fn in_service(&self) -> bool {
        self.in_service.load(Ordering::SeqCst)
    }

    pub fn grace_ms(&self) -> u64 {
        self.grace_ms
    }

    /// The cluster takes the node out of service (its zone goes into maintenance) or back. Coming back
    /// after longer than the grace period puts it in quarantine at once — before it serves a request.
    pub fn set_in_service(&self, yes: bool, now: u64) {
        let was = self.in_service.swap(yes, Ordering::SeqCst);
        if yes && !was {
            if let Some(why) = self.away_too_long(now) {
                self.quarantine(why);
            }
        }
    }

    /// Begins a full repair: the node serves nothing until [`Service::rebuilt`].
    pub fn begin_rebuild(&self) -> Mutation {
        let mut why = self.needs_repair.write();
        let text = why.clone().unwrap_or_else(|| "being rebuilt by a full repair".to_string());
        *why = Some(text.clone());
        self.marker_written.store(true, Ordering::SeqCst);
        Mutation::Put { key: key::node_meta(REBUILD_MARKER), value: text.into_bytes() }
    }

    /// The full repair is done: the node serves again and counts as in service from `now`.
    pub fn rebuilt(&self, now: u64) -> Vec<Mutation> {
        *self.needs_repair.write() = None;
        self.last_in_service.store(now, Ordering::SeqCst);
        self.persisted_at.store(now, Ordering::SeqCst);
        vec![Mutation::Delete { key: key::node_meta(REBUILD_MARKER) }, last_in_service(now)]
    }

    /// Called every second or so: notes that the node is in service (persisting it every few seconds),
    /// or finds out that it has been away too long (a process frozen for longer than the grace period).
    pub fn tick(&self, now: u64) -> Tick {
        if self.needs_repair.read().is_some() {
            if !self.marker_written.swap(true, Ordering::SeqCst) {
                let why = self.needs_repair().unwrap_or_default();
                return Tick::Quarantined(
                    Mutation::Put { key: key::node_meta(REBUILD_MARKER), value: why.clone().into_bytes() },
                    why,
                );
            }
            return Tick::Nothing;
        }
        if !self.in_service.load(Ordering::SeqCst) {
            return Tick::Nothing;
        }
        if let Some(why) = self.away_too_long(now) {
            self.quarantine(why);
            return self.tick(now);
        }
        self.last_in_service.store(now, Ordering::SeqCst);
        let every = (self.grace_ms / 4).clamp(1, 10_000);
        if now.saturating_sub(self.persisted_at.load(Ordering::SeqCst)) < every {
            return Tick::Nothing;
        }
        self.persisted_at.store(now, Ordering::SeqCst);
        Tick::InService(last_in_service(now))
    }

    fn away_too_long(&self, now: u64) -> Option<String> {
        let last = self.last_in_service.load(Ordering::SeqCst);
        let away = now.saturating_sub(last);
        (self.check && away > self.grace_ms).then(|| {
            format!(
                "this replica was out of service for {}, longer than the grace period ({}): it may hold keys \
                 that were deleted or expired meanwhile and that the other replicas have forgotten, so it \
                 serves nothing until `vesta admin repair <zone> --full` has rebuilt it",
                human_ms(away),
                human_ms(self.grace_ms)
            )
        })
    }

    fn quarantine(&self, why: String) {
        tracing::error!(reason = %why, "refusing to serve until a full repair");
        *self.needs_repair.write() = Some(why);
        self.marker_written.store(false, Ordering::SeqCst);
    }
}

fn last_in_service(now: u64) -> Mutation {
    Mutation::Put { key: key::node_meta(LAST_IN_SERVICE), value: now.to_be_bytes().to_vec() }
}

/// `3d 4h`, `2h 5m`, `12m 3s`, `1.5s`.
pub(crate) fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryEngine;

    fn apply(engine: &MemoryEngine, tick: Tick) {
        match tick {
            Tick::Nothing => {}
            Tick::InService(m) | Tick::Quarantined(m, _) => engine.write(&[m], false).unwrap(),
        }
    }

    #[test]
    fn a_node_away_longer_than_the_grace_needs_a_repair_and_remembers_it() {
        let engine = MemoryEngine::new();
        let s = Service::open(&engine, 1_000, 5_000, true).unwrap();
        assert_eq!(s.needs_repair(), None, "a new node serves");
        apply(&engine, s.tick(2_000));
        // Restarted within the grace period: serves.
        let s = Service::open(&engine, 6_000, 5_000, true).unwrap();
        assert_eq!(s.needs_repair(), None);
        // Restarted after it: refuses, and says why.
        let s = Service::open(&engine, 7_001, 5_000, true).unwrap();
        let why = s.needs_repair().expect("quarantined");
        assert!(why.contains("5.0s") && why.contains("--full"), "{why}");
        apply(&engine, s.tick(7_002));
        // A restart does not end the quarantine; the end of a rebuild does.
        let s = Service::open(&engine, 7_100, 5_000, true).unwrap();
        assert!(s.needs_repair().is_some());
        engine.write(&s.rebuilt(7_200), false).unwrap();
        let s = Service::open(&engine, 7_300, 5_000, true).unwrap();
        assert_eq!(s.needs_repair(), None);
    }

    #[test]
    fn maintenance_longer_than_the_grace_quarantines_on_the_way_back() {
        let engine = MemoryEngine::new();
        let s = Service::open(&engine, 1_000, 5_000, true).unwrap();
        apply(&engine, s.tick(1_000));
        s.set_in_service(false, 1_500);
        assert_eq!(s.tick(9_000), Tick::Nothing, "no heartbeat while out of service");
        assert_eq!(s.away_ms(9_000), 8_000);
        s.set_in_service(true, 9_000);
        assert!(s.needs_repair().is_some(), "before serving a single request");
        assert!(matches!(s.tick(9_001), Tick::Quarantined(..)));
        // Back within the grace period: fine.
        let s = Service::open(&MemoryEngine::new(), 1_000, 5_000, true).unwrap();
        s.tick(1_000);
        s.set_in_service(false, 1_000);
        s.set_in_service(true, 3_000);
        assert_eq!(s.needs_repair(), None);
    }

    #[test]
    fn a_frozen_process_notices_and_the_check_can_be_off() {
        let s = Service::open(&MemoryEngine::new(), 1_000, 5_000, true).unwrap();
        s.tick(1_000);
        assert!(matches!(s.tick(20_000), Tick::Quarantined(..)));
        let off = Service::open(&MemoryEngine::new(), 1_000, 5_000, false).unwrap();
        off.tick(1_000);
        assert!(matches!(off.tick(20_000), Tick::InService(_)));
        assert_eq!(off.needs_repair(), None);
    }
}
