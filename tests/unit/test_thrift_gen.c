/* Unit tests for knit-thriftc's generated code.
 *
 * tests/thrift/rich.thrift (+ rich_inc.thrift) is compiled by knit-thriftc in
 * the build; thrift_rich_golden.h holds what Apache Thrift's Python library
 * writes for the same values (tests/thrift/gen_rich_golden.py): structs in
 * both protocols, the Python client's call messages and the Python
 * processor's replies. The C code must decode them, re-encode them byte for
 * byte, and answer the calls exactly as the Python processor did. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rich_thrift.h"
#include "thrift_rich_golden.h"

/* p = 0, 1, 2: binary, compact, JSON (the golden arrays' _bin, _cmp, _json) */
#define NPROTO 3
#define PROTO(p) ((knit_thrift_proto)(p))
#define G(n, p) ((p) == 0 ? n##_bin : (p) == 1 ? n##_cmp : n##_json)
#define GL(n, p) ((p) == 0 ? n##_bin_len : (p) == 1 ? n##_cmp_len : n##_json_len)

static void check_bytes(const char *what, const knit_thrift_writer *w, const uint8_t *want,
                        size_t wl)
{
    if (w->len != wl || (wl && memcmp(w->data, want, wl) != 0)) {
        size_t i = 0;
        while (i < w->len && i < wl && w->data[i] == want[i])
            i++;
        print_error("%s: got %zu bytes, want %zu; first difference at %zu\n", what, w->len, wl, i);
        fail();
    }
}

/* Decode GOLD with READ into a fresh value, re-encode, compare. */
#define ROUND_TRIP(T, gold, check)                                                                 \
    do {                                                                                           \
        for (int p_ = 0; p_ < NPROTO; p_++) {                                                      \
            const uint8_t *g_ = G(gold, p_);                                                       \
            size_t gl_ = GL(gold, p_);                                                             \
            T v_;                                                                                  \
            assert_int_equal(T##_init(&v_), 0);                                                    \
            knit_thrift_reader r_;                                                                 \
            knit_thrift_reader_init(&r_, PROTO(p_), g_, gl_);                                      \
            assert_int_equal(T##_read(&r_, &v_), 0);                                               \
            assert_int_equal(knit_thrift_reader_remaining(&r_), 0);                                \
            check(&v_);                                                                            \
            knit_thrift_writer w_;                                                                 \
            knit_thrift_writer_init(&w_, PROTO(p_));                                               \
            assert_int_equal(T##_write(&w_, &v_), 0);                                              \
            check_bytes(#T, &w_, g_, gl_);                                                         \
            T c_;                                                                                  \
            assert_int_equal(T##_copy(&c_, &v_), 0);                                               \
            assert_true(T##_equal(&c_, &v_));                                                      \
            T##_free(&c_);                                                                         \
            knit_thrift_writer_free(&w_);                                                          \
            T##_free(&v_);                                                                         \
        }                                                                                          \
    } while (0)

static void check_scalars(const rich_Scalars *s)
{
    assert_true(s->b);
    assert_int_equal(s->i8v, -7);
    assert_int_equal(s->i16v, -300);
    assert_int_equal(s->i32v, 70000);
    assert_true(s->i64v == -(1LL << 40) - 3);
    assert_true(s->d == -2.5);
    assert_string_equal(knit_tstr_cstr(&s->s), "h\xc3\xa9llo");
    assert_int_equal(s->bin.len, 4);
    assert_memory_equal(s->bin.ptr, "\x00\x01\x02\xff", 4);
    assert_int_equal(s->kind, rich_Kind_NEG);
    assert_int_equal(s->color, rich_inc_Color_BLUE);
}

static void test_scalars_round_trip(void **state)
{
    (void)state;
    ROUND_TRIP(rich_Scalars, scalars, check_scalars);
}

/* The same value built by hand encodes to the golden bytes. */
static void test_scalars_built_by_hand(void **state)
{
    (void)state;
    rich_Scalars s;
    assert_int_equal(rich_Scalars_init(&s), 0);
    s.b = true;
    s.i8v = -7;
    s.i16v = -300;
    s.i32v = 70000;
    s.i64v = -(1LL << 40) - 3;
    s.d = -2.5;
    assert_int_equal(knit_tstr_set(&s.s, "h\xc3\xa9llo", 6), 0);
    assert_int_equal(knit_tstr_set(&s.bin, "\x00\x01\x02\xff", 4), 0);
    s.kind = rich_Kind_NEG;
    s.color = rich_inc_Color_BLUE;
    for (int p = 0; p < NPROTO; p++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, PROTO(p));
        assert_int_equal(rich_Scalars_write(&w, &s), 0);
        check_bytes("scalars", &w, G(scalars, p), GL(scalars, p));
        knit_thrift_writer_free(&w);
    }
    rich_Scalars_free(&s);
}

static void check_everything(const rich_Everything *e)
{
    assert_true(e->id == 12345678901LL);
    assert_true(e->has_note);
    assert_string_equal(knit_tstr_cstr(&e->note), "a note");
    check_scalars(&e->scalars);
    const rich_Containers *c = &e->containers;
    assert_int_equal(c->lb.len, 3);
    assert_true(c->lb.items[0] && !c->lb.items[1] && c->lb.items[2]);
    assert_int_equal(c->l32.len, 23);
    assert_int_equal(c->l32.items[0], -3);
    assert_int_equal(c->msi.len, 2);
    assert_string_equal(knit_tstr_cstr(&c->msi.items[0].key), "one");
    assert_int_equal(c->mip.len, 2);
    assert_int_equal(c->mip.items[0].key, 7);
    assert_int_equal(c->mip.items[0].value.y, 2);
    assert_int_equal(c->lli.len, 3);
    assert_int_equal(c->lli.items[1].len, 0);
    assert_int_equal(c->lli.items[2].items[0], 3);
    assert_int_equal(c->mslp.items[0].value.items[0].x, 5);
    assert_int_equal(c->lmb.items[0].len, 2);
    assert_int_equal(c->choices.len, 3);
    assert_true(c->choices.items[0].has_number && c->choices.items[0].number == 4);
    assert_true(c->choices.items[2].has_point && c->choices.items[2].point.y == 3);
    assert_false(c->choices.items[2].has_text);
    assert_int_equal(c->mcd.items[0].key, rich_inc_Color_RED);
    assert_int_equal(c->lsc.len, 2);
    check_scalars(&c->lsc.items[0]);
    assert_true(e->has_choice);
    assert_string_equal(knit_tstr_cstr(&e->choice.text), "picked");
    assert_int_equal(e->defaults.n, 42);
    assert_false(e->defaults.has_opt);
    assert_int_equal(e->far_field.items[1], 31);
    assert_int_equal(e->big_id, 200);
    assert_true(e->has_oops);
    assert_int_equal(e->oops.code, 3);
}

static void test_everything_round_trip(void **state)
{
    (void)state;
    ROUND_TRIP(rich_Everything, everything, check_everything);
}

static void check_choice(const rich_Choice *c)
{
    assert_true(c->has_point);
    assert_false(c->has_number);
    assert_false(c->has_text);
    assert_int_equal(c->point.x, -1);
    assert_int_equal(c->point.y, 5); /* default from rich_inc.thrift */
}

static void test_union_round_trip(void **state)
{
    (void)state;
    ROUND_TRIP(rich_Choice, choice, check_choice);
}

/* init applies every IDL default; the result encodes like Python's Defaults(). */
static void test_defaults(void **state)
{
    (void)state;
    rich_Defaults d;
    assert_int_equal(rich_Defaults_init(&d), 0);
    assert_int_equal(d.n, 42);
    assert_string_equal(knit_tstr_cstr(&d.s), "dflt");
    assert_int_equal(d.names.len, 2);
    assert_string_equal(knit_tstr_cstr(&d.names.items[1]), "b");
    assert_int_equal(d.p.x, 3);
    assert_int_equal(d.p.y, 5);
    assert_false(d.has_opt);
    assert_int_equal(d.opt, 9);
    assert_true(d.flag);
    assert_true(d.ratio == 0.5);
    assert_int_equal(d.kind, rich_Kind_LARGE);
    assert_int_equal(d.m.len, 1);
    assert_int_equal(d.m.items[0].key, 1);
    assert_string_equal(knit_tstr_cstr(&d.m.items[0].value), "one");
    for (int p = 0; p < NPROTO; p++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, PROTO(p));
        assert_int_equal(rich_Defaults_write(&w, &d), 0);
        check_bytes("defaults", &w, G(defaults, p), GL(defaults, p));
        knit_thrift_writer_free(&w);
    }
    rich_Defaults e;
    assert_int_equal(rich_Defaults_copy(&e, &d), 0);
    assert_true(rich_Defaults_equal(&d, &e));
    e.has_opt = true;
    assert_false(rich_Defaults_equal(&d, &e));
    e.has_opt = false;
    assert_int_equal(knit_tstr_set(&e.names.items[0], "z", 1), 0);
    assert_false(rich_Defaults_equal(&d, &e));
    rich_Defaults_free(&e);
    rich_Defaults_free(&d);
    rich_Defaults_free(&d); /* free leaves a zeroed value: freeing again is harmless */
}

static void test_consts_and_enums(void **state)
{
    (void)state;
    assert_string_equal(rich_GREETING, "h\xc3\xa9llo \"q\"\n");
    assert_int_equal(rich_GREETING_LEN, 11);
    assert_true(rich_BIG == 9007199254740993LL);
    assert_true(rich_PI == 3.25);
    assert_true(rich_YES);
    assert_int_equal(rich_FAV, rich_inc_Color_BLUE);
    assert_int_equal(rich_inc_ORIGIN_X, 0);
    rich_list_i32 primes;
    assert_int_equal(rich_PRIMES_init(&primes), 0);
    assert_int_equal(primes.len, 4);
    assert_int_equal(primes.items[3], 7);
    rich_list_i32_free(&primes);
    rich_map_string_i32 w;
    assert_int_equal(rich_WEIGHTS_init(&w), 0);
    assert_int_equal(w.len, 2);
    assert_string_equal(knit_tstr_cstr(&w.items[1].key), "b");
    assert_int_equal(w.items[1].value, 2);
    rich_map_string_i32_free(&w);
    rich_inc_Point u;
    assert_int_equal(rich_UNIT_init(&u), 0);
    assert_int_equal(u.x, 1);
    assert_int_equal(u.y, 1);
    rich_inc_Point_free(&u);
    assert_string_equal(rich_Kind_name(rich_Kind_NEG), "NEG");
    assert_string_equal(rich_inc_Color_name(7), "BLUE");
    assert_null(rich_Kind_name(55));
    int32_t v;
    assert_int_equal(rich_Kind_from_name("LARGE", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(rich_Kind_from_name("HUGE", &v), KNIT_ENOTFOUND);
    assert_int_equal(rich_Kind_COUNT, 4);
    rich_inc_Path path = {0};
    rich_inc_Point *pt = rich_inc_list_Point_add(&path);
    assert_non_null(pt);
    assert_int_equal(pt->y, 5); /* elements come initialised with defaults */
    rich_inc_list_Point_free(&path);
}

/* Every prefix of a golden value fails cleanly and leaks nothing (ASan). */
static void test_truncated_everything(void **state)
{
    (void)state;
    for (int p = 0; p < NPROTO; p++) {
        const uint8_t *g = G(everything, p);
        size_t gl = GL(everything, p);
        for (size_t cut = 0; cut < gl; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, g, cut);
            rich_Everything e;
            assert_int_equal(rich_Everything_init(&e), 0);
            knit_thrift_reader r;
            knit_thrift_reader_init(&r, PROTO(p), copy, cut);
            assert_true(rich_Everything_read(&r, &e) < 0);
            rich_Everything_free(&e);
            free(copy);
        }
    }
}

static void test_required_field_missing(void **state)
{
    (void)state;
    /* an empty struct: field 1 (required id) missing */
    rich_Everything e;
    assert_int_equal(rich_Everything_init(&e), 0);
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, KNIT_THRIFT_BINARY, "\x00", 1);
    assert_int_equal(rich_Everything_read(&r, &e), KNIT_ETHRIFT);
    rich_Everything_free(&e);
}

/* Fields of the wrong type are skipped; repeated fields replace (no leak). */
static void test_wrong_type_and_repeated_fields(void **state)
{
    (void)state;
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, KNIT_THRIFT_COMPACT);
    knit_thrift_write_struct_begin(&w);
    knit_thrift_write_field_begin(&w, KNIT_TT_STRING, 1); /* id is i64: skipped */
    knit_thrift_write_string(&w, "not an id");
    knit_thrift_write_field_begin(&w, KNIT_TT_I64, 1);
    knit_thrift_write_i64(&w, 5);
    knit_thrift_write_field_begin(&w, KNIT_TT_STRING, 2);
    knit_thrift_write_string(&w, "first");
    knit_thrift_write_field_begin(&w, KNIT_TT_STRING, 2);
    knit_thrift_write_string(&w, "second");
    knit_thrift_write_field_begin(&w, KNIT_TT_LIST, 30);
    knit_thrift_write_list_begin(&w, KNIT_TT_I32, 1);
    knit_thrift_write_i32(&w, 1);
    knit_thrift_write_field_begin(&w, KNIT_TT_LIST, 30);
    knit_thrift_write_list_begin(&w, KNIT_TT_I32, 2);
    knit_thrift_write_i32(&w, 2);
    knit_thrift_write_i32(&w, 3);
    knit_thrift_write_field_begin(&w, KNIT_TT_LIST, 12); /* unknown id, skipped */
    knit_thrift_write_list_begin(&w, KNIT_TT_STRING, 1);
    knit_thrift_write_string(&w, "x");
    knit_thrift_write_field_stop(&w);
    knit_thrift_write_struct_end(&w);
    assert_int_equal(w.err, 0);
    rich_Everything e;
    assert_int_equal(rich_Everything_init(&e), 0);
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, KNIT_THRIFT_COMPACT, w.data, w.len);
    assert_int_equal(rich_Everything_read(&r, &e), 0);
    assert_true(e.id == 5);
    assert_string_equal(knit_tstr_cstr(&e.note), "second");
    assert_int_equal(e.far_field.len, 2);
    assert_int_equal(e.far_field.items[1], 3);
    rich_Everything_free(&e);
    knit_thrift_writer_free(&w);
}

/* ---- services ------------------------------------------------------------------ */

static int h_ping(void *ctx, const rich_Base_ping_args *a, rich_Base_ping_result *res)
{
    (void)ctx;
    res->success = a->n + 1;
    res->has_success = true;
    return 0;
}

static int h_echo(void *ctx, const rich_Rich_echo_args *a, rich_Rich_echo_result *res)
{
    (void)ctx;
    /* RES arrives initialised: release the default value before copying over it */
    rich_Everything_free(&res->success);
    int rc = rich_Everything_copy(&res->success, &a->e);
    res->has_success = rc == 0;
    return rc;
}

static int h_add(void *ctx, const rich_Rich_add_args *a, rich_Rich_add_result *res)
{
    (void)ctx;
    res->success = a->a + a->b;
    res->has_success = true;
    return 0;
}

static int h_pick(void *ctx, const rich_Rich_pick_args *a, rich_Rich_pick_result *res)
{
    (void)ctx;
    if (strcmp(knit_tstr_cstr(&a->which), "bad") == 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "no %s", knit_tstr_cstr(&a->which));
        knit_tstr_set(&res->oops.message, msg, strlen(msg));
        res->oops.code = 404;
        res->has_oops = true;
        return 0;
    }
    res->success.has_text = true;
    res->has_success = true;
    return knit_tstr_copy(&res->success.text, &a->which);
}

static int h_nothing(void *ctx, const rich_Rich_nothing_args *a, rich_Rich_nothing_result *res)
{
    (void)ctx;
    (void)a;
    (void)res;
    return 0;
}

static int fired;
static int h_fire(void *ctx, const rich_Rich_fire_args *a, void *res)
{
    (void)ctx;
    (void)res;
    if (a->xs.len == 3 && strcmp(knit_tstr_cstr(&a->s), "go") == 0) fired++;
    return 0;
}

static const rich_Rich_handler handler = {
    .ping = h_ping,
    .echo = h_echo,
    .add = h_add,
    .pick = h_pick,
    .nothing = h_nothing,
    .fire = h_fire,
};

struct msg_case {
    const char *name;
    const uint8_t *call[NPROTO];
    size_t call_len[NPROTO];
    const uint8_t *reply[NPROTO];
    size_t reply_len[NPROTO];
};

#define MC(n)                                                                                      \
    {                                                                                              \
#n, {call_##n##_bin, call_##n##_cmp, call_##n##_json },                                    \
             {call_##n##_bin_len, call_##n##_cmp_len, call_##n##_json_len },                       \
              {reply_##n##_bin, reply_##n##_cmp, reply_##n##_json },                               \
               {reply_##n##_bin_len, reply_##n##_cmp_len, reply_##n##_json_len },                  \
    }
static const struct msg_case msg_cases[] = {
    MC(ping), MC(echo), MC(add), MC(pick), MC(pick_bad), MC(nothing), MC(fire),
};

/* The processor answers Python's calls with exactly Python's replies. */
static void test_processor_matches_python(void **state)
{
    (void)state;
    knit_thrift_processor proc;
    rich_Rich_processor_init(&proc, &handler, NULL);
    fired = 0;
    for (size_t i = 0; i < sizeof msg_cases / sizeof msg_cases[0]; i++) {
        for (int p = 0; p < NPROTO; p++) {
            const struct msg_case *mc = &msg_cases[i];
            knit_thrift_writer w;
            knit_thrift_writer_init(&w, PROTO(p));
            assert_int_equal(knit_thrift_process(&proc, PROTO(p), mc->call[p], mc->call_len[p], &w),
                             0);
            check_bytes(mc->name, &w, mc->reply[p], mc->reply_len[p]);
            knit_thrift_writer_free(&w);
        }
    }
    assert_int_equal(fired, NPROTO);
}

/* The client envelope: encode_call writes Python's call bytes, decode_reply
 * reads Python's replies. */
static void test_client_envelopes(void **state)
{
    (void)state;
    for (int p = 0; p < NPROTO; p++) {
        rich_Rich_add_args a;
        rich_Rich_add_args_init(&a);
        a.a = 1LL << 40;
        a.b = -3;
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, PROTO(p));
        assert_int_equal(knit_thrift_encode_call(&w, &rich_Rich_add_method, NULL, 0, &a), 0);
        check_bytes("call add", &w, G(call_add, p), GL(call_add, p));
        knit_thrift_writer_free(&w);
        rich_Rich_add_args_free(&a);

        rich_Rich_add_result res;
        rich_Rich_add_result_init(&res);
        int32_t seq = -1;
        assert_int_equal(knit_thrift_decode_reply(&rich_Rich_add_method, PROTO(p), G(reply_add, p),
                                                  GL(reply_add, p), &seq, &res, NULL, NULL),
                         0);
        assert_int_equal(seq, 0);
        assert_true(res.has_success && res.success == (1LL << 40) - 3);
        rich_Rich_add_result_free(&res);

        rich_Rich_pick_result pr;
        rich_Rich_pick_result_init(&pr);
        assert_int_equal(knit_thrift_decode_reply(&rich_Rich_pick_method, PROTO(p),
                                                  G(reply_pick_bad, p), GL(reply_pick_bad, p), &seq,
                                                  &pr, NULL, NULL),
                         0);
        assert_false(pr.has_success);
        assert_true(pr.has_oops);
        assert_int_equal(pr.oops.code, 404);
        assert_string_equal(knit_tstr_cstr(&pr.oops.message), "no bad");
        rich_Rich_pick_result_free(&pr);

        rich_Rich_fire_args fa;
        rich_Rich_fire_args_init(&fa);
        knit_tstr_set(&fa.s, "go", 2);
        for (int i = 1; i <= 3; i++)
            *rich_list_i32_add(&fa.xs) = i;
        knit_thrift_writer_init(&w, PROTO(p));
        assert_int_equal(knit_thrift_encode_call(&w, &rich_Rich_fire_method, NULL, 0, &fa), 0);
        check_bytes("call fire", &w, G(call_fire, p), GL(call_fire, p));
        knit_thrift_writer_free(&w);
        rich_Rich_fire_args_free(&fa);
    }
}

/* Unknown methods, handler errors, multiplexed names, exceptions on decode. */
static void test_processor_errors(void **state)
{
    (void)state;
    rich_Rich_handler h = handler;
    h.add = NULL; /* not implemented: UNKNOWN_METHOD */
    knit_thrift_processor proc;
    rich_Rich_processor_init(&proc, &h, NULL);
    for (int p = 0; p < NPROTO; p++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, PROTO(p));
        assert_int_equal(knit_thrift_process(&proc, PROTO(p), G(call_add, p), GL(call_add, p), &w),
                         0);
        rich_Rich_add_result res;
        rich_Rich_add_result_init(&res);
        int32_t seq, at = -1;
        knit_tstr msg = {0};
        assert_int_equal(knit_thrift_decode_reply(&rich_Rich_add_method, PROTO(p), w.data, w.len,
                                                  &seq, &res, &at, &msg),
                         KNIT_EAPP);
        assert_int_equal(at, KNIT_TAPP_UNKNOWN_METHOD);
        assert_non_null(strstr(knit_tstr_cstr(&msg), "add"));
        knit_tstr_free(&msg);
        rich_Rich_add_result_free(&res);

        /* multiplexed: "Rich:ping" reaches ping */
        rich_Base_ping_args pa;
        rich_Base_ping_args_init(&pa);
        pa.n = 1;
        knit_thrift_writer_reset(&w);
        assert_int_equal(knit_thrift_encode_call(&w, &rich_Base_ping_method, "Rich:", 9, &pa), 0);
        knit_thrift_writer out;
        knit_thrift_writer_init(&out, PROTO(p));
        assert_int_equal(knit_thrift_process(&proc, PROTO(p), w.data, w.len, &out), 0);
        rich_Base_ping_result pr;
        rich_Base_ping_result_init(&pr);
        assert_int_equal(knit_thrift_decode_reply(&rich_Base_ping_method, PROTO(p), out.data,
                                                  out.len, &seq, &pr, NULL, NULL),
                         0);
        assert_int_equal(seq, 9);
        assert_int_equal(pr.success, 2);
        /* issue 13, fault 1: the reply names the method alone, as Apache's
         * TMultiplexedProcessor answers (its C++ client waits forever on a
         * reply named "Rich:ping") */
        knit_thrift_reader rr;
        knit_thrift_reader_init(&rr, PROTO(p), out.data, out.len);
        const char *nm;
        size_t nl;
        knit_thrift_msg_type mt;
        assert_int_equal(knit_thrift_read_message_begin(&rr, &nm, &nl, &mt, &seq), 0);
        assert_int_equal(mt, KNIT_THRIFT_REPLY);
        assert_int_equal(nl, 4);
        assert_memory_equal(nm, "ping", 4);
        /* ... and so do the exceptions of a multiplexed call */
        knit_thrift_writer_reset(&w);
        knit_thrift_writer_reset(&out);
        rich_Rich_add_args aa;
        rich_Rich_add_args_init(&aa);
        assert_int_equal(knit_thrift_encode_call(&w, &rich_Rich_add_method, "Rich:", 3, &aa), 0);
        assert_int_equal(knit_thrift_process(&proc, PROTO(p), w.data, w.len, &out), 0);
        knit_thrift_reader_init(&rr, PROTO(p), out.data, out.len);
        assert_int_equal(knit_thrift_read_message_begin(&rr, &nm, &nl, &mt, &seq), 0);
        assert_int_equal(mt, KNIT_THRIFT_EXCEPTION);
        assert_int_equal(nl, 3);
        assert_memory_equal(nm, "add", 3);
        knit_thrift_writer_free(&out);
        knit_thrift_writer_free(&w);
    }
}

/* Issue 13, fault 3: a union is written only with exactly one member set
 * (KNIT_EINVAL otherwise) and read only with exactly one (KNIT_ETHRIFT). */
static void test_union_exactly_one(void **state)
{
    (void)state;
    for (int p = 0; p < NPROTO; p++) {
        rich_Choice c;
        assert_int_equal(rich_Choice_init(&c), 0);
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, PROTO(p));
        assert_int_equal(rich_Choice_write(&w, &c), KNIT_EINVAL); /* none */
        knit_thrift_writer_reset(&w);
        c.has_number = true;
        c.number = 3;
        assert_int_equal(rich_Choice_write(&w, &c), 0);
        size_t one_len = w.len;
        uint8_t one[64];
        assert_true(one_len <= sizeof one);
        memcpy(one, w.data, one_len);
        knit_thrift_writer_reset(&w);
        c.has_text = true; /* two */
        assert_int_equal(rich_Choice_write(&w, &c), KNIT_EINVAL);
        /* nested: the error reaches the enclosing struct's writer */
        rich_Everything e;
        assert_int_equal(rich_Everything_init(&e), 0);
        e.has_choice = true; /* set, with no member */
        knit_thrift_writer_reset(&w);
        assert_int_equal(rich_Everything_write(&w, &e), KNIT_EINVAL);
        rich_Everything_free(&e);
        rich_Choice_free(&c);

        /* reading: one member is fine, none or two are not */
        knit_thrift_reader r;
        assert_int_equal(rich_Choice_init(&c), 0);
        knit_thrift_reader_init(&r, PROTO(p), one, one_len);
        assert_int_equal(rich_Choice_read(&r, &c), 0);
        assert_true(c.has_number && c.number == 3);
        rich_Choice_free(&c);
        knit_thrift_writer_reset(&w);
        knit_thrift_write_struct_begin(&w);
        knit_thrift_write_field_stop(&w);
        knit_thrift_write_struct_end(&w);
        assert_int_equal(rich_Choice_init(&c), 0);
        knit_thrift_reader_init(&r, PROTO(p), w.data, w.len);
        assert_int_equal(rich_Choice_read(&r, &c), KNIT_ETHRIFT);
        rich_Choice_free(&c);
        knit_thrift_writer_reset(&w);
        knit_thrift_write_struct_begin(&w);
        knit_thrift_write_field_begin(&w, KNIT_TT_I32, 1);
        knit_thrift_write_i32(&w, 1);
        knit_thrift_write_field_end(&w);
        knit_thrift_write_field_begin(&w, KNIT_TT_STRING, 2);
        knit_thrift_write_string(&w, "t");
        knit_thrift_write_field_end(&w);
        knit_thrift_write_field_stop(&w);
        knit_thrift_write_struct_end(&w);
        assert_int_equal(w.err, 0);
        assert_int_equal(rich_Choice_init(&c), 0);
        knit_thrift_reader_init(&r, PROTO(p), w.data, w.len);
        assert_int_equal(rich_Choice_read(&r, &c), KNIT_ETHRIFT);
        rich_Choice_free(&c); /* what was read is freed (ASan) */
        knit_thrift_writer_free(&w);
    }
}

/* A handler whose result cannot be encoded (a union left empty) gets an
 * INTERNAL_ERROR exception, not a reply cut short. */
static int h_pick_empty(void *ctx, const rich_Rich_pick_args *a, rich_Rich_pick_result *res)
{
    (void)ctx;
    (void)a;
    res->has_success = true; /* and no member of the Choice set */
    return 0;
}

static void test_unencodable_result(void **state)
{
    (void)state;
    rich_Rich_handler h = handler;
    h.pick = h_pick_empty;
    knit_thrift_processor proc;
    rich_Rich_processor_init(&proc, &h, NULL);
    for (int p = 0; p < NPROTO; p++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, PROTO(p));
        assert_int_equal(
            knit_thrift_process(&proc, PROTO(p), G(call_pick, p), GL(call_pick, p), &w), 0);
        rich_Rich_pick_result res;
        rich_Rich_pick_result_init(&res);
        int32_t seq, at = -1;
        assert_int_equal(knit_thrift_decode_reply(&rich_Rich_pick_method, PROTO(p), w.data, w.len,
                                                  &seq, &res, &at, NULL),
                         KNIT_EAPP);
        assert_int_equal(at, KNIT_TAPP_INTERNAL_ERROR);
        rich_Rich_pick_result_free(&res);
        knit_thrift_writer_free(&w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_round_trip),
        cmocka_unit_test(test_scalars_built_by_hand),
        cmocka_unit_test(test_everything_round_trip),
        cmocka_unit_test(test_union_round_trip),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_consts_and_enums),
        cmocka_unit_test(test_truncated_everything),
        cmocka_unit_test(test_required_field_missing),
        cmocka_unit_test(test_wrong_type_and_repeated_fields),
        cmocka_unit_test(test_processor_matches_python),
        cmocka_unit_test(test_client_envelopes),
        cmocka_unit_test(test_processor_errors),
        cmocka_unit_test(test_union_exactly_one),
        cmocka_unit_test(test_unencodable_result),
    };
    return KNIT_RUN_TESTS(tests);
}
