/* test_stream.c — transports and protocols: the memory transport, framing
 * helpers and receivers, and socket transports over socketpair()s driven by
 * a real reactor (echo, flow control, half-close, abort, idle memory). */
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/reactor.h"
#include "knit/stream.h"

/* ---- a recording protocol ------------------------------------------------- */

typedef struct rec {
    knit_protocol proto;
    knit_buf got;
    int made, lost, eofs, pauses, resumes;
    knit_close_reason reason;
    int err;
    bool echo;           /* write back what arrives */
    bool keep_half_open; /* eof_received returns true */
    bool consume;        /* consume input (else leave it) */
    size_t consume_max;  /* consume at most this per call (0: all) */
} rec;

static void r_made(knit_protocol *p)
{
    ((rec *)p)->made++;
}
static void r_data(knit_protocol *p, knit_buf *in)
{
    rec *r = (rec *)p;
    if (!r->consume) return;
    size_t n = knit_buf_len(in);
    if (r->consume_max && n > r->consume_max) n = r->consume_max;
    knit_buf_append(&r->got, knit_buf_data(in), n);
    if (r->echo) knit_transport_write(p->transport, knit_buf_data(in), n);
    knit_buf_consume(in, n);
}
static bool r_eof(knit_protocol *p)
{
    rec *r = (rec *)p;
    r->eofs++;
    return r->keep_half_open;
}
static void r_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    rec *r = (rec *)p;
    r->lost++;
    r->reason = reason;
    r->err = err;
}
static void r_pause(knit_protocol *p)
{
    ((rec *)p)->pauses++;
}
static void r_resume(knit_protocol *p)
{
    ((rec *)p)->resumes++;
}

static const knit_protocol_ops rec_ops = {r_made, r_data, r_eof, r_lost, r_pause, r_resume, "rec"};

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    r->proto.ops = &rec_ops;
    knit_buf_init(&r->got);
    r->consume = true;
}

/* ---- memory transport ----------------------------------------------------- */

static void test_memory_transport_basics(void **state)
{
    (void)state;
    rec r;
    rec_init(&r);
    r.echo = true;
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(&r.proto, &t), 0);
    assert_int_equal(r.made, 1);
    assert_ptr_equal(r.proto.transport, t);
    assert_string_equal(knit_transport_kind(t), "memory");
    assert_int_equal(knit_transport_fd(t), -1);
    knit_memory_transport_feed(t, "hello", 5);
    assert_int_equal(knit_buf_len(knit_memory_transport_output(t)), 5);
    assert_memory_equal(knit_buf_data(knit_memory_transport_output(t)), "hello", 5);
    knit_memory_transport_take(t, 5);
    assert_true(knit_buf_is_idle(knit_memory_transport_output(t)));
    knit_sockaddr a;
    assert_int_equal(knit_transport_peer(t, &a), KNIT_ENOTSUP);
    assert_int_equal(knit_transport_set_nodelay(t, true), KNIT_ENOTSUP);
    knit_transport_lose_connection(t);
    assert_true(knit_memory_transport_lose_requested(t));
    assert_true(knit_transport_closing(t));
    assert_int_equal(knit_transport_write(t, "x", 1), KNIT_ECLOSED);
    assert_int_equal(knit_memory_transport_requested_reason(t, NULL), KNIT_CLOSE_DONE);
    knit_memory_transport_close(t, KNIT_CLOSE_DONE, 0);
    knit_memory_transport_close(t, KNIT_CLOSE_DONE, 0); /* once only */
    assert_int_equal(r.lost, 1);
    assert_null(r.proto.transport);
    knit_memory_transport_free(t);
    knit_buf_release(&r.got);
}

static void test_memory_transport_flow_control(void **state)
{
    (void)state;
    rec r;
    rec_init(&r);
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(&r.proto, &t), 0);
    knit_transport_set_water_marks(t, 100, 10);
    char blob[60];
    memset(blob, 'x', sizeof blob);
    assert_int_equal(knit_transport_write(t, blob, 60), 0);
    assert_int_equal(r.pauses, 0);
    assert_int_equal(knit_transport_write(t, blob, 60), 0);
    assert_int_equal(r.pauses, 1);
    assert_true(knit_transport_producer_paused(t));
    assert_int_equal(knit_transport_write_buffer_size(t), 120);
    knit_memory_transport_take(t, 100); /* 20 left: still above low */
    assert_int_equal(r.resumes, 0);
    knit_memory_transport_take(t, 15);
    assert_int_equal(r.resumes, 1);
    assert_false(knit_transport_producer_paused(t));
    /* pause/resume reading holds input back */
    knit_transport_pause_reading(t);
    assert_true(knit_memory_transport_reading_paused(t));
    knit_memory_transport_feed(t, "abc", 3);
    assert_int_equal(knit_buf_len(&r.got), 0);
    knit_transport_resume_reading(t);
    assert_int_equal(knit_buf_len(&r.got), 3);
    /* half-close and abort flags */
    assert_int_equal(knit_transport_shutdown_write(t), 0);
    assert_true(knit_memory_transport_write_shut(t));
    assert_int_equal(knit_transport_write(t, "x", 1), KNIT_ECLOSED);
    knit_transport_abort(t);
    assert_true(knit_memory_transport_aborted(t));
    assert_int_equal(knit_memory_transport_requested_reason(t, NULL), KNIT_CLOSE_ABORTED);
    knit_memory_transport_close(t, KNIT_CLOSE_ABORTED, 0);
    knit_memory_transport_free(t);
    knit_buf_release(&r.got);
}

static void test_leftover_input_is_kept(void **state)
{
    (void)state;
    rec r;
    rec_init(&r);
    r.consume_max = 2;
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(&r.proto, &t), 0);
    knit_memory_transport_feed(t, "abcde", 5); /* consumes "ab" */
    knit_memory_transport_feed(t, "f", 1);     /* sees "cdef", consumes "cd" */
    assert_memory_equal(knit_buf_data(&r.got), "abcd", 4);
    r.consume_max = 0;
    knit_memory_transport_feed(t, "", 0);
    assert_int_equal(knit_buf_len(&r.got), 6);
    knit_memory_transport_close(t, KNIT_CLOSE_PEER, 0);
    assert_int_equal(r.reason, KNIT_CLOSE_PEER);
    knit_memory_transport_free(t);
    knit_buf_release(&r.got);
}

static void test_close_reason_names(void **state)
{
    (void)state;
    assert_string_equal(knit_close_reason_name(KNIT_CLOSE_DONE), "done");
    assert_string_equal(knit_close_reason_name(KNIT_CLOSE_PEER), "peer_closed");
    assert_string_equal(knit_close_reason_name(KNIT_CLOSE_PROXY_ERROR), "proxy_error");
    assert_string_equal(knit_close_reason_name(KNIT_CLOSE_NOMEM), "out_of_memory");
    assert_string_equal(knit_close_reason_name(KNIT_CLOSE__COUNT), "unknown");
    for (int i = 0; i < KNIT_CLOSE__COUNT; i++)
        assert_string_not_equal(knit_close_reason_name((knit_close_reason)i), "unknown");
}

/* ---- framing ---------------------------------------------------------------- */

static void test_line_framer(void **state)
{
    (void)state;
    knit_line_framer f;
    knit_line_framer_init(&f, NULL, 10);
    knit_buf in = KNIT_BUF_INIT;
    const char *line;
    size_t len;
    knit_buf_append_str(&in, "one\r\ntwo\r");
    assert_int_equal(knit_line_next(&f, &in, &line, &len), 1);
    assert_int_equal(len, 3);
    assert_memory_equal(line, "one", 3);
    assert_int_equal(knit_line_next(&f, &in, &line, &len), 0); /* "two\r" */
    knit_buf_append_str(&in, "\nthree\r\n");
    assert_int_equal(knit_line_next(&f, &in, &line, &len), 1);
    assert_memory_equal(line, "two", 3);
    assert_int_equal(knit_line_next(&f, &in, &line, &len), 1);
    assert_memory_equal(line, "three", 5);
    assert_int_equal(knit_line_next(&f, &in, &line, &len), 0);
    /* exactly max is fine, max+1 is not (also before the delimiter arrives) */
    knit_buf_append_str(&in, "0123456789\r\n");
    assert_int_equal(knit_line_next(&f, &in, &line, &len), 1);
    assert_int_equal(len, 10);
    knit_buf_append_str(&in, "0123456789A");
    assert_int_equal(knit_line_next(&f, &in, &line, &len), 0); /* might be "…9\r" + "\n" */
    knit_buf_append_str(&in, "B");
    assert_int_equal(knit_line_next(&f, &in, &line, &len), KNIT_ELIMIT);
    knit_buf_release(&in);
    /* custom one-byte delimiter, delivered byte by byte */
    knit_line_framer_init(&f, "\n", 0);
    assert_int_equal(f.max_line, KNIT_LINE_MAX_DEFAULT);
    const char *s = "ab\ncd\n";
    int lines = 0;
    for (size_t i = 0; i < strlen(s); i++) {
        knit_buf_append(&in, s + i, 1);
        while (knit_line_next(&f, &in, &line, &len) == 1)
            lines++;
    }
    assert_int_equal(lines, 2);
    knit_buf_release(&in);
}

static void test_frame_framer(void **state)
{
    (void)state;
    knit_frame_framer f;
    knit_frame_framer_init(&f, 8);
    knit_buf in = KNIT_BUF_INIT;
    const uint8_t *fr;
    size_t len;
    knit_buf_append(&in, "\0\0\0\3ab", 6);
    assert_int_equal(knit_frame_next(&f, &in, &fr, &len), 0);
    knit_buf_append(&in, "c\0\0\0", 4);
    assert_int_equal(knit_frame_next(&f, &in, &fr, &len), 1);
    assert_int_equal(len, 3);
    assert_memory_equal(fr, "abc", 3);
    assert_int_equal(knit_frame_next(&f, &in, &fr, &len), 0); /* 3 of 4 prefix bytes */
    knit_buf_append(&in, "\0", 1);
    assert_int_equal(knit_frame_next(&f, &in, &fr, &len), 1); /* empty frame */
    assert_int_equal(len, 0);
    knit_buf_append(&in, "\0\0\0\x09", 4);
    assert_int_equal(knit_frame_next(&f, &in, &fr, &len), KNIT_ELIMIT);
    knit_buf_release(&in);
}

typedef struct lines_seen {
    knit_line_receiver lr;
    int n;
    char last[32];
} lines_seen;

static void on_line(knit_line_receiver *lr, const char *line, size_t len)
{
    lines_seen *s = (lines_seen *)lr;
    s->n++;
    snprintf(s->last, sizeof s->last, "%.*s", (int)len, line);
    knit_line_receiver_send(lr, line, len);
}

static void lr_lost_noop(knit_line_receiver *lr, knit_close_reason r, int e) {}

static void test_line_receiver_overlong_closes(void **state)
{
    (void)state;
    lines_seen s;
    knit_line_receiver_init(&s.lr, "\n", 8);
    s.lr.line_received = on_line;
    s.lr.connection_lost = lr_lost_noop;
    s.n = 0;
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(&s.lr.proto, &t), 0);
    knit_memory_transport_feed(t, "hi\nthere\n", 9);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.last, "there");
    assert_int_equal(knit_buf_len(knit_memory_transport_output(t)), 9);
    knit_memory_transport_feed(t, "waytoolongline", 14);
    assert_int_equal(s.n, 2);
    assert_true(knit_memory_transport_lose_requested(t));
    int err;
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_PROTOCOL_ERROR);
    assert_int_equal(err, KNIT_ELIMIT);
    knit_memory_transport_close(t, KNIT_CLOSE_PROTOCOL_ERROR, KNIT_ELIMIT);
    knit_memory_transport_free(t);
}

typedef struct frames_seen {
    knit_frame_receiver fr;
    int n;
    size_t total;
} frames_seen;

static void on_frame(knit_frame_receiver *fr, const uint8_t *f, size_t len)
{
    frames_seen *s = (frames_seen *)fr;
    s->n++;
    s->total += len;
    knit_frame_write(fr->proto.transport, f, len);
}

static void test_frame_receiver(void **state)
{
    (void)state;
    frames_seen s = {0};
    knit_frame_receiver_init(&s.fr, 16);
    s.fr.frame_received = on_frame;
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(&s.fr.proto, &t), 0);
    const char msg[] = "\0\0\0\5hello\0\0\0\2hi";
    for (size_t i = 0; i < sizeof msg - 1; i++)
        knit_memory_transport_feed(t, msg + i, 1);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.total, 7);
    assert_memory_equal(knit_buf_data(knit_memory_transport_output(t)), msg, sizeof msg - 1);
    knit_memory_transport_feed(t, "\0\0\1\0", 4); /* 256 > 16 */
    assert_true(knit_memory_transport_lose_requested(t));
    knit_memory_transport_close(t, KNIT_CLOSE_PROTOCOL_ERROR, KNIT_ELIMIT);
    knit_memory_transport_free(t);
}

/* ---- socket transports over a real reactor ----------------------------------- */

static void pump(knit_reactor *r, bool (*done)(void *), void *arg)
{
    for (int i = 0; i < 100000 && !done(arg); i++)
        knit_reactor_run_once(r, KNIT_MSEC(50));
}

static bool lost_once(void *arg)
{
    return ((rec *)arg)->lost > 0;
}

/* The socket tests run twice: over AF_UNIX socketpairs and over TCP
 * loopback pairs (tcp_pairs), which on the io_uring backend take the
 * completion path (multishot receive into the shared buffer ring) while
 * UNIX sockets use readiness. */
static bool tcp_pairs;

static int tcp_on(void **state)
{
    (void)state;
    tcp_pairs = true;
    return 0;
}

static int tcp_off(void **state)
{
    (void)state;
    tcp_pairs = false;
    return 0;
}

/* On the io_uring backend a TCP transport's output goes out through the
 * ring: a write only queues it, and the send is submitted by the loop's
 * next io_uring_enter. (Kernels before 6.0 use readiness instead: then
 * these tests take the epoll meaning.) */
static bool ring_sends(knit_reactor *r)
{
    return tcp_pairs && strcmp(knit_reactor_backend(r), "io_uring") == 0;
}

/* Run the loop until T's output has gone to the socket (at once on the
 * readiness path), so that the test may then block reading the peer. */
static void drain_out(knit_reactor *r, knit_transport *t)
{
    for (int i = 0; i < 1000 && knit_transport_write_buffer_size(t) > 0; i++)
        knit_reactor_run_once(r, KNIT_MSEC(10));
    if (knit_transport_write_buffer_size(t) > 0)
        fail_msg("output still queued after 1000 loop turns: %zu bytes",
                 knit_transport_write_buffer_size(t));
}

static void sp(int fds[2])
{
    if (!tcp_pairs) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        return;
    }
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fds[1] >= 0);
    assert_int_equal(connect(fds[1], (struct sockaddr *)&a, sizeof a), 0);
    fds[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fds[0] >= 0);
    close(l);
}

static void test_socket_echo_and_peer_close(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    rec srv;
    rec_init(&srv);
    srv.echo = true;
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    assert_int_equal(srv.made, 1);
    assert_string_equal(knit_transport_kind(t), tcp_pairs ? "tcp" : "unix");
    assert_int_equal(knit_transport_set_nodelay(t, true), tcp_pairs ? 0 : KNIT_ENOTSUP);
    /* idle: the struct only — 168 bytes before the connection registry,
     * 200 with it (id, start time, bytes in/out: 32 bytes; the links were
     * already there). docs/benchmarks.md has the measured figure. */
    size_t idle = knit_transport_memory(t);
    assert_true(idle <= 200);
    assert_int_equal(write(fds[1], "ping", 4), 4);
    char buf[16];
    for (int i = 0; i < 100 && knit_buf_len(&srv.got) < 4; i++)
        knit_reactor_run_once(r, KNIT_MSEC(50));
    drain_out(r, t);
    assert_int_equal(read(fds[1], buf, sizeof buf), 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(knit_transport_memory(t), idle); /* back to idle, no buffers */
    close(fds[1]);
    pump(r, lost_once, &srv);
    assert_int_equal(srv.lost, 1);
    assert_int_equal(srv.eofs, 1);
    assert_int_equal(srv.reason, KNIT_CLOSE_PEER);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_socket_half_close(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    rec srv;
    rec_init(&srv);
    srv.keep_half_open = true;
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    assert_int_equal(write(fds[1], "question", 8), 8);
    shutdown(fds[1], SHUT_WR); /* peer half-closes */
    for (int i = 0; i < 100 && srv.eofs == 0; i++)
        knit_reactor_run_once(r, KNIT_MSEC(50));
    assert_int_equal(srv.eofs, 1);
    assert_int_equal(srv.lost, 0); /* still open for writing */
    assert_int_equal(knit_transport_write(t, "answer", 6), 0);
    assert_int_equal(knit_transport_shutdown_write(t), 0);
    pump(r, lost_once, &srv);
    assert_int_equal(srv.reason, KNIT_CLOSE_PEER);
    char buf[16];
    assert_int_equal(read(fds[1], buf, sizeof buf), 6);
    assert_int_equal(read(fds[1], buf, sizeof buf), 0); /* our FIN */
    close(fds[1]);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* abort() from inside data_received: connection_lost comes later, from the
 * loop, and the protocol's memory stays valid until then. */
typedef struct aborter {
    rec r;
} aborter;

static void ab_data(knit_protocol *p, knit_buf *in)
{
    knit_buf_consume(in, knit_buf_len(in));
    knit_transport_write(p->transport, "bye", 3);
    knit_transport_abort(p->transport);
    assert_int_equal(((rec *)p)->lost, 0);
    assert_int_equal(knit_transport_write(p->transport, "more", 4), KNIT_ECLOSED);
}

static void test_socket_abort_inside_callback(void **state)
{
    (void)state;
    static const knit_protocol_ops ops = {r_made, ab_data, NULL, r_lost, NULL, NULL, NULL};
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    rec srv;
    rec_init(&srv);
    srv.proto.ops = &ops;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, NULL), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    pump(r, lost_once, &srv);
    assert_int_equal(srv.reason, KNIT_CLOSE_ABORTED);
    close(fds[1]);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_socket_lose_connection_flushes(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    int small = 4096;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    size_t total = 1 << 20;
    char *blob = malloc(total);
    for (size_t i = 0; i < total; i++)
        blob[i] = (char)(i * 7);
    assert_int_equal(knit_transport_write(t, blob, total), 0);
    assert_true(knit_transport_write_buffer_size(t) > 0); /* the socket took only some */
    assert_int_equal(srv.pauses, 1);                      /* 1 MiB > high-water mark */
    knit_transport_lose_connection(t);
    /* read everything on the other side while the loop flushes */
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    char *got = malloc(total);
    size_t n = 0;
    while (!srv.lost) {
        knit_reactor_run_once(r, KNIT_MSEC(10));
        ssize_t k;
        while ((k = read(fds[1], got + n, total - n)) > 0)
            n += (size_t)k;
    }
    ssize_t k;
    while ((k = read(fds[1], got + n, total - n)) > 0)
        n += (size_t)k;
    assert_int_equal(n, total);
    assert_memory_equal(got, blob, total);
    assert_int_equal(srv.reason, KNIT_CLOSE_DONE);
    assert_int_equal(srv.resumes, 1);
    free(blob);
    free(got);
    close(fds[1]);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* A producer that honours pause_producing: writes while allowed. The peer
 * reads slowly; the output buffer must stay bounded by high + one chunk. */
typedef struct producer {
    knit_protocol proto;
    bool paused;
    size_t sent, max_buffered, limit;
    int lost;
} producer;

static void prod_fill(producer *p)
{
    static char chunk[8192];
    while (!p->paused && p->sent < p->limit && p->proto.transport) {
        knit_transport_write(p->proto.transport, chunk, sizeof chunk);
        p->sent += sizeof chunk;
        size_t b = knit_transport_write_buffer_size(p->proto.transport);
        if (b > p->max_buffered) p->max_buffered = b;
    }
    if (p->sent >= p->limit && p->proto.transport)
        knit_transport_lose_connection(p->proto.transport);
}
static void prod_made(knit_protocol *pr)
{
    prod_fill((producer *)pr);
}
static void prod_data(knit_protocol *pr, knit_buf *in)
{
    knit_buf_consume(in, knit_buf_len(in));
}
static void prod_lost(knit_protocol *pr, knit_close_reason r, int e)
{
    ((producer *)pr)->lost++;
}
static void prod_pause(knit_protocol *pr)
{
    ((producer *)pr)->paused = true;
}
static void prod_resume(knit_protocol *pr)
{
    producer *p = (producer *)pr;
    p->paused = false;
    prod_fill(p);
}

static void test_slow_reader_bounded_memory(void **state)
{
    (void)state;
    static const knit_protocol_ops ops = {prod_made,  prod_data,   NULL,      prod_lost,
                                          prod_pause, prod_resume, "producer"};
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    producer p = {.proto.ops = &ops, .limit = 8u << 20};
    knit_transport *t;
    /* adopt runs connection_made, which starts producing */
    assert_int_equal(knit_transport_adopt(r, fds[0], &p.proto, &t), 0);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    char buf[4096];
    size_t got = 0;
    while (!p.lost) {
        knit_reactor_run_once(r, KNIT_MSEC(10));
        ssize_t k = read(fds[1], buf, sizeof buf); /* slow: one small read per turn */
        if (k > 0) got += (size_t)k;
    }
    /* The rest, up to the EOF (over TCP some may still be on its way):
     * blocking, bounded by a receive timeout. */
    fcntl(fds[1], F_SETFL, 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t k;
    while ((k = read(fds[1], buf, sizeof buf)) > 0)
        got += (size_t)k;
    assert_int_equal(got, p.sent);
    assert_true(p.max_buffered <= KNIT_STREAM_HIGH_WATER + 8192);
    close(fds[1]);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_pause_reading_socket(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    knit_transport_pause_reading(t);
    assert_int_equal(write(fds[1], "abc", 3), 3);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(knit_buf_len(&srv.got), 0);
    knit_transport_resume_reading(t);
    for (int i = 0; i < 100 && knit_buf_len(&srv.got) < 3; i++)
        knit_reactor_run_once(r, KNIT_MSEC(50));
    assert_int_equal(knit_buf_len(&srv.got), 3);
    /* leftover bytes the protocol did not consume are redelivered */
    srv.consume_max = 1;
    assert_int_equal(write(fds[1], "xyz", 3), 3);
    for (int i = 0; i < 100 && knit_buf_len(&srv.got) < 4; i++)
        knit_reactor_run_once(r, KNIT_MSEC(50));
    assert_true(knit_transport_memory(t) > sizeof(void *) * 10); /* holds "yz" */
    srv.consume_max = 0;
    assert_int_equal(write(fds[1], "!", 1), 1);
    for (int i = 0; i < 100 && knit_buf_len(&srv.got) < 7; i++)
        knit_reactor_run_once(r, KNIT_MSEC(50));
    assert_memory_equal(knit_buf_data(&srv.got), "abcxyz!", 7);
    knit_transport_abort(t);
    pump(r, lost_once, &srv);
    close(fds[1]);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_peer_reset(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    close(fds[1]);
    /* writing to a closed peer: reported as reset through connection_lost */
    knit_transport_write(t, "x", 1);
    pump(r, lost_once, &srv);
    assert_true(srv.reason == KNIT_CLOSE_RESET || srv.reason == KNIT_CLOSE_PEER);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* A protocol that takes one line per call and pauses reading until the
 * test resumes it (like a server with one request in flight). The second
 * line arrived together with the first: resume must hand it back even though
 * the socket has nothing new. */
typedef struct one_at_a_time {
    rec r;
    int lines;
} one_at_a_time;

static void oat_data(knit_protocol *p, knit_buf *in)
{
    one_at_a_time *o = (one_at_a_time *)p;
    long nl = knit_buf_find(in, 0, '\n');
    if (nl < 0) return;
    knit_buf_consume(in, (size_t)nl + 1);
    o->lines++;
    knit_transport_pause_reading(p->transport);
}

/* ---- the registry (connections() in the manhole) ----------------------------- */

typedef struct reg_visit {
    uint64_t ids[8];
    size_t n;
    bool abort_all;
} reg_visit;

static void reg_collect(knit_transport *t, void *arg)
{
    reg_visit *v = arg;
    if (v->n < 8) v->ids[v->n] = knit_transport_id(t);
    v->n++;
    if (v->abort_all) knit_transport_abort(t); /* only queues the end */
}

static bool all_lost(void *arg)
{
    rec *c = arg;
    return c[0].lost && c[1].lost && c[2].lost;
}

static bool got4(void *arg)
{
    return knit_buf_len(&((rec *)arg)->got) >= 4;
}

static void test_registry(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    size_t before = knit_transports_count(NULL);
    int fds[3][2];
    rec c[3];
    knit_transport *t[3];
    for (int i = 0; i < 3; i++) {
        sp(fds[i]);
        rec_init(&c[i]);
        c[i].echo = true;
        assert_int_equal(knit_transport_adopt(r, fds[i][0], &c[i].proto, &t[i]), 0);
        assert_true(knit_transport_started(t[i]) <= knit_reactor_now(r));
        assert_string_equal(knit_transport_state(t[i]), "open");
    }
    assert_int_equal(knit_transports_count(r), 3);
    assert_int_equal(knit_transports_count(NULL), before + 3);

    /* visit: every transport once, in creation order, unique ids */
    reg_visit v = {0};
    assert_int_equal(knit_transports_visit(r, reg_collect, &v), 3);
    assert_int_equal(v.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(v.ids[i] > 0);
        assert_int_equal(v.ids[i], knit_transport_id(t[i]));
        assert_ptr_equal(knit_transport_find(r, v.ids[i]), t[i]);
        for (int j = 0; j < i; j++)
            assert_true(v.ids[i] != v.ids[j]);
    }
    assert_null(knit_transport_find(r, 0));

    /* a memory transport has an id but is on no list */
    rec m;
    rec_init(&m);
    knit_transport *mt;
    assert_int_equal(knit_memory_transport_new(&m.proto, &mt), 0);
    assert_true(knit_transport_id(mt) > v.ids[2]);
    assert_int_equal(knit_transports_count(r), 3);
    assert_null(knit_transport_find(NULL, knit_transport_id(mt)));
    knit_transport_write(mt, "abc", 3);
    knit_memory_transport_feed(mt, "de", 2);
    uint64_t bin = 0, bout = 0;
    knit_transport_bytes(mt, &bin, &bout);
    assert_int_equal(bin, 2);
    assert_int_equal(bout, 3);
    knit_memory_transport_close(mt, KNIT_CLOSE_DONE, 0);
    knit_memory_transport_free(mt);
    knit_buf_release(&m.got);

    /* bytes: 4 in, 4 echoed out */
    assert_int_equal(write(fds[1][1], "ping", 4), 4);
    pump(r, got4, &c[1]);
    drain_out(r, t[1]);
    char buf[8];
    assert_int_equal(read(fds[1][1], buf, sizeof buf), 4);
    knit_transport_bytes(t[1], &bin, &bout);
    assert_int_equal(bin, 4);
    assert_int_equal(bout, 4);
    knit_transport_bytes(t[0], &bin, NULL);
    assert_int_equal(bin, 0);

    /* states */
    knit_transport_pause_reading(t[2]);
    assert_true(knit_transport_reading_paused(t[2]));
    assert_string_equal(knit_transport_state(t[2]), "paused");
    knit_transport_resume_reading(t[2]);
    assert_string_equal(knit_transport_state(t[2]), "open");

    /* close by id: still listed while closing, gone once freed */
    uint64_t id1 = knit_transport_id(t[1]);
    knit_transport *found = knit_transport_find(r, id1);
    assert_ptr_equal(found, t[1]);
    knit_transport_lose_connection(found);
    assert_string_equal(knit_transport_state(t[1]), "closing");
    assert_int_equal(knit_transports_count(r), 3);
    pump(r, lost_once, &c[1]);
    for (int i = 0; i < 10; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(c[1].reason, KNIT_CLOSE_DONE);
    assert_null(knit_transport_find(r, id1));
    assert_int_equal(knit_transports_count(r), 2);

    /* a visitor may abort what it visits */
    reg_visit va = {.abort_all = true};
    assert_int_equal(knit_transports_visit(r, reg_collect, &va), 2);
    pump(r, all_lost, c);
    for (int i = 0; i < 10; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(c[0].reason, KNIT_CLOSE_ABORTED);
    assert_int_equal(c[2].reason, KNIT_CLOSE_ABORTED);
    assert_int_equal(knit_transports_count(r), 0);
    assert_int_equal(knit_transports_count(NULL), before);
    for (int i = 0; i < 3; i++) {
        close(fds[i][1]);
        knit_buf_release(&c[i].got);
    }
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_resume_redelivers_buffered_input(void **state)
{
    (void)state;
    static const knit_protocol_ops ops = {r_made, oat_data, NULL, r_lost, NULL, NULL, NULL};
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    one_at_a_time o;
    rec_init(&o.r);
    o.r.proto.ops = &ops;
    o.lines = 0;
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &o.r.proto, &t), 0);
    assert_int_equal(write(fds[1], "first\nsecond\n", 13), 13);
    for (int i = 0; i < 100 && o.lines < 1; i++)
        knit_reactor_run_once(r, KNIT_MSEC(20));
    assert_int_equal(o.lines, 1);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(o.lines, 1); /* paused */
    knit_transport_resume_reading(t);
    for (int i = 0; i < 100 && o.lines < 2; i++)
        knit_reactor_run_once(r, KNIT_MSEC(20));
    assert_int_equal(o.lines, 2);
    knit_transport_resume_reading(t);
    knit_transport_abort(t);
    pump(r, lost_once, &o.r);
    close(fds[1]);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_write_buf_paths(void **state)
{
    (void)state;
    /* memory transport: moved in, B left idle */
    rec m;
    rec_init(&m);
    knit_transport *mt;
    assert_int_equal(knit_memory_transport_new(&m.proto, &mt), 0);
    knit_buf b = KNIT_BUF_INIT;
    knit_buf_append_str(&b, "zero");
    assert_int_equal(knit_transport_write_buf(mt, &b), 0);
    assert_true(knit_buf_is_idle(&b));
    knit_buf_append_str(&b, "copy");
    assert_int_equal(knit_transport_write_buf(mt, &b), 0);
    assert_memory_equal(knit_buf_data(knit_memory_transport_output(mt)), "zerocopy", 8);
    knit_memory_transport_close(mt, KNIT_CLOSE_DONE, 0);
    knit_buf_append_str(&b, "late");
    assert_int_equal(knit_transport_write_buf(mt, &b), KNIT_ECLOSED);
    assert_true(knit_buf_is_idle(&b)); /* released even when refused */
    knit_memory_transport_free(mt);

    /* socket: straight to the socket when nothing is queued; the rest keeps
     * B's memory as the output buffer */
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    int small = 4096;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    knit_buf_append_str(&b, "hello");
    assert_int_equal(knit_transport_write_buf(t, &b), 0);
    /* (through the ring: queued until the loop submits the send) */
    assert_int_equal(knit_transport_write_buffer_size(t), ring_sends(r) ? 5 : 0);
    drain_out(r, t);
    char got[8];
    assert_int_equal(read(fds[1], got, sizeof got), 5);
    size_t big = 1 << 20;
    uint8_t *p = knit_buf_reserve(&b, big, NULL);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 13);
    knit_buf_commit(&b, big);
    assert_int_equal(knit_transport_write_buf(t, &b), 0);
    assert_true(knit_buf_is_idle(&b));
    assert_true(knit_transport_write_buffer_size(t) > 0);
    knit_buf_append_str(&b, "tail"); /* queued behind: appended */
    assert_int_equal(knit_transport_write_buf(t, &b), 0);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    uint8_t *all = malloc(big + 4);
    size_t n = 0;
    for (int i = 0; i < 100000 && n < big + 4; i++) {
        knit_reactor_run_once(r, KNIT_MSEC(10));
        ssize_t k;
        while ((k = read(fds[1], all + n, big + 4 - n)) > 0)
            n += (size_t)k;
    }
    assert_int_equal(n, big + 4);
    for (size_t i = 0; i < big; i++)
        if (all[i] != (uint8_t)(i * 13)) fail_msg("byte %zu differs", i);
    assert_memory_equal(all + big, "tail", 4);
    free(all);
    knit_transport_abort(t);
    pump(r, lost_once, &srv);
    close(fds[1]);
    knit_buf_release(&m.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* ---- output groups ------------------------------------------------------------ */

static int group_over, group_under;
static void group_changed(knit_output_group *g, bool over)
{
    (void)g;
    if (over)
        group_over++;
    else
        group_under++;
}

/* The sum follows every change of the members' output buffers (writes,
 * write_buf, the peer reading, a flush, an abort, connection_lost) and the
 * water marks signal once per crossing. */
static void test_output_group(void **state)
{
    (void)state;
    group_over = group_under = 0;
    knit_output_group g = {.high = 100, .low = 40, .changed = group_changed};
    rec a, b;
    rec_init(&a);
    rec_init(&b);
    a.proto.output_group = &g;
    b.proto.output_group = &g;
    knit_transport *ta, *tb;
    assert_int_equal(knit_memory_transport_new(&a.proto, &ta), 0);
    assert_int_equal(knit_memory_transport_new(&b.proto, &tb), 0);
    char blob[80] = {0};
    assert_int_equal(knit_transport_write(ta, blob, 60), 0);
    assert_int_equal(g.queued, 60);
    knit_buf m = KNIT_BUF_INIT;
    knit_buf_append(&m, blob, 30);
    assert_int_equal(knit_transport_write_buf(tb, &m), 0);
    assert_int_equal(g.queued, 90);
    assert_int_equal(group_over, 0);
    assert_int_equal(knit_transport_write(tb, blob, 20), 0); /* 110 > 100 */
    assert_true(g.over);
    assert_int_equal(group_over, 1);
    assert_int_equal(knit_transport_write(tb, blob, 20), 0); /* once per crossing */
    assert_int_equal(group_over, 1);
    knit_memory_transport_take(ta, 60); /* 70: above low */
    assert_int_equal(g.queued, 70);
    assert_true(g.over);
    knit_memory_transport_take(tb, 30); /* 40: back to low */
    assert_int_equal(g.queued, 40);
    assert_false(g.over);
    assert_int_equal(group_under, 1);
    knit_memory_transport_close(tb, KNIT_CLOSE_PEER, 0); /* its 40 leave the group */
    assert_int_equal(g.queued, 0);
    knit_memory_transport_close(ta, KNIT_CLOSE_PEER, 0);
    knit_memory_transport_free(ta);
    knit_memory_transport_free(tb); /* after lost: not counted again */
    assert_int_equal(g.queued, 0);

    /* a socket: queued when the peer does not read, drained by flushes,
     * released by an abort */
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    int small = 4096;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    rec srv;
    rec_init(&srv);
    knit_output_group sg = {0};
    srv.proto.output_group = &sg;
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    size_t big = 1 << 20;
    char *p = calloc(1, big);
    assert_int_equal(knit_transport_write(t, p, big), 0);
    assert_true(sg.queued > 0);
    assert_int_equal(sg.queued, knit_transport_write_buffer_size(t));
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    size_t n = 0;
    for (int i = 0; i < 100000 && n < big / 2; i++) {
        knit_reactor_run_once(r, KNIT_MSEC(10));
        ssize_t k;
        while ((k = read(fds[1], p, big - n)) > 0)
            n += (size_t)k;
        assert_int_equal(sg.queued, knit_transport_write_buffer_size(t));
    }
    assert_true(sg.queued > 0 && sg.queued < big);
    knit_transport_abort(t);
    assert_int_equal(sg.queued, 0);
    pump(r, lost_once, &srv);
    free(p);
    close(fds[1]);
    knit_buf_release(&a.got);
    knit_buf_release(&b.got);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* A reactor with an open connection refuses to close, on either backend
 * (on io_uring a TCP connection holds a receive in the ring, not an fd
 * watch: it must count all the same). */
static void test_close_refused_while_connected(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    knit_reactor_run_once(r, 0);
    assert_int_equal(knit_reactor_close(r), KNIT_EBUSY);
    knit_transport_abort(t);
    pump(r, lost_once, &srv);
    assert_int_equal(srv.lost, 1);
    close(fds[1]);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* ---- output through the ring (io_uring; the same semantics on epoll) ---------- */

static void fill_pattern(uint8_t *p, size_t n, size_t from)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((from + i) * 31 + ((from + i) >> 12));
}

/* Read from the non-blocking FD into GOT (up to CAP); returns bytes added. */
static size_t read_some(int fd, uint8_t *got, size_t have, size_t cap)
{
    size_t n = 0;
    ssize_t k;
    while (have + n < cap && (k = read(fd, got + have + n, cap - have - n)) > 0)
        n += (size_t)k;
    return n;
}

/* Large output in many writes while the peer does not read: the sends stop
 * part-way (the socket buffer is small) and continue from there; writes
 * made while a send is in flight queue behind it, in order; then the peer
 * reads everything and the transport is back to owning no buffers. On the
 * ring no write makes a system call: nothing reaches the peer until the
 * loop runs. */
static void test_ring_partial_sends_large_output(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    int small = 8192;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    knit_transport_set_water_marks(t, 64u << 20, 0); /* no pause: this is about order */
    size_t idle = knit_transport_memory(t);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    const size_t chunk = 48 * 1024, chunks = 16, total = chunk * chunks;
    uint8_t *want = malloc(total), *got = malloc(total);
    assert_non_null(want);
    assert_non_null(got);
    fill_pattern(want, total, 0);
    size_t off = 0;
    /* the first chunk by write, then alternately write_buf and writev,
     * with loop turns between so that sends are in flight meanwhile */
    assert_int_equal(knit_transport_write(t, want, chunk), 0);
    off = chunk;
    if (ring_sends(r)) {
        char c;
        assert_int_equal(recv(fds[1], &c, 1, MSG_PEEK | MSG_DONTWAIT), -1); /* not sent yet */
        assert_int_equal(knit_transport_write_buffer_size(t), chunk);
    }
    for (int i = 1; off < total; i++) {
        if (i % 2) {
            knit_buf b = KNIT_BUF_INIT;
            assert_int_equal(knit_buf_append(&b, want + off, chunk), 0);
            assert_int_equal(knit_transport_write_buf(t, &b), 0);
            assert_true(knit_buf_is_idle(&b));
        } else {
            struct iovec iov[2] = {{want + off, 100}, {want + off + 100, chunk - 100}};
            assert_int_equal(knit_transport_writev(t, iov, 2), 0);
        }
        off += chunk;
        knit_reactor_run_once(r, 0);
    }
    /* the peer has read nothing: most of it is still queued */
    assert_true(knit_transport_write_buffer_size(t) > total / 2);
    size_t n = 0;
    for (int i = 0; i < 100000 && n < total; i++) {
        knit_reactor_run_once(r, KNIT_MSEC(1));
        n += read_some(fds[1], got, n, total);
    }
    assert_int_equal(n, total);
    for (size_t i = 0; i < total; i++)
        if (got[i] != want[i]) fail_msg("byte %zu differs", i);
    drain_out(r, t);
    uint64_t bout = 0;
    knit_transport_bytes(t, NULL, &bout);
    assert_int_equal(bout, total);
    assert_int_equal(knit_transport_memory(t), idle); /* owns no buffer again */
    assert_int_equal(srv.lost, 0);
    knit_transport_lose_connection(t);
    pump(r, lost_once, &srv);
    assert_int_equal(srv.reason, KNIT_CLOSE_DONE);
    free(want);
    free(got);
    close(fds[1]);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* Abort while a send is in flight (the peer reads nothing, so the send
 * waits in the kernel for room): the pinned output must stay valid until
 * the send's completion (ASan would see a use after free), connection_lost
 * comes once, after it, and the reactor then closes (nothing left in the
 * ring). Twice: aborted before the loop ever submitted the send, and after
 * it has been waiting for some turns. */
static void test_ring_close_with_send_in_flight(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        knit_reactor *r;
        assert_int_equal(knit_reactor_new(&r, NULL), 0);
        int fds[2];
        sp(fds);
        int small = 4096;
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        rec srv;
        rec_init(&srv);
        knit_transport *t;
        assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
        size_t big = 4u << 20;
        uint8_t *blob = malloc(big);
        assert_non_null(blob);
        fill_pattern(blob, big, 0);
        assert_int_equal(knit_transport_write(t, blob, big), 0);
        free(blob); /* the transport has its own copy */
        knit_buf more = KNIT_BUF_INIT;
        assert_int_equal(knit_buf_append(&more, "tail", 4), 0);
        assert_int_equal(knit_transport_write_buf(t, &more), 0); /* behind the first */
        if (round == 1)
            for (int i = 0; i < 5; i++)
                knit_reactor_run_once(r, 0);
        assert_true(knit_transport_write_buffer_size(t) > 0);
        knit_transport_abort(t);
        assert_int_equal(knit_transport_write_buffer_size(t), 0);
        assert_int_equal(srv.lost, 0);
        pump(r, lost_once, &srv);
        assert_int_equal(srv.lost, 1);
        assert_int_equal(srv.reason, KNIT_CLOSE_ABORTED);
        for (int i = 0; i < 5; i++)
            knit_reactor_run_once(r, 0);
        assert_int_equal(srv.lost, 1);
        close(fds[1]);
        knit_buf_release(&srv.got);
        assert_int_equal(knit_reactor_close(r), 0);
    }
}

/* Aborting a transport whose send was queued in this loop turn, and the fd
 * number going at once to another connection (an accept in the same turn;
 * here dup2): the queued send names the fd by number until submitted, so it
 * must be submitted before the close, not reach the new connection. */
static void test_ring_close_before_submit_fd_reused(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int a[2], b[2];
    sp(a);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, a[0], &srv.proto, &t), 0);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(r, 0); /* the receive is submitted */
    /* b before the close, so that its own numbers stay apart from a[0]'s */
    sp(b);
    assert_int_equal(knit_transport_write(t, "SECRET", 6), 0);
    /* closes a[0]; the send was not submitted yet */
    knit_transport_abort(t);
    /* the number now names b's socket */
    assert_int_equal(dup2(b[0], a[0]), a[0]);
    pump(r, lost_once, &srv);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(r, 0);
    char buf[16];
    ssize_t k = recv(b[1], buf, sizeof buf, MSG_DONTWAIT);
    if (k > 0) fail_msg("another connection got %zd bytes of the closed one's output", k);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* The peer resets the connection while output waits to be sent: reported
 * as KNIT_CLOSE_RESET, as on the readiness path (EPIPE and ECONNRESET). */
static void test_ring_peer_reset_with_send_in_flight(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    int small = 4096;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    size_t big = 2u << 20;
    uint8_t *blob = calloc(1, big);
    assert_non_null(blob);
    assert_int_equal(knit_transport_write(t, blob, big), 0);
    free(blob);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(r, 0);
    assert_true(knit_transport_write_buffer_size(t) > 0); /* waiting for room */
    if (tcp_pairs) {
        struct linger lg = {1, 0};
        setsockopt(fds[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* close sends a RST */
    }
    close(fds[1]);
    pump(r, lost_once, &srv);
    assert_int_equal(srv.lost, 1);
    assert_int_equal(srv.reason, KNIT_CLOSE_RESET);
    assert_true(srv.err == KNIT_ECONNRESET || srv.err == KNIT_EPIPE);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* close_or_reset after a write in the same loop turn: the answer goes out
 * and the connection closes cleanly on both backends. On io_uring the
 * answer is still queued (its ring send is submitted by the next
 * io_uring_enter), so a close decided from "output queued" reset it away
 * (issue 15: the HTTP server's 413 after a lingering close). */
static void test_close_or_reset_delivers_fresh_output(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int fds[2];
    sp(fds);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    assert_int_equal(knit_transport_write(t, "answer", 6), 0);
    if (ring_sends(r)) assert_int_equal(knit_transport_write_buffer_size(t), 6);
    knit_transport_close_or_reset(t, KNIT_CLOSE_PROTOCOL_ERROR, KNIT_ELIMIT);
    assert_true(knit_transport_closing(t));
    assert_int_equal(knit_transport_write(t, "more", 4), KNIT_ECLOSED);
    knit_transport_close_or_reset(t, KNIT_CLOSE_PROTOCOL_ERROR, KNIT_ELIMIT); /* idempotent */
    pump(r, lost_once, &srv);
    assert_int_equal(srv.lost, 1);
    assert_int_equal(srv.reason, KNIT_CLOSE_PROTOCOL_ERROR);
    assert_int_equal(srv.err, KNIT_ELIMIT);
    char buf[16];
    assert_int_equal(read(fds[1], buf, sizeof buf), 6); /* not ECONNRESET */
    assert_memory_equal(buf, "answer", 6);
    assert_int_equal(read(fds[1], buf, sizeof buf), 0); /* a FIN, not a reset */
    close(fds[1]);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* close_or_reset to a peer that does not read: the output cannot go out,
 * so after KNIT_STREAM_CLOSE_FLUSH_WAIT (fake clock) the transport gives
 * up and resets, with the reason it was given; not before. */
static void test_close_or_reset_peer_not_reading(void **state)
{
    (void)state;
    knit_clock *clock = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clock;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, &ro), 0);
    int fds[2];
    sp(fds);
    int small = 4096;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    rec srv;
    rec_init(&srv);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r, fds[0], &srv.proto, &t), 0);
    size_t big = 4u << 20;
    uint8_t *blob = calloc(1, big);
    assert_non_null(blob);
    assert_int_equal(knit_transport_write(t, blob, big), 0);
    free(blob);
    knit_transport_close_or_reset(t, KNIT_CLOSE_TIMEOUT, KNIT_ETIMEDOUT);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(srv.lost, 0); /* still trying to flush */
    assert_true(knit_transport_write_buffer_size(t) > 0);
    assert_int_equal(knit_reactor_advance(r, KNIT_STREAM_CLOSE_FLUSH_WAIT - 1), 0);
    knit_reactor_run_once(r, 0);
    assert_int_equal(srv.lost, 0);
    assert_int_equal(knit_reactor_advance(r, 1), 0); /* the bound */
    for (int i = 0; i < 100 && !srv.lost; i++)
        knit_reactor_run_once(r, KNIT_MSEC(10));
    assert_int_equal(srv.lost, 1);
    assert_int_equal(srv.reason, KNIT_CLOSE_TIMEOUT);
    assert_int_equal(srv.err, KNIT_ETIMEDOUT);
    if (tcp_pairs) {
        /* reset: reading what arrived ends in ECONNRESET, never a clean EOF */
        static char sink[1 << 16];
        ssize_t k;
        while ((k = read(fds[1], sink, sizeof sink)) > 0) {
        }
        assert_true(k < 0);
    }
    close(fds[1]);
    knit_buf_release(&srv.got);
    assert_int_equal(knit_reactor_close(r), 0);
    knit_clock_free(clock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_transport_basics),
        cmocka_unit_test(test_memory_transport_flow_control),
        cmocka_unit_test(test_leftover_input_is_kept),
        cmocka_unit_test(test_close_reason_names),
        cmocka_unit_test(test_line_framer),
        cmocka_unit_test(test_frame_framer),
        cmocka_unit_test(test_line_receiver_overlong_closes),
        cmocka_unit_test(test_frame_receiver),
        cmocka_unit_test(test_socket_echo_and_peer_close),
        cmocka_unit_test(test_socket_half_close),
        cmocka_unit_test(test_socket_abort_inside_callback),
        cmocka_unit_test(test_socket_lose_connection_flushes),
        cmocka_unit_test(test_slow_reader_bounded_memory),
        cmocka_unit_test(test_pause_reading_socket),
        cmocka_unit_test(test_peer_reset),
        cmocka_unit_test(test_resume_redelivers_buffered_input),
        cmocka_unit_test(test_write_buf_paths),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_output_group),
        cmocka_unit_test(test_close_refused_while_connected),
        cmocka_unit_test(test_ring_partial_sends_large_output),
        cmocka_unit_test(test_ring_close_with_send_in_flight),
        cmocka_unit_test(test_ring_peer_reset_with_send_in_flight),
        cmocka_unit_test(test_close_or_reset_delivers_fresh_output),
        cmocka_unit_test(test_close_or_reset_peer_not_reading),
#define TCP(fn) {#fn "_tcp", fn, tcp_on, tcp_off, NULL}
        TCP(test_socket_echo_and_peer_close),
        TCP(test_socket_half_close),
        TCP(test_socket_abort_inside_callback),
        TCP(test_socket_lose_connection_flushes),
        TCP(test_slow_reader_bounded_memory),
        TCP(test_pause_reading_socket),
        TCP(test_peer_reset),
        TCP(test_resume_redelivers_buffered_input),
        TCP(test_write_buf_paths),
        TCP(test_registry),
        TCP(test_output_group),
        TCP(test_close_refused_while_connected),
        TCP(test_ring_partial_sends_large_output),
        TCP(test_ring_close_with_send_in_flight),
        TCP(test_ring_close_before_submit_fd_reused),
        TCP(test_ring_peer_reset_with_send_in_flight),
        TCP(test_close_or_reset_delivers_fresh_output),
        TCP(test_close_or_reset_peer_not_reading),
#undef TCP
    };
    return KNIT_RUN_TESTS(tests);
}
