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
 *
 * Prints "listening ADDRESS" for each endpoint once ready, then, on SIGTERM /
 * SIGINT / --seconds, a final line:
 *   stats accepted=N open=N emfile=N max_outbuf=N closes=done:N,peer_closed:N,...
 * SIGUSR1 prints "rss_kb=N open=N" (used by the idle-connection benchmark).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"

typedef struct echo {
    knit_protocol proto;
    size_t to_send;
    bool paused;
} echo;

static size_t source_bytes, max_outbuf, open_conns;
static bool line_mode;
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

static void pause_p(knit_protocol *p) { ((echo *)p)->paused = true; }
static void resume_p(knit_protocol *p)
{
    echo *e = (echo *)p;
    e->paused = false;
    fill(e);
}

static const knit_protocol_ops ops = {made, data, NULL, lost, pause_p, resume_p};

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

static void on_stop(knit_reactor *r, int signo, void *arg) { knit_reactor_stop(r); }
static void on_timer(knit_reactor *r, void *arg) { knit_reactor_stop(r); }
static void on_usr1(knit_reactor *r, int signo, void *arg)
{
    printf("rss_kb=%ld open=%zu\n", rss_kb(), open_conns);
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
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atol(argv[++i]);
        else if (!strcmp(argv[i], "--max-conns") && i + 1 < argc)
            lo.max_connections = (unsigned)atol(argv[++i]);
        else if (!strcmp(argv[i], "--source") && i + 1 < argc)
            source_bytes = (size_t)atoll(argv[++i]);
        else if (!strcmp(argv[i], "--line")) line_mode = true;
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
        if (closes[k]) printf("%s:%llu,", knit_close_reason_name((knit_close_reason)k),
                              (unsigned long long)closes[k]);
    printf(" accepted=%llu emfile=%llu\n", (unsigned long long)accepted,
           (unsigned long long)emfile);
    fflush(stdout);
    return 0;
}
