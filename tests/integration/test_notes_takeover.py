#!/usr/bin/python3
"""Zero-downtime restart without a balancer (issue 14): tools/knit-takeover
starts a new knit-notes on the running one's listening sockets (HTTP and
Thrift, duplicated with pidfd_getfd and passed as fd:3 / fd:4), waits for
its READY=1, then SIGTERMs the old one, which drains and exits 0. A client
opening a new connection for every request the whole time sees no refused
connection and no failed request, before and after the old one exited. SIGTERM to knit-takeover reaches the
new process, which exits 0. Skipped where pidfd_getfd is not allowed.
Prints "N passed, N failed".
"""
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

TOP = os.environ.get("KNIT_TOP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
BIN = os.path.join(BUILD, "examples", "notes", "knit-notes")
TOOL = os.path.join(TOP, "tools", "knit-takeover", "knit-takeover")
TIMEOUT = 30
results = []


def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + (("  (" + str(detail)[:3000] + ")")
                                                   if detail and not cond else ""), flush=True)
    return bool(cond)


def wait_for(what, fn, timeout=TIMEOUT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out after %g s waiting for %s" % (timeout, what))


def read(path):
    with open(path) as f:
        return f.read()


def main():
    if not os.access(BIN, os.X_OK):
        print("SKIP: %s is not built\n0 passed, 0 failed" % BIN)
        return 0
    work = tempfile.mkdtemp(prefix="knit-takeover-")
    procs = []
    try:
        run(work, procs)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        check("unexpected error: %s" % e, False)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(TIMEOUT)
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


def run(work, procs):
    db = "--db=sqlite:" + os.path.join(work, "notes.db")
    old_err = os.path.join(work, "old.err")
    old = subprocess.Popen([BIN, "--http=tcp:0:interface=127.0.0.1", "--thrift=tcp:0:interface=127.0.0.1",
                            db, "--manhole=off", "--drain-grace=1s"],
                           stdout=open(os.path.join(work, "old.out"), "w"), stderr=open(old_err, "w"))
    procs.append(old)
    m = wait_for("the old process's ports", lambda: re.search(
        r"http://127\.0\.0\.1:(\d+) and thrift on 127\.0\.0\.1:(\d+)", read(os.path.join(work, "old.out"))))
    port, tport = int(m.group(1)), int(m.group(2))

    stop = threading.Event()
    stats = {"ok": 0, "fail": []}

    def client():  # a new connection per request: any refusal shows
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    stats["ok"] += 1
                else:
                    stats["fail"].append(r.status)
            except (OSError, http.client.HTTPException) as e:
                stats["fail"].append(repr(e))
    t = threading.Thread(target=client)
    t.start()
    try:
        wait_for("the client's first answers", lambda: stats["ok"] > 20)
        new_err = os.path.join(work, "new.err")
        tk = subprocess.Popen([TOOL, "--pid", str(old.pid), "--port", str(port), "--port", str(tport),
                               "--", BIN, "--http=fd:3", "--thrift=fd:4", db, "--manhole=off"],
                              stdout=open(os.path.join(work, "new.out"), "w"), stderr=open(new_err, "w"))
        procs.append(tk)
        time.sleep(0.5)
        if tk.poll() is not None and "pidfd_getfd" in read(new_err):
            print("SKIP: " + read(new_err).strip())
            return
        rc = old.wait(TIMEOUT)
        check("the old process drained and exited 0", rc == 0, read(old_err)[-2000:])
        before = stats["ok"]
        wait_for("answers after the old process exited", lambda: stats["ok"] > before + 20)
    finally:
        stop.set()
        t.join(TIMEOUT)
    check("no refused connection, no failed request during the takeover (%d answered)" % stats["ok"],
          not stats["fail"], stats["fail"][:10])
    check("knit-takeover logged the hand-over", "ready on the inherited sockets" in read(new_err),
          read(new_err)[-2000:])
    with socket.create_connection(("127.0.0.1", tport), timeout=10):
        pass
    check("the Thrift port is served by the new process", tk.poll() is None)
    tk.send_signal(signal.SIGTERM)
    rc = tk.wait(TIMEOUT)
    check("SIGTERM to knit-takeover stops the new process: exit 0", rc == 0, read(new_err)[-2000:])


if __name__ == "__main__":
    sys.exit(main())
