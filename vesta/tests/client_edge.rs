//! The proxy's client edge under load, against real processes: Redis's idle `timeout`, the
//! `client-output-buffer-limit` of normal clients, the proxy-wide bound on commands in flight with its
//! surge queue (`-TRYAGAIN proxy overloaded, try again` beyond it), the accept-rate limit, and
//! `maxclients` against the open-file limit. Each test runs its own cluster: these settings are
//! proxy-wide. No test depends on how fast the machine is: they wait for an outcome (within a bound),
//! never for a duration.

mod common;

use std::time::{Duration, Instant};

use common::*;
use redis::Value;

/// `field:value` of an INFO text, as a number.
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).and_then(|v| v.trim().parse().ok())
}

async fn stat(c: &mut redis::aio::MultiplexedConnection, field: &str) -> u64 {
    let info = text(&call(c, &["INFO", "stats"]).await);
    info_field(&info, field).unwrap_or_else(|| panic!("no {field} in INFO stats:\n{info}"))
}

/// The value of an unlabelled metric (0 when not reported yet).
fn metric(port: u16, name: &str) -> f64 {
    let body = scrape(port);
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn flags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A 256 KiB value at `key`, and a connection that has asked for it 256 times (64 MiB of replies) and
/// reads none of them.
async fn slow_reader(cluster: &Cluster, c: &mut redis::aio::MultiplexedConnection, key: &str) -> (String, RawConn) {
    let value = "x".repeat(256 * 1024);
    assert_eq!(call(c, &["SET", key, &value]).await, Value::Okay);
    let mut slow = cluster.raw().await;
    let gets: Vec<u8> = (0..256).flat_map(|_| encode_command(&["GET", key])).collect();
    slow.send_raw(&gets).await;
    (value, slow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_idle_connection_but_not_one_with_a_command_in_flight() {
    // One store call may take 3 s: a read held up by stopped stores stays in flight that long, longer
    // than the 1 s timeout.
    let cluster = Cluster::start_with(ClusterOptions {
        node_timeout_ms: Some(3000),
        deadline_ms: Some(3000),
        ..ClusterOptions::default()
    });
    let mut admin = cluster.raw().await;
    assert_eq!(admin.call(&["CONFIG", "GET", "timeout"]).await, "*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n");
    assert_eq!(admin.call(&["CONFIG", "SET", "timeout", "1"]).await, "+OK\r\n");
    assert_eq!(admin.call(&["CONFIG", "GET", "timeout"]).await, "*2\r\n$7\r\ntimeout\r\n$1\r\n1\r\n");

    let mut busy = cluster.raw().await;
    assert_eq!(busy.call(&["SET", "idle:busy", "v"]).await, "+OK\r\n");
    let mut idle = cluster.raw().await;
    assert_eq!(idle.call(&["PING"]).await, "+PONG\r\n");

    cluster.stop_store(0);
    cluster.stop_store(1);
    busy.send(&["GET", "idle:busy"]).await;
    assert!(idle.closed_by_server().await, "a connection idle for longer than `timeout` is closed, without a reply");
    // The read waits for the stopped stores for longer than the timeout; its connection stays and answers.
    let reply = busy.read_reply().await;
    assert!(!reply.is_empty());
    cluster.cont_store(0);
    cluster.cont_store(1);

    let mut admin = cluster.raw().await;
    assert_eq!(admin.call(&["CONFIG", "SET", "timeout", "0"]).await, "+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_over_the_hard_output_limit_is_disconnected_and_other_clients_are_not() {
    let cluster = Cluster::start();
    let mut c = cluster.conn(false).await;
    let limit = call(&mut c, &["CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 0 0"]).await;
    assert_eq!(limit, Value::Okay);
    let (value, mut slow) = slow_reader(&cluster, &mut c, "obl:big").await;
    assert_eq!(stat(&mut c, "client_output_buffer_limit_disconnections").await, 0);

    let started = Instant::now();
    let mut rounds = 0;
    while stat(&mut c, "client_output_buffer_limit_disconnections").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the slow reader was never disconnected");
        // Other clients are served meanwhile, replies of the same size included.
        let key = format!("obl:other:{rounds}");
        assert_eq!(call(&mut c, &["SET", &key, "v"]).await, Value::Okay);
        assert_eq!(call(&mut c, &["GET", "obl:big"]).await, bulk(&value));
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = slow.drain_until_closed(Duration::from_secs(30)).await.expect("the slow reader is closed");
    assert!(received < 64 << 20, "the proxy held every reply instead of closing: {received} bytes");
    assert_eq!(stat(&mut c, "client_output_buffer_limit_disconnections").await, 1);
    assert_eq!(call(&mut c, &["GET", "obl:big"]).await, bulk(&value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_over_the_soft_output_limit_for_too_long_is_disconnected() {
    let cluster = Cluster::start();
    let mut c = cluster.conn(false).await;
    let limit = call(&mut c, &["CONFIG", "SET", "client-output-buffer-limit", "normal 0 512kb 1"]).await;
    assert_eq!(limit, Value::Okay);
    let (value, mut slow) = slow_reader(&cluster, &mut c, "obl:soft").await;
    // There is no hard limit: past the soft limit for over a second, it is closed.
    let started = Instant::now();
    while stat(&mut c, "client_output_buffer_limit_disconnections").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the slow reader was never disconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(slow.drain_until_closed(Duration::from_secs(30)).await.is_some());
    // A client that reads its replies is within the soft limit and stays.
    for _ in 0..4 {
        assert_eq!(call(&mut c, &["GET", "obl:soft"]).await, bulk(&value));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_max_in_flight_is_refused_at_once_while_the_rest_succeeds() {
    let port = free_port();
    let cluster = Cluster::start_with(ClusterOptions {
        metrics_port: Some(port),
        proxy_flags: flags(&["--max-in-flight", "1", "--surge-queue-len", "1"]),
        ..ClusterOptions::default()
    });
    // Pipelined commands on distinct keys run at once: one executes, one waits, the rest are refused.
    let n = 200;
    let mut raw = cluster.raw().await;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(encode_command(&["SET", &format!("burst:{i}"), "v"]));
        if i % 50 == 0 {
            // Proxy-local commands are not bounded.
            burst.extend(encode_command(&["PING"]));
        }
    }
    raw.send_raw(&burst).await;
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for i in 0..n {
        match raw.read_reply().await.as_str() {
            "+OK\r\n" => ok.push(i),
            "-TRYAGAIN proxy overloaded, try again\r\n" => refused.push(i),
            other => panic!("reply {i}: {other:?}"),
        }
        if i % 50 == 0 {
            assert_eq!(raw.read_reply().await, "+PONG\r\n");
        }
    }
    assert!(!ok.is_empty(), "some commands of the burst run");
    assert!(!refused.is_empty(), "the excess is refused");

    // Refused commands did nothing; the others did what they said.
    let mut c = cluster.conn(false).await;
    for i in &ok {
        assert_eq!(call(&mut c, &["GET", &format!("burst:{i}")]).await, bulk("v"));
    }
    for i in &refused {
        assert_eq!(call(&mut c, &["GET", &format!("burst:{i}")]).await, Value::Nil);
    }
    let counted = stat(&mut c, "vesta_overload_refused_commands").await;
    assert_eq!(counted, refused.len() as u64);
    assert!(scrape(port).contains("vesta_proxy_overload_refusals_total{"), "{}", scrape(port));
}

/// Commands that wait for their own connection's earlier commands on the same key are not load: they
/// ask the gate only once those have finished. With one slot and a queue of one, a pipeline of 200
/// INCRs on one key used to take the slot and the queue with its first two commands and be refused the
/// other 198 while they waited for each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_on_one_key_is_not_refused_for_waiting_on_itself() {
    let cluster = Cluster::start_with(ClusterOptions {
        proxy_flags: flags(&["--max-in-flight", "1", "--surge-queue-len", "1"]),
        ..ClusterOptions::default()
    });
    let n = 200;
    let mut raw = cluster.raw().await;
    let pipeline: Vec<u8> = (0..n).flat_map(|_| encode_command(&["INCR", "own-order:counter"])).collect();
    raw.send_raw(&pipeline).await;
    for i in 1..=n {
        assert_eq!(raw.read_reply().await, format!(":{i}\r\n"), "reply {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_accept_rate_wait_instead_of_being_refused() {
    let port = free_port();
    let cluster = Cluster::start_with(ClusterOptions {
        metrics_port: Some(port),
        proxy_flags: flags(&["--max-accept-rate", "2"]),
        ..ClusterOptions::default()
    });
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut c = cluster.raw().await;
        assert_eq!(c.call(&["PING"]).await, "+PONG\r\n");
        conns.push(c);
    }
    assert!(metric(port, "vesta_proxy_accepts_delayed_total") >= 1.0, "{}", scrape(port));
}

/// The proxy's soft open-file limit, and its hard one (`/proc/<pid>/limits`).
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let num = |s: &str| if s == "unlimited" { u64::MAX } else { s.parse().unwrap() };
    (num(fields[3]), num(fields[4]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_follows_the_open_file_limit() {
    let cluster = Cluster::start_with(ClusterOptions {
        proxy_flags: flags(&["--max-clients", "4000000000"]),
        ..ClusterOptions::default()
    });
    let (soft, hard) = open_file_limits(cluster.proxy_pid());
    assert_eq!(soft, hard, "the proxy raises its soft open-file limit to the hard one");
    let mut c = cluster.conn(false).await;
    let Value::Array(pair) = call(&mut c, &["CONFIG", "GET", "maxclients"]).await else { panic!("CONFIG GET") };
    let effective: u64 = text(&pair[1]).parse().unwrap();
    assert!(effective < 4_000_000_000 && effective < hard, "lowered to what the open-file limit allows: {effective}");
    assert!(effective > hard / 2, "{effective} of {hard}");

    // Beyond what the limit allows, CONFIG SET is refused as Redis refuses it.
    let refused = call(&mut c, &["CONFIG", "SET", "maxclients", &(effective + 1).to_string()]).await;
    assert_eq!(
        error_text(&refused).unwrap(),
        format!(
            "ERR CONFIG SET failed (possibly related to argument 'maxclients') - The operating system is not able \
             to handle the specified number of clients, try with {effective}"
        )
    );
    if effective >= 12_000 {
        assert_eq!(call(&mut c, &["CONFIG", "SET", "maxclients", "12000"]).await, Value::Okay);
        let Value::Array(pair) = call(&mut c, &["CONFIG", "GET", "maxclients"]).await else { panic!("CONFIG GET") };
        assert_eq!(text(&pair[1]), "12000");
    }
    // maxclients takes effect: with room for two clients, a third is refused as Redis refuses it.
    assert_eq!(call(&mut c, &["CONFIG", "SET", "maxclients", "2"]).await, Value::Okay);
    let mut second = cluster.raw().await;
    assert_eq!(second.call(&["PING"]).await, "+PONG\r\n");
    let mut third = cluster.raw().await;
    assert_eq!(third.read_reply().await, "-ERR max number of clients reached\r\n");
}
