#!/usr/bin/env bash
# Runs the README's first command (scripts/dev.sh) in the background, waits for `ready`, checks that a
# client can SET and GET through it, and stops it by its pid. Needs nothing but bash: CI runs it on a
# machine where the system packages are missing, to show that scripts/dev.sh installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
data=$(mktemp -d)
# A free loopback port: bind 0 and read back what the kernel chose (bash cannot, so ask the kernel's
# range and try ports until one is free).
port=""
for _ in $(seq 1 50); do
  candidate=$((20000 + RANDOM % 20000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
done
[[ -n $port ]] || { echo "dev-smoke: no free port found" >&2; exit 1; }
scripts/dev.sh --port "$port" --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$log"; }
trap cleanup EXIT
# The first build may compile RocksDB: up to an hour.
for _ in $(seq 1 3600); do
  grep -q '^ready' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "dev-smoke: scripts/dev.sh exited" >&2; exit 1; }
  sleep 1
done
grep -q '^ready' "$log" || { cat "$log"; echo "dev-smoke: no 'ready' within an hour" >&2; exit 1; }
# RESP by hand: SET smoke ok, then GET smoke.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf '*3\r\n$3\r\nSET\r\n$5\r\nsmoke\r\n$2\r\nok\r\n*2\r\n$3\r\nGET\r\n$5\r\nsmoke\r\n' >&3
IFS= read -r -t 10 set_reply <&3
IFS= read -r -t 10 get_len <&3
IFS= read -r -t 10 get_value <&3
exec 3>&-
[[ "$set_reply" == $'+OK\r' && "$get_len" == $'$2\r' && "$get_value" == $'ok\r' ]] ||
  { echo "dev-smoke: unexpected replies: ${set_reply@Q} ${get_len@Q} ${get_value@Q}" >&2; exit 1; }
echo "dev-smoke: scripts/dev.sh answered SET and GET on port $port"
