# Shared helpers for knit's HTTP integration tests (imported by test_http*).
# Starts knit-hello on 127.0.0.1 with a kernel-chosen port and stops it.
import os
import signal
import socket
import subprocess
import time

from bounded import readline, wait_proc

BUILD = os.environ.get("KNIT_BUILD") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
HELLO = os.path.join(BUILD, "examples", "hello", "knit-hello")


class Server:
    def __init__(self, *args, endpoint="tcp:0:interface=127.0.0.1"):
        self.proc = subprocess.Popen(
            [HELLO, "--http=" + endpoint] + list(args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = readline(self.proc.stdout, 30, "knit-hello's \"listening on\" line")
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError("knit-hello did not start: %r %s" % (line, self.proc.stderr.read()))
        self.port = int(line.split()[2])

    def connect(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                wait_proc(self.proc, 20, "knit-hello after SIGKILL")
                return False
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if self.proc.poll() is None:
            self.proc.kill()
        self.check_stderr()

    def check_stderr(self):
        """Fail on sanitizer reports (ASan/UBSan/LSan builds) or a crash."""
        if self.proc.poll() is None:
            return
        err = self.proc.stderr.read()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer"):
            if marker in err:
                raise AssertionError("knit-hello reported:\n" + err[-3000:])
        if self.proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            raise AssertionError("knit-hello exited with %s:\n%s" % (self.proc.returncode, err[-2000:]))


def recv_response(sock, head_only=False):
    """Read one response from SOCK: (status, headers dict lower-case, body bytes,
    closed-after flag). Understands Content-Length, chunked and close-delimited."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise EOFError("connection closed before a response head: %r" % buf)
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers.setdefault(k.strip().lower(), v.strip())
    body = b""
    if head_only or status in (100, 204, 304) or 100 <= status < 200:
        return status, headers, b"", rest
    if "content-length" in headers:
        n = int(headers["content-length"])
        rest = bytearray(rest)  # bytes += bytes copies it all each time: quadratic
        while len(rest) < n:
            d = sock.recv(1 << 20)
            if not d:
                raise EOFError("short body")
            rest += d
        body, rest = bytes(rest[:n]), bytes(rest[n:])
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        rest = bytearray(rest)
        pos = 0
        while True:
            while rest.find(b"\r\n", pos) < 0:
                d = sock.recv(1 << 20)
                if not d:
                    raise EOFError("short chunk line")
                rest += d
            e = rest.find(b"\r\n", pos)
            size = int(bytes(rest[pos:e]).split(b";")[0], 16)
            pos = e + 2
            while len(rest) - pos < size + 2:
                d = sock.recv(1 << 20)
                if not d:
                    raise EOFError("short chunk")
                rest += d
            parts.append(bytes(rest[pos:pos + size]))
            pos += size + 2
            if pos > (1 << 20):  # drop what was parsed, keep memory flat
                del rest[:pos]
                pos = 0
            if size == 0:
                break
        body, rest = b"".join(parts), bytes(rest[pos:])
    else:
        rest = bytearray(rest)
        while True:
            d = sock.recv(65536)
            if not d:
                break
            rest += d
        body, rest = bytes(rest), b""
    return status, headers, body, rest


def is_closed(sock, wait=2.0):
    """True if the peer closes SOCK within WAIT seconds (reads and drops data)."""
    sock.settimeout(wait)
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        t0 = time.time()
        try:
            fn()
            self.passed += 1
            print("ok   %-40s %.2fs" % (name, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            self.failed += 1
            print("FAIL %-40s %s: %s" % (name, type(e).__name__, e), flush=True)

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 0 if self.failed == 0 else 1
