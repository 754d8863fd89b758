#!/usr/bin/python3
"""twisted_echo.py — the Twisted peer for bench/stream/run: an echo server
on 127.0.0.1 (port 0 = any), the classic Protocol.dataReceived -> write.
Prints "listening 127.0.0.1:PORT"; stops on SIGTERM or after --seconds."""
import sys

from twisted.internet import epollreactor

epollreactor.install()
from twisted.internet import protocol, reactor  # noqa: E402


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60
    f = protocol.Factory.forProtocol(Echo)
    port = reactor.listenTCP(0, f, backlog=511, interface="127.0.0.1")
    print(f"listening 127.0.0.1:{port.getHost().port}", flush=True)
    reactor.callLater(seconds, reactor.stop)
    reactor.run()


main()
