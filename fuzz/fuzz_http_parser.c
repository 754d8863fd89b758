/* libFuzzer target for the HTTP/1.1 request parser and chunked decoder.
 *
 * Feeds the input three ways and checks invariants that must hold for any
 * bytes: the whole input at once; split at a point taken from the first byte
 * and fed incrementally with prev_len (the verdict must match the one-shot
 * parse once the whole input is there, unless the one-shot parse said
 * "incomplete"); and, when the head is complete with a chunked body, the rest
 * through the decoder in small pieces. ASan catches any over-read: the input
 * buffer libFuzzer hands us is exactly `size` bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned split_seed = data[0];
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;

    knit__http_limits lim;
    knit__http_limits_init(&lim);
    lim.max_body = 4096;
    if (split_seed & 1) {
        lim.max_head = 512;
        lim.max_target = 128;
        lim.max_headers = 8;
    }

    knit__http_field fields[64];
    knit__http_request req = {.fields = fields, .fields_cap = 64};
    ssize_t rc = knit__http_parse_request(buf, len, 0, &req, &lim);
    CHECK(rc == KNIT__HTTP_INCOMPLETE || rc == KNIT__HTTP_ERROR || (rc > 0 && (size_t)rc <= len));
    if (rc == KNIT__HTTP_ERROR) {
        CHECK(req.status >= 400 && req.status <= 505 && req.error);
    }
    if (rc > 0) {
        CHECK(req.method >= buf && req.method + req.method_len <= buf + rc);
        CHECK(req.target >= buf && req.target + req.target_len <= buf + rc);
        CHECK(req.num_fields <= 64);
        for (size_t i = 0; i < req.num_fields; i++) {
            CHECK(fields[i].name >= buf && fields[i].name + fields[i].name_len <= buf + rc);
            CHECK(fields[i].value >= buf && fields[i].value + fields[i].value_len <= buf + rc);
        }
        CHECK(req.minor_version == 0 || req.minor_version == 1);
    }

    /* incremental: two pieces (prefix, then the whole) */
    size_t cut = len ? (size_t)(split_seed % (len + 1)) : 0;
    knit__http_field f2[64];
    knit__http_request r2 = {.fields = f2, .fields_cap = 64};
    ssize_t a = knit__http_parse_request(buf, cut, 0, &r2, &lim);
    if (a == KNIT__HTTP_INCOMPLETE) {
        ssize_t b = knit__http_parse_request(buf, len, cut, &r2, &lim);
        if (rc != KNIT__HTTP_INCOMPLETE && b != KNIT__HTTP_INCOMPLETE) {
            CHECK(b == rc);
            if (b == KNIT__HTTP_ERROR) CHECK(r2.status == req.status);
        }
        /* A complete head is always found (the fast path may defer errors,
         * never a success). */
        if (rc > 0) CHECK(b == rc);
    }

    /* chunked body in pieces of 1..8 bytes */
    if (rc > 0 && req.body == KNIT__HTTP_BODY_CHUNKED) {
        knit__http_chunked d;
        knit__http_chunked_init(&d, lim.max_body);
        size_t pos = (size_t)rc, total = 0;
        size_t step = (split_seed >> 1) % 8 + 1;
        size_t avail_end = pos;
        while (pos < len && !d.done) {
            if (avail_end < len) avail_end = avail_end + step < len ? avail_end + step : len;
            /* copy the visible window so ASan sees its exact end */
            size_t w = avail_end - pos;
            char *win = malloc(w ? w : 1);
            if (!win) return 0;
            memcpy(win, buf + pos, w);
            const char *out;
            size_t ol;
            ssize_t r = knit__http_chunked_decode(&d, win, w, &out, &ol);
            if (r < 0) {
                CHECK(d.status == 400 || d.status == 413 || d.status == 431);
                free(win);
                break;
            }
            CHECK((size_t)r <= w);
            if (ol) CHECK(out >= win && out + ol <= win + w);
            total += ol;
            free(win);
            pos += (size_t)r;
            if (r == 0 && avail_end == len) break;
        }
        CHECK(total <= lim.max_body);
        CHECK(d.total <= lim.max_body);
    }
    return 0;
}
