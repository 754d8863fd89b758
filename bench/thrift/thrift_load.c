/* thrift-load — a Thrift load generator for bench/thrift.
 *
 *   thrift-load PORT CONNS SECONDS METHOD [ARG] [binary|compact] [header]
 *     METHOD add            add(1, 2)
 *            echo SIZE      echo of SIZE bytes
 *            sleep_us US    sleep_us(US)
 *
 * CONNS connections to 127.0.0.1:PORT, each making synchronous calls (send
 * one framed call, wait for its reply, send the next), all driven by one
 * epoll loop on one thread. After a 0.5 s warm-up it counts replies for
 * SECONDS and prints one line:
 *   calls=N rate=R p50_us=X p99_us=Y errors=E
 * Replies are checked to be REPLY messages with the right seqid. Each
 * connection encodes its request once and resends the same bytes (one call
 * outstanding per connection, so the constant seqid is unambiguous).
 * "header": the calls go in THeader frames (the protocol inside, no info
 * headers) and the replies' THeader frames are checked the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "knit/thrift.h"

typedef struct lconn {
    int fd;
    int32_t seqid;
    uint8_t *req;
    size_t req_len, sent;
    uint8_t *in;
    size_t in_len, in_cap;
    int64_t t0;
} lconn;

static knit_thrift_proto proto = KNIT_THRIFT_BINARY;
static bool header;
static const char *method;
static long arg;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void build_request(lconn *c)
{
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, proto);
    static const uint8_t zero[4];
    knit_thrift_write_raw(&w, zero, 4);
    knit_thrift_write_message_begin(&w, method, strlen(method), KNIT_THRIFT_CALL, c->seqid);
    knit_thrift_write_struct_begin(&w);
    if (strcmp(method, "add") == 0) {
        knit_thrift_write_field_begin(&w, KNIT_TT_I64, 1);
        knit_thrift_write_i64(&w, 1);
        knit_thrift_write_field_begin(&w, KNIT_TT_I64, 2);
        knit_thrift_write_i64(&w, 2);
    } else if (strcmp(method, "echo") == 0) {
        static char *payload;
        if (!payload) {
            payload = malloc((size_t)arg + 1);
            memset(payload, 'e', (size_t)arg);
        }
        knit_thrift_write_field_begin(&w, KNIT_TT_STRING, 1);
        knit_thrift_write_binary(&w, payload, (size_t)arg);
    } else {
        knit_thrift_write_field_begin(&w, KNIT_TT_I32, 1);
        knit_thrift_write_i32(&w, (int32_t)arg);
    }
    knit_thrift_write_field_stop(&w);
    knit_thrift_write_struct_end(&w);
    knit_thrift_put_be32(w.data, (uint32_t)(w.len - 4));
    if (header) {
        knit_thrift_writer h;
        knit_thrift_writer_init(&h, proto);
        knit_thrift_header_write(&h, 0, c->seqid, proto, false, NULL, 0, w.data + 4, w.len - 4);
        knit_thrift_writer_free(&w);
        w = h;
    }
    free(c->req);
    c->req = knit_thrift_writer_take(&w, &c->req_len);
    c->sent = 0;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr,
                "usage: thrift-load PORT CONNS SECONDS add|echo SIZE|sleep_us US [binary|compact] "
                "[header]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int nconns = atoi(argv[2]);
    double seconds = atof(argv[3]);
    method = argv[4];
    int ai = 5;
    if (strcmp(method, "add") != 0) arg = argc > ai ? atol(argv[ai++]) : 0;
    for (; ai < argc; ai++) {
        if (strcmp(argv[ai], "compact") == 0) proto = KNIT_THRIFT_COMPACT;
        if (strcmp(argv[ai], "header") == 0) header = true;
    }

    int ep = epoll_create1(0);
    lconn *cs = calloc((size_t)nconns, sizeof *cs);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(0x7f000001);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        cs[i].fd = fd;
        cs[i].seqid = i * 1000000;
        build_request(&cs[i]);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    size_t cap = 1 << 20, nlat = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    long calls = 0, errors = 0;
    int64_t start = now_ns();
    int64_t measure_from = start + 500000000LL;
    int64_t end = measure_from + (int64_t)(seconds * 1e9);
    for (int i = 0; i < nconns; i++) {
        cs[i].t0 = now_ns();
        ssize_t n = write(cs[i].fd, cs[i].req, cs[i].req_len);
        if (n > 0) cs[i].sent = (size_t)n;
    }
    struct epoll_event evs[256];
    for (;;) {
        int64_t t = now_ns();
        if (t >= end) break;
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            lconn *c = evs[k].data.ptr;
            if (c->sent < c->req_len) { /* finish a large request */
                ssize_t w = write(c->fd, c->req + c->sent, c->req_len - c->sent);
                if (w > 0) c->sent += (size_t)w;
                if (c->sent == c->req_len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (c->in_cap - c->in_len < 65536) {
                c->in_cap = c->in_cap ? c->in_cap * 2 : 131072;
                c->in = realloc(c->in, c->in_cap);
            }
            ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "thrift-load: connection closed by the server\n");
                return 1;
            }
            c->in_len += (size_t)r;
            if (c->in_len < 4) continue;
            uint32_t fl = knit_thrift_get_be32(c->in);
            if (c->in_len < 4 + (size_t)fl) continue;
            int64_t done = now_ns();
            const uint8_t *msg = c->in + 4;
            size_t ml = fl;
            knit_thrift_header hd;
            if (header) {
                if (knit_thrift_header_parse(msg, ml, &hd) == 0 && !hd.zlib) {
                    msg = hd.payload;
                    ml = hd.payload_len;
                } else {
                    ml = 0; /* counted as an error below */
                }
            }
            knit_thrift_reader rd;
            knit_thrift_reader_init(&rd, proto, msg, ml);
            const char *nm;
            size_t nl;
            knit_thrift_msg_type mt;
            int32_t seq;
            if (knit_thrift_read_message_begin(&rd, &nm, &nl, &mt, &seq) != 0 ||
                mt != KNIT_THRIFT_REPLY || seq != c->seqid)
                errors++;
            memmove(c->in, c->in + 4 + fl, c->in_len - 4 - fl);
            c->in_len -= 4 + (size_t)fl;
            if (done >= measure_from) {
                calls++;
                if (nlat == cap) {
                    cap *= 2;
                    lat = realloc(lat, cap * sizeof *lat);
                }
                lat[nlat++] = done - c->t0;
            }
            /* synchronous calls: one outstanding per connection, so the same
             * request bytes (and seqid) are reused — no encoding per call */
            c->sent = 0;
            c->t0 = now_ns();
            ssize_t w = write(c->fd, c->req, c->req_len);
            if (w > 0) c->sent = (size_t)w;
            if (c->sent < c->req_len) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
    }
    qsort(lat, nlat, sizeof *lat, cmp64);
    double p50 = nlat ? (double)lat[nlat / 2] / 1000.0 : 0;
    double p99 = nlat ? (double)lat[(size_t)((double)nlat * 0.99)] / 1000.0 : 0;
    printf("calls=%ld rate=%.0f p50_us=%.0f p99_us=%.0f errors=%ld\n", calls,
           (double)calls / seconds, p50, p99, errors);
    return errors ? 1 : 0;
}
