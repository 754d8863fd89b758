/* libFuzzer target for the manhole's line protocol (src/manhole/server.c:
 * conn_data/handle_line, the line framer, "\x01N" chunk headers, Ctrl-C,
 * then session.c's line assembly and evaluation), over a real UNIX socket.
 *
 * One reactor and one manhole listening on unix:/tmp/knit-fuzz-manhole-PID
 * live for the whole run. Each input is one connection: the harness sends a
 * fixed preamble chunk, then the input bytes, then half-closes, reading
 * everything the server answers until it closes the connection. Checks: the
 * server closes after the client's EOF, and every complete line it sent is
 * framed as the protocol says (<tag><text>'\n', tag '|', '~' or '+', the
 * first status "+ready"). ASan/UBSan catch the rest.
 *
 * Lua evaluation is part of the path, so the preamble takes away what could
 * touch the machine (os, io, package, require, dofile, loadfile, debug) or
 * run long inside one C call the instruction budget cannot interrupt
 * (string.find/match/gmatch/gsub/rep), and the manhole runs with a small
 * budget, memory limit and output cap.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/reactor.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static knit_reactor *reactor;
static knit_manhole *manhole;
static char path[108];

static const char preamble_code[] =
    "os, io, package, require, dofile, loadfile, debug = nil, nil, nil, nil, nil, nil, nil\n"
    "for _, k in ipairs({'find', 'match', 'gmatch', 'gsub', 'rep'}) do string[k] = nil end\n";

static void cleanup(void)
{
    unlink(path);
}

static void setup(void)
{
    knit_log_set_level(KNIT_LOG_OFF);
    if (knit_reactor_new(&reactor, NULL) != 0) abort();
    knit_manhole_options o;
    knit_manhole_options_init(&o);
    o.budget = 200000;
    o.memory_limit = 8u << 20;
    o.max_output = 4096;
    o.name = "fuzz";
    if (knit_manhole_new(&manhole, reactor, &o) != 0) abort();
    snprintf(path, sizeof path, "/tmp/knit-fuzz-manhole-%d", (int)getpid());
    char ep[160];
    snprintf(ep, sizeof ep, "unix:%s", path);
    if (knit_manhole_listen(manhole, ep) != 0) abort();
    atexit(cleanup);
}

/* The server's output, checked as it arrives: every line is <tag><text>
 * with tag '|', '~' or '+', and the second line (after the greeting) is
 * "+ready". A line cut by the connection's end is not judged. */
typedef struct framing {
    size_t line, col; /* current line number, bytes into it */
    char second[8];   /* the start of line 1 */
} framing;

static void check_framing(framing *f, const char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = out[i];
        if (f->col == 0) CHECK(c == '|' || c == '~' || c == '+'); /* never an empty line */
        if (f->line == 1 && f->col < sizeof f->second) f->second[f->col] = c;
        if (c != '\n') {
            f->col++;
            continue;
        }
        if (f->line == 1) CHECK(f->col == 6 && memcmp(f->second, "+ready", 6) == 0);
        f->line++;
        f->col = 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return 0;
    if (!reactor) setup();

    /* preamble chunk, then the input */
    char head[32];
    int hl = snprintf(head, sizeof head, "\x01%zu\n", sizeof preamble_code - 1);
    size_t total = (size_t)hl + sizeof preamble_code - 1 + size;
    char *msg = malloc(total ? total : 1);
    CHECK(msg);
    memcpy(msg, head, (size_t)hl);
    memcpy(msg + hl, preamble_code, sizeof preamble_code - 1);
    memcpy(msg + hl + sizeof preamble_code - 1, data, size);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);

    size_t sent = 0;
    static char out[65536];
    framing fr = {0};
    bool shut = false, eof = false;
    /* Bounded by libFuzzer's -timeout: a server that never closes is a hang. */
    while (!eof) {
        knit_reactor_run_once(reactor, 0);
        if (sent < total) {
            ssize_t w = send(fd, msg + sent, total - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                sent = total; /* closed */
        }
        if (sent == total && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        for (;;) {
            ssize_t r = recv(fd, out, sizeof out, 0);
            if (r > 0) {
                check_framing(&fr, out, (size_t)r);
                continue;
            }
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
            break;
        }
        if (!eof) {
            /* wait for the server (it is us: run the loop) or our socket */
            struct pollfd pfd = {fd, POLLIN, 0};
            (void)poll(&pfd, 1, 0);
            knit_reactor_run_once(reactor, KNIT_MSEC(1));
        }
    }
    close(fd);
    /* let the server finish its side of the connection */
    for (int i = 0; i < 100 && knit_manhole_connection_count(manhole) > 0; i++)
        knit_reactor_run_once(reactor, KNIT_MSEC(1));
    CHECK(knit_manhole_connection_count(manhole) == 0);
    CHECK(fr.line >= 2); /* greeting and +ready at least */
    free(msg);
    return 0;
}
