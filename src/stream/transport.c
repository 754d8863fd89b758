/* transport.c — socket transports: buffered non-blocking writes, reads into
 * per-thread scratch memory, flow control, half-close, abort, and the
 * pre-protocol TLS handshake. (The PROXY header is read before a transport
 * exists, by the endpoint layer's accept sequence: src/endpoint/listen.c.)
 *
 * Thread: everything runs on the reactor thread that owns the transport.
 *
 * Invariants that must not break:
 *  - An idle connection owns no buffers: t->in holds only bytes a protocol
 *    left unconsumed, t->out only bytes the socket refused; both are
 *    released as soon as they empty. Reads go into a per-thread scratch
 *    area (knit__stream_scratch), so each reactor thread has its own.
 *  - connection_lost is delivered from a queued reactor call (never from
 *    inside a call the protocol made), exactly once, and the struct is freed
 *    only after it ran *and* every other queued call holding t (t->soon)
 *    has run — so a protocol may abort() inside data_received and the read
 *    loop still sees valid memory when the callback returns.
 *  - After TP_CLOSED the fd is closed and nothing touches it again.
 *  - On the io_uring backend a plain TCP transport (no TLS layer) receives
 *    by completion instead of readiness: one multishot receive into the
 *    reactor's provided-buffer ring, kept in flight while the transport
 *    wants to read (update_watch → recv_want) and cancelled when it stops
 *    (pause, EOF, close). The bytes are handed to data_received straight
 *    from the shared ring buffer (no copy; leftovers go to t->in as with
 *    the scratch area), so an idle connection still owns no buffer. The
 *    receive holds t (t->soon) until its final completion. Bytes that
 *    arrive while the protocol may not take them (paused, still in a
 *    pre-protocol phase) are kept in t->in and delivered on resume; an
 *    EOF seen then is remembered (TU_EOF). TLS and UNIX sockets use
 *    readiness (polls on the same ring).
 *  - Such a transport also sends by completion: writes are queued in
 *    t->out (no send system call), and one send operation at a time points
 *    straight at t->out's bytes (send_start), submitted with the loop
 *    iteration's io_uring_enter. While it is in flight (TU_SEND, holding t)
 *    t->out's memory must not move: later writes are appended in place
 *    when t->out has room, else to t->ext->behind; the completion consumes
 *    what was sent, joins behind to t->out, and starts the next send (the
 *    rest of a partial send, plus what came meanwhile). Closing cancels the
 *    send and parks the pinned buffer in t->in (free then) until the
 *    completion; connection_lost waits for it, as for the receive. The
 *    queued length (out_len: t->out plus behind) drives the water marks
 *    and output groups exactly as on epoll; "queued" is then no sign of a
 *    peer that does not read (see knit_transport_close_or_reset).
 *  - Every socket transport is on its thread's registry (tl_first..tl_last,
 *    linked through t->prev/t->next) from knit__transport_new until
 *    free_transport, which is the only place that unlinks it; closing only
 *    queues the free, so a visitor that closes T can still follow T->next.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "stream/stream_int.h"

static _Thread_local uint8_t *scratch;

/* The registry: this thread's socket transports, oldest first. A reactor
 * and its transports live on one thread, so no lock; ids come from one
 * process-wide counter so that they stay unique across reactors. */
static _Thread_local knit_transport *tl_first, *tl_last;
static atomic_uint_fast64_t next_id;

uint64_t knit__transport_next_id(void)
{
    return (uint64_t)atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed) + 1;
}

static void registry_link(knit_transport *t)
{
    t->next = NULL;
    t->prev = tl_last;
    if (tl_last)
        tl_last->next = t;
    else
        tl_first = t;
    tl_last = t;
}

static void registry_unlink(knit_transport *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else if (tl_first == t)
        tl_first = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else if (tl_last == t)
        tl_last = t->prev;
    t->prev = t->next = NULL;
}

size_t knit_transports_visit(knit_reactor *r, knit_transport_visit_fn fn, void *arg)
{
    size_t n = 0;
    for (knit_transport *t = tl_first, *next; t; t = next) {
        next = t->next;
        if (r && t->io._r != r) continue;
        n++;
        fn(t, arg);
    }
    return n;
}

size_t knit_transports_count(knit_reactor *r)
{
    size_t n = 0;
    for (knit_transport *t = tl_first; t; t = t->next)
        if (!r || t->io._r == r) n++;
    return n;
}

knit_transport *knit_transport_find(knit_reactor *r, uint64_t id)
{
    for (knit_transport *t = tl_first; t; t = t->next)
        if (t->id == id && (!r || t->io._r == r)) return t;
    return NULL;
}

/* A thread's scratch is freed when the thread ends (reactor threads of a
 * group come and go; the key's destructor runs at their exit). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_make(void)
{
    pthread_key_create(&scratch_key, free);
}

uint8_t *knit__stream_scratch(void)
{
    if (!scratch) {
        scratch = malloc(KNIT_STREAM_READ_CHUNK);
        pthread_once(&scratch_once, scratch_key_make);
        if (scratch) pthread_setspecific(scratch_key, scratch);
    }
    return scratch;
}

static void on_io(knit_io *io, unsigned ev);
static void on_eof(knit_transport *t);
static bool recv_want(knit_transport *t, bool want);
static void update_watch(knit_transport *t);
static void close_now(knit_transport *t, knit_close_reason reason, int err, bool rst);
static void finish_close(knit_transport *t);
static void flush(knit_transport *t);
static void after_output(knit_transport *t);

static knit_close_reason reason_for(int err)
{
    switch (err) {
    case KNIT_ECONNRESET:
    case KNIT_EPIPE:
        return KNIT_CLOSE_RESET;
    case KNIT_ETLS:
        return KNIT_CLOSE_TLS_ERROR;
    case KNIT_ETIMEDOUT:
        return KNIT_CLOSE_TIMEOUT;
    case KNIT_ENOMEM:
        return KNIT_CLOSE_NOMEM;
    default:
        return KNIT_CLOSE_IO_ERROR;
    }
}

/* ---- raw IO through the optional layer ----------------------------------- */

static ssize_t do_recv(knit_transport *t, void *buf, size_t n)
{
    if (TP_LAYER(t)) return TP_LAYER(t)->recv(t, buf, n);
    for (;;) {
        ssize_t r = recv(t->io._fd, buf, n, 0);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return KNIT_EAGAIN;
        return -errno;
    }
}

static ssize_t do_send(knit_transport *t, const void *buf, size_t n)
{
    if (TP_LAYER(t)) {
        ssize_t r = TP_LAYER(t)->send(t, buf, n);
        if (r > 0) t->bytes_out += (uint64_t)r;
        return r;
    }
    for (;;) {
        ssize_t r = send(t->io._fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0) {
            t->bytes_out += (uint64_t)r;
            return r;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return KNIT_EAGAIN;
        return -errno;
    }
}

/* Vectors up to this many bytes in all go out through one send(2). */
#define SEND_COALESCE 1024

static ssize_t do_sendv(knit_transport *t, const struct iovec *iov, int cnt)
{
    if (TP_LAYER(t)) {
        ssize_t total = 0;
        for (int i = 0; i < cnt; i++) {
            if (!iov[i].iov_len) continue;
            ssize_t r = TP_LAYER(t)->send(t, iov[i].iov_base, iov[i].iov_len);
            if (r < 0) return total ? total : r;
            t->bytes_out += (uint64_t)r;
            total += r;
            if ((size_t)r < iov[i].iov_len) break;
        }
        return total;
    }
    /* One buffer, or a few small ones (an HTTP head and a short body, a
     * Thrift frame header and its payload): send(2) from one contiguous
     * buffer. sendmsg(2) copies the msghdr and the iovec array in from user
     * space and imports the vector, ~1% of a small keep-alive answer's
     * server CPU in perf (nginx's writev pays the same); copying a few
     * hundred bytes on the stack costs less. */
    if (cnt == 1) return do_send(t, iov[0].iov_base, iov[0].iov_len);
    size_t small = 0;
    for (int i = 0; i < cnt && small <= SEND_COALESCE; i++)
        small += iov[i].iov_len;
    if (small <= SEND_COALESCE) {
        uint8_t tmp[SEND_COALESCE];
        size_t at = 0;
        for (int i = 0; i < cnt; i++) {
            if (iov[i].iov_len) memcpy(tmp + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        return do_send(t, tmp, at);
    }
    struct msghdr m = {0};
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)(cnt > IOV_MAX ? IOV_MAX : cnt);
    for (;;) {
        ssize_t r = sendmsg(t->io._fd, &m, MSG_NOSIGNAL);
        if (r >= 0) {
            t->bytes_out += (uint64_t)r;
            return r;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return KNIT_EAGAIN;
        return -errno;
    }
}

/* ---- queued calls that hold the transport -------------------------------- */

static void free_transport(knit_transport *t)
{
    if (t->owner_fn) t->owner_fn(t, t->owner);
    registry_unlink(t);
    if (t->ext) {
        free(t->ext->proxied);
        knit_buf_release(&t->ext->behind);
        free(t->ext);
    }
    free(t);
}

static void soon_release(knit_transport *t)
{
    t->soon--;
    if ((t->flags & TP_CLOSED) && (t->flags & TP_LOST_DONE) && t->soon == 0) free_transport(t);
}

static void lost_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_transport *t = arg;
    t->flags |= TP_LOST_DONE;
    if (t->flags & TP_ATTACHED) {
        knit_protocol *p = t->proto;
        knit__transport_out_leave(t);
        p->transport = NULL;
        t->proto = NULL;
        p->ops->connection_lost(p, (knit_close_reason)t->reason, t->err);
    } else if (t->ext && t->ext->ready) {
        knit__ready_fn fn = t->ext->ready;
        t->ext->ready = NULL;
        fn(t, t->err ? t->err : KNIT_ECLOSED, t->ext->ready_arg);
    }
    soon_release(t);
}

static void do_read(knit_transport *t);

static void reread_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_transport *t = arg;
    /* After resume_reading: hand back the bytes the protocol left when it
     * paused (the socket will not signal them again), then read on. */
    if (!(t->flags & (TP_CLOSED | TP_CLOSING)) && !t->read_pauses && (t->flags & TP_ATTACHED) &&
        !knit_buf_empty(&t->in)) {
        t->proto->ops->data_received(t->proto, &t->in);
        if (knit_buf_empty(&t->in)) knit_buf_release(&t->in);
    }
    if (!(t->flags & TP_CLOSED)) do_read(t);
    soon_release(t);
}

static void call_soon(knit_transport *t, knit_call_fn fn)
{
    t->soon++;
    if (knit_call_from_thread(t->io._r, fn, t) == 0) return;
    /* Out of memory for the call queue. Never run FN here: callers keep
     * using T after this returns. A zero-delay timer is the other way to
     * get back to the loop; if even that fails, leak T rather than free it
     * under someone's feet. */
    if (knit_call_later(t->io._r, 0, fn, t).id == 0)
        KNIT_ERROR("stream", "out of memory: leaking a closed transport");
}

/* After data_received on a borrowed buffer (the thread's scratch area, a
 * ring buffer): what the protocol left goes to t->in. False when T was
 * closed for want of memory. */
static bool keep_rest(knit_transport *t, knit_buf *sbuf)
{
    if (!knit_buf_empty(sbuf) && !(t->flags & TP_CLOSED)) {
        int rc = knit_buf_move(&t->in, sbuf);
        if (rc < 0) {
            knit_buf_release(sbuf);
            close_now(t, KNIT_CLOSE_NOMEM, rc, true);
            return false;
        }
    }
    knit_buf_release(sbuf); /* a protocol may have grown it onto the heap */
    return true;
}

/* ---- the io_uring receive ------------------------------------------------------ */

static void on_recv(void *owner, int res, unsigned cflags, const uint8_t *data);

/* Start or stop T's multishot receive. False if T got closed doing so. */
static bool recv_want(knit_transport *t, bool want)
{
    knit__backend *b = knit__reactor_backend(t->io._r);
    if (want) {
        /* In flight (even with a cancel pending: its final completion
         * starts it again if still wanted). */
        if (t->uflags & TU_RECV) return true;
        int rc = knit__cop_recv(b, t->io._fd, t, on_recv);
        if (rc < 0) {
            close_now(t, reason_for(rc), rc, true);
            return false;
        }
        t->uflags |= TU_RECV;
        t->soon++;
    } else if ((t->uflags & TU_RECV) && !(t->uflags & TU_CANCEL)) {
        /* If even the cancel cannot be queued, bytes that still arrive are
         * kept in t->in (on_recv): nothing is lost, only backpressure
         * waits for the next completion. */
        if (knit__cop_recv_cancel(b, t) == 0) t->uflags |= TU_CANCEL;
    }
    return true;
}

/* Hand N received bytes at DATA (the ring's buffer) to the protocol, or
 * keep them in t->in while it may not take them. */
static void recv_deliver(knit_transport *t, const uint8_t *data, size_t n)
{
    t->bytes_in += (uint64_t)n;
    bool can = (t->flags & TP_ATTACHED) && !t->read_pauses && !(t->flags & (TP_CLOSING | TP_EOF));
    if (t->flags & TP_CLOSING) return; /* closing: input is dropped, as epoll would not read it */
    if (!can || !knit_buf_empty(&t->in)) {
        int rc = knit_buf_append(&t->in, data, n);
        if (rc < 0) {
            close_now(t, KNIT_CLOSE_NOMEM, rc, true);
            return;
        }
        if (!can) return;
        t->proto->ops->data_received(t->proto, &t->in);
        if (knit_buf_empty(&t->in)) knit_buf_release(&t->in);
        return;
    }
    knit_buf sbuf;
    knit_buf_init_borrowed(&sbuf, (uint8_t *)data, n);
    knit_buf_commit(&sbuf, n);
    t->proto->ops->data_received(t->proto, &sbuf);
    keep_rest(t, &sbuf);
}

static void on_recv(void *owner, int res, unsigned cflags, const uint8_t *data)
{
    knit_transport *t = owner;
    bool final = !(cflags & KNIT__COP_MORE);
    if (final) t->uflags &= (uint8_t) ~(TU_RECV | TU_CANCEL);
    if (!(t->flags & TP_CLOSED)) {
        if (res > 0 && data) {
            recv_deliver(t, data, (size_t)res);
        } else if (res == 0) {
            /* EOF: deliver now if the protocol may take it, else later
             * (do_read, from resume_reading) */
            if ((t->flags & TP_ATTACHED) && !t->read_pauses && !(t->flags & (TP_CLOSING | TP_EOF)))
                on_eof(t);
            else
                t->uflags |= TU_EOF;
        } else if (res < 0 && res != -ENOBUFS && res != -ECANCELED && res != -EINTR &&
                   res != -EAGAIN) {
            close_now(t, reason_for(res), res, false);
        }
        /* -ENOBUFS: the shared buffers ran out this batch; they are
         * recycled as their callbacks return, so start again. */
        if (final && !(t->flags & TP_CLOSED)) update_watch(t);
    }
    if (final && (t->uflags & TU_LOST) && !(t->uflags & TU_SEND)) {
        t->uflags &= (uint8_t)~TU_LOST;
        call_soon(t, lost_cb);
    }
    if (final) soon_release(t);
}

/* ---- the io_uring send ---------------------------------------------------------- */

static void on_send(void *owner, int res, unsigned cflags, const uint8_t *data);

/* Send t->out through the ring (nothing in flight, t->out not empty). */
static void send_start(knit_transport *t)
{
    knit__backend *b = knit__reactor_backend(t->io._r);
    int rc =
        knit__cop_send(b, t->io._fd, t, on_send, knit_buf_data(&t->out), knit_buf_len(&t->out));
    if (rc < 0) {
        close_now(t, reason_for(rc), rc, true);
        return;
    }
    t->uflags |= TU_SEND;
    t->soon++;
}

/* Where N more bytes of output go: t->out, unless a send in flight pins
 * it and it has no room in place (or bytes already wait behind). NULL when
 * out of memory. */
static knit_buf *out_dst(knit_transport *t, size_t n)
{
    if (!(t->uflags & TU_SEND)) return &t->out;
    if ((!t->ext || knit_buf_empty(&t->ext->behind)) && knit_buf_avail(&t->out) >= n)
        return &t->out; /* appended after the pinned bytes: nothing moves */
    if (!knit__transport_ext(t)) return NULL;
    return &t->ext->behind;
}

static void on_send(void *owner, int res, unsigned cflags, const uint8_t *data)
{
    (void)cflags, (void)data;
    knit_transport *t = owner;
    t->uflags &= (uint8_t) ~(TU_SEND | TU_SCANCEL);
    if (t->flags & TP_CLOSED) {
        knit_buf_release(&t->in); /* the pinned output, parked there by close_now */
    } else if (res > 0) {
        size_t before = knit__out_len(t);
        knit_buf_consume(&t->out, (size_t)res);
        t->bytes_out += (uint64_t)res;
        int rc = 0;
        if (t->ext && !knit_buf_empty(&t->ext->behind))
            rc = knit_buf_move(&t->out, &t->ext->behind);
        if (t->ext) {
            knit__tp_ext *x = t->ext;
            if (rc < 0) knit_buf_release(&x->behind);
            /* held only for behind: give it back (an idle connection stays small) */
            if (!x->layer && !x->ready && !x->phase_timer.id && !x->proxied &&
                knit_buf_is_idle(&x->behind)) {
                free(x);
                t->ext = NULL;
            }
        }
        knit__transport_out_changed(t, before);
        if (rc < 0)
            close_now(t, KNIT_CLOSE_NOMEM, rc, true);
        else
            after_output(t);
    } else if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
        close_now(t, reason_for(res), res, false);
    } else {
        update_watch(t); /* nothing sent: try again */
    }
    if ((t->uflags & TU_LOST) && !(t->uflags & TU_RECV)) {
        t->uflags &= (uint8_t)~TU_LOST;
        call_soon(t, lost_cb);
    }
    soon_release(t);
}

/* ---- watch management ----------------------------------------------------- */

static void update_watch(knit_transport *t)
{
    if (t->flags & (TP_CLOSED | TP_MEMORY)) return;
    unsigned ev = 0;
    if (t->flags & (TP_HANDSHAKE | TP_TLS_SHUT)) {
        ev = t->layer_want ? t->layer_want : KNIT_READABLE;
    } else {
        bool reading =
            (t->flags & TP_ATTACHED) && !t->read_pauses && !(t->flags & (TP_CLOSING | TP_EOF));
        if (t->uflags & TU_MODE) {
            if (!recv_want(t, reading && !(t->uflags & TU_EOF))) return; /* closed */
            reading = false;
            if (!knit_buf_empty(&t->out) && !(t->uflags & TU_SEND)) {
                send_start(t);
                if (t->flags & TP_CLOSED) return;
            }
        }
        if (reading) ev |= KNIT_READABLE;
        if (!knit_buf_empty(&t->out) && !(t->uflags & TU_MODE)) ev |= KNIT_WRITABLE;
        ev |= t->layer_want;
    }
    int rc = knit_io_start(&t->io, ev);
    if (rc < 0) close_now(t, KNIT_CLOSE_IO_ERROR, rc, false);
}

static void check_high(knit_transport *t)
{
    if (!(t->flags & TP_PAUSED) && knit__out_len(t) > t->high) {
        t->flags |= TP_PAUSED;
        if (t->proto && t->proto->ops->pause_producing) t->proto->ops->pause_producing(t->proto);
    }
}

static void check_low(knit_transport *t)
{
    if ((t->flags & TP_PAUSED) && knit__out_len(t) <= t->low) {
        t->flags &= (uint16_t)~TP_PAUSED;
        if (t->proto && t->proto->ops->resume_producing) t->proto->ops->resume_producing(t->proto);
    }
}

/* ---- closing -------------------------------------------------------------- */

static void close_now(knit_transport *t, knit_close_reason reason, int err, bool rst)
{
    if (t->flags & TP_CLOSED) return;
    t->flags |= TP_CLOSED;
    t->reason = (uint8_t)reason;
    t->err = err;
    if (t->ext && t->ext->phase_timer.id) {
        knit_timer_cancel(t->io._r, t->ext->phase_timer);
        t->ext->phase_timer = KNIT_TIMER_NONE;
    }
    knit_io_stop(&t->io);
    if ((t->uflags & TU_RECV) && !(t->uflags & TU_CANCEL) &&
        knit__cop_recv_cancel(knit__reactor_backend(t->io._r), t) == 0)
        t->uflags |= TU_CANCEL; /* its final completion releases t */
    if ((t->uflags & TU_SEND) && !(t->uflags & TU_SCANCEL) &&
        knit__cop_send_cancel(knit__reactor_backend(t->io._r), t) == 0)
        t->uflags |= TU_SCANCEL; /* likewise */
    if (rst && !(t->flags & TP_UNIX)) {
        struct linger lg = {1, 0};
        setsockopt(t->io._fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (TP_LAYER(t)) {
        t->ext->layer->free(t);
        t->ext->layer = NULL;
    }
    /* Queued SQEs name the fd by number until submitted: submit them
     * before the number can be reused (by an accept in this turn). */
    if (t->uflags & (TU_RECV | TU_SEND)) knit__cop_submit(knit__reactor_backend(t->io._r));
    close(t->io._fd);
    size_t queued = knit__out_len(t);
    knit_buf_release(&t->in);
    if (t->ext) knit_buf_release(&t->ext->behind);
    if (t->uflags & TU_SEND) {
        /* The kernel may still read t->out's bytes: park the buffer (not
         * its memory) in t->in, unused from now on; on_send frees it. */
        t->in = t->out;
        knit_buf_init(&t->out);
    } else {
        knit_buf_release(&t->out);
    }
    knit__transport_out_changed(t, queued);
    /* With a receive or send still in the kernel, connection_lost waits for
     * their final completions (the cancels make them come at the next loop
     * iteration): after connection_lost the kernel holds nothing of t, so
     * t is freed there, as on epoll. */
    if (t->uflags & (TU_RECV | TU_SEND))
        t->uflags |= TU_LOST;
    else
        call_soon(t, lost_cb);
}

/* The output is empty and the connection should end cleanly. */
static void finish_close(knit_transport *t)
{
    if (TP_LAYER(t) && TP_LAYER(t)->shutdown && !(t->flags & TP_HANDSHAKE)) {
        int rc = TP_LAYER(t)->shutdown(t);
        if (rc == KNIT_EAGAIN) {
            t->flags |= TP_TLS_SHUT;
            update_watch(t);
            return;
        }
    }
    close_now(t, (knit_close_reason)t->reason, t->err, false);
}

void knit__transport_close(knit_transport *t, bool flush_first, knit_close_reason reason, int err)
{
    if (t->flags & TP_CLOSED) return;
    if (!flush_first) {
        close_now(t, reason, err, true);
        return;
    }
    if (t->flags & TP_CLOSING) return;
    t->flags |= TP_CLOSING;
    t->reason = (uint8_t)reason;
    t->err = err;
    if (knit_buf_empty(&t->out))
        finish_close(t);
    else
        update_watch(t);
}

/* ---- output ---------------------------------------------------------------- */

static void flush(knit_transport *t)
{
    while (!knit_buf_empty(&t->out)) {
        size_t len = knit_buf_len(&t->out);
        ssize_t n = do_send(t, knit_buf_data(&t->out), len);
        if (n == KNIT_EAGAIN) break;
        if (n < 0) {
            close_now(t, reason_for((int)n), (int)n, false);
            return;
        }
        knit_buf_consume(&t->out, (size_t)n);
        knit__transport_out_changed(t, len);
        if ((size_t)n < len && !TP_LAYER(t)) break; /* socket full: wait */
    }
    after_output(t);
}

/* Output went out (flush, or a ring send's completion): when all of it has,
 * the pending half-close or close; then the low water mark and the watch. */
static void after_output(knit_transport *t)
{
    if (knit_buf_empty(&t->out)) {
        knit_buf_release(&t->out); /* idle: own nothing */
        if ((t->flags & TP_SHUT_REQ) && !(t->flags & TP_SHUT_DONE)) {
            t->flags |= TP_SHUT_DONE;
            if (TP_LAYER(t) && TP_LAYER(t)->shutdown)
                TP_LAYER(t)->shutdown(t);
            else
                shutdown(t->io._fd, SHUT_WR);
            if (t->flags & TP_EOF) {
                knit__transport_close(t, true, KNIT_CLOSE_PEER, 0);
                return;
            }
        }
        if (t->flags & TP_CLOSING) {
            finish_close(t);
            return;
        }
    }
    check_low(t);
    if (!(t->flags & TP_CLOSED)) update_watch(t);
}

int knit_transport_writev(knit_transport *t, const struct iovec *iov, int iovcnt)
{
    if (t->flags & (TP_CLOSED | TP_CLOSING | TP_SHUT_REQ | TP_ABORT_REQ)) return KNIT_ECLOSED;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total == 0) return 0;
    if (t->uflags & TU_MODE) {
        /* io_uring: queue; the ring sends it (update_watch → send_start) */
        size_t before = knit__out_len(t);
        knit_buf *dst = out_dst(t, total);
        int rc = dst ? knit_buf_appendv(dst, iov, iovcnt) : KNIT_ENOMEM;
        knit__transport_out_changed(t, before);
        if (rc < 0) {
            close_now(t, KNIT_CLOSE_NOMEM, rc, true);
            return rc;
        }
        update_watch(t);
        if (!(t->flags & TP_CLOSED)) check_high(t);
        return 0;
    }
    size_t done = 0;
    if (!(t->flags & (TP_MEMORY | TP_HANDSHAKE)) && knit_buf_empty(&t->out) &&
        !t->layer_want) {
        ssize_t n = do_sendv(t, iov, iovcnt);
        if (n < 0 && n != KNIT_EAGAIN) {
            close_now(t, reason_for((int)n), (int)n, false);
            return 0; /* reported through connection_lost */
        }
        if (n > 0) done = (size_t)n;
        if (done == total) return 0;
    }
    /* Queue what the socket did not take. */
    for (int i = 0; i < iovcnt; i++) {
        size_t l = iov[i].iov_len;
        if (done >= l) {
            done -= l;
            continue;
        }
        size_t before = knit_buf_len(&t->out);
        int rc = knit_buf_append(&t->out, (const uint8_t *)iov[i].iov_base + done, l - done);
        knit__transport_out_changed(t, before);
        done = 0;
        if (rc < 0) {
            if (t->flags & TP_MEMORY) return rc;
            close_now(t, KNIT_CLOSE_NOMEM, rc, true);
            return rc;
        }
    }
    if (t->flags & TP_MEMORY) t->bytes_out += total; /* "sent" to the test */
    update_watch(t);
    check_high(t);
    return 0;
}

int knit_transport_write(knit_transport *t, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    return knit_transport_writev(t, &iov, 1);
}

int knit_transport_write_buf(knit_transport *t, knit_buf *b)
{
    if (t->flags & (TP_CLOSED | TP_CLOSING | TP_SHUT_REQ | TP_ABORT_REQ)) {
        knit_buf_release(b);
        return KNIT_ECLOSED;
    }
    if (t->uflags & TU_MODE) {
        /* io_uring: B's memory becomes the output (or joins it) as is */
        size_t before = knit__out_len(t);
        knit_buf *dst = out_dst(t, knit_buf_len(b));
        int rc = dst ? knit_buf_move(dst, b) : KNIT_ENOMEM;
        knit_buf_release(b);
        knit__transport_out_changed(t, before);
        if (rc < 0) {
            close_now(t, KNIT_CLOSE_NOMEM, rc, true);
            return rc;
        }
        update_watch(t);
        if (!(t->flags & TP_CLOSED)) check_high(t);
        return 0;
    }
    if (!knit_buf_empty(&t->out) || (t->flags & TP_MEMORY)) {
        size_t len = knit_buf_len(b), before = knit_buf_len(&t->out);
        int rc = knit_buf_move(&t->out, b);
        knit__transport_out_changed(t, before);
        if (rc == 0 && (t->flags & TP_MEMORY)) t->bytes_out += len;
        if (rc < 0) {
            knit_buf_release(b);
            if (!(t->flags & TP_MEMORY)) close_now(t, KNIT_CLOSE_NOMEM, rc, true);
            return rc;
        }
        update_watch(t);
        check_high(t);
        return 0;
    }
    struct iovec iov;
    if (!knit_buf_iov(b, &iov)) {
        knit_buf_release(b);
        return 0;
    }
    /* Try the socket first; then keep B's memory as the output buffer. */
    if (!(t->flags & TP_HANDSHAKE) && !t->layer_want) {
        ssize_t n = do_send(t, iov.iov_base, iov.iov_len);
        if (n < 0 && n != KNIT_EAGAIN) {
            knit_buf_release(b);
            close_now(t, reason_for((int)n), (int)n, false);
            return 0;
        }
        if (n > 0) knit_buf_consume(b, (size_t)n);
    }
    size_t before = knit_buf_len(&t->out);
    int rc = knit_buf_move(&t->out, b);
    knit__transport_out_changed(t, before);
    knit_buf_release(b);
    if (rc < 0) {
        close_now(t, KNIT_CLOSE_NOMEM, rc, true);
        return rc;
    }
    if (!knit_buf_empty(&t->out)) {
        update_watch(t);
        check_high(t);
    }
    return 0;
}

/* ---- input ----------------------------------------------------------------- */

static void on_eof(knit_transport *t)
{
    t->flags |= TP_EOF;
    knit_protocol *p = t->proto;
    bool keep = p->ops->eof_received && p->ops->eof_received(p);
    if (t->flags & TP_CLOSED) return;
    if (!keep || (t->flags & TP_SHUT_DONE)) {
        knit__transport_close(t, true, KNIT_CLOSE_PEER, 0);
        return;
    }
    update_watch(t);
}

static void do_read(knit_transport *t)
{
    if (t->uflags & TU_MODE) {
        /* io_uring: bytes come by completion (on_recv); here only an EOF
         * held back while the protocol could not take it. */
        if ((t->uflags & TU_EOF) && (t->flags & TP_ATTACHED) && !t->read_pauses &&
            !(t->flags & (TP_CLOSED | TP_CLOSING | TP_EOF))) {
            t->uflags &= (uint8_t)~TU_EOF;
            on_eof(t);
            return;
        }
        if (!(t->flags & TP_CLOSED)) update_watch(t);
        return;
    }
    for (int i = 0; i < KNIT_STREAM_READS_PER_EVENT || (TP_LAYER(t) && TP_LAYER(t)->pending(t));
         i++) {
        if ((t->flags & (TP_CLOSED | TP_CLOSING | TP_EOF)) || t->read_pauses ||
            !(t->flags & TP_ATTACHED))
            return;
        knit_buf sbuf, *b;
        uint8_t *dst;
        size_t cap;
        bool use_scratch = knit_buf_empty(&t->in);
        if (use_scratch) {
            knit_buf_release(&t->in);
            uint8_t *s = knit__stream_scratch();
            if (!s) {
                close_now(t, KNIT_CLOSE_NOMEM, KNIT_ENOMEM, true);
                return;
            }
            knit_buf_init_borrowed(&sbuf, s, KNIT_STREAM_READ_CHUNK);
            b = &sbuf;
            dst = s;
            cap = KNIT_STREAM_READ_CHUNK;
        } else {
            int err = 0;
            dst = knit_buf_reserve(&t->in, 16384, &err);
            if (!dst) {
                close_now(t, KNIT_CLOSE_NOMEM, err, true);
                return;
            }
            b = &t->in;
            cap = knit_buf_avail(&t->in);
        }
        ssize_t n = do_recv(t, dst, cap);
        if (n == KNIT_EAGAIN) {
            update_watch(t);
            return;
        }
        if (n == 0) {
            on_eof(t);
            return;
        }
        if (n < 0) {
            close_now(t, reason_for((int)n), (int)n, false);
            return;
        }
        knit_buf_commit(b, (size_t)n);
        t->bytes_in += (uint64_t)n;
        t->proto->ops->data_received(t->proto, b);
        if (use_scratch) {
            if (!keep_rest(t, &sbuf)) return;
        } else if (knit_buf_empty(&t->in)) {
            knit_buf_release(&t->in);
        }
        if ((size_t)n < cap && !(TP_LAYER(t) && TP_LAYER(t)->pending(t))) break;
    }
    if (!(t->flags & TP_CLOSED)) update_watch(t);
}

/* ---- pre-protocol phases ----------------------------------------------------- */

static void phases_done(knit_transport *t)
{
    if (t->ext && t->ext->phase_timer.id) {
        knit_timer_cancel(t->io._r, t->ext->phase_timer);
        t->ext->phase_timer = KNIT_TIMER_NONE;
    }
    if (!t->ext) return;
    knit__ready_fn fn = t->ext->ready;
    t->ext->ready = NULL;
    if (fn) fn(t, 0, t->ext->ready_arg);
}

void knit__transport_run_phases(knit_transport *t)
{
    if (t->flags & TP_HANDSHAKE) {
        int rc = TP_LAYER(t)->handshake(t);
        if (rc == KNIT_EAGAIN) {
            update_watch(t);
            return;
        }
        if (rc < 0) {
            close_now(t, rc == KNIT_ETLS ? KNIT_CLOSE_TLS_ERROR : reason_for(rc), rc, false);
            return;
        }
        t->flags &= (uint16_t)~TP_HANDSHAKE;
        t->layer_want = 0;
    }
    phases_done(t);
}

void knit__transport_phase_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit_transport *t = arg;
    t->ext->phase_timer = KNIT_TIMER_NONE;
    close_now(t, KNIT_CLOSE_TIMEOUT, KNIT_ETIMEDOUT, true);
}

/* ---- the io callback ------------------------------------------------------------ */

static void on_io(knit_io *io, unsigned ev)
{
    knit_transport *t = io->data;
    t->soon++; /* hold t across callbacks that may close it */
    if (t->flags & TP_HANDSHAKE) {
        knit__transport_run_phases(t);
    } else if (t->flags & TP_TLS_SHUT) {
        int rc = TP_LAYER(t)->shutdown(t);
        if (rc != KNIT_EAGAIN)
            close_now(t, (knit_close_reason)t->reason, t->err, false);
        else
            update_watch(t);
    } else {
        /* Flush on writability — or on readability when the TLS layer's
         * last write wanted to read first (a key update in flight). */
        bool can_flush = (ev & (KNIT_WRITABLE | KNIT_IOERR | KNIT_HANGUP)) ||
                         ((t->layer_want & KNIT_READABLE) && (ev & KNIT_READABLE));
        if (can_flush && !(t->uflags & TU_MODE) && (!knit_buf_empty(&t->out) || t->layer_want)) {
            t->layer_want = 0;
            if (!knit_buf_empty(&t->out)) flush(t);
        }
        if (!(t->flags & TP_CLOSED) && (ev & (KNIT_READABLE | KNIT_IOERR | KNIT_HANGUP)))
            do_read(t);
        if (!(t->flags & TP_CLOSED)) {
            if ((ev & (KNIT_IOERR | KNIT_HANGUP)) && (t->flags & TP_CLOSING))
                close_now(t, KNIT_CLOSE_RESET, KNIT_ECONNRESET, false);
            else
                update_watch(t);
        }
    }
    soon_release(t);
}

/* ---- creation ---------------------------------------------------------------------- */

knit__tp_ext *knit__transport_ext(knit_transport *t)
{
    if (!t->ext) t->ext = calloc(1, sizeof *t->ext);
    return t->ext;
}

int knit__transport_new(knit_reactor *r, int fd, const knit__layer_ops *layer, void *layer_state,
                        knit__ready_fn ready, void *ready_arg, knit_duration phase_timeout_d,
                        knit_transport **out)
{
    knit_transport *t = NULL;
    int fl = fcntl(fd, F_GETFL);
    int rc = 0;
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) rc = -errno;
    if (rc == 0 && !(t = calloc(1, sizeof *t))) rc = KNIT_ENOMEM;
    if (rc == 0 && (layer || ready) && !knit__transport_ext(t)) rc = KNIT_ENOMEM;
    if (rc < 0) {
        if (layer) {
            knit__tp_ext tmp = {.layer = layer, .layer_state = layer_state};
            knit_transport tt = {.ext = &tmp};
            layer->free(&tt);
        }
        free(t);
        close(fd);
        return rc;
    }
    knit_io_init(r, &t->io, fd, on_io, t);
    t->id = knit__transport_next_id();
    t->started = knit_reactor_now(r);
    registry_link(t);
    knit_buf_init(&t->out);
    knit_buf_init(&t->in);
    t->high = KNIT_STREAM_HIGH_WATER;
    t->low = KNIT_STREAM_LOW_WATER;
    if (t->ext) {
        t->ext->layer = layer;
        t->ext->layer_state = layer_state;
        t->ext->ready = ready;
        t->ext->ready_arg = ready_arg;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_UNIX) t->flags |= TP_UNIX;
        /* TCP without TLS receives by completion on io_uring. */
        if ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6) && !layer &&
            knit__backend_has_cops(knit__reactor_backend(r)))
            t->uflags |= TU_MODE;
    }
    if (layer) t->flags |= TP_HANDSHAKE;
    *out = t;
    if (ready) {
        if (phase_timeout_d > 0)
            t->ext->phase_timer =
                knit_call_later(r, phase_timeout_d, knit__transport_phase_timeout, t);
        t->soon++;
        knit__transport_run_phases(t);
        soon_release(t);
    }
    return 0;
}

int knit__transport_set_proxied(knit_transport *t, const knit_sockaddr *src,
                                const knit_sockaddr *dst)
{
    if (!knit__transport_ext(t)) return KNIT_ENOMEM;
    if (!t->ext->proxied && !(t->ext->proxied = malloc(2 * sizeof(knit_sockaddr))))
        return KNIT_ENOMEM;
    t->ext->proxied[0] = *src;
    t->ext->proxied[1] = *dst;
    return 0;
}

void knit__transport_attach(knit_transport *t, knit_protocol *p)
{
    t->proto = p;
    p->transport = t;
    t->flags |= TP_ATTACHED;
    t->soon++;
    if (p->ops->connection_made) p->ops->connection_made(p);
    if (!(t->flags & (TP_CLOSED | TP_MEMORY))) {
        update_watch(t);
        if (TP_LAYER(t) && TP_LAYER(t)->pending(t)) call_soon(t, reread_cb);
    }
    soon_release(t);
}

int knit_transport_adopt(knit_reactor *r, int fd, knit_protocol *p, knit_transport **out)
{
    knit_transport *t;
    int rc = knit__transport_new(r, fd, NULL, NULL, NULL, NULL, 0, &t);
    if (rc < 0) return rc;
    if (out) *out = t;
    knit__transport_attach(t, p);
    return 0;
}

/* ---- the rest of the public API ---------------------------------------------------- */

void knit_transport_close_with(knit_transport *t, bool flush_first, knit_close_reason reason,
                               int err)
{
    if (t->flags & TP_MEMORY) {
        if (!(t->flags & (TP_CLOSING | TP_ABORT_REQ))) {
            t->reason = (uint8_t)reason;
            t->err = err;
        }
        if (!flush_first) {
            t->flags |= TP_ABORT_REQ;
            t->reason = (uint8_t)reason;
            t->err = err;
        }
        t->flags |= TP_CLOSING;
        return;
    }
    if (!flush_first && (t->flags & TP_CLOSING) && !(t->flags & TP_CLOSED)) {
        close_now(t, reason, err, true);
        return;
    }
    knit__transport_close(t, flush_first, reason, err);
}

/* The bound of close_or_reset: the queued output did not go out in time
 * (the peer does not read): drop it and reset. */
static void close_flush_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit_transport *t = arg;
    t->ext->phase_timer = KNIT_TIMER_NONE;
    close_now(t, (knit_close_reason)t->reason, t->err, true);
}

void knit_transport_close_or_reset(knit_transport *t, knit_close_reason reason, int err)
{
    if ((t->flags & (TP_CLOSED | TP_MEMORY)) == TP_CLOSED) return;
    if ((t->flags & TP_MEMORY) || knit__out_len(t) == 0) {
        /* memory: the test reads the output when it likes (no peer can
         * fail to); socket: nothing queued, so on io_uring no send in flight */
        knit_transport_close_with(t, true, reason, err);
        return;
    }
    /* Output queued: flush it, bounded by a timer in t->ext->phase_timer
     * (free once a protocol is attached: the handshake's deadline is over;
     * close_now cancels it). Reading stops, as for any flushing close. */
    knit__tp_ext *x = (t->flags & TP_ATTACHED) ? knit__transport_ext(t) : NULL;
    if (x && !x->phase_timer.id) {
        x->phase_timer =
            knit_call_later(t->io._r, KNIT_STREAM_CLOSE_FLUSH_WAIT, close_flush_timeout, t);
        if (!x->phase_timer.id) x = NULL;
    }
    if (!x) { /* out of memory (or not attached): reset now, as abort */
        close_now(t, reason, err, true);
        return;
    }
    /* A flushing close already pending (lose_connection) keeps its reason
     * and is bounded from now on. */
    knit__transport_close(t, true, reason, err);
}

void knit_transport_lose_connection(knit_transport *t)
{
    knit_transport_close_with(t, true, KNIT_CLOSE_DONE, 0);
}

void knit_transport_abort(knit_transport *t)
{
    knit_transport_close_with(t, false, KNIT_CLOSE_ABORTED, 0);
}

int knit_transport_shutdown_write(knit_transport *t)
{
    if (t->flags & (TP_CLOSED | TP_CLOSING)) return KNIT_ECLOSED;
    if (t->flags & TP_SHUT_REQ) return 0;
    t->flags |= TP_SHUT_REQ;
    if (t->flags & TP_MEMORY) return 0;
    if (knit_buf_empty(&t->out)) flush(t);
    return 0;
}

void knit_transport_pause_reading(knit_transport *t)
{
    if (t->read_pauses < 255) t->read_pauses++;
    update_watch(t);
}

void knit_transport_resume_reading(knit_transport *t)
{
    if (t->read_pauses == 0) return;
    if (--t->read_pauses) return;
    if (t->flags & TP_MEMORY) {
        /* deliver what was held back */
        if (!knit_buf_empty(&t->in) && !(t->flags & TP_CLOSING)) {
            t->proto->ops->data_received(t->proto, &t->in);
            if (knit_buf_empty(&t->in)) knit_buf_release(&t->in);
        }
        return;
    }
    if (t->flags & TP_CLOSED) return;
    update_watch(t);
    /* Bytes already buffered (leftovers, or decrypted TLS data the socket
     * will not signal again) are delivered from the loop. */
    if (!knit_buf_empty(&t->in) || (TP_LAYER(t) && TP_LAYER(t)->pending(t)))
        call_soon(t, reread_cb);
}

void knit_transport_set_water_marks(knit_transport *t, size_t high, size_t low)
{
    if (low > high) low = high;
    t->high = (uint32_t)(high > UINT32_MAX ? UINT32_MAX : high);
    t->low = (uint32_t)(low > UINT32_MAX ? UINT32_MAX : low);
    check_high(t);
    check_low(t);
}

