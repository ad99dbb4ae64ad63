//! TLS for every hop of a Vesta cluster, with rustls: the client (RESP) port, proxy ↔ store node,
//! admin ↔ store node, store node ↔ store node, and site ↔ site replication.
//!
//! - [`settings`]: what a process is told — certificate, key, CA files, client authentication, protocols.
//! - [`server`] / [`client`]: rustls configurations built from those files and **reloaded** when the files
//!   change or on SIGHUP; a reload affects new connections only, so nothing in flight is dropped.
//! - [`handshake`]: accepting and connecting with a bounded handshake, counted by outcome and reason.
//! - [`authority`]: a certificate authority for tests, `vesta dev --tls` and the compose cluster
//!   (`vesta admin certs`); no key is ever committed to the repository.
//!
//! Only TLS 1.2 and 1.3 exist in rustls, and it never renegotiates, which is what the design asks for.

pub mod authority;
pub mod client;
pub mod dial;
pub mod gate;
pub mod handshake;
mod material;
mod reload;
pub mod server;
pub mod settings;

pub use client::ClientTls;
pub use dial::{dial, DialError};
pub use gate::{Admitted, Gate, Refused};
pub use handshake::{HandshakeError, HandshakeStats};
pub use server::ServerTls;
pub use settings::{ClientAuth, InternalTls, Protocols, TlsFiles};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: no {what} found in the file")]
    Empty { path: String, what: &'static str },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("bad tls-protocols {0:?}: expected TLSv1.2 and/or TLSv1.3 (older protocols are not offered)")]
    Protocols(String),
    #[error("bad tls-auth-clients {0:?}: expected yes, no or optional")]
    ClientAuth(String),
    #[error("{0}: a CA certificate file is needed to verify peers")]
    NoCa(&'static str),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The crypto provider every configuration uses (ring: no C/cmake toolchain beyond what RocksDB needs).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
pub use tokio_rustls;
