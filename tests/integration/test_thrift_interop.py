#!/usr/bin/python3
"""knit's Thrift server against Apache Thrift's own clients.

Starts knit-thrift-bench (examples/thrift-bench) on 127.0.0.1 with a sasldb
made by saslpasswd2, then calls it with python3-thrift over framed and
unframed transports in both protocols, over the SASL transport
(TSaslClientTransport with python3-pure-sasl, PLAIN), and, when it was built,
with Apache Thrift's C++ library (bench/thrift/thrift-cpp-client). The other
way round, knit's client (knit-thrift-bench-client) calls python3-thrift's
TThreadedServer (framed/unframed, binary/compact) and Apache's C++
TNonblockingServer. Also sends malformed input over raw sockets. Stops the
server with SIGTERM.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from bounded import readline, wait_proc

# imports-at-run-time: puresasl.client  (TSaslClientTransport imports it; test_python_deps.py)
TOP = os.environ.get("KNIT_TOP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))
BUILD = os.environ.get("KNIT_BUILD", os.path.join(TOP, "build"))
EXE = os.path.join(BUILD, "examples/thrift-bench/knit-thrift-bench")
CPP = os.path.join(BUILD, "bench/thrift/thrift-cpp-client")
IDL = os.path.join(TOP, "examples/thrift-bench/bench.thrift")
results = []


def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + (("  (" + detail + ")") if detail and not cond else ""))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)


def serve(port, pname, framed, gendir):
    """--serve: a python3-thrift server for bench.thrift (the peer for knit's client)."""
    sys.path.insert(0, gendir)
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.server import TServer
    from thrift.transport import TSocket, TTransport
    from bench import Bench

    class Handler:
        def echo(self, s):
            return s

        def add(self, a, b):
            return a + b

        def sleep_us(self, us):
            time.sleep(us / 1e6)

    pf = TCompactProtocol.TCompactProtocolFactory() if pname == "compact" else \
        TBinaryProtocol.TBinaryProtocolFactory()
    tf = TTransport.TFramedTransportFactory() if framed == "framed" else \
        TTransport.TBufferedTransportFactory()
    server = TServer.TThreadedServer(Bench.Processor(Handler()),
                                     TSocket.TServerSocket(host="127.0.0.1", port=port), tf, pf,
                                     daemon=True)
    print("serving", flush=True)
    server.serve()


if len(sys.argv) > 1 and sys.argv[1] == "--serve":
    serve(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    sys.exit(0)

tmp = tempfile.mkdtemp(prefix="knit-thrift-it.")
sasldb = os.path.join(tmp, "sasldb2")
subprocess.run("printf '%%s' 'sekrit' | /usr/sbin/saslpasswd2 -p -f %s -u localhost -c alice" % sasldb,
               shell=True, check=True, timeout=60)
subprocess.run(["thrift", "--gen", "py", "-out", tmp, IDL], check=True, stderr=subprocess.DEVNULL,
               timeout=60)
sys.path.insert(0, tmp)

from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402
from thrift.Thrift import TApplicationException  # noqa: E402
from bench import Bench  # noqa: E402

proc = subprocess.Popen([EXE, "--thrift=tcp:0:interface=127.0.0.1", "--threads=4", "--sasl-db=" + sasldb],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    line = readline(proc.stdout, 30, "knit-thrift-bench's \"listening on\" line")
    check("announces its port", line.startswith("listening on "))
    port = int(line.split()[-1])

    def client(framed, proto, sasl=None):
        sock = TSocket.TSocket("127.0.0.1", port)
        sock.setTimeout(10000)
        if sasl:
            t = TTransport.TSaslClientTransport(sock, "localhost", "thrift", mechanism="PLAIN",
                                                username=sasl[0], password=sasl[1])
        elif framed:
            t = TTransport.TFramedTransport(sock)
        else:
            t = TTransport.TBufferedTransport(sock)
        t.open()
        return t, Bench.Client(proto(t))

    for framed in (True, False):
        for pname, proto in (("binary", TBinaryProtocol.TBinaryProtocol),
                             ("compact", TCompactProtocol.TCompactProtocol)):
            kind = ("framed " if framed else "unframed ") + pname
            t, c = client(framed, proto)
            ok = all(c.add(i, -2 * i) == -i for i in range(50))
            check(kind + ": 50 adds", ok)
            s = "h\u00e9llo " * 200
            check(kind + ": echo 1.2 KiB of UTF-8", c.echo(s) == s)
            big = "x" * (1 << 20)
            check(kind + ": echo 1 MiB", c.echo(big) == big)
            c.sleep_us(1000)
            check(kind + ": sleep_us returns", True)
            t.close()

    # An old client writing non-strict binary headers, framed.
    sock = TSocket.TSocket("127.0.0.1", port)
    t = TTransport.TFramedTransport(sock)
    t.open()
    c = Bench.Client(TBinaryProtocol.TBinaryProtocol(t, strictRead=False, strictWrite=False))
    check("framed binary, old non-strict headers", c.add(40, 2) == 42 and c.echo("old") == "old")
    t.close()

    t, c = client(True, TBinaryProtocol.TBinaryProtocol, sasl=("alice", "sekrit"))
    check("SASL PLAIN (pure-sasl): add", c.add(20, 22) == 42)
    check("SASL PLAIN: 100 calls on one authenticated channel",
          all(c.echo(str(i)) == str(i) for i in range(100)))
    t.close()
    try:
        t, c = client(True, TBinaryProtocol.TBinaryProtocol, sasl=("alice", "wrong"))
        c.add(1, 1)
        check("SASL PLAIN: wrong password refused", False)
    except Exception as e:  # TTransportException from the BAD message
        check("SASL PLAIN: wrong password refused", e is not None)

    # Unknown method: TApplicationException UNKNOWN_METHOD, the connection stays usable.
    t, c = client(True, TBinaryProtocol.TBinaryProtocol)
    p = TBinaryProtocol.TBinaryProtocol(t)
    p.writeMessageBegin("nope", 1, 9)
    p.writeStructBegin("a")
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    t.flush()
    name, mtype, seqid = p.readMessageBegin()
    x = TApplicationException()
    x.read(p)
    p.readMessageEnd()
    check("unknown method: TApplicationException UNKNOWN_METHOD",
          mtype == 3 and seqid == 9 and x.type == TApplicationException.UNKNOWN_METHOD)
    check("connection usable after an unknown method", c.add(1, 2) == 3)
    t.close()

    def raw(data, wait=2.0):
        s = socket.create_connection(("127.0.0.1", port), timeout=wait)
        s.sendall(data)
        try:
            got = s.recv(100)
        except socket.timeout:
            got = None
        s.close()
        return got

    check("HTTP on the Thrift port: closed", raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b"")
    check("frame above the limit: closed", raw(struct.pack(">I", 0x7FFFFFF0) + b"\x80\x01") == b"")
    check("huge declared string (unframed): closed",
          raw(b"\x80\x01\x00\x01\x7f\xff\xff\xf0abc") == b"")
    check("SASL garbage: closed with an error message",
          (raw(b"\x01\x00\x00\x00\x05PLAIN\x07\x00\x00\x00\x00") or b"")[:1] in (b"\x04", b""))

    if os.path.exists(CPP):
        for proto in ("binary", "compact"):
            r = subprocess.run([CPP, str(port), proto], capture_output=True, text=True, timeout=60)
            check("Apache C++ client (%s, framed)" % proto, r.returncode == 0 and "ok" in r.stdout,
                  r.stdout + r.stderr)
    else:
        print("skip Apache C++ client: %s not built" % CPP)

    # The other way round: knit's client against Apache's servers.
    KCLIENT = os.path.join(BUILD, "examples/thrift-bench/knit-thrift-bench-client")
    check("knit client -> knit server, SASL PLAIN",
          subprocess.run([KCLIENT, "tcp:127.0.0.1:%d" % port, "binary", "framed", "alice", "sekrit"],
                         capture_output=True, text=True, timeout=60).stdout.strip() == "ok")
    for framed in ("framed", "unframed"):
        for pname in ("binary", "compact"):
            pport = free_port()
            srv = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(pport), pname,
                                    framed, tmp], stdout=subprocess.PIPE, text=True)
            try:
                readline(srv.stdout, 30, "the python3-thrift server's \"serving\" line")
                wait_port(pport)
                r = subprocess.run([KCLIENT, "tcp:127.0.0.1:%d" % pport, pname, framed],
                                   capture_output=True, text=True, timeout=60)
                check("knit client -> python3-thrift server (%s %s)" % (framed, pname),
                      r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr)
            finally:
                srv.kill()
                wait_proc(srv, 30, "the python3-thrift server after SIGKILL")
    APACHE = os.path.join(BUILD, "bench/thrift/apache-thrift-bench")
    if os.path.exists(APACHE):
        aport = free_port()
        asrv = subprocess.Popen([APACHE, str(aport), "2"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            readline(asrv.stdout, 30, "apache-thrift-bench's first line")
            wait_port(aport)
            r = subprocess.run([KCLIENT, "tcp:127.0.0.1:%d" % aport, "binary", "framed"],
                               capture_output=True, text=True, timeout=60)
            check("knit client -> Apache C++ TNonblockingServer", r.returncode == 0 and
                  r.stdout.strip() == "ok", r.stdout + r.stderr)
        finally:
            asrv.kill()
            wait_proc(asrv, 30, "apache-thrift-bench after SIGKILL")

    check("server still alive", proc.poll() is None)
    proc.send_signal(signal.SIGTERM)
    check("SIGTERM stops it with status 0", proc.wait(timeout=10) == 0)
finally:
    if proc.poll() is None:
        proc.kill()
    shutil.rmtree(tmp, ignore_errors=True)
passed = sum(1 for _, ok in results if ok)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
