/* stream_int.h — the transport struct and the seams used by the endpoint
 * and tls modules (layers under a socket transport, pre-protocol phases).
 * Internal to knit. [reactor] */
#ifndef KNIT_STREAM_INT_H
#define KNIT_STREAM_INT_H

#include <sys/types.h>

#include "knit/stream.h"
#include "reactor/backend.h"

/* A layer between the socket and the transport's byte stream: TLS. The
 * default (NULL layer) uses recv/send on the fd directly. Return values:
 * bytes (> 0), 0 for a clean EOF (recv only), or a negative knit code;
 * KNIT_EAGAIN means "would block" — the layer records in t->layer_want
 * which readiness (KNIT_READABLE/KNIT_WRITABLE) it needs. */
typedef struct knit__layer_ops {
    const char *kind;                    /* "tls" */
    int (*handshake)(knit_transport *t); /* 0 done, EAGAIN, error */
    ssize_t (*recv)(knit_transport *t, void *buf, size_t n);
    ssize_t (*send)(knit_transport *t, const void *buf, size_t n);
    int (*shutdown)(knit_transport *t);      /* close_notify: 0/EAGAIN/err */
    bool (*pending)(knit_transport *t);      /* decrypted bytes buffered */
    void (*release_idle)(knit_transport *t); /* drop buffers while idle */
    void (*free)(knit_transport *t);
} knit__layer_ops;

enum {
    TP_MEMORY = 1u << 0,     /* memory transport */
    TP_CLOSING = 1u << 1,    /* lose_connection: close when flushed */
    TP_CLOSED = 1u << 2,     /* fd closed; connection_lost queued */
    TP_SHUT_REQ = 1u << 3,   /* shutdown_write requested */
    TP_SHUT_DONE = 1u << 4,  /* FIN/close_notify sent */
    TP_EOF = 1u << 5,        /* peer's EOF seen */
    TP_PAUSED = 1u << 6,     /* producer told to pause */
    TP_UNIX = 1u << 7,       /* AF_UNIX socket */
    /* 1u << 8 was the PROXY phase, now read by the endpoint layer */
    TP_HANDSHAKE = 1u << 9,  /* phase: TLS handshake */
    TP_ATTACHED = 1u << 10,  /* a protocol is attached */
    TP_LOST_DONE = 1u << 11, /* connection_lost delivered (memory) */
    TP_ABORT_REQ = 1u << 12, /* memory: abort requested */
    TP_TLS_SHUT = 1u << 13,  /* TLS close_notify in progress */
};

/* t->uflags: the io_uring receive and send (see transport.c's file comment). */
enum {
    TU_MODE = 1u << 3,    /* this transport receives and sends by completion */
    TU_RECV = 1u << 0,    /* a multishot receive is in flight (holds t) */
    TU_CANCEL = 1u << 1,  /* ... and its cancellation was requested */
    TU_EOF = 1u << 2,     /* the peer's EOF arrived while it could not be delivered */
    TU_LOST = 1u << 4,    /* closed: queue lost_cb when no operation is left in flight */
    TU_SEND = 1u << 5,    /* a send from t->out is in flight (holds t; t->out pinned) */
    TU_SCANCEL = 1u << 6, /* ... and its cancellation was requested */
};

/* Called once when the pre-protocol phase (the TLS handshake) ends: err 0 → attach a protocol with knit__transport_attach (or close);
 * err < 0 → the transport is already closing and will free itself. */
typedef void (*knit__ready_fn)(knit_transport *t, int err, void *arg);

/* Owner hook: runs right before the transport is freed (listener counts). */
typedef void (*knit__owner_fn)(knit_transport *t, void *owner);

/* State only some connections need (TLS, addresses from a PROXY header,
 * the pre-protocol phase), kept out of line so a plain idle TCP connection
 * stays small. */
typedef struct knit__tp_ext {
    const knit__layer_ops *layer;
    void *layer_state;    /* SSL * for TLS */
    knit__ready_fn ready; /* pre-protocol completion */
    void *ready_arg;
    knit_timer phase_timer; /* handshake deadline; once attached: close_or_reset's bound */
    knit_sockaddr *proxied; /* [0] src, [1] dst from a PROXY header; else NULL */
    /* io_uring: output written while a send from t->out is in flight that
     * t->out could not take in place (its bytes must not move); joins
     * t->out at the send's completion. Empty otherwise. */
    knit_buf behind;
} knit__tp_ext;

struct knit_transport {
    knit_io io; /* the fd watch; io.data == this */
    knit_protocol *proto;
    knit_buf out;      /* queued output; idle (no memory) when empty */
    knit_buf in;       /* unconsumed input; idle when empty */
    knit__tp_ext *ext; /* NULL for plain TCP/UNIX connections */
    knit__owner_fn owner_fn;
    void *owner;
    knit_transport *prev, *next;  /* this thread's registry (memory: unlinked) */
    uint64_t id;                  /* knit_transport_id: process-wide sequence */
    knit_time started;            /* reactor time at creation (memory: 0) */
    uint64_t bytes_in, bytes_out; /* protocol bytes received / sent */
    uint32_t high, low;
    uint16_t flags;
    uint8_t reason; /* knit_close_reason once closing */
    uint8_t read_pauses;
    uint8_t layer_want; /* readiness a layer is waiting for */
    uint8_t soon;       /* queued call-soon callbacks holding t */
    uint8_t uflags;     /* io_uring receive/send (TU_* in transport.c; 0 on epoll) */
    uint8_t _pad;
    int err;
};

#define TP_LAYER(t) ((t)->ext ? (t)->ext->layer : NULL)
/* Get (allocating) the out-of-line state; NULL when out of memory. */
knit__tp_ext *knit__transport_ext(knit_transport *t);

/* Create a socket transport for a connected FD (non-blocking from now on;
 * owned by the transport even on failure). With READY NULL a protocol must
 * be attached at once (or the caller sets t->ext->ready and runs the
 * phases itself); otherwise the TLS handshake (LAYER non-NULL; its state
 * already in LAYER_STATE) runs first. PHASE_TIMEOUT bounds it (0: none). */
int knit__transport_new(knit_reactor *r, int fd, const knit__layer_ops *layer, void *layer_state,
                        knit__ready_fn ready, void *ready_arg, knit_duration phase_timeout,
                        knit_transport **out);
/* The peer and local addresses a PROXY header gave (the endpoint layer
 * read it before the transport existed): knit_transport_peer/_local
 * answer these from now on. 0 or KNIT_ENOMEM. */
int knit__transport_set_proxied(knit_transport *t, const knit_sockaddr *src,
                                const knit_sockaddr *dst);
/* Attach P and run connection_made; starts reading. */
void knit__transport_attach(knit_transport *t, knit_protocol *p);
/* Close without a protocol (refused by the factory / limit): frees later. */
void knit__transport_close(knit_transport *t, bool flush, knit_close_reason reason, int err);

/* Drive the TLS phase (after setting t->ext->ready); the timer callback for
 * t->ext->phase_timer. */
void knit__transport_run_phases(knit_transport *t);
void knit__transport_phase_timeout(knit_reactor *r, void *arg);

/* Bytes queued for the socket: t->out and, on io_uring, what waits behind
 * an in-flight send. */
static inline size_t knit__out_len(const knit_transport *t)
{
    return knit_buf_len(&t->out) + (t->ext ? knit_buf_len(&t->ext->behind) : 0);
}

/* T's output buffer changed; it held BEFORE bytes: account the difference
 * to the protocol's output group (stream.h) and signal its water marks.
 * Every change of t->out goes through here while a protocol is attached. */
void knit__transport_out_changed(knit_transport *t, size_t before);
/* connection_lost is about to be delivered: take T's remaining output out
 * of its protocol's group. */
void knit__transport_out_leave(knit_transport *t);

/* The next transport id (process-wide, from 1). [any] */
uint64_t knit__transport_next_id(void);

/* Per-thread scratch for reads (KNIT_STREAM_READ_CHUNK bytes), or NULL. */
uint8_t *knit__stream_scratch(void);

#endif
