//! The connecting side: a rustls client configuration that follows its files, and the server name a
//! `host:port` address is verified against.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::handshake::{self, HandshakeError, Side};
use crate::reload::Reloading;
use crate::settings::{InternalTls, Protocols};
use crate::{material, provider, TlsError};

/// A client's TLS: cheap to clone; each connect uses the configuration current at that moment.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientConfig>>,
    side: Side,
}

impl ClientTls {
    /// A cluster-internal client (proxy, admin, store node, replication sender): verifies the server
    /// against the cluster CA and presents its own certificate.
    pub fn internal(tls: &InternalTls, side: Side) -> Result<Self, TlsError> {
        let tls = tls.clone();
        let paths = tls.files().paths();
        let config = Reloading::new(side.name(), paths, move || client_config(&tls))?;
        Ok(ClientTls { config, side })
    }

    /// Connects over `io` to the server reached at `addr` (`host:port`); the server's certificate
    /// must name `host` (an IP address or a DNS name).
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        addr: &str,
        io: S,
    ) -> Result<TlsStream<S>, HandshakeError> {
        let name = server_name(addr).map_err(|_| HandshakeError::BadName(addr.to_string()))?;
        let connector = TlsConnector::from(self.config.current());
        handshake::timed(self.side, connector.connect(name, io)).await
    }
}

fn client_config(tls: &InternalTls) -> Result<ClientConfig, TlsError> {
    let roots = material::roots(&tls.ca_file)?;
    let certs = material::certs(&tls.cert_file)?;
    let key = material::key(&tls.key_file)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&Protocols::default().versions())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?)
}

/// The host part of `host:port` (`[v6]:port` too) as a name to verify.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_of_addresses() {
        assert!(matches!(server_name("127.0.0.1:7000").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]:7000").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("store-1:7000").unwrap(), ServerName::DnsName(_)));
        assert!(server_name("bad name:1").is_err());
    }
}
