#!/usr/bin/env bash
# Runs Redis's own TCL test suite (Redis 7.0.15, from Debian's BSD-licensed source package) in external
# mode against a fresh `vesta dev`, or against a throwaway Debian redis-server for the baseline, and
# prints per-file counts, the failing tests and a closing `N passed, N failed` line.
#
#   scripts/redis-tcl-suite.sh                     # build vesta (release), run the six files against it
#   scripts/redis-tcl-suite.sh --no-build          # use the vesta binary that is already built
#   scripts/redis-tcl-suite.sh --target redis      # the same selection against redis-server (~220 passed)
#   scripts/redis-tcl-suite.sh --min-pass 150      # exit 1 if fewer than 150 tests passed
#   scripts/redis-tcl-suite.sh -- --only 'RENAME*' # anything after `--` goes to every runtest call
#   scripts/redis-tcl-suite.sh --no-patch          # never apply the FUNCTION FLUSH harness tweak (below)
#   UNITS="unit/keyspace unit/scan" TAGS="-needs:debug" scripts/redis-tcl-suite.sh
# Also read from the environment: VESTA_BIN (default $CARGO_TARGET_DIR/release/vesta), CARGO_TARGET_DIR
# (default ~/.cache/vesta/target), TEST_TIMEOUT, SUITE_TIMEOUT, BUILD_TIMEOUT (seconds, see below).
#
# The suite's files are never part of this repository: they are downloaded once with `apt-get source`
# into $VESTA_REDIS_SUITE_CACHE (default ~/.cache/vesta/redis-suite) and reused; each run's full runtest
# log and the server's output are kept under its logs/. See ../shared/reference/redis-compat-study.md
# (section 2) for how external mode works and what the baseline numbers mean.
#
# Exit status: 0 if the suite ran (failures included), 1 if --min-pass N was given and fewer than N
# passed, 2 if it could not run (no suite, build failed, server did not start, bad arguments).
#
# Bounds, so that no run can hang: apt steps 600 s each, the build $BUILD_TIMEOUT (3600 s: the first
# build compiles RocksDB and may wait on cargo's lock behind another build), the server's `ready` 60 s,
# each test $TEST_TIMEOUT s without progress (runtest's own --timeout, 120), and all test files together
# $SUITE_TIMEOUT s (1200) of wall time; a file still running when that budget is spent is killed.
set -euo pipefail
# The whole script is one { ... } block: bash reads it completely before running it, so editing or
# checking out this file while a (long) run is going cannot change what that run executes.
{

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

# --- arguments --------------------------------------------------------------------------------------

TARGET=vesta
BUILD=1
MIN_PASS=""
PATCH=auto # auto: tweak the harness only if the target cannot answer FUNCTION FLUSH; never: don't
EXTRA=()
while (($#)); do
    case "$1" in
        --target) TARGET="${2:-}"; shift 2 || { echo "--target needs vesta|redis" >&2; exit 2; } ;;
        --target=*) TARGET="${1#*=}"; shift ;;
        --no-build) BUILD=0; shift ;;
        --min-pass) MIN_PASS="${2:-}"; shift 2 || { echo "--min-pass needs a number" >&2; exit 2; } ;;
        --min-pass=*) MIN_PASS="${1#*=}"; shift ;;
        --no-patch) PATCH=never; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$TARGET" in vesta|redis) ;; *) echo "--target must be vesta or redis, not '$TARGET'" >&2; exit 2 ;; esac
if [[ -n "$MIN_PASS" && ! "$MIN_PASS" =~ ^[0-9]+$ ]]; then
    echo "--min-pass needs a number, not '$MIN_PASS'" >&2
    exit 2
fi

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${VESTA_REDIS_SUITE_CACHE:-$HOME/.cache/vesta/redis-suite}"
SRC_DIR="$CACHE/src"       # the downloaded Debian source package (.dsc, orig tarball, debian tarball)
SUITE_VERSION=7.0.15       # the study's baseline; the 7.4+ harness also needs CONFIG GET * on every block
SUITE_DIR="$CACHE/redis-$SUITE_VERSION" # only tests/ and runtest, extracted from the orig tarball
LOG_DIR="$CACHE/logs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vesta/target}"
VESTA_BIN="${VESTA_BIN:-$CARGO_TARGET_DIR/release/vesta}"

# The six files of the study's comparison (strings, counters, expiry, keyspace, protocol, INFO), and the
# tags a facade without DEBUG, replication, SAVE, RESET and maxmemory/resetstat knobs cannot run.
UNITS="${UNITS:-unit/type/string unit/type/incr unit/expire unit/keyspace unit/protocol unit/info-command}"
TAGS="${TAGS:--needs:debug -needs:repl -needs:save -needs:reset -needs:config-maxmemory -needs:config-resetstat -needs:pfdebug}"
TEST_TIMEOUT="${TEST_TIMEOUT:-120}"
SUITE_TIMEOUT="${SUITE_TIMEOUT:-1200}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-3600}"
READY_TIMEOUT=60

SUDO=()
if ((EUID != 0)); then SUDO=(sudo); fi

log() { printf '%s\n' "$*" >&2; }
die() { log "redis-tcl-suite: $*"; exit 2; }

# --- the process we start, and its clean-up --------------------------------------------------------

SERVER_PID=""
CHILD_PID=""
TMP=""
cleanup() {
    # A build or runtest still running (we were interrupted): TERM its `timeout`, which passes the signal
    # on to the whole process group it leads (runtest's test clients included) and KILLs it 10 s later.
    if [[ -n "$CHILD_PID" ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        for _ in $(seq 150); do
            kill -0 "$CHILD_PID" 2>/dev/null || break
            sleep 0.1
        done
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    # Stop only the server this script started, by its pid: TERM first (vesta and redis-server both
    # shut down cleanly on it), KILL if it is still there after 10 s.
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server $SERVER_PID ignored SIGTERM for 10 s; killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$TMP" ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
# Without these, a signal would end bash without running the EXIT trap, leaving the server behind.
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" (a `timeout ...` command) in the background and waits for it. bash runs a trap only once the
# foreground command has finished, and `timeout` puts its command in a process group of its own, out of
# reach of a terminal's Ctrl-C; `wait`, by contrast, returns as soon as a signal arrives, so an
# interrupted run stops at once and the EXIT trap stops the child.
run_child() {
    "$@" &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# --- tools ----------------------------------------------------------------------------------------

apt_update_done=0
apt_update() {
    if ((apt_update_done == 0)); then
        timeout 600 "${SUDO[@]}" apt-get update -q >&2 || die "apt-get update failed"
        apt_update_done=1
    fi
}

apt_install() {
    log "installing $*"
    apt_update
    timeout 600 "${SUDO[@]}" apt-get install -y -q "$@" >&2 || die "apt-get install $* failed"
}

# runtest looks for tclsh8.5, 8.6 or 8.7 (not plain tclsh); redis-cli probes the target; the baseline
# needs Debian's redis-server (the same 7.0.15 as the suite).
need=()
have_tclsh=0
for v in 8.5 8.6 8.7; do command -v "tclsh$v" >/dev/null 2>&1 && have_tclsh=1; done
((have_tclsh)) || need+=(tcl)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
[[ "$TARGET" != redis ]] || command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
((${#need[@]} == 0)) || apt_install "${need[@]}"

mkdir -p "$CACHE" "$LOG_DIR"
# One run at a time per cache directory: runs share the extracted suite (and its one harness tweak).
exec 9>"$CACHE/.lock"
flock -w 1800 9 || die "another run has held $CACHE/.lock for 30 minutes"

# --- the suite ------------------------------------------------------------------------------------

ensure_suite() {
    if [[ -f "$SUITE_DIR/runtest" && -f "$SUITE_DIR/tests/test_helper.tcl" ]]; then return; fi
    local orig
    orig="$(ls "$SRC_DIR"/redis_"$SUITE_VERSION".orig.tar.* 2>/dev/null | head -n 1 || true)"
    if [[ -z "$orig" ]]; then
        # Debian ships the upstream tarball unchanged as the orig tarball (== git tag 7.0.15), so this
        # needs no GitHub access. apt-get source needs deb-src lines; add them unless some exist.
        if ! grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            local codename
            codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
            log "adding deb-src lines for $codename (/etc/apt/sources.list.d/vesta-debian-src.sources)"
            "${SUDO[@]}" tee /etc/apt/sources.list.d/vesta-debian-src.sources >/dev/null <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
            apt_update_done=0 # the new lines need their own update
        fi
        apt_update
        mkdir -p "$SRC_DIR"
        # --download-only: no dpkg-source unpacking (we want tests/ and runtest only).
        (cd "$SRC_DIR" && timeout 600 apt-get source --download-only redis >&2) || die "apt-get source redis failed"
        orig="$(ls "$SRC_DIR"/redis_"$SUITE_VERSION".orig.tar.* 2>/dev/null | head -n 1 || true)"
        [[ -n "$orig" ]] || die "Debian's redis source is not $SUITE_VERSION: $(ls "$SRC_DIR")"
    fi
    # Extract next to the final place and rename, so that an interrupted extraction is never reused.
    local part="$SUITE_DIR.partial"
    rm -rf "$part" && mkdir -p "$part"
    tar -xf "$orig" -C "$part" --strip-components=1 --wildcards '*/tests' '*/runtest' ||
        die "cannot extract tests/ and runtest from $orig"
    mv "$part" "$SUITE_DIR"
    log "suite: Redis $SUITE_VERSION tests in $SUITE_DIR"
}
ensure_suite

# --- the server -----------------------------------------------------------------------------------

TMP="$(mktemp -d "${TMPDIR:-/tmp}/vesta-tcl-suite.XXXXXX")"
STAMP="$(date +%Y%m%d-%H%M%S)"
LOG="$LOG_DIR/$TARGET-$STAMP.log"                 # runtest's full output, all files
SERVER_LOG="$LOG_DIR/$TARGET-$STAMP.server.log"  # the server's stdout and stderr
# Keep the 20 newest runs of each target.
{ ls -1t "$LOG_DIR"/"$TARGET"-*.log 2>/dev/null || true; } | { grep -v '\.server\.log$' || true; } |
    tail -n +21 | while read -r old; do rm -f "$old" "${old%.log}.server.log"; done

PORT=""
if [[ "$TARGET" == vesta ]]; then
    if ((BUILD)); then
        # cargo's lock serialises this with any build already running in the same target directory.
        # Like run_child, but in the repository (the subshell execs `timeout`, so CHILD_PID is its pid).
        log "building vesta (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR); --no-build skips this"
        (cd "$REPO" && exec timeout "$BUILD_TIMEOUT" cargo build --release -q -p vesta >&2) &
        CHILD_PID=$!
        wait "$CHILD_PID" ||
            die "cargo build --release -p vesta failed or took over $BUILD_TIMEOUT s"
        CHILD_PID=""
    fi
    [[ -x "$VESTA_BIN" ]] || die "no vesta binary at $VESTA_BIN (build it, or drop --no-build)"
    # --port 0: the kernel picks a free port (no race with other processes), and the proxy prints the
    # bound address in its `proxy listening on 127.0.0.1:PORT` line before `ready`.
    # stdout (the lines we wait for) to a file of its own; stderr (logs) appended (O_APPEND) to the log
    # file, so that our own appends to it below do not get overwritten.
    "$VESTA_BIN" dev --port 0 --data-dir "$TMP/data" >"$TMP/server.out" 2>>"$SERVER_LOG" &
    SERVER_PID=$!
    for _ in $(seq $((READY_TIMEOUT * 10))); do
        grep -qx ready "$TMP/server.out" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/server.out" >>"$SERVER_LOG"
    if ! grep -qx ready "$TMP/server.out"; then
        tail -n 20 "$SERVER_LOG" >&2
        die "vesta dev did not print 'ready' within $READY_TIMEOUT s (output: $SERVER_LOG)"
    fi
    PORT="$(sed -n 's/^proxy listening on .*:\([0-9][0-9]*\)$/\1/p' "$TMP/server.out" | head -n 1)"
    [[ -n "$PORT" ]] || die "no port in vesta's 'proxy listening on' line"
    SERVER_DESC="vesta dev ($VESTA_BIN, pid $SERVER_PID)"
else
    # redis-server cannot listen on port 0 (it means "no TCP"), so pick a free port; if another process
    # takes it before redis binds, redis exits at once and we try another.
    free_port() {
        if command -v python3 >/dev/null 2>&1; then
            python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        else
            echo $((20000 + RANDOM % 30000))
        fi
    }
    for attempt in 1 2 3 4 5; do
        PORT="$(free_port)"
        # No config file: Redis's defaults, no persistence, data dir in the temporary directory.
        redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
            --dir "$TMP" --logfile '' >>"$SERVER_LOG" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq $((READY_TIMEOUT * 10))); do
            [[ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == PONG ]] && break
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
        log "redis-server did not start on port $PORT (attempt $attempt)"
    done
    [[ -n "$SERVER_PID" ]] || die "redis-server did not start (output: $SERVER_LOG)"
    [[ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == PONG ]] ||
        die "redis-server did not answer PING within $READY_TIMEOUT s (output: $SERVER_LOG)"
    SERVER_DESC="$(redis-server --version | sed 's/ sha=.*//') (pid $SERVER_PID)"
fi
log "target: $SERVER_DESC on 127.0.0.1:$PORT"

# --- the one harness tweak ------------------------------------------------------------------------

# At the start of every `start_server` block, external mode sends FLUSHALL and then FUNCTION FLUSH,
# outside any test, so an error there aborts the whole file. Vesta is meant to answer FUNCTION FLUSH (it
# has no functions, so "OK"), so the suite is left as Redis ships it whenever the target does. Only when
# the target answers anything else (today: an unknown-command error) do we wrap that one line in
# `catch`, as the study did: otherwise every file would abort before its first test and the run would
# measure nothing. The tweak is undone again for targets that answer, so a run is never more lenient
# than it needs to be; --no-patch forces the unmodified harness.
HELPER="$SUITE_DIR/tests/support/server.tcl"
ORIG_LINE='    r function flush'
PATCHED_LINE='    catch {r function flush}'
ff_reply="$(timeout 10 redis-cli -h 127.0.0.1 -p "$PORT" function flush 2>&1 | tr -s '\r\n' ' ' || true)"
ff_reply="${ff_reply% }"
if [[ "$ff_reply" == OK || "$PATCH" == never ]]; then
    sed -i "s/^$PATCHED_LINE\$/$ORIG_LINE/" "$HELPER"
    HARNESS="unmodified"
else
    sed -i "s/^$ORIG_LINE\$/$PATCHED_LINE/" "$HELPER"
    HARNESS="FUNCTION FLUSH wrapped in catch (target replied: ${ff_reply:0:80})"
fi
grep -qxF -e "$ORIG_LINE" -e "$PATCHED_LINE" "$HELPER" || die "unexpected $HELPER: no 'r function flush' line"
log "harness: $HARNESS"

# --- the run --------------------------------------------------------------------------------------

{
    echo "# redis-tcl-suite: target $SERVER_DESC on 127.0.0.1:$PORT; suite Redis $SUITE_VERSION; harness $HARNESS"
    echo "# units: $UNITS"
    echo "# tags: $TAGS; extra: ${EXTRA[*]:-}"
} >"$LOG"

# Parses one file's runtest output: "OK ERR IGNORED SKIPPED DONE" on the first line, then one line per
# failing test, "name<TAB>reason". With --durable, a test that hit an error reply records
# `[err]: NAME in FILE`, then the error with its first 10 characters cut off (the harness strips an
# "assertion:" prefix that is not there), then Tcl's errorInfo whose first line is the whole error; an
# assertion records only its message. So the reason is the errorInfo line when it ends with the cut
# message, else the message.
parse_file() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" | awk -v unit="$2" '
        function flush_err() {
            if (name != "") {
                reason = l1
                if (l2 != "" && length(l2) > length(l1) && substr(l2, length(l2) - length(l1) + 1) == l1) reason = l2
                sub(/ \(context: .*$/, "", reason) # where in the harness the assertion sits: noise here
                if (length(reason) > 240) reason = substr(reason, 1, 237) "..."
                errs[++nerr] = name "\t" reason
            }
            name = ""; l1 = ""; l2 = ""; nl = 0
        }
        /^\[ok\]: /      { flush_err(); ok++; next }
        /^\[ignore\]: /  { flush_err(); ign++; next }
        /^\[skip\]: /    { flush_err(); skp++; next }
        /^\[err\]: /     { flush_err(); name = substr($0, 8); sub(/ in tests\/[^ ]*\.tcl$/, "", name); next }
        /^\[[0-9]+\/[0-9]+ done\]: / { flush_err(); done = 1; next }
        /^\[(exception|TIMEOUT)\]: / || /^Testing / || /^\[ready\]: / { flush_err(); next }
        name != "" { nl++; if (nl == 1) l1 = $0; else if (nl == 2) l2 = $0; next }
        END {
            flush_err()
            printf "%d %d %d %d %d\n", ok, nerr, ign, skp, done
            for (i = 1; i <= nerr; i++) print errs[i]
        }'
}

total_ok=0 total_err=0 total_ign=0 aborted=0
FAIL_REPORT=""
deadline=$((SECONDS + SUITE_TIMEOUT))
cd "$SUITE_DIR" # runtest runs tests/test_helper.tcl from the current directory
log "running: $UNITS"
log "log: $LOG"
# One runtest per file: in external mode an error outside a test (e.g. FLUSHALL refused at the start of a
# block) or a stuck test ends the whole runtest, so separate calls keep one broken file from hiding the
# results of the others. All run against the same server, as a single runtest would.
for unit in $UNITS; do
    out="$TMP/$(echo "$unit" | tr / _).out"
    remaining=$((deadline - SECONDS))
    if ((remaining <= 0)); then
        echo "== $unit: not run (the suite's $SUITE_TIMEOUT s budget is spent)" | tee -a "$LOG"
        aborted=$((aborted + 1))
        FAIL_REPORT+="$unit"$'\t'"(file not run: time budget spent)"$'\n'
        continue
    fi
    echo "== $unit" >>"$LOG"
    rc=0
    # runtest's --timeout ends the file when no test progresses for TEST_TIMEOUT s; the outer timeout
    # bounds the wall time of all files together (TERM to runtest's process group, KILL 10 s later).
    # TERM=dumb: the harness colours its output whenever TERM looks like an xterm, even into a file.
    run_child timeout -k 10 "$remaining" env TERM=dumb ./runtest --host 127.0.0.1 --port "$PORT" \
        --single "$unit" --singledb --ignore-encoding --ignore-digest --durable --timeout "$TEST_TIMEOUT" \
        --tags "$TAGS" ${EXTRA[@]+"${EXTRA[@]}"} </dev/null >"$out" 2>&1 || rc=$?
    cat "$out" >>"$LOG"
    echo "== $unit: runtest exit status $rc" >>"$LOG"

    parsed="$(parse_file "$out" "$unit")"
    read -r ok err ign skp finished <<<"$(head -n 1 <<<"$parsed")"
    total_ok=$((total_ok + ok)) total_err=$((total_err + err)) total_ign=$((total_ign + ign))
    line="$(printf '%-20s %4d ok %4d err %4d ignored' "$unit:" "$ok" "$err" "$ign")"
    ((skp == 0)) || line+="$(printf ' %4d skipped' "$skp")"
    if ((finished == 0)); then
        # The file did not finish: an exception outside a test, runtest's TIMEOUT, or our wall-time bound.
        why="$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -m1 -A2 -E '^\[(exception|TIMEOUT)\]' | tr '\n' ' ' || true)"
        ((rc != 124 && rc != 137)) || why="killed after the suite's $SUITE_TIMEOUT s budget. $why"
        [[ -n "$why" ]] || why="runtest exited with status $rc: $(tail -n 3 "$out" | tr '\n' ' ')"
        line+="   ABORTED: ${why:0:300}"
        aborted=$((aborted + 1))
        FAIL_REPORT+="$unit"$'\t'"(file aborted after $((ok + err)) tests) ${why:0:300}"$'\n'
    fi
    echo "$line"
    while IFS=$'\t' read -r name reason; do
        [[ -n "$name" ]] || continue
        FAIL_REPORT+="$unit"$'\t'"$name -- $reason"$'\n'
    done < <(tail -n +2 <<<"$parsed")
done

if [[ -n "$FAIL_REPORT" ]]; then
    echo
    echo "failing tests (file, name -- reason; details in the log):"
    printf '%s' "$FAIL_REPORT" | sed 's/\t/: /; s/^/  /'
fi
echo
echo "target: $SERVER_DESC; harness: $HARNESS"
echo "$total_ign tests ignored by tag; log: $LOG (server output: $SERVER_LOG)"
((aborted == 0)) || echo "$aborted file(s) did not finish; each counts as one failure below"
echo "$total_ok passed, $((total_err + aborted)) failed"

if [[ -n "$MIN_PASS" ]] && ((total_ok < MIN_PASS)); then
    log "fewer than --min-pass $MIN_PASS tests passed"
    exit 1
fi
exit 0
}
