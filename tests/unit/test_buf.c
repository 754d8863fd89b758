/* test_buf.c — knit_buf: cursors, growth, shared empty, borrowing, iovecs. */
#include "testutil.h"

#include <string.h>

#include "knit/buf.h"
#include "knit/error.h"

static void test_init_is_idle_and_shared(void **state)
{
    (void)state;
    knit_buf a = KNIT_BUF_INIT, b;
    knit_buf_init(&b);
    assert_true(knit_buf_is_idle(&a));
    assert_true(knit_buf_empty(&b));
    assert_ptr_equal(knit_buf_data(&a), knit_buf_data(&b)); /* one shared region */
    assert_int_equal(knit_buf_allocated(&a), 0);
    assert_int_equal(sizeof(knit_buf), 32);
    struct iovec iov;
    assert_int_equal(knit_buf_iov(&a, &iov), 0);
    knit_buf_consume(&a, 10); /* harmless */
    knit_buf_release(&a);
    assert_true(knit_buf_is_idle(&a));
}

static void test_append_consume_cursors(void **state)
{
    (void)state;
    knit_buf b = KNIT_BUF_INIT;
    assert_int_equal(knit_buf_append_str(&b, "hello "), 0);
    assert_int_equal(knit_buf_printf(&b, "%s %d", "world", 42), 0);
    assert_int_equal(knit_buf_len(&b), 14);
    assert_memory_equal(knit_buf_data(&b), "hello world 42", 14);
    assert_true(knit_buf_allocated(&b) >= KNIT_BUF_MIN_ALLOC);
    assert_int_equal(knit_buf_find(&b, 0, ' '), 5);
    assert_int_equal(knit_buf_find(&b, 6, ' '), 11);
    assert_int_equal(knit_buf_find(&b, 0, '!'), -1);
    assert_int_equal(knit_buf_find(&b, 99, 'h'), -1);
    knit_buf_consume(&b, 6);
    assert_memory_equal(knit_buf_data(&b), "world 42", 8);
    struct iovec iov;
    assert_int_equal(knit_buf_iov(&b, &iov), 1);
    assert_int_equal(iov.iov_len, 8);
    knit_buf_consume(&b, 100);
    assert_true(knit_buf_empty(&b));
    assert_false(knit_buf_is_idle(&b)); /* memory kept for reuse */
    knit_buf_consume_all(&b);
    assert_true(knit_buf_is_idle(&b));
}

static void test_reserve_commit_and_growth(void **state)
{
    (void)state;
    knit_buf b = KNIT_BUF_INIT;
    int err = 0;
    uint8_t *p = knit_buf_reserve(&b, 10, &err);
    assert_non_null(p);
    assert_true(knit_buf_avail(&b) >= 10);
    memcpy(p, "0123456789", 10);
    knit_buf_commit(&b, 10);
    /* Grow well past the first allocation; contents survive. */
    char big[10000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    assert_int_equal(knit_buf_append(&b, big, sizeof big), 0);
    assert_int_equal(knit_buf_len(&b), 10 + sizeof big);
    assert_memory_equal(knit_buf_data(&b), "0123456789", 10);
    assert_memory_equal(knit_buf_data(&b) + 10, big, sizeof big);
    /* Commit never runs past the end. */
    size_t avail = knit_buf_avail(&b);
    knit_buf_commit(&b, avail + 100);
    assert_int_equal(knit_buf_avail(&b), 0);
    knit_buf_release(&b);
}

static void test_compaction_keeps_data(void **state)
{
    (void)state;
    knit_buf b = KNIT_BUF_INIT;
    char chunk[700];
    memset(chunk, 'x', sizeof chunk);
    assert_int_equal(knit_buf_append(&b, chunk, sizeof chunk), 0);
    size_t cap = knit_buf_allocated(&b);
    knit_buf_consume(&b, 600);
    memset(chunk, 'y', sizeof chunk);
    assert_int_equal(knit_buf_append(&b, chunk, 400), 0);
    assert_int_equal(knit_buf_allocated(&b), cap); /* slid, did not grow */
    assert_int_equal(knit_buf_len(&b), 500);
    assert_int_equal(knit_buf_data(&b)[99], 'x');
    assert_int_equal(knit_buf_data(&b)[100], 'y');
    knit_buf_release(&b);
}

static void test_limit(void **state)
{
    (void)state;
    knit_buf b = KNIT_BUF_INIT;
    int err = 0;
    assert_null(knit_buf_reserve(&b, KNIT_BUF_MAX + 1, &err));
    assert_int_equal(err, KNIT_ELIMIT);
    assert_true(knit_buf_is_idle(&b));
    struct iovec iov[2] = {{(void *)"a", KNIT_BUF_MAX}, {(void *)"b", 2}};
    assert_int_equal(knit_buf_appendv(&b, iov, 2), KNIT_ELIMIT);
}

static void test_borrowed_moves_to_heap(void **state)
{
    (void)state;
    uint8_t mem[8];
    knit_buf b;
    knit_buf_init_borrowed(&b, mem, sizeof mem);
    assert_int_equal(knit_buf_allocated(&b), 0);
    assert_int_equal(knit_buf_append(&b, "abcdef", 6), 0);
    assert_ptr_equal(knit_buf_data(&b), mem);
    knit_buf_consume(&b, 2);
    assert_int_equal(knit_buf_append(&b, "ghijkl", 6), 0); /* must move */
    assert_true(knit_buf_data(&b) < mem || knit_buf_data(&b) >= mem + sizeof mem);
    assert_memory_equal(knit_buf_data(&b), "cdefghijkl", 10);
    assert_true(knit_buf_allocated(&b) > 0);
    knit_buf_release(&b); /* frees the heap copy, never MEM */

    knit_buf_init_borrowed(&b, mem, sizeof mem);
    knit_buf_append(&b, "xy", 2);
    knit_buf_release(&b); /* must not free MEM (ASan would complain) */
    assert_true(knit_buf_is_idle(&b));
}

static void test_appendv_and_move(void **state)
{
    (void)state;
    knit_buf a = KNIT_BUF_INIT, b = KNIT_BUF_INIT;
    struct iovec iov[3] = {{(void *)"ab", 2}, {(void *)"", 0}, {(void *)"cde", 3}};
    assert_int_equal(knit_buf_appendv(&a, iov, 3), 0);
    assert_memory_equal(knit_buf_data(&a), "abcde", 5);
    uint8_t *heap = knit_buf_data(&a);
    assert_int_equal(knit_buf_move(&b, &a), 0); /* pointer swap */
    assert_ptr_equal(knit_buf_data(&b), heap);
    assert_true(knit_buf_is_idle(&a));
    assert_int_equal(knit_buf_append_str(&a, "fg"), 0);
    assert_int_equal(knit_buf_move(&b, &a), 0); /* copy */
    assert_memory_equal(knit_buf_data(&b), "abcdefg", 7);
    assert_true(knit_buf_is_idle(&a));
    assert_int_equal(knit_buf_move(&b, &a), 0); /* empty source */
    knit_buf_release(&b);
}

static void test_shrink_and_big_printf(void **state)
{
    (void)state;
    knit_buf b = KNIT_BUF_INIT;
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(knit_buf_printf(&b, "<%s>", big), 0);
    assert_int_equal(knit_buf_len(&b), sizeof big + 1);
    assert_int_equal(knit_buf_data(&b)[0], '<');
    assert_int_equal(knit_buf_data(&b)[sizeof big], '>');
    knit_buf_consume(&b, sizeof big - 10);
    size_t before = knit_buf_allocated(&b);
    assert_int_equal(knit_buf_shrink(&b), 0);
    assert_true(knit_buf_allocated(&b) < before);
    assert_int_equal(knit_buf_len(&b), 11);
    assert_int_equal(knit_buf_data(&b)[10], '>');
    knit_buf_consume(&b, 11);
    assert_int_equal(knit_buf_shrink(&b), 0);
    assert_true(knit_buf_is_idle(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_is_idle_and_shared),
        cmocka_unit_test(test_append_consume_cursors),
        cmocka_unit_test(test_reserve_commit_and_growth),
        cmocka_unit_test(test_compaction_keeps_data),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_borrowed_moves_to_heap),
        cmocka_unit_test(test_appendv_and_move),
        cmocka_unit_test(test_shrink_and_big_printf),
    };
    return KNIT_RUN_TESTS(tests);
}
