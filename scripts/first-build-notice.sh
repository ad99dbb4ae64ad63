#!/usr/bin/env bash
# Says, before cargo goes quiet for half an hour, that the first build compiles RocksDB from source.
# Measured on 2 cores: 32 minutes for RocksDB and the binaries; later builds reuse it.
set -euo pipefail
target="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
if ! compgen -G "$target/release/build/librocksdb-sys-*/output" >/dev/null; then
  echo "first build: compiling RocksDB from source into $target (about 30 minutes on 2 cores, once)" >&2
fi
