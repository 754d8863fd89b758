/* knit_echo.c — knit-stream-echo: an echo (or source) server on any knit
 * endpoint, used by the stream benchmarks and the integration tests.
 *
 *   knit-stream-echo [options] ENDPOINT...
 *     --seconds N       stop after N seconds (default 60; servers stop by themselves)
 *     --max-conns N     per-listener connection limit
 *     --nofile N        set the soft RLIMIT_NOFILE first (EMFILE tests)
 *     --source BYTES    instead of echoing, send BYTES to each client with
 *                       producer flow control, then close (slow-reader test)
 *     --line            line mode: echo each "\n"-terminated line (max 1024)
 *     --http            answer each request head with a tiny HTTP/1.1 200 "knit\n"
 *                       and close (for curl over ssl:)
 *
 *   knit-stream-echo --connect CLIENT-ENDPOINT [--send TEXT] [--seconds N]
 *       Client mode: connect, send TEXT (default "hello\n"), print what
 *       comes back until the peer closes or TEXT's length arrived; prints
 *       "connected KIND alpn=… resumed=…" first, or "connect failed: …".
 *
 * Prints "listening ADDRESS" for each endpoint once ready, then, on SIGTERM /
 * SIGINT / --seconds, a final line:
 *   stats accepted=N open=N emfile=N max_outbuf=N closes=done:N,peer_closed:N,...
 * SIGUSR1 prints "rss_kb=N heap_inuse=BYTES open=N" (heap_inuse: malloc's
 * in-use bytes, mallinfo2().uordblks — live memory, unlike RSS).
 */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/tls.h"

typedef struct echo {
    knit_protocol proto;
    size_t to_send;
    bool paused;
} echo;

static size_t source_bytes, max_outbuf, open_conns;
static bool line_mode, http_mode;
static uint64_t closes[KNIT_CLOSE__COUNT];
static knit_listener *listeners[16];
static int nlisteners;
static knit_reactor *R;

static void track(knit_transport *t)
{
    size_t b = knit_transport_write_buffer_size(t);
    if (b > max_outbuf) max_outbuf = b;
}

static void fill(echo *e)
{
    static char chunk[16384];
    while (!e->paused && e->to_send && e->proto.transport) {
        size_t n = e->to_send < sizeof chunk ? e->to_send : sizeof chunk;
        knit_transport_write(e->proto.transport, chunk, n);
        e->to_send -= n;
        track(e->proto.transport);
    }
    if (!e->to_send && e->proto.transport) knit_transport_lose_connection(e->proto.transport);
}

static void made(knit_protocol *p)
{
    open_conns++;
    if (source_bytes) {
        echo *e = (echo *)p;
        e->to_send = source_bytes;
        fill(e);
    }
}

static void data(knit_protocol *p, knit_buf *in)
{
    if (source_bytes) {
        knit_buf_consume(in, knit_buf_len(in));
        return;
    }
    if (http_mode) {
        if (knit_buf_find(in, 0, '\n') < 0) return; /* good enough for curl's request head */
        static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n"
                                   "Content-Type: text/plain\r\n\r\nknit\n";
        knit_buf_consume(in, knit_buf_len(in));
        knit_transport_write(p->transport, resp, sizeof resp - 1);
        knit_transport_lose_connection(p->transport);
        return;
    }
    if (line_mode) {
        for (;;) {
            long nl = knit_buf_find(in, 0, '\n');
            if (nl < 0) {
                if (knit_buf_len(in) > 1024)
                    knit_transport_close_with(p->transport, true, KNIT_CLOSE_PROTOCOL_ERROR,
                                              KNIT_ELIMIT);
                return;
            }
            knit_transport_write(p->transport, knit_buf_data(in), (size_t)nl + 1);
            knit_buf_consume(in, (size_t)nl + 1);
        }
    }
    knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in));
    knit_buf_consume(in, knit_buf_len(in));
    track(p->transport);
}

static void lost(knit_protocol *p, knit_close_reason reason, int err)
{
    open_conns--;
    closes[reason]++;
    free(p);
}

static void pause_p(knit_protocol *p)
{
    ((echo *)p)->paused = true;
}
static void resume_p(knit_protocol *p)
{
    echo *e = (echo *)p;
    e->paused = false;
    fill(e);
}

static const knit_protocol_ops ops = {made, data, NULL, lost, pause_p, resume_p, "echo"};

static knit_protocol *build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    echo *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->proto.ops = &ops;
    return &e->proto;
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

/* ---- client mode ---------------------------------------------------------- */
static const char *connect_desc, *send_text = "hello\n";
static int client_rc = 1;
static size_t client_got;

static void cl_made(knit_protocol *p)
{
    char alpn[64] = "";
    knit_tls_alpn(p->transport, alpn, sizeof alpn);
    printf("connected %s alpn=%s resumed=%d\n", knit_transport_kind(p->transport), alpn,
           (int)knit_tls_session_reused(p->transport));
    fflush(stdout);
    knit_transport_write(p->transport, send_text, strlen(send_text));
}

static void cl_data(knit_protocol *p, knit_buf *in)
{
    fwrite(knit_buf_data(in), 1, knit_buf_len(in), stdout);
    fflush(stdout);
    client_got += knit_buf_len(in);
    knit_buf_consume(in, knit_buf_len(in));
    if (client_got >= strlen(send_text)) knit_transport_lose_connection(p->transport);
}

static void cl_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    printf("\nclosed %s\n", knit_close_reason_name(reason));
    client_rc = 0;
    free(p);
    knit_reactor_stop(R);
}

static const knit_protocol_ops cl_ops = {cl_made, cl_data, NULL, cl_lost, NULL, NULL, "echo_client"};

static knit_protocol *cl_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    knit_protocol *p = calloc(1, sizeof *p);
    if (p) p->ops = &cl_ops;
    return p;
}

static void cl_done(knit_connect *c, knit_protocol *p, int err, void *arg)
{
    if (err) {
        printf("connect failed: %s %s\n", knit_err_name(err),
               err == KNIT_ETLS ? knit_tls_last_error() : knit_strerror(err));
        fflush(stdout);
        knit_reactor_stop(R);
    }
}

static void cl_timeout(knit_reactor *r, void *arg)
{
    knit_reactor_stop(r);
}

static int client_main(const char *desc, long seconds)
{
    signal(SIGPIPE, SIG_IGN);
    if (knit_reactor_new(&R, NULL) < 0) return 1;
    static knit_protocol_factory f = {cl_build, NULL};
    char err[KNIT_ENDPOINT_ERRLEN];
    if (knit_endpoint_connect(R, desc, &f, NULL, cl_done, NULL, NULL, err, sizeof err) < 0) {
        printf("connect failed: %s\n", err);
        return 1;
    }
    knit_call_later(R, KNIT_SEC(seconds), cl_timeout, NULL);
    knit_reactor_run(R);
    return client_rc;
}

static void on_stop(knit_reactor *r, int signo, void *arg)
{
    knit_reactor_stop(r);
}
static void on_timer(knit_reactor *r, void *arg)
{
    knit_reactor_stop(r);
}
static void on_usr1(knit_reactor *r, int signo, void *arg)
{
    struct mallinfo2 mi = mallinfo2();
    printf("rss_kb=%ld heap_inuse=%zu open=%zu\n", rss_kb(), mi.uordblks, open_conns);
    fflush(stdout);
}

static uint64_t accepted, emfile;

static void close_listeners(knit_reactor *r, knit_trigger *t, void *arg)
{
    for (int i = 0; i < nlisteners; i++) {
        accepted += knit_listener_accepted(listeners[i]);
        emfile += knit_listener_emfile_events(listeners[i]);
        knit_listener_close(listeners[i], true);
    }
    nlisteners = 0;
    knit_trigger_done(t);
}

int main(int argc, char **argv)
{
    long seconds = 60;
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atol(argv[++i]);
        else if (!strcmp(argv[i], "--max-conns") && i + 1 < argc)
            lo.max_connections = (unsigned)atol(argv[++i]);
        else if (!strcmp(argv[i], "--source") && i + 1 < argc)
            source_bytes = (size_t)atoll(argv[++i]);
        else if (!strcmp(argv[i], "--line"))
            line_mode = true;
        else if (!strcmp(argv[i], "--http"))
            http_mode = true;
        else if (!strcmp(argv[i], "--connect") && i + 1 < argc)
            connect_desc = argv[++i];
        else if (!strcmp(argv[i], "--send") && i + 1 < argc)
            send_text = argv[++i];
        else if (!strcmp(argv[i], "--nofile") && i + 1 < argc) {
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = (rlim_t)atol(argv[++i]);
            if (setrlimit(RLIMIT_NOFILE, &rl) < 0) perror("setrlimit");
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (connect_desc) return client_main(connect_desc, seconds);
    if (i >= argc) {
        fprintf(stderr, "usage: knit-stream-echo [options] ENDPOINT...\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (knit_reactor_new(&R, NULL) < 0) return 1;
    knit_signal *s1, *s2, *s3;
    knit_signal_start(R, SIGTERM, on_stop, NULL, &s1);
    knit_signal_start(R, SIGINT, on_stop, NULL, &s2);
    knit_signal_start(R, SIGUSR1, on_usr1, NULL, &s3);
    static knit_protocol_factory f = {build, NULL};
    for (; i < argc && nlisteners < 16; i++) {
        char err[KNIT_ENDPOINT_ERRLEN];
        knit_listener *l;
        int rc = knit_endpoint_listen(R, argv[i], &f, &lo, &l, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "knit-stream-echo: %s\n", err);
            return 1;
        }
        listeners[nlisteners++] = l;
        knit_sockaddr a;
        char buf[160] = "-";
        if (knit_listener_address(l, &a) == 0) knit_sockaddr_format(&a, buf, sizeof buf);
        printf("listening %s\n", buf);
    }
    fflush(stdout);
    knit_reactor_add_trigger(R, KNIT_PHASE_BEFORE, close_listeners, NULL, NULL);
    knit_call_later(R, KNIT_SEC(seconds), on_timer, NULL);
    knit_reactor_run(R);
    /* let aborted connections deliver connection_lost */
    for (int k = 0; k < 10 && open_conns; k++)
        knit_reactor_run_once(R, KNIT_MSEC(10));
    printf("stats open=%zu max_outbuf=%zu rss_kb=%ld closes=", open_conns, max_outbuf, rss_kb());
    for (int k = 0; k < KNIT_CLOSE__COUNT; k++)
        if (closes[k])
            printf("%s:%llu,", knit_close_reason_name((knit_close_reason)k),
                   (unsigned long long)closes[k]);
    printf(" accepted=%llu emfile=%llu\n", (unsigned long long)accepted,
           (unsigned long long)emfile);
    fflush(stdout);
    return 0;
}
