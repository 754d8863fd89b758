// Apache Thrift's C++ client against a bench.thrift server (used by
// tests/integration/test_thrift_interop.py). Prints "ok" and exits 0 when
// every check passed.
//   thrift-cpp-client PORT PROTOCOL [multiplexed]
// PROTOCOL: binary, compact or json (framed), header-binary or
// header-compact (THeaderProtocol: THeader frames, with an info header),
// header-zlib (THeader, compact inside, zlib transform: Apache 0.17's C++
// zlib transform fails against Apache's own C++ THeader server too — "Error
// while zlib deflate", heap corruption in THeaderTransport::untransform — so
// the interop test leaves it out; zlib is tested with python3-thrift). "multiplexed" wraps
// the protocol in TMultiplexedProtocol("Bench"): the generated client
// compares each reply's name with the method's and skips a reply named
// "Bench:add", so a server that echoes the multiplexed name makes it fail
// (the socket's 10 s receive timeout turns the hang into an exception).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/protocol/THeaderProtocol.h>
#include <thrift/protocol/TJSONProtocol.h>
#include <thrift/protocol/TMultiplexedProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/THeaderTransport.h>
#include <thrift/transport/TSocket.h>

#include "Bench.h"

using namespace apache::thrift;

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: thrift-cpp-client PORT binary|compact|json|header-binary|"
                        "header-compact|header-zlib [multiplexed]\n");
        return 2;
    }
    const char *proto = argv[2];
    bool mux = argc > 3 && strcmp(argv[3], "multiplexed") == 0;
    auto sock = std::make_shared<transport::TSocket>("127.0.0.1", atoi(argv[1]));
    sock->setRecvTimeout(10000);
    sock->setConnTimeout(10000);
    std::shared_ptr<transport::TTransport> t;
    std::shared_ptr<protocol::TProtocol> p;
    if (strncmp(proto, "header-", 7) == 0) {
        t = sock;
        bool compact = strcmp(proto, "header-binary") != 0;
        auto hp = std::make_shared<protocol::THeaderProtocol>(
            sock, compact ? protocol::T_COMPACT_PROTOCOL : protocol::T_BINARY_PROTOCOL);
        hp->setHeader("x-from", "apache-cpp");
        if (strcmp(proto, "header-zlib") == 0)
            std::dynamic_pointer_cast<transport::THeaderTransport>(hp->getTransport())
                ->setTransform(transport::THeaderTransport::ZLIB_TRANSFORM);
        p = hp;
    } else {
        t = std::make_shared<transport::TFramedTransport>(sock);
        if (strcmp(proto, "compact") == 0)
            p = std::make_shared<protocol::TCompactProtocol>(t);
        else if (strcmp(proto, "json") == 0)
            p = std::make_shared<protocol::TJSONProtocol>(t);
        else
            p = std::make_shared<protocol::TBinaryProtocol>(t);
    }
    if (mux) p = std::make_shared<protocol::TMultiplexedProtocol>(p, "Bench");
    bench::BenchClient c(p);
    try {
        t->open();
        for (int64_t i = 0; i < 100; i++)
            if (c.add(i, 1000000000000LL) != i + 1000000000000LL) {
                printf("add mismatch\n");
                return 1;
            }
        std::string big(1 << 20, 'q'), got;
        c.echo(got, big);
        if (got != big) {
            printf("echo mismatch\n");
            return 1;
        }
        c.sleep_us(500);
        t->close();
    } catch (std::exception &e) {
        printf("exception: %s\n", e.what());
        return 1;
    }
    printf("ok\n");
    return 0;
}
