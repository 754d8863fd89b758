/* knit/thrift/client.h — the Thrift client (src/thrift/client.c).
 *
 * A client for one endpoint: a small pool of connections, calls pipelined
 * on them (matched by seqid, replies may come in any order), a per-call
 * timeout (the Deferred fails with KNIT_ETIMEDOUT; a late reply is
 * discarded), SASL on connect. Each connection is kept up by a
 * ClientService (knit/client.h): reconnection with a jittered exponential
 * backoff (backoff_initial doubling up to backoff_max, +-25%). Calls made
 * while no connection is up wait (bounded by max_waiting and by their
 * timeout) and are sent once one is — or, with fail_after_failures N, fail
 * at once with the connection's last error once N attempts in a row have
 * failed. A call that arrives while the backoff has grown past its timeout
 * makes the next attempt start within that timeout (at once when the last
 * one is older than it), so a server that came back answers the first call.
 *
 * Protocols: binary, compact or JSON, framed or unframed, or in THeader
 * frames (`header`): then every call carries the client's info headers and,
 * when the client has a timeout, fbthrift's client_timeout (ms) so the
 * server drops the call if it is still queued when the client gives up;
 * `header_zlib` compresses the calls (replies are inflated whatever the
 * server chose). THeader does not combine with SASL (KNIT_EINVAL).
 *
 * Failures of a call's Deferred: KNIT_EAPP (a TApplicationException: the
 * failure message is "TApplicationException TYPE: MESSAGE"), KNIT_ETIMEDOUT
 * (for a call that never got a connection, its cause is the connection's
 * last error, e.g. "ECONNREFUSED: connect tcp:127.0.0.1:9090: connection
 * refused"), KNIT_ECLOSED (the connection dropped with the call in flight;
 * it is not retried: it may have run), the connection's last error with
 * fail_after_failures (KNIT_ECONNREFUSED, KNIT_EDNS, KNIT_ESASL, ...),
 * KNIT_EQUEUEFULL, KNIT_ECANCELED, a decode error.
 *
 * A call that was never sent is not a failure: one made while its
 * connection is closing (the server closed it between calls — a drain, an
 * idle timeout — and the client has read the EOF) waits for the next
 * connection and goes out on it, under its own timeout (stats.resent
 * counts those that had picked the closing connection). A server's close
 * that crosses a call on the wire cannot be told apart from a drop after
 * the call arrived: that call fails with KNIT_ECLOSED.
 *
 * Threads: [reactor], except knit_thrift_client_call_sync which is
 * [worker] (any thread but the reactor's).
 *
 * Ownership: options are copied, the endpoint and service strings too; the
 * SASL options struct is copied but its strings are borrowed (every
 * reconnection reads them: keep them for the client's life). Call
 * arguments are borrowed (encoded before the call returns); a reply's
 * result struct belongs to the Deferred's callbacks (destroy frees it).
 */
#ifndef KNIT_THRIFT_CLIENT_H
#define KNIT_THRIFT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/reactor.h"
#include "knit/thrift/header.h"
#include "knit/thrift/proto.h"
#include "knit/thrift/runtime.h"
#include "knit/thrift/sasl.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_THRIFT_CLIENT_TIMEOUT_DEFAULT KNIT_SEC(30)
#define KNIT_THRIFT_CLIENT_MAX_PENDING_DEFAULT 256u
#define KNIT_THRIFT_CLIENT_MAX_WAITING_DEFAULT 4096u
#define KNIT_THRIFT_BACKOFF_INITIAL KNIT_MSEC(100)
#define KNIT_THRIFT_BACKOFF_MAX KNIT_SEC(10)

typedef struct knit_thrift_client knit_thrift_client;

typedef struct knit_thrift_client_options {
    const char *endpoint;          /* client endpoint string: "tcp:127.0.0.1:9090" */
    knit_thrift_proto proto;       /* default binary */
    bool unframed;                 /* default framed (ignored with SASL: always framed) */
    unsigned connections;          /* default 1 */
    unsigned max_pending;          /* calls in flight per connection; default 256 */
    unsigned max_waiting;          /* calls waiting for a connection; default 4096 */
    knit_duration timeout;         /* per call; default 30 s; 0 = none */
    knit_duration connect_timeout; /* default: the endpoint's (30 s) */
    knit_duration backoff_initial; /* default 100 ms, doubled up to backoff_max (10 s) */
    knit_duration backoff_max;
    const char *service;                  /* multiplexed: send "SERVICE:method" */
    const knit_thrift_sasl_options *sasl; /* NULL: no SASL; copied, strings borrowed */
    uint32_t max_frame;                   /* largest reply; default 16,384,000 */
    unsigned fail_after_failures; /* 0 (default): calls wait for a connection; N: fail fast */
    bool header;                          /* THeader frames (PROTO inside); unframed ignored */
    bool header_zlib;                     /* THeader: compress calls with zlib */
    const knit_thrift_header_kv *headers; /* THeader: info headers sent with every call (copied) */
    size_t nheaders;
} knit_thrift_client_options;

typedef struct knit_thrift_client_stats {
    uint64_t calls, replies, app_exceptions, timeouts, connects, connect_failures, disconnects;
    uint64_t late_replies; /* replies for calls that timed out or were cancelled */
    size_t up;             /* connections ready now */
    size_t pending;        /* calls in flight */
    size_t waiting;        /* calls waiting for a connection */
    uint64_t resent;       /* never-sent calls moved off a closing connection */
} knit_thrift_client_stats;

void knit_thrift_client_options_init(knit_thrift_client_options *o);
/* Start connecting (every connection at once). 0 and *out, or
 * KNIT_EBADENDPOINT / KNIT_ENOMEM. */
int knit_thrift_client_new(knit_reactor *r, const knit_thrift_client_options *o,
                           knit_thrift_client **out);
/* Fail every call still pending or waiting (KNIT_ECANCELED), close the
 * connections, free the client. */
void knit_thrift_client_free(knit_thrift_client *c);
void knit_thrift_client_get_stats(const knit_thrift_client *c, knit_thrift_client_stats *out);

/* Send a call of M with ARGS (borrowed: encoded before return). *OUT fires on
 * the reactor with a freshly allocated result struct (destroy frees it) or
 * fails (see above). Oneway calls fire with a NULL success once written.
 * Returns 0, or KNIT_EQUEUEFULL / KNIT_ENOMEM / an encoding error (then *OUT
 * is NULL). [reactor] */
int knit_thrift_client_call(knit_thrift_client *c, const knit_thrift_method *m, const void *args,
                            knit_deferred **out);
/* Blocking form: waits for the reply and moves it into RES (initialised by
 * the caller, NULL for oneway). Returns 0, or the failure code (KNIT_EAPP,
 * KNIT_ETIMEDOUT, ...). Must not be called on the reactor thread. [worker] */
int knit_thrift_client_call_sync(knit_thrift_client *c, const knit_thrift_method *m,
                                 const void *args, void *res);

#ifdef __cplusplus
}
#endif
#endif
