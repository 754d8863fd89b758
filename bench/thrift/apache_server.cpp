// The peer for bench/thrift: Apache Thrift's own half-sync/half-async server,
// TNonblockingServer with 1 IO thread and a ThreadManager of N workers
// (default 4), framed binary, implementing bench.thrift.
//   apache-thrift-bench PORT [WORKERS]
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <unistd.h>

#include <thrift/concurrency/ThreadFactory.h>
#include <thrift/concurrency/ThreadManager.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TNonblockingServer.h>
#include <thrift/transport/TNonblockingServerSocket.h>

#include "Bench.h"

using namespace apache::thrift;

class Handler : public bench::BenchIf {
  public:
    void echo(std::string &ret, const std::string &s) override { ret = s; }
    int64_t add(const int64_t a, const int64_t b) override { return a + b; }
    void sleep_us(const int32_t us) override
    {
        if (us > 0) usleep((useconds_t)us);
    }
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: apache-thrift-bench PORT [WORKERS]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int workers = argc > 2 ? atoi(argv[2]) : 4;
    auto processor = std::make_shared<bench::BenchProcessor>(std::make_shared<Handler>());
    auto pf = std::make_shared<protocol::TBinaryProtocolFactory>();
    auto tm = concurrency::ThreadManager::newSimpleThreadManager(workers);
    tm->threadFactory(std::make_shared<concurrency::ThreadFactory>());
    tm->start();
    auto sock = std::make_shared<transport::TNonblockingServerSocket>("127.0.0.1", port);
    server::TNonblockingServer srv(processor, pf, sock, tm);
    srv.setNumIOThreads(1);
    printf("listening on %d\n", port);
    fflush(stdout);
    srv.serve();
    return 0;
}
