/* libFuzzer target for the Thrift client's reply reading (src/thrift/
 * client.c on_data/handle_reply, the unframed reply scanner thrift/scan.c,
 * knit_thrift_decode_reply into generated result structs).
 *
 * Input: a control byte, then whatever "the server" sends. The control byte
 * picks the protocol (binary/compact), the framing (framed/unframed) and the
 * size of the pieces the bytes arrive in. A detached client (its connection
 * is a memory transport, thrift/client_hooks.h) of the Rich service in
 * tests/thrift/rich.thrift makes six calls (seqids 0-5: ping, echo, add,
 * pick, nothing, and the oneway fire), is fed the bytes, then is freed.
 *
 * Checks: every call's Deferred fires exactly once (a reply, a failure, or
 * the cancellation when the client is freed); a successful result
 * re-encodes, decodes and re-encodes to the same bytes; and for unframed
 * input the resumable scanner, fed the same pieces, agrees with a one-shot
 * knit_thrift_skip over all the bytes (same verdict, same message length,
 * each byte walked once). ASan/UBSan/LSan catch the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/log.h"
#include "knit/reactor.h"
#include "knit/stream.h"
#include "knit/thrift.h"
#include "thrift/client_hooks.h"
#include "thrift/scan.h"

/* knit-thriftc output for tests/thrift/rich.thrift, generated in the build. */
#include "rich_thrift.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAME (64u * 1024)
#define NCALLS 6

static knit_clock *clk;
static knit_reactor *reactor;

typedef struct call {
    const knit_thrift_method *m;
    int fired;
} call;

/* Re-encode a decoded result, decode that, re-encode: same bytes. */
static void round_trip(const knit_thrift_method *m, knit_thrift_proto proto, const void *res)
{
    knit_thrift_writer w1, w2;
    knit_thrift_writer_init(&w1, proto);
    knit_thrift_writer_init(&w2, proto);
    CHECK(m->result_write(&w1, res) == 0);
    void *again = calloc(1, m->result_size);
    CHECK(again && m->result_init(again) == 0);
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, proto, w1.data, w1.len);
    CHECK(m->result_read(&r, again) == 0 && knit_thrift_reader_remaining(&r) == 0);
    CHECK(m->result_write(&w2, again) == 0);
    CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    m->result_free(again);
    free(again);
    knit_thrift_writer_free(&w1);
    knit_thrift_writer_free(&w2);
}

static knit_thrift_proto cur_proto;

static void on_ok(knit_result *res, void *arg)
{
    call *c = arg;
    c->fired++;
    knit_destroy_fn destroy = NULL;
    void *v = knit_result_take(res, &destroy);
    if (v && !c->m->oneway) round_trip(c->m, cur_proto, v);
    if (destroy) destroy(v);
}

static void on_err(knit_result *res, void *arg)
{
    call *c = arg;
    c->fired++;
    knit_failure_free(knit_result_take_failure(res));
}

static void start_calls(knit_thrift_client *cl, call *calls)
{
    knit_deferred *d[NCALLS] = {0};
    rich_Base_ping_args ping = {.n = 7};
    CHECK(rich_Base_ping_call(cl, &ping, &d[0]) == 0);
    calls[0].m = &rich_Base_ping_method;
    rich_Rich_echo_args echo;
    CHECK(rich_Rich_echo_args_init(&echo) == 0);
    CHECK(rich_Rich_echo_call(cl, &echo, &d[1]) == 0);
    rich_Rich_echo_args_free(&echo);
    calls[1].m = &rich_Rich_echo_method;
    rich_Rich_add_args add = {.a = 1, .b = 2};
    CHECK(rich_Rich_add_call(cl, &add, &d[2]) == 0);
    calls[2].m = &rich_Rich_add_method;
    rich_Rich_pick_args pick;
    CHECK(rich_Rich_pick_args_init(&pick) == 0);
    CHECK(rich_Rich_pick_call(cl, &pick, &d[3]) == 0);
    rich_Rich_pick_args_free(&pick);
    calls[3].m = &rich_Rich_pick_method;
    rich_Rich_nothing_args nothing = {0};
    CHECK(rich_Rich_nothing_call(cl, &nothing, &d[4]) == 0);
    calls[4].m = &rich_Rich_nothing_method;
    rich_Rich_fire_args fire;
    CHECK(rich_Rich_fire_args_init(&fire) == 0);
    CHECK(rich_Rich_fire_call(cl, &fire, &d[5]) == 0);
    rich_Rich_fire_args_free(&fire);
    calls[5].m = &rich_Rich_fire_method;
    for (int i = 0; i < NCALLS; i++) {
        knit_deferred_add_callbacks(d[i], on_ok, on_err, &calls[i]);
        knit_deferred_unref(d[i]);
    }
}

/* The unframed scanner fed IN in pieces of STEP (each piece's buffer of
 * exactly the bytes seen so far) against a one-shot walk over all of IN. */
static void scanner_agrees(knit_thrift_proto proto, const uint8_t *in, size_t len, size_t step)
{
    size_t lim = len < MAX_FRAME ? len : MAX_FRAME;
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, proto, in, lim);
    const char *name;
    size_t nl;
    knit_thrift_msg_type t;
    int32_t seq;
    int want = knit_thrift_read_message_begin(&r, &name, &nl, &t, &seq);
    if (!want) want = knit_thrift_skip(&r, KNIT_TT_STRUCT);

    knit__thrift_scan s;
    knit__thrift_scan_init(&s, proto);
    int got = KNIT_EEOF;
    size_t n = 0;
    for (size_t seen = 0; seen < lim;) {
        seen = lim - seen > step ? seen + step : lim;
        uint8_t *copy = malloc(seen);
        CHECK(copy);
        memcpy(copy, in, seen);
        got = knit__thrift_scan_message(&s, copy, seen, &n);
        free(copy);
        if (got != KNIT_EEOF) break;
    }
    CHECK(got == want);
    if (got == 0) {
        CHECK(n == (size_t)(r.p - in));
        CHECK(s.examined == n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 256 * 1024) return 0;
    if (!reactor) {
        knit_log_set_level(KNIT_LOG_OFF);
        clk = knit_clock_fake_new(0);
        knit_reactor_options ro;
        knit_reactor_options_init(&ro);
        ro.clock = clk;
        if (knit_reactor_new(&reactor, &ro) != 0) abort();
    }
    unsigned ctl = data[0];
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    knit_thrift_proto proto = ctl & 1 ? KNIT_THRIFT_COMPACT : KNIT_THRIFT_BINARY;
    bool unframed = ctl & 2;
    static const size_t steps[] = {1, 2, 3, 5, 7, 16, 100, 1 << 20};
    size_t step = steps[(ctl >> 2) & 7];
    cur_proto = proto;

    knit_thrift_client_options co;
    knit_thrift_client_options_init(&co);
    co.endpoint = "tcp:127.0.0.1:9"; /* never dialled */
    co.proto = proto;
    co.unframed = unframed;
    co.timeout = 0;
    co.max_frame = MAX_FRAME;
    knit_thrift_client *cl;
    CHECK(knit__thrift_client_new_detached(reactor, &co, &cl) == 0);
    knit_transport *t;
    CHECK(knit_memory_transport_new(knit__thrift_client_protocol(cl, 0), &t) == 0);
    call calls[NCALLS];
    memset(calls, 0, sizeof calls);
    start_calls(cl, calls);
    CHECK(calls[5].fired == 1); /* oneway: done once written */

    for (size_t off = 0; off < len && !knit_transport_closing(t); off += step)
        knit_memory_transport_feed(t, in + off, len - off < step ? len - off : step);

    knit_thrift_client_free(cl);
    knit_memory_transport_close(t, KNIT_CLOSE_PEER, 0);
    knit_memory_transport_free(t);
    for (int i = 0; i < NCALLS; i++)
        CHECK(calls[i].fired == 1);

    if (unframed) scanner_agrees(proto, in, len, step);
    return 0;
}
