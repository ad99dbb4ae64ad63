//! Which proxy of a site ships: every proxy with `ship` is a candidate, and the one holding the shipping
//! lease ships. The lease is a record in the site's own storage (`shipper/<origin>` in replication's
//! namespace), taken and renewed through the two-phase commit like any write, so candidates need no etcd
//! and agree whenever a write quorum does.
//!
//! A holder renews every `RENEW`; a lease not renewed for `TTL` may be taken by another candidate. A holder
//! that cannot renew stops shipping before its lease can have run out anywhere (less the clocks' drift).
//! Two shippers at once — for a moment around a takeover — would only send some writes twice, which the
//! receiver finds already installed; confirmations only move forward.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use vesta_proxy::coordinator::{CoordError, Coordinator};

use crate::confirmations;

/// How long a lease lasts after its last renewal.
pub const TTL: Duration = Duration::from_secs(5);
/// How often the holder renews (and a candidate tries).
pub const RENEW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    holder: u128,
    /// Unix ms.
    expires_at: u64,
}

impl Lease {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(24);
        b.put_u128(self.holder);
        b.put_u64(self.expires_at);
        b.freeze()
    }

    fn decode(mut v: &[u8]) -> Option<Lease> {
        (v.remaining() >= 24).then(|| Lease { holder: v.get_u128(), expires_at: v.get_u64() })
    }
}

/// Takes or renews the shipping lease of site `origin` for candidate `me`: `Ok(true)` if `me` holds it
/// now (until `TTL` from now), `Ok(false)` if another candidate does.
pub async fn hold(coordinator: &Arc<Coordinator>, origin: u32, me: u128) -> Result<bool, CoordError> {
    let key = Bytes::from(format!("shipper/{origin}"));
    confirmations::update(coordinator, &key, move |current, now| match current.and_then(Lease::decode) {
        Some(l) if l.holder != me && l.expires_at > now => None,
        _ => Some(Lease { holder: me, expires_at: now + TTL.as_millis() as u64 }.encode()),
    })
    .await
}

/// Whether a holder whose last renewal succeeded at `renewed` may still ship: its lease lasts `TTL` from
/// a moment a little after `renewed` in every clock, less what the clocks may disagree by.
pub fn still_held(renewed: Option<Instant>, max_clock_drift: Duration) -> bool {
    renewed.is_some_and(|at| at.elapsed() + RENEW + 2 * max_clock_drift < TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_round_trips_and_a_silent_holder_stops_in_time() {
        let l = Lease { holder: 7 << 70, expires_at: 123 };
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        assert_eq!(Lease::decode(b"short"), None);
        let drift = Duration::from_millis(100);
        assert!(still_held(Some(Instant::now()), drift));
        assert!(!still_held(None, drift));
        assert!(!still_held(Instant::now().checked_sub(TTL), drift));
    }
}
