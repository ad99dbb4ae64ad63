#!/usr/bin/env bash
# What the README's two commands need from the system before they build: `scripts/prerequisites.sh build`
# (scripts/dev.sh: a C++ compiler, libclang for bindgen, protoc for etcd-client) or
# `scripts/prerequisites.sh test` (scripts/test.sh: that, plus the real servers and clients the tests
# start: redis-server, redis-cli/redis-benchmark, etcd, redis-py, Prometheus and its redis_exporter).
#
# Missing Debian packages are installed when running as root with apt-get (a fresh container, CI);
# otherwise the script stops before the 30-minute build with the one command to run, rather than letting
# bindgen fail half-way through RocksDB with "Unable to find libclang".
#
# VESTA_SKIP_PREREQUISITES=1 skips the check (a non-Debian system that has the tools another way).
# VESTA_PREREQUISITES_AS_USER=1 behaves as for a non-root user even as root (the script's own test).
set -euo pipefail

need="${1:-build}"
case "$need" in
  build) packages=(g++ libclang-dev protobuf-compiler) ;;
  # prometheus: the compose stack's Prometheus image and promtool (vesta/tests/grafana_dashboard.rs);
  # prometheus-redis-exporter: compat-tests/tests/redis_exporter.rs.
  test) packages=(g++ libclang-dev protobuf-compiler redis-server redis-tools etcd-server python3-redis
    prometheus prometheus-redis-exporter) ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac

[[ "${VESTA_SKIP_PREREQUISITES:-0}" == 1 ]] && exit 0

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not on PATH; install Rust first: https://rustup.rs" >&2
  exit 1
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "note: not a Debian-based system; make sure these (Debian names) are installed: ${packages[*]}" >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

as_root=0
[[ "$(id -u)" == 0 && "${VESTA_PREREQUISITES_AS_USER:-0}" != 1 ]] && as_root=1
if ((as_root)) && command -v apt-get >/dev/null 2>&1; then
  echo "installing missing system packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q "${missing[@]}" >&2
  exit 0
fi

echo "error: missing system packages: ${missing[*]}" >&2
echo "run this once, then again the command you ran:" >&2
echo "  sudo apt-get install -y ${missing[*]}" >&2
exit 1
