#!/usr/bin/env bash
# `vesta dev`: a local cluster (RESP proxy on 127.0.0.1:6379 + 3 store zones) in one process.
# Builds in the same target directory as the tests, so RocksDB is compiled once. Flags go to `vesta dev`
# (e.g. --port 6380, --data-dir /tmp/vesta, --memory, --sync every-write).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh build
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
scripts/first-build-notice.sh
exec cargo run --release -q -p vesta -- dev "$@"
