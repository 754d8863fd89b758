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

Issue 13: TJSONProtocol (framed and buffered), THeaderProtocol (binary and
compact inside, zlib, info headers), old non-strict binary unframed, Thrift
over HTTP (THttpClient, all three protocols), multiplexed calls from
Apache's C++ client (which compares reply names: a server answering
"Bench:add" makes it fail), the C++ client over JSON and THeader, and the
reverse: knit's client against python3-thrift's JSON and THeader servers and
Apache's C++ compact, multiplexed and THeader servers. Deadlines end to end:
a THeader call whose client_timeout passes while it waits behind a slow call
is answered TApplicationException 12 (TIMEOUT), and so is one that waited
longer than --queue-timeout.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
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
    from thrift.protocol import TBinaryProtocol, TCompactProtocol, TJSONProtocol, THeaderProtocol
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

    if framed == "header":  # THeaderProtocol answers in the protocol and transforms of the call
        pf = THeaderProtocol.THeaderProtocolFactory()
    elif pname == "json":
        pf = TJSONProtocol.TJSONProtocolFactory()
    elif pname == "compact":
        pf = TCompactProtocol.TCompactProtocolFactory()
    else:
        pf = TBinaryProtocol.TBinaryProtocolFactory()
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

from thrift.protocol import TBinaryProtocol, TCompactProtocol, TJSONProtocol  # noqa: E402
from thrift.protocol import THeaderProtocol, TMultiplexedProtocol  # noqa: E402
from thrift.transport import THeaderTransport, THttpClient, TSocket, TTransport  # noqa: E402
from thrift.Thrift import TApplicationException  # noqa: E402
from bench import Bench  # noqa: E402

proc = subprocess.Popen([EXE, "--thrift=tcp:0:interface=127.0.0.1", "--threads=4", "--sasl-db=" + sasldb,
                         "--multiplex", "--http=tcp:0:interface=127.0.0.1"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    line = readline(proc.stdout, 30, "knit-thrift-bench's \"listening on\" line")
    check("announces its port", line.startswith("listening on "))
    port = int(line.split()[-1])
    line = readline(proc.stdout, 30, "knit-thrift-bench's \"http on\" line")
    check("announces its HTTP port", line.startswith("http on "))
    hport = int(line.split()[-1])

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

    # Fault 2: the same old client without framing (it was dropped).
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(10000)
    t = TTransport.TBufferedTransport(sock)
    t.open()
    c = Bench.Client(TBinaryProtocol.TBinaryProtocol(t, strictRead=False, strictWrite=False))
    check("unframed binary, old non-strict headers", c.add(40, 2) == 42 and c.echo("old") == "old")
    t.close()

    # TJSONProtocol, framed and buffered (what the JavaScript clients speak).
    for framed in (True, False):
        kind = ("framed" if framed else "unframed") + " JSON"
        t, c = client(framed, TJSONProtocol.TJSONProtocol)
        check(kind + ": 50 adds", all(c.add(i, -2 * i) == -i for i in range(50)))
        s = "h\u00e9llo \"q\" \\ \n\u2603 " * 100
        check(kind + ": echo escapes and UTF-8", c.echo(s) == s)
        big = "x" * (1 << 20)
        check(kind + ": echo 1 MiB", c.echo(big) == big)
        t.close()

    # THeaderProtocol: binary and compact inside, zlib, info headers.
    def header_client(subproto, zlib=False):
        sock = TSocket.TSocket("127.0.0.1", port)
        sock.setTimeout(10000)
        sock.open()
        p = THeaderProtocol.THeaderProtocol(sock, (THeaderTransport.THeaderClientType.HEADERS,),
                                            subproto)
        if zlib:
            p.add_transform(THeaderTransport.THeaderTransformID.ZLIB)
        return sock, p, Bench.Client(p)

    for pname, sub in (("binary", THeaderTransport.THeaderSubprotocolID.BINARY),
                       ("compact", THeaderTransport.THeaderSubprotocolID.COMPACT)):
        for zlib in (False, True):
            kind = "THeader %s%s" % (pname, " + zlib" if zlib else "")
            sock, p, c = header_client(sub, zlib)
            p.set_header(b"x-from", b"python")
            ok = all(c.add(i, -2 * i) == -i for i in range(50))
            check(kind + ": 50 adds (an info header on the first)", ok)
            big = "z" * (1 << 20)
            check(kind + ": echo 1 MiB", c.echo(big) == big)
            sock.close()
    # multiplexed over THeader
    sock, p, _ = header_client(THeaderTransport.THeaderSubprotocolID.COMPACT)
    c = Bench.Client(TMultiplexedProtocol.TMultiplexedProtocol(p, "Bench"))
    check("THeader compact, multiplexed: add", c.add(2, 3) == 5)
    sock.close()

    # Thrift over HTTP: THttpClient POSTs each call; all three protocols.
    for pname, proto in (("binary", TBinaryProtocol.TBinaryProtocol),
                         ("compact", TCompactProtocol.TCompactProtocol),
                         ("JSON", TJSONProtocol.TJSONProtocol)):
        t = THttpClient.THttpClient("http://127.0.0.1:%d/thrift" % hport)
        t.setTimeout(10000)
        c = Bench.Client(proto(t))
        ok = all(c.add(i, 7) == i + 7 for i in range(20))
        check("HTTP %s (THttpClient): 20 adds" % pname, ok)
        s = "h\u00e9llo " * 1000
        check("HTTP %s: echo" % pname, c.echo(s) == s)
        t.close()
    t = THttpClient.THttpClient("http://127.0.0.1:%d/thrift" % hport)
    t.setTimeout(10000)
    c = Bench.Client(TMultiplexedProtocol.TMultiplexedProtocol(TBinaryProtocol.TBinaryProtocol(t), "Bench"))
    check("HTTP binary, multiplexed: add", c.add(20, 22) == 42)
    t.close()

    # Deadlines: one worker, busy with a slow call; a call queued behind it
    # is answered TIMEOUT (12) instead of run, when its THeader client_timeout
    # passed (100 ms) or when it waited longer than --queue-timeout (300 ms).
    dproc = subprocess.Popen([EXE, "--thrift=tcp:0:interface=127.0.0.1", "--threads=1",
                              "--queue-timeout=300ms"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        dport = int(readline(dproc.stdout, 30, "the deadline server's \"listening on\" line").split()[-1])

        def busy(ms):
            bs = TSocket.TSocket("127.0.0.1", dport)
            bs.setTimeout(20000)
            bt = TTransport.TFramedTransport(bs)
            bt.open()
            th = threading.Thread(target=lambda: (Bench.Client(TBinaryProtocol.TBinaryProtocol(bt))
                                                  .sleep_us(ms * 1000), bt.close()))
            th.start()
            time.sleep(0.2)  # the slow call is on the worker before the next one is sent
            return th

        def app_error(call):
            try:
                call()
                return None
            except TApplicationException as e:
                return e

        th = busy(900)
        sock = TSocket.TSocket("127.0.0.1", dport)
        sock.setTimeout(20000)
        sock.open()
        hp = THeaderProtocol.THeaderProtocol(sock, (THeaderTransport.THeaderClientType.HEADERS,))
        hp.set_header(b"client_timeout", b"100")
        e = app_error(lambda: Bench.Client(hp).add(1, 2))
        check("client_timeout passed in the queue: TApplicationException TIMEOUT (12)",
              e is not None and e.type == 12 and "deadline" in str(e.message), repr(e))
        th.join(30)
        check("after the slow call, the same THeader connection works", Bench.Client(hp).add(1, 2) == 3)
        sock.close()
        th = busy(900)
        t, c = None, None
        sock = TSocket.TSocket("127.0.0.1", dport)
        sock.setTimeout(20000)
        t = TTransport.TFramedTransport(sock)
        t.open()
        e = app_error(lambda: Bench.Client(TBinaryProtocol.TBinaryProtocol(t)).add(1, 2))
        check("waited longer than --queue-timeout: TApplicationException TIMEOUT (12)",
              e is not None and e.type == 12 and "queue timeout" in str(e.message), repr(e))
        th.join(30)
        t.close()
    finally:
        dproc.kill()
        wait_proc(dproc, 30, "the deadline server after SIGKILL")

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
        # Fault 1: Apache's C++ client compares each reply's name with the
        # method's; multiplexed, it hung on knit's "Bench:add" replies.
        for proto in ("binary", "compact", "json", "header-binary", "header-compact"):
            for mux in ([], ["multiplexed"]):
                r = subprocess.run([CPP, str(port), proto] + mux, capture_output=True, text=True,
                                   timeout=60)
                check("Apache C++ client (%s%s)" % (proto, ", multiplexed" if mux else ""),
                      r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr)
    else:
        print("skip Apache C++ client: %s not built" % CPP)

    # The other way round: knit's client against Apache's servers.
    KCLIENT = os.path.join(BUILD, "examples/thrift-bench/knit-thrift-bench-client")
    check("knit client -> knit server, SASL PLAIN",
          subprocess.run([KCLIENT, "tcp:127.0.0.1:%d" % port, "binary", "framed", "alice", "sekrit"],
                         capture_output=True, text=True, timeout=60).stdout.strip() == "ok")
    check("knit client -> knit server, multiplexed THeader compact + zlib",
          subprocess.run([KCLIENT, "--service=Bench", "tcp:127.0.0.1:%d" % port, "compact",
                          "header-zlib"], capture_output=True, text=True,
                         timeout=60).stdout.strip() == "ok")
    check("knit client -> knit server, unframed JSON",
          subprocess.run([KCLIENT, "tcp:127.0.0.1:%d" % port, "json", "unframed"],
                         capture_output=True, text=True, timeout=60).stdout.strip() == "ok")
    pairs = [(f, p) for f in ("framed", "unframed") for p in ("binary", "compact", "json")]
    pairs += [(f, p) for f in ("header", "header-zlib") for p in ("binary", "compact")]
    for framed, pname in pairs:
        pport = free_port()
        srv = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(pport), pname,
                                "header" if framed.startswith("header") else framed, tmp],
                               stdout=subprocess.PIPE, text=True)
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
        # MODE of apache-thrift-bench, then knit client arguments
        for mode, kargs in (("binary", ["binary", "framed"]),
                            ("compact", ["compact", "framed"]),
                            ("multiplexed", ["--service=Bench", "binary", "framed"]),
                            ("header", ["binary", "header"]),
                            ("header", ["compact", "header"])):
            aport = free_port()
            asrv = subprocess.Popen([APACHE, str(aport), "2", mode], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            try:
                readline(asrv.stdout, 30, "apache-thrift-bench's first line")
                wait_port(aport)
                if kargs[0].startswith("--"):
                    argv = [KCLIENT, kargs[0], "tcp:127.0.0.1:%d" % aport] + kargs[1:]
                else:
                    argv = [KCLIENT, "tcp:127.0.0.1:%d" % aport] + kargs
                r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                check("knit client -> Apache C++ server (%s; client %s)" % (mode, " ".join(kargs)),
                      r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr)
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
