//! Handshakes, bounded in time and counted: `vesta_tls_handshakes_total{side, result, reason}` for
//! Prometheus, and [`HandshakeStats`] for INFO.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

/// A peer gets this long to finish its handshake; a silent one is not kept forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which hop a handshake belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A Redis client on the proxy's TLS port.
    ClientPort,
    /// A store node accepting a proxy, an admin tool or another store node.
    StoreNode,
    /// A proxy, admin tool or store node connecting to a store node.
    ToStore,
    /// A replication receiver accepting a peer site's sender.
    ReplicationIn,
    /// A replication sender connecting to a peer site.
    ReplicationOut,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::ClientPort => "client_port",
            Side::StoreNode => "store_node",
            Side::ToStore => "to_store",
            Side::ReplicationIn => "replication_in",
            Side::ReplicationOut => "replication_out",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed ({reason}): {source}")]
    Failed { reason: &'static str, source: std::io::Error },
    #[error("{0:?} is not a name a certificate can be verified against")]
    BadName(String),
}

impl HandshakeError {
    /// A short label: `timeout`, `plaintext`, `no_client_certificate`, `expired`, `unknown_ca`, …
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Timeout(_) => "timeout",
            HandshakeError::Failed { reason, .. } => reason,
            HandshakeError::BadName(_) => "bad_server_name",
        }
    }
}

/// Handshakes so far, process-wide, for INFO.
pub struct HandshakeStats {
    pub ok: u64,
    pub failed: u64,
}

static OK: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

impl HandshakeStats {
    pub fn now() -> Self {
        HandshakeStats { ok: OK.load(Ordering::Relaxed), failed: FAILED.load(Ordering::Relaxed) }
    }
}

pub(crate) async fn timed<T>(
    side: Side,
    handshake: impl Future<Output = std::io::Result<T>>,
) -> Result<T, HandshakeError> {
    let outcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => Err(HandshakeError::Timeout(HANDSHAKE_TIMEOUT)),
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(HandshakeError::Failed { reason: classify(&e), source: e }),
    };
    match &outcome {
        Ok(_) => {
            OK.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("vesta_tls_handshakes_total", "side" => side.name(), "result" => "ok", "reason" => "")
                .increment(1);
        }
        Err(e) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("vesta_tls_handshakes_total", "side" => side.name(), "result" => "failed", "reason" => e.reason())
                .increment(1);
            tracing::debug!(side = side.name(), error = %e, "TLS handshake refused");
        }
    }
    outcome
}

fn classify(e: &std::io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => "closed_by_peer",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => "plaintext_or_garbage",
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(c) => certificate(c),
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::CertificateRequired => "no_client_certificate",
            AlertDescription::CertificateExpired => "peer_says_expired",
            AlertDescription::UnknownCA => "peer_says_unknown_ca",
            AlertDescription::BadCertificate => "peer_says_bad_certificate",
            AlertDescription::ProtocolVersion => "protocol_version",
            _ => "alert",
        },
        rustls::Error::PeerIncompatible(_) => "incompatible",
        _ => "tls",
    }
}

fn certificate(c: &CertificateError) -> &'static str {
    match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not_valid_yet",
        CertificateError::UnknownIssuer => "unknown_ca",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => "wrong_name",
        CertificateError::BadSignature => "bad_signature",
        CertificateError::Revoked => "revoked",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => "wrong_purpose",
        _ => "bad_certificate",
    }
}
