//! The accepting side: a rustls server configuration that follows its files.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::handshake::{self, HandshakeError, Side};
use crate::reload::Reloading;
use crate::settings::{ClientAuth, InternalTls, Protocols, TlsFiles};
use crate::{material, provider, TlsError};

/// A server's TLS: cheap to clone; each accept uses the configuration current at that moment.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
    side: Side,
}

impl ServerTls {
    /// The client (RESP) port, configured as Redis's `tls-*` settings are.
    pub fn client_port(files: &TlsFiles, auth: ClientAuth, protocols: Protocols) -> Result<Self, TlsError> {
        if auth != ClientAuth::No && files.ca_file.is_none() {
            return Err(TlsError::NoCa("tls-auth-clients yes/optional"));
        }
        Self::build(files.clone(), auth, protocols, Side::ClientPort)
    }

    /// A cluster-internal listener (store node, replication receiver): peers must present a
    /// certificate of the cluster CA.
    pub fn internal(tls: &InternalTls, side: Side) -> Result<Self, TlsError> {
        Self::build(tls.files(), ClientAuth::Yes, Protocols::default(), side)
    }

    fn build(files: TlsFiles, auth: ClientAuth, protocols: Protocols, side: Side) -> Result<Self, TlsError> {
        let paths = files.paths();
        let config = Reloading::new(side.name(), paths, move || server_config(&files, auth, protocols))?;
        Ok(ServerTls { config, side })
    }

    /// Runs the handshake on an accepted connection (bounded in time, counted by outcome).
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(&self, io: S) -> Result<TlsStream<S>, HandshakeError> {
        let acceptor = TlsAcceptor::from(self.config.current());
        handshake::timed(self.side, acceptor.accept(io)).await
    }

    /// Rebuilds from the files now (what SIGHUP does).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.config.reload()
    }
}

fn server_config(files: &TlsFiles, auth: ClientAuth, protocols: Protocols) -> Result<ServerConfig, TlsError> {
    let certs = material::certs(&files.cert_file)?;
    let key = material::key(&files.key_file)?;
    let provider = provider();
    let verifier = match (auth, &files.ca_file) {
        (ClientAuth::No, _) => WebPkiClientVerifier::no_client_auth(),
        (_, None) => return Err(TlsError::NoCa("client authentication")),
        (ClientAuth::Yes, Some(ca)) => {
            WebPkiClientVerifier::builder_with_provider(material::roots(ca)?, provider.clone()).build()?
        }
        (ClientAuth::Optional, Some(ca)) => {
            WebPkiClientVerifier::builder_with_provider(material::roots(ca)?, provider.clone())
                .allow_unauthenticated()
                .build()?
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&protocols.versions())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    // RESP has no ALPN id; the internal protocol neither. Session resumption stays on (rustls's
    // in-memory cache and stateless tickets are off by default — tickets would need a shared key).
    config.alpn_protocols.clear();
    Ok(config)
}
