#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"

static void test_logfmt_line(void **state)
{
    (void)state;
    knit_log_set_format(KNIT_LOG_LOGFMT);
    knit_test_log_begin();
    KNIT_INFO("http", "listening on %s", "tcp:8080");
    const char *t = knit_test_log_text();
    assert_non_null(strstr(t, "ts="));
    assert_non_null(strstr(t, " level=info mod=http msg=\"listening on tcp:8080\"\n"));
    knit_test_log_end();
}

static void test_kv_quoting(void **state)
{
    (void)state;
    knit_log_set_format(KNIT_LOG_LOGFMT);
    knit_test_log_begin();
    knit_log_kv(KNIT_LOG_WARN, "db", "slow", "query", "select \"x\" from t", "ms", "12", "empty", "",
                NULL);
    const char *t = knit_test_log_text();
    assert_non_null(strstr(t, "level=warn mod=db msg=slow query=\"select \\\"x\\\" from t\" ms=12 "
                              "empty=\"\"\n"));
    knit_test_log_end();
}

static void test_json_line(void **state)
{
    (void)state;
    knit_log_set_format(KNIT_LOG_JSON);
    knit_test_log_begin();
    knit_log_kv(KNIT_LOG_ERROR, "x", "bad\nthing", "k", "v\t1", NULL);
    const char *t = knit_test_log_text();
    assert_int_equal(t[0], '{');
    assert_non_null(strstr(t, "\"level\":\"error\",\"mod\":\"x\",\"msg\":\"bad\\nthing\",\"k\":"
                              "\"v\\t1\"}\n"));
    knit_test_log_end();
    knit_log_set_format(KNIT_LOG_LOGFMT);
}

static int evaluated;
static const char *side_effect(void)
{
    evaluated++;
    return "x";
}

static void test_level_filtering_skips_arguments(void **state)
{
    (void)state;
    knit_test_log_begin();
    knit_log_set_level(KNIT_LOG_WARN);
    evaluated = 0;
    KNIT_INFO("m", "%s", side_effect());
    assert_int_equal(evaluated, 0);
    assert_string_equal(knit_test_log_text(), "");
    KNIT_WARN("m", "%s", side_effect());
    assert_int_equal(evaluated, 1);
    knit_log_set_level(KNIT_LOG_INFO);
    knit_test_log_end();
}

static void test_level_names(void **state)
{
    (void)state;
    assert_int_equal(knit_log_level_parse("DEBUG"), KNIT_LOG_DEBUG);
    assert_int_equal(knit_log_level_parse("warning"), KNIT_LOG_WARN);
    assert_int_equal(knit_log_level_parse("loud"), KNIT_EINVAL);
    assert_string_equal(knit_log_level_name(KNIT_LOG_ERROR), "error");
    assert_int_equal(knit_log_format_parse("json"), KNIT_LOG_JSON);
    assert_int_equal(knit_log_format_parse("xml"), KNIT_EINVAL);
}

static void test_file_and_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/knit-log-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], moved[256];
    snprintf(path, sizeof path, "%s/a.log", dir);
    snprintf(moved, sizeof moved, "%s/a.log.1", dir);
    assert_int_equal(knit_log_open(path), 0);
    KNIT_INFO("t", "first");
    assert_int_equal(rename(path, moved), 0); /* logrotate */
    assert_int_equal(knit_log_reopen(), 0);
    KNIT_INFO("t", "second");
    assert_int_equal(knit_log_open(NULL), 0);
    char buf[4096];
    int fd = open(moved, O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    assert_true(n > 0);
    buf[n] = 0;
    assert_non_null(strstr(buf, "msg=first"));
    assert_null(strstr(buf, "msg=second"));
    fd = open(path, O_RDONLY);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    assert_true(n > 0);
    buf[n] = 0;
    assert_non_null(strstr(buf, "msg=second"));
    unlink(path);
    unlink(moved);
    rmdir(dir);
    assert_int_equal(knit_log_open("/nonexistent-dir/x.log"), KNIT_ENOENT);
}

static void test_long_message(void **state)
{
    (void)state;
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    knit_test_log_begin();
    KNIT_INFO("t", "%s", big);
    assert_non_null(strstr(knit_test_log_text(), big));
    knit_test_log_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logfmt_line),
        cmocka_unit_test(test_kv_quoting),
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_level_filtering_skips_arguments),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_file_and_reopen),
        cmocka_unit_test(test_long_message),
    };
    return KNIT_RUN_TESTS(tests);
}
