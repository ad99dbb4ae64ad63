#!/usr/bin/env bash
# Checks that building any one package reuses the RocksDB the workspace's build compiled: for every
# workspace member, Cargo must resolve librocksdb-sys and its whole dependency closure — build scripts'
# dependencies (bindgen, cc, …) included — with exactly the versions and features of the workspace's
# build. Otherwise `cargo test --release -p vesta-store` compiles RocksDB again (half an hour on 2 cores).
# What keeps them equal is workspace-hack/; when this check fails, it prints the lines that differ: add
# the crate with the workspace's features there.
#
#   scripts/check-build-reuse.sh               # resolution only (`cargo tree`, a few seconds, no build)
#   scripts/check-build-reuse.sh --fresh PKG   # also `cargo build --release -p PKG --all-targets -v`
#                                              # in CARGO_TARGET_DIR, stopped as soon as Cargo says whether
#                                              # librocksdb-sys is `Fresh` (pass) or must be compiled again
#                                              # (fail). Needs a target dir the workspace's build filled.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"

host=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$host" ] || { echo "check-build-reuse: no host triple in \`rustc -vV\`" >&2; exit 2; }

# closure EDGES CARGO-TREE-ARGS…: "name version features" of every unit below librocksdb-sys (itself
# included), as Cargo resolves them for that selection of packages; nothing when it has no RocksDB.
closure() {
  local edges=$1
  shift
  cargo tree "$@" --target "$host" -e "$edges" --prefix depth --no-dedupe --format '{p} {f}' |
    awk '
      match($0, /^[0-9]+/) {
        depth = substr($0, 1, RLENGTH) + 0
        line = substr($0, RLENGTH + 1)
        if (inside && depth <= root) inside = 0
        if (inside) print line
        else if (line ~ /^librocksdb-sys /) { inside = 1; root = depth; print line }
      }' |
    sort -u
}

work=$(mktemp -d "${TMPDIR:-/tmp}/vesta-build-reuse.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The workspace's build: `cargo test --workspace` (dev-dependencies too) and `cargo build --workspace`.
closure normal,build,dev --workspace >"$work/workspace"
closure normal,build --workspace >"$work/workspace-no-dev"
if [ ! -s "$work/workspace" ]; then
  echo "check-build-reuse: librocksdb-sys is not in the workspace's dependency tree" >&2
  exit 1
fi
if ! diff -u "$work/workspace" "$work/workspace-no-dev" >"$work/diff"; then
  echo "check-build-reuse: \`cargo build --workspace\` and \`cargo test --workspace\` resolve RocksDB's closure differently:" >&2
  cat "$work/diff" >&2
  exit 1
fi

members=$(cargo tree --workspace --depth 0 -e normal --prefix none --format '{p}' | awk 'NF { print $1 }' | sort -u)
failed=0
checked=0
for pkg in $members; do
  # `cargo build -p PKG` (no dev-dependencies) and `cargo test -p PKG` (with them).
  for edges in normal,build normal,build,dev; do
    closure "$edges" -p "$pkg" >"$work/pkg"
    [ -s "$work/pkg" ] || continue # the package does not build RocksDB at all
    checked=$((checked + 1))
    if ! diff -u --label workspace --label "$pkg ($edges)" "$work/workspace" "$work/pkg" >"$work/diff"; then
      echo "check-build-reuse: $pkg built alone ($edges) resolves RocksDB's closure differently from the workspace:" >&2
      cat "$work/diff" >&2
      failed=1
    fi
  done
done
if [ "$failed" != 0 ]; then
  echo "check-build-reuse: FAILED — give the crates marked + / - the workspace's features in workspace-hack/Cargo.toml" >&2
  exit 1
fi
echo "check-build-reuse: every member resolves RocksDB's closure ($(wc -l <"$work/workspace") crates) as the workspace does ($checked package builds that include it)"

if [ "${1:-}" = --fresh ]; then
  pkg=${2:?usage: $0 --fresh PKG}
  echo "check-build-reuse: cargo build --release -p $pkg --all-targets -v in $CARGO_TARGET_DIR"
  mkfifo "$work/log"
  # In a session of its own, so that stopping it stops the compilers it started too.
  setsid cargo build --release -p "$pkg" --all-targets -v >"$work/log" 2>&1 &
  cargo_pid=$!
  verdict=absent
  while IFS= read -r line; do
    case $line in
      # Cargo fingerprints the whole graph before it starts: `Fresh` here is final, and nothing
      # after it can change librocksdb-sys's fate — the rest of the build is not needed.
      *"Fresh librocksdb-sys "*) verdict=fresh ;;
      *"Compiling librocksdb-sys "* | *"Dirty librocksdb-sys "* | *librocksdb-sys-*/build-script-build*) verdict=rebuild ;;
      *) continue ;;
    esac
    echo "    $line"
    break
  done <"$work/log"
  if [ "$verdict" = absent ]; then
    wait "$cargo_pid" || { echo "check-build-reuse: cargo build failed" >&2; exit 1; }
  else
    kill -TERM -- "-$cargo_pid" 2>/dev/null || true
    wait "$cargo_pid" 2>/dev/null || true
  fi
  case $verdict in
    fresh) echo "check-build-reuse: librocksdb-sys is Fresh for -p $pkg" ;;
    rebuild) echo "check-build-reuse: FAILED — -p $pkg would compile librocksdb-sys again (stopped)" >&2; exit 1 ;;
    absent) echo "check-build-reuse: -p $pkg does not build librocksdb-sys" ;;
  esac
fi
