"""streamlib.py — helpers for the stream/endpoint integration tests: start
knit-stream-echo (built in $KNIT_BUILD/bench/stream), read its address,
stop it, count cases. Servers bind 127.0.0.1 only and stop by themselves
(--seconds) even if a test dies."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bounded import readline  # noqa: E402

BUILD = os.environ.get("KNIT_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
ECHO = os.path.join(BUILD, "bench", "stream", "knit-stream-echo")

results = {"pass": 0, "fail": 0}


def need_echo():
    """knit-stream-echo comes from bench/stream (built with -Dbench=true, the
    default). In a build without benchmarks, compile it here against the
    static library."""
    global ECHO
    if os.access(ECHO, os.X_OK):
        return
    top = os.environ.get("KNIT_TOP", os.path.join(os.path.dirname(__file__), "..", ".."))
    lib = os.path.join(BUILD, "libknit.a")
    out = os.path.join(tempfile.mkdtemp(prefix="knit-echo-"), "knit-stream-echo")
    # Link with the sanitizers the library was built with (KNIT_BUILD may be an
    # ASan+UBSan build), or the link fails on the sanitizer runtime symbols.
    san = []
    try:
        opts = json.loads(subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                                         capture_output=True, text=True, timeout=120).stdout)
        value = next((o["value"] for o in opts if o["name"] == "b_sanitize"), "none")
        if value and value != "none":
            san = ["-fsanitize=" + value]
    except (OSError, ValueError):
        pass
    # liburing when the library was built with it (the io_uring backend).
    uring = subprocess.run(["pkg-config", "--libs", "liburing"], capture_output=True, text=True)
    extra = uring.stdout.split() if uring.returncode == 0 else []
    p = subprocess.run(["cc", *san, "-std=gnu17", "-D_GNU_SOURCE", "-O1", "-I", os.path.join(top, "include"),
                        os.path.join(top, "bench", "stream", "knit_echo.c"), lib, "-lssl",
                        "-lcrypto", *extra, "-lpthread", "-lm", "-o", out], capture_output=True,
                       text=True, timeout=600)
    if p.returncode != 0:
        print(f"knit-stream-echo not built at {ECHO} and cannot be compiled:\n{p.stderr}")
        print("0 passed, 1 failed")
        sys.exit(1)
    ECHO = out


def case(fn):
    """Run one test case, count it, never let it stop the others."""
    try:
        fn()
        results["pass"] += 1
        print(f"ok   {fn.__name__}")
    except Exception:
        results["fail"] += 1
        print(f"FAIL {fn.__name__}")
        traceback.print_exc(file=sys.stdout)
    return fn


def finish():
    print(f"{results['pass']} passed, {results['fail']} failed")
    sys.exit(1 if results["fail"] else 0)


class Server:
    def __init__(self, *endpoints, args=(), env=None, inherit_fd=None, shell_pid=False,
                 seconds=30):
        cmd = [ECHO, "--seconds", str(seconds), *args, *endpoints]
        pass_fds = ()
        if inherit_fd is not None:
            # The inherited socket must be fd 3 (SD_LISTEN_FDS_START) in the
            # server, and LISTEN_PID its own pid: a shell that dups the fd and
            # then execs the server gives both.
            pid = 'LISTEN_PID=$$; export LISTEN_PID; ' if shell_pid else ''
            cmd = ["/bin/sh", "-c", f'exec 3<&{inherit_fd}; {pid}exec "$@"', "sh", *cmd]
            pass_fds = (inherit_fd,)
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env, pass_fds=pass_fds)
        self.addrs = []
        for _ in endpoints:
            line = readline(self.p.stdout, 30, "knit-stream-echo's \"listening\" line")
            if not line.startswith("listening "):
                err = self.p.stderr.read() if self.p.poll() is not None else ""
                self.p.kill()
                raise RuntimeError(f"server did not start: {line!r} {err}")
            self.addrs.append(line.split(" ", 1)[1].strip())
        self.pid = self.p.pid

    def port(self, i=0):
        return int(self.addrs[i].rsplit(":", 1)[1])

    def stop(self):
        """SIGTERM; returns (stats dict, stderr text)."""
        if self.p.poll() is None:
            self.p.terminate()
        out, err = self.p.communicate(timeout=20)
        stats = {}
        for line in out.splitlines():
            if line.startswith("stats "):
                for kv in line.split()[1:]:
                    if "=" in kv:
                        k, v = kv.split("=", 1)
                        stats[k] = v
        return stats, err

    def report(self):
        """SIGUSR1: the server prints rss_kb, heap_inuse (malloc in-use bytes)
        and open connections."""
        self.p.send_signal(signal.SIGUSR1)
        line = readline(self.p.stdout, 30, "knit-stream-echo's report after SIGUSR1")
        return {k: int(v) for k, v in (x.split("=") for x in line.split())}

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echo_once(sock, data=b"hello knit\n"):
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    assert got == data, f"echoed {got!r}, wanted {data!r}"


def tcp(port, host="127.0.0.1", family=socket.AF_INET, timeout=10):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def make_cert(d, name="localhost", san="DNS:localhost,IP:127.0.0.1"):
    key, cert = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=" + name, "-addext", "subjectAltName=" + san],
                   check=True, capture_output=True, timeout=120)
    return key, cert


def tmpdir():
    return tempfile.mkdtemp(prefix="knit-it-")
