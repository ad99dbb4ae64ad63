#!/usr/bin/env bash
# Cross-site replication, measured: redis-benchmark SET and GET against site A (`vesta dev`) with
# replication off, then on (site A shipping to a site B, another `vesta dev`), then on with shipping
# paused (site A only logs), and a Debian `redis-server` in the same run for scale. Prints requests per
# second and the ratios, the bytes each replicated write cost on the link (from A's INFO replication)
# beside the size of its record, the lag under that load (a probe writes a key in A and times how long
# until B reads it, over and over), and how fast the backlog built while paused is shipped.
#
#   bench/replication.sh              # build vesta (release) and measure
#   bench/replication.sh --no-build   # use the vesta binary already built
#
# Environment (defaults in brackets):
#   BENCH_REQUESTS [100000]  BENCH_CLIENTS [50]  BENCH_KEYSPACE [100000]  BENCH_TESTS ["set get"]
#   BENCH_TIMEOUT [600]      seconds before one redis-benchmark run is abandoned
#   VESTA_BIN [$CARGO_TARGET_DIR/release/vesta]   VESTA_DEV_ARGS (extra flags for both sites)
#
# Everything listens on 127.0.0.1 only; every process is stopped by pid and the temp dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME="replication bench"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_args "$@"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
requests="${BENCH_REQUESTS:-100000}"
clients="${BENCH_CLIENTS:-50}"
keyspace="${BENCH_KEYSPACE:-100000}"
read -ra tests <<<"${BENCH_TESTS:-set get}"
run_timeout="${BENCH_TIMEOUT:-600}"
vesta_bin="${VESTA_BIN:-$CARGO_TARGET_DIR/release/vesta}"
read -ra dev_args <<<"${VESTA_DEV_ARGS:-}"

need_tools redis-server redis-benchmark redis-cli python3 timeout
bench_build vesta
[[ -x $vesta_bin ]] || die "no vesta binary at $vesta_bin (build it, or set VESTA_BIN)"

bench_tmp vesta-repl-bench
# shellcheck disable=SC2317 # called from the EXIT trap
bench_on_exit() { touch "$tmp/stop" 2>/dev/null || true; } # ends the lag probe

# bench PORT TEST: requests per second (redis-benchmark --csv)
bench() {
    timeout "$run_timeout" redis-benchmark -h "$host" -p "$1" -n "$requests" -c "$clients" -r "$keyspace" \
        -t "$2" --csv 2>/dev/null | awk -F'"' '/^"[A-Z]/ { print $4; exit }'
}

info_field() { # PORT FIELD: a field of vesta_repl_peer0 in INFO replication
    redis-cli -h "$host" -p "$1" info replication | tr ',\r' '\n\n' | awk -F= -v f="$2" '$1 == f { print $2 }'
}

# probe A B: until $tmp/stop exists, write a key in A and time how long until B reads it (ms per line)
probe() {
    local a=$1 b=$2 n=0 t0 t1 waited
    while [[ ! -e $tmp/stop ]]; do
        n=$((n + 1))
        t0=$(date +%s%N)
        redis-cli -h "$host" -p "$a" set "probe:$n" 1 >/dev/null
        waited=0
        until [[ "$(redis-cli -h "$host" -p "$b" get "probe:$n")" == 1 ]]; do
            sleep 0.005
            waited=$((waited + 1))
            ((waited < 6000)) || { echo "probe:$n never arrived" >&2; break; }
        done
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000000)) >>"$tmp/lags"
    done
}

percentile() { # FILE P (0–100)
    sort -n "$1" | awk -v p="$2" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int((NR - 1) * p / 100 + 0.5) + 1; print v[i] }'
}

declare -A rps
log "$(cores) cores; load average $(loadavg)"

port_r="$(free_port)"
start_redis redis "$port_r"
for t in "${tests[@]}"; do
    log "redis-server: $t"
    rps[redis,$t]="$(bench "$port_r" "$t")"
done

port_a="$(free_port)"
log "site A alone (replication off)"
start off "$port_a" "$vesta_bin" dev --port "$port_a" --data-dir "$tmp/off" "${dev_args[@]}"
off_pid=$last_pid
for t in "${tests[@]}"; do
    log "vesta, replication off: $t"
    rps[off,$t]="$(bench "$port_a" "$t")"
done
stop "$off_pid"

port_a="$(free_port)" port_b="$(free_port)" repl_a="$(free_port)" repl_b="$(free_port)"
log "site B, then site A shipping to it"
start site-b "$port_b" "$vesta_bin" dev --port "$port_b" --data-dir "$tmp/b" --origin 2 \
    --repl-listen "$host:$repl_b" --repl-peer "a=1@$host:$repl_a" "${dev_args[@]}"
start site-a "$port_a" "$vesta_bin" dev --port "$port_a" --data-dir "$tmp/a" --origin 1 \
    --repl-listen "$host:$repl_a" --repl-peer "b=2@$host:$repl_b" "${dev_args[@]}"
: >"$tmp/lags"
probe "$port_a" "$port_b" &
probe_pid=$!
pids+=("$probe_pid")
for t in "${tests[@]}"; do
    log "vesta, replication on: $t (the probe measures the lag meanwhile)"
    rps[on,$t]="$(bench "$port_a" "$t")"
done
touch "$tmp/stop"
wait "$probe_pid" 2>/dev/null || true
log "waiting for site A to have shipped everything"
for _ in $(seq 600); do
    [[ "$(info_field "$port_a" pending_entries)" == 0 ]] && break
    sleep 0.1
done
entries="$(info_field "$port_a" sent_entries)"
bytes="$(info_field "$port_a" sent_bytes)"

# The same machine runs both sites, so site B's installs take CPU from site A. With shipping paused, site
# A only logs (what replication costs a site by itself); then the backlog is shipped and timed.
redis-cli -h "$host" -p "$port_a" vesta.repl pause >/dev/null
for t in "${tests[@]}"; do
    log "vesta, replication on but shipping paused (site A only logs): $t"
    rps[logged,$t]="$(bench "$port_a" "$t")"
done
backlog_from="$(info_field "$port_a" sent_entries)"
# Every SET of the paused run is a write to ship (GET writes nothing).
expected=0
for t in "${tests[@]}"; do [[ $t == set ]] && expected=$requests; done
redis-cli -h "$host" -p "$port_a" vesta.repl resume >/dev/null
caught_from=$(date +%s%N)
log "shipping the backlog of $expected writes"
for _ in $(seq 6000); do
    sleep 0.1
    sent=$(($(info_field "$port_a" sent_entries) - backlog_from))
    [[ "$(info_field "$port_a" pending_entries)" == 0 ]] && ((sent >= expected)) && break
done
caught_ms=$((($(date +%s%N) - caught_from) / 1000000))
backlog=$(($(info_field "$port_a" sent_entries) - backlog_from))

echo
printf '%-6s %10s %10s %10s %8s %8s %12s %8s\n' test redis vesta-off vesta-on on/off on/redis logged-only logged/off
for t in "${tests[@]}"; do
    printf '%-6s %10s %10s %10s %8s %8s %12s %8s\n' "$t" "${rps[redis,$t]}" "${rps[off,$t]}" "${rps[on,$t]}" \
        "$(ratio "${rps[on,$t]}" "${rps[off,$t]}")" "$(ratio "${rps[on,$t]}" "${rps[redis,$t]}")" \
        "${rps[logged,$t]}" "$(ratio "${rps[logged,$t]}" "${rps[off,$t]}")"
done
echo "(vesta-on: site B installs every write on the same cores; logged-only: shipping paused, site A only logs)"
echo "backlog of $backlog writes shipped and installed in $caught_ms ms ($(awk -v n="$backlog" -v ms="$caught_ms" 'BEGIN { printf (ms > 0 ? "%.0f" : "-"), n * 1000 / ms }') writes/s)"
echo
# redis-benchmark's SET: key "key:" + 12 digits (16 bytes), value "xxx"; a record is a 58-byte header and
# the value, its log entry adds the key and the database name ("0").
echo "link: $entries entries in $bytes bytes = $(awk -v b="$bytes" -v e="$entries" 'BEGIN { printf (e > 0 ? "%.1f" : "-"), b / e }') bytes per replicated write (record 61 bytes, with key and database 78)"
echo "lag (write in A until B reads it, $(wc -l <"$tmp/lags") probes during the runs): p50 $(percentile "$tmp/lags" 50) ms, p99 $(percentile "$tmp/lags" 99) ms, max $(percentile "$tmp/lags" 100) ms"
echo "$(nproc) cores; $clients clients; $requests requests per run; keyspace $keyspace"
