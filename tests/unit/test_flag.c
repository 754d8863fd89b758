/* test_flag.c — flag parsing from every source, precedence, every type's
 * good and bad values with their exact messages, --help, --print-config,
 * suggestions, run-time writes. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/flag.h"
#include "knit/log.h"

static const char *const formats[] = {"logfmt", "json", NULL};

static int64_t bound_threads;
static int changed_calls;
static void on_changed(knit_flags *fs, const knit_flag *f, void *arg)
{
    (void)fs;
    (void)f;
    (void)arg;
    changed_calls++;
}

static int no_sevens(const char *text, char *why, size_t whylen, void *arg)
{
    (void)arg;
    if (strchr(text, '7')) {
        snprintf(why, whylen, "no sevens allowed");
        return KNIT_EINVAL;
    }
    return 0;
}

static const knit_flag_def test_defs[] = {
    KNIT_FLAG_DEF("name", KNIT_FLAG_STRING, "knit", "a name"),
    KNIT_FLAG_DEF("threads", KNIT_FLAG_INT64, "4", "worker threads", .bind = &bound_threads),
    KNIT_FLAG_DEF("max-conns", KNIT_FLAG_UINT64, "1000", "connection limit"),
    KNIT_FLAG_DEF("ratio", KNIT_FLAG_DOUBLE, "0.5", "a ratio", .opts = KNIT_FLAG_MUTABLE),
    KNIT_FLAG_DEF("verbose", KNIT_FLAG_BOOL, "false", "say more"),
    KNIT_FLAG_DEF("timeout", KNIT_FLAG_DURATION, "1m30s", "request timeout",
                  .opts = KNIT_FLAG_MUTABLE, .changed = on_changed),
    KNIT_FLAG_DEF("max-body", KNIT_FLAG_BYTES, "64KiB", "largest body"),
    KNIT_FLAG_DEF("format", KNIT_FLAG_ENUM, "logfmt", "log format", .choices = formats),
    KNIT_FLAG_DEF("tags", KNIT_FLAG_LIST, "a,b", "tags"),
    KNIT_FLAG_DEF("code", KNIT_FLAG_STRING, "", "no sevens", .validate = no_sevens),
};

static const knit_flag_def http_defs[] = {
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, "tcp:8080", "where to listen"),
    KNIT_FLAG_DEF("http-idle", KNIT_FLAG_DURATION, "5s", "idle timeout"),
};

struct fx {
    knit_flags *fs;
    char *out, *err;
    size_t outlen, errlen;
    FILE *fout, *ferr;
};

static struct fx *mk(void)
{
    struct fx *x = calloc(1, sizeof *x);
    x->fout = open_memstream(&x->out, &x->outlen);
    x->ferr = open_memstream(&x->err, &x->errlen);
    knit_flags_options o;
    knit_flags_options_init(&o);
    o.program = "notes";
    o.version = "1.2.3";
    o.env_prefix = "NOTES_";
    o.summary = "The notes service.";
    o.out = x->fout;
    o.err = x->ferr;
    assert_int_equal(knit_flags_new(&x->fs, &o), 0);
    assert_int_equal(knit_flags_add(x->fs, "test", "Test flags", test_defs,
                                    sizeof test_defs / sizeof test_defs[0]),
                     0);
    assert_int_equal(knit_flags_add(x->fs, "http", "HTTP server", http_defs, 2), 0);
    return x;
}

static void done(struct fx *x)
{
    knit_flags_free(x->fs);
    fclose(x->fout);
    fclose(x->ferr);
    free(x->out);
    free(x->err);
    free(x);
}

/* Parse a NULL-terminated argv (program name added) with ENV. */
static int parse(struct fx *x, const char **args, const char **env)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)"notes";
    for (; args && *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    static char *noenv[] = {NULL};
    int rc = knit_flags_parse(x->fs, argc, argv, env ? (char **)env : noenv);
    fflush(x->fout);
    fflush(x->ferr);
    return rc;
}

/* Expect parse to fail with exactly MSG (printed once on err too). */
static void expect_error(const char **args, const char **env, const char *msg)
{
    struct fx *x = mk();
    assert_int_equal(parse(x, args, env), KNIT_EBADFLAG);
    assert_string_equal(knit_flags_error(x->fs), msg);
    char line[1024];
    snprintf(line, sizeof line, "%s\n", msg);
    assert_string_equal(x->err, line);
    done(x);
}

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/knit-flag-test-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* ---- value parsers -------------------------------------------------------------- */

static void test_parse_duration(void **state)
{
    (void)state;
    knit_duration d;
    struct {
        const char *in;
        knit_duration want;
    } good[] = {
        {"0", 0},
        {"250ms", KNIT_MSEC(250)},
        {"5s", KNIT_SEC(5)},
        {"1m30s", KNIT_SEC(90)},
        {"1h", KNIT_SEC(3600)},
        {"1.5s", KNIT_MSEC(1500)},
        {"100us", KNIT_USEC(100)},
        {"100\xc2\xb5s", KNIT_USEC(100)},
        {"10ns", 10},
        {"1s500ms", KNIT_MSEC(1500)},
        {"2562047h47m16s854775807ns", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(knit_parse_duration(good[i].in, &d), 0);
        assert_int_equal(d, good[i].want);
    }
    const char *bad[] = {"", "5", "s", "5x", "-5s", "5 s", "1.s", ".5", "5sx", "1m30", "+1s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(knit_parse_duration(bad[i], &d), KNIT_EPARSE);
    assert_int_equal(knit_parse_duration("2562048h", &d), KNIT_ERANGE);
    assert_int_equal(knit_parse_duration("99999999999999999999s", &d), KNIT_ERANGE);

    char buf[64];
    knit_format_duration(KNIT_SEC(90), buf, sizeof buf);
    assert_string_equal(buf, "1m30s");
    knit_format_duration(KNIT_MSEC(250), buf, sizeof buf);
    assert_string_equal(buf, "250ms");
    knit_format_duration(0, buf, sizeof buf);
    assert_string_equal(buf, "0s");
    knit_format_duration(KNIT_MSEC(1500) + 7, buf, sizeof buf);
    assert_string_equal(buf, "1s500ms7ns");
    assert_int_equal(knit_parse_duration(buf, &d), 0);
    assert_int_equal(d, KNIT_MSEC(1500) + 7);
}

static void test_parse_bytes(void **state)
{
    (void)state;
    uint64_t n;
    struct {
        const char *in;
        uint64_t want;
    } good[] = {
        {"0", 0},           {"512", 512},
        {"512B", 512},      {"64KiB", 65536},
        {"64k", 65536},     {"10MB", 10000000},
        {"10mb", 10000000}, {"1GiB", 1ULL << 30},
        {"1.5KiB", 1536},   {"2TB", 2000000000000ULL},
        {"1kB", 1000},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(knit_parse_bytes(good[i].in, &n), 0);
        assert_int_equal(n, good[i].want);
    }
    const char *bad[] = {"", "KiB", "-1", "10 MB", "10XB", "1.KiB", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(knit_parse_bytes(bad[i], &n), KNIT_EPARSE);
    assert_int_equal(knit_parse_bytes("17179869184GiB", &n), KNIT_ERANGE);
    char buf[64];
    knit_format_bytes(65536, buf, sizeof buf);
    assert_string_equal(buf, "64KiB");
    knit_format_bytes(10000000, buf, sizeof buf);
    assert_string_equal(buf, "10MB");
    knit_format_bytes(1001, buf, sizeof buf);
    assert_string_equal(buf, "1001");
}

static void test_parse_scalars(void **state)
{
    (void)state;
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    assert_int_equal(knit_parse_int64("-42", &i), 0);
    assert_int_equal(i, -42);
    assert_int_equal(knit_parse_int64("9223372036854775807", &i), 0);
    assert_int_equal(knit_parse_int64("9223372036854775808", &i), KNIT_ERANGE);
    assert_int_equal(knit_parse_int64("0x10", &i), KNIT_EPARSE);
    assert_int_equal(knit_parse_int64(" 1", &i), KNIT_EPARSE);
    assert_int_equal(knit_parse_int64("+1", &i), KNIT_EPARSE);
    assert_int_equal(knit_parse_int64("", &i), KNIT_EPARSE);
    assert_int_equal(knit_parse_uint64("18446744073709551615", &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(knit_parse_uint64("-1", &u), KNIT_EPARSE);
    assert_int_equal(knit_parse_uint64("18446744073709551616", &u), KNIT_ERANGE);
    assert_int_equal(knit_parse_double("0.25", &d), 0);
    assert_true(d == 0.25);
    assert_int_equal(knit_parse_double("nan", &d), KNIT_EPARSE);
    assert_int_equal(knit_parse_double("inf", &d), KNIT_EPARSE);
    assert_int_equal(knit_parse_double("1e999", &d), KNIT_EPARSE);
    assert_int_equal(knit_parse_double("1x", &d), KNIT_EPARSE);
    const char *yes[] = {"true", "YES", "on", "1"}, *no[] = {"false", "No", "OFF", "0"};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(knit_parse_bool(yes[k], &b), 0);
        assert_true(b);
        assert_int_equal(knit_parse_bool(no[k], &b), 0);
        assert_false(b);
    }
    assert_int_equal(knit_parse_bool("maybe", &b), KNIT_EPARSE);
}

/* ---- sources --------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct fx *x = mk();
    assert_int_equal(parse(x, NULL, NULL), 0);
    assert_string_equal(knit_flags_string(x->fs, "name"), "knit");
    assert_int_equal(knit_flags_int64(x->fs, "threads"), 4);
    assert_int_equal(bound_threads, 4);
    assert_int_equal(knit_flags_uint64(x->fs, "max-conns"), 1000);
    assert_true(knit_flags_double(x->fs, "ratio") == 0.5);
    assert_false(knit_flags_bool(x->fs, "verbose"));
    assert_int_equal(knit_flags_duration(x->fs, "timeout"), KNIT_SEC(90));
    assert_int_equal(knit_flags_uint64(x->fs, "max-body"), 65536);
    assert_int_equal(knit_flags_enum(x->fs, "format"), 0);
    assert_string_equal(knit_flags_string(x->fs, "format"), "logfmt");
    size_t n;
    const char *const *l = knit_flags_list(x->fs, "tags", &n);
    assert_int_equal(n, 2);
    assert_string_equal(l[0], "a");
    assert_string_equal(l[1], "b");
    assert_null(l[2]);
    assert_string_equal(knit_flags_string(x->fs, "http"), "tcp:8080");
    assert_string_equal(knit_flag_origin(knit_flags_find(x->fs, "threads")), "default");
    done(x);
}

static void test_argv_forms(void **state)
{
    (void)state;
    struct fx *x = mk();
    const char *args[] = {"--threads=8", "--name",       "n1",       "--verbose", "--max-body",
                          "10MB",        "-ratio=0.75",  "--tags=x", "--tags",    "y,z",
                          "--",          "--not-a-flag", NULL};
    /* Positional arguments are refused unless args_usage is set. */
    assert_int_equal(parse(x, args, NULL), KNIT_EBADFLAG);
    assert_string_equal(knit_flags_error(x->fs),
                        "notes: unexpected argument \"--not-a-flag\" from argv");
    done(x);

    x = mk();
    args[10] = NULL;
    assert_int_equal(parse(x, args, NULL), 0);
    assert_int_equal(knit_flags_int64(x->fs, "threads"), 8);
    assert_int_equal(bound_threads, 8);
    assert_string_equal(knit_flags_string(x->fs, "name"), "n1");
    assert_true(knit_flags_bool(x->fs, "verbose"));
    assert_int_equal(knit_flags_uint64(x->fs, "max-body"), 10000000);
    assert_true(knit_flags_double(x->fs, "ratio") == 0.75);
    size_t n;
    const char *const *l = knit_flags_list(x->fs, "tags", &n);
    assert_int_equal(n, 3); /* repeated on one source: appended */
    assert_string_equal(l[0], "x");
    assert_string_equal(l[2], "z");
    assert_string_equal(knit_flag_origin(knit_flags_find(x->fs, "threads")), "argv");
    done(x);
}

static void test_positional_args(void **state)
{
    (void)state;
    knit_flags *fs;
    knit_flags_options o;
    knit_flags_options_init(&o);
    o.args_usage = "FILE...";
    assert_int_equal(knit_flags_new(&fs, &o), 0);
    char *argv[] = {"p", "a", "--", "--b", "-", NULL};
    char *env[] = {NULL};
    assert_int_equal(knit_flags_parse(fs, 5, argv, env), 0);
    int argc;
    char **a = knit_flags_args(fs, &argc);
    assert_int_equal(argc, 3);
    assert_string_equal(a[0], "a");
    assert_string_equal(a[1], "--b");
    assert_string_equal(a[2], "-");
    knit_flags_free(fs);
}

static void test_bool_forms(void **state)
{
    (void)state;
    struct fx *x = mk();
    const char *args[] = {"--verbose", "--no-verbose", NULL};
    assert_int_equal(parse(x, args, NULL), 0);
    assert_false(knit_flags_bool(x->fs, "verbose"));
    done(x);
    x = mk();
    const char *args2[] = {"--verbose=yes", NULL};
    assert_int_equal(parse(x, args2, NULL), 0);
    assert_true(knit_flags_bool(x->fs, "verbose"));
    done(x);
    const char *args3[] = {"--no-verbose=true", NULL};
    expect_error(args3, NULL, "notes: flag --no-verbose: takes no value (from argv)");
    const char *args4[] = {"--verbose=maybe", NULL};
    expect_error(args4, NULL,
                 "notes: flag --verbose: bad value \"maybe\" from argv: expected true or false");
}

static void test_env(void **state)
{
    (void)state;
    struct fx *x = mk();
    const char *env[] = {"PATH=/bin",           "NOTES_THREADS=12",
                         "NOTES_MAX_BODY=1MiB", "NOTES_HTTP_IDLE=250ms",
                         "OTHER_X=1",           NULL};
    assert_int_equal(parse(x, NULL, env), 0);
    assert_int_equal(knit_flags_int64(x->fs, "threads"), 12);
    assert_int_equal(knit_flags_uint64(x->fs, "max-body"), 1 << 20);
    assert_int_equal(knit_flags_duration(x->fs, "http-idle"), KNIT_MSEC(250));
    assert_string_equal(knit_flag_origin(knit_flags_find(x->fs, "threads")), "env NOTES_THREADS");
    done(x);

    const char *env2[] = {"NOTES_THREADS=many", NULL};
    expect_error(NULL, env2,
                 "notes: flag --threads: bad value \"many\" from env NOTES_THREADS: expected an "
                 "integer");
    const char *env3[] = {"NOTES_THRADS=3", NULL};
    expect_error(NULL, env3,
                 "notes: unknown flag NOTES_THRADS from env (did you mean NOTES_THREADS?)");
    x = mk();
    knit_flags_free(x->fs);
    knit_flags_options o;
    knit_flags_options_init(&o);
    o.program = "notes";
    o.env_prefix = "NOTES_";
    o.env_unknown_warn = true;
    o.err = x->ferr;
    assert_int_equal(knit_flags_new(&x->fs, &o), 0);
    assert_int_equal(knit_flags_add(x->fs, "test", "T", test_defs, 2), 0);
    const char *k8s[] = {"NOTES_PORT=tcp://10.0.0.1:8080", "NOTES_THREADS=7", NULL};
    knit_log_set_level(KNIT_LOG_WARN);
    knit_test_log_begin();
    assert_int_equal(parse(x, NULL, k8s), 0);
    assert_non_null(strstr(knit_test_log_text(),
                           "level=warn mod=flag msg=\"notes: unknown flag NOTES_PORT from env "
                           "(ignored)\"\n"));
    knit_test_log_end();
    knit_log_set_level(KNIT_LOG_ERROR);
    assert_int_equal(knit_flags_int64(x->fs, "threads"), 7);
    done(x);

    const char *env4[] = {"NOTES_HELP=1", NULL};
    expect_error(NULL, env4,
                 "notes: flag --help from env NOTES_HELP: only allowed on the command line");
}

static void test_config_file(void **state)
{
    (void)state;
    char *p = write_tmp("# a comment\n"
                        "; another\n"
                        "threads = 16\n"
                        "max_body = 2MiB\n"
                        "name = \" padded \"\n"
                        "tags = f1\n"
                        "tags = f2\n"
                        "\n"
                        "[http]\n"
                        "idle = 10s\n");
    struct fx *x = mk();
    const char *args[] = {"--config", p, NULL};
    assert_int_equal(parse(x, args, NULL), 0);
    assert_int_equal(knit_flags_int64(x->fs, "threads"), 16);
    assert_int_equal(knit_flags_uint64(x->fs, "max-body"), 2 << 20);
    assert_string_equal(knit_flags_string(x->fs, "name"), " padded ");
    assert_int_equal(knit_flags_duration(x->fs, "http-idle"), KNIT_SEC(10));
    size_t n;
    knit_flags_list(x->fs, "tags", &n);
    assert_int_equal(n, 2);
    char where[256];
    snprintf(where, sizeof where, "%s:3", p);
    assert_string_equal(knit_flag_origin(knit_flags_find(x->fs, "threads")), where);
    snprintf(where, sizeof where, "%s:10", p);
    assert_string_equal(knit_flag_origin(knit_flags_find(x->fs, "http-idle")), where);
    done(x);
    unlink(p);
    free(p);
}

static void test_config_errors(void **state)
{
    (void)state;
    char msg[512];
    char *p = write_tmp("threads = 2\nthreads = lots\n");
    const char *args[] = {"--config", p, NULL};
    snprintf(msg, sizeof msg,
             "notes: flag --threads: bad value \"lots\" from %s:2: expected an integer", p);
    expect_error(args, NULL, msg);
    unlink(p);
    free(p);

    p = write_tmp("# ok\nthreds = 2\n");
    args[1] = p;
    snprintf(msg, sizeof msg,
             "notes: unknown flag \"threds\" from %s:2 (did you mean \"threads\"?)", p);
    expect_error(args, NULL, msg);
    unlink(p);
    free(p);

    p = write_tmp("threads = 2\nthis is not a setting\n");
    args[1] = p;
    snprintf(msg, sizeof msg, "notes: %s:2: expected \"name = value\", a [section] or a # comment",
             p);
    expect_error(args, NULL, msg);
    unlink(p);
    free(p);

    char big[1100];
    memset(big, 'x', sizeof big);
    big[sizeof big - 1] = '\0';
    char text[2400];
    snprintf(text, sizeof text, "\nname = %.900s\ncode = %s\n", big, big);
    p = write_tmp(text);
    args[1] = p;
    snprintf(msg, sizeof msg, "notes: %s:2: line longer than 197 bytes", p);
    expect_error(args, NULL, msg);
    unlink(p);
    free(p);

    const char *missing[] = {"--config", "/nonexistent/knit.conf", NULL};
    expect_error(missing, NULL,
                 "notes: cannot read config file \"/nonexistent/knit.conf\" (from --config): no "
                 "such file or directory");
}

static void test_precedence(void **state)
{
    (void)state;
    char *p1 = write_tmp("threads = 2\nname = file1\nratio = 0.1\ntags = t1\n");
    char *p2 = write_tmp("threads = 3\ntags = t2\n");
    struct fx *x = mk();
    const char *args[] = {"--config", p1, "--threads=5", "--config=", NULL};
    char c2[300];
    snprintf(c2, sizeof c2, "--config=%s", p2);
    args[3] = c2;
    const char *env[] = {"NOTES_THREADS=4", "NOTES_NAME=env", NULL};
    assert_int_equal(parse(x, args, env), 0);
    assert_int_equal(knit_flags_int64(x->fs, "threads"), 5);      /* argv */
    assert_string_equal(knit_flags_string(x->fs, "name"), "env"); /* env over file */
    assert_true(knit_flags_double(x->fs, "ratio") == 0.1);        /* file over default */
    size_t n;
    const char *const *l = knit_flags_list(x->fs, "tags", &n);
    assert_int_equal(n, 1); /* a later file replaces the list */
    assert_string_equal(l[0], "t2");
    done(x);
    unlink(p1);
    unlink(p2);
    free(p1);
    free(p2);
}

static void test_bad_values(void **state)
{
    (void)state;
    struct {
        const char *arg, *msg;
    } cases[] = {
        {"--threads=x", "notes: flag --threads: bad value \"x\" from argv: expected an integer"},
        {"--threads=99999999999999999999",
         "notes: flag --threads: bad value \"99999999999999999999\" from argv: expected an "
         "integer (out of range)"},
        {"--max-conns=-1",
         "notes: flag --max-conns: bad value \"-1\" from argv: expected a non-negative integer"},
        {"--ratio=abc", "notes: flag --ratio: bad value \"abc\" from argv: expected a number"},
        {"--timeout=5", "notes: flag --timeout: bad value \"5\" from argv: expected a duration "
                        "like 250ms, 5s or 1m30s"},
        {"--max-body=10XB", "notes: flag --max-body: bad value \"10XB\" from argv: expected a "
                            "byte size like 512, 64KiB or 10MB"},
        {"--format=xml",
         "notes: flag --format: bad value \"xml\" from argv: expected one of logfmt, json"},
        {"--code=1776", "notes: flag --code: bad value \"1776\" from argv: expected a string (no "
                        "sevens allowed)"},
        {"--http=tpc:8080",
         "notes: flag --http: bad value \"tpc:8080\" from argv: expected an endpoint like "
         "tcp:8080 (unknown endpoint kind \"tpc\": expected one of tcp, tcp6, unix, ssl, tls, "
         "systemd, fd, haproxy, udp)"},
        {"--http=tcp:99999", "notes: flag --http: bad value \"tcp:99999\" from argv: expected an "
                             "endpoint like tcp:8080 (tcp: port \"99999\": expected a number "
                             "0-65535)"},
        {"--threads", "notes: flag --threads: missing value from argv: expected an integer"},
        {"--thread=3", "notes: unknown flag --thread from argv (did you mean --threads?)"},
        {"--no-verbos", "notes: unknown flag --no-verbos from argv (did you mean --no-verbose?)"},
        {"--no-threads", "notes: unknown flag --no-threads from argv (did you mean --threads?)"},
        {"--zzzzzz", "notes: unknown flag --zzzzzz from argv (see --help)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {cases[i].arg, NULL};
        if (cases[i].msg) {
            expect_error(args, NULL, cases[i].msg);
        } else {
            struct fx *x = mk();
            assert_int_equal(parse(x, args, NULL), KNIT_EBADFLAG);
            const char *e = knit_flags_error(x->fs);
            assert_non_null(strstr(e, "notes: flag --http: bad value \"tpc:8080\" from argv: "
                                      "expected an endpoint like tcp:8080 ("));
            done(x);
        }
    }
}

static void test_help(void **state)
{
    (void)state;
    struct fx *x = mk();
    const char *args[] = {"--bogus", "--help", NULL}; /* help wins over a bad flag */
    assert_int_equal(parse(x, args, NULL), KNIT_FLAGS_EXIT);
    const char *want = "Usage: notes [flags]\n"
                       "\n"
                       "The notes service.\n"
                       "\n"
                       "General:\n"
                       "  --help\n"
                       "      show this help and exit\n"
                       "  --version\n"
                       "      print the version and exit\n"
                       "  --config FILE\n"
                       "      read flags from this file (name = value lines; repeatable, later "
                       "files win)\n"
                       "  --print-config\n"
                       "      print every flag's effective value and where it came from, then "
                       "exit\n"
                       "\n"
                       "Test flags:\n"
                       "  --name STRING (string, default knit, env NOTES_NAME)\n"
                       "      a name\n"
                       "  --threads INT (int, default 4, env NOTES_THREADS)\n"
                       "      worker threads\n"
                       "  --max-conns UINT (uint, default 1000, env NOTES_MAX_CONNS)\n"
                       "      connection limit\n"
                       "  --ratio FLOAT (float, default 0.5, env NOTES_RATIO, mutable)\n"
                       "      a ratio\n"
                       "  --[no-]verbose (bool, default false, env NOTES_VERBOSE)\n"
                       "      say more\n"
                       "  --timeout DURATION (duration, default 1m30s, env NOTES_TIMEOUT, "
                       "mutable)\n"
                       "      request timeout\n"
                       "  --max-body BYTES (bytes, default 64KiB, env NOTES_MAX_BODY)\n"
                       "      largest body\n"
                       "  --format logfmt|json (enum, default logfmt, env NOTES_FORMAT)\n"
                       "      log format\n"
                       "  --tags LIST (list, default a,b, env NOTES_TAGS)\n"
                       "      tags\n"
                       "  --code STRING (string, default \"\", env NOTES_CODE)\n"
                       "      no sevens\n"
                       "\n"
                       "HTTP server:\n"
                       "  --http ENDPOINT (endpoint, default tcp:8080, env NOTES_HTTP)\n"
                       "      where to listen\n"
                       "  --http-idle DURATION (duration, default 5s, env NOTES_HTTP_IDLE)\n"
                       "      idle timeout\n";
    assert_string_equal(x->out, want);
    assert_string_equal(x->err, "");
    done(x);

    x = mk();
    const char *v[] = {"--version", NULL};
    assert_int_equal(parse(x, v, NULL), KNIT_FLAGS_EXIT);
    assert_string_equal(x->out, "notes 1.2.3\n");
    done(x);
}

static void test_print_config(void **state)
{
    (void)state;
    char *p = write_tmp("\n\nratio = 0.25\n");
    struct fx *x = mk();
    const char *args[] = {"--config", p, "--print-config", "--timeout=90000ms", "--name=", NULL};
    const char *env[] = {"NOTES_MAX_BODY=1048576", NULL};
    assert_int_equal(parse(x, args, env), KNIT_FLAGS_EXIT);
    char want[4096];
    snprintf(want, sizeof want,
             "# notes: effective configuration (value ; source)\n"
             "\n"
             "# Test flags\n"
             "name = \"\" ; argv\n"
             "threads = 4 ; default\n"
             "max-conns = 1000 ; default\n"
             "ratio = 0.25 ; %s:3\n"
             "verbose = false ; default\n"
             "timeout = 1m30s ; argv\n"
             "max-body = 1MiB ; env NOTES_MAX_BODY\n"
             "format = logfmt ; default\n"
             "tags = a,b ; default\n"
             "code = \"\" ; default\n"
             "\n"
             "# HTTP server\n"
             "http = tcp:8080 ; default\n"
             "http-idle = 5s ; default\n",
             p);
    assert_string_equal(x->out, want);
    done(x);

    /* The output reads back as a config file with the same values. */
    char *q = write_tmp(want + strlen("# notes: effective configuration (value ; source)\n"));
    x = mk();
    const char *args2[] = {"--config", q, NULL};
    assert_int_equal(parse(x, args2, NULL), 0);
    assert_true(knit_flags_double(x->fs, "ratio") == 0.25);
    assert_int_equal(knit_flags_uint64(x->fs, "max-body"), 1 << 20);
    assert_string_equal(knit_flags_string(x->fs, "name"), "");
    done(x);
    unlink(p);
    unlink(q);
    free(p);
    free(q);

    /* A value starting with ';' or '#' is quoted, or it would read back as a
     * comment (an empty value): found by fuzz_flag_config. */
    const char *starts[] = {";x", "#y"};
    for (int i = 0; i < 2; i++) {
        x = mk();
        char arg[32];
        snprintf(arg, sizeof arg, "--name=%s", starts[i]);
        const char *args3[] = {arg, "--print-config", NULL};
        assert_int_equal(parse(x, args3, NULL), KNIT_FLAGS_EXIT);
        char *r = write_tmp(strchr(x->out, '\n') + 1);
        done(x);
        x = mk();
        const char *args4[] = {"--config", r, NULL};
        assert_int_equal(parse(x, args4, NULL), 0);
        assert_string_equal(knit_flags_string(x->fs, "name"), starts[i]);
        done(x);
        unlink(r);
        free(r);
    }
}

static void test_runtime_set(void **state)
{
    (void)state;
    struct fx *x = mk();
    assert_int_equal(parse(x, NULL, NULL), 0);
    const char *old = knit_flags_string(x->fs, "name");
    changed_calls = 0;
    assert_int_equal(knit_flags_set(x->fs, "timeout", "2s"), 0);
    assert_int_equal(changed_calls, 1);
    assert_int_equal(knit_flags_duration(x->fs, "timeout"), KNIT_SEC(2));
    assert_string_equal(knit_flag_origin(knit_flags_find(x->fs, "timeout")), "runtime");
    assert_int_equal(knit_flags_set(x->fs, "timeout", "2"), KNIT_EBADFLAG);
    assert_string_equal(knit_flags_error(x->fs),
                        "notes: flag --timeout: bad value \"2\" from runtime: expected a duration "
                        "like 250ms, 5s or 1m30s");
    assert_int_equal(knit_flags_duration(x->fs, "timeout"), KNIT_SEC(2));
    assert_int_equal(changed_calls, 1);
    assert_int_equal(knit_flags_set(x->fs, "threads", "3"), KNIT_EPERM);
    assert_string_equal(knit_flags_error(x->fs),
                        "notes: flag --threads cannot be changed at run time");
    assert_int_equal(knit_flags_set(x->fs, "thread", "3"), KNIT_ENOTFOUND);
    assert_string_equal(knit_flags_error(x->fs),
                        "notes: unknown flag --thread (did you mean --threads?)");
    assert_string_equal(old, "knit"); /* still valid */
    char buf[64];
    knit_flag_format(knit_flags_find(x->fs, "ratio"), buf, sizeof buf);
    assert_string_equal(buf, "0.5");
    done(x);
}

static void test_bad_defs(void **state)
{
    (void)state;
    knit_flags *fs;
    assert_int_equal(knit_flags_new(&fs, NULL), 0);
    static const knit_flag_def bad_default[] = {
        KNIT_FLAG_DEF("n", KNIT_FLAG_INT64, "four", "x"),
    };
    assert_int_equal(knit_flags_add(fs, "g", "G", bad_default, 1), KNIT_EBADFLAG);
    assert_string_equal(knit_flags_error(fs),
                        "program: flag --n: bad default \"four\": expected an integer");
    assert_null(knit_flags_find(fs, "n"));
    static const knit_flag_def bad_name[] = {
        KNIT_FLAG_DEF("Bad_Name", KNIT_FLAG_INT64, "1", "x"),
    };
    assert_int_equal(knit_flags_add(fs, "g", "G", bad_name, 1), KNIT_EBADFLAG);
    static const knit_flag_def dup[] = {
        KNIT_FLAG_DEF("help", KNIT_FLAG_INT64, "1", "x"),
    };
    assert_int_equal(knit_flags_add(fs, "g", "G", dup, 1), KNIT_EBADFLAG);
    assert_string_equal(knit_flags_error(fs), "program: flag --help in group g: already defined");
    static const knit_flag_def term[] = {
        KNIT_FLAG_DEF("a", KNIT_FLAG_INT64, "1", "x"),
        KNIT_FLAG_DEF("b", KNIT_FLAG_BOOL, NULL, "x"),
        {0},
    };
    assert_int_equal(knit_flags_add(fs, "g", "G", term, (size_t)-1), 0);
    assert_false(knit_flags_bool(fs, "b"));
    knit_flags_free(fs);
}

static void test_docs(void **state)
{
    (void)state;
    struct fx *x = mk();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    knit_flags_write_docs(x->fs, f);
    fclose(f);
    assert_non_null(strstr(buf, "### HTTP server\n\n| flag | type | default | env | description |"
                                "\n|---|---|---|---|---|\n| `--http` | endpoint | `tcp:8080` | "
                                "`NOTES_HTTP` | where to listen |\n"));
    assert_non_null(strstr(buf, "| `--format` | logfmt\\|json | `logfmt` |"));
    assert_null(strstr(buf, "help-markdown")); /* hidden */
    free(buf);
    done(x);

    x = mk();
    const char *args[] = {"--help-markdown", NULL};
    assert_int_equal(parse(x, args, NULL), KNIT_FLAGS_EXIT);
    assert_true(
        strncmp(x->out, "### General\n\n| flag | type | default | env | description |\n", 58) == 0);
    assert_non_null(strstr(x->out, "| `--timeout` | duration | `1m30s` | `NOTES_TIMEOUT` | "
                                   "request timeout (mutable at run time) |\n"));
    done(x);
}

int main(void)
{
    knit_log_set_level(KNIT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_duration), cmocka_unit_test(test_parse_bytes),
        cmocka_unit_test(test_parse_scalars),  cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_argv_forms),     cmocka_unit_test(test_positional_args),
        cmocka_unit_test(test_bool_forms),     cmocka_unit_test(test_env),
        cmocka_unit_test(test_config_file),    cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_precedence),     cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_help),           cmocka_unit_test(test_print_config),
        cmocka_unit_test(test_runtime_set),    cmocka_unit_test(test_bad_defs),
        cmocka_unit_test(test_docs),
    };
    return KNIT_RUN_TESTS(tests);
}
