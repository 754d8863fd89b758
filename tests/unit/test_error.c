#include "testutil.h"

#include <string.h>

#include "knit/error.h"

static void test_errno_codes_are_negated_errno(void **state)
{
    (void)state;
    assert_int_equal(KNIT_ENOMEM, -ENOMEM);
    assert_int_equal(KNIT_ECANCELED, -ECANCELED);
    assert_string_equal(knit_strerror(KNIT_ECANCELED), "operation cancelled");
    assert_string_equal(knit_err_name(KNIT_ETIMEDOUT), "ETIMEDOUT");
}

static void test_own_codes_are_far_from_errno(void **state)
{
    (void)state;
    assert_true(KNIT_EFAILED < -4000);
    assert_true(KNIT_ELUA < -4000);
    assert_true(KNIT_EQUEUEFULL != KNIT_EFAILED);
    assert_string_equal(knit_strerror(KNIT_EQUEUEFULL), "queue is full");
    assert_string_equal(knit_err_name(KNIT_EQUEUEFULL), "EQUEUEFULL");
}

static void test_unknown_codes(void **state)
{
    (void)state;
    assert_string_equal(knit_strerror(0), "success");
    assert_string_equal(knit_strerror(-99999), "unknown error");
    assert_string_equal(knit_err_name(-99999), "UNKNOWN");
    /* An errno knit does not list still gets glibc's description. */
    assert_true(strlen(knit_strerror(-EXDEV)) > 0);
    assert_string_equal(knit_err_name(-EXDEV), "EXDEV");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errno_codes_are_negated_errno),
        cmocka_unit_test(test_own_codes_are_far_from_errno),
        cmocka_unit_test(test_unknown_codes),
    };
    return KNIT_RUN_TESTS(tests);
}
