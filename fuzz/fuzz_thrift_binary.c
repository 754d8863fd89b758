/* libFuzzer target: the Thrift binary decoder (knit/thrift.h).
 * Decodes the input as a message (header + struct) and, independently, as
 * bare values of every type; any outcome but a crash, a leak or an over-read
 * is fine. The input is the exact-size buffer libFuzzer hands us. */
#include <stddef.h>
#include <stdint.h>

#include "knit/thrift.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, KNIT_THRIFT_BINARY, data, size);
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
        knit_thrift_reader_init(&r, KNIT_THRIFT_BINARY, data, size);
        r.string_limit = 1 << 20;
        (void)knit_thrift_skip(&r, types[i]);
    }
    return 0;
}
