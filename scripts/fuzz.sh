#!/usr/bin/env bash
# Runs the frame-decoder fuzz target for a bounded time (default 60 s): `scripts/fuzz.sh 3600` for an hour.
# libFuzzer needs nightly's sanitizer flags; without a nightly toolchain the stable compiler is allowed
# them (RUSTC_BOOTSTRAP) and the run goes without AddressSanitizer (safe Rust needs it least).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
mkdir -p fuzz/corpus/frame_decode
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  run=(cargo +nightly fuzz run --target-dir "$target_dir" frame_decode)
else
  export RUSTC_BOOTSTRAP=1
  run=(cargo fuzz run --sanitizer none --target-dir "$target_dir" frame_decode)
fi
"${run[@]}" -- -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 2>&1 | tail -n 12
echo "fuzz: frame_decode ran ${seconds}s without a crash"
