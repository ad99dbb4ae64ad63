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
BENCH_NAME="encryption bench"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_args "$@"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
requests="${BENCH_REQUESTS:-100000}"
clients="${BENCH_CLIENTS:-50}"
keyspace="${BENCH_KEYSPACE:-100000}"
size="${BENCH_VALUE_SIZE:-64}"
read -ra tests <<<"${BENCH_TESTS:-set get incr}"
run_timeout="${BENCH_TIMEOUT:-600}"
vesta_bin="${VESTA_BIN:-$CARGO_TARGET_DIR/release/vesta}"
read -ra dev_args <<<"${VESTA_DEV_ARGS:-}"

need_tools redis-server redis-benchmark redis-cli python3 timeout
bench_build vesta
[[ -x $vesta_bin ]] || die "no vesta binary at $vesta_bin (build it, or set VESTA_BIN)"

bench_tmp vesta-enc-bench

# bench PORT TEST: requests per second (redis-benchmark --csv)
bench() {
    timeout "$run_timeout" redis-benchmark -h "$host" -p "$1" -n "$requests" -c "$clients" -r "$keyspace" \
        -d "$size" -t "$2" --csv 2>/dev/null | awk -F'"' '/^"[A-Z]/ { print $4; exit }'
}

declare -A rps
log "$(cores) cores; load average $(loadavg)"

port_r="$(free_port)"
start_redis redis "$port_r"
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
    stop "$vesta_pid"
done
unset VESTA_ENCRYPTION_KEYS

echo
printf '%-6s %10s %10s %10s %8s %9s\n' test redis vesta-off vesta-on on/off on/redis
for t in "${tests[@]}"; do
    printf '%-6s %10s %10s %10s %8s %9s\n' "$t" "${rps[redis,$t]}" "${rps[off,$t]}" "${rps[on,$t]}" \
        "$(ratio "${rps[on,$t]}" "${rps[off,$t]}")" "$(ratio "${rps[on,$t]}" "${rps[redis,$t]}")"
done
echo "stored record: 58-byte header + $size-byte value in the clear; + 1 + 45 bytes sealed (format, version, salt, nonce, tag)"
echo "$(nproc) cores; $clients clients; $requests requests per run; keyspace $keyspace; value $size bytes"
