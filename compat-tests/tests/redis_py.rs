//! redis-py 5.x and 8.x (venvs under `~/.cache/vesta/venvs`) against a real Vesta cluster, over RESP2 and
//! RESP3 explicitly (and the version's default in the handshake case: RESP3 from 8.x on). Each section of
//! `python/redis_py_compat.py` runs against a throwaway redis-server first — proving its expectations are
//! Redis's — then against Vesta, and the two transcripts must match.

use std::time::Duration;

use vesta_compat_tests::{
    key_prefix, redis_py, run_python, shared_cluster, shared_redis, transcript_diff, transcript_from_output, Transcript,
};

/// One section against one server; the script bounds every call itself (socket timeouts), this bounds
/// the whole run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

fn run_on(
    python: &std::path::Path,
    port: u16,
    server: &str,
    protocol: &str,
    prefix: &str,
    section: &str,
) -> Result<Transcript, String> {
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--protocol",
        protocol,
        "--prefix",
        prefix,
        "--section",
        section,
        "--server",
        server,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ran = run_python(python, "redis_py_compat.py", &args, SCRIPT_LIMIT);
    if ran.success() && ran.stdout.lines().any(|l| l == "DONE") {
        Ok(transcript_from_output(server, &ran.stdout, "T "))
    } else {
        Err(format!("section {section:?}, protocol {protocol}, against {server}:\n{}", ran.output()))
    }
}

/// Every protocol is tried before failing, so one run shows whether a failure is protocol-specific.
fn section(major: u32, section: &str) {
    let python = redis_py(major);
    let redis = shared_redis();
    let cluster = shared_cluster();
    let protocols: &[&str] = if section == "handshake" { &["2", "3", "default"] } else { &["2", "3"] };
    let mut failures = Vec::new();
    for protocol in protocols {
        let prefix = key_prefix(&format!("py{major}_{section}_resp{protocol}"));
        let reference = match run_on(&python, redis.port(), "redis-server", protocol, &prefix, section) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("THE SCRIPT FAILS AGAINST REAL REDIS (a test bug): {e}"));
                continue;
            }
        };
        match run_on(&python, cluster.port(), "vesta", protocol, &prefix, section) {
            Ok(tested) => {
                if let Some(diff) = transcript_diff(&reference, &tested) {
                    failures.push(format!("protocol {protocol}: {diff}"));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "redis-py {major}.x, section {section}:\n\n{}", failures.join("\n\n"));
}

macro_rules! sections {
    ($major:literal, $module:ident) => {
        mod $module {
            #[test]
            fn handshake() {
                super::section($major, "handshake")
            }
            #[test]
            fn basic() {
                super::section($major, "basic")
            }
            #[test]
            fn set_options() {
                super::section($major, "set_options")
            }
            #[test]
            fn pipeline() {
                super::section($major, "pipeline")
            }
            #[test]
            fn transaction() {
                super::section($major, "transaction")
            }
            #[test]
            fn scan() {
                super::section($major, "scan")
            }
            #[test]
            fn lock() {
                super::section($major, "lock")
            }
            #[test]
            fn watch() {
                super::section($major, "watch")
            }
            #[test]
            fn dump() {
                super::section($major, "dump")
            }
        }
    };
}

sections!(5, redis_py_5);
sections!(8, redis_py_8);
