//! Prometheus's `redis_exporter` (Debian package prometheus-redis-exporter, 1.45) against a real `vesta
//! dev`, as operators run it: the exporter connects on every scrape of its `/metrics`, sends `PING`,
//! `CLIENT SETNAME`, `CONFIG GET *`, `INFO ALL`, `LATENCY LATEST`, `SLOWLOG LEN` / `GET` and `CLIENT LIST`
//! (`--ping-on-connect`, `--export-client-list`) and reports what it found. The scrape must succeed
//! (`redis_up 1`, `redis_exporter_last_scrape_error{err=""} 0`) and the usual figures must be real:
//! connected clients count the test's own connection, commands processed (in all and for SET) grow by at
//! least the commands the test sent between two scrapes, the uptime runs, `CONFIG GET` yields maxclients
//! and `CLIENT LIST` the exporter's own named connection. `LATENCY` and `SLOWLOG` are not required: the
//! exporter only logs their absence.
//!
//! Skipped, visibly, when neither `prometheus-redis-exporter` nor `redis_exporter` is installed.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vesta_compat_tests::{spawn, Proc};

/// Debian's name for the binary, then upstream's.
const EXPORTER_BINARIES: [&str; 2] = ["prometheus-redis-exporter", "redis_exporter"];

fn exporter_binary() -> Option<&'static str> {
    EXPORTER_BINARIES.into_iter().find(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `vesta dev` (in memory) on a free loopback port.
fn start_dev(data: &str) -> (Proc, u16) {
    let mut last = String::new();
    // The port is chosen before `vesta dev` binds it: retried in case another process took it meanwhile.
    for _ in 0..3 {
        let port = vesta_testkit::free_port();
        match Proc::spawn("dev", &["dev", "--port", &port.to_string(), "--data-dir", data, "--memory"]) {
            Ok(dev) => return (dev, port),
            Err(e) => last = e,
        }
    }
    panic!("vesta dev did not start: {last}");
}

/// The exporter process, killed when dropped.
struct Exporter {
    child: Child,
    web: String,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporter {
    /// Starts `bin` against the proxy and waits until its web port answers.
    fn start(bin: &str, redis_port: u16) -> Exporter {
        let mut last = String::new();
        // The exporter cannot listen on port 0 and tell which port it got: a free one is picked, and the
        // start retried should someone take it first.
        for _ in 0..3 {
            let web = format!("127.0.0.1:{}", vesta_testkit::free_port());
            let mut cmd = Command::new(bin);
            cmd.args(["--redis.addr", &format!("redis://127.0.0.1:{redis_port}"), "--web.listen-address", &web])
                .args(["--connection-timeout", "5s", "--ping-on-connect", "--export-client-list"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let child = spawn(cmd).unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
            let mut exporter = Exporter { child, web };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = exporter.child.try_wait() {
                    last = format!("{bin} exited: {status}");
                    break;
                }
                if std::net::TcpStream::connect(&exporter.web).is_ok() {
                    return exporter;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if last.is_empty() {
                last = format!("{bin} does not listen on {} after 20 s", exporter.web);
            }
        }
        panic!("the exporter did not start: {last}");
    }

    /// One scrape of the exporter's `/metrics` (each one makes the exporter query the proxy).
    fn scrape(&self) -> Metrics {
        let mut s = std::net::TcpStream::connect(&self.web).unwrap_or_else(|e| panic!("connect {}: {e}", self.web));
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("set a read timeout");
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.web).as_bytes()).expect("send GET");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read the scrape");
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP reply: {reply:?}"));
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
        Metrics(body.to_string())
    }
}

/// The text exposition format of one scrape.
struct Metrics(String);

impl Metrics {
    /// The value of the series written exactly `series` (name and labels as printed).
    fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    fn must(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| panic!("no {series} in the scrape:\n{}", self.redis_lines()))
    }

    /// What the exporter found about the server (its own Go runtime figures left out), for messages.
    fn redis_lines(&self) -> String {
        self.0.lines().filter(|l| l.starts_with("redis_")).collect::<Vec<_>>().join("\n")
    }
}

#[test]
fn redis_exporter_scrapes_vesta_dev() {
    let Some(bin) = exporter_binary() else {
        eprintln!("SKIPPED redis_exporter_scrapes_vesta_dev: no redis_exporter (Debian: prometheus-redis-exporter)");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let (_dev, port) = start_dev(dir.path().to_str().expect("utf-8 temp path"));
    let exporter = Exporter::start(bin, port);

    let first = exporter.scrape();
    let redis = first.redis_lines();
    assert_eq!(first.must("redis_up"), 1.0, "the exporter cannot scrape vesta:\n{redis}");
    assert_eq!(
        first.get("redis_exporter_last_scrape_error{err=\"\"}"),
        Some(0.0),
        "the scrape failed:\n{}",
        first.0.lines().filter(|l| l.contains("last_scrape_error")).collect::<Vec<_>>().join("\n")
    );
    assert!(first.must("redis_uptime_in_seconds") >= 0.0);
    assert!(first.get("redis_exporter_last_scrape_ping_time_seconds").is_some(), "PING failed:\n{redis}");
    assert_eq!(first.must("redis_config_maxclients"), 10_000.0, "CONFIG GET maxclients (vesta dev's default)");
    assert!(
        redis
            .lines()
            .any(|l| l.starts_with("redis_connected_clients_details{") && l.contains("name=\"redis_exporter\"")),
        "CLIENT LIST does not show the exporter's named connection:\n{redis}"
    );

    // A client of our own, kept open across the next scrape, and commands the exporter must count.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("a client");
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(10)).expect("connect to vesta dev");
    const SENT: u32 = 40;
    for i in 0..SENT {
        let () = redis::cmd("SET").arg(format!("exporter:{i}")).arg(i).query(&mut conn).expect("SET");
    }
    let second = exporter.scrape();
    assert_eq!(second.must("redis_up"), 1.0, "{}", second.redis_lines());
    assert_eq!(second.get("redis_exporter_last_scrape_error{err=\"\"}"), Some(0.0), "{}", second.redis_lines());
    let before = first.must("redis_commands_processed_total");
    let after = second.must("redis_commands_processed_total");
    assert!(after >= before + f64::from(SENT), "commands processed went from {before} to {after} across {SENT} SETs");
    // Ours and the exporter's own connection.
    let clients = second.must("redis_connected_clients");
    assert!(clients >= 2.0, "connected clients: {clients}");
    let set_calls = second.must("redis_commands_total{cmd=\"set\"}");
    assert!(set_calls >= f64::from(SENT), "redis_commands_total for set: {set_calls}");
    assert!(second.must("redis_uptime_in_seconds") >= first.must("redis_uptime_in_seconds"));
    eprintln!(
        "redis_exporter ({bin}) on vesta dev: up, commands processed {before} -> {after}, {clients} clients, {} redis_* series",
        second.redis_lines().lines().count()
    );
    drop(conn);
}
