#!/usr/bin/env bash
# A 3-zone cluster as separate processes: `vesta store` ×3 and `vesta proxy`, from examples/cluster/.
# Ctrl-C stops all of them. (`vesta dev` is the same cluster in one process.)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
cargo build --release -q -p vesta
vesta="$CARGO_TARGET_DIR/release/vesta"
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
for z in 1 2 3; do
  "$vesta" store --config "examples/cluster/store-zone$z.toml" &
  pids+=($!)
done
"$vesta" proxy --config examples/cluster/proxy.toml &
pids+=($!)
wait
