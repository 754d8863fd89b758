/* backend_uring.c — the io_uring backend: one ring per reactor.
 *
 * Readiness (knit_io watches: the eventfd for cross-thread calls, the
 * signalfd, listening sockets, TLS and PROXY-phase sockets, writability) is
 * one-shot IORING_OP_POLL_ADD, re-armed before the next wait while the
 * watch stays on. A freshly armed poll checks the file's state at once, so
 * this keeps epoll's level-triggered meaning (a reader that stops with
 * bytes left is told again) — a multishot poll would be edge-triggered.
 * Polls are keyed by (fd, generation) in user_data: stopping a watch bumps
 * the generation, so a completion of a poll removed meanwhile (the removal
 * is asynchronous) is recognised as stale and dropped, even if the fd
 * number has been reused.
 *
 * Completion operations carry their owner's pointer (and a tag) as
 * user_data: multishot receives into a provided-buffer ring shared by every
 * socket of this reactor (an idle socket owns no buffer), and sends
 * straight from a transport's output buffer, which the stream layer keeps
 * in place until the completion (src/stream/transport.c).
 *
 * Not built yet (issue 15, said plainly): multishot accept
 * (listeners use a readiness poll and accept4, once per connection), and
 * TLS on completions (OpenSSL memory BIOs fed from the receive ring): TLS
 * transports run in readiness mode, where OpenSSL's socket BIO makes the
 * same reads and writes as on epoll.
 *
 * Every submission of an iteration (re-arms, new polls, receives, sends,
 * cancels) goes to the kernel in the one io_uring_enter that also waits,
 * with the timeout passed along (EXT_ARG), so no timerfd and no separate
 * submit.
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include "knit/error.h"
#include "knit/reactor.h"
#include "reactor/backend.h"

/* Submission queue entries; the completion queue gets KNIT__URING_CQ_MULT
 * times as many (multishot receives post several completions per op). */
#define KNIT__URING_ENTRIES 256u
#define KNIT__URING_CQ_MULT 8u
/* The shared receive buffers: KNIT__URING_BUFS of KNIT__URING_BUF_SIZE
 * (a power of two count). Untouched pages cost no memory. */
#define KNIT__URING_BUFS 256u
#define KNIT__URING_BUF_SIZE (16u * 1024u)
#define KNIT__URING_BGID 0
/* Completions taken per wait (the rest wait for the next iteration). */
#define KNIT__URING_BATCH 1024u

/* user_data: a tag in the low 3 bits, then an fd and generation (polls) or
 * the owner's pointer (completion operations). */
enum { UD_POLL = 1, UD_IGNORE = 2, UD_RECV = 3, UD_SEND = 4, UD_TAG = 7 };

typedef struct ufd {
    uint32_t gen;  /* bumped when a watch stops: older completions are stale */
    uint8_t want;  /* knit event bits watched */
    uint8_t armed; /* a poll for (fd, gen) is in the kernel */
    uint8_t rearm; /* on the re-arm list */
    uint8_t _pad;
} ufd;

typedef struct uring_backend {
    knit__backend base;
    struct io_uring ring;
    bool ring_ok;
    ufd *fds;
    size_t nfds;
    int *rearm;
    size_t nrearm, caprearm;
    knit__ready *ready;
    int n; /* entries in the current batch */
    struct io_uring_cqe *batch;
    struct io_uring_buf_ring *br;
    size_t br_size;
    uint8_t *bufs;
    size_t inflight; /* completion ops not finally completed */
    knit__cop_fn recv_fn;
    knit__cop_fn send_fn;
} uring_backend;

static void ur_free(knit__backend *kb);
static int ur_set(knit__backend *kb, int fd, unsigned old_events, unsigned new_events);
static int ur_poll(knit__backend *kb, knit_duration timeout, knit__ready **out);
static void ur_invalidate(knit__backend *kb, int fd);

static const knit__backend_ops uring_ops = {"io_uring", ur_free, ur_set, ur_poll, ur_invalidate};

static int setup_bufs(uring_backend *b)
{
    b->br_size = KNIT__URING_BUFS * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, b->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED) return -errno;
    b->br = br;
    /* The buffers: anonymous memory, so pages never written stay free. */
    void *bufs = mmap(NULL, (size_t)KNIT__URING_BUFS * KNIT__URING_BUF_SIZE, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (bufs == MAP_FAILED) return -errno;
    b->bufs = bufs;
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)br,
                                   .ring_entries = KNIT__URING_BUFS,
                                   .bgid = KNIT__URING_BGID};
    int rc = io_uring_register_buf_ring(&b->ring, &reg, 0);
    if (rc < 0) return rc;
    io_uring_buf_ring_init(b->br);
    int mask = io_uring_buf_ring_mask(KNIT__URING_BUFS);
    for (unsigned i = 0; i < KNIT__URING_BUFS; i++)
        io_uring_buf_ring_add(b->br, b->bufs + (size_t)i * KNIT__URING_BUF_SIZE,
                              KNIT__URING_BUF_SIZE, (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(b->br, KNIT__URING_BUFS);
    return 0;
}

static bool kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
    return ma > major || (ma == major && mi >= minor);
}

int knit__uring_new(knit__backend **out, unsigned max_events)
{
    (void)max_events; /* completions are taken in batches of KNIT__URING_BATCH */
    uring_backend *b = calloc(1, sizeof *b);
    if (!b) return KNIT_ENOMEM;
    b->base.ops = &uring_ops;
    b->ready = calloc(KNIT__URING_BATCH, sizeof *b->ready);
    b->batch = calloc(KNIT__URING_BATCH, sizeof *b->batch);
    int rc = KNIT_ENOMEM;
    if (!b->ready || !b->batch) goto fail;
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
    p.cq_entries = KNIT__URING_ENTRIES * KNIT__URING_CQ_MULT;
    rc = io_uring_queue_init_params(KNIT__URING_ENTRIES, &b->ring, &p);
    if (rc == -EINVAL) { /* kernels before 5.18 lack SUBMIT_ALL */
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = KNIT__URING_ENTRIES * KNIT__URING_CQ_MULT;
        rc = io_uring_queue_init_params(KNIT__URING_ENTRIES, &b->ring, &p);
    }
    if (rc < 0) goto fail;
    b->ring_ok = true;
    /* Without these the waits would need a timeout SQE (EXT_ARG, 5.11) and
     * completions could be dropped on overflow (NODROP, 5.5). */
    if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
        rc = KNIT_ENOTSUP;
        goto fail;
    }
    /* Completion receives need provided-buffer rings (5.19) and multishot
     * receive (6.0, which no feature bit announces: the release says);
     * without them every socket uses readiness on the ring. */
    b->base.cops = kernel_at_least(6, 0) && setup_bufs(b) == 0;
    *out = &b->base;
    return 0;
fail:
    ur_free(&b->base);
    return rc;
}

static void ur_free(knit__backend *kb)
{
    uring_backend *b = (uring_backend *)kb;
    if (b->ring_ok) io_uring_queue_exit(&b->ring);
    if (b->bufs) munmap(b->bufs, (size_t)KNIT__URING_BUFS * KNIT__URING_BUF_SIZE);
    if (b->br) munmap(b->br, b->br_size);
    free(b->fds);
    free(b->rearm);
    free(b->ready);
    free(b->batch);
    free(b);
}

/* An SQE, submitting what is queued when the ring is full. NULL only if
 * even that fails. */
static struct io_uring_sqe *get_sqe(uring_backend *b)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    if (sqe) return sqe;
    io_uring_submit(&b->ring);
    return io_uring_get_sqe(&b->ring);
}

static uint64_t poll_ud(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)(uint32_t)fd << 3) | UD_POLL;
}

static int arm(uring_backend *b, int fd)
{
    ufd *f = &b->fds[fd];
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    unsigned mask = 0;
    if (f->want & KNIT_READABLE) mask |= POLLIN | POLLRDHUP;
    if (f->want & KNIT_WRITABLE) mask |= POLLOUT;
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, poll_ud(fd, f->gen));
    f->armed = 1;
    return 0;
}

static void disarm(uring_backend *b, int fd)
{
    ufd *f = &b->fds[fd];
    if (f->armed) {
        struct io_uring_sqe *sqe = get_sqe(b);
        if (sqe) {
            io_uring_prep_poll_remove(sqe, poll_ud(fd, f->gen));
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
        }
        /* Without an SQE the poll stays until it fires; its completion is
         * then stale (the generation moved on) and dropped. */
        f->armed = 0;
    }
    f->gen++;
}

static int ur_set(knit__backend *kb, int fd, unsigned old_events, unsigned new_events)
{
    uring_backend *b = (uring_backend *)kb;
    (void)old_events;
    if (fd < 0) return KNIT_EBADF;
    if ((size_t)fd >= b->nfds) {
        if (!new_events) return 0;
        size_t n = b->nfds ? b->nfds : 64;
        while (n <= (size_t)fd)
            n *= 2;
        ufd *nf = realloc(b->fds, n * sizeof *nf);
        if (!nf) return KNIT_ENOMEM;
        memset(nf + b->nfds, 0, (n - b->nfds) * sizeof *nf);
        b->fds = nf;
        b->nfds = n;
    }
    ufd *f = &b->fds[fd];
    new_events &= KNIT_READABLE | KNIT_WRITABLE;
    if (new_events == f->want && (f->armed || f->rearm)) return 0;
    if (f->armed) disarm(b, fd);
    if (!new_events) {
        if (f->want) f->gen++;
        f->want = 0;
        return 0;
    }
    if (!f->want) {
        /* epoll refuses what cannot block (regular files, directories)
         * with EPERM; keep that meaning (a poll would just fire forever). */
        struct stat st;
        if (fstat(fd, &st) < 0) return -errno;
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return KNIT_EPERM;
    }
    f->want = (uint8_t)new_events;
    return arm(b, fd);
}

static void ur_invalidate(knit__backend *kb, int fd)
{
    uring_backend *b = (uring_backend *)kb;
    for (int i = 0; i < b->n; i++)
        if (b->ready[i].fd == fd) b->ready[i].fd = -1;
}

static unsigned from_poll(int res)
{
    if (res < 0) return KNIT_IOERR; /* e.g. -EBADF: the owner meets it on its next IO */
    unsigned k = 0;
    if (res & (POLLIN | POLLPRI)) k |= KNIT_READABLE;
    if (res & POLLOUT) k |= KNIT_WRITABLE;
    if (res & POLLERR) k |= KNIT_IOERR;
    if (res & (POLLHUP | POLLRDHUP)) k |= KNIT_HANGUP;
    return k;
}

static void rearm_fired(uring_backend *b)
{
    for (size_t i = 0; i < b->nrearm; i++) {
        int fd = b->rearm[i];
        ufd *f = &b->fds[fd];
        f->rearm = 0;
        if (f->want && !f->armed) arm(b, fd);
    }
    b->nrearm = 0;
}

static void push_rearm(uring_backend *b, int fd)
{
    ufd *f = &b->fds[fd];
    if (f->rearm) return;
    if (b->nrearm == b->caprearm) {
        size_t n = b->caprearm ? 2 * b->caprearm : 64;
        int *nr = realloc(b->rearm, n * sizeof *nr);
        if (!nr) {
            /* Re-arm at once instead (same effect, one SQE earlier). */
            if (f->want) arm(b, fd);
            return;
        }
        b->rearm = nr;
        b->caprearm = n;
    }
    f->rearm = 1;
    b->rearm[b->nrearm++] = fd;
}

static void recycle(uring_backend *b, unsigned bid)
{
    io_uring_buf_ring_add(b->br, b->bufs + (size_t)bid * KNIT__URING_BUF_SIZE, KNIT__URING_BUF_SIZE,
                          (unsigned short)bid, io_uring_buf_ring_mask(KNIT__URING_BUFS), 0);
    io_uring_buf_ring_advance(b->br, 1);
}

static int ur_poll(knit__backend *kb, knit_duration timeout, knit__ready **out)
{
    uring_backend *b = (uring_backend *)kb;
    b->n = 0;
    rearm_fired(b);
    int rc;
    if (timeout == 0) {
        /* Always enter, like epoll_wait(0): completions of polls and
         * receives are posted by task work that runs when this thread
         * enters the kernel, so a loop spinning on zero timeouts without
         * a system call would never see them. */
        rc = io_uring_submit_and_get_events(&b->ring);
    } else {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = timeout / 1000000000LL,
                                       .tv_nsec = timeout % 1000000000LL};
        rc = io_uring_submit_and_wait_timeout(&b->ring, &cqe, 1, timeout < 0 ? NULL : &ts, NULL);
        if (rc == -ETIME) rc = 0;
    }
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) return rc;

    /* Take a batch off the completion queue first: callbacks below may
     * queue new work, and the queue is then free for the kernel. */
    unsigned head, n = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&b->ring, head, cqe)
    {
        if (n == KNIT__URING_BATCH) break;
        b->batch[n++] = *cqe;
    }
    io_uring_cq_advance(&b->ring, n);

    /* Readiness first, so the reactor gets the whole batch of ready fds ... */
    for (unsigned i = 0; i < n; i++) {
        uint64_t ud = b->batch[i].user_data;
        if ((ud & UD_TAG) != UD_POLL) continue;
        int fd = (int)((uint32_t)ud >> 3);
        uint32_t gen = (uint32_t)(ud >> 32);
        if ((size_t)fd >= b->nfds) continue;
        ufd *f = &b->fds[fd];
        if (f->gen != gen || !f->armed) continue; /* stale: the watch changed */
        f->armed = 0;
        push_rearm(b, fd);
        b->ready[b->n].fd = fd;
        b->ready[b->n].events = from_poll(b->batch[i].res);
        b->n++;
    }
    /* ... then completions, whose callbacks run here, before the fds'. */
    for (unsigned i = 0; i < n; i++) {
        struct io_uring_cqe *c = &b->batch[i];
        unsigned tag = (unsigned)(c->user_data & UD_TAG);
        void *owner = (void *)(uintptr_t)(c->user_data & ~(uint64_t)UD_TAG);
        if (tag == UD_SEND) {
            b->inflight--;
            b->send_fn(owner, c->res, 0, NULL);
            continue;
        }
        if (tag != UD_RECV) continue;
        unsigned flags = (c->flags & IORING_CQE_F_MORE) ? KNIT__COP_MORE : 0;
        if (!flags) b->inflight--;
        const uint8_t *data = NULL;
        bool has_buf = c->flags & IORING_CQE_F_BUFFER;
        unsigned bid = c->flags >> IORING_CQE_BUFFER_SHIFT;
        if (has_buf) data = b->bufs + (size_t)bid * KNIT__URING_BUF_SIZE;
        b->recv_fn(owner, c->res, flags, data);
        if (has_buf) recycle(b, bid);
    }
    *out = b->ready;
    return b->n;
}

/* ---- completion operations ------------------------------------------------- */

int knit__cop_recv(knit__backend *kb, int fd, void *owner, knit__cop_fn fn)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    b->recv_fn = fn;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = KNIT__URING_BGID;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)owner | UD_RECV);
    b->inflight++;
    return 0;
}

int knit__cop_recv_cancel(knit__backend *kb, void *owner)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)owner | UD_RECV, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    return 0;
}

int knit__cop_send(knit__backend *kb, int fd, void *owner, knit__cop_fn fn, const void *buf,
                   size_t len)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    b->send_fn = fn;
    if (len > UINT32_MAX) len = UINT32_MAX; /* a partial send: the owner sends the rest */
    io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)owner | UD_SEND);
    b->inflight++;
    return 0;
}

int knit__cop_send_cancel(knit__backend *kb, void *owner)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)owner | UD_SEND, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    return 0;
}

void knit__cop_submit(knit__backend *kb)
{
    uring_backend *b = (uring_backend *)kb;
    if (kb->cops && io_uring_sq_ready(&b->ring)) io_uring_submit(&b->ring);
}

size_t knit__backend_cops_inflight(const knit__backend *kb)
{
    if (!kb->cops) return 0;
    return ((const uring_backend *)kb)->inflight;
}
