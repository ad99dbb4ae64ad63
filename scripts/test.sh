#!/usr/bin/env bash
# The whole test suite: the frame-decoder fuzz target for a bounded time, then every unit, property and
# integration test of the workspace. Tests run in the release profile — the profile of the binaries — so
# RocksDB is compiled once, into a target directory kept outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
scripts/first-build-notice.sh
# A few seconds, no build: every package built alone would reuse this RocksDB (see the script).
scripts/check-build-reuse.sh
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
cargo test --release --workspace
