#!/usr/bin/env bash
# Builds the images docker-compose.yml runs, without pulling anything from a registry:
#
#   vesta:local             FROM scratch: the release `vesta` binary, the shared libraries `ldd` lists for
#                           it, the dynamic loader, and `sh` + `sleep` (for the init service's wait loop)
#   vesta-etcd:local        FROM scratch: the host's etcd (Debian package etcd-server) and its libraries
#   vesta-prometheus:local  FROM scratch: the host's prometheus (Debian package prometheus), its libraries
#                           and docker/prometheus.yml
#
# Usage: scripts/docker-build.sh [all|vesta|etcd|prometheus]        (default: all)
#
# Environment:
#   VESTA_BIN          use this vesta binary instead of running `cargo build --release -p vesta`
#   ETCD_BIN           the etcd binary (default: `command -v etcd`)
#   PROMETHEUS_BIN     the prometheus binary (default: `command -v prometheus`)
#   VESTA_IMAGE        tag of the vesta image (default vesta:local)
#   VESTA_ETCD_IMAGE   tag of the etcd image  (default vesta-etcd:local)
#   VESTA_PROMETHEUS_IMAGE  tag of the Prometheus image (default vesta-prometheus:local)
#   CARGO_TARGET_DIR   default ~/.cache/vesta/target
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
what=${1:-all}
case $what in all | vesta | etcd | prometheus) ;; *) echo "usage: $0 [all|vesta|etcd|prometheus]" >&2; exit 2 ;; esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
vesta_image=${VESTA_IMAGE:-vesta:local}
etcd_image=${VESTA_ETCD_IMAGE:-vesta-etcd:local}
prometheus_image=${VESTA_PROMETHEUS_IMAGE:-vesta-prometheus:local}

step() { echo "==> $*"; }
die() { echo "docker-build: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (docker info fails)"
command -v ldd >/dev/null || die "ldd is missing (Debian package libc-bin)"
# Without the buildx plugin, the docker CLI's default (BuildKit) is unavailable: use the classic builder.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vesta-docker-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# add_exe ROOTFS SRC DEST: copies the executable SRC to ROOTFS/DEST (debug info stripped), and every
# shared library and the loader it needs to the same paths inside ROOTFS.
add_exe() {
  local root=$1 src=$2 dest=$3 out line lib
  [ -x "$src" ] || die "$src is not an executable"
  install -D -m 0755 "$src" "$root$dest"
  if command -v strip >/dev/null; then strip --strip-debug "$root$dest" 2>/dev/null || true; fi
  # ldd fails on a static executable ("not a dynamic executable"): then there is nothing to add.
  out=$(ldd "$src" 2>&1) || { echo "    $src: static"; return 0; }
  while IFS= read -r line; do
    case $line in *"not found"*) die "$src needs a library that is not installed: $line" ;; esac
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)";
    # linux-vdso.so.1 has no file.
    lib=$(awk '{ if ($2 == "=>") print $3; else print $1 }' <<<"$line")
    case $lib in
      /*)
        if [ ! -e "$root$lib" ]; then
          install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
          echo "    + $lib"
        fi
        ;;
    esac
  done <<<"$out"
}

# Files every image gets: name resolution through /etc/hosts then DNS (glibc 2.34+ has both built in;
# Docker mounts /etc/hosts and /etc/resolv.conf), a root user, and a /tmp.
base_rootfs() {
  local root=$1
  mkdir -p "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
}

build_image() { # TAG CONTEXT
  step "docker build -t $1"
  docker build -q -t "$1" "$2" >/dev/null
  docker image inspect --format "    $1: {{.Id}} ({{.Size}} bytes)" "$1"
}

if [ "$what" = all ] || [ "$what" = vesta ]; then
  if [ -n "${VESTA_BIN:-}" ]; then
    bin=$VESTA_BIN
    step "using the vesta binary $bin"
  else
    step "cargo build --release -p vesta (target dir $CARGO_TARGET_DIR)"
    cargo build --release -p vesta
    bin=$CARGO_TARGET_DIR/release/vesta
  fi
  step "assembling the vesta root filesystem"
  ctx=$work/vesta
  base_rootfs "$ctx/rootfs"
  mkdir -p "$ctx/rootfs/data"
  add_exe "$ctx/rootfs" "$bin" /usr/local/bin/vesta
  add_exe "$ctx/rootfs" "$(readlink -f "$(command -v sh)")" /bin/sh
  add_exe "$ctx/rootfs" "$(readlink -f "$(command -v sleep)")" /bin/sleep
  install -m 0755 docker/vesta-init "$ctx/rootfs/usr/local/bin/vesta-init"
  cp docker/vesta.Dockerfile "$ctx/Dockerfile"
  build_image "$vesta_image" "$ctx"
  step "checking that the image runs: $(docker run --rm --network none "$vesta_image" vesta --version)"
fi

if [ "$what" = all ] || [ "$what" = etcd ]; then
  etcd_bin=${ETCD_BIN:-$(command -v etcd || true)}
  [ -n "$etcd_bin" ] || die "etcd is not installed (Debian: apt-get install etcd-server), or set ETCD_BIN"
  step "assembling the etcd root filesystem from $etcd_bin"
  ctx=$work/etcd
  base_rootfs "$ctx/rootfs"
  mkdir -p "$ctx/rootfs/var/lib/etcd"
  add_exe "$ctx/rootfs" "$(readlink -f "$etcd_bin")" /usr/local/bin/etcd
  cp docker/etcd.Dockerfile "$ctx/Dockerfile"
  build_image "$etcd_image" "$ctx"
  step "checking that the image runs: $(docker run --rm --network none "$etcd_image" etcd --version | head -1)"
fi
if [ "$what" = all ] || [ "$what" = prometheus ]; then
  prometheus_bin=${PROMETHEUS_BIN:-$(command -v prometheus || true)}
  [ -n "$prometheus_bin" ] || die "prometheus is not installed (Debian: apt-get install prometheus), or set PROMETHEUS_BIN"
  step "assembling the Prometheus root filesystem from $prometheus_bin"
  ctx=$work/prometheus
  base_rootfs "$ctx/rootfs"
  mkdir -p "$ctx/rootfs/prometheus"
  add_exe "$ctx/rootfs" "$(readlink -f "$prometheus_bin")" /usr/local/bin/prometheus
  install -D -m 0644 docker/prometheus.yml "$ctx/rootfs/etc/prometheus/prometheus.yml"
  cp docker/prometheus.Dockerfile "$ctx/Dockerfile"
  build_image "$prometheus_image" "$ctx"
  step "checking that the image runs: $(docker run --rm --network none "$prometheus_image" prometheus --version 2>&1 | head -1)"
fi
case $what in
  all) step "done: $vesta_image $etcd_image $prometheus_image" ;;
  vesta) step "done: $vesta_image" ;;
  etcd) step "done: $etcd_image" ;;
  prometheus) step "done: $prometheus_image" ;;
esac
