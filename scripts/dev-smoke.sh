#!/usr/bin/env bash
# Runs the README's first command (scripts/dev.sh) in the background, waits for `ready`, checks that
# redis-cli can SET and GET through it, and stops it by its pid. CI runs it after the test suite, so the
# build is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
scripts/dev.sh --port "$port" --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$log"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  grep -q '^ready' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "dev-smoke: scripts/dev.sh exited" >&2; exit 1; }
  sleep 1
done
grep -q '^ready' "$log" || { cat "$log"; echo "dev-smoke: no 'ready' in 600 s" >&2; exit 1; }
[[ "$(redis-cli -p "$port" set smoke ok)" == OK ]]
[[ "$(redis-cli -p "$port" get smoke)" == ok ]]
echo "dev-smoke: scripts/dev.sh answered redis-cli on port $port"
