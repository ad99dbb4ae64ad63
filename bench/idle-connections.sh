#!/usr/bin/env bash
# What idle client connections cost a proxy, and whether working clients notice them.
#
# Starts one `vesta dev --memory` on loopback ports, measures its RSS, opens N idle connections to it
# (default 15000; each says PING once, then stays silent, as pooled clients do), measures the RSS again
# and reports the RSS per connection; then, with every connection still open, runs redis-benchmark
# (10 clients, GET and SET) and reports its p99 latency, beside the same run before the connections were
# opened. TLS=1 holds the connections on a TLS port instead (rustls's buffers make them dearer).
#
#   bench/idle-connections.sh                     # N=15000, plaintext
#   N=18000 SOURCES=4 bench/idle-connections.sh   # connections spread over 127.0.0.2-5
#   TLS=1 N=5000 bench/idle-connections.sh
#
# Needs: a release build of `vesta` ($VESTA, else $CARGO_TARGET_DIR/release/vesta, else
# target/release/vesta), python3, redis-benchmark and redis-cli. The open-file soft limit of this
# script (and so of the proxy and the connection holder) is raised to the hard limit; N must stay
# below it (`ulimit -Hn`; README → Connections and overload, for more). Every process started is stopped on exit.
set -euo pipefail

N=${N:-15000}
SOURCES=${SOURCES:-4}
TLS=${TLS:-0}
REQUESTS=${REQUESTS:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
VESTA=${VESTA:-${CARGO_TARGET_DIR:-$here/target}/release/vesta}
[ -x "$VESTA" ] || { echo "no vesta binary at $VESTA (cargo build --release -p vesta)" >&2; exit 2; }
for tool in python3 redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ]; then
    ulimit -n "$hard"
    if [ $((N + 200)) -gt "$hard" ]; then
        echo "N=$N connections need more than the open-file limit $hard (ulimit -Hn) allows" >&2
        exit 2
    fi
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}
# The kernel's memory for TCP sockets, KiB, machine-wide and not in any process's RSS: buffers
# (/proc/net/sockstat) and, where /proc/slabinfo is readable (root), the socket structures, their
# inodes, open-file entries and epoll entries.
tcp_mem_kib() {
    local buffers slabs=0
    buffers=$(awk -v page="$(getconf PAGESIZE)" \
        '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1) * page / 1024 }' /proc/net/sockstat)
    if [ -r /proc/slabinfo ]; then
        slabs=$(awk '$1 ~ /^(TCP|sock_inode_cache|filp|eventpoll_epi)$/ { sum += $2 * $4 } END { print int(sum / 1024) }' \
            /proc/slabinfo)
    fi
    echo $((buffers + slabs))
}

port=$(free_port)
tls_args=()
if [ "$TLS" = 1 ]; then
    tls_port=$(free_port)
    tls_args=(--tls-port "$tls_port")
fi
echo "starting vesta dev on 127.0.0.1:$port ${tls_port:+(TLS port $tls_port)}"
max_clients=(--max-clients $((N + 1000)))
if ! "$VESTA" dev --help | grep -q -- --max-clients; then
    # An older build (before the flag): its fixed limit of 10000 clients applies.
    max_clients=()
    [ "$N" -lt 10000 ] || { echo "this vesta has no --max-clients: use N < 10000" >&2; exit 2; }
fi
# wait_for_line PATTERN FILE PID TRIES PAUSE: until FILE has a line matching PATTERN; fails if PID exits
# first or TRIES pauses pass.
wait_for_line() {
    local i
    for ((i = 0; i < $4; i++)); do
        grep -q "$1" "$2" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep "$5"
    done
    grep -q "$1" "$2" 2>/dev/null
}

"$VESTA" dev --memory --port "$port" --data-dir "$work/data" --shards 64 "${max_clients[@]}" \
    "${tls_args[@]}" >"$work/dev.log" 2>&1 &
dev=$!
pids+=("$dev")
wait_for_line '^ready' "$work/dev.log" "$dev" 300 0.1 || { cat "$work/dev.log" >&2; echo "vesta dev did not start" >&2; exit 1; }
if grep -q 'lowered' "$work/dev.log"; then
    grep 'lowered' "$work/dev.log" >&2
fi

# The p99 of 10 working clients (GET and SET, one request at a time each): the worse of the two tests.
p99() {
    redis-benchmark -h 127.0.0.1 -p "$port" -c 10 -n "$REQUESTS" -t set,get -r 10000 -d 64 --csv 2>/dev/null |
        python3 -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin) if r and r[0] in ("SET", "GET")]
for r in rows:
    print(f"  {r[0]}: {float(r[1]):,.0f} requests/s, p50 {r[4]} ms, p99 {r[6]} ms, max {r[7]} ms", file=sys.stderr)
print(max(float(r[6]) for r in rows))'
}

echo "warming up (a first benchmark, so the baseline includes the working set)"
p99 >/dev/null
echo "without idle connections:"
p99_before=$(p99)
sleep 1
before=$(rss_kib "$dev")
tcp_before=$(tcp_mem_kib)
echo "proxy RSS before: $before KiB (kernel TCP memory: $tcp_before KiB)"

# The connection holder: N connections from 127.0.0.2 … 127.0.0.(1+SOURCES), each PINGed once, then idle
# until this script closes its standard input.
cat >"$work/hold.py" <<'EOF'
import asyncio, os, ssl, sys

n, port, sources = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ca = os.environ.get("HOLD_CA")
context = None
if ca:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False

async def one(i, conns):
    source = f"127.0.0.{2 + i % sources}"
    for attempt in range(50):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0), ssl=context)
            writer.write(b"*1\r\n$4\r\nPING\r\n")
            await writer.drain()
            reply = await reader.readuntil(b"\r\n")
            if reply != b"+PONG\r\n":
                raise RuntimeError(f"connection {i}: {reply!r}")
            conns.append(writer)
            return
        except (ConnectionError, OSError) as e:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)

async def main():
    conns = []
    batch = 500
    for start in range(0, n, batch):
        await asyncio.gather(*(one(i, conns) for i in range(start, min(n, start + batch))))
        if (start // batch) % 6 == 5:
            print(f"  {len(conns)} connections open", file=sys.stderr, flush=True)
    print(f"held {len(conns)}", flush=True)
    # Idle until told to go.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in conns:
        w.close()

asyncio.run(main())
EOF

target_port=$port
if [ "$TLS" = 1 ]; then
    target_port=$tls_port
    export HOLD_CA="$work/data/pki/ca.crt"
fi
echo "opening $N idle connections from $SOURCES source addresses ($([ "$TLS" = 1 ] && echo TLS || echo plaintext))"
mkfifo "$work/hold.in"
python3 "$work/hold.py" "$N" "$target_port" "$SOURCES" <"$work/hold.in" >"$work/hold.out" &
holder=$!
pids+=("$holder")
exec 3>"$work/hold.in" # keeps the holder's standard input open
wait_for_line '^held' "$work/hold.out" "$holder" 1200 0.5 || { echo "the connections did not open (holder failed or too slow)" >&2; exit 1; }
sleep 2
after=$(rss_kib "$dev")
tcp_after=$(tcp_mem_kib)
connected=$(redis-cli -h 127.0.0.1 -p "$port" info clients | tr -d '\r' | awk -F: '/^connected_clients:/ { print $2 }')
echo "proxy RSS with $N idle connections: $after KiB (connected_clients: $connected; kernel TCP memory: $tcp_after KiB)"

echo "with the idle connections open:"
p99_during=$(p99)
exec 3>&- # the holder closes its connections and exits
wait "$holder" 2>/dev/null || true

per_conn=$(python3 -c "print(f'{($after - $before) * 1024 / $N:.0f}')")
# Both ends of each connection are on this machine: half of the kernel's growth is the proxy's side.
kernel=$(python3 -c "print(f'{($tcp_after - $tcp_before) * 1024 / $N / 2:.0f}')")
echo
echo "== idle connections: $N ($([ "$TLS" = 1 ] && echo TLS || echo plaintext)) =="
echo "proxy RSS: $before KiB before, $after KiB after: $per_conn bytes per idle connection"
echo "kernel TCP memory: $tcp_before KiB before, $tcp_after KiB after: about $kernel bytes per socket"
echo "p99 of 10 working clients (GET/SET): $p99_before ms without, $p99_during ms with the idle connections"
