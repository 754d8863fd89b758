# The orders service on Twisted + Klein, for comparison with ../orders.c
# (issue 12: the knit version should stay within 2x these lines). Not run by
# the tests (Klein is not packaged for Debian 12).
import json
import sqlite3
import sys

from klein import Klein
from twisted.conch.manhole_tap import makeService as makeManhole
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.python import log, usage
from twisted.web.server import Site

app = Klein()
db = None


class Options(usage.Options):
    optParameters = [["http", None, "tcp:8080:interface=127.0.0.1", "HTTP endpoint"],
                     ["db", None, "orders.db", "SQLite database file"],
                     ["manhole", None, "", "manhole endpoint"]]


def query(sql, *args):
    with db:
        return db.execute(sql, args).fetchone()


@app.route("/health", methods=["GET"])
def health(request):
    request.setHeader("Content-Type", "application/json")
    return json.dumps({"ok": True})


@app.route("/orders", methods=["POST"])
def create(request):
    request.setHeader("Content-Type", "application/json")
    try:
        body = json.loads(request.content.read())
        item, qty = body["item"], int(body["qty"])
    except (ValueError, KeyError, TypeError):
        request.setResponseCode(400)
        return json.dumps({"error": 'want {"item": text, "qty": n > 0}'})
    d = deferToThread(query, "INSERT INTO orders(item, qty) VALUES (?, ?) RETURNING *", item, qty)
    request.setResponseCode(201)
    return d.addCallback(lambda r: json.dumps({"id": r[0], "item": r[1], "qty": r[2]}))


@app.route("/orders/<int:oid>", methods=["GET"])
def get(request, oid):
    request.setHeader("Content-Type", "application/json")

    def found(r):
        if r is None:
            request.setResponseCode(404)
            return json.dumps({"error": "no order %d" % oid})
        return json.dumps({"id": r[0], "item": r[1], "qty": r[2]})
    return deferToThread(query, "SELECT * FROM orders WHERE id = ?", oid).addCallback(found)


if __name__ == "__main__":
    opts = Options()
    opts.parseOptions()
    db = sqlite3.connect(opts["db"], check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    log.startLogging(sys.stdout)
    from twisted.internet.endpoints import serverFromString
    serverFromString(reactor, opts["http"]).listen(Site(app.resource()))
    if opts["manhole"]:
        makeManhole({"telnetPort": None, "sshPort": opts["manhole"], "namespace": {"db": db},
                     "passwd": "users.txt", "sshKeyDir": ".", "sshKeyName": "key",
                     "sshKeySize": 4096}).startService()
    reactor.run()
