//! Debian's `redis-cli` (7.0) against a real Vesta cluster: one-shot commands in raw and formatted output,
//! `--scan --pattern`, `-x`, `--pipe`, and an interactive session on a pseudo-terminal (hints, replies,
//! `quit`). One-shot output is compared byte for byte with the same commands against a throwaway
//! redis-server (both servers see the same key names: they are separate servers).

use std::process::Command;
use std::time::Duration;

use vesta_compat_tests::{key_prefix, python_script, run, shared_cluster, shared_redis, Ran};

const CLI_LIMIT: Duration = Duration::from_secs(60);

fn cli(port: u16, args: &[&str], stdin: Option<&[u8]>) -> Ran {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    run(cmd, stdin, CLI_LIMIT)
}

/// What a user sees from one invocation: exit status and both streams.
fn shown(ran: &Ran) -> String {
    format!("exit {:?}\nstdout {:?}\nstderr {:?}", ran.status.code(), ran.stdout, ran.stderr)
}

/// Runs each invocation against redis-server and Vesta, in order, and demands identical output.
fn compare(steps: &[(Vec<String>, Option<&[u8]>)]) -> Vec<(Ran, Ran)> {
    let redis = shared_redis();
    let cluster = shared_cluster();
    let mut diffs = Vec::new();
    let mut outputs = Vec::new();
    for (args, stdin) in steps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reference = cli(redis.port(), &args, *stdin);
        let tested = cli(cluster.port(), &args, *stdin);
        if shown(&reference) != shown(&tested) {
            diffs.push(format!(
                "redis-cli {}\n  redis-server: {}\n  vesta:        {}",
                args.join(" "),
                shown(&reference).replace('\n', "\n                "),
                shown(&tested).replace('\n', "\n                ")
            ));
        }
        outputs.push((reference, tested));
    }
    assert!(diffs.is_empty(), "redis-cli output differs:\n\n{}", diffs.join("\n\n"));
    outputs
}

fn step(args: &[&str]) -> (Vec<String>, Option<&'static [u8]>) {
    (args.iter().map(|s| s.to_string()).collect(), None)
}

#[test]
fn one_shot_commands() {
    let p = key_prefix("cli_one_shot");
    let k = |s: &str| format!("{p}{s}");
    let (s, n, missing, sp) = (k("s"), k("n"), k("missing"), k("space"));
    let steps = vec![
        step(&["SET", &s, "v"]),
        step(&["GET", &s]),
        step(&["--no-raw", "GET", &s]),
        step(&["--raw", "GET", &s]),
        step(&["GET", &missing]),
        step(&["--no-raw", "GET", &missing]),
        step(&["INCR", &n]),
        step(&["--no-raw", "INCR", &n]),
        step(&["INCR", &s]),
        step(&["--no-raw", "INCR", &s]),
        step(&["MGET", &s, &missing, &n]),
        step(&["--no-raw", "MGET", &s, &missing, &n]),
        step(&["--json", "MGET", &s, &missing, &n]),
        step(&["--no-raw", "EXISTS", &s, &missing]),
        step(&["--no-raw", "TTL", &s]),
        step(&["--no-raw", "TTL", &missing]),
        step(&["SET", &sp, "with space"]),
        step(&["--no-raw", "GET", &sp]),
        step(&["--quoted-input", "SET", &sp, "\"nul-\\x00-separated\""]),
        step(&["--no-raw", "GET", &sp]),
        step(&["--no-raw", "SET", &s, "v", "NX", "XX"]),
        step(&["--no-raw", "SET", &s, "w", "GET"]),
        step(&["NOSUCHCMD", "a", "b"]),
        step(&["--no-raw", "NOSUCHCMD", "a", "b"]),
        step(&["GET"]),
        step(&["--no-raw", "DEL", &s, &n, &missing]),
        step(&["PING"]),
        step(&["--no-raw", "ECHO", "hi"]),
        step(&["-3", "--no-raw", "GET", &missing]),
        step(&["-3", "--no-raw", "SET", &s, "v3"]),
        step(&["-3", "--no-raw", "MGET", &s, &missing]),
        step(&["-3", "--no-raw", "INCR", &s]),
    ];
    let out = compare(&steps);
    // Independently of redis-server, the basics: raw by default when stdout is not a terminal.
    assert_eq!(out[0].1.stdout, "OK\n");
    assert_eq!(out[1].1.stdout, "v\n");
    assert_eq!(out[2].1.stdout, "\"v\"\n");
    assert_eq!(out[7].1.stdout, "(integer) 2\n");
    assert_eq!(out[9].1.stdout.trim_end(), "(error) ERR value is not an integer or out of range");
}

#[test]
fn scan_with_pattern() {
    let p = key_prefix("cli_scan");
    let mut mset = vec!["MSET".to_string()];
    let mut expected = Vec::new();
    for i in 0..25 {
        let key = format!("{p}item:{i:02}");
        mset.extend([key.clone(), "v".into()]);
        expected.push(key);
    }
    mset.extend([format!("{p}other"), "v".into()]);
    let redis = shared_redis();
    let cluster = shared_cluster();
    for (server, port) in [("redis-server", redis.port()), ("vesta", cluster.port())] {
        let args: Vec<&str> = mset.iter().map(String::as_str).collect();
        let ran = cli(port, &args, None);
        assert_eq!(ran.stdout, "OK\n", "[{server}] MSET: {}", ran.output());
        let pattern = format!("{p}item:*");
        let ran = cli(port, &["--scan", "--pattern", &pattern], None);
        assert!(ran.success(), "[{server}] --scan: {}", ran.output());
        let mut found: Vec<String> = ran.stdout.lines().map(String::from).collect();
        found.sort();
        found.dedup(); // SCAN may repeat a key
        assert_eq!(found, expected, "[{server}] --scan --pattern {pattern}: {}", ran.output());
        let pattern = format!("{p}item:1?");
        let ran = cli(port, &["--scan", "--pattern", &pattern], None);
        let mut found: Vec<String> = ran.stdout.lines().map(String::from).collect();
        found.sort();
        found.dedup();
        assert_eq!(found, expected[10..20].to_vec(), "[{server}] --scan --pattern {pattern}: {}", ran.output());
    }
}

#[test]
fn value_from_stdin() {
    let p = key_prefix("cli_stdin");
    let key = format!("{p}x");
    let bin = format!("{p}bin");
    let steps = vec![
        (vec!["-x".to_string(), "SET".into(), key.clone()], Some(&b"hello\nworld\n"[..])),
        step(&["STRLEN", &key]),
        step(&["--no-raw", "GET", &key]),
        step(&["GET", &key]),
        (vec!["-x".to_string(), "APPEND".into(), key.clone()], Some(&b"!"[..])),
        step(&["--no-raw", "GET", &key]),
        (vec!["-x".to_string(), "SET".into(), bin.clone()], Some(&b"\x00\x01\xff\r\n$-1\r\n"[..])),
        step(&["--no-raw", "GET", &bin]),
        step(&["STRLEN", &bin]),
    ];
    let out = compare(&steps);
    assert_eq!(out[0].1.stdout, "OK\n");
    assert_eq!(out[1].1.stdout, "12\n", "-x keeps the trailing newline");
    assert_eq!(out[2].1.stdout, "\"hello\\nworld\\n\"\n");
    assert_eq!(out[8].1.stdout, "10\n");
}

/// Mass insertion: `--pipe` streams raw RESP and ends with an `ECHO` of 20 random bytes, whose reply tells
/// it every reply has arrived.
#[test]
fn pipe_mode() {
    let p = key_prefix("cli_pipe");
    let mut input = Vec::new();
    for i in 0..1000 {
        let key = format!("{p}k{i}");
        let value = format!("v{i}");
        input.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n", key.len(), value.len()).as_bytes(),
        );
    }
    let redis = shared_redis();
    let cluster = shared_cluster();
    for (server, port) in [("redis-server", redis.port()), ("vesta", cluster.port())] {
        let ran = cli(port, &["--pipe"], Some(&input));
        assert!(ran.success(), "[{server}] --pipe: {}", ran.output());
        assert!(ran.stdout.contains("errors: 0, replies: 1000"), "[{server}] --pipe: {}", ran.output());
        let last = format!("{p}k999");
        assert_eq!(cli(port, &["GET", &last], None).stdout, "v999\n", "[{server}] last key of --pipe");
    }
}

/// Typing into redis-cli on a terminal: the prompt, SET's hint (from `COMMAND DOCS`, or redis-cli's
/// built-in help when that fails), replies in formatted output, and `quit`.
#[test]
fn interactive_session() {
    let redis = shared_redis();
    let cluster = shared_cluster();
    let key = format!("{}k", key_prefix("cli_interactive"));
    for (server, port) in [("redis-server", redis.port()), ("vesta", cluster.port())] {
        let mut cmd = Command::new("python3");
        cmd.arg(python_script("redis_cli_pty.py")).arg(port.to_string()).arg(&key);
        let ran = run(cmd, None, Duration::from_secs(180));
        assert!(
            ran.success() && ran.stdout.lines().any(|l| l == "DONE"),
            "interactive redis-cli against {server}:\n{}",
            ran.output()
        );
    }
}
