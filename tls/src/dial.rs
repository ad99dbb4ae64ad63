//! Connecting to a node that speaks the internal protocol (a store node, a replication listener), over
//! TCP or, when the cluster's hops are encrypted, over mutual TLS.

use tokio::net::TcpStream;
use vesta_proto::client::NodeConnection;

use crate::handshake::HandshakeError;
use crate::ClientTls;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{addr}: {source}")]
    Handshake { addr: String, source: HandshakeError },
}

/// A multiplexed connection to the node at `addr` (`host:port`).
pub async fn dial(addr: &str, tls: Option<&ClientTls>, max_frame: usize) -> Result<NodeConnection, DialError> {
    let tcp = TcpStream::connect(addr).await.map_err(|source| DialError::Connect { addr: addr.to_string(), source })?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(NodeConnection::from_stream_with_max_frame(tcp, max_frame)),
        Some(tls) => {
            let session = tls
                .connect(addr, tcp)
                .await
                .map_err(|source| DialError::Handshake { addr: addr.to_string(), source })?;
            Ok(NodeConnection::from_io(session, max_frame))
        }
    }
}
