/* endpoint_check.c — how the ENDPOINT flag type validates its text.
 *
 * The endpoint module (include/knit/endpoint.h) owns the grammar of
 * endpoint strings: knit_endpoint_check() parses and validates a server or
 * client string without touching the network or the filesystem, and its
 * message becomes the "(reason)" part of the flag error:
 *
 *   prog: flag --http: bad value "tpc:80" from argv: expected an endpoint
 *   like tcp:8080 (...the endpoint parser's reason...)
 */
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/flag.h"

#include <stdint.h>

int knit_flag_validate_endpoint(const char *text, char *why, size_t whylen, void *arg)
{
    bool server = (uintptr_t)arg != KNIT_FLAG_ENDPOINT_CLIENT;
    return knit_endpoint_check(text, server, why, whylen);
}
