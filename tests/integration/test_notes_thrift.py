#!/usr/bin/python3
"""Integration tests for knit-notes' Thrift API (examples/notes/notes.thrift, issue 8).

Starts build/examples/notes/knit-notes on free 127.0.0.1 ports (HTTP and
--thrift=tcp:0, the real port read from the startup line), generates the
Python client with `thrift --gen py` into a temporary directory and calls it
with Debian's python3-thrift: create/get/list_notes/update/remove, NotFound,
BadRequest (the HTTP API's messages), notes shared with the HTTP API both
ways, framed and unframed, binary and compact; then a second process with
--thrift-sasl=plain against a sasldb made by saslpasswd2 (python3-pure-sasl
client; a wrong password and a client without SASL are refused); a locked
database answered with Unavailable; SIGTERM drain and exit 0.
Every process is stopped by its PID. Prints "N passed, N failed".
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

from bounded import readline

TOP = os.environ.get("KNIT_TOP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
BIN = os.path.join(BUILD, "examples", "notes", "knit-notes")
IDL = os.path.join(TOP, "examples", "notes", "notes.thrift")
TIMEOUT = 30

results = []


def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + (("  (" + str(detail) + ")") if detail and not cond else ""),
          flush=True)
    return bool(cond)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Notes:
    """One knit-notes process in WORKDIR; stdout/stderr captured to files."""

    def __init__(self, workdir, name, *extra):
        self.workdir = workdir
        self.port = None  # both ports are tcp:0, read back from the startup line
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        self.db = os.path.join(workdir, name + ".db")
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        args = [BIN, "--http=tcp:0:interface=127.0.0.1", "--db=sqlite:" + self.db,
                "--thrift=tcp:0:interface=127.0.0.1", "--manhole=off"] + list(extra)
        self.proc = subprocess.Popen(args, cwd=workdir, stdout=self.out, stderr=self.err)
        self.tport = None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("knit-notes exited with %s at start:\n%s"
                                     % (self.proc.returncode, self.log()))
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+) and thrift on 127\.0\.0\.1:(\d+)",
                          self.stdout())
            if m:
                self.port, self.tport = int(m.group(1)), int(m.group(2))
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError("knit-notes did not announce its Thrift port:\n" + self.log())

    def stdout(self):
        if not self.out.closed:
            self.out.flush()
        with open(self.out_path) as f:
            return f.read()

    def log(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path) as f:
            err = f.read()
        return "--- stdout\n%s--- stderr (last 30 lines)\n%s" % (
            self.stdout(), "\n".join(err.splitlines()[-30:]))

    def http(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"} if body is not None else {})
            r = c.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data else None)
        finally:
            c.close()

    def stop(self, sig=signal.SIGTERM):
        """Send SIG (None: it was sent already) and wait; returns the exit status."""
        if sig is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("knit-notes did not stop:\n" + self.log())
        self.out.close()
        self.err.close()
        with open(self.err_path) as f:
            err = f.read()
        for bad in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                    "WARNING: ThreadSanitizer"):
            if bad in err:
                check("no sanitizer report (%s)" % os.path.basename(self.err_path), False,
                      err[err.index(bad):][:3000])
        return rc

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(TIMEOUT)


def main():
    if not os.access(BIN, os.X_OK):
        print("SKIP: %s is not built" % BIN)
        print("0 passed, 0 failed")
        return 0
    if not shutil.which("thrift"):
        print("SKIP: the thrift compiler is not installed")
        print("0 passed, 0 failed")
        return 0
    work = tempfile.mkdtemp(prefix="knit-notes-thrift-")
    procs = []
    try:
        subprocess.run(["thrift", "--gen", "py", "-out", work, IDL], check=True,
                       stderr=subprocess.DEVNULL, timeout=TIMEOUT)
        sys.path.insert(0, work)
        run_cases(work, procs)
    except Exception as e:  # noqa: BLE001 - report, then count it
        traceback.print_exc()
        check("unexpected error: %s" % e, False)
        for p in procs:
            if p.proc.poll() is None:
                print(p.log())
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


def run_cases(work, procs):
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.transport import TSocket, TTransport
    from thrift.Thrift import TApplicationException  # noqa: F401
    from notes import Notes as NotesSvc
    from notes.ttypes import NoteInput, NotFound, BadRequest, Unavailable

    def client(port, framed=True, proto=TBinaryProtocol.TBinaryProtocol, sasl=None):
        sock = TSocket.TSocket("127.0.0.1", port)
        sock.setTimeout(TIMEOUT * 1000)
        if sasl:
            t = TTransport.TSaslClientTransport(sock, "localhost", "thrift", mechanism="PLAIN",
                                                username=sasl[0], password=sasl[1])
        elif framed:
            t = TTransport.TFramedTransport(sock)
        else:
            t = TTransport.TBufferedTransport(sock)
        t.open()
        return t, NotesSvc.Client(proto(t))

    def raises(exc, fn, *args):
        try:
            fn(*args)
        except exc as e:
            return e
        except Exception as e:  # noqa: BLE001
            return e
        return None

    svc = Notes(work, "main")
    procs.append(svc)
    out = svc.stdout()
    check("startup line names the HTTP and the Thrift address",
          ("127.0.0.1:%d" % svc.port) in out and ("thrift on 127.0.0.1:%d" % svc.tport) in out, out)

    # ---- CRUD over framed binary -------------------------------------------------------
    t, c = client(svc.tport)
    n = c.create(NoteInput(text="buy milk", tags=["home", "shop"], ttl_seconds=3600))
    check("create returns the stored note",
          n.id > 0 and n.text == "buy milk" and n.tags == ["home", "shop"], n)
    check("create: RFC 3339 created_at and expires_at",
          re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", n.created_at or "") and
          n.expires_at is not None and n.expires_at > n.created_at, n)
    g = c.get(n.id)
    check("get returns the same note", g == n, (g, n))
    n2 = c.create(NoteInput(text="no expiry"))
    check("create without tags or ttl: no tags, no expires_at",
          n2.tags == [] and n2.expires_at is None, n2)
    u = c.update(n.id, NoteInput(text="buy oat milk", tags=["home"]))
    check("update replaces text and tags, keeps the expiry",
          u.text == "buy oat milk" and u.tags == ["home"] and u.expires_at == n.expires_at, u)
    u2 = c.update(n2.id, NoteInput(text="now expires", ttl_seconds=60))
    check("update with ttl_seconds sets the expiry", u2.expires_at is not None, u2)

    # listing and paging
    ids = [c.create(NoteInput(text="page %d" % i, tags=["pg"])).id for i in range(5)]
    p1 = c.list_notes("pg", 2, 0)
    p2 = c.list_notes("pg", 2, p1.next_after)
    p3 = c.list_notes("pg", 2, p2.next_after)
    got = [x.id for x in p1.notes + p2.notes + p3.notes]
    check("list_notes by tag pages through every note in id order", got == ids, (got, ids))
    check("the last page has no next_after", p3.next_after is None and p1.next_after == ids[1],
          (p1.next_after, p3.next_after))
    allp = c.list_notes("", 1000, 0)
    check("list_notes with an empty tag lists every note", len(allp.notes) == 7, len(allp.notes))
    dflt = c.list_notes(None, None, None)  # nothing sent: the IDL defaults apply
    check("list_notes with no arguments sent: the IDL defaults", len(dflt.notes) == 7, len(dflt.notes))

    c.remove(n2.id)
    e = raises(NotFound, c.get, n2.id)
    check("get after remove raises NotFound",
          isinstance(e, NotFound) and e.id == n2.id and e.message == "no note with id %d" % n2.id,
          repr(e))
    e = raises(NotFound, c.remove, n2.id)
    check("remove of a missing note raises NotFound", isinstance(e, NotFound), repr(e))
    e = raises(NotFound, c.update, 999999, NoteInput(text="x"))
    check("update of a missing note raises NotFound", isinstance(e, NotFound), repr(e))

    # ---- validation: BadRequest with the HTTP messages ---------------------------------
    bad_cases = [
        ("empty text", c.create, (NoteInput(text=""),), "text must not be empty"),
        ("empty tag", c.create, (NoteInput(text="x", tags=["a", ""]),), "tags[1] must not be empty"),
        ("long tag", c.create, (NoteInput(text="x", tags=["t" * 65]),),
         "tags[0] must be at most 64 bytes long"),
        ("33 tags", c.create, (NoteInput(text="x", tags=["t%d" % i for i in range(33)]),),
         "tags must hold at most 32 entries (got 33)"),
        ("ttl 0", c.create, (NoteInput(text="x", ttl_seconds=0),), "ttl_seconds must be positive"),
        ("ttl too large", c.create, (NoteInput(text="x", ttl_seconds=10 ** 12),),
         "ttl_seconds must be at most"),
        ("NUL in text", c.create, (NoteInput(text="a\x00b"),), "text must be UTF-8 without NUL"),
        ("id 0", c.get, (0,), "id must be a positive integer"),
        ("negative id", c.remove, (-3,), "id must be a positive integer"),
        ("update id 0", c.update, (0, NoteInput(text="x")), "id must be a positive integer"),
        ("limit 0", c.list_notes, ("", 0, 0), "limit must be an integer from 1 to 1000"),
        ("limit 1001", c.list_notes, ("", 1001, 0), "limit must be an integer from 1 to 1000"),
        ("negative after", c.list_notes, ("", 10, -1), "after must be a note id"),
    ]
    for name, fn, args, msg in bad_cases:
        e = raises(BadRequest, fn, *args)
        check("BadRequest: " + name, isinstance(e, BadRequest) and msg in (e.message or ""),
              repr(e))
    # The same message over HTTP for the same mistake.
    st, doc = svc.http("POST", "/notes", {"text": "x", "tags": ["a", ""]})
    check("HTTP gives the same message", st == 400 and doc == {"error": "tags[1] must not be empty"},
          (st, doc))
    check("the connection survives declared exceptions", c.get(n.id).id == n.id)
    t.close()

    # ---- shared with the HTTP API ------------------------------------------------------
    t, c = client(svc.tport)
    st, doc = svc.http("GET", "/notes/%d" % n.id)
    check("a note created over Thrift is visible over HTTP",
          st == 200 and doc["text"] == "buy oat milk" and doc["tags"] == ["home"] and
          doc["created_at"] == n.created_at and doc["expires_at"] == n.expires_at, (st, doc))
    st, doc = svc.http("POST", "/notes", {"text": "from http \u00e9", "tags": ["web"]})
    hn = c.get(doc["id"]) if st == 201 else None
    check("a note created over HTTP is visible over Thrift",
          hn is not None and hn.text == "from http \u00e9" and hn.tags == ["web"] and
          hn.created_at == doc["created_at"] and hn.expires_at is None, (st, doc, hn))
    c.remove(doc["id"])
    st, _ = svc.http("GET", "/notes/%d" % doc["id"])
    check("a note removed over Thrift is gone over HTTP", st == 404, st)
    un = c.create(NoteInput(text="caf\u00e9 \u2615", tags=["\u00fc"]))
    st, doc = svc.http("GET", "/notes?tag=%C3%BC")
    check("UTF-8 from Thrift reads back over HTTP",
          st == 200 and [x["text"] for x in doc["notes"]] == ["caf\u00e9 \u2615"], (st, doc))
    c.remove(un.id)
    t.close()

    # ---- transports and protocols ------------------------------------------------------
    for framed in (True, False):
        for pname, proto in (("binary", TBinaryProtocol.TBinaryProtocol),
                             ("compact", TCompactProtocol.TCompactProtocol)):
            kind = ("framed " if framed else "unframed ") + pname
            t, c = client(svc.tport, framed, proto)
            x = c.create(NoteInput(text=kind, tags=["proto"], ttl_seconds=120))
            ok = c.get(x.id) == x and c.update(x.id, NoteInput(text=kind + "!")).text == kind + "!"
            e = raises(NotFound, c.get, 10 ** 9)
            c.remove(x.id)
            check(kind + ": create/get/update/remove, NotFound", ok and isinstance(e, NotFound))
            t.close()

    # ---- metrics ------------------------------------------------------------------------
    c2 = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=TIMEOUT)
    c2.request("GET", "/metrics")
    text = c2.getresponse().read().decode()
    c2.close()
    check("/metrics counts Thrift calls",
          'notes_thrift_calls_total{method="get",outcome="not_found"}' in text and
          re.search(r'notes_thrift_calls_total\{method="create",outcome="ok"\} [1-9]', text), "")

    # ---- a locked database: Unavailable ------------------------------------------------
    other = sqlite3.connect(svc.db, isolation_level=None, timeout=5)
    other.execute("BEGIN IMMEDIATE")
    try:
        t, c = client(svc.tport)
        e = raises(Unavailable, c.create, NoteInput(text="blocked"))
        check("database locked: create raises Unavailable",
              isinstance(e, Unavailable) and e.message == "database busy, try again" and
              e.retry_after_seconds == 1, repr(e))
        check("reads go on while the write lock is held", c.get(n.id).id == n.id)
    finally:
        other.execute("ROLLBACK")
        other.close()
    check("writes work again", c.create(NoteInput(text="after")).id > 0)
    t.close()

    # ---- SIGTERM drains: a call in flight is answered, then exit 0 ----------------------
    # A held write lock keeps a create waiting in SQLite's busy handler (about
    # 0.5 s) while SIGTERM arrives; the drain must answer it before closing.
    import threading
    t, c = client(svc.tport)
    c.get(n.id)
    t2, c2 = client(svc.tport)
    other = sqlite3.connect(svc.db, isolation_level=None, timeout=5)
    other.execute("BEGIN IMMEDIATE")
    answer = []

    def slow_create():
        answer.append(raises(Unavailable, c2.create, NoteInput(text="in flight")))

    th = threading.Thread(target=slow_create)
    th.start()
    time.sleep(0.15)
    os.kill(svc.proc.pid, signal.SIGTERM)
    th.join(TIMEOUT)
    other.execute("ROLLBACK")
    other.close()
    check("SIGTERM: the call in flight is answered (not dropped)",
          answer and isinstance(answer[0], Unavailable), repr(answer))
    rc = svc.stop(None)
    check("SIGTERM with Thrift connections open: exit 0", rc == 0, svc.log() if rc else "")
    with open(svc.err_path) as f:
        log = f.read()
    check("the Thrift server closes before the database",
          "thrift server closed" in log and
          log.index("thrift server closed") < log.index("database checkpointed"), log[-2000:])
    for tr in (t, t2):
        try:
            tr.close()
        except Exception:  # noqa: BLE001
            pass

    # ---- --thrift=off -------------------------------------------------------------------
    port = free_port()
    p = subprocess.Popen([BIN, "--http=tcp:%d:interface=127.0.0.1" % port, "--thrift=off",
                          "--manhole=off", "--db=sqlite:" + os.path.join(work, "off.db")],
                         cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = readline(p.stdout, TIMEOUT, "knit-notes --thrift=off's startup line")
    os.kill(p.pid, signal.SIGTERM)
    p.communicate(timeout=TIMEOUT)
    check("--thrift=off: no Thrift in the startup line, exit 0",
          "listening on http://127.0.0.1:%d (db" % port in line and p.returncode == 0, line)

    # ---- bad SASL flags -----------------------------------------------------------------
    r = subprocess.run([BIN, "--thrift-sasl=plain", "--manhole=off",
                        "--http=tcp:0:interface=127.0.0.1", "--thrift=tcp:0:interface=127.0.0.1",
                        "--db=sqlite:" + os.path.join(work, "nosasl.db")],
                       cwd=work, capture_output=True, text=True, timeout=TIMEOUT)
    check("--thrift-sasl=plain without --thrift-sasldb fails with a message",
          r.returncode != 0 and "--thrift-sasldb" in r.stderr, (r.returncode, r.stderr[-500:]))
    r = subprocess.run([BIN, "--thrift=bogus:1", "--db=sqlite:x.db"], cwd=work,
                       capture_output=True, text=True, timeout=TIMEOUT)
    check("--thrift=bogus:1 is refused (exit 2, names the flag)",
          r.returncode == 2 and "--thrift" in r.stderr, (r.returncode, r.stderr[-300:]))
    r = subprocess.run([BIN, "--thrift-sasl=scram", "--db=sqlite:x.db"], cwd=work,
                       capture_output=True, text=True, timeout=TIMEOUT)
    check("--thrift-sasl=scram is refused (exit 2)",
          r.returncode == 2 and "--thrift-sasl" in r.stderr, (r.returncode, r.stderr[-300:]))

    # ---- SASL PLAIN ---------------------------------------------------------------------
    sasldb = os.path.join(work, "sasldb2")
    subprocess.run("printf '%%s' 'sekrit' | /usr/sbin/saslpasswd2 -p -f %s -u localhost -c alice"
                   % sasldb, shell=True, check=True, timeout=TIMEOUT)
    ss = Notes(work, "sasl", "--thrift-sasl=plain", "--thrift-sasldb=" + sasldb)
    procs.append(ss)
    check("SASL: the startup line says so", "(SASL PLAIN)" in ss.stdout(), ss.stdout())
    t, c = client(ss.tport, sasl=("alice", "sekrit"))
    x = c.create(NoteInput(text="secret", tags=["s"]))
    check("SASL PLAIN: create and get on an authenticated channel",
          c.get(x.id) == x and all(c.get(x.id).id == x.id for _ in range(50)))
    t.close()
    t, c = client(ss.tport, proto=TCompactProtocol.TCompactProtocol, sasl=("alice", "sekrit"))
    check("SASL PLAIN: compact protocol", c.get(x.id).text == "secret")
    t.close()
    e = None
    try:
        t, c = client(ss.tport, sasl=("alice", "wrong"))
        c.get(x.id)
    except Exception as ex:  # noqa: BLE001 - TTransportException from BAD
        e = ex
    check("SASL PLAIN: a wrong password is refused", e is not None)
    e = None
    try:
        t, c = client(ss.tport, sasl=("mallory", "sekrit"))
        c.get(x.id)
    except Exception as ex:  # noqa: BLE001
        e = ex
    check("SASL PLAIN: an unknown user is refused", e is not None)
    e = None
    try:
        t, c = client(ss.tport)  # framed, no SASL
        c.get(x.id)
    except Exception as ex:  # noqa: BLE001
        e = ex
    check("SASL required: a client without SASL is refused", e is not None)
    st, doc = ss.http("GET", "/notes/%d" % x.id)
    check("SASL: the note is visible over HTTP", st == 200 and doc["text"] == "secret", (st, doc))
    rc = ss.stop()
    check("SASL service: SIGTERM, exit 0", rc == 0, ss.log() if rc else "")


if __name__ == "__main__":
    sys.exit(main())
