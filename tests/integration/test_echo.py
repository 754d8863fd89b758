#!/usr/bin/python3
"""knit-echo (the bare-reactor example): echoes bytes, survives many clients
and a client that vanishes, stops cleanly on SIGTERM with exit status 0."""
import os, signal, socket, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bounded import readline  # noqa: E402

BUILD = os.environ.get("KNIT_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
EXE = os.path.join(BUILD, "examples/echo/knit-echo")
results = []

def check(name, cond):
    results.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

port = free_port()
proc = subprocess.Popen([EXE, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    line = readline(proc.stdout, 20, "knit-echo's first line (where it listens)")
    check("announces where it listens", f"127.0.0.1:{port}" in line)
    deadline = time.time() + 5
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=5); break
        except OSError:
            if time.time() > deadline: raise
            time.sleep(0.05)
    c.sendall(b"hello knit\n")
    check("echoes a line", c.recv(100) == b"hello knit\n")
    big = os.urandom(1 << 20)
    c.sendall(big)
    got = b""
    while len(got) < len(big):
        chunk = c.recv(65536)
        if not chunk: break
        got += chunk
    check("echoes 1 MiB intact", got == big)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
    for i, s in enumerate(clients): s.sendall(b"%d\n" % i)
    check("50 concurrent clients each get their own bytes",
          all(s.recv(16) == b"%d\n" % i for i, s in enumerate(clients)))
    rst = socket.create_connection(("127.0.0.1", port), timeout=5)
    rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    rst.close()  # RST
    c.sendall(b"still there?\n")
    check("survives a reset client", c.recv(100) == b"still there?\n")
    for s in clients: s.close()
    c.close()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=10)
    check("SIGTERM stops it with status 0", rc == 0)
    check("logs the stop", "stopping" in proc.stderr.read())
finally:
    if proc.poll() is None:
        proc.kill()
passed = sum(1 for _, ok in results if ok)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
