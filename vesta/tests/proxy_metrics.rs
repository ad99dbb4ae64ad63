//! The proxy's Prometheus endpoint reports commands, quorum outcomes, repairs, store health and clients.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_metrics_cover_commands_quorums_and_store_health() {
    let port = free_port();
    let mut cluster = Cluster::start_with(ClusterOptions { metrics_port: Some(port), ..Default::default() });
    let mut c = cluster.conn(false).await;
    assert_eq!(call(&mut c, &["SET", "m:a", "1"]).await, redis::Value::Okay);
    assert_eq!(call(&mut c, &["INCR", "m:a"]).await, int(2));
    assert_eq!(call(&mut c, &["GET", "m:a"]).await, bulk("2"));
    // A store that misses a write and comes back is repaired by the next reads.
    cluster.kill_store(0);
    assert_eq!(call(&mut c, &["SET", "m:b", "new"]).await, redis::Value::Okay);
    cluster.restart_store(0);
    // The proxy reconnects after its back-off; keep reading (bounded) until a repair has been sent.
    for _ in 0..500 {
        assert_eq!(call(&mut c, &["GET", "m:b"]).await, bulk("new"));
        if scrape(port).contains("vesta_proxy_repairs_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let m = scrape(port);
    for want in [
        r#"vesta_proxy_commands_total{cmd="set"} 2"#,
        r#"vesta_proxy_commands_total{cmd="incr"} 1"#,
        r#"vesta_proxy_command_seconds_bucket{cmd="get",le="#,
        r#"vesta_proxy_quorum_total{op="write",outcome="ok"} 3"#,
        r#"vesta_proxy_quorum_total{op="read",outcome="ok"}"#,
        r#"vesta_proxy_repairs_total{kind="#,
        "vesta_proxy_store_up{node=",
        "vesta_proxy_client_connections 1",
    ] {
        assert!(m.contains(want), "missing {want} in:\n{m}");
    }
}
