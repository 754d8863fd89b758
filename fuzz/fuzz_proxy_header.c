/* fuzz_proxy_header.c — libFuzzer target for the PROXY protocol v1/v2
 * header parser (the haproxy: endpoint).
 *
 * The input is copied to an exactly-sized heap buffer so ASan catches any
 * read past its end. The parser must answer header length (> 0 and
 * <= size), 0 (need more) or KNIT_EPARSE; it must also be consistent:
 * every strict prefix of a complete header answers 0, and a header plus
 * trailing bytes answers the same length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "knit/endpoint.h"
#include "knit/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    knit_sockaddr s, d;
    int rc = knit_proxy_header_parse(buf, size, &s, &d);
    if (rc != 0 && rc != KNIT_EPARSE && (rc < 0 || (size_t)rc > size)) abort();
    if (rc > 0) {
        if (s.len > sizeof s.u || d.len > sizeof d.u) abort();
        for (int cut = 0; cut < rc; cut += 1 + rc / 16) {
            uint8_t *pre = malloc((size_t)cut ? (size_t)cut : 1);
            memcpy(pre, buf, (size_t)cut);
            if (knit_proxy_header_parse(pre, (size_t)cut, &s, &d) != 0) abort();
            free(pre);
        }
    }
    free(buf);
    return 0;
}
