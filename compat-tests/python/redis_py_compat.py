"""redis-py against one server: one section of client calls, checked on the spot.

Every observation is printed as a `T label = value` line. tests/redis_py.rs runs a section against a
throwaway redis-server first (which proves the expectations are Redis's) and then against Vesta, and
compares the two transcripts. Exits non-zero with a traceback on the first failed expectation.

usage: redis_py_compat.py --port P --protocol {2,3,default} --prefix PFX --section NAME --server NAME
"""

import argparse
import sys
import threading
import time

import redis
from redis.exceptions import LockError, LockNotOwnedError, ResponseError, WatchError

# Every call is bounded: a hung server fails the run instead of hanging it.
SOCKET_TIMEOUT = 30


class Transcript:
    def __init__(self, server):
        self.server = server

    def record(self, label, value):
        print(f"T {label} = {value!r}", flush=True)

    def check(self, label, got, expected):
        if got != expected:
            raise AssertionError(f"[{self.server}] {label}: got {got!r}, expected {expected!r}")
        self.record(label, got)

    def check_that(self, label, got, ok):
        if not ok(got):
            raise AssertionError(f"[{self.server}] {label}: unexpected {got!r}")

    def raises(self, label, exc_type, fn, *args, **kwargs):
        """Calls fn, which must raise exc_type; records the exception's class and text."""
        try:
            value = fn(*args, **kwargs)
        except exc_type as e:
            self.record(label, f"{type(e).__name__}: {e}")
            return e
        raise AssertionError(f"[{self.server}] {label}: expected {exc_type.__name__}, got the value {value!r}")


def client(args, **kwargs):
    options = dict(host="127.0.0.1", port=args.port, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=10)
    if args.protocol != "default":
        options["protocol"] = int(args.protocol)
    options.update(kwargs)
    return redis.Redis(**options)


def major_version():
    return int(redis.__version__.split(".")[0])


def pool_connection(r):
    pool = r.connection_pool
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        return pool.get_connection("PING")


# ---------------------------------------------------------------------------------------------------


def section_handshake(r, k, t, args):
    conn = pool_connection(r)
    try:
        expected = int(args.protocol) if args.protocol != "default" else (3 if major_version() >= 8 else 2)
        t.check("negotiated protocol", int(conn.protocol), expected)
        if expected == 3:
            meta = conn.handshake_metadata
            t.check("HELLO proto", meta.get(b"proto", meta.get("proto")), 3)
            keys = [x.decode() if isinstance(x, bytes) else x for x in meta.keys()]
            t.check("HELLO keys", keys, ["server", "version", "proto", "id", "mode", "role", "modules"])
    finally:
        r.connection_pool.release(conn)
    t.check("ping", r.ping(), True)
    t.check("echo", r.echo(b"hi"), b"hi")
    t.check("client_setname", r.client_setname("compat"), True)
    t.record("client_getname", r.client_getname())
    t.check_that("client_getname value", r.client_getname(), lambda v: v in (b"compat", "compat"))
    t.check_that("client_id", r.client_id(), lambda v: isinstance(v, int) and v > 0)
    t.check("SELECT 0", r.execute_command("SELECT", 0), True)
    info = r.info()
    t.check_that("info has redis_version", info, lambda i: "redis_version" in i and "loading" in i)
    t.check_that("time", r.time(), lambda v: isinstance(v, tuple) and len(v) == 2 and v[0] > 1_600_000_000)
    t.check_that("config_get", r.config_get("appendonly"), lambda v: isinstance(v, dict))
    t.check("dbsize is an int", isinstance(r.dbsize(), int), True)


def section_basic(r, k, t, args):
    t.check("set", r.set(k("a"), "v1"), True)
    t.check("get", r.get(k("a")), b"v1")
    t.check("get missing", r.get(k("missing")), None)
    t.check("incr new", r.incr(k("n")), 1)
    t.check("incr by 5", r.incr(k("n"), 5), 6)
    t.check("decr", r.decr(k("n")), 5)
    t.check("incrbyfloat", r.incrbyfloat(k("n"), 0.5), 5.5)
    t.check("get after incrbyfloat", r.get(k("n")), b"5.5")
    t.check("expire", r.expire(k("a"), 100), True)
    t.check_that("ttl", r.ttl(k("a")), lambda s: 90 <= s <= 100)
    t.check_that("pttl", r.pttl(k("a")), lambda ms: 90_000 <= ms <= 100_000)
    t.check("expire nx with a ttl", r.expire(k("a"), 200, nx=True), False)
    t.check("expire gt", r.expire(k("a"), 200, gt=True), True)
    t.check_that("expiretime", r.expiretime(k("a")), lambda s: s > time.time() + 150)
    t.check("persist", r.persist(k("a")), True)
    t.check("ttl without expiry", r.ttl(k("a")), -1)
    t.check("ttl missing", r.ttl(k("missing")), -2)
    t.check("expire missing", r.expire(k("missing"), 10), False)
    t.check("exists 1 of 2", r.exists(k("a"), k("missing")), 1)
    t.check("delete", r.delete(k("a"), k("n"), k("missing")), 2)
    t.check("exists after delete", r.exists(k("a")), 0)
    t.check("mset", r.mset({k("m1"): "a", k("m2"): "b"}), True)
    t.check("mget", r.mget([k("m1"), k("missing"), k("m2")]), [b"a", None, b"b"])
    t.check("mget varargs", r.mget(k("m1"), k("m2")), [b"a", b"b"])
    t.check("setex", r.setex(k("se"), 100, "v"), True)
    t.check_that("ttl after setex", r.ttl(k("se")), lambda s: 90 <= s <= 100)
    t.check("psetex", r.psetex(k("pse"), 100_000, "v"), True)
    t.check("setnx existing", r.setnx(k("se"), "w"), False)
    t.check("setnx new", r.setnx(k("snx"), "w"), True)
    t.check("getset", r.getset(k("snx"), "x"), b"w")
    t.check("getdel", r.getdel(k("snx")), b"x")
    t.check("getdel again", r.getdel(k("snx")), None)
    t.check("getex", r.getex(k("se"), persist=True), b"v")
    t.check("ttl after getex persist", r.ttl(k("se")), -1)
    t.check("append", r.append(k("str"), "Hello"), 5)
    t.check("append more", r.append(k("str"), " World"), 11)
    t.check("strlen", r.strlen(k("str")), 11)
    t.check("getrange", r.getrange(k("str"), 0, 4), b"Hello")
    t.check("setrange", r.setrange(k("str"), 6, "Redis"), 11)
    t.check("get after setrange", r.get(k("str")), b"Hello Redis")
    t.check("type", r.type(k("str")), b"string")
    t.check("type missing", r.type(k("missing")), b"none")
    t.check("touch", r.touch(k("str"), k("missing")), 1)
    t.check("unlink", r.unlink(k("str"), k("m1"), k("m2")), 3)
    binary = bytes([0, 255, 13, 10, 36, 42, 0])
    t.check("set binary", r.set(k("bin"), binary), True)
    t.check("get binary", r.get(k("bin")), binary)

    r.set(k("s"), "abc")
    t.raises("incr non-integer", ResponseError, r.incr, k("s"))
    t.raises("incrbyfloat non-float", ResponseError, r.incrbyfloat, k("s"), 1.5)
    t.raises("unknown command", ResponseError, r.execute_command, "NOSUCHCMD", "x")
    t.raises("set ex 0", ResponseError, r.set, k("s"), "v", ex=0)
    t.raises("wrong arity", ResponseError, r.execute_command, "GET")
    t.check("ping after errors", r.ping(), True)

    rd = client(args, decode_responses=True)
    t.check("decoded set", rd.set(k("d"), "é"), True)
    t.check("decoded get", rd.get(k("d")), "é")
    t.check("decoded mget", rd.mget([k("d"), k("missing")]), ["é", None])


def section_set_options(r, k, t, args):
    t.check("set nx ex", r.set(k("lock"), "tok", nx=True, ex=30), True)
    t.check("set nx ex again", r.set(k("lock"), "tok", nx=True, ex=30), None)
    t.check_that("ttl after ex", r.ttl(k("lock")), lambda s: 20 <= s <= 30)
    t.check("set xx px", r.set(k("lock"), "tok2", xx=True, px=50_000), True)
    t.check_that("pttl after px", r.pttl(k("lock")), lambda ms: 40_000 <= ms <= 50_000)
    t.check("set xx missing", r.set(k("missing"), "v", xx=True), None)
    t.check("exists after set xx missing", r.exists(k("missing")), 0)
    t.check("set get on missing", r.set(k("g"), "new", get=True), None)
    t.check("set get", r.set(k("g"), "newer", get=True), b"new")
    t.check("set ex", r.set(k("g"), "x", ex=100), True)
    t.check("set keepttl", r.set(k("g"), "y", keepttl=True), True)
    t.check_that("ttl after keepttl", r.ttl(k("g")), lambda s: 90 <= s <= 100)
    t.check("set plain clears ttl", r.set(k("g"), "z"), True)
    t.check("ttl after plain set", r.ttl(k("g")), -1)
    t.check("set exat", r.set(k("g"), "x", exat=int(time.time()) + 100), True)
    t.check_that("ttl after exat", r.ttl(k("g")), lambda s: 90 <= s <= 100)
    t.check("set pxat", r.set(k("g"), "x", pxat=int(time.time() * 1000) + 100_000), True)
    t.check_that("ttl after pxat", r.ttl(k("g")), lambda s: 90 <= s <= 100)
    t.check("set nx get on missing", r.set(k("ng"), "v", nx=True, get=True), None)
    t.check("set nx get on existing", r.set(k("ng"), "w", nx=True, get=True), b"v")
    t.check("value kept", r.get(k("ng")), b"v")
    t.check("set get xx ex", r.set(k("ng"), "w", xx=True, get=True, ex=50), b"v")
    t.check_that("ttl after set get xx ex", r.ttl(k("ng")), lambda s: 40 <= s <= 50)


def section_pipeline(r, k, t, args):
    p = r.pipeline(transaction=False)
    p.set(k("a"), 1).incr(k("a")).get(k("a")).mget([k("a"), k("missing")]).delete(k("a"))
    t.check("pipeline", p.execute(), [True, 2, b"2", [b"2", None], 1])

    with r.pipeline(transaction=False) as p:
        for _ in range(100):
            p.incr(k("many"))
        t.check("100 pipelined incr", p.execute(), list(range(1, 101)))

    p = r.pipeline(transaction=False)
    p.set(k("s"), "abc").incr(k("s")).get(k("s"))
    result = p.execute(raise_on_error=False)
    t.record("pipeline with an error, raise_on_error=False", [x if not isinstance(x, Exception) else f"{type(x).__name__}: {x}" for x in result])
    t.check("the command after the error ran", result[2], b"abc")
    p.set(k("s"), "abc").incr(k("s")).get(k("s"))
    t.raises("pipeline with an error", ResponseError, p.execute)
    t.check("empty pipeline", r.pipeline(transaction=False).execute(), [])
    t.check("ping after", r.ping(), True)


def section_transaction(r, k, t, args):
    p = r.pipeline()  # transaction=True is the default: MULTI ... EXEC
    p.set(k("t"), 1).incr(k("t")).incrby(k("t"), 5).get(k("t"))
    t.check("multi/exec", p.execute(), [True, 2, 7, b"7"])

    # A command failing at run time does not undo the others.
    p = r.pipeline()
    p.set(k("rt"), "abc").incr(k("rt")).set(k("rt2"), "after")
    result = p.execute(raise_on_error=False)
    t.record("exec with a failing command", [x if not isinstance(x, Exception) else f"{type(x).__name__}: {x}" for x in result])
    t.check("the command after the failing one ran", r.get(k("rt2")), b"after")
    p.set(k("rt"), "abc").incr(k("rt"))
    t.raises("exec with a failing command, raising", ResponseError, p.execute)

    # A command rejected while queueing aborts everything (EXECABORT).
    p = r.pipeline()
    p.set(k("qe"), 1)
    p.execute_command("NOSUCHCMD", "x")
    t.raises("exec with a queueing error", ResponseError, p.execute)
    t.check("nothing written after EXECABORT", r.exists(k("qe")), 0)

    with r.pipeline() as p:
        p.multi()
        p.set(k("m"), "v")
        p.get(k("m"))
        t.check("explicit multi", p.execute(), [True, b"v"])
    t.check("empty transaction", r.pipeline().execute(), [])
    t.check("ping after", r.ping(), True)


def section_scan(r, k, t, args):
    keys = [k(f"scan:{i:02}") for i in range(30)]
    r.mset({key: "v" for key in keys})
    r.set(k("other"), "v")
    encoded = sorted(key.encode() for key in keys)
    # SCAN may return a key more than once; every key present throughout must come at least once.
    t.check("scan_iter match", sorted(set(r.scan_iter(match=k("scan:*")))), encoded)
    t.check("scan_iter match count", sorted(set(r.scan_iter(match=k("scan:*"), count=5))), encoded)
    t.check("scan_iter type string", sorted(set(r.scan_iter(match=k("scan:1*"), _type="STRING"))), encoded[10:20])
    t.check("scan_iter type hash", list(r.scan_iter(match=k("scan:*"), _type="hash")), [])
    t.check("keys", sorted(r.keys(k("scan:0*"))), encoded[:10])
    t.check("keys no match", r.keys(k("nothing:*")), [])
    cursor, page = r.scan(0, match=k("scan:*"), count=3)
    t.check_that("scan cursor is an int", cursor, lambda c: isinstance(c, int) and c >= 0)
    t.check_that("scan page", page, lambda p: isinstance(p, list))
    t.check_that("dbsize", r.dbsize(), lambda n: n >= 31)


def section_lock(r, k, t, args):
    lock = r.lock(k("lock"), timeout=5, sleep=0.05)
    t.check("acquire", lock.acquire(blocking=False), True)
    t.check("owned", lock.owned(), True)
    t.check("locked", lock.locked(), True)
    t.check_that("pttl of the lock", r.pttl(k("lock")), lambda ms: 2_000 < ms <= 5_000)
    other = r.lock(k("lock"), timeout=5, sleep=0.05)
    t.check("second acquire, non-blocking", other.acquire(blocking=False), False)
    t.check("second acquire, blocking with timeout", other.acquire(blocking=True, blocking_timeout=0.3), False)
    t.check("other does not own it", other.owned(), False)
    t.check("extend by 5 s", lock.extend(5), True)
    t.check_that("pttl after extend", r.pttl(k("lock")), lambda ms: 5_000 < ms <= 10_000)
    t.check("extend, replace ttl", lock.extend(2, replace_ttl=True), True)
    t.check_that("pttl after replace", r.pttl(k("lock")), lambda ms: 0 < ms <= 2_000)
    t.check("reacquire", lock.reacquire(), True)
    t.check_that("pttl after reacquire", r.pttl(k("lock")), lambda ms: 2_000 < ms <= 5_000)
    t.check("release", lock.release(), None)
    t.check("key gone after release", r.exists(k("lock")), 0)
    t.raises("release twice", LockError, lock.release)
    t.check("other acquires now", other.acquire(blocking=False), True)
    other.release()

    # Someone else overwrote the key: the lock is no longer ours.
    stolen = r.lock(k("stolen"), timeout=5)
    t.check("acquire", stolen.acquire(blocking=False), True)
    r.set(k("stolen"), "intruder")
    t.raises("extend a stolen lock", LockNotOwnedError, stolen.extend, 1)
    t.raises("reacquire a stolen lock", LockNotOwnedError, stolen.reacquire)
    t.raises("release a stolen lock", LockNotOwnedError, stolen.release)
    t.check("the intruder's value stays", r.get(k("stolen")), b"intruder")

    # The lock expired: release reports it, and deletes nothing of anyone else's.
    short = r.lock(k("short"), timeout=0.2)
    t.check("acquire short", short.acquire(blocking=False), True)
    time.sleep(0.5)
    t.check("short lock expired", r.exists(k("short")), 0)
    t.raises("release an expired lock", LockNotOwnedError, short.release)

    # A blocking acquire succeeds once the holder (on another thread) releases.
    holder = r.lock(k("wait"), timeout=10, thread_local=False)
    t.check("holder acquires", holder.acquire(blocking=False), True)
    releaser = threading.Timer(0.3, holder.release)
    releaser.start()
    waiter = r.lock(k("wait"), timeout=10, sleep=0.05)
    t.check("waiter acquires after the release", waiter.acquire(blocking=True, blocking_timeout=20), True)
    releaser.join(timeout=20)
    waiter.release()

    with r.lock(k("ctx"), timeout=5, blocking_timeout=5):
        t.check("held inside with", r.exists(k("ctx")), 1)
    t.check("released after with", r.exists(k("ctx")), 0)

    t.check("lock without timeout", r.lock(k("forever")).acquire(blocking=False), True)
    t.check("no ttl", r.ttl(k("forever")), -1)


def section_watch(r, k, t, args):
    other = client(args)
    r.set(k("w"), 10)
    attempts = []

    def increment(pipe):
        attempts.append(1)
        current = int(pipe.get(k("w")))  # immediate: the pipeline is in WATCH mode
        if len(attempts) == 1:
            other.set(k("w"), 100)  # someone else writes the watched key: EXEC aborts, redis-py retries
        pipe.multi()
        pipe.set(k("w"), current + 1)
        pipe.get(k("w"))

    t.check("transaction", r.transaction(increment, k("w")), [True, b"101"])
    t.check("transaction attempts", len(attempts), 2)

    def double(pipe):
        value = int(pipe.get(k("w")))
        pipe.multi()
        pipe.set(k("w"), value * 2)
        return value * 2

    t.check("transaction value_from_callable", r.transaction(double, k("w"), value_from_callable=True), 202)
    t.check("after", r.get(k("w")), b"202")

    with r.pipeline() as p:
        p.watch(k("w"))
        p.get(k("w"))
        other.set(k("w"), "theirs")
        p.multi()
        p.set(k("w"), "mine")
        t.raises("exec after a conflict", WatchError, p.execute)
    t.check("their write stands", r.get(k("w")), b"theirs")

    with r.pipeline() as p:
        p.watch(k("w"))
        p.unwatch()
        other.set(k("w"), "again")
        p.multi()
        p.set(k("w"), "mine")
        t.check("exec after unwatch", p.execute(), [True])
    t.check("after unwatch", r.get(k("w")), b"mine")

    # A watched key deleted by someone else counts as modified.
    with r.pipeline() as p:
        p.watch(k("w"))
        other.delete(k("w"))
        p.multi()
        p.set(k("w"), "mine")
        t.raises("exec after a delete", WatchError, p.execute)


def section_dump(r, k, t, args):
    t.check("set", r.set(k("s"), "hello"), True)
    payload = r.dump(k("s"))
    t.check_that("dump is a payload", payload, lambda p: isinstance(p, bytes) and len(p) > 10)
    t.check("dump missing", r.dump(k("missing")), None)
    t.record("restore", r.restore(k("copy"), 0, payload))
    t.check("get restored", r.get(k("copy")), b"hello")
    t.check("ttl of restored", r.ttl(k("copy")), -1)
    t.raises("restore onto a busy key", ResponseError, r.restore, k("copy"), 0, payload)
    t.record("restore replace with a ttl", r.restore(k("copy"), 5000, payload, replace=True))
    t.check_that("pttl", r.pttl(k("copy")), lambda ms: 3000 < ms <= 5000)
    at = int(time.time() * 1000) + 100_000
    t.record("restore absttl", r.restore(k("abs"), at, payload, absttl=True))
    t.check_that("pexpiretime of absttl", r.pexpiretime(k("abs")), lambda v: v == at)
    past = int(time.time() * 1000) - 1000
    t.record("restore absttl in the past", r.restore(k("abs"), past, payload, absttl=True, replace=True))
    t.check("gone after a past absttl", r.exists(k("abs")), 0)
    t.record("restore idletime", r.restore(k("idle"), 0, payload, idletime=10))
    t.record("restore frequency", r.restore(k("freq"), 0, payload, frequency=5))
    t.raises("bad payload", ResponseError, r.restore, k("bad"), 0, b"garbage")
    damaged = payload[:-1] + bytes([payload[-1] ^ 1])
    t.raises("damaged checksum", ResponseError, r.restore, k("bad"), 0, damaged)
    t.raises("negative ttl", ResponseError, r.restore, k("bad"), -1, payload)
    t.raises("frequency out of range", ResponseError, r.restore, k("bad"), 0, payload, frequency=256)
    t.check("set an integer", r.set(k("n"), 12345), True)
    t.record("restore an integer", r.restore(k("n2"), 0, r.dump(k("n"))))
    t.check("incr the restored integer", r.incr(k("n2")), 12346)
    long = b"abc" * 1000
    t.check("set a long value", r.set(k("long"), long), True)
    t.record("restore a long value", r.restore(k("long2"), 0, r.dump(k("long"))))
    t.check("get the long value", r.get(k("long2")), long)
    # Redis 7.0's DUMP of 100 x "a": LZF-compressed, RDB version 10.
    lzf = b"\x00\xc3\t@d\x01aa\xe0W\x00\x01aa\n\x00\xe8\xa3\xb5\x07\xb0m\xf2q"
    t.record("restore a payload of redis-server 7.0", r.restore(k("lzf"), 0, lzf))
    t.check("get it", r.get(k("lzf")), b"a" * 100)


SECTIONS = {
    "handshake": section_handshake,
    "basic": section_basic,
    "set_options": section_set_options,
    "pipeline": section_pipeline,
    "transaction": section_transaction,
    "scan": section_scan,
    "lock": section_lock,
    "watch": section_watch,
    "dump": section_dump,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--protocol", choices=["2", "3", "default"], required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--section", choices=sorted(SECTIONS), required=True)
    ap.add_argument("--server", default="server")
    args = ap.parse_args()
    t = Transcript(args.server)
    r = client(args)
    print(f"redis-py {redis.__version__}, protocol {args.protocol}, section {args.section}, server {args.server}", flush=True)
    SECTIONS[args.section](r, lambda name: f"{args.prefix}{name}", t, args)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
