#!/usr/bin/python3
"""bench/httpc peer: N GETs of URL with treq on Twisted, C at a time over a
persistent HTTPConnectionPool (C connections per host); bodies read.
Prints requests=N ok=N errors=N rps=R."""
import sys, time
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool
import treq

url, n, c = sys.argv[1].encode(), int(sys.argv[2]), int(sys.argv[3])
pool = HTTPConnectionPool(reactor, persistent=True)
pool.maxPersistentPerHost = c
sem = defer.DeferredSemaphore(c)
ok = [0]

def one():
    d = treq.get(url, pool=pool)
    d.addCallback(lambda r: treq.content(r).addCallback(lambda _: r.code))
    def count(code):
        if code < 400: ok[0] += 1
    d.addCallback(count)
    d.addErrback(lambda f: None)
    return d

t0 = time.monotonic()
dl = defer.gatherResults([sem.run(one) for _ in range(n)])
dl.addBoth(lambda _: reactor.stop())
reactor.run()
secs = time.monotonic() - t0
print(f"requests={n} ok={ok[0]} errors={n - ok[0]} rps={n / secs:.0f}")
