#!/usr/bin/env bash
# Encryption at rest, measured: redis-benchmark SET, GET and INCR against `vesta dev` with encryption off,
# then on (AES-256-GCM in the proxy, keys from VESTA_ENCRYPTION_KEYS), with a Debian `redis-server` in
# the same run for scale. Prints requests per second and the ratios, and the stored size of one record
# with and without encryption (the seal adds 45 bytes: version, salt, nonce, tag).
#
#   bench/encryption.sh              # build vesta (release) and measure
#   bench/encryption.sh --no-build   # use the vesta binary already built
#
# Environment (defaults in brackets):
#   BENCH_REQUESTS [100000]  BENCH_CLIENTS [50]  BENCH_KEYSPACE [100000]  BENCH_TESTS ["set get incr"]
#   BENCH_VALUE_SIZE [64]    bytes per SET value (redis-benchmark -d)
#   BENCH_TIMEOUT [600]      seconds before one redis-benchmark run is abandoned
#   VESTA_BIN [$CARGO_TARGET_DIR/release/vesta]   VESTA_DEV_ARGS (extra flags for vesta dev)
#
# Everything listens on 127.0.0.1 only; every process is stopped by pid and the temp dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "encryption bench: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
requests="${BENCH_REQUESTS:-100000}"
clients="${BENCH_CLIENTS:-50}"
keyspace="${BENCH_KEYSPACE:-100000}"
size="${BENCH_VALUE_SIZE:-64}"
read -ra tests <<<"${BENCH_TESTS:-set get incr}"
run_timeout="${BENCH_TIMEOUT:-600}"
vesta_bin="${VESTA_BIN:-$CARGO_TARGET_DIR/release/vesta}"
read -ra dev_args <<<"${VESTA_DEV_ARGS:-}"
host=127.0.0.1

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'encryption bench: %s\n' "$*" >&2; exit 1; }

for tool in redis-server redis-benchmark redis-cli python3 timeout; do
    command -v "$tool" >/dev/null || die "needs $tool (apt-get install -y redis-server redis-tools python3)"
done
if ((build)); then
    log "building vesta (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release -p vesta
fi
[[ -x $vesta_bin ]] || die "no vesta binary at $vesta_bin (build it, or set VESTA_BIN)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/vesta-enc-bench.XXXXXX")"
pids=()
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ping_ok() { [[ "$(timeout 2 redis-cli -h "$host" -p "$1" ping 2>/dev/null)" == PONG ]]; }

# start NAME PORT COMMAND…: runs it in the background, waits for PING; sets last_pid
start() {
    local name=$1 port=$2 deadline
    shift 2
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    last_pid=$!
    pids+=("$last_pid")
    deadline=$((SECONDS + 120))
    until ping_ok "$port"; do
        kill -0 "$last_pid" 2>/dev/null || { tail -n 20 "$tmp/$name.err" >&2; die "$name exited"; }
        ((SECONDS < deadline)) || die "$name not ready after 120 s"
        sleep 0.2
    done
    log "$name ready on $host:$port (pid $last_pid)"
}

# bench PORT TEST: requests per second (redis-benchmark --csv)
bench() {
    timeout "$run_timeout" redis-benchmark -h "$host" -p "$1" -n "$requests" -c "$clients" -r "$keyspace" \
        -d "$size" -t "$2" --csv 2>/dev/null | awk -F'"' '/^"[A-Z]/ { print $4; exit }'
}

declare -A rps
log "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

port_r="$(free_port)"
mkdir -p "$tmp/redis"
start redis "$port_r" redis-server --port "$port_r" --bind "$host" --save '' --appendonly no --dir "$tmp/redis"
for t in "${tests[@]}"; do
    log "redis-server: $t"
    rps[redis,$t]="$(bench "$port_r" "$t")"
done

key="$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
for mode in off on; do
    port="$(free_port)"
    if [[ $mode == on ]]; then
        export VESTA_ENCRYPTION_KEYS="1:$key"
    else
        unset VESTA_ENCRYPTION_KEYS
    fi
    log "vesta dev, encryption $mode"
    start "vesta-$mode" "$port" "$vesta_bin" dev --port "$port" --data-dir "$tmp/$mode" "${dev_args[@]}"
    vesta_pid=$last_pid
    enabled="$(redis-cli -h "$host" -p "$port" info encryption | tr -d '\r' | awk -F: '$1 == "encryption_enabled" { print $2 }')"
    [[ $enabled == "$([[ $mode == on ]] && echo 1 || echo 0)" ]] || die "encryption_enabled is '$enabled' with encryption $mode"
    for t in "${tests[@]}"; do
        log "vesta, encryption $mode: $t"
        rps[$mode,$t]="$(bench "$port" "$t")"
    done
    redis-cli -h "$host" -p "$port" info encryption | tr -d '\r' | grep '^encryption_' | sed "s/^/    ($mode) /" >&2
    stop_pid "$vesta_pid"
done
unset VESTA_ENCRYPTION_KEYS

echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }'; }
printf '%-6s %10s %10s %10s %8s %9s\n' test redis vesta-off vesta-on on/off on/redis
for t in "${tests[@]}"; do
    printf '%-6s %10s %10s %10s %8s %9s\n' "$t" "${rps[redis,$t]}" "${rps[off,$t]}" "${rps[on,$t]}" \
        "$(ratio "${rps[on,$t]}" "${rps[off,$t]}")" "$(ratio "${rps[on,$t]}" "${rps[redis,$t]}")"
done
echo "stored record: 58-byte header + $size-byte value in the clear; + 1 + 45 bytes sealed (format, version, salt, nonce, tag)"
echo "$(nproc) cores; $clients clients; $requests requests per run; keyspace $keyspace; value $size bytes"
