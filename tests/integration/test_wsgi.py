#!/usr/bin/python3
"""Integration tests for knit-wsgi (issue 17).

Starts build/tools/knit-wsgi/knit-wsgi on 127.0.0.1 (kernel-chosen ports) with
the applications in wsgi_apps/ (PEP 3333 routes under wsgiref.validate, rule
breakers, a Flask application from Debian's python3-flask) and drives it with
http.client and raw sockets; the Python manhole with its line protocol. Each
server is stopped by the test (SIGTERM, then a bounded wait). Prints one line
per case and a final "N passed, N failed" line; exits non-zero on failure.

Environment: KNIT_BUILD (build directory, default ./build), KNIT_TOP.
"""
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bounded import WaitTimeout, join, readline, recv_until, wait_proc  # noqa: E402

TOP = os.environ.get("KNIT_TOP", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
WSGI = os.path.join(BUILD, "tools", "knit-wsgi", "knit-wsgi")
APPS = os.path.join(TOP, "tests", "integration", "wsgi_apps")
TIMEOUT = 30.0
MB = 1024 * 1024

passed = failed = 0


def case(name):
    def wrap(fn):
        fn.case_name = name
        return fn
    return wrap


class Server:
    """One knit-wsgi process; its log (stderr) captured to a file."""

    def __init__(self, workdir, name, *args, http="tcp:0:interface=127.0.0.1"):
        self.err_path = os.path.join(workdir, name + ".log")
        self.err = open(self.err_path, "w")
        env = dict(os.environ, WSGI_TEST_DIR=workdir)
        if "ASAN_OPTIONS" in env:
            # ASan's quarantine (256 MB) keeps freed memory resident: the RSS
            # bounds below would measure it instead of the server's buffers
            env["ASAN_OPTIONS"] += ":quarantine_size_mb=8"

        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [WSGI, "--http=" + http, "--pythonpath=" + APPS] + list(args),
            cwd=workdir, stdout=subprocess.PIPE, stderr=self.err, text=True, env=env)
        line = readline(self.proc.stdout, TIMEOUT, "knit-wsgi's 'serving ... (port N' line")
        m = re.search(r"\(port (\d+)", line or "")
        if not m:
            raise RuntimeError("knit-wsgi did not start: %r %s" % (line, self.log()))
        self.port = int(m.group(1))

    def log(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path) as f:
            return f.read()

    def conn(self, timeout=TIMEOUT):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path, method="GET", body=None, headers=None):
        c = self.conn()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, expect=0, signal_it=True):
        if signal_it and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = wait_proc(self.proc, TIMEOUT, "knit-wsgi to exit after SIGTERM")
        log = self.log()
        self.err.close()
        assert rc == expect, "exit status %s, wanted %s; log:\n%s" % (rc, expect, log)


# ---- PEP 3333 under wsgiref.validate ------------------------------------------------

@case("environ: CGI variables, wsgi.* flags, headers, --mount")
def t_environ(s, m):
    st, _, body = m.get("/app/v/environ/x%20y?a=1&b=2", headers={
        "X-Custom": "v1", "Content-Type": "text/x-test"})
    assert st == 200, (st, body)
    e = json.loads(body)
    want = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/app", "PATH_INFO": "/v/environ/x y",
            "QUERY_STRING": "a=1&b=2", "CONTENT_TYPE": "text/x-test", "HTTP_X_CUSTOM": "v1",
            "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(m.port),
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False}
    for k, v in want.items():
        assert e.get(k) == v, "%s: %r, wanted %r" % (k, e.get(k), v)
    assert list(e["wsgi.version"]) == [1, 0]
    assert "HTTP_CONTENT_TYPE" not in e
    st, _, _ = m.get("/elsewhere")
    assert st == 404, st


@case("wsgi.input: read(n), readline(n), readlines, iteration; POST echo")
def t_input(s, m):
    st, _, body = s.get("/v/echo", "POST", b"hello body")
    assert (st, body) == (200, b"hello body"), (st, body)
    st, _, body = s.get("/v/echo?lines", "POST", b"a\nbb\nccc")
    assert body == b"<a><bb><ccc>", body
    st, _, body = s.get("/v/echo?readline", "POST", b"first\nsecond\nthird\nfourth")
    assert json.loads(body) == ["first\n", "sec", ["ond\n", "third\n", "fourth"]], body


@case("iterable streamed (chunked), empty pieces skipped, close() called")
def t_stream(s, m):
    before = int(s.get("/closed")[2])
    st, h, body = s.get("/v/stream")
    assert st == 200 and body == b"one\ntwo\nthree\n", (st, body)
    assert h.get("Transfer-Encoding") == "chunked", h
    assert int(s.get("/closed")[2]) == before + 1


@case("write() callable, then the returned iterable; HEAD has no body")
def t_write(s, m):
    st, _, body = s.get("/v/write")
    assert (st, body) == (200, b"written then returned\n"), (st, body)
    st, h, body = s.get("/v/environ", "HEAD")
    assert st == 200 and body == b"" and int(h["Content-Length"]) > 0, (st, h, body)


@case("wsgi.file_wrapper sends a file (1 MB) intact")
def t_file(s, m):
    data = os.urandom(MB)
    with open(os.path.join(s.workdir, "file.bin"), "wb") as f:
        f.write(data)
    st, h, body = s.get("/v/file")
    assert st == 200 and body == data, (st, len(body))
    # unwrapped (the validator wraps the result), the server sends it from C,
    # with the file's length
    st, h, body = s.get("/file")
    assert st == 200 and body == data, (st, len(body))
    assert h.get("Content-Length") == str(MB), h


@case("wsgi.errors lines go to knit's log")
def t_errors(s, m):
    st, _, body = s.get("/v/errors")
    assert st == 200, st
    deadline = time.time() + TIMEOUT
    while "a line for the log from the app" not in s.log():
        assert time.time() < deadline, "waited for the wsgi.errors line in the log"
        time.sleep(0.05)


# ---- errors -------------------------------------------------------------------------

@case("exception before start_response: 500, traceback in the log, not in the body")
def t_raise_before(s, m):
    st, _, body = s.get("/raise-before")
    assert st == 500 and b"Traceback" not in body, (st, body)
    assert "raised before start_response" in s.log()


@case("--debug puts the traceback in the 500 body")
def t_debug(s, m):
    st, _, body = m.get("/app/raise-after-start")
    assert st == 500 and b"raised after start_response" in body, (st, body)


@case("exception after start_response, before the body: 500")
def t_raise_after_start(s, m):
    st, _, body = s.get("/raise-after-start")
    assert st == 500 and b"Traceback" not in body, (st, body)


@case("exception mid-stream: the answer is broken off, never ends cleanly; close() called")
def t_mid_stream(s, m):
    before = int(s.get("/closed")[2])
    c = s.conn()
    c.request("GET", "/raise-mid-stream")
    r = c.getresponse()
    assert r.status == 200
    try:
        body = r.read()
        raise AssertionError("a broken answer read as whole: %r" % body)
    except http.client.IncompleteRead as e:
        assert e.partial.startswith(b"first piece\nsecond\n"), e.partial
    c.close()
    assert int(s.get("/closed")[2]) == before + 1
    assert "failed while streaming" in s.log()


@case("start_response(exc_info) after the head went out re-raises; before, replaces")
def t_exc_info(s, m):
    c = s.conn()
    c.request("GET", "/exc-info-late")
    r = c.getresponse()
    try:
        r.read()
        raise AssertionError("a broken answer read as whole")
    except http.client.IncompleteRead as e:
        assert e.partial == b"head is out\n", e.partial
    c.close()
    assert "late failure" in s.log()
    st, _, body = s.get("/exc-info-early")
    assert (st, body) == (503, b"replaced answer\n"), (st, body)


@case("invalid header value (CR/LF) or name: 500, logged, never sent")
def t_bad_header(s, m):
    for path, needle in (("/bad-header", "invalid response header value"),
                         ("/bad-header-name", "invalid response header name")):
        st, h, body = s.get(path)
        assert st == 500 and "Injected" not in h and "X-Evil" not in h, (st, h)
        assert b"must not be sent" not in body
        assert needle in s.log(), needle


# ---- streaming, load ----------------------------------------------------------------

@case("100 MB response to a slow reader: streamed with bounded server RSS")
def t_big_slow(s, m):
    base = s.rss_kb()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    got, peak = 0, 0
    t0 = time.time()
    # slow for a while: the worker must block, the server must not buffer
    while time.time() - t0 < 1.5:
        d = sock.recv(16384)
        assert d, "connection closed early"
        got += len(d)
        peak = max(peak, s.rss_kb())
        time.sleep(0.01)
    while True:
        d = sock.recv(1 << 20)
        if not d:
            break
        got += len(d)
        if got % (8 * MB) < (1 << 20):
            peak = max(peak, s.rss_kb())
        if got >= 100 * MB:
            break
    sock.close()
    assert got >= 100 * MB, got
    assert peak - base < 48 * 1024, "server RSS grew by %d KB while streaming 100 MB" % (
        peak - base)


@case("100 MB upload read in 64 KB pieces: right length and digest, bounded RSS")
def t_upload(s, m):
    base = s.rss_kb()
    piece = bytes(range(256)) * 256
    total = 100 * MB
    h = hashlib.sha256()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
    sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    peak, sent = 0, 0
    while sent < total:
        sock.sendall(piece)
        h.update(piece)
        sent += len(piece)
        if sent % (8 * MB) == 0:
            peak = max(peak, s.rss_kb())
    resp = b""
    want = ("%d %s\n" % (total, h.hexdigest())).encode()
    while want not in resp and len(resp) < 4096:
        resp += recv_until(sock, b"\n", TIMEOUT, "the upload's answer")
    sock.close()
    assert ("%d %s" % (total, h.hexdigest())).encode() in resp, resp
    assert peak - base < 48 * 1024, "server RSS grew by %d KB during a 100 MB upload" % (
        peak - base)


@case("64 concurrent requests on 16 threads: all answered, 16 in the app at once")
def t_concurrent(s, m):
    results = []

    def one():
        try:
            results.append(s.get("/sleep?0.3")[0])
        except Exception as e:  # noqa: BLE001
            results.append(repr(e))
    ts = [threading.Thread(target=one) for _ in range(64)]
    for t in ts:
        t.start()
    for t in ts:
        join(t, TIMEOUT, "a concurrent request")
    assert results.count(200) == 64, results
    assert int(s.get("/active-max")[2]) == 16


@case("knit module: counter on /metrics, knit.log, call_later on the pool")
def t_knit_module(s, m):
    s.get("/knit")
    deadline = time.time() + TIMEOUT
    while json.loads(s.get("/knit")[2])["later"] < 1:
        assert time.time() < deadline, "waited for knit.call_later to run"
        time.sleep(0.05)
    st, _, body = s.get("/metrics")
    assert st == 200 and re.search(rb"^test_app_hits_total \d+", body, re.M), body[:500]
    assert b"knit_wsgi_app_errors_total" in body
    assert "the app used knit.log" in s.log()


# ---- Flask ---------------------------------------------------------------------------

@case("Flask (python3-flask): routes, JSON, form + file upload, streaming, error handler")
def t_flask(s, m, f):
    st, _, body = f.get("/hello/knit")
    assert (st, body) == (200, b"hello knit"), (st, body)
    st, _, body = f.get("/json", "POST", json.dumps([1, 2, 3]),
                        {"Content-Type": "application/json"})
    assert st == 200 and json.loads(body) == {"got": [1, 2, 3], "n": 3}, body
    boundary = "xXxBoUnDaRyxXx"
    filedata = b"\x89PNG....." + os.urandom(200000)
    mp = (("--%s\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n"
           "--%s\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.png\"\r\n"
           "Content-Type: image/png\r\n\r\n") % (boundary, boundary)).encode() + filedata + \
        ("\r\n--%s--\r\n" % boundary).encode()
    st, _, body = f.get("/form", "POST", mp,
                        {"Content-Type": "multipart/form-data; boundary=" + boundary})
    assert st == 200, (st, body)
    assert json.loads(body) == {"field": "value", "filename": "a.png",
                                "size": len(filedata), "head": "\x89PNG...."}, body
    st, h, body = f.get("/stream")
    assert st == 200 and body == b"".join(b"line %d\n" % i for i in range(5)), body
    assert h.get("Transfer-Encoding") == "chunked"
    st, _, body = f.get("/teapot")
    assert st == 418 and json.loads(body)["error"] == "teapot", (st, body)
    st, _, _ = f.get("/nope")
    assert st == 404


# ---- overload, timeouts, drain, manhole, bad --app ------------------------------------

def t_queue_full(workdir):
    s = Server(workdir, "queue", "--app=apps:application", "--threads=1", "--queue=1")
    try:
        out = []

        def one():
            out.append(s.get("/sleep?1.0"))
        ts = [threading.Thread(target=one) for _ in range(4)]
        for t in ts:
            t.start()
            time.sleep(0.1)
        for t in ts:
            join(t, TIMEOUT, "a request to the full queue")
        codes = sorted(r[0] for r in out)
        assert codes.count(200) == 2 and codes.count(503) == 2, codes
        busy = [r for r in out if r[0] == 503][0]
        assert busy[1].get("Retry-After") == "1", busy[1]
    finally:
        s.stop()


def t_request_timeout(workdir):
    s = Server(workdir, "timeout", "--app=apps:application", "--request-timeout=300ms")
    try:
        st, _, body = s.get("/spin")
        assert st == 504, (st, body)
        log = s.log()
        assert "request timed out" in log and "stuck_in_a_loop" in log, log[-2000:]
        st, _, _ = s.get("/v/environ")  # the worker is free again
        assert st == 200
    finally:
        s.stop()


def t_drain(workdir):
    s = Server(workdir, "drain", "--app=apps:application", "--threads=4")
    out = []

    def one():
        try:
            out.append(s.get("/sleep?1.0")[:3:2])
        except Exception as e:  # noqa: BLE001
            out.append(repr(e))
    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    deadline = time.time() + TIMEOUT
    while "4" != s.get("/active-max")[2].decode():
        assert time.time() < deadline, "waited for 4 requests in the app"
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGTERM)
    for t in ts:
        join(t, TIMEOUT, "an in-flight request during the drain")
    s.stop(expect=0, signal_it=False)
    assert out == [(200, b"slept\n")] * 4, out


class Manhole:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.buf = b""
        self.until(b"+ready\n", "the manhole's greeting")

    def until(self, marker, what):
        while marker not in self.buf:
            self.buf += recv_until(self.sock, b"\n", TIMEOUT, what)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out.decode()

    def status(self, what):
        """Read up to the next +ok/+more/+error line; (output lines, status)."""
        lines = []
        while True:
            line = self.until(b"\n", what)
            if line.startswith("+"):
                return "".join(lines), line[1:].strip()
            lines.append(line[1:] if line.startswith("|") else line)

    def send(self, line, what):
        self.sock.sendall(line.encode() + b"\n")
        return self.status(what)


def t_manhole(workdir):
    path = os.path.join(workdir, "m.sock")
    s = Server(workdir, "manhole", "--app=apps:application", "--manhole=unix:" + path)
    try:
        deadline = time.time() + TIMEOUT
        while not os.path.exists(path):
            assert time.time() < deadline, "waited for the manhole socket"
            time.sleep(0.05)
        mh = Manhole(path)
        out, st = mh.send("6 * 7", "6 * 7")
        assert (out, st) == ("42\n", "ok"), (out, st)
        out, st = mh.send("_ + 1", "_ + 1")
        assert (out, st) == ("43\n", "ok"), (out, st)
        assert mh.send("def f(x):", "def")[1] == "more"
        assert mh.send("    return x * 2", "body")[1] == "more"
        assert mh.send("", "end of def")[1] == "ok"
        assert mh.send("f(21)", "f(21)") == ("42\n", "ok")
        out, st = mh.send("1/0", "1/0")
        assert st == "error" and "ZeroDivisionError" in out, (out, st)
        out, st = mh.send("sorted(knit.stats())", "knit.stats()")
        assert st == "ok" and "'pool'" in out and "'http'" in out, out
        out, st = mh.send("knit.flags()['threads']", "knit.flags()")
        assert (out, st) == ("'16'\n", "ok"), (out, st)
        out, st = mh.send("len(knit.connections()) >= 1", "knit.connections()")
        assert (out, st) == ("True\n", "ok"), (out, st)
        out, st = mh.send("import apps; apps.closed['n'] >= 0", "the app's module")
        assert (out, st) == ("True\n", "ok"), (out, st)
        # Ctrl-C interrupts a busy loop in the evaluating thread
        assert mh.send("while True: pass", "while: continuation")[1] == "more"
        mh.sock.sendall(b"\n")
        time.sleep(0.3)
        # requests are still served while the manhole spins (the GIL is shared)
        assert s.get("/v/environ")[0] == 200
        mh.sock.sendall(b"\x03\n")
        out, st = mh.status("KeyboardInterrupt after Ctrl-C")
        assert st == "error" and "KeyboardInterrupt" in out, (out, st)
        assert mh.send("2 + 2", "after the interrupt") == ("4\n", "ok")
        mh.sock.close()
        # knit-manhole speaks to the Python manhole as to the Lua one
        client = os.path.join(BUILD, "tools", "knit-manhole", "knit-manhole")
        p = subprocess.run([client, path, "-e", "import sys; sys.version_info[:2]"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0 and p.stdout == "(3, 11)\n", (p.returncode, p.stdout, p.stderr)
        p = subprocess.run([client, path, "-e", "1/0"], capture_output=True, text=True,
                           timeout=TIMEOUT)
        assert p.returncode == 1 and "ZeroDivisionError" in p.stdout + p.stderr, p
    finally:
        s.stop()


def t_proxy_and_tls(workdir):
    import ssl
    s = Server(workdir, "proxy", "--app=apps:application",
               http="haproxy:tcp:0:interface=127.0.0.1")
    try:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
        sock.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 80\r\n"
                     b"GET /v/environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = b""
        while True:
            d = sock.recv(65536)
            if not d:
                break
            resp += d
        sock.close()
        e = json.loads(resp.split(b"\r\n\r\n", 1)[1])
        assert (e["REMOTE_ADDR"], e["REMOTE_PORT"]) == ("203.0.113.7", "4242"), e
    finally:
        s.stop()
    key, cert = os.path.join(workdir, "k.pem"), os.path.join(workdir, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True,
                   timeout=TIMEOUT)
    s = Server(workdir, "tls", "--app=apps:application",
               http="ssl:0:privateKey=%s:certKey=%s:interface=127.0.0.1" % (key, cert))
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", s.port, timeout=TIMEOUT, context=ctx)
        c.request("GET", "/v/environ")
        r = c.getresponse()
        e = json.loads(r.read())
        c.close()
        assert e["wsgi.url_scheme"] == "https", e
    finally:
        s.stop()


def t_bad_app(workdir):
    with open(os.path.join(workdir, "broken.py"), "w") as f:
        f.write("def application(:\n")
    with open(os.path.join(workdir, "notcallable.py"), "w") as f:
        f.write("application = 42\n")
    for args, needle in ((["--app=no_such_module_xyz:app"], "No module named"),
                         (["--app=apps:no_such_attr"], "no attribute 'no_such_attr'"),
                         (["--app=broken.py"], "SyntaxError"),
                         (["--app=notcallable.py"], "not a callable"),
                         (["--app=missing.py"], "No such file"),
                         (["--app="], "--app"),
                         (["--app=apps:application", "--threads=0"], "--threads"),
                         (["--app=apps:application", "--mount=api/"], "--mount")):
        p = subprocess.run([WSGI, "--http=tcp:0:interface=127.0.0.1", "--pythonpath=" + APPS]
                           + args, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert needle in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr


def main():
    global passed, failed
    if not os.path.exists(WSGI):
        print("knit-wsgi not built (libpython3.11-dev missing?): skipped")
        print("0 passed, 0 failed")
        return 0
    workdir = tempfile.mkdtemp(prefix="knit-wsgi-test-")
    servers = []

    def run(name, fn, *a):
        global passed, failed
        try:
            fn(*a)
            passed += 1
            print("ok   %s" % name)
        except Exception:  # noqa: BLE001
            failed += 1
            print("FAIL %s" % name)
            traceback.print_exc()
            for srv in servers:
                print("---- log of %s:\n%s" % (srv.err_path, srv.log()[-3000:]))
        sys.stdout.flush()

    try:
        s = Server(workdir, "main", "--app=apps:application")
        s.workdir = workdir
        mnt = Server(workdir, "mount", "--app=apps", "--mount=/app", "--debug")
        fl = Server(workdir, "flask", "--app=flask_app:app", "--threads=4")
        servers[:] = [s, mnt, fl]
        for fn in (t_environ, t_input, t_stream, t_write, t_file, t_errors, t_raise_before,
                   t_debug, t_raise_after_start, t_mid_stream, t_exc_info, t_bad_header,
                   t_big_slow, t_upload, t_concurrent, t_knit_module):
            run(fn.case_name, fn, s, mnt)
        run(t_flask.case_name, t_flask, s, mnt, fl)
        for srv in (s, mnt, fl):
            run("clean stop after SIGTERM (%s)" % os.path.basename(srv.err_path), srv.stop)
        servers.clear()
    except Exception:  # noqa: BLE001
        failed += 1
        print("FAIL starting the servers")
        traceback.print_exc()
    run("full queue: 503 with Retry-After", t_queue_full, workdir)
    run("--request-timeout: 504 and the stuck request's Python stack in the log",
        t_request_timeout, workdir)
    run("SIGTERM drains the requests in flight, exit 0", t_drain, workdir)
    run("Python manhole: evaluate, _, multi-line, tracebacks, bindings, Ctrl-C", t_manhole,
        workdir)
    run("REMOTE_ADDR from the PROXY protocol; wsgi.url_scheme https behind ssl:",
        t_proxy_and_tls, workdir)
    run("bad --app and flag values: a clear message, exit 2", t_bad_app, workdir)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except WaitTimeout as e:
        print("FAIL: %s" % e)
        print("%d passed, %d failed" % (passed, failed + 1))
        sys.exit(1)
