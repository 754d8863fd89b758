/* load.c — knit-stream-load: a neutral load generator (plain epoll, no
 * knit) for the stream benchmarks, so every server is measured by the same
 * client.
 *
 *   knit-stream-load echo HOST PORT CONNS SIZE SECONDS
 *       CONNS connections, each sending SIZE bytes and waiting for the echo
 *       before sending again. Prints:
 *       msgs=N msgs_per_s=X mib_per_s=X p50_us=X p99_us=X max_us=X
 *   knit-stream-load idle HOST PORT N SOURCES
 *       Opens N connections, source addresses 127.0.0.1 .. 127.0.0.SOURCES
 *       in turn (so ports do not run short), prints "ready N" once all are
 *       established, holds them until stdin closes, then closes them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct conn {
    int fd;
    size_t sent, got;
    double t0;
} conn;

static struct sockaddr_in dest(const char *host, const char *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        exit(2);
    }
    return a;
}

static int echo_mode(char **argv)
{
    struct sockaddr_in a = dest(argv[0], argv[1]);
    int nconns = atoi(argv[2]);
    size_t size = (size_t)atol(argv[3]);
    double seconds = atof(argv[4]);
    char *msg = malloc(size), *buf = malloc(65536);
    memset(msg, 'x', size);
    int ep = epoll_create1(0);
    conn *cs = calloc((size_t)nconns, sizeof *cs);
    size_t cap = 1 << 22, nlat = 0;
    float *lat = malloc(cap * sizeof *lat);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        cs[i].t0 = now_us();
        cs[i].sent = (size_t)write(fd, msg, size);
    }
    double start = now_us(), end = start + seconds * 1e6;
    uint64_t msgs = 0;
    struct epoll_event evs[256];
    while (now_us() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            ssize_t k = read(c->fd, buf, 65536);
            if (k <= 0) {
                fprintf(stderr, "connection closed by server\n");
                return 1;
            }
            c->got += (size_t)k;
            if (c->sent < size) { /* finish a partial write (large SIZE) */
                ssize_t w = write(c->fd, msg + c->sent, size - c->sent);
                if (w > 0) c->sent += (size_t)w;
            }
            if (c->got >= size) {
                double t = now_us();
                if (nlat < cap) lat[nlat++] = (float)(t - c->t0);
                msgs++;
                c->got -= size;
                c->t0 = t;
                ssize_t w = write(c->fd, msg, size);
                c->sent = w > 0 ? (size_t)w : 0;
            }
        }
    }
    double el = (now_us() - start) / 1e6;
    qsort(lat, nlat, sizeof *lat, cmp);
    printf("msgs=%llu msgs_per_s=%.0f mib_per_s=%.1f p50_us=%.0f p99_us=%.0f max_us=%.0f\n",
           (unsigned long long)msgs, msgs / el, msgs * (double)size / el / 1048576.0,
           nlat ? lat[nlat / 2] : 0, nlat ? lat[(size_t)(nlat * 0.99)] : 0,
           nlat ? lat[nlat - 1] : 0);
    return 0;
}

static int idle_mode(char **argv)
{
    struct sockaddr_in a = dest(argv[0], argv[1]);
    int n = atoi(argv[2]), sources = atoi(argv[3]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 64 ? rl.rlim_max : (rlim_t)n + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int *fds = malloc((size_t)n * sizeof *fds);
    int ep = epoll_create1(0), pending = 0;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            perror("socket");
            return 1;
        }
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % sources));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            perror("bind");
            return 1;
        }
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
            perror("connect");
            return 1;
        }
        fds[i] = fd;
        struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        pending++;
        /* do not overrun the server's backlog: settle every 256 */
        while (pending > 256 || (i == n - 1 && pending > 0)) {
            struct epoll_event evs[256];
            int k = epoll_wait(ep, evs, 256, 5000);
            if (k <= 0) {
                fprintf(stderr, "connect stalled with %d pending\n", pending);
                return 1;
            }
            for (int j = 0; j < k; j++) {
                int err = 0;
                socklen_t sl = sizeof err;
                getsockopt(evs[j].data.fd, SOL_SOCKET, SO_ERROR, &err, &sl);
                if (err) {
                    fprintf(stderr, "connect: %s\n", strerror(err));
                    return 1;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, evs[j].data.fd, NULL);
                pending--;
            }
        }
    }
    printf("ready %d\n", n);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 7 && !strcmp(argv[1], "echo")) return echo_mode(argv + 2);
    if (argc == 6 && !strcmp(argv[1], "idle")) return idle_mode(argv + 2);
    fprintf(stderr, "usage: knit-stream-load echo HOST PORT CONNS SIZE SECONDS\n"
                    "       knit-stream-load idle HOST PORT N SOURCES\n");
    return 2;
}
