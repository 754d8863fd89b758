"""The applications bench/wsgi/run serves with every WSGI server.

hello  Flask (Debian python3-flask): GET / answers "Hello, World!".
sleep  plain WSGI: time.sleep(0.001), then "Hello, World!" (16 threads x
       1 ms bound the rate at 16,000 requests/s).
"""
import ctypes
import time

from flask import Flask

# 1 ns timer slack (the kernel's default 50 us stretches every 1 ms sleep by
# up to 5%); set at import, before any server starts its threads.
ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK

hello = Flask(__name__)


@hello.route("/")
def index():
    return "Hello, World!"


def sleep(environ, start_response):
    time.sleep(0.001)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
