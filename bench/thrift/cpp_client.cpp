// Apache Thrift's C++ client against a bench.thrift server (used by
// tests/integration/test_thrift_interop.py): framed transport, binary or
// compact protocol. Prints "ok" and exits 0 when every check passed.
//   thrift-cpp-client PORT binary|compact
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include "Bench.h"

using namespace apache::thrift;

int main(int argc, char **argv)
{
    if (argc < 3) return 2;
    auto sock = std::make_shared<transport::TSocket>("127.0.0.1", atoi(argv[1]));
    auto t = std::make_shared<transport::TFramedTransport>(sock);
    std::shared_ptr<protocol::TProtocol> p;
    if (strcmp(argv[2], "compact") == 0)
        p = std::make_shared<protocol::TCompactProtocol>(t);
    else
        p = std::make_shared<protocol::TBinaryProtocol>(t);
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
