#!/usr/bin/env bash
# Online redistribution, measured. A cluster kept in etcd — 3 zones × 1 RocksDB store node, one proxy —
# is preloaded with redis-benchmark, then grown to 3 zones × 2 nodes with `vesta admin add-node` while
# redis-benchmark keeps running SET and GET through the proxy. A Debian redis-server runs the same
# redis-benchmark in the same run, for the ratios. Prints requests per second before and during the
# redistribution (and their ratio to redis-server), how long add-node took, and what it copied.
#
#   bench/redistribution.sh              # build vesta (release) first
#   bench/redistribution.sh --no-build   # use the vesta binary already built
#
# Environment (defaults in brackets):
#   BENCH_KEYS [200000]   keys preloaded (and the key range of the load)   BENCH_VALUE [100] value bytes
#   BENCH_CLIENTS [50]    BENCH_RUN [20000] requests per redis-benchmark run
#   BENCH_RATE_KB [0]     add-node's --max-rate-kb (0: unlimited)          BENCH_SHARDS [1024]
#   VESTA_BIN [$CARGO_TARGET_DIR/release/vesta]   BENCH_KEEP: keep the processes' logs
#
# Everything listens on 127.0.0.1; every process is stopped by pid and the temp dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=redistribution
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_args "$@"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
keys="${BENCH_KEYS:-200000}"
value="${BENCH_VALUE:-100}"
clients="${BENCH_CLIENTS:-50}"
run="${BENCH_RUN:-20000}"
rate_kb="${BENCH_RATE_KB:-0}"
shards="${BENCH_SHARDS:-1024}"
vesta="${VESTA_BIN:-$CARGO_TARGET_DIR/release/vesta}"

for tool in etcd redis-server redis-benchmark redis-cli python3 timeout; do
    command -v "$tool" >/dev/null || die "needs $tool (apt-get install etcd-server redis-server redis-tools)"
done
bench_build vesta
[[ -x $vesta ]] || die "no vesta binary at $vesta (build it, or set VESTA_BIN)"
bench_tmp vesta-redist

# --- etcd, redis-server ------------------------------------------------------------------------------
etcd_port=$(free_port)
etcd_peer=$(free_port)
etcd_url="http://127.0.0.1:$etcd_port"
etcd --name bench --data-dir "$tmp/etcd" --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "bench=http://127.0.0.1:$etcd_peer" >"$tmp/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    python3 - "$etcd_port" <<'EOF' && break
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
sys.exit(0 if b'"health":"true"' in s.recv(4096) else 1)
EOF
    sleep 0.2
done
redis_port=$(free_port)
start_redis redis "$redis_port"

# --- the cluster ----------------------------------------------------------------------------------
admin() { "$vesta" admin --etcd "$etcd_url" --cluster bench "$@"; }
declare -A addr
spec="name = \"bench\"\nshards = $shards\n"
for z in 1 2 3; do
    addr[z${z}a]="127.0.0.1:$(free_port)"
    addr[z${z}b]="127.0.0.1:$(free_port)"
    spec+="\n[[zones]]\nname = \"zone$z\"\n[[zones.nodes]]\nname = \"z${z}a\"\naddr = \"${addr[z${z}a]}\"\n"
done
printf "%b" "$spec" >"$tmp/cluster.toml"
admin init --spec "$tmp/cluster.toml" >/dev/null

start_store() {
    local node=$1
    VESTA_LOG=warn start "$node" - "$vesta" store --node "$node" --listen "${addr[$node]}" --data-dir "$tmp/$node" \
        --sync periodic --etcd "$etcd_url" --cluster bench
}
for z in 1 2 3; do start_store "z${z}a"; done
proxy_port=$(free_port)
VESTA_LOG=warn start proxy "$proxy_port" "$vesta" proxy --listen "127.0.0.1:$proxy_port" --etcd "$etcd_url" \
    --cluster bench

# --- load ------------------------------------------------------------------------------------------
# One redis-benchmark run of SET and GET; prints "SET_RPS GET_RPS".
bench_once() {
    local port=$1
    timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -n "$run" -r "$keys" -d "$value" \
        -t set,get --csv 2>/dev/null |
        awk -F'","' '/^"SET"/{s=$2} /^"GET"/{g=$2} END{gsub(/"/,"",s); gsub(/"/,"",g); print s, g}'
}
mean() { awk '{s+=$1; g+=$2; n++} END{if (n) printf "%.0f %.0f %d\n", s/n, g/n, n; else print "0 0 0"}'; }

log "preloading $keys keys of $value bytes"
timeout 900 redis-benchmark -h 127.0.0.1 -p "$proxy_port" -c "$clients" -n "$keys" -r "$keys" -d "$value" \
    -t set -q >/dev/null
log "redis-server and vesta before the redistribution (3 runs each)"
read -r redis_set redis_get _ < <(for _ in 1 2 3; do bench_once "$redis_port"; done | mean)
read -r before_set before_get _ < <(for _ in 1 2 3; do bench_once "$proxy_port"; done | mean)

for z in 1 2 3; do start_store "z${z}b"; done
log "add-node zone1/z1b zone2/z2b zone3/z3b under load"
started=$(date +%s.%N)
admin add-node "zone1/z1b@${addr[z1b]}" "zone2/z2b@${addr[z2b]}" "zone3/z3b@${addr[z3b]}" \
    --max-rate-kb "$rate_kb" >"$tmp/add-node.out" 2>"$tmp/add-node.err" &
admin_pid=$!
pids+=("$admin_pid")
: >"$tmp/during"
while kill -0 "$admin_pid" 2>/dev/null; do
    bench_once "$proxy_port" >>"$tmp/during"
    tail -c 200 "$tmp/add-node.err" | tr '\r' '\n' | grep '^\[' | tail -1 >&2 || true
done
wait "$admin_pid" || die "add-node failed: $(cat "$tmp/add-node.out" "$tmp/add-node.err")"
finished=$(date +%s.%N)
read -r during_set during_get during_runs < <(mean <"$tmp/during")
read -r after_set after_get _ < <(for _ in 1 2 3; do bench_once "$proxy_port"; done | mean)
copied=$(tr '\r' '\n' <"$tmp/add-node.err" | grep '^\[' | tail -1)
grep -q "published shard map version 2" "$tmp/add-node.out" || die "add-node did not publish the new map"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "redistribution: 3 → 6 store nodes, $shards shards, $keys keys × $value B, $clients clients, --max-rate-kb $rate_kb"
printf '%-36s %12s %7s %12s %7s\n' "" "SET rps" "ratio" "GET rps" "ratio"
printf '%-36s %12s %7s %12s %7s\n' "redis-server" "$redis_set" "1.00" "$redis_get" "1.00"
printf '%-36s %12s %7s %12s %7s\n' "vesta, 3 nodes, before" "$before_set" "$(ratio "$before_set" "$redis_set")" \
    "$before_get" "$(ratio "$before_get" "$redis_get")"
printf '%-36s %12s %7s %12s %7s\n' "vesta, during add-node ($during_runs runs)" "$during_set" \
    "$(ratio "$during_set" "$redis_set")" "$during_get" "$(ratio "$during_get" "$redis_get")"
printf '%-36s %12s %7s %12s %7s\n' "vesta, 6 nodes, after" "$after_set" "$(ratio "$after_set" "$redis_set")" \
    "$after_get" "$(ratio "$after_get" "$redis_get")"
printf 'add-node took %s s; copy: %s\n' "$(awk -v a="$started" -v b="$finished" 'BEGIN{printf "%.1f", b - a}')" "$copied"
