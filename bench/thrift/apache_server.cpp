// The peer for bench/thrift: Apache Thrift's own half-sync/half-async server,
// TNonblockingServer with 1 IO thread and a ThreadManager of N workers
// (default 4), framed binary, implementing bench.thrift.
//   apache-thrift-bench PORT [WORKERS [MODE]]
// MODE (for tests/integration/test_thrift_interop.py): binary (the default,
// the benchmark's peer), compact, multiplexed (binary, Bench served by a
// TMultiplexedProcessor under the name "Bench"), header (TThreadedServer
// with THeaderProtocol: THeader frames, binary or compact inside, zlib).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <unistd.h>

#include <thrift/concurrency/ThreadFactory.h>
#include <thrift/concurrency/ThreadManager.h>
#include <thrift/processor/TMultiplexedProcessor.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/protocol/THeaderProtocol.h>
#include <thrift/server/TNonblockingServer.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TNonblockingServerSocket.h>
#include <thrift/transport/TServerSocket.h>

#include <cstring>
#include <string>

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
        fprintf(stderr, "usage: apache-thrift-bench PORT [WORKERS [binary|compact|multiplexed|"
                        "header]]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int workers = argc > 2 ? atoi(argv[2]) : 4;
    std::string mode = argc > 3 ? argv[3] : "binary";
    std::shared_ptr<TProcessor> processor =
        std::make_shared<bench::BenchProcessor>(std::make_shared<Handler>());
    if (mode == "header") {
        auto ss = std::make_shared<transport::TServerSocket>("127.0.0.1", port);
        server::TThreadedServer srv(processor, ss,
                                    std::make_shared<transport::TBufferedTransportFactory>(),
                                    std::make_shared<protocol::THeaderProtocolFactory>());
        printf("listening on %d\n", port);
        fflush(stdout);
        srv.serve();
        return 0;
    }
    if (mode == "multiplexed") {
        auto mp = std::make_shared<TMultiplexedProcessor>();
        mp->registerProcessor("Bench", processor);
        processor = mp;
    }
    std::shared_ptr<protocol::TProtocolFactory> pf;
    if (mode == "compact")
        pf = std::make_shared<protocol::TCompactProtocolFactory>();
    else
        pf = std::make_shared<protocol::TBinaryProtocolFactory>();
    auto tm = concurrency::ThreadManager::newSimpleThreadManager(workers);
    tm->threadFactory(std::make_shared<concurrency::ThreadFactory>());
    tm->start();
    auto sock = std::make_shared<transport::TNonblockingServerSocket>("127.0.0.1", port);
    server::TNonblockingServer srv(processor, pf, sock, tm);
    /* IO threads: $APACHE_IO_THREADS (bench/thrift/run sets it to knit's
     * reactor count), 1 by default. */
    const char *iot = getenv("APACHE_IO_THREADS");
    int io_threads = iot && atoi(iot) > 0 ? atoi(iot) : 1;
    srv.setNumIOThreads(static_cast<size_t>(io_threads));
    printf("listening on %d\n", port);
    fflush(stdout);
    srv.serve();
    return 0;
}
