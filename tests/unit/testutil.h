/* testutil.h — shared helpers for knit's cmocka unit tests.
 * Include this instead of cmocka.h: it pulls in the headers cmocka needs. */
#ifndef KNIT_TESTUTIL_H
#define KNIT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <cmocka.h>

/* Abort the whole binary if it runs longer than SECONDS (a hung test must
 * fail, not stall CI; KNIT_TEST_WATCHDOG=S overrides). Call first thing in main(). */
void knit_test_watchdog(unsigned seconds);

/* Capture knit log lines into a buffer (replacing the real output) until
 * knit_test_log_end(). knit_test_log_text() returns everything captured
 * so far, NUL-terminated; valid until the next capture call. */
void knit_test_log_begin(void);
const char *knit_test_log_text(void);
void knit_test_log_end(void);

/* Per-case selection from the environment (used by scripts/faults, handy by hand):
 * KNIT_TEST_LIST=1 prints the names of the N cases in TESTS, one a line, and exits 0;
 * KNIT_TEST_FILTER=PATTERN runs only the cases matching it (cmocka's * and ?). */
void knit_test_select(const struct CMUnitTest *tests, size_t n);

/* Run cmocka group TESTS with the watchdog armed (default 120 s). */
#define KNIT_RUN_TESTS(tests) (knit_test_watchdog(120), KNIT_RUN_TESTS_WITH(tests, NULL, NULL))
/* The same with group setup/teardown and without the watchdog. */
#define KNIT_RUN_TESTS_WITH(tests, setup, teardown)                                                \
    (knit_test_select(tests, sizeof(tests) / sizeof(tests)[0]),                                    \
     cmocka_run_group_tests(tests, setup, teardown))

#endif
