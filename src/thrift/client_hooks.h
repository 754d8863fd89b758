/* thrift/client_hooks.h — internal entry points into the Thrift client for
 * unit tests and fuzz targets (tests/unit/test_thrift.c,
 * fuzz/fuzz_thrift_client.c). Not for applications.
 *
 * A detached client is a knit_thrift_client whose connections are never
 * dialled: the caller attaches a transport to each connection's protocol
 * (knit_memory_transport_new(knit__thrift_client_protocol(cl, i), &t)),
 * which then runs connection_made, and feeds it reply bytes. Everything
 * else (calls, replies, knit_thrift_client_free) is the ordinary client.
 * Free it with knit_thrift_client_free before closing the transports, so a
 * closed connection does not schedule a reconnect. [reactor]
 */
#ifndef KNIT_THRIFT_CLIENT_HOOKS_H
#define KNIT_THRIFT_CLIENT_HOOKS_H

#include <stdint.h>

#include "knit/stream.h"
#include "knit/thrift.h"

int knit__thrift_client_new_detached(knit_reactor *r, const knit_thrift_client_options *o,
                                     knit_thrift_client **out);

/* The protocol of connection I (0 <= I < o->connections), or NULL. */
knit_protocol *knit__thrift_client_protocol(knit_thrift_client *cl, unsigned i);

/* Bytes the unframed reply scanner has walked on all connections so far
 * (thrift/scan.h; a failed step's bytes count when it is walked again): a
 * measure of reply-reading work that does not depend on timing. */
uint64_t knit__thrift_client_scan_bytes(const knit_thrift_client *cl);

#endif
