/* knit/thrift/server.h — the Thrift server (src/thrift/server.c).
 *
 * The half-sync/half-async Thrift server. All network IO, framing, SASL and
 * argument decoding run on the reactor; each call of a blocking handler
 * method runs on the pool (the worker also encodes the reply), async
 * methods run on the reactor. Several calls per connection are in flight at
 * once and answered as they complete (clients match them by seqid); oneway
 * calls get no reply. One port serves framed and unframed binary/compact and
 * SASL, told apart by the first bytes (knit_thrift_detect), and several
 * services through the multiplexed protocol ("Service:method"; plain names
 * go to the first service added).
 *
 * Limits: frames above max_frame and unframed messages above max_message
 * close the connection; strings/containers are checked against the bytes of
 * the message; a call the pool cannot queue is answered at once with
 * TApplicationException LOADSHEDDING (11); a connection with max_in_flight
 * calls outstanding stops being read until one completes; a connection with
 * no call in flight and no byte received for idle_timeout is closed.
 *
 * Life cycle: new → add (services) → listen → ... → close. close stops
 * listening, aborts the connections, and frees the server once the calls
 * still running on the pool have finished (their replies are dropped).
 * Processors (and their handlers) must stay valid until then.
 *
 * Threads: every function is [reactor].
 *
 * Ownership: options are copied (the SASL options' strings are borrowed);
 * processors are borrowed (see the life cycle above); the server frees
 * itself after knit_thrift_server_close.
 */
#ifndef KNIT_THRIFT_SERVER_H
#define KNIT_THRIFT_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/reactor.h"
#include "knit/stream.h"
#include "knit/thrift/proto.h"
#include "knit/thrift/runtime.h"
#include "knit/thrift/sasl.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_THRIFT_MAX_IN_FLIGHT_DEFAULT 256u
#define KNIT_THRIFT_IDLE_TIMEOUT_DEFAULT KNIT_SEC(600)
#define KNIT_THRIFT_MAX_SERVICES 16

typedef struct knit_thrift_server knit_thrift_server;
typedef struct knit_pool knit_pool;

typedef struct knit_thrift_server_options {
    knit_pool *pool;                      /* runs blocking handler methods; required for them */
    uint32_t max_frame;                   /* default KNIT_THRIFT_MAX_FRAME_DEFAULT (16,384,000) */
    uint32_t max_message;                 /* unframed messages; default = max_frame */
    uint32_t string_limit;                /* 0 = only the message's own bytes */
    uint32_t container_limit;             /* 0 = only the message's own bytes */
    unsigned max_in_flight;               /* per connection; default 256 */
    unsigned max_connections;             /* 0 = unlimited */
    knit_duration idle_timeout;           /* default 600 s; 0 = never */
    bool strict_read;                     /* binary: refuse old non-strict headers */
    const knit_thrift_sasl_options *sasl; /* NULL: SASL clients are refused */
    bool require_sasl;                    /* refuse clients that do not start with SASL */
} knit_thrift_server_options;

typedef struct knit_thrift_server_stats {
    uint64_t connections;     /* accepted in total */
    size_t open;              /* open now */
    uint64_t calls;           /* calls dispatched */
    uint64_t replies;         /* replies written (incl. exceptions) */
    uint64_t app_exceptions;  /* TApplicationExceptions sent */
    uint64_t shed;            /* LOADSHEDDING answers */
    uint64_t protocol_errors; /* connections closed for malformed input */
    uint64_t sasl_failures;
    uint64_t idle_closed;
    size_t in_flight; /* calls running now */
} knit_thrift_server_stats;

void knit_thrift_server_options_init(knit_thrift_server_options *o);
/* Options are copied (the SASL options struct too; its strings must stay valid). */
int knit_thrift_server_new(knit_reactor *r, const knit_thrift_server_options *o,
                           knit_thrift_server **out);
/* Serve P (borrowed) under P->service. KNIT_EEXIST for a duplicate name,
 * KNIT_ELIMIT beyond KNIT_THRIFT_MAX_SERVICES. */
int knit_thrift_server_add(knit_thrift_server *s, const knit_thrift_processor *p);
/* Listen on endpoint string DESC ("tcp:9090:interface=127.0.0.1"). Several
 * listeners may be added. 0 or a negative code with a message in ERR. */
int knit_thrift_server_listen(knit_thrift_server *s, const char *desc, char *err, size_t errlen);
/* The bound address of the first listener (the real port after tcp:0). */
int knit_thrift_server_address(const knit_thrift_server *s, knit_sockaddr *out);
/* The protocol factory behind the listeners, for custom transports (the
 * memory transport in tests: build(), then knit_memory_transport_new). */
knit_protocol_factory *knit_thrift_server_factory(knit_thrift_server *s);
void knit_thrift_server_get_stats(const knit_thrift_server *s, knit_thrift_server_stats *out);
void knit_thrift_server_close(knit_thrift_server *s);
/* Graceful drain (Thrift has no drain signal of its own): stop listening,
 * close the connections that have no call in flight now, and from then on
 * close each connection as soon as its last call in flight was answered
 * (the reply is flushed first). Calls that arrive on a connection before it
 * closes are still served. Clients see the connection close between calls
 * and reconnect (knit's client sends a call that found its connection
 * closing on a new one). Close the server once in_flight (stats) is 0 or
 * a deadline passed. Idempotent. */
void knit_thrift_server_drain(knit_thrift_server *s);

#ifdef __cplusplus
}
#endif
#endif
