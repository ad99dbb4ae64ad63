"""An interactive redis-cli session on a pseudo-terminal, the way a person uses it.

redis-cli only turns on line editing and hints (linenoise) when stdin is a terminal, and only then asks the
server for `COMMAND DOCS` (falling back to its built-in help when that fails). This script types into it,
waits for what a person would see, and exits non-zero with the whole screen text when something does not
show up in time.

usage: redis_cli_pty.py PORT KEY
"""

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time

STEP_TIMEOUT = 20
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Session:
    def __init__(self, port):
        self.port = port
        pid, fd = pty.fork()
        if pid == 0:
            # A known size: with a zero width linenoise would ask the terminal for it and wait for an answer.
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
            os.environ["TERM"] = "xterm"
            os.environ.pop("NO_COLOR", None)
            os.execvp("redis-cli", ["redis-cli", "-h", "127.0.0.1", "-p", str(port)])
        self.pid, self.fd = pid, fd
        self.raw = b""  # everything the terminal showed
        self.seen = 0  # screen text (escapes removed) already matched

    def text(self):
        return ANSI.sub(b"", self.raw).replace(b"\r", b"").decode("utf-8", "replace")

    def fail(self, why):
        print(f"FAILED: {why}\n--- screen (escape sequences removed) ---\n{self.text()}\n--- raw ---\n{self.raw!r}")
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        sys.exit(1)

    def read_some(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], left)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the other side closed
            chunk = b""
        if not chunk:
            raise EOFError
        self.raw += chunk
        return True

    def expect(self, pattern, what):
        deadline = time.monotonic() + STEP_TIMEOUT
        regex = re.compile(pattern)
        while True:
            m = regex.search(self.text(), self.seen)
            if m:
                self.seen = m.end()
                print(f"saw {what}: {m.group(0)!r}", flush=True)
                return m
            try:
                if not self.read_some(deadline):
                    self.fail(f"no {what} ({pattern!r}) within {STEP_TIMEOUT} s")
            except EOFError:
                self.fail(f"redis-cli exited while waiting for {what} ({pattern!r})")

    def type(self, keys):
        # One key at a time, as typed: linenoise redraws the line (and its hint) after each.
        for ch in keys:
            os.write(self.fd, ch.encode())
            time.sleep(0.005)

    def wait_exit(self):
        deadline = time.monotonic() + STEP_TIMEOUT
        try:
            while self.read_some(deadline):
                pass
        except EOFError:
            pass
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        self.fail("redis-cli did not exit after quit")


def main():
    port, key = int(sys.argv[1]), sys.argv[2]
    s = Session(port)
    prompt = re.escape(f"127.0.0.1:{port}> ")
    s.expect(prompt, "the prompt")
    s.type("set ")
    # The hint for SET, from COMMAND DOCS or redis-cli's built-in help: the arguments still to type.
    s.expect(r"set key value", "the SET hint")
    s.type(f"{key} hello\r")
    s.expect(r"\nOK\n", "OK")
    s.expect(prompt, "the prompt")
    s.type(f"get {key}\r")
    s.expect(r'\n"hello"\n', "the value")
    # Keys typed before the next prompt can reach redis-cli before it is reading them again: wait.
    s.expect(prompt, "the prompt")
    s.type(f"incr {key}\r")
    s.expect(r"\(error\) ERR value is not an integer or out of range", "the error")
    s.expect(prompt, "the prompt")
    s.type(f"incr {key}:n\r")
    s.expect(r"\(integer\) 1\n", "the integer")
    s.expect(prompt, "the prompt")
    s.type(f"mget {key} {key}:missing\r")
    s.expect(r'1\) "hello"\n2\) \(nil\)\n', "the array")
    s.expect(prompt, "the prompt")
    s.type("ping\r")
    s.expect(r"\nPONG\n", "PONG")
    s.expect(prompt, "the prompt")
    s.type("incr")
    s.expect(r"incr key", "the INCR hint")
    s.type("\x15")  # ^U: clear the line
    s.type("quit\r")
    code = s.wait_exit()
    if code != 0:
        s.fail(f"redis-cli exited with {code}")
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
