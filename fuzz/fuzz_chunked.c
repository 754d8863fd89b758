/* libFuzzer target for the chunked body decoder (src/http/parser.c,
 * knit__http_chunked_decode): chunk sizes, extensions, data, trailers.
 *
 * Input: one control byte, then the bytes that follow a request head whose
 * Transfer-Encoding is chunked. The control byte picks the body limit and a
 * piece size. The body is decoded twice: all at once, and in pieces (each
 * piece copied into a buffer of its exact size, so ASan sees any read past
 * it), carrying unconsumed bytes over as the server does. The decoder is a
 * state machine over bytes, so both runs must agree on everything: the
 * decoded data, the bytes consumed, done, and the error status. Also: data
 * spans lie inside the input, the body never exceeds the limit, nothing is
 * consumed after done, and errors name a status the server can send.
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

typedef struct outcome {
    uint8_t *out; /* decoded data */
    size_t out_len;
    size_t consumed; /* input bytes consumed */
    bool done;
    int status; /* 0, or the error status */
} outcome;

/* Decode IN[0, LEN) fed STEP bytes at a time (STEP 0: all at once). */
static void decode(const uint8_t *in, size_t len, size_t step, uint64_t max_body, outcome *o)
{
    knit__http_chunked d;
    knit__http_chunked_init(&d, max_body);
    memset(o, 0, sizeof *o);
    o->out = malloc(len ? len : 1);
    CHECK(o->out);
    size_t fed = 0, pos = 0; /* bytes made visible, bytes consumed */
    while (!d.done) {
        size_t add = step && len - fed > step ? step : len - fed;
        fed += add;
        /* the visible window [pos, fed), in a buffer of exactly its size */
        size_t w = fed - pos;
        uint8_t *win = malloc(w ? w : 1);
        CHECK(win);
        memcpy(win, in + pos, w);
        size_t at = 0;
        for (;;) {
            const char *span;
            size_t sl;
            ssize_t r = knit__http_chunked_decode(&d, (const char *)win + at, w - at, &span, &sl);
            if (r < 0) {
                CHECK(r == KNIT__HTTP_ERROR);
                CHECK(d.status == 400 || d.status == 413 || d.status == 431);
                CHECK(d.error != NULL);
                o->status = d.status;
                /* an error is sticky */
                CHECK(knit__http_chunked_decode(&d, (const char *)win, w, &span, &sl) ==
                      KNIT__HTTP_ERROR);
                free(win);
                o->consumed = pos + at;
                return;
            }
            CHECK((size_t)r <= w - at);
            if (sl) {
                CHECK(span >= (const char *)win + at && span + sl <= (const char *)win + at + r);
                memcpy(o->out + o->out_len, span, sl);
                o->out_len += sl;
            }
            at += (size_t)r;
            if (r == 0 || d.done || at == w) break;
        }
        free(win);
        pos += at;
        if (fed == len) break;
    }
    /* total counts a chunk once its size line is read */
    CHECK(d.done ? d.total == o->out_len : d.total >= o->out_len);
    CHECK(d.total <= max_body);
    if (d.done) {
        /* nothing after the end belongs to this body */
        const char *span;
        size_t sl;
        uint8_t one = 'x';
        CHECK(knit__http_chunked_decode(&d, (const char *)&one, 1, &span, &sl) == 0 && sl == 0);
    }
    o->consumed = pos;
    o->done = d.done;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned ctl = data[0];
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    static const uint64_t limits[] = {0, 1, 16, 4096, KNIT__HTTP_MAX_BODY_DEFAULT, UINT64_MAX};
    uint64_t max_body = limits[(ctl & 7) % 6];
    size_t step = ((ctl >> 3) & 15) + 1; /* 1..16 */

    outcome a, b;
    decode(in, len, 0, max_body, &a);
    decode(in, len, step, max_body, &b);
    CHECK(a.status == b.status);
    CHECK(a.done == b.done);
    CHECK(a.out_len == b.out_len && memcmp(a.out, b.out, a.out_len) == 0);
    if (a.status == 0) CHECK(a.consumed == b.consumed);
    free(a.out);
    free(b.out);
    return 0;
}
