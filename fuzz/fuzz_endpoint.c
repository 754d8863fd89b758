/* fuzz_endpoint.c — libFuzzer target for endpoint strings.
 *
 * The input (first byte: server 0/1, the rest a description) goes through
 * knit_endpoint_parse and knit_endpoint_check. Both must return 0 or a
 * negative code, never crash or over-read; a failure must leave a non-empty,
 * NUL-terminated message; a success must round-trip: every parsed part is
 * reachable through knit_endpoint_desc_get / args. Nothing touches the
 * network or the filesystem.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "knit/endpoint.h"
#include "knit/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    bool server = data[0] & 1;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0; /* strings stop at the first NUL, as C callers' do */
    char err[KNIT_ENDPOINT_ERRLEN];
    memset(err, 'X', sizeof err);
    knit_endpoint_desc *d = NULL;
    int rc = knit_endpoint_parse(s, &d, err, sizeof err);
    if (rc == 0) {
        if (!d || !d->kind || !*d->kind) abort();
        for (size_t i = 0; i < d->nkw; i++)
            if (!knit_endpoint_desc_get(d, d->keys[i])) abort();
        for (size_t i = 0; i < d->nargs; i++)
            if (!d->args[i]) abort();
        knit_endpoint_desc_free(d);
    } else if (rc != KNIT_EBADENDPOINT && rc != KNIT_ENOMEM) {
        abort();
    } else if (!memchr(err, 0, sizeof err) || !err[0]) {
        abort();
    }
    memset(err, 'X', sizeof err);
    rc = knit_endpoint_check(s, server, err, sizeof err);
    if (rc > 0) abort();
    if (rc < 0 && (!memchr(err, 0, sizeof err) || !err[0])) abort();
    free(s);
    return 0;
}
