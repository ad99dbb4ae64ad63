//! Debian's `redis-benchmark` (7.0) against a real Vesta cluster: it must finish every test, print a
//! requests-per-second line for each, and see no error reply (redis-benchmark exits 1 with `Error from
//! server: …` on the first one). It also fetches `CONFIG GET save` / `appendonly` first and warns when that
//! fails. No timing thresholds: the numbers are printed, never judged. Each run goes against a throwaway
//! redis-server too, which proves the output parsing right.

use std::process::Command;
use std::time::Duration;

use vesta_compat_tests::{run, shared_cluster, shared_redis, Ran};

const BENCH_LIMIT: Duration = Duration::from_secs(300);

fn bench(port: u16, extra: &[&str]) -> Ran {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "set,get,incr,mset", "-n", "2000", "-c", "10", "-q"])
        .args(extra);
    run(cmd, None, BENCH_LIMIT)
}

/// `(test name, requests per second)` of every result line; progress lines are separated by `\r`.
fn results(stdout: &str) -> Vec<(String, f64)> {
    stdout
        .split(['\r', '\n'])
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(": ")?;
            let (rps, _) = rest.split_once(" requests per second")?;
            Some((name.to_string(), rps.trim().parse().ok()?))
        })
        .collect()
}

fn check(extra: &[&str]) {
    let redis = shared_redis();
    let cluster = shared_cluster();
    for (server, port) in [("redis-server", redis.port()), ("vesta", cluster.port())] {
        let ran = bench(port, extra);
        let what = format!("redis-benchmark {} against {server}", extra.join(" "));
        println!(
            "{what}:\n{}",
            ran.stdout.split('\r').filter(|l| l.contains("per second")).collect::<Vec<_>>().join("\n")
        );
        assert!(ran.success(), "{what}: {}", ran.output());
        assert!(!ran.stderr.contains("Error"), "{what}: error replies: {}", ran.output());
        assert!(!ran.stdout.contains("WARNING") && !ran.stderr.contains("WARNING"), "{what}: warned: {}", ran.output());
        let found = results(&ran.stdout);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["SET", "GET", "INCR", "MSET (10 keys)"], "{what}: result lines: {}", ran.output());
        for (name, rps) in &found {
            assert!(rps.is_finite() && *rps > 0.0, "{what}: {name}: {rps} requests per second: {}", ran.output());
        }
    }
}

#[test]
fn set_get_incr_mset() {
    check(&[]);
}

#[test]
fn set_get_incr_mset_pipelined() {
    check(&["-P", "16"]);
}

#[test]
fn set_get_incr_mset_resp3() {
    check(&["-3"]);
}
