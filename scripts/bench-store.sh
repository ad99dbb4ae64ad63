#!/usr/bin/env bash
# One store node's throughput over loopback: prepare+commit pairs and reads, many requests in flight.
# Extra arguments go to `vesta-bench store` (e.g. --sync off --seconds 20).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
cargo build --release -q -p vesta -p vesta-bench
"$CARGO_TARGET_DIR/release/vesta-bench" store "$@"
