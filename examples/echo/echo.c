/* knit-echo — a TCP echo server on the bare reactor (knit_io watches, a
 * timer, signals). It shows the layer under streams: every connection is an
 * embedded knit_io, SIGINT/SIGTERM stop the loop through the shutdown phases,
 * and a timer logs the loop statistics every 10 seconds.
 *
 *   knit-echo [PORT]      (default 7007, bound to 127.0.0.1)
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"

typedef struct conn {
    knit_io io;
    char buf[4096];
    size_t len; /* bytes waiting to be echoed back */
} conn;

static size_t nconns;

static void conn_close(conn *c)
{
    knit_io_stop(&c->io);
    close(knit_io_fd(&c->io));
    free(c);
    nconns--;
}

static void on_conn(knit_io *io, unsigned ev)
{
    conn *c = io->data;
    if (c->len == 0 && (ev & KNIT_READABLE)) {
        ssize_t n = read(knit_io_fd(io), c->buf, sizeof c->buf);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (n > 0) c->len = (size_t)n;
    }
    if (c->len > 0) {
        ssize_t w = write(knit_io_fd(io), c->buf, c->len);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            conn_close(c);
            return;
        }
        if (w > 0) {
            memmove(c->buf, c->buf + w, c->len - (size_t)w);
            c->len -= (size_t)w;
        }
    }
    /* Backpressure: while output is pending, stop reading. */
    knit_io_start(io, c->len ? KNIT_WRITABLE : KNIT_READABLE);
}

static void on_accept(knit_io *io, unsigned ev)
{
    for (;;) {
        int fd = accept4(knit_io_fd(io), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                KNIT_WARN("echo", "accept: %s", knit_strerror(-errno));
            return;
        }
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        knit_io_init(io->_r, &c->io, fd, on_conn, c);
        if (knit_io_start(&c->io, KNIT_READABLE) < 0) {
            close(fd);
            free(c);
            continue;
        }
        nconns++;
    }
}

static void on_signal(knit_reactor *r, int signo, void *arg)
{
    KNIT_INFO("echo", "%s received, stopping", strsignal(signo));
    knit_reactor_stop(r);
}

static knit_timer stats_timer;

static void log_stats(knit_reactor *r, void *arg)
{
    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    KNIT_INFO("echo", "connections=%zu iterations=%llu events=%llu lag_max_us=%lld", nconns,
              (unsigned long long)st.iterations, (unsigned long long)st.events,
              (long long)(st.lag_max / 1000));
    stats_timer = knit_call_later(r, KNIT_SEC(10), log_stats, NULL);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7007;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "knit-echo: bad port '%s' (expected 1-65535)\n", argv[1]);
        return 2;
    }
    knit_reactor *r;
    int rc = knit_reactor_new(&r, NULL);
    if (rc < 0) {
        fprintf(stderr, "knit-echo: %s\n", knit_strerror(rc));
        return 1;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 511) < 0) {
        fprintf(stderr, "knit-echo: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    knit_io lio;
    knit_io_init(r, &lio, lfd, on_accept, NULL);
    knit_io_start(&lio, KNIT_READABLE);
    knit_signal *s1, *s2;
    knit_signal_start(r, SIGINT, on_signal, NULL, &s1);
    knit_signal_start(r, SIGTERM, on_signal, NULL, &s2);
    stats_timer = knit_call_later(r, KNIT_SEC(10), log_stats, NULL);

    printf("knit-echo listening on 127.0.0.1:%d\n", port);
    printf("try:  exec 3<>/dev/tcp/127.0.0.1/%d; echo hello >&3; head -1 <&3\n", port);
    printf("Ctrl-C (or SIGTERM) stops the server.\n");
    fflush(stdout);
    knit_reactor_run(r);

    knit_timer_cancel(r, stats_timer);
    knit_io_stop(&lio);
    close(lfd);
    knit_signal_stop(s1);
    knit_signal_stop(s2);
    knit_reactor_free(r); /* open echo connections are dropped with the process */
    return 0;
}
