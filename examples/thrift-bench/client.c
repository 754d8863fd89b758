/* knit-thrift-bench-client — knit's Thrift client against any bench.thrift
 * server (used by tests/integration/test_thrift_interop.py to call Apache
 * Thrift's Python and C++ servers).
 *
 *   knit-thrift-bench-client [--service=NAME] ENDPOINT binary|compact|json
 *                            framed|unframed|header|header-zlib
 *                            [USER PASSWORD]       (SASL PLAIN when given)
 *
 * --service=NAME: multiplexed calls ("NAME:add"). header: THeader frames
 * (the protocol inside, an info header x-from=knit and client_timeout);
 * header-zlib: THeader with the zlib transform.
 *
 * Pipelines 100 add calls and a 1 MiB echo on one connection, calls
 * sleep_us(500), prints "ok" and exits 0 when every answer was right.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_thrift.h"
#include "knit/deferred.h"
#include "knit/reactor.h"
#include "knit/thrift.h"

static int pending, failures;

static void got_add(knit_result *res, void *arg)
{
    bench_Bench_add_result *r = res->value;
    intptr_t i = (intptr_t)arg;
    if (!r->has_success || r->success != i + 1000000000000LL) failures++;
    pending--;
}

static void got_echo(knit_result *res, void *arg)
{
    (void)arg;
    bench_Bench_echo_result *r = res->value;
    if (!r->has_success || r->success.len != (1u << 20) || r->success.ptr[12345] != 'k') failures++;
    pending--;
}

static void got_other(knit_result *res, void *arg)
{
    (void)res;
    (void)arg;
    pending--;
}

static void got_error(knit_result *res, void *arg)
{
    (void)arg;
    fprintf(stderr, "call failed: %s\n", res->failure->message);
    knit_failure_free(knit_result_take_failure(res));
    failures++;
    pending--;
}

int main(int argc, char **argv)
{
    const char *service = NULL;
    if (argc > 1 && strncmp(argv[1], "--service=", 10) == 0) {
        service = argv[1] + 10;
        argv++;
        argc--;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: knit-thrift-bench-client [--service=NAME] ENDPOINT "
                        "binary|compact|json framed|unframed|header|header-zlib "
                        "[USER PASSWORD]\n");
        return 2;
    }
    knit_reactor *r;
    if (knit_reactor_new(&r, NULL) != 0) return 1;
    knit_thrift_client_options o;
    knit_thrift_client_options_init(&o);
    o.endpoint = argv[1];
    o.proto = strcmp(argv[2], "compact") == 0 ? KNIT_THRIFT_COMPACT
              : strcmp(argv[2], "json") == 0  ? KNIT_THRIFT_JSON
                                              : KNIT_THRIFT_BINARY;
    o.unframed = strcmp(argv[3], "unframed") == 0;
    o.header = strncmp(argv[3], "header", 6) == 0;
    o.header_zlib = strcmp(argv[3], "header-zlib") == 0;
    static const knit_thrift_header_kv from = {"x-from", 6, "knit", 4};
    if (o.header) {
        o.headers = &from;
        o.nheaders = 1;
    }
    o.service = service;
    o.timeout = KNIT_SEC(20);
    knit_thrift_sasl_options so;
    if (argc >= 6) {
        knit_thrift_sasl_options_init(&so);
        so.mechanisms = "PLAIN";
        so.username = argv[4];
        so.password = argv[5];
        o.sasl = &so;
    }
    knit_thrift_client *c;
    if (knit_thrift_client_new(r, &o, &c) != 0) return 1;
    knit_deferred *d;
    for (intptr_t i = 0; i < 100; i++) {
        bench_Bench_add_args a = {.a = i, .b = 1000000000000LL};
        if (bench_Bench_add_call(c, &a, &d) != 0) return 1;
        pending++;
        knit_deferred_add_callbacks(d, got_add, got_error, (void *)i);
        knit_deferred_unref(d);
    }
    bench_Bench_echo_args e;
    bench_Bench_echo_args_init(&e);
    char *big = malloc(1u << 20);
    memset(big, 'k', 1u << 20);
    knit_tstr_set(&e.s, big, 1u << 20);
    free(big);
    if (bench_Bench_echo_call(c, &e, &d) != 0) return 1;
    bench_Bench_echo_args_free(&e);
    pending++;
    knit_deferred_add_callbacks(d, got_echo, got_error, NULL);
    knit_deferred_unref(d);
    bench_Bench_sleep_us_args s = {.us = 500};
    if (bench_Bench_sleep_us_call(c, &s, &d) != 0) return 1;
    pending++;
    knit_deferred_add_callbacks(d, got_other, got_error, NULL);
    knit_deferred_unref(d);
    while (pending > 0)
        knit_reactor_run_once(r, KNIT_MSEC(100));
    knit_thrift_client_free(c);
    for (int i = 0; i < 10; i++)
        knit_reactor_run_once(r, KNIT_MSEC(1));
    knit_reactor_free(r);
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
