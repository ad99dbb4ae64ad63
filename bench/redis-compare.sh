#!/usr/bin/env bash
# Vesta vs Redis, same machine, same run: redis-benchmark (GET, SET, INCR; pipeline 1 and 16; 50 clients)
# against a Debian `redis-server` (no persistence) and against `vesta dev` (3 store zones + RESP proxy),
# then one table of requests per second, the ratio vesta/redis and p50 latency.
#
#   bench/redis-compare.sh               # build vesta (release) and compare
#   bench/redis-compare.sh --self-test   # no build: a second redis-server stands in for vesta
#   bench/redis-compare.sh --no-build    # use the vesta binary already built
#
# Environment (defaults in brackets):
#   BENCH_REQUESTS [200000]              requests per run at pipeline 1
#   BENCH_REQUESTS_PIPELINED [5×that]    requests per run at pipeline > 1
#   BENCH_CLIENTS [50]  BENCH_PIPELINES ["1 16"]  BENCH_TESTS ["set get incr"]
#   BENCH_TIMEOUT [600]                  seconds before one redis-benchmark run is abandoned
#   BENCH_CSV                            also write the results to this CSV file
#   VESTA_BIN [$CARGO_TARGET_DIR/release/vesta]   VESTA_DEV_ARGS (extra flags, e.g. "--sync off")
#   VESTA_READY_TIMEOUT [120]            seconds to wait for `vesta dev` to print `ready`
#   BENCH_TLS [0]                        1: measure both servers' TLS ports (redis-server --tls-port,
#                                        vesta dev --tls-port; redis-benchmark --tls --cacert); run the
#                                        script with 0 and with 1 to compare plaintext and TLS
#
# Everything listens on 127.0.0.1 only; both servers are stopped by pid and the temp dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=redis-compare
# shellcheck source=bench/lib.sh
source bench/lib.sh

self_test=0
args=()
for arg in "$@"; do
    case "$arg" in
        --self-test) self_test=1 ;;
        *) args+=("$arg") ;;
    esac
done
bench_args "${args[@]}"
((self_test)) && build=0

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
requests="${BENCH_REQUESTS:-200000}"
requests_pipelined="${BENCH_REQUESTS_PIPELINED:-$((requests * 5))}"
clients="${BENCH_CLIENTS:-50}"
read -ra pipelines <<<"${BENCH_PIPELINES:-1 16}"
read -ra tests <<<"${BENCH_TESTS:-set get incr}"
run_timeout="${BENCH_TIMEOUT:-600}"
ready_timeout="${VESTA_READY_TIMEOUT:-120}"
vesta_bin="${VESTA_BIN:-$CARGO_TARGET_DIR/release/vesta}"
read -ra vesta_dev_args <<<"${VESTA_DEV_ARGS:-}"
tls="${BENCH_TLS:-0}"

# --- tools -------------------------------------------------------------------------------------------
need_redis
need_tools timeout
bench_build vesta
if ((!self_test)); then
    [[ -x $vesta_bin ]] || die "no vesta binary at $vesta_bin (build it, or set VESTA_BIN)"
fi

# --- processes, cleanup (bench/lib.sh) ------------------------------------------------------------------
bench_tmp vesta-redis-compare

# start_server NAME PORT KIND: KIND is redis or vesta; sets pid_of[NAME]
declare -A pid_of port_of tls_port_of cacert_of
start_server() {
    local name=$1 port=$2 kind=$3 tls_args=()
    if [[ $kind == redis ]]; then
        if ((tls)); then
            tls_args=(--tls-port "${tls_port_of[$name]}" --tls-cert-file "$tmp/pki/server.crt"
                --tls-key-file "$tmp/pki/server.key" --tls-ca-cert-file "$tmp/pki/ca.crt" --tls-auth-clients no)
        fi
        READY_TIMEOUT=20 start_redis "$name" "$port" "${tls_args[@]}"
    else
        # vesta dev makes its own CA and certificate in <data-dir>/pki
        ((tls)) && tls_args=(--tls-port "${tls_port_of[$name]}")
        READY_TIMEOUT=$ready_timeout start "$name" "$port" \
            "$vesta_bin" dev --port "$port" --data-dir "$tmp/vesta-data" "${tls_args[@]}" "${vesta_dev_args[@]}"
        sed 's/^/    vesta dev: /' "$tmp/$name.out" >&2
        ping_ok "$port" || log "warning: vesta printed ready but PING on $host:$port did not answer PONG"
    fi
    pid_of[$name]=$last_pid
    port_of[$name]=$port
}

# --- servers -----------------------------------------------------------------------------------------
a=redis
if ((self_test)); then b=redis2; b_kind=redis; else b=vesta; b_kind=vesta; fi
port_a="$(free_port)"
port_b="$(free_port)"
while [[ $port_b == "$port_a" ]]; do port_b="$(free_port)"; done

if ((tls)); then
    ((self_test)) && die "BENCH_TLS=1 needs vesta (not --self-test)"
    "$vesta_bin" admin certs --out "$tmp/pki" --cert "server=127.0.0.1" >/dev/null
    tls_port_of[$a]="$(free_port)"
    tls_port_of[$b]="$(free_port)"
    cacert_of[$a]="$tmp/pki/ca.crt"
    cacert_of[$b]="$tmp/vesta-data/pki/ca.crt"
    log "TLS: both servers' TLS ports are measured (redis-benchmark --tls)"
fi
log "starting $(redis-server --version | cut -d' ' -f1-3)"
start_server "$a" "$port_a" redis
if ((self_test)); then
    log "self-test: a second redis-server stands in for vesta"
else
    log "starting vesta dev (data in $tmp/vesta-data${VESTA_DEV_ARGS:+, extra flags: $VESTA_DEV_ARGS})"
fi
start_server "$b" "$port_b" "$b_kind"

# --- runs --------------------------------------------------------------------------------------------
declare -A rps p50 note
failed=0
total=$((${#pipelines[@]} * ${#tests[@]} * 2))
run=0
log "load average before the runs: $(loadavg) on $(cores) cores"
for pipe in "${pipelines[@]}"; do
    n=$requests
    ((pipe > 1)) && n=$requests_pipelined
    for t in "${tests[@]}"; do
        for target in "$a" "$b"; do
            run=$((run + 1))
            key="$t|$pipe|$target"
            out="$tmp/run-$run.csv"
            port=${port_of[$target]}
            bench_tls=()
            if ((tls)); then
                port=${tls_port_of[$target]}
                bench_tls=(--tls --cacert "${cacert_of[$target]}")
            fi
            label="[$run/$total] ${t^^} pipeline $pipe, $clients clients, $n requests -> $target ($host:$port)"
            if ! kill -0 "${pid_of[$target]}" 2>/dev/null || ! port_open "$port"; then
                # redis-benchmark spins forever on a port nobody listens on: never start it there
                log "$label: server is down, skipped"
                rps[$key]=-; p50[$key]=-; note[$key]="server down"; failed=1
                continue
            fi
            log "$label"
            started=$SECONDS
            status=0
            run_bounded "$run_timeout" "$out" "$tmp/run-$run.err" redis-benchmark -h "$host" -p "$port" \
                "${bench_tls[@]}" -c "$clients" -P "$pipe" -t "$t" -n "$n" -r 100000 -d 16 --csv || status=$?
            rps[$key]="$(csv_field "$out" rps)"
            p50[$key]="$(csv_field "$out" p50_latency_ms)"
            note[$key]="$(rb_note "$status" "$out" "$tmp/run-$run.err")"
            if [[ -n ${note[$key]:-} ]]; then
                failed=1
                log "    ${note[$key]} after $((SECONDS - started)) s"
                [[ -s $tmp/run-$run.err ]] && tail -n 5 "$tmp/run-$run.err" | sed 's/^/    /' >&2
            else
                log "    ${rps[$key]} requests/s, p50 ${p50[$key]} ms ($((SECONDS - started)) s)"
            fi
        done
    done
done

# --- table -------------------------------------------------------------------------------------------

echo
if ((self_test)); then
    echo "Self-test: both columns are redis-server $(redis_version)"
fi
echo "redis-benchmark, $clients clients, -r 100000 -d 16, on $host$( ((tls)) && echo ', TLS ports'); $(cores) cores"
fmt='%-7s %8s %12s %12s %12s %13s %13s  %s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$fmt" command pipeline "$a rps" "$b rps" "$b/$a" "$a p50 ms" "$b p50 ms" ""
if [[ -n ${BENCH_CSV:-} ]]; then
    echo "command,pipeline,clients,requests,${a}_rps,${b}_rps,ratio,${a}_p50_ms,${b}_p50_ms,note" >"$BENCH_CSV"
fi
for pipe in "${pipelines[@]}"; do
    for t in "${tests[@]}"; do
        ka="$t|$pipe|$a" kb="$t|$pipe|$b"
        r="$(ratio "${rps[$kb]}" "${rps[$ka]}")"
        msg=""
        [[ -n ${note[$ka]:-} ]] && msg+="$a: ${note[$ka]}; "
        [[ -n ${note[$kb]:-} ]] && msg+="$b: ${note[$kb]}"
        # shellcheck disable=SC2059
        printf "$fmt" "${t^^}" "$pipe" "${rps[$ka]}" "${rps[$kb]}" "$r" "${p50[$ka]}" "${p50[$kb]}" "$msg"
        if [[ -n ${BENCH_CSV:-} ]]; then
            n=$requests
            ((pipe > 1)) && n=$requests_pipelined
            echo "${t^^},$pipe,$clients,$n,${rps[$ka]},${rps[$kb]},$r,${p50[$ka]},${p50[$kb]},$msg" >>"$BENCH_CSV"
        fi
    done
done
exit "$failed"
