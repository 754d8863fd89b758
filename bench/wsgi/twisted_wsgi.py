"""Twisted's WSGI container with 16 threads: twisted_wsgi.py PORT APP (hello|sleep)."""
import sys

import bench_apps
from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

app = getattr(bench_apps, sys.argv[2])
reactor.suggestThreadPoolSize(16)
site = Site(WSGIResource(reactor, reactor.getThreadPool(), app))
site.log = lambda request: None
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1", backlog=8192)
reactor.run()
