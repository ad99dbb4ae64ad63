//! A real etcd for tests of clusters kept in etcd (Debian's `etcd-server`, started on loopback ports
//! and killed on drop).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway single-member etcd, killed on drop.
pub struct Etcd {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Whether an `etcd` binary is on the PATH (tests that need one skip visibly without it).
    pub fn available() -> bool {
        Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    /// Starts etcd on two free loopback ports. A port picked free can be taken by another process before
    /// etcd binds it (tests run in parallel), so an etcd that exits during start-up is retried on new ports.
    pub fn start() -> Etcd {
        for _ in 0..5 {
            if let Some(etcd) = Self::try_start() {
                return etcd;
            }
        }
        panic!("etcd did not start after 5 attempts");
    }

    fn try_start() -> Option<Etcd> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (crate::free_port(), crate::free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Killed with the test process, whatever way it ends.
        let mut child = crate::spawn(cmd).expect("start etcd (Debian package etcd-server; .ci/run installs it)");
        // Ready when its /health endpoint says so — and it must be our etcd that answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if healthy(client) && matches!(child.try_wait(), Ok(None)) {
                return Some(Etcd { child, url, _dir: dir });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -SIG` etcd, e.g. `STOP` (it keeps its connections but answers nothing) and `CONT`.
    pub fn signal(&self, sig: &str) {
        let status =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{sig} etcd failed");
    }
}

/// etcd's `GET /health` on the client port answers `{"health":"true"}` once it serves.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
