//! Concurrent clients through `vesta proxy`: `SET … NX EX` locks have exactly one winner, and concurrent
//! `INCR`s are neither lost nor doubled.
//!
//! Each test starts its own three-zone cluster with two proxies, and the clients are spread over both:
//! writers of one proxy take turns per key, so only writers on different proxies meet at the store
//! leases — where a store-side lease bug would show. The proxies get a 10 s deadline so that a client
//! starved by contention on one hot key keeps retrying instead of answering TRYAGAIN: these tests are
//! about correctness under contention, not latency (a livelock still fails them).
//! Set `VESTA_TEST_REDIS_ADDR=127.0.0.1:PORT` to run them against a real Redis instead.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{bulk, call, int, Cluster, ClusterOptions};
use redis::Value;

const CLIENTS: usize = 50;
/// Hang protection only (the client's own response timeout fails a stuck command first).
const WATCHDOG: Duration = Duration::from_secs(600);

/// The addresses to spread clients over (two proxies), and the cluster behind them.
fn target() -> (Vec<SocketAddr>, Option<Cluster>) {
    match std::env::var("VESTA_TEST_REDIS_ADDR") {
        Ok(addr) => (vec![addr.parse().expect("VESTA_TEST_REDIS_ADDR=IP:PORT")], None),
        Err(_) => {
            let options = ClusterOptions { deadline_ms: Some(10_000), proxies: 2, ..Default::default() };
            let cluster = Cluster::start_with(options);
            ((0..cluster.proxy_count()).map(|i| cluster.proxy_addr_for(i)).collect(), Some(cluster))
        }
    }
}

/// `CLIENTS` connections, alternating RESP2 and RESP3, spread over `addrs`.
async fn clients(addrs: &[SocketAddr]) -> Vec<redis::aio::MultiplexedConnection> {
    let mut conns = Vec::new();
    for i in 0..CLIENTS {
        conns.push(common::connect(addrs[i % addrs.len()], i % 2 == 1).await);
    }
    conns
}

/// Starts every client at once; each sends `command(client, n)` for n in 0..per_client and expects an
/// integer reply each time, rising for each client (its own commands are ordered). The replies, per client.
async fn each_client_counts(
    conns: &[redis::aio::MultiplexedConnection],
    per_client: usize,
    command: impl Fn(usize, usize) -> Vec<String> + Clone + Send + 'static,
) -> Vec<Vec<i64>> {
    let start = Arc::new(tokio::sync::Barrier::new(conns.len()));
    let mut tasks = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let (mut conn, start, command) = (conn.clone(), start.clone(), command.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut seen = Vec::new();
            for n in 0..per_client {
                let args = command(i, n);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match call(&mut conn, &args).await {
                    Value::Int(v) => seen.push(v),
                    other => panic!("client {i}, {args:?} #{n}: {other:?}"),
                }
            }
            seen
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        let seen = task.await.unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "one client's replies must increase: {seen:?}");
        replies.push(seen);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_nx_ex_lock_has_exactly_one_winner() {
    let (addr, _cluster) = target();
    tokio::time::timeout(WATCHDOG, async {
        let conns = clients(&addr).await;
        for round in 0..20 {
            let key = format!("lock:{}:{round}", common::run_id());
            let start = Arc::new(tokio::sync::Barrier::new(CLIENTS));
            let mut tasks = Vec::new();
            for (i, conn) in conns.iter().enumerate() {
                let (mut conn, key, start) = (conn.clone(), key.clone(), start.clone());
                tasks.push(tokio::spawn(async move {
                    start.wait().await;
                    let token = format!("token-{i}");
                    call(&mut conn, &["SET", &key, &token, "NX", "EX", "30"]).await
                }));
            }
            let mut winners = Vec::new();
            for (i, task) in tasks.into_iter().enumerate() {
                match task.await.unwrap() {
                    Value::Okay => winners.push(i),
                    Value::Nil => {}
                    other => panic!("round {round}: client {i} got {other:?} (only OK or nil are correct)"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let mut c = conns[0].clone();
            assert_eq!(call(&mut c, &["GET", &key]).await, bulk(&format!("token-{}", winners[0])));
            let Value::Int(ttl) = call(&mut c, &["TTL", &key]).await else { panic!("TTL") };
            assert!((1..=30).contains(&ttl), "round {round}: TTL {ttl}");
            // The lock is held: a late-comer loses too.
            assert_eq!(call(&mut c, &["SET", &key, "late", "NX", "EX", "30"]).await, Value::Nil);
        }
    })
    .await
    .expect("watchdog: the test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_incr_is_neither_lost_nor_doubled() {
    const PER_CLIENT: i64 = 200;
    let (addr, _cluster) = target();
    tokio::time::timeout(WATCHDOG, async {
        let conns = clients(&addr).await;
        let key = format!("counter:{}", common::run_id());
        let k = key.clone();
        let mut all: Vec<i64> =
            each_client_counts(&conns, PER_CLIENT as usize, move |_, _| vec!["INCR".into(), k.clone()]).await.concat();
        all.sort_unstable();
        let total = CLIENTS as i64 * PER_CLIENT;
        assert_eq!(all.len() as i64, total);
        let expected: Vec<i64> = (1..=total).collect();
        if all != expected {
            let dup: Vec<_> = all.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).take(10).collect();
            panic!("INCR replies are not exactly 1..={total}; duplicates (first 10): {dup:?}");
        }
        let mut c = conns[0].clone();
        assert_eq!(call(&mut c, &["GET", &key]).await, bulk(&total.to_string()));
        assert_eq!(call(&mut c, &["INCRBY", &key, "0"]).await, int(total));
    })
    .await
    .expect("watchdog: the test hung");
}

/// Writes to one hot key queue up on each proxy, and the write whose turn it is settles those queued
/// behind it in its own two-phase commit, each on the value the one before left. APPEND shows whether
/// that order is kept whole: every reply is the length right after that client's append, so the replies
/// must be exactly 1..=n, and the final string must hold each client's characters in its own order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_each_see_the_length_their_own_append_made() {
    const PER_CLIENT: usize = 40;
    let (addr, _cluster) = target();
    tokio::time::timeout(WATCHDOG, async {
        let conns = clients(&addr).await;
        let key = format!("log:{}", common::run_id());
        // Client i appends its own letter-digit pair: "A0", "A1", … are told apart by position.
        let piece = |i: usize, n: usize| format!("{}{}", char::from(b'!' + i as u8), (b'0' + (n % 10) as u8) as char);
        let mut all: Vec<i64> = each_client_counts(&conns, PER_CLIENT, {
            let key = key.clone();
            move |i, n| vec!["APPEND".into(), key.clone(), piece(i, n)]
        })
        .await
        .concat();
        all.sort_unstable();
        let total = CLIENTS * PER_CLIENT;
        let expected: Vec<i64> = (1..=total as i64).map(|n| 2 * n).collect();
        assert_eq!(all, expected, "APPEND replies are not exactly 2, 4, …, {}", 2 * total);
        let mut c = conns[0].clone();
        let Value::BulkString(value) = call(&mut c, &["GET", &key]).await else { panic!("GET of the log") };
        assert_eq!(value.len(), 2 * total);
        for i in 0..CLIENTS {
            let mine: Vec<u8> = value.chunks(2).filter(|p| p[0] == b'!' + i as u8).map(|p| p[1]).collect();
            let expected: Vec<u8> = (0..PER_CLIENT).map(|n| b'0' + (n % 10) as u8).collect();
            assert_eq!(mine, expected, "client {i}'s appends are all there, in its order");
        }
    })
    .await
    .expect("watchdog: the test hung");
}

/// Pipelines of INCRs over a few shared counters, from clients spread over two proxies: each proxy runs
/// a pipeline's writes as one group (one batch of prepares and one of commits per store node), groups
/// of the two proxies meet at the store leases, and a member that loses there retries alone. No
/// increment may be lost or doubled: each counter's replies, over all clients, are exactly 1..=n, and
/// each client's replies for a counter rise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_increments_of_many_counters_are_neither_lost_nor_doubled() {
    const COUNTERS: usize = 8;
    const ROUNDS: usize = 6;
    let (addr, _cluster) = target();
    tokio::time::timeout(WATCHDOG, async {
        let conns = clients(&addr).await;
        let keys: Vec<String> = (0..COUNTERS).map(|i| format!("pcounter:{}:{i}", common::run_id())).collect();
        let start = Arc::new(tokio::sync::Barrier::new(conns.len()));
        let mut tasks = Vec::new();
        for (c, conn) in conns.iter().enumerate() {
            let (mut conn, start, keys) = (conn.clone(), start.clone(), keys.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                // This client's replies, per counter.
                let mut seen = vec![Vec::new(); COUNTERS];
                for round in 0..ROUNDS {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("INCR").arg(key);
                    }
                    let replies: Vec<i64> = match pipe.query_async(&mut conn).await {
                        Ok(r) => r,
                        Err(e) => panic!("client {c}, round {round}: {e}"),
                    };
                    for (i, v) in replies.into_iter().enumerate() {
                        seen[i].push(v);
                    }
                }
                seen
            }));
        }
        let mut per_counter: Vec<Vec<i64>> = vec![Vec::new(); COUNTERS];
        for task in tasks {
            for (i, replies) in task.await.unwrap().into_iter().enumerate() {
                assert!(replies.windows(2).all(|w| w[0] < w[1]), "one client's replies must rise: {replies:?}");
                per_counter[i].extend(replies);
            }
        }
        let total = (CLIENTS * ROUNDS) as i64;
        let mut c = conns[0].clone();
        for (key, mut all) in keys.iter().zip(per_counter) {
            all.sort_unstable();
            assert_eq!(all, (1..=total).collect::<Vec<_>>(), "{key}: replies not exactly 1..={total}");
            assert_eq!(call(&mut c, &["GET", key]).await, bulk(&total.to_string()));
        }
    })
    .await
    .expect("watchdog: the test hung");
}
