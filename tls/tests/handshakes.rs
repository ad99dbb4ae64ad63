//! Real TLS handshakes over loopback TCP between the crate's server and client configurations: who is
//! refused, why, and that a certificate swapped on disk reaches new connections while an established
//! one keeps working.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vesta_tls::authority::{Authority, Validity};
use vesta_tls::handshake::Side;
use vesta_tls::{ClientAuth, ClientTls, InternalTls, Protocols, ServerTls, TlsFiles};

fn loopback() -> Vec<String> {
    vec!["127.0.0.1".to_string(), "localhost".to_string()]
}

/// A CA in `dir` and a certificate `name` it issued for `sans`.
fn issue(dir: &Path, ca: &Authority, name: &str, sans: Vec<String>, validity: Validity) -> InternalTls {
    let (ca_file, _) = ca.write(dir).unwrap();
    let (cert_file, key_file) = ca.issue(name, &sans, validity).unwrap().write(dir, name).unwrap();
    InternalTls { cert_file, key_file, ca_file }
}

/// A server that echoes one line per connection; returns its address.
async fn echo_server(tls: ServerTls) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = tls.accept(tcp).await {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(client: &ClientTls, addr: &str) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut s = client.connect(addr, tcp).await.map_err(|e| e.reason().to_string())?;
    // With TLS 1.3 a client certificate is judged after the client's handshake ends: the refusal
    // arrives as the first read fails.
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    (&buf == b"ping").then_some(()).ok_or_else(|| "wrong echo".to_string())
}

#[tokio::test]
async fn mutual_tls_accepts_the_cluster_and_refuses_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster ca").unwrap();
    let server = issue(&dir.path().join("server"), &ca, "store", loopback(), Validity::Days(30));
    let good = issue(&dir.path().join("good"), &ca, "proxy", loopback(), Validity::Days(30));
    let expired = issue(&dir.path().join("expired"), &ca, "old", loopback(), Validity::Expired);
    let other_ca = Authority::new("someone else").unwrap();
    let stranger = issue(&dir.path().join("stranger"), &other_ca, "proxy", loopback(), Validity::Days(30));
    // A stranger's client that trusts our CA (so only its own certificate is at fault).
    let stranger = InternalTls { ca_file: good.ca_file.clone(), ..stranger };

    let addr = echo_server(ServerTls::internal(&server, Side::StoreNode).unwrap()).await;
    round_trip(&ClientTls::internal(&good, Side::ToStore).unwrap(), &addr).await.expect("a cluster member is let in");

    let refused = round_trip(&ClientTls::internal(&stranger, Side::ToStore).unwrap(), &addr).await;
    assert!(refused.is_err(), "a client certificate of another CA is refused");
    let refused = round_trip(&ClientTls::internal(&expired, Side::ToStore).unwrap(), &addr).await;
    assert!(refused.is_err(), "an expired client certificate is refused");

    // No client certificate at all.
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&good.ca_file).unwrap() {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = vesta_tls::client::server_name(&addr).unwrap();
    let outcome = async {
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(anonymous)).connect(name, tcp).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(())
    };
    assert!(outcome.await.is_err(), "mutual TLS without a client certificate is refused");

    let stats = vesta_tls::HandshakeStats::now();
    assert!(stats.ok >= 1 && stats.failed >= 1, "handshakes are counted: {} ok, {} failed", stats.ok, stats.failed);
}

#[tokio::test]
async fn a_server_certificate_is_checked_for_its_ca_expiry_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster ca").unwrap();
    let client = issue(&dir.path().join("client"), &ca, "proxy", loopback(), Validity::Days(30));

    let wrong_name =
        issue(&dir.path().join("wrong"), &ca, "store", vec!["store.elsewhere.example".into()], Validity::Days(30));
    let addr = echo_server(ServerTls::internal(&wrong_name, Side::StoreNode).unwrap()).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let err = ClientTls::internal(&client, Side::ToStore).unwrap().connect(&addr, tcp).await.err();
    assert_eq!(err.map(|e| e.reason()), Some("wrong_name"));

    let expired = issue(&dir.path().join("expired"), &ca, "store", loopback(), Validity::Expired);
    let addr = echo_server(ServerTls::internal(&expired, Side::StoreNode).unwrap()).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let err = ClientTls::internal(&client, Side::ToStore).unwrap().connect(&addr, tcp).await.err();
    assert_eq!(err.map(|e| e.reason()), Some("expired"));

    let other = Authority::new("someone else").unwrap();
    let foreign = issue(&dir.path().join("foreign"), &other, "store", loopback(), Validity::Days(30));
    let addr = echo_server(ServerTls::internal(&foreign, Side::StoreNode).unwrap()).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let err = ClientTls::internal(&client, Side::ToStore).unwrap().connect(&addr, tcp).await.err();
    assert_eq!(err.map(|e| e.reason()), Some("unknown_ca"));
}

#[tokio::test]
async fn plaintext_to_a_tls_port_gets_no_service() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("ca").unwrap();
    let server = issue(dir.path(), &ca, "proxy", loopback(), Validity::Days(30));
    let files = TlsFiles { cert_file: server.cert_file, key_file: server.key_file, ca_file: None };
    let addr = echo_server(ServerTls::client_port(&files, ClientAuth::No, Protocols::default()).unwrap()).await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await.expect("closed promptly");
    // rustls may answer with an alert record before closing; never with an echo of the request.
    assert!(read.is_err() || !buf.windows(4).any(|w| w == b"PING"), "plaintext got served: {buf:?}");
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("ca").unwrap();
    let server = issue(&dir.path().join("s"), &ca, "store", loopback(), Validity::Days(30));
    let client = issue(&dir.path().join("c"), &ca, "proxy", loopback(), Validity::Days(30));
    let client = ClientTls::internal(&client, Side::ToStore).unwrap();
    let addr = echo_server(ServerTls::internal(&server, Side::StoreNode).unwrap()).await;

    let served = |addr: String| {
        let client = client.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            let s = client.connect(&addr, tcp).await.unwrap();
            let cert = s.get_ref().1.peer_certificates().unwrap()[0].clone();
            (s, cert)
        }
    };
    let (mut old_session, first) = served(addr.clone()).await;
    let renewed = ca.issue("store", &loopback(), Validity::Days(60)).unwrap();
    renewed.write(&dir.path().join("s"), "store").unwrap();

    let mut swapped = false;
    for _ in 0..50 {
        let (_, now) = served(addr.clone()).await;
        if now != first {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(swapped, "the renewed certificate is served within 10 s, without a restart");
    old_session.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    old_session.read_exact(&mut buf).await.expect("a session established before the swap keeps working");
    assert_eq!(&buf, b"ping");
}

#[test]
fn a_ca_written_to_disk_issues_more_certificates_later() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("ca").unwrap();
    ca.write(dir.path()).unwrap();
    let again = Authority::load(
        "ca",
        &std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
        &std::fs::read_to_string(dir.path().join("ca.key")).unwrap(),
    )
    .unwrap();
    let issued = again.issue("x", &loopback(), Validity::Days(1)).unwrap();
    let leaf_dir = dir.path().join("leaf");
    let (cert_file, key_file) = issued.write(&leaf_dir, "x").unwrap();
    let leaf = InternalTls { cert_file, key_file, ca_file: dir.path().join("ca.crt") };
    // A certificate issued after the reload verifies against the CA file written before it.
    let first = issue(&dir.path().join("first"), &ca, "store", loopback(), Validity::Days(30));
    let first = InternalTls { ca_file: dir.path().join("ca.crt"), ..first };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = echo_server(ServerTls::internal(&first, Side::StoreNode).unwrap()).await;
        round_trip(&ClientTls::internal(&leaf, Side::ToStore).unwrap(), &addr)
            .await
            .expect("the reloaded CA's certificate is trusted");
    });
    let other = Authority::new("other").unwrap();
    assert!(
        Authority::load("ca", &std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(), &other.key_pem()).is_err(),
        "a key that is not the CA's is refused"
    );
}
