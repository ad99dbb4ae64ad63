#!/usr/bin/env bash
# Seeded fault schedules against fresh multi-process clusters (etcd, RocksDB store nodes, three proxies),
# every history checked for linearizability: `scripts/chaos.sh --schedules 200 --seed 1`. A failing
# schedule prints its seed (replay: `--schedules 1 --seed S`) and keeps its history under
# chaos-failures/. Needs etcd (Debian's etcd-server). Flags go to `vesta-chaos` (`--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
if ! command -v etcd >/dev/null; then
  echo "chaos: etcd is missing; install Debian's etcd-server (apt-get install -y etcd-server)" >&2
  exit 2
fi
# The same profile and package selection as scripts/dev.sh, so RocksDB is not compiled again.
cargo build --release -q -p vesta -p vesta-chaos
exec "$CARGO_TARGET_DIR/release/vesta-chaos" "$@"
