#!/usr/bin/env bash
# Every figure of issue 13 ("Performance") in one run, each beside a Debian redis-server (no persistence)
# measured in the same run, printed as one table with the ratios:
#
#  1. `vesta dev` (default flags): redis-benchmark SET, GET, INCR at pipeline 1 and 16 (50 clients,
#     -r 100000 -d 16): requests/s, the ratio to redis-server, p50 and p99, and the CPU time each server
#     used per request (user + system, from /proc: it moves far less between runs than throughput).
#  2. Separate processes over TCP: 3 `vesta store` (one per zone, RocksDB, --sync periodic) and one
#     `vesta proxy` with a static topology file: SET and GET at pipeline 1.
#  3. One hot counter, 50 clients INCR the same key: redis-benchmark (then GET must answer n), and
#     `vesta-bench hot-counter` (every reply kept: exactly 1..n, each client's own rising).
#  4. Latency at half of vesta dev's own maximum (its SET and GET P1 figures of step 1): `vesta-bench
#     rate`, open loop, latency from each request's scheduled send time; the same rate against redis-server.
#  5. A burst at 3x that maximum: p99 of the successful replies, the share refused (error replies, by
#     prefix), timeouts, beside the proxy's client deadline (deadline_ms, 1000 by default).
# It asserts nothing: it prints the figures (and the hot counter's check) for a person to read.
#
#   bench/performance.sh              # build vesta and vesta-bench (release), then measure
#   bench/performance.sh --no-build   # use the binaries already built
#
# Environment (defaults in brackets):
#   BENCH_REQUESTS [100000]   requests per redis-benchmark run at pipeline 1, and the hot counter's n
#   BENCH_REQUESTS_PIPELINED [5x that]  BENCH_CLIENTS [50]  BENCH_KEYSPACE [100000]  BENCH_VALUE_SIZE [16]
#   BENCH_RATE_SECONDS [10]   length of each half-capacity run   BENCH_BURST_SECONDS [5] of each burst
#   BENCH_RATE_CONNECTIONS [50]   connections of `vesta-bench rate`
#   BENCH_DEADLINE_MS [1000]  the client deadline the burst's p99 is held against (the proxy's deadline_ms)
#   BENCH_STEPS ["dev tcp hot half burst"]   the steps to run (half and burst use dev's SET/GET P1 figures)
#   BENCH_TIMEOUT [600]       seconds before any one run is abandoned
#   BENCH_CSV                 also write the table to this CSV file
#   VESTA_BIN [$CARGO_TARGET_DIR/release/vesta]  VESTA_BENCH_BIN [$CARGO_TARGET_DIR/release/vesta-bench]
#   VESTA_DEV_ARGS            extra flags for `vesta dev`      BENCH_KEEP=1   keep the temp dir (logs)
#
# Everything listens on 127.0.0.1 (free ephemeral ports); every process is stopped by pid and the temp
# dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=performance
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_args "$@"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
requests="${BENCH_REQUESTS:-100000}"
requests_pipelined="${BENCH_REQUESTS_PIPELINED:-$((requests * 5))}"
clients="${BENCH_CLIENTS:-50}"
keyspace="${BENCH_KEYSPACE:-100000}"
size="${BENCH_VALUE_SIZE:-16}"
rate_seconds="${BENCH_RATE_SECONDS:-10}"
burst_seconds="${BENCH_BURST_SECONDS:-5}"
rate_connections="${BENCH_RATE_CONNECTIONS:-50}"
deadline_ms="${BENCH_DEADLINE_MS:-1000}"
read -ra steps <<<"${BENCH_STEPS:-dev tcp hot half burst}"
run_timeout="${BENCH_TIMEOUT:-600}"
vesta_bin="${VESTA_BIN:-$CARGO_TARGET_DIR/release/vesta}"
bench_bin="${VESTA_BENCH_BIN:-$CARGO_TARGET_DIR/release/vesta-bench}"
read -ra dev_args <<<"${VESTA_DEV_ARGS:-}"

want() { [[ " ${steps[*]} " == *" $1 "* ]]; }

need_redis
need_tools timeout python3 awk
bench_build vesta vesta-bench
[[ -x $vesta_bin ]] || die "no vesta binary at $vesta_bin (build it, or set VESTA_BIN)"
[[ -x $bench_bin ]] || die "no vesta-bench binary at $bench_bin (build it, or set VESTA_BENCH_BIN)"
bench_tmp vesta-performance

load_before="$(loadavg)"
run=0
script_started=$SECONDS

# --- redis-benchmark ---------------------------------------------------------------------------------
declare -A rps p50 p99 note
# rb KEY LABEL PORT REQUESTS PIPELINE ARGS…: one redis-benchmark run; sets rps/p50/p99/note[KEY].
rb() {
    local key=$1 label=$2 port=$3 n=$4 pipe=$5 out err status=0 started=$SECONDS
    shift 5
    run=$((run + 1))
    out="$tmp/run-$run.csv" err="$tmp/run-$run.err"
    rps[$key]=- p50[$key]=- p99[$key]=- note[$key]=
    if ! port_open "$port"; then
        # redis-benchmark spins forever on a port nobody listens on: never start it there
        log "$label: server is down, skipped"
        note[$key]="server down"
        return 0
    fi
    log "$label: redis-benchmark -c $clients -P $pipe -n $n $*"
    run_bounded "$run_timeout" "$out" "$err" redis-benchmark -h "$host" -p "$port" -c "$clients" -P "$pipe" -n "$n" --csv "$@" ||
        status=$?
    rps[$key]="$(csv_field "$out" rps)"
    p50[$key]="$(csv_field "$out" p50_latency_ms)"
    p99[$key]="$(csv_field "$out" p99_latency_ms)"
    note[$key]="$(rb_note "$status" "$out" "$err")"
    if [[ -n ${note[$key]} ]]; then
        log "    ${note[$key]} after $((SECONDS - started)) s"
        [[ -s $err ]] && tail -n 5 "$err" | sed 's/^/    /' >&2
    else
        log "    ${rps[$key]} requests/s, p50 ${p50[$key]} ms, p99 ${p99[$key]} ms ($((SECONDS - started)) s)"
    fi
}

# cpu_ticks PID: user + system CPU time the process has used so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo -; }
declare -A cpu_us
# rb_cpu KEY PID LABEL PORT REQUESTS PIPELINE ARGS…: rb, and the server's CPU microseconds per request in
# cpu_us[KEY] — a figure that moves far less between runs than throughput on a shared machine, and that
# tells where a ratio comes from (work per request, not waiting).
rb_cpu() {
    local key=$1 pid=$2 n=$5 before after
    shift 2
    before="$(cpu_ticks "$pid")"
    rb "$key" "$@"
    after="$(cpu_ticks "$pid")"
    cpu_us[$key]="$(awk -v a="$before" -v b="$after" -v t="$(getconf CLK_TCK)" -v n="$n" \
        'BEGIN { if (a == "-" || b == "-" || n == 0) print "-"; else printf "%.1f", (b - a) / t * 1e6 / n }')"
}

# --- vesta-bench ---------------------------------------------------------------------------------------
# field FILE NAME: NAME=value of the `result:` line of a vesta-bench output ("-" if absent).
field() {
    awk -v want="$2" '/^result:/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == want) { print substr($i, length(want) + 2); found = 1 } } }
        END { if (!found) print "-" }' "$1"
}

declare -A out_of
# vb KEY LABEL SUBCOMMAND ARGS…: one vesta-bench run, its output in out_of[KEY]; progress on stderr.
vb() {
    local key=$1 label=$2 out status=0 started=$SECONDS
    shift 2
    run=$((run + 1))
    out="$tmp/run-$run.txt"
    out_of[$key]=$out
    note[$key]=
    log "$label: vesta-bench $*"
    run_bounded "$run_timeout" "$out" - "$bench_bin" "$@" || status=$?
    sed 's/^/    /' "$out" >&2
    if ((status == 124 || status == 137)); then
        note[$key]="timed out"
    elif ((status != 0)); then
        note[$key]="exit $status"
    fi
    log "    ($((SECONDS - started)) s${note[$key]:+; ${note[$key]}})"
}

# --- the table -----------------------------------------------------------------------------------------
# Printed in the issue's order (the steps run in another): the step's number first.
rows=()
sep=$'\x1f'
# row STEP FIGURE REDIS VESTA RATIO REDIS_LAT VESTA_LAT NOTE
row() {
    local IFS=$sep
    rows+=("$*")
}
ms_pair() { echo "$1/$2"; }
# notes KEY…: the runs' notes (errors, timeouts), "who: note; " each
notes() {
    local k
    for k in "$@"; do
        if [[ -n ${note[$k]:-} ]]; then printf '%s: %s; ' "${k%%|*}" "${note[$k]}"; fi
    done
}
# Issue 13's goals for the ratios, printed beside them (nothing is asserted).
declare -A goal=([dev|set|1]=0.5 [dev|get|1]=0.8 [dev|incr|1]=0.5 [dev|set|16]=0.2 [dev|get|16]=0.4
    [dev|incr|16]=0.2 [tcp|set]=0.3 [tcp|get]=0.5 [hot]=0.2)

# --- redis-server ------------------------------------------------------------------------------------
redis_port="$(free_port)"
log "$(cores) cores; load average $load_before; starting redis-server $(redis_version) (no persistence)"
start_redis redis "$redis_port"
redis_pid=$last_pid

# --- 1. vesta dev --------------------------------------------------------------------------------------
dev_port=
start_dev() {
    dev_port="$(free_port)"
    log "starting vesta dev${VESTA_DEV_ARGS:+ (extra flags: $VESTA_DEV_ARGS)}"
    start vesta-dev "$dev_port" "$vesta_bin" dev --port "$dev_port" --data-dir "$tmp/vesta-dev" "${dev_args[@]}"
    dev_pid=$last_pid
}
if want dev || want hot || want half || want burst; then
    start_dev
fi

dev_tests=(set get incr)
dev_pipes=(1 16)
if ! want dev; then
    dev_tests=(set get) dev_pipes=(1) # half and burst need vesta's SET and GET P1
fi
if want dev || want half || want burst; then
    step_started=$SECONDS
    log "step 1: redis-benchmark ${dev_tests[*]} at pipeline ${dev_pipes[*]}, redis-server and vesta dev in turn"
    for pipe in "${dev_pipes[@]}"; do
        n=$requests
        ((pipe > 1)) && n=$requests_pipelined
        for t in "${dev_tests[@]}"; do
            rb_cpu "redis|$t|$pipe" "$redis_pid" "${t^^} P$pipe -> redis-server" "$redis_port" "$n" "$pipe" -t "$t" \
                -r "$keyspace" -d "$size"
            rb_cpu "dev|$t|$pipe" "$dev_pid" "${t^^} P$pipe -> vesta dev" "$dev_port" "$n" "$pipe" -t "$t" \
                -r "$keyspace" -d "$size"
            row 1 "vesta dev ${t^^} P$pipe (req/s)" "${rps[redis|$t|$pipe]}" "${rps[dev|$t|$pipe]}" \
                "$(ratio "${rps[dev|$t|$pipe]}" "${rps[redis|$t|$pipe]}")" \
                "$(ms_pair "${p50[redis|$t|$pipe]}" "${p99[redis|$t|$pipe]}")" \
                "$(ms_pair "${p50[dev|$t|$pipe]}" "${p99[dev|$t|$pipe]}")" \
                "goal >= ${goal[dev|$t|$pipe]}; CPU us/request redis ${cpu_us[redis|$t|$pipe]}, vesta ${cpu_us[dev|$t|$pipe]}; $(notes "redis|$t|$pipe" "dev|$t|$pipe")"
        done
    done
    log "step 1 took $((SECONDS - step_started)) s"
fi

# --- 3. one hot counter ----------------------------------------------------------------------------------
if want hot; then
    step_started=$SECONDS
    log "step 3: one hot counter, $clients clients INCR the same key, $requests requests"
    declare -A final hot_check
    for target in redis dev; do
        port=$redis_port
        [[ $target == dev ]] && port=$dev_port
        name=redis-server
        [[ $target == dev ]] && name="vesta dev"
        key="bench:hot:redis-benchmark"
        timeout 10 redis-cli -h "$host" -p "$port" del "$key" >/dev/null
        rb "$target|hot" "INCR $key -> $name" "$port" "$requests" 1 INCR "$key"
        final[$target]="$(timeout 10 redis-cli -h "$host" -p "$port" get "$key" 2>&1 | tr -d '\r')"
        if [[ ${final[$target]} == "$requests" ]]; then
            log "    GET $key = ${final[$target]}, as many as the INCRs sent"
        else
            log "    GET $key = ${final[$target]}, not $requests"
        fi
    done
    hot_note="goal >= ${goal[hot]}; "
    for target in redis dev; do
        [[ -n ${note[$target|hot]} ]] && hot_note+="$target: ${note[$target|hot]}; "
        if [[ ${final[$target]} == "$requests" ]]; then
            hot_note+="$target GET=n ok; "
        else
            hot_note+="$target GET=${final[$target]} NOT $requests; "
        fi
    done
    row 3 "hot counter INCR, redis-benchmark (req/s)" "${rps[redis|hot]}" "${rps[dev|hot]}" \
        "$(ratio "${rps[dev|hot]}" "${rps[redis|hot]}")" "$(ms_pair "${p50[redis|hot]}" "${p99[redis|hot]}")" \
        "$(ms_pair "${p50[dev|hot]}" "${p99[dev|hot]}")" "$hot_note"

    for target in redis dev; do
        port=$redis_port
        [[ $target == dev ]] && port=$dev_port
        vb "$target|hot-check" "hot-counter -> $target" hot-counter --addr "$host:$port" --clients "$clients" \
            --requests "$requests" --key bench:hot:vesta-bench
        o=${out_of[$target|hot-check]}
        rps[$target|hot-check]="$(field "$o" rps)"
        check="$(field "$o" check)"
        hot_check[$target]="$target: $check"
        if [[ $check != pass ]]; then
            hot_check[$target]+=" (dup $(field "$o" duplicates), missing $(field "$o" missing), out of range $(field "$o" out_of_range), not rising $(field "$o" not_rising), errors $(field "$o" error_prefixes), GET $(field "$o" final))"
        fi
    done
    row 3 "hot counter INCR, vesta-bench, replies 1..n (req/s)" "${rps[redis|hot-check]}" "${rps[dev|hot-check]}" \
        "$(ratio "${rps[dev|hot-check]}" "${rps[redis|hot-check]}")" \
        "$(ms_pair "$(field "${out_of[redis|hot-check]}" p50_ms)" "$(field "${out_of[redis|hot-check]}" p99_ms)")" \
        "$(ms_pair "$(field "${out_of[dev|hot-check]}" p50_ms)" "$(field "${out_of[dev|hot-check]}" p99_ms)")" \
        "1..n check: ${hot_check[redis]}; ${hot_check[dev]}"
    log "step 3 took $((SECONDS - step_started)) s"
fi

# --- 4. and 5. fixed rates -------------------------------------------------------------------------------
# rate_pair STEP T RATE SECONDS: vesta-bench rate against redis-server and vesta dev at RATE; one row.
rate_pair() {
    local step=$1 t=$2 r=$3 secs=$4 target port k label o extra n_vesta n_redis no=4
    [[ $step == burst ]] && no=5
    for target in redis dev; do
        port=$redis_port
        [[ $target == dev ]] && port=$dev_port
        k="$target|$step|$t"
        vb "$k" "${t^^} at $r/s for $secs s -> $target" rate --addr "$host:$port" --rate "$r" --seconds "$secs" \
            --connections "$rate_connections" --command "$t" --keyspace "$keyspace" --value-size "$size"
    done
    o=${out_of[dev|$step|$t]}
    extra="vesta: achieved $(field "$o" achieved_rps)/s, refused $(field "$o" refused_pct)% ($(field "$o" error_prefixes)), timeouts $(field "$o" timeouts), generator lag p99 $(field "$o" send_lag_p99_ms) ms"
    o=${out_of[redis|$step|$t]}
    extra+="; redis: achieved $(field "$o" achieved_rps)/s, refused $(field "$o" refused_pct)%, timeouts $(field "$o" timeouts), generator lag p99 $(field "$o" send_lag_p99_ms) ms"
    n_vesta="$(field "${out_of[dev|$step|$t]}" p99_ms)"
    n_redis="$(field "${out_of[redis|$step|$t]}" p99_ms)"
    if [[ $step == half ]]; then
        label="${t^^} at $r/s, half of vesta's max: p99 ms"
        extra="vesta p99 $(awk -v p="$n_vesta" 'BEGIN { if (p == "-") print "-"; else print (p + 0 <= 2 ? "<=" : ">") }') 2 ms goal; $extra"
    else
        label="${t^^} burst at $r/s, 3x vesta's max: p99 ms of ok"
        extra="vesta p99 $(awk -v p="$n_vesta" -v d="$deadline_ms" 'BEGIN { if (p == "-") print "-"; else print (p + 0 < d ? "<" : ">=") }') deadline $deadline_ms ms; $extra"
    fi
    for k in "redis|$step|$t" "dev|$step|$t"; do [[ -n ${note[$k]:-} ]] && extra+="; ${k%%|*}: ${note[$k]}"; done
    row "$no" "$label" "$n_redis" "$n_vesta" "$(ratio "$n_vesta" "$n_redis")" \
        "$(ms_pair "$(field "${out_of[redis|$step|$t]}" p50_ms)" "$n_redis")" \
        "$(ms_pair "$(field "${out_of[dev|$step|$t]}" p50_ms)" "$n_vesta")" "$extra"
}
rate_of() { awk -v x="$1" -v f="$2" 'BEGIN { if (x + 0 > 0) printf "%.0f", x * f; else print "" }'; }

for step in half burst; do
    want "$step" || continue
    step_started=$SECONDS
    if [[ $step == half ]]; then
        factor=0.5 secs=$rate_seconds no=4
        log "step 4: latency at half of vesta dev's own maximum (open loop, $rate_connections connections, $secs s each)"
    else
        factor=3 secs=$burst_seconds no=5
        log "step 5: a burst at 3x vesta dev's maximum for $secs s (client deadline $deadline_ms ms)"
    fi
    for t in set get; do
        r="$(rate_of "${rps[dev|$t|1]:-}" "$factor")"
        if [[ -z $r ]]; then
            log "no vesta dev ${t^^} P1 figure to take $factor x of: skipped"
            row "$no" "${t^^} $step" - - - - - "no vesta ${t^^} P1 figure"
            continue
        fi
        rate_pair "$step" "$t" "$r" "$secs"
    done
    log "step $no took $((SECONDS - step_started)) s"
done

if [[ -n ${dev_pid:-} ]]; then
    log "stopping vesta dev"
    stop "$dev_pid"
fi

# --- 2. separate processes over TCP ----------------------------------------------------------------------
if want tcp; then
    step_started=$SECONDS
    log "step 2: 3 vesta store processes (RocksDB, --sync periodic) + vesta proxy with a topology file"
    topology="$tmp/topology.toml"
    printf 'shards = 1024\nwrite_quorum = 2\nread_quorum = 2\n' >"$topology"
    for z in 1 2 3; do
        port="$(free_port)"
        VESTA_LOG=warn start "store-zone$z" - "$vesta_bin" store --node "zone$z" --listen "$host:$port" \
            --data-dir "$tmp/zone$z" --sync periodic --shards 1024
        printf '\n[[zone]]\nname = "zone%s"\nnodes = ["%s:%s"]\n' "$z" "$host" "$port" >>"$topology"
    done
    proxy_port="$(free_port)"
    VESTA_LOG=warn start proxy "$proxy_port" "$vesta_bin" proxy --listen "$host:$proxy_port" --topology "$topology"
    for t in set get; do
        rb "redis|$t|tcp" "${t^^} P1 -> redis-server" "$redis_port" "$requests" 1 -t "$t" -r "$keyspace" -d "$size"
        rb "tcp|$t" "${t^^} P1 -> vesta proxy + 3 stores" "$proxy_port" "$requests" 1 -t "$t" -r "$keyspace" -d "$size"
        row 2 "separate processes ${t^^} P1 (req/s)" "${rps[redis|$t|tcp]}" "${rps[tcp|$t]}" \
            "$(ratio "${rps[tcp|$t]}" "${rps[redis|$t|tcp]}")" \
            "$(ms_pair "${p50[redis|$t|tcp]}" "${p99[redis|$t|tcp]}")" "$(ms_pair "${p50[tcp|$t]}" "${p99[tcp|$t]}")" \
            "goal >= ${goal[tcp|$t]}; $(notes "redis|$t|tcp" "tcp|$t")"
    done
    log "step 2 took $((SECONDS - step_started)) s"
fi

# --- the table -----------------------------------------------------------------------------------------
echo
echo "Vesta performance beside redis-server $(redis_version), same run, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "$(cores) cores; load average $load_before before, $(loadavg) after; all on $host; took $((SECONDS - script_started)) s"
echo "redis-benchmark: $clients clients, -r $keyspace -d $size, $requests requests at P1, $requests_pipelined at P16;" \
    "vesta-bench rate: open loop, $rate_connections connections, latency from the scheduled send"
echo
fmt='%-52s %12s %12s %11s %17s %17s  %s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$fmt" figure redis-server vesta vesta/redis "redis p50/p99 ms" "vesta p50/p99 ms" note
[[ -z ${BENCH_CSV:-} ]] || echo "figure,redis,vesta,ratio,redis_p50_p99_ms,vesta_p50_p99_ms,note" >"$BENCH_CSV"
while IFS=$sep read -r _ f a b q la lb n; do
    [[ -n $f ]] || continue
    n="${n%; }"
    # shellcheck disable=SC2059
    printf "$fmt" "$f" "$a" "$b" "$q" "$la" "$lb" "${n:-}"
    if [[ -n ${BENCH_CSV:-} ]]; then
        printf '"%s",%s,%s,%s,%s,%s,"%s"\n' "$f" "$a" "$b" "$q" "$la" "$lb" "${n:-}" >>"$BENCH_CSV"
    fi
done < <(printf '%s\n' "${rows[@]}" | sort -s -t "$sep" -k1,1n)
echo
echo "(req/s rows: vesta/redis is the throughput ratio, higher is better; p99 ms rows: it is the latency ratio, lower"
echo " is better, latency counted from each request's scheduled send, the generator's own lag included; a reply later"
echo " than 5 s, or none, is a timeout and not in the percentiles; refused = error replies / requests scheduled)"
