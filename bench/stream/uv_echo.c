/* uv_echo.c — the libuv peer for the stream benchmarks: an echo server on
 * 127.0.0.1:PORT (0 = any free port; prints "listening ADDR:PORT"), written
 * the way libuv's documentation shows (a read buffer allocated per read,
 * uv_write per chunk). SIGUSR1 prints "rss_kb=N open=N"; stops on SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static uv_loop_t *loop;
static size_t open_conns;

typedef struct wreq {
    uv_write_t req;
    uv_buf_t buf;
} wreq;

static void on_close(uv_handle_t *h)
{
    open_conns--;
    free(h);
}

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    free(w->buf.base);
    free(w);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = malloc(suggested);
    buf->len = suggested;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n > 0) {
        wreq *w = malloc(sizeof *w);
        w->buf = uv_buf_init(buf->base, (unsigned)n);
        uv_write(&w->req, s, &w->buf, 1, on_write);
        return;
    }
    free(buf->base);
    if (n < 0) uv_close((uv_handle_t *)s, on_close);
}

static void on_conn(uv_stream_t *server, int status)
{
    if (status < 0) return;
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(loop, c);
    if (uv_accept(server, (uv_stream_t *)c) == 0) {
        open_conns++;
        uv_tcp_nodelay(c, 1);
        uv_read_start((uv_stream_t *)c, alloc_cb, on_read);
    } else {
        uv_close((uv_handle_t *)c, NULL);
    }
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static void on_sig(uv_signal_t *s, int signo)
{
    if (signo == SIGUSR1) {
        printf("rss_kb=%ld open=%zu\n", rss_kb(), open_conns);
        fflush(stdout);
    } else {
        uv_stop(loop);
    }
}

int main(int argc, char **argv)
{
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 0, &a);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&a, 0) ||
        uv_listen((uv_stream_t *)&server, 511, on_conn)) {
        fprintf(stderr, "uv-echo: cannot listen\n");
        return 1;
    }
    int len = sizeof a;
    uv_tcp_getsockname(&server, (struct sockaddr *)&a, &len);
    printf("listening 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    uv_signal_t s1, s2;
    uv_signal_init(loop, &s1);
    uv_signal_start(&s1, on_sig, SIGUSR1);
    uv_signal_init(loop, &s2);
    uv_signal_start(&s2, on_sig, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
