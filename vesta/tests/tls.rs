//! TLS on every hop, with real processes and real clients: redis-cli `--tls` and redis-py `ssl=True` on
//! the proxy's TLS port, the proxies and the admin tool to store nodes over mutual TLS, refusals of
//! plaintext, of foreign and expired certificates and of peers without one, and a certificate renewed
//! on disk reaching new connections without a restart. The CA is made by `vesta admin certs`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, Cluster, ClusterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vesta_proto::client::NodeConnection;
use vesta_proto::{Request, Response};
use vesta_tls::tokio_rustls::rustls;
use vesta_tls::tokio_rustls::TlsConnector;

fn admin_certs(out: &Path, certs: &[&str]) {
    let mut cmd = Command::new(vesta_testkit::vesta_bin());
    cmd.args(["admin", "certs", "--out", out.to_str().unwrap()]);
    for c in certs {
        cmd.args(["--cert", c]);
    }
    let ran = cmd.output().expect("run vesta admin certs");
    assert!(ran.status.success(), "vesta admin certs: {}", String::from_utf8_lossy(&ran.stderr));
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// The cluster's CA and certificates, plus a stranger CA's client certificate and an expired one.
struct Pki {
    dir: tempfile::TempDir,
    stranger: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        admin_certs(
            dir.path(),
            &["store=127.0.0.1;localhost", "proxy=127.0.0.1;localhost", "admin=vesta-admin", "client=app"],
        );
        let stranger = tempfile::tempdir().unwrap();
        admin_certs(stranger.path(), &["client=app"]);
        Pki { dir, stranger }
    }

    fn path(&self, name: &str) -> String {
        file(self.dir.path(), name)
    }

    fn store_flags(&self) -> Vec<String> {
        ["--tls-cert-file", &self.path("store.crt"), "--tls-key-file", &self.path("store.key")]
            .into_iter()
            .chain(["--tls-ca-cert-file", &self.path("ca.crt")])
            .map(String::from)
            .collect()
    }

    fn proxy_internal_flags(&self) -> Vec<String> {
        [
            "--internal-tls-cert-file",
            &self.path("proxy.crt"),
            "--internal-tls-key-file",
            &self.path("proxy.key"),
            "--internal-tls-ca-file",
            &self.path("ca.crt"),
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    fn internal(&self, name: &str) -> vesta_tls::InternalTls {
        vesta_tls::InternalTls {
            cert_file: PathBuf::from(self.path(&format!("{name}.crt"))),
            key_file: PathBuf::from(self.path(&format!("{name}.key"))),
            ca_file: PathBuf::from(self.path("ca.crt")),
        }
    }
}

/// Proxy 0 serves TLS only (`--plaintext false`, Redis's `port 0`), verifying client certificates
/// when given (`optional`); proxy 1 serves plaintext. Both reach the stores over mutual TLS.
fn start(pki: &Pki, tls_port: u16) -> Cluster {
    let first = vec![
        "--plaintext".to_string(),
        "false".into(),
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        pki.path("proxy.crt"),
        "--tls-key-file".into(),
        pki.path("proxy.key"),
        "--tls-ca-cert-file".into(),
        pki.path("ca.crt"),
        "--tls-auth-clients".into(),
        "optional".into(),
    ];
    Cluster::start_with(ClusterOptions {
        proxies: 2,
        store_flags: pki.store_flags(),
        proxy_flags: pki.proxy_internal_flags(),
        first_proxy_flags: first,
        ..ClusterOptions::default()
    })
}

fn redis_cli(port: u16, tls: &[&str], args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(tls)
        .args(args)
        .output()
        .expect("redis-cli is installed (redis-tools)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !text.contains("ERR") && !text.contains("Could not"), text.trim().to_string())
}

#[test]
fn redis_cli_and_redis_py_speak_tls_and_every_hop_behind_the_proxy_is_tls() {
    let pki = Pki::new();
    let port = free_port();
    let cluster = start(&pki, port);
    assert_eq!(cluster.proxy_addr().port(), port, "the TLS-only proxy announces its TLS port");
    let ca = pki.path("ca.crt");
    let tls = ["--tls", "--cacert", ca.as_str()];

    let (ok, out) = redis_cli(port, &tls, &["SET", "tls:k", "secret"]);
    assert!(ok && out == "OK", "redis-cli --tls SET: {out}");
    let (ok, out) = redis_cli(port, &tls, &["GET", "tls:k"]);
    assert!(ok && out == "secret", "redis-cli --tls GET: {out}");
    // The plaintext proxy reads what the TLS one wrote: both went through mutual TLS to the stores.
    let (ok, out) = redis_cli(cluster.proxy_addr_for(1).port(), &[], &["GET", "tls:k"]);
    assert!(ok && out == "secret", "plaintext proxy GET: {out}");

    // A client certificate of the cluster CA is accepted; another CA's, or an expired one, is not.
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    let (ok, out) = redis_cli(port, &[&tls[..], &["--cert", &cert, "--key", &key]].concat(), &["PING"]);
    assert!(ok && out == "PONG", "client certificate of the cluster CA: {out}");
    let (cert, key) = (file(pki.stranger.path(), "client.crt"), file(pki.stranger.path(), "client.key"));
    let (ok, out) = redis_cli(port, &[&tls[..], &["--cert", &cert, "--key", &key]].concat(), &["PING"]);
    assert!(!ok && !out.contains("PONG"), "a client certificate of another CA must be refused: {out}");
    let expired = tempfile::tempdir().unwrap();
    let ca_pem = std::fs::read_to_string(pki.path("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(pki.path("ca.key")).unwrap();
    let authority = vesta_tls::authority::Authority::load("Vesta cluster CA", &ca_pem, &ca_key).unwrap();
    authority
        .issue("old", &["app".to_string()], vesta_tls::authority::Validity::Expired)
        .unwrap()
        .write(expired.path(), "old")
        .unwrap();
    let (cert, key) = (file(expired.path(), "old.crt"), file(expired.path(), "old.key"));
    let (ok, out) = redis_cli(port, &[&tls[..], &["--cert", &cert, "--key", &key]].concat(), &["PING"]);
    assert!(!ok && !out.contains("PONG"), "an expired client certificate must be refused: {out}");

    // Plaintext to the TLS-only port gets no service.
    let (ok, out) = redis_cli(port, &[], &["PING"]);
    assert!(!ok && !out.contains("PONG"), "plaintext on the TLS port: {out}");

    // redis-py, unchanged but for ssl=True.
    let script = format!(
        "import redis\n\
         r = redis.Redis(host='127.0.0.1', port={port}, ssl=True, ssl_ca_certs='{ca}')\n\
         assert r.ping()\n\
         assert r.set('tls:py', 'v1')\n\
         assert r.get('tls:py') == b'v1'\n\
         assert r.incr('tls:py:n') >= 1\n\
         assert r.get('tls:k') == b'secret'\n\
         p = r.pipeline(transaction=True)\n\
         p.set('tls:py:a', 1).incr('tls:py:a').get('tls:py:a')\n\
         assert p.execute()[2] == b'2'\n\
         print('redis-py over TLS: ok')\n"
    );
    match python_with_redis() {
        None => {
            println!("SKIP redis-py part: python3 with the redis module is not installed (CI installs python3-redis)")
        }
        Some(python) => {
            let out = Command::new(python).args(["-c", &script]).output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "redis-py over TLS: {text}");
        }
    }

    let (_, info) = redis_cli(port, &tls, &["INFO", "stats"]);
    let field = |name: &str| -> u64 {
        info.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    assert!(field("tls_handshakes_ok") >= 3, "{info}");
    assert!(field("tls_handshakes_failed") >= 3, "refusals are counted: {info}");
}

fn python_with_redis() -> Option<&'static str> {
    let ok = Command::new("python3").args(["-c", "import redis"]).output().map(|o| o.status.success()).unwrap_or(false);
    ok.then_some("python3")
}

fn anonymous_client(ca: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

use rustls::pki_types::pem::PemObject;

/// Whether a store node answers a ping over `conn` within 5 s.
async fn pings(conn: NodeConnection) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(5), conn.call(Request::Ping)).await, Ok(Ok(Response::Pong(_))))
}

#[tokio::test]
async fn store_nodes_admit_only_peers_with_a_certificate_of_the_cluster_ca() {
    let pki = Pki::new();
    let cluster = start(&pki, free_port());
    let store = cluster.store_addr(0).to_string();

    // The admin tool's certificate: in.
    let admin = vesta_tls::ClientTls::internal(&pki.internal("admin"), vesta_tls::handshake::Side::ToStore).unwrap();
    let conn = vesta_tls::dial(&store, Some(&admin), vesta_proto::frame::DEFAULT_MAX_FRAME).await.unwrap();
    assert!(pings(conn).await, "admin ↔ store over mutual TLS");

    // Plaintext: no answer.
    let plain = NodeConnection::connect(&store).await.unwrap();
    assert!(!pings(plain).await, "a plaintext peer must get nothing from a TLS store node");

    // TLS without a client certificate: refused.
    let tcp = TcpStream::connect(&store).await.unwrap();
    let name = vesta_tls::client::server_name(&store).unwrap();
    let anonymous = async {
        let session = TlsConnector::from(Arc::new(anonymous_client(&pki.path("ca.crt")))).connect(name, tcp).await?;
        Ok::<_, std::io::Error>(NodeConnection::from_io(session, vesta_proto::frame::DEFAULT_MAX_FRAME))
    };
    // Refused at the handshake (Err), or right after it (TLS 1.3 judges the client's certificate then).
    if let Ok(conn) = anonymous.await {
        assert!(!pings(conn).await, "mutual TLS without a client certificate must be refused");
    }

    // A certificate of another CA: refused.
    let stranger_dir = pki.stranger.path();
    let stranger = vesta_tls::InternalTls {
        cert_file: stranger_dir.join("client.crt"),
        key_file: stranger_dir.join("client.key"),
        ca_file: PathBuf::from(pki.path("ca.crt")),
    };
    let stranger = vesta_tls::ClientTls::internal(&stranger, vesta_tls::handshake::Side::ToStore).unwrap();
    if let Ok(conn) = vesta_tls::dial(&store, Some(&stranger), vesta_proto::frame::DEFAULT_MAX_FRAME).await {
        assert!(!pings(conn).await, "a certificate of another CA must be refused");
    }
}

/// The certificate a TLS port presents to a new connection, and that connection.
async fn served(addr: SocketAddr, ca: &str) -> (Vec<u8>, vesta_tls::tokio_rustls::client::TlsStream<TcpStream>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = vesta_tls::client::server_name(&addr.to_string()).unwrap();
    let session = TlsConnector::from(Arc::new(anonymous_client(ca))).connect(name, tcp).await.unwrap();
    let cert = session.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (cert, session)
}

async fn ping(session: &mut vesta_tls::tokio_rustls::client::TlsStream<TcpStream>) -> String {
    session.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), session.read_exact(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_reaches_new_connections_without_a_restart() {
    let pki = Pki::new();
    let cluster = start(&pki, free_port());
    let addr = cluster.proxy_addr();
    let ca = pki.path("ca.crt");
    let (before, mut old) = served(addr, &ca).await;
    assert_eq!(ping(&mut old).await, "+PONG\r\n");

    admin_certs(pki.dir.path(), &["proxy=127.0.0.1;localhost"]);
    let mut renewed = false;
    for _ in 0..50 {
        let (now, _) = served(addr, &ca).await;
        if now != before {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(renewed, "the renewed certificate is served to new connections within 10 s");
    assert_eq!(ping(&mut old).await, "+PONG\r\n", "a connection made before the renewal keeps working");
    assert_eq!(cluster.proxy_count(), 2);
}

#[tokio::test]
async fn without_tls_a_store_node_admits_only_its_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut args = vesta_testkit::store_args("allow", "127.0.0.1:0", data);
    args.extend(["--allowed-peers", "127.0.0.2/32"]);
    let store = vesta_testkit::Proc::spawn("allow", &args).unwrap();
    let addr = store.addr();

    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        pings(NodeConnection::from_stream(tcp)).await
    };
    assert!(from([127, 0, 0, 2]).await, "an allowed address is served");
    assert!(!from([127, 0, 0, 1]).await, "an address off the allow-list is refused");
}
