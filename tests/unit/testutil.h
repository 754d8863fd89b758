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
 * fail, not stall CI). Call first thing in main(). */
void knit_test_watchdog(unsigned seconds);

/* Capture knit log lines into a buffer (replacing the real output) until
 * knit_test_log_end(). knit_test_log_text() returns everything captured
 * so far, NUL-terminated; valid until the next capture call. */
void knit_test_log_begin(void);
const char *knit_test_log_text(void);
void knit_test_log_end(void);

/* Run cmocka group NAME with the watchdog armed (default 120 s). */
#define KNIT_RUN_TESTS(tests) (knit_test_watchdog(120), cmocka_run_group_tests(tests, NULL, NULL))

#endif
