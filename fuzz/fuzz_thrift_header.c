/* libFuzzer target: the THeader frame codec (knit/thrift/header.h).
 * Parses the input as a frame (after its 4-byte length); a frame that
 * parses is inflated when it says zlib (bounded: no bomb gets past 1 MiB)
 * and written again from what was parsed, which must parse back to the
 * same protocol, seqid, flags, info headers and payload (a mismatch traps).
 * Any other outcome but a crash, a leak or an over-read is fine. */
#include <stddef.h>
#include <stdint.h>

#include <stdlib.h>
#include <string.h>

#include "knit/thrift.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    knit_thrift_header *h = malloc(2 * sizeof *h);
    if (!h) return 0;
    knit_thrift_header *h2 = h + 1;
    if (knit_thrift_header_parse(data, size, h) == 0) {
        if (h->zlib) {
            knit_thrift_writer out;
            knit_thrift_writer_init(&out, h->proto);
            int rc = knit_thrift_header_inflate(h->payload, h->payload_len, 1 << 20, &out);
            if (rc == 0 && out.len > (1 << 20)) __builtin_trap();
            knit_thrift_writer_free(&out);
        } else {
            knit_thrift_writer w;
            knit_thrift_writer_init(&w, h->proto);
            int rc = knit_thrift_header_write(&w, h->flags, h->seqid, h->proto, false, h->info,
                                              h->ninfo, h->payload, h->payload_len);
            if (rc == 0) {
                if (w.len < 4 || knit_thrift_header_parse(w.data + 4, w.len - 4, h2) != 0)
                    __builtin_trap();
                if (h2->proto != h->proto || h2->seqid != h->seqid || h2->flags != h->flags ||
                    h2->ninfo != h->ninfo || h2->zlib || h2->payload_len != h->payload_len ||
                    memcmp(h2->payload, h->payload, h->payload_len) != 0)
                    __builtin_trap();
                for (size_t i = 0; i < h->ninfo; i++) {
                    const knit_thrift_header_kv *a = &h->info[i], *b = &h2->info[i];
                    if (a->key_len != b->key_len || a->value_len != b->value_len ||
                        memcmp(a->key, b->key, a->key_len) != 0 ||
                        memcmp(a->value, b->value, a->value_len) != 0)
                        __builtin_trap();
                }
            }
            knit_thrift_writer_free(&w);
        }
    }
    free(h);
    return 0;
}
