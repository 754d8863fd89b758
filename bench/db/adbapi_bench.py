#!/usr/bin/python3
"""bench/db/adbapi_bench.py — Twisted's adbapi with psycopg2: N point queries,
K outstanding, on a ConnectionPool of T threads (cp_min = cp_max = T).

    adbapi_bench.py DSN select|insert N K T

Prints: adbapi select N=.. K=.. T=.. secs=.. qps=.. errors=..
"""
import random
import sys
import time

from twisted.enterprise import adbapi
from twisted.internet import defer, reactor


def main():
    dsn, mode, n, k, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
        int(sys.argv[5])
    pool = adbapi.ConnectionPool("psycopg2", dsn, cp_min=t, cp_max=t, cp_noisy=False)
    rng = random.Random(88172645)
    state = {"issued": 0, "done": 0, "errors": 0}
    finished = defer.Deferred()

    def one():
        state["issued"] += 1
        if mode == "insert":
            d = pool.runOperation("INSERT INTO bench_ins(v) VALUES (%s)",
                                  ("inserted by adbapi",))
        else:
            d = pool.runQuery("SELECT v FROM bench WHERE id = %s", (rng.randint(1, 10000),))
        d.addCallbacks(ok, err)

    def ok(_):
        state["done"] += 1
        again()

    def err(f):
        state["errors"] += 1
        if state["errors"] <= 3:
            sys.stderr.write("query failed: %s\n" % f.getErrorMessage())
        state["done"] += 1
        again()

    def again():
        if state["issued"] < n:
            one()
        elif state["done"] == n and not finished.called:
            finished.callback(None)

    @defer.inlineCallbacks
    def run():
        # every thread's connection opened before the clock starts
        yield defer.gatherResults([pool.runQuery("SELECT 1") for _ in range(t)])
        t0 = time.monotonic()
        for _ in range(min(k, n)):
            one()
        yield finished
        secs = time.monotonic() - t0
        print("adbapi %s N=%d K=%d T=%d secs=%.3f qps=%.0f errors=%d"
              % (mode, n, k, t, secs, n / secs, state["errors"]))
        pool.close()
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    return 1 if state["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
