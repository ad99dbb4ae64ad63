#!/usr/bin/env bash
# Runs the fuzz targets for a bounded total time (default 60 s, split evenly between them):
# `scripts/fuzz.sh 3600` for an hour. Targets: frame_decode (the internal protocol's frame decoder) and
# resp_request (the RESP request parser, against redis-protocol as an oracle).
# libFuzzer needs nightly's sanitizer flags; without a nightly toolchain the stable compiler is allowed
# them (RUSTC_BOOTSTRAP) and the run goes without AddressSanitizer (safe Rust needs it least).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets=(frame_decode resp_request)
per_target=$(( seconds / ${#targets[@]} ))
(( per_target >= 1 )) || per_target=1
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  run=(cargo +nightly fuzz run --target-dir "$target_dir")
else
  export RUSTC_BOOTSTRAP=1
  run=(cargo fuzz run --sanitizer none --target-dir "$target_dir")
fi
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  # Committed seeds (read only) after the working corpus, and a dictionary where there is one.
  corpora=("fuzz/corpus/$target")
  [[ -d "fuzz/seeds/$target" ]] && corpora+=("fuzz/seeds/$target")
  extra=()
  [[ "$target" == resp_request ]] && extra+=(-dict=fuzz/resp.dict)
  "${run[@]}" "$target" "${corpora[@]}" -- -max_total_time="$per_target" -max_len=4096 -print_final_stats=1 \
    "${extra[@]}" 2>&1 | tail -n 12
  echo "fuzz: $target ran ${per_target}s without a crash"
done
