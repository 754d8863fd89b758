#!/usr/bin/python3
"""knit-notes --webhook=URL: each created note is POSTed (its JSON) to a tiny
local receiver through httpc; a receiver that fails (500) at first gets the
same note again (bounded retry), one that never answers in time costs a
bounded number of tries; /metrics counts the outcomes. Every wait is
bounded; the receiver and knit-notes stop at the end."""
import http.server, json, os, shutil, socket, subprocess, sys, tempfile, threading, time
import urllib.request

BUILD = os.environ.get("KNIT_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
BIN = os.path.join(BUILD, "examples", "notes", "knit-notes")
results = []

def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f"  [{detail}]"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

got = []          # (path, content-type, body) of every POST the receiver saw
fail_first = [1]  # answer 500 to this many POSTs first
hang = [False]    # never answer (the webhook's timeout)
hangs_done = []   # hanging answers that ended

class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        got.append((self.path, self.headers.get("Content-Type"), body))
        if hang[0]:
            time.sleep(3.5)
            hangs_done.append(1)
            return
        code = 500 if fail_first[0] > 0 else 200
        fail_first[0] -= 1
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

recv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
recv.daemon_threads = True
threading.Thread(target=recv.serve_forever, daemon=True).start()
hook = f"http://127.0.0.1:{recv.server_address[1]}/hook"

d = tempfile.mkdtemp(prefix="knit-notes-webhook-")
port = free_port()
log = open(f"{d}/stderr", "w")
env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
p = subprocess.Popen([BIN, f"--http=tcp:{port}:interface=127.0.0.1", f"--db=sqlite:{d}/n.db",
                      "--manhole=off", "--thrift=off", f"--webhook={hook}"],
                     stdout=subprocess.DEVNULL, stderr=log, env=env)
base = f"http://127.0.0.1:{port}"

def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

def wait_for(cond, what, secs=10):
    deadline = time.time() + secs
    while time.time() < deadline:
        if cond(): return True
        time.sleep(0.05)
    print(f"timed out waiting for {what}")
    return False

try:
    def healthy():
        if p.poll() is not None: raise SystemExit("knit-notes exited at start")
        try: return call("GET", "/healthz")[0] == 200
        except OSError: return False
    if not wait_for(healthy, "knit-notes to answer /healthz"):
        raise SystemExit(1)
    status, body = call("POST", "/notes", {"text": "hello webhook", "tags": ["w"]})
    note = json.loads(body)
    check("the note is created (201)", status == 201 and note.get("text") == "hello webhook",
          body)
    wait_for(lambda: len(got) >= 2, "the webhook POST and its retry")
    check("the webhook got the note's JSON, again after a 500",
          len(got) == 2 and all(g[0] == "/hook" and g[1] == "application/json"
                                and json.loads(g[2]) == note for g in got), got)
    status, _ = call("POST", "/notes", {"text": "second"})
    wait_for(lambda: len(got) >= 3, "the second note's POST")
    check("the next note goes once", status == 201 and len(got) == 3
          and json.loads(got[2][2])["text"] == "second", got[2:])
    status, body = call("PUT", f"/notes/{note['id']}", {"text": "edited"})
    time.sleep(0.3)
    check("an update is not POSTed", status == 200 and len(got) == 3, got[3:])
    hang[0] = True
    status, _ = call("POST", "/notes", {"text": "nobody listens"})
    check("the API answers while the receiver still hangs on that note",
          status == 201 and not hangs_done, hangs_done)
    wait_for(lambda: len(got) >= 6, "three tries at a hanging receiver", secs=15)
    check("a hanging receiver gets a bounded number of tries", len(got) == 6, len(got))
    wait_for(lambda: "webhook POST failed" in open(f"{d}/stderr").read(), "the failure log")
    _, metrics = call("GET", "/metrics")
    check("/metrics counts deliveries and retries",
          'notes_webhook_deliveries_total{result="ok"} 2' in metrics
          and 'notes_webhook_deliveries_total{result="failed"} 1' in metrics
          and "notes_webhook_retries_total 3" in metrics, metrics[-2000:])
    check("the failure is logged with its reason",
          "ETIMEDOUT" in open(f"{d}/stderr").read(), open(f"{d}/stderr").read()[-500:])
    hang[0] = False
finally:
    if p.poll() is None:
        p.terminate()
        try: rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired: p.kill(); rc = None
        check("SIGTERM still stops it with status 0", rc == 0, rc)
    recv.shutdown()
    log.close()
    err = open(f"{d}/stderr").read()
    check("no sanitizer report", "Sanitizer" not in err and "runtime error" not in err,
          err[-1000:])
    shutil.rmtree(d, ignore_errors=True)

passed = sum(1 for _, ok in results if ok)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
