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

#endif
