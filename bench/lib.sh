# Helpers shared by the bench/*.sh scripts: sourced, not run. The sourcing script sets BENCH_NAME (its
# name in messages) first, then calls bench_args "$@" (after taking out any options of its own) and
# bench_tmp PREFIX (temp dir + EXIT trap). Every process started with `start` (or added to `pids`) is
# stopped by pid on exit, last started first; BENCH_KEEP=1 keeps the temp dir (the processes' logs).
# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are read by the sourcing scripts

host=127.0.0.1
pids=()
tmp=
build=1

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; exit 1; }

# The script's leading comment block, without the `# ` (its --help).
bench_usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

# Common arguments: --no-build, -h/--help. Sets build=0|1.
bench_args() {
    local arg
    for arg in "$@"; do
        case "$arg" in
            --no-build) build=0 ;;
            -h | --help) bench_usage; exit 0 ;;
            *) echo "${BENCH_NAME:-bench}: unknown argument: $arg (try --help)" >&2; exit 2 ;;
        esac
    done
}

# need_tools TOOL…: dies naming the Debian packages when one is missing.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null ||
            die "needs $tool (apt-get install -y redis-server redis-tools python3 coreutils)"
    done
}

# Installs redis-server and redis-tools (redis-benchmark, redis-cli) when they are missing.
need_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null ||
        ! command -v redis-cli >/dev/null; then
        log "installing redis-server and redis-tools"
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
    fi
}

# bench_build PACKAGE…: `cargo build --release` of them unless --no-build.
bench_build() {
    local p args=()
    ((build)) || return 0
    for p in "$@"; do args+=(-p "$p"); done
    log "building $* (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release "${args[@]}"
}

# stop_pid PID: SIGTERM, 10 s to exit, then SIGKILL; reaps it.
# shellcheck disable=SC2317 # called from the EXIT trap
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# forget_pid PID: drops it from the processes stopped on exit (after stopping it by hand).
forget_pid() {
    local keep=() p
    for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# stop PID: stops it now and forgets it.
stop() { stop_pid "$1"; forget_pid "$1"; }

# shellcheck disable=SC2317
bench_cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
    if [[ -n $tmp ]]; then
        if [[ -n ${BENCH_KEEP:-} ]]; then echo "logs kept in $tmp" >&2; else rm -rf "$tmp"; fi
    fi
    exit "$status"
}

# bench_tmp PREFIX: makes the temp dir $tmp and sets the traps that clean up.
bench_tmp() {
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# A free ephemeral port on 127.0.0.1.
free_port() {
    local port
    if command -v python3 >/dev/null &&
        port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null)"; then
        echo "$port"
        return
    fi
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 30000))
        port_open "$port" || { echo "$port"; return; }
    done
    die "found no free port"
}

ping_ok() { [[ "$(timeout 2 redis-cli -h "$host" -p "$1" ping 2>/dev/null)" == PONG ]]; }

# show_logs NAME: the last lines of $tmp/NAME.out and .err.
show_logs() {
    local f
    for f in "$tmp/$1".out "$tmp/$1".err; do
        [[ -s $f ]] && { echo "--- $f (last 20 lines)" >&2; tail -n 20 "$f" >&2; }
    done
    return 0
}

# start NAME PORT COMMAND…: runs it in the background (output in $tmp/NAME.out, .err) and waits until
# PORT answers PING or the process prints a line `ready` (PORT `-`: only the latter), at most
# READY_TIMEOUT [120] seconds. Sets last_pid.
start() {
    local name=$1 port=$2 deadline limit=${READY_TIMEOUT:-120}
    shift 2
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    last_pid=$!
    pids+=("$last_pid")
    deadline=$((SECONDS + limit))
    until grep -qx ready "$tmp/$name.out" 2>/dev/null || { [[ $port != - ]] && ping_ok "$port"; }; do
        if ! kill -0 "$last_pid" 2>/dev/null; then
            show_logs "$name"
            die "$name exited before it was ready"
        fi
        if ((SECONDS >= deadline)); then
            show_logs "$name"
            die "$name not ready after $limit s"
        fi
        sleep 0.2
    done
    if [[ $port == - ]]; then log "$name ready (pid $last_pid)"; else log "$name ready on $host:$port (pid $last_pid)"; fi
}

# start_redis NAME PORT [ARGS…]: a redis-server without persistence on 127.0.0.1:PORT.
start_redis() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$tmp/$name"
    start "$name" "$port" redis-server --port "$port" --bind "$host" --save '' --appendonly no \
        --daemonize no --dir "$tmp/$name" --protected-mode yes "$@"
}

# csv_field FILE COLUMN: COLUMN of the first data row of a redis-benchmark --csv output ("-" if absent).
csv_field() {
    awk -v want="$2" '
        /^"test"/ { gsub(/"/, ""); n = split($0, h, ","); for (i = 1; i <= n; i++) if (h[i] == want) col = i; header = 1; next }
        /^"/ { if (!header && want == "rps") col = 2
               if (col) { gsub(/"/, ""); split($0, f, ","); print f[col]; found = 1 }
               exit }
        END { if (!found) print "-" }' "$1"
}

# rb_note STATUS CSV ERR: what went wrong with one redis-benchmark run (its exit status, its --csv output and
# its stderr), or nothing when it went well.
rb_note() {
    local status=$1 error
    # redis-benchmark 7 stops at the first error reply: "Error from server: ERR …", or (after a
    # reconnection) "Node … replied with error:" and the error on the next line
    error="$(awk '/Error from server: / { sub(/.*Error from server: /, ""); print; exit }
        /replied with error/ { getline; print; exit }' "$3" | cut -c1-60)"
    if ((status == 124 || status == 137)); then
        echo "timed out"
    elif [[ -n $error ]]; then
        echo "error reply: $error"
    elif ((status != 0)); then
        echo "exit $status"
    elif [[ $(csv_field "$2" rps) == - ]]; then
        echo "no result"
    fi
}

# run_bounded SECONDS OUT ERR COMMAND…: runs it under `timeout`, in the background so that Ctrl-C and
# SIGTERM reach the traps at once (`wait` is interruptible; the EXIT trap stops it by pid); ERR `-` leaves
# stderr where it is. Returns its status.
run_bounded() {
    local limit=$1 out=$2 err=$3 pid status=0
    shift 3
    if [[ $err == - ]]; then
        timeout -k 5 "$limit" "$@" >"$out" &
    else
        timeout -k 5 "$limit" "$@" >"$out" 2>"$err" &
    fi
    pid=$!
    pids+=("$pid")
    wait "$pid" || status=$?
    forget_pid "$pid"
    return "$status"
}

# ratio NUM DEN: NUM/DEN with two decimals, "-" when either is missing or zero.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }

cores() { nproc 2>/dev/null || echo '?'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'; }
redis_version() { redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'; }
