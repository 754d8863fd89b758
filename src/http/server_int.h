/* http/server_int.h — hooks into the web container for knit's own unit
 * tests (tests/unit/test_http.c): attach a connection to any transport,
 * e.g. the memory transport, without a listener. Not a public API. */
#ifndef KNIT_HTTP_SERVER_INT_H
#define KNIT_HTTP_SERVER_INT_H

#include <stddef.h>

#include "knit/http.h"
#include "knit/stream.h"

/* A new connection protocol of server S, as if accepted (NULL when
 * draining or out of memory). Hand it to knit_memory_transport_new. */
knit_protocol *knit__http_server_accept(knit_http_server *s);

/* What the reclaim hook does for a listener at max_connections, for the
 * connections made by knit__http_server_accept: close up to N idle ones,
 * longest idle first; returns how many. */
size_t knit__http_server_reclaim(knit_http_server *s, size_t n);

/* Bytes of the per-connection struct (the part knit's HTTP layer adds to
 * an idle keep-alive connection, on top of the transport). */
size_t knit__http_conn_size(void);

/* Out-of-memory paths: make the ALLOC_NTH next arena allocation
 * (knit_http_alloc, request_new included) and the CALL_NTH next cross-thread
 * call a pool handler's request makes to the reactor (flush, body resume)
 * fail as if memory ran out; 0 leaves that kind alone. Process-wide. [any] */
void knit__http_inject_failures(unsigned alloc_nth, unsigned call_nth);

#endif
