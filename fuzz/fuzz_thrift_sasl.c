/* libFuzzer target: the Thrift SASL negotiation state machine (server side).
 *
 * The input is what a client sends; it is fed in pieces whose sizes come from
 * the first byte, so partial messages are exercised too. The server offers
 * PLAIN and SCRAM-SHA-256 with an application password callback (no sasldb
 * file needed). After DONE, the rest is unwrapped as data frames. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "knit/log.h"
#include "knit/thrift.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check(void *arg, const char *user, const char *pw, size_t len)
{
    (void)arg;
    return strcmp(user, "u") == 0 && len == 1 && pw[0] == 'p' ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    knit_log_set_level(KNIT_LOG_OFF);
    if (size < 1) return 0;
    size_t step = (size_t)data[0] % 16 + 1;
    data++;
    size--;
    knit_thrift_sasl_options o;
    knit_thrift_sasl_options_init(&o);
    o.check_password = check;
    o.max_negotiation = 4096;
    o.max_frame = 1 << 16;
    knit_thrift_sasl *s;
    if (knit_thrift_sasl_server_new(&o, &s) != 0) return 0;
    knit_thrift_writer out;
    knit_thrift_writer_init(&out, KNIT_THRIFT_BINARY);
    /* an exact-size copy of the bytes seen so far, as a connection buffer would hold */
    size_t have = 0, start = 0;
    int rc = KNIT_THRIFT_SASL_MORE;
    while (have < size && rc == KNIT_THRIFT_SASL_MORE) {
        have = have + step < size ? have + step : size;
        uint8_t *buf = malloc(have - start);
        memcpy(buf, data + start, have - start);
        size_t used;
        rc = knit_thrift_sasl_feed(s, buf, have - start, &used, &out);
        start += used;
        free(buf);
    }
    if (rc == KNIT_THRIFT_SASL_DONE) {
        for (;;) {
            const uint8_t *msg;
            size_t ml, used;
            if (knit_thrift_sasl_unwrap(s, data + start, size - start, &used, &msg, &ml) != 1)
                break;
            start += used;
        }
    }
    knit_thrift_writer_free(&out);
    knit_thrift_sasl_free(s);
    return 0;
}
