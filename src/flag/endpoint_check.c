/* endpoint_check.c — how the ENDPOINT flag type validates its text.
 *
 * The endpoint module (include/knit/endpoint.h) owns the grammar of
 * endpoint strings: knit_endpoint_check() parses and validates without
 * touching the network, and its message becomes the "(reason)" part of the
 * flag error. Its implementation (src/endpoint/) is not committed yet, so it
 * is referenced weakly: when the program links it we use it; otherwise we
 * fall back to a shape check ("TYPE:REST" with a TYPE the design names) so
 * a typo such as "tpc:8080" is still caught at startup.
 * TODO(flag): make the reference strong once src/endpoint/ is in the tree.
 */
#include "knit/flag.h"
#include "knit/error.h"

#include "knit/endpoint.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern __typeof__(knit_endpoint_check) knit_endpoint_check __attribute__((weak));

int knit_flag_validate_endpoint(const char *text, char *why, size_t whylen, void *arg)
{
    static const char *const types[] = {"tcp", "tcp6", "unix", "ssl", "tls", "systemd", "fd", NULL};
    bool server = (uintptr_t)arg != KNIT_FLAG_ENDPOINT_CLIENT;
    if (knit_endpoint_check) return knit_endpoint_check(text, server, why, whylen);
    const char *colon = strchr(text, ':');
    if (!colon || colon == text) {
        snprintf(why, whylen, "missing \"type:\" prefix");
        return KNIT_EBADENDPOINT;
    }
    size_t tl = (size_t)(colon - text);
    for (size_t i = 0; types[i]; i++)
        if (strlen(types[i]) == tl && strncmp(types[i], text, tl) == 0) {
            if (!colon[1]) {
                snprintf(why, whylen, "nothing after \"%.*s:\"", (int)tl, text);
                return KNIT_EBADENDPOINT;
            }
            return 0;
        }
    snprintf(why, whylen, "unknown endpoint type \"%.*s\"", (int)(tl > 32 ? 32 : tl), text);
    return KNIT_EBADENDPOINT;
}
