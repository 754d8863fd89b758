/* libFuzzer target: the Thrift JSON decoder (knit/thrift.h, src/thrift/json.c).
 * Decodes the input as a message (header + struct) and, independently, as
 * bare values of every type; any outcome but a crash, a leak or an over-read
 * is fine. The input is the exact-size buffer libFuzzer hands us.
 *
 * It is also decoded as the generated struct `Everything` of
 * tests/thrift/rich.thrift (every type and container shape, unions,
 * required fields): whatever decodes must re-encode, decode again, and
 * re-encode to the same bytes (a mismatch traps). */
#include <stddef.h>
#include <stdint.h>

#include <stdlib.h>
#include <string.h>

#include "knit/thrift.h"

/* knit-thriftc output for tests/thrift/rich.thrift, generated in the build. */
#include "rich_thrift.h"

static void round_trip(const uint8_t *data, size_t size)
{
    rich_Everything a, b;
    if (rich_Everything_init(&a) != 0) return;
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, KNIT_THRIFT_JSON, data, size);
    if (rich_Everything_read(&r, &a) == 0) {
        knit_thrift_writer w1, w2;
        knit_thrift_writer_init(&w1, KNIT_THRIFT_JSON);
        knit_thrift_writer_init(&w2, KNIT_THRIFT_JSON);
        if (rich_Everything_write(&w1, &a) != 0) __builtin_trap();
        if (rich_Everything_init(&b) != 0) __builtin_trap();
        knit_thrift_reader_init(&r, KNIT_THRIFT_JSON, w1.data, w1.len);
        if (rich_Everything_read(&r, &b) != 0 || knit_thrift_reader_remaining(&r) != 0)
            __builtin_trap();
        if (rich_Everything_write(&w2, &b) != 0) __builtin_trap();
        if (w1.len != w2.len || memcmp(w1.data, w2.data, w1.len) != 0) __builtin_trap();
        rich_Everything c;
        if (rich_Everything_copy(&c, &b) == 0) rich_Everything_free(&c);
        rich_Everything_free(&b);
        knit_thrift_writer_free(&w1);
        knit_thrift_writer_free(&w2);
    }
    rich_Everything_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, KNIT_THRIFT_JSON, data, size);
    const char *name;
    size_t nl;
    knit_thrift_msg_type t;
    int32_t seq;
    if (knit_thrift_read_message_begin(&r, &name, &nl, &t, &seq) == 0) {
        if (t == KNIT_THRIFT_EXCEPTION) {
            int32_t type;
            const char *msg;
            size_t ml;
            (void)knit_thrift_read_app_exception(&r, &type, &msg, &ml);
        } else {
            (void)knit_thrift_skip(&r, KNIT_TT_STRUCT);
        }
    }
    static const knit_thrift_type types[] = {KNIT_TT_STRUCT, KNIT_TT_LIST, KNIT_TT_MAP,
                                             KNIT_TT_STRING, KNIT_TT_I64};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        knit_thrift_reader_init(&r, KNIT_THRIFT_JSON, data, size);
        r.string_limit = 1 << 20;
        (void)knit_thrift_skip(&r, types[i]);
    }
    round_trip(data, size);
    return 0;
}
