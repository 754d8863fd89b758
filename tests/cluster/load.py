#!/usr/bin/python3
"""tests/cluster/load.py — the cluster test's clients (run by tests/cluster/run
inside the client namespace): HTTP and Thrift load through HAProxy for
--seconds, every request recorded with its start and end time
(CLOCK_MONOTONIC, shared with the driver) and outcome, written as JSON.

HTTP workers (keep-alive connections to HAProxy): POST /notes with a unique
text (an acknowledged write: 201 and its id), then GET /notes?tag=T (a
read). Thrift workers (framed binary, one connection each through HAProxy
in TCP mode): create(unique text) and list_notes(tag).

Client behaviour, as a well-behaved client of a draining cluster:
  - a call is never written into a connection the client has seen closed
    (EOF between calls: reconnect first — the call was never sent);
  - an idempotent request (GET, list_notes) whose connection failed is
    retried once on a new connection and counted as `retried`;
  - a write (POST, create) that fails is NOT retried: it counts as failed
    and, not acknowledged, is not looked for in the database afterwards.
"""
import argparse
import http.client
import json
import os
import select
import socket
import sys
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--http", required=True)     # HOST:PORT of HAProxy's HTTP frontend
p.add_argument("--thrift", required=True)   # HOST:PORT of its Thrift frontend
p.add_argument("--gen", required=True)      # directory with thrift --gen py output
p.add_argument("--seconds", type=float, required=True)
p.add_argument("--http-workers", type=int, default=4)
p.add_argument("--thrift-workers", type=int, default=2)
p.add_argument("--pause", type=float, default=0.01)  # between requests, per worker
p.add_argument("--out", required=True)
p.add_argument("--tag", default="cluster")
a = p.parse_args()

sys.path.insert(0, a.gen)
from thrift.protocol import TBinaryProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402
from notes import Notes as NotesSvc  # noqa: E402
from notes.ttypes import NoteInput  # noqa: E402

now = time.monotonic
END = now() + a.seconds
lock = threading.Lock()
events = []   # [kind, op, start, end, ok, detail, retried]
acked = []    # texts of acknowledged writes
seq = [0]
reconnects = {"http": 0, "thrift": 0}  # connections found closed between requests


def record(kind, op, t0, ok, detail="", retried=False):
    with lock:
        events.append([kind, op, t0, now(), ok, detail[:200], retried])


def unique_text(w):
    with lock:
        seq[0] += 1
        return "%s-w%s-%d-%d" % (a.tag, w, os.getpid(), seq[0])


def peer_closed(sock):
    """True if SOCK has seen EOF (or an error) while idle: never send on it."""
    if sock is None:
        return True
    try:
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class HTTPWorker:
    def __init__(self, w):
        self.w = w
        host, port = a.http.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.c = None

    def conn(self):
        if self.c is None or peer_closed(self.c.sock):
            if self.c:
                with lock:
                    reconnects["http"] += 1
                self.c.close()
            self.c = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.c.connect()
        return self.c

    def request(self, method, path, body=None):
        c = self.conn()
        c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        data = r.read()
        if r.getheader("Connection", "").lower() == "close":
            c.close()
            self.c = None
        return r.status, data

    def run(self):
        while now() < END:
            text = unique_text("h%d" % self.w)
            t0 = now()
            try:
                st, data = self.request("POST", "/notes", json.dumps({"text": text, "tags": [a.tag]}))
                ok = st == 201
                if ok:
                    with lock:
                        acked.append(text)
                record("http", "POST", t0, ok, "" if ok else "status %d %r" % (st, data[:100]))
            except (OSError, http.client.HTTPException) as e:
                self.reset()
                record("http", "POST", t0, False, "%s: %s" % (type(e).__name__, e))
            t0 = now()
            for attempt in (0, 1):
                try:
                    st, data = self.request("GET", "/notes?tag=%s&limit=5" % a.tag)
                    record("http", "GET", t0, st == 200, "" if st == 200 else "status %d" % st,
                           retried=attempt == 1)
                    break
                except (OSError, http.client.HTTPException) as e:
                    self.reset()
                    if attempt == 1:
                        record("http", "GET", t0, False, "%s: %s" % (type(e).__name__, e), True)
            time.sleep(a.pause)

    def reset(self):
        if self.c:
            self.c.close()
        self.c = None


class ThriftWorker:
    def __init__(self, w):
        self.w = w
        host, port = a.thrift.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.t = self.sock = self.cl = None

    def client(self):
        if self.t is None or peer_closed(self.sock.handle):
            if self.t is not None:
                with lock:
                    reconnects["thrift"] += 1  # closed between calls (a drain): never sent
            self.reset()
            self.sock = TSocket.TSocket(self.host, self.port)
            self.sock.setTimeout(10000)
            self.t = TTransport.TFramedTransport(self.sock)
            self.t.open()
            self.cl = NotesSvc.Client(TBinaryProtocol.TBinaryProtocol(self.t))
        return self.cl

    def reset(self):
        if self.t:
            try:
                self.t.close()
            except Exception:  # noqa: BLE001
                pass
        self.t = self.sock = self.cl = None

    def run(self):
        while now() < END:
            text = unique_text("t%d" % self.w)
            t0 = now()
            try:
                n = self.client().create(NoteInput(text=text, tags=[a.tag]))
                ok = n.text == text
                if ok:
                    with lock:
                        acked.append(text)
                record("thrift", "create", t0, ok)
            except Exception as e:  # noqa: BLE001 - transport errors, Unavailable, ...
                self.reset()
                record("thrift", "create", t0, False, "%s: %s" % (type(e).__name__, e))
            time.sleep(a.pause)
            t0 = now()
            for attempt in (0, 1):
                try:
                    self.client().list_notes(a.tag, 5, 0)
                    record("thrift", "list_notes", t0, True, retried=attempt == 1)
                    break
                except Exception as e:  # noqa: BLE001
                    self.reset()
                    if attempt == 1:
                        record("thrift", "list_notes", t0, False, "%s: %s" % (type(e).__name__, e), True)
            time.sleep(a.pause)


def guarded(fn):
    def run():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a crashed worker is a failure too
            record("worker", "crash", now(), False, "%s: %s" % (type(e).__name__, e))
    return run


threads = [threading.Thread(target=guarded(HTTPWorker(i).run)) for i in range(a.http_workers)]
threads += [threading.Thread(target=guarded(ThriftWorker(i).run)) for i in range(a.thrift_workers)]
for t in threads:
    t.start()
for t in threads:
    t.join(a.seconds + 60)
with open(a.out + ".tmp", "w") as f:
    json.dump({"events": events, "acked": acked, "reconnects": reconnects,
               "stuck": sum(t.is_alive() for t in threads)}, f)
os.rename(a.out + ".tmp", a.out)
