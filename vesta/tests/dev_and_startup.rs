//! `vesta dev` keeps its data across a clean restart; `vesta proxy` refuses an unsafe quorum in one line.

mod common;

use std::time::Duration;

use common::*;

fn start_dev(data: &str) -> (Proc, u16) {
    // The port is chosen before `vesta dev` binds it: retry in case another process took it meanwhile.
    for _ in 0..3 {
        let port = free_port();
        if let Ok(dev) = Proc::spawn("dev", &["dev", "--port", &port.to_string(), "--data-dir", data]) {
            return (dev, port);
        }
    }
    panic!("vesta dev did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vesta_dev_keeps_data_across_restarts_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();

    let (dev, port) = start_dev(&data);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = connect(addr, false).await;
    assert_eq!(call(&mut c, &["SET", "kept", "v1"]).await, redis::Value::Okay);
    assert_eq!(call(&mut c, &["INCRBY", "count", "41"]).await, int(41));
    assert_eq!(call(&mut c, &["SET", "lease", "t", "EX", "300"]).await, redis::Value::Okay);
    drop(c);
    dev.signal("TERM");
    let status = dev.wait_exit(Duration::from_secs(20)).expect("vesta dev did not stop on SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    let (_dev, port) = start_dev(&data);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = connect(addr, true).await;
    assert_eq!(call(&mut c, &["GET", "kept"]).await, bulk("v1"));
    assert_eq!(call(&mut c, &["INCR", "count"]).await, int(42));
    let ttl = match call(&mut c, &["TTL", "lease"]).await {
        redis::Value::Int(t) => t,
        other => panic!("TTL: {other:?}"),
    };
    assert!((1..=300).contains(&ttl), "the TTL survives the restart: {ttl}");
}

#[test]
fn proxy_refuses_an_unsafe_quorum_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.toml");
    let zones: String =
        (1..=3).map(|z| format!("[[zone]]\nname = \"z{z}\"\nnodes = [\"127.0.0.1:{}\"]\n", 7000 + z)).collect();
    std::fs::write(&topology, format!("write_quorum = 2\nread_quorum = 1\n{zones}")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vesta"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--topology"])
        .arg(&topology)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("write_quorum + read_quorum must exceed the zone count: 2 + 1 <= 3"), "{err}");
}

/// A `proto_max_bulk_len` whose values could not reach a store node in one frame is refused at start-up
/// in one line, by `vesta proxy` (flag or environment) and by `vesta dev`.
#[test]
fn proto_max_bulk_len_over_the_frame_limit_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    type Run<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);
    let runs: [Run; 3] = [
        (&["proxy", "--listen", "127.0.0.1:0", "--proto-max-bulk-len", "536870912"], None),
        (&["proxy", "--listen", "127.0.0.1:0"], Some(("VESTA_PROXY_PROTO_MAX_BULK_LEN", "66060289"))),
        (&["dev", "--port", "0", "--memory", "--proto-max-bulk-len", "67108864"], None),
    ];
    for (args, env) in runs {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vesta"));
        cmd.args(args).current_dir(dir.path());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("proto_max_bulk_len must be between 1048576 (1 MiB) and 66060288"), "{err}");
    }
}

/// The README's two commands check the system packages before the long build: a user without them gets
/// the one `apt-get install` line; root (a fresh container, CI) gets them installed. Run against fake
/// `dpkg-query`, `id`, `apt-get` and `cargo` so that the machine's own packages are neither read nor changed.
#[test]
fn prerequisites_name_the_missing_packages_or_install_them_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let fake = |name: &str, body: &str| {
        let path = bin.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let apt_log = bin.path().join("apt.log");
    fake("dpkg-query", "case \"$*\" in *libclang-dev*|*etcd-server*) exit 1;; esac; printf installed");
    fake("cargo", "exit 0");
    fake("id", "echo 0");
    fake("apt-get", &format!("echo \"$*\" >> {}", apt_log.display()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/prerequisites.sh");
    let run = |need: &str, as_user: bool| {
        std::process::Command::new("bash")
            .arg(script)
            .arg(need)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
            .env("VESTA_PREREQUISITES_AS_USER", if as_user { "1" } else { "0" })
            .env_remove("VESTA_SKIP_PREREQUISITES")
            .output()
            .unwrap()
    };

    let out = run("build", true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sudo apt-get install -y libclang-dev\n"), "{stderr}");
    assert!(!apt_log.exists(), "nothing is installed for a user");

    let out = run("test", true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sudo apt-get install -y libclang-dev etcd-server\n"), "{stderr}");

    let out = run("test", false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(&apt_log).unwrap();
    assert_eq!(log, "update -q\ninstall -y -q libclang-dev etcd-server\n");

    fake("dpkg-query", "printf installed");
    assert!(run("test", true).status.success(), "nothing missing, nothing to do");
}
