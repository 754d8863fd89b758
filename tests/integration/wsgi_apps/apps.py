"""WSGI applications for tests/integration/test_wsgi.py (knit-wsgi, issue 17).

`application` dispatches on the first path segment. Routes under /v/ are
wrapped in wsgiref.validate.validator, which asserts PEP 3333 compliance of
both sides on every call (a violation raises, and the test sees a 500).
"""
import hashlib
import json
import os
import sys
import threading
import time
from wsgiref.validate import validator

import knit

closed = {"n": 0}
active = {"now": 0, "max": 0}
lock = threading.Lock()
hits = knit.counter("test_app_hits_total", "Requests the test app saw.")
later_runs = {"n": 0}


class Closing:
    """An iterable whose close() is counted (PEP 3333: always called)."""

    def __init__(self, pieces, fail_at=None):
        self.pieces, self.fail_at = pieces, fail_at

    def __iter__(self):
        for i, p in enumerate(self.pieces):
            if i == self.fail_at:
                raise RuntimeError("failed while streaming")
            yield p

    def close(self):
        with lock:
            closed["n"] += 1


def text(start_response, body, status="200 OK", ctype="text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def environ_app(environ, start_response):
    out = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
    return text(start_response, json.dumps(out).encode(), ctype="application/json")


def echo_app(environ, start_response):
    inp = environ["wsgi.input"]
    mode = environ.get("QUERY_STRING", "")
    if mode == "lines":
        body = b"".join(b"<%s>" % l.rstrip(b"\n") for l in inp)
    elif mode == "readline":
        first = inp.readline()
        second = inp.readline(3)
        rest = inp.readlines()
        body = json.dumps([first.decode(), second.decode(), [r.decode() for r in rest]]).encode()
    else:
        body = inp.read(int(environ.get("CONTENT_LENGTH") or 0) or -1)
    return text(start_response, body)


def stream_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing([b"", b"one\n", b"two\n", b"three\n"])


def write_app(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"then returned\n"]


def file_app(environ, start_response):
    path = os.path.join(os.environ["WSGI_TEST_DIR"], "file.bin")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)


def errors_app(environ, start_response):
    environ["wsgi.errors"].write("a line for the log from the app\n")
    environ["wsgi.errors"].flush()
    return text(start_response, b"logged\n")


routes_valid = {
    "environ": environ_app,
    "echo": echo_app,
    "stream": stream_app,
    "write": write_app,
    "file": file_app,
    "errors": errors_app,
}


# ---- routes that break the rules on purpose (not validated) -------------------

def raise_before(environ, start_response):
    raise ValueError("raised before start_response")


def raise_after_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise ValueError("raised after start_response, before any body")


def raise_mid_stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing([b"first piece\n", b"second\n", b"never\n"], fail_at=2)


def exc_info_late(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"head is out\n")
    try:
        raise KeyError("late failure")
    except KeyError:
        start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"not reached\n"]


def exc_info_early(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise KeyError("early failure")
    except KeyError:
        start_response("503 Try Later", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced answer\n"]


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Evil", "a\r\nInjected: yes")])
    return [b"must not be sent\n"]


def bad_header_name(environ, start_response):
    start_response("200 OK", [("Bad Name", "x")])
    return [b"must not be sent\n"]


def closed_count(environ, start_response):
    return text(start_response, str(closed["n"]).encode())


def big_app(environ, start_response):
    """100 MB in 64 KB pieces, produced as they are sent."""
    total = int(environ.get("QUERY_STRING") or 100 * 1024 * 1024)
    piece = b"x" * 65536
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(total))])

    def gen():
        left = total
        while left > 0:
            n = min(left, len(piece))
            yield piece[:n]
            left -= n
    return Closing(gen())


def upload_app(environ, start_response):
    """Read the body in 64 KB pieces; answer its length and sha256."""
    h, n = hashlib.sha256(), 0
    inp = environ["wsgi.input"]
    while True:
        b = inp.read(65536)
        if not b:
            break
        h.update(b)
        n += len(b)
    return text(start_response, ("%d %s\n" % (n, h.hexdigest())).encode())


def sleep_app(environ, start_response):
    with lock:
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
    try:
        time.sleep(float(environ.get("QUERY_STRING") or 0.3))
    finally:
        with lock:
            active["now"] -= 1
    return text(start_response, b"slept\n")


def active_max(environ, start_response):
    return text(start_response, str(active["max"]).encode())


def spin_app(environ, start_response):
    def stuck_in_a_loop():
        while True:
            pass
    stuck_in_a_loop()


def knit_app(environ, start_response):
    hits.inc()
    knit.log("the app used knit.log")
    knit.call_later(0.01, lambda: later_runs.__setitem__("n", later_runs["n"] + 1))
    return text(start_response, json.dumps({"hits": hits.value, "later": later_runs["n"]}).encode())


routes_raw = {
    "raise-before": raise_before,
    "raise-after-start": raise_after_start,
    "raise-mid-stream": raise_mid_stream,
    "exc-info-late": exc_info_late,
    "exc-info-early": exc_info_early,
    "bad-header": bad_header,
    "bad-header-name": bad_header_name,
    "closed": closed_count,
    "big": big_app,
    "upload": upload_app,
    "sleep": sleep_app,
    "active-max": active_max,
    "spin": spin_app,
    "knit": knit_app,
    "file": file_app,
}


def application(environ, start_response):
    hits.inc()
    parts = environ["PATH_INFO"].split("/", 3)
    if len(parts) >= 3 and parts[1] == "v" and parts[2] in routes_valid:
        return validator(routes_valid[parts[2]])(environ, start_response)
    if len(parts) >= 2 and parts[1] in routes_raw:
        return routes_raw[parts[1]](environ, start_response)
    return text(start_response, b"no such test route\n", status="404 Not Found")
