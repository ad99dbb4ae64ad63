//! Who may talk to a cluster-internal listener (a store node, a replication receiver): with TLS, peers
//! holding a certificate of the cluster CA; without it, peers whose address is on an allow-list. An
//! empty allow-list admits every address (a warning says so when listening beyond loopback).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::handshake::HandshakeError;
use crate::ServerTls;

/// An accepted connection that passed the gate.
pub enum Admitted {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not on the allow-list")]
    NotAllowed(IpAddr),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

#[derive(Clone, Default)]
pub struct Gate {
    pub tls: Option<ServerTls>,
    pub allowed: Vec<IpNet>,
}

impl Gate {
    pub fn new(tls: Option<ServerTls>, allowed: Vec<IpNet>, listen: SocketAddr, what: &str) -> Self {
        if tls.is_none() && allowed.is_empty() && !listen.ip().is_loopback() {
            tracing::warn!(%listen, what, "listening beyond loopback with neither TLS nor an allow-list: any peer can connect");
        }
        Gate { tls, allowed }
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allowed.is_empty() || self.allowed.iter().any(|net| net.contains(&ip))
    }

    pub async fn admit(&self, stream: TcpStream, peer: SocketAddr) -> Result<Admitted, Refused> {
        if !self.admits(peer.ip()) {
            metrics::counter!("vesta_refused_peers_total", "reason" => "allow_list").increment(1);
            return Err(Refused::NotAllowed(peer.ip()));
        }
        match &self.tls {
            None => Ok(Admitted::Plain(stream)),
            Some(tls) => Ok(Admitted::Tls(Box::new(tls.accept(stream).await?))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let gate = Gate { tls: None, allowed: vec!["10.1.0.0/16".parse().unwrap(), "127.0.0.1/32".parse().unwrap()] };
        assert!(gate.admits("10.1.2.3".parse().unwrap()));
        assert!(gate.admits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!gate.admits("10.2.0.1".parse().unwrap()));
        assert!(!gate.admits("127.0.0.2".parse().unwrap()));
        assert!(Gate::default().admits("192.0.2.1".parse().unwrap()), "no list: everyone");
    }
}
