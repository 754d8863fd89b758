#!/usr/bin/python3
"""Integration tests for the manhole inside knit-notes (issue 9).

Starts build/examples/notes/knit-notes on a free 127.0.0.1 port in a
temporary directory (so the default manhole socket ./notes.manhole lands
there), creates notes over HTTP, then drives the manhole with
build/tools/knit-manhole/knit-manhole -e: the notes bindings (count, get,
expire_now — pool jobs returning Deferreds, printed by await()), pool.stats(),
loops(), flags.set with a bad value, the instruction budget interrupting
`while true do end` while HTTP keeps answering, and a SIGTERM stop that
removes the socket and exits 0. Also the --manhole flag: off, a refused IP
endpoint, ssh: validation.

Prints one line per case and a final "N passed, N failed" line; exits
non-zero on any failure. Environment: KNIT_BUILD (build directory, default
./build), KNIT_TOP.
"""
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback

TOP = os.environ.get("KNIT_TOP", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
BIN = os.path.join(BUILD, "examples", "notes", "knit-notes")
# The Thrift API (default port 9090) is tested by test_notes_thrift.py; off here so it
# never takes a port these tests picked (nor one another run holds).
os.environ.setdefault("NOTES_THRIFT", "off")
CLIENT = os.path.join(BUILD, "tools", "knit-manhole", "knit-manhole")
TIMEOUT = 30.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Notes:
    """One knit-notes process in WORKDIR (its cwd); log captured to a file."""

    def __init__(self, workdir, name, *extra):
        self.workdir = workdir
        self.port = free_port()
        self.sock = os.path.join(workdir, "notes.manhole")
        self.err_path = os.path.join(workdir, name + ".err")
        self.err = open(self.err_path, "w")
        self.out = open(os.path.join(workdir, name + ".out"), "w")
        args = [BIN, "--http=tcp:%d:interface=127.0.0.1" % self.port,
                "--db=sqlite:" + os.path.join(workdir, name + ".db")] + list(extra)
        self.proc = subprocess.Popen(args, cwd=workdir, stdout=self.out, stderr=self.err)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("knit-notes exited with %s at start:\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                if self.request("GET", "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError("knit-notes did not answer /healthz:\n" + self.log())

    def request(self, method, path, body=None, timeout=TIMEOUT):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def create(self, doc):
        st, data = self.request("POST", "/notes", doc)
        check(st == 201, "POST /notes: %d %r" % (st, data))
        return json.loads(data)["id"]

    def log(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        """Send SIG (None: it was sent already) and wait; the exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("knit-notes did not stop:\n" + self.log())
        self.err.close()
        self.out.close()
        log = self.log()
        for bad in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                    "WARNING: ThreadSanitizer"):
            check(bad not in log, "sanitizer report in the log:\n" + log[-3000:])
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


def client(path, *args, timeout=TIMEOUT):
    return subprocess.run([CLIENT, path] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def ev(env, chunk, rc=0):
    """Evaluate CHUNK with knit-manhole -e; check the exit status; stdout."""
    r = client(env.svc.sock, "-e", chunk)
    check(r.returncode == rc, "%r: rc %d (want %d)\nstdout %r\nstderr %r"
          % (chunk, r.returncode, rc, r.stdout, r.stderr))
    return r.stdout


results = []


def case(name):
    def wrap(fn):
        results.append((name, fn))
        return fn
    return wrap


@case("default socket ./notes.manhole in the working directory, mode 600")
def _(env):
    st = os.lstat(env.svc.sock)
    check(stat.S_ISSOCK(st.st_mode), "not a socket")
    check(stat.S_IMODE(st.st_mode) == 0o600, "mode %o" % stat.S_IMODE(st.st_mode))
    check("manhole open" in env.svc.log(), "no 'manhole open' log line")


@case("help() lists the notes bindings with their docs")
def _(env):
    out = ev(env, "help()")
    for name in ("notes.count() -> deferred", "notes.get(id) -> deferred",
                 "notes.expire_now() -> deferred"):
        check(name in out, "%r missing from help():\n%s" % (name, out))


@case("notes.count() after HTTP creates (await prints it)")
def _(env):
    env.ids = [env.svc.create({"text": "first note", "tags": ["a", "b"]}),
               env.svc.create({"text": "second"})]
    out = ev(env, "await(notes.count())")
    check(out == "1\nawait #1: 2\n", repr(out))
    # the Deferred itself, inspected later in the same session
    out = ev(env, "local d = notes.count() await(d) return 'queued'")
    check(out.startswith('"queued"\n') and out.endswith("await #1: 2\n"), repr(out))


@case("notes.get(id): the note as a table, nil when missing, bad id refused")
def _(env):
    out = ev(env, "await(notes.get(%d))" % env.ids[0])
    for want in ('text = "first note"', 'tags = {"a", "b"}', "id = %d" % env.ids[0],
                 "created_at = \"20"):
        check(want in out, "%r missing:\n%s" % (want, out))
    check("expires_at" not in out, "a note without ttl has no expires_at:\n" + out)
    out = ev(env, "await(notes.get(999999))")
    check(out == "1\nawait #1: nil\n", repr(out))
    out = ev(env, "notes.get(0)", rc=1)
    check("id must be a positive integer" in out, out)
    out = ev(env, "notes.get('x')", rc=1)
    check("number expected" in out, out)
    # the value is a real table: fields usable in Lua once it fired
    out = ev(env, "await(function() local d = notes.get(%d) return d end)" % env.ids[1])
    check('text = "second"' in out, out)


@case("notes.expire_now() after a TTL passed deletes and counts")
def _(env):
    nid = env.svc.create({"text": "short-lived", "ttl_seconds": 1})
    out = ev(env, "await(notes.expire_now())")
    check(out == "1\nawait #1: 0\n", "nothing expired yet: %r" % out)
    time.sleep(1.3)
    out = ev(env, "await(notes.expire_now())")
    check(out == "1\nawait #1: 1\n", repr(out))
    check(env.svc.request("GET", "/notes/%d" % nid)[0] == 404, "expired note still there")
    check(ev(env, "await(notes.count())") == "1\nawait #1: 2\n", "count after expiry")
    st, data = env.svc.request("GET", "/metrics")
    check(b"notes_expired_total 1" in data, "notes_expired_total not counted:\n%s" % data)


@case("pool.stats() shows the notes pool; loops() the two LoopingCalls")
def _(env):
    out = ev(env, "return pool.stats()")
    check('name = "notes"' in out and "threads = 2" in out and "wait_hist" in out, out)
    out = ev(env, "local l = loops() return l.expiry.running, l.summary.interval")
    check(out == "true\t60.0\n", repr(out))
    out = ev(env, "return metrics('knit_reactor') ~= nil")
    check(out == "true\n", repr(out))


@case("flags(): values; flags.set refuses a bad value clearly, applies a good one")
def _(env):
    out = ev(env, "return flags('manhole'), flags('threads')")
    check(out == '"unix:./notes.manhole:mode=600"\t"2"\n', repr(out))
    out = ev(env, "flags.set('log-level', 'loud')", rc=1)
    check('flag --log-level: bad value "loud"' in out and "expected one of" in out, out)
    out = ev(env, "flags.set('threads', '8')", rc=1)
    check("cannot be changed at run time" in out, out)
    out = ev(env, "flags.set('log-level', 'debug') return flags('log-level')")
    check(out == '"debug"\n', repr(out))
    ev(env, "flags.set('log-level', 'info')")


@case("budget interrupts `while true do end`; HTTP keeps answering")
def _(env):
    busy = subprocess.Popen([CLIENT, env.svc.sock, "-e", "while true do end"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    # sent while the loop runs: answered once the budget interrupts it
    st, _ = env.svc.request("GET", "/healthz")
    check(st == 200, "healthz %d while/after the loop" % st)
    out, err = busy.communicate(timeout=TIMEOUT)
    check(busy.returncode == 1, "rc %d %r %r" % (busy.returncode, out, err))
    check("interrupted: instruction budget exhausted" in out, out)
    nid = env.svc.create({"text": "after the loop"})
    check(env.svc.request("GET", "/notes/%d" % nid)[0] == 200, "GET after the loop")
    check(ev(env, "return 'still here'") == '"still here"\n', "manhole after the loop")


@case("SIGTERM: socket removed, exit 0")
def _(env):
    rc = env.svc.stop()
    check(rc == 0, "exit status %d:\n%s" % (rc, env.svc.log()))
    check(not os.path.exists(env.svc.sock), "socket file left behind")
    log = env.svc.log()
    check("manhole closed" in log, "no 'manhole closed' in the log")
    # the manhole closes before the store is checkpointed and closed
    check(log.index("manhole closed") < log.index("database checkpointed and closed"),
          "manhole closed after the store")


@case("--manhole=off and NOTES_MANHOLE=none: no socket, clean stop")
def _(env):
    d = tempfile.mkdtemp(dir=env.work)
    svc = Notes(d, "off", "--manhole=off")
    try:
        check(not os.path.exists(svc.sock), "socket created with --manhole=off")
        check("manhole off" in svc.log(), "no 'manhole off' log line")
    finally:
        check(svc.stop() == 0, "exit status")
    os.environ["NOTES_MANHOLE"] = "none"
    try:
        svc = Notes(d, "none")
        check(not os.path.exists(svc.sock), "socket created with NOTES_MANHOLE=none")
        check(svc.stop() == 0, "exit status")
    finally:
        del os.environ["NOTES_MANHOLE"]


@case("--manhole elsewhere via NOTES_MANHOLE; bad values exit 2 naming the flag")
def _(env):
    d = tempfile.mkdtemp(dir=env.work)
    path = os.path.join(d, "other.sock")
    os.environ["NOTES_MANHOLE"] = "unix:" + path
    try:
        svc = Notes(d, "env")
    finally:
        del os.environ["NOTES_MANHOLE"]
    try:
        r = client(path, "-e", "await(notes.count())")
        check(r.returncode == 0 and r.stdout == "1\nawait #1: 0\n", repr(r.stdout))
        check(not os.path.exists(os.path.join(d, "notes.manhole")), "default socket too")
    finally:
        check(svc.stop() == 0, "exit status")
    check(not os.path.exists(path), "socket left behind")
    db = "--db=sqlite:" + os.path.join(d, "bad.db")
    for value, needle in [("tcp:9999", "the manhole serves"),
                          ("ssl:9999:privateKey=x", "the manhole serves"),
                          ("bogus:1", "--manhole"),
                          ("ssh:notaport", "--manhole")]:
        p = subprocess.run([BIN, db, "--manhole=" + value], cwd=d, capture_output=True,
                           text=True, timeout=TIMEOUT)
        check(p.returncode == 2, "--manhole=%s: exit %d (%r)" % (value, p.returncode, p.stderr))
        check("--manhole" in p.stderr and needle in p.stderr, "%s: %r" % (value, p.stderr))


@case("SIGTERM while a binding's pool job waits on a locked database: clean stop")
def _(env):
    import sqlite3
    d = tempfile.mkdtemp(dir=env.work)
    svc = Notes(d, "locked", "--threads=2")
    svc.create({"text": "x", "ttl_seconds": 1})
    lock = sqlite3.connect(os.path.join(d, "locked.db"), isolation_level=None, timeout=5)
    try:
        lock.execute("BEGIN IMMEDIATE")  # writers (the expiry job) now wait for it
        busy = subprocess.Popen([CLIENT, svc.sock, "-e", "await(notes.expire_now())"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.2)
        svc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    rc = svc.stop(None)
    out, err = busy.communicate(timeout=TIMEOUT)
    check(rc == 0, "exit status %d:\n%s" % (rc, svc.log()))
    # whichever came first (the job or the stop), the client ended cleanly
    check(busy.returncode in (0, 1, 3), "client rc %d %r %r" % (busy.returncode, out, err))
    log = svc.log()
    check(log.index("manhole closed") < log.index("database checkpointed and closed"), log)
    check(not os.path.exists(svc.sock), "socket file left behind")


@case("--manhole=ssh:0:... passes the flag check and starts an SSH manhole")
def _(env):
    d = tempfile.mkdtemp(dir=env.work)
    key = os.path.join(d, "id_test")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", key],
                   check=True, timeout=TIMEOUT)
    ep = "ssh:0:interface=127.0.0.1:hostKey=%s:authorizedKeys=%s" % (
        os.path.join(d, "host_key"), key + ".pub")
    svc = Notes(d, "ssh", "--manhole=" + ep)
    try:
        log = svc.log()
        check("manhole open" in log and "ssh_port=" in log, log)
        port = int(log.split("ssh_port=")[1].split()[0].strip('"'))
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            check(s.recv(4).startswith(b"SSH-"), "no SSH banner")
    finally:
        check(svc.stop() == 0, "exit status")


def main():
    for p in (BIN, CLIENT):
        if not os.access(p, os.X_OK):
            print("SKIP: %s not built" % p)
            print("0 passed, 0 failed")
            return 0
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="knit-notes-manhole-") as work:

        class Env:
            pass
        env = Env()
        env.work = work
        env.svc = Notes(work, "notes", "--threads=2", "--expire-interval=1h")
        try:
            for name, fn in results:
                t0 = time.monotonic()
                try:
                    fn(env)
                    print("ok   %-70s %.1fs" % (name, time.monotonic() - t0))
                    passed += 1
                except Exception:
                    print("FAIL %s" % name)
                    traceback.print_exc(file=sys.stdout)
                    print("--- knit-notes log (last 30 lines)")
                    print("\n".join(env.svc.log().splitlines()[-30:]))
                    failed += 1
        finally:
            env.svc.kill()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
