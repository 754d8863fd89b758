/* tls_int.h — what the endpoint module needs from tls. Internal. */
#ifndef KNIT_TLS_INT_H
#define KNIT_TLS_INT_H

#include "knit/tls.h"
#include "stream/stream_int.h"

/* Create the per-connection TLS state for FD (server when ctx is a server
 * context; HOST is the client's SNI / verification name, may be NULL).
 * 0, *ops and *state (pass both to knit__transport_new), or KNIT_ENOMEM /
 * KNIT_ETLS. */
int knit__tls_layer_new(knit_tls_ctx *ctx, int fd, const char *host, const knit__layer_ops **ops,
                        void **state);
bool knit__tls_ctx_is_server(const knit_tls_ctx *c);

#endif
