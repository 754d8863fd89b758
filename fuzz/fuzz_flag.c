/* fuzz_flag.c — libFuzzer target for flag value parsing.
 *
 * First byte picks the mode; the rest is the input:
 *   0 duration, 1 byte size, 2 int64, 3 uint64, 4 double, 5 bool — parse, and
 *     for durations and byte sizes check that format → parse round-trips;
 *   6 a whole command line: NUL-separated words parsed by a flag set with
 *     one flag of every type (no environment);
 *   7 a config file (through libinih and our line reader), read with
 *     --config from a memfd.
 * Any crash, over-read (ASan) or round-trip mismatch (abort) is a finding.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "knit/flag.h"
#include "knit/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const choices[] = {"a", "b", NULL};
static const knit_flag_def defs[] = {
    KNIT_FLAG_DEF("s", KNIT_FLAG_STRING, "x", "h"),
    KNIT_FLAG_DEF("i", KNIT_FLAG_INT64, "1", "h"),
    KNIT_FLAG_DEF("u", KNIT_FLAG_UINT64, "1", "h"),
    KNIT_FLAG_DEF("d", KNIT_FLAG_DOUBLE, "1.5", "h"),
    KNIT_FLAG_DEF("b", KNIT_FLAG_BOOL, "false", "h"),
    KNIT_FLAG_DEF("t", KNIT_FLAG_DURATION, "1s", "h"),
    KNIT_FLAG_DEF("z", KNIT_FLAG_BYTES, "1KiB", "h"),
    KNIT_FLAG_DEF("e", KNIT_FLAG_ENUM, "a", "h", .choices = choices),
    KNIT_FLAG_DEF("l", KNIT_FLAG_LIST, "p,q", "h"),
    KNIT_FLAG_DEF("ep", KNIT_FLAG_ENDPOINT, "tcp:1", "h"),
};

static void parse_words(int argc, char **argv)
{
    FILE *sink = fopen("/dev/null", "w");
    knit_flags_options o;
    knit_flags_options_init(&o);
    o.out = sink;
    o.err = sink;
    o.args_usage = "ARGS";
    knit_flags *fs;
    if (knit_flags_new(&fs, &o) == 0) {
        if (knit_flags_add(fs, "g", "G", defs, sizeof defs / sizeof defs[0]) != 0) abort();
        char *env[] = {NULL};
        if (knit_flags_parse(fs, argc, argv, env) == 0) knit_flags_write_config(fs, sink);
        knit_flags_free(fs);
    }
    fclose(sink);
}

static void argv_mode(const char *text, size_t len)
{
    char *argv[66];
    int argc = 0;
    argv[argc++] = (char *)"fuzz";
    for (size_t i = 0; i < len && argc < 65;) {
        argv[argc++] = (char *)text + i;
        i += strlen(text + i) + 1;
    }
    argv[argc] = NULL;
    parse_words(argc, argv);
}

static void file_mode(const uint8_t *data, size_t len)
{
    int fd = memfd_create("fuzz.conf", MFD_CLOEXEC);
    if (fd < 0) return;
    if (write(fd, data, len) == (ssize_t)len) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        char *argv[] = {(char *)"fuzz", (char *)"--config", path, NULL};
        parse_words(3, argv);
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    knit_log_set_level(KNIT_LOG_OFF);
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    char buf[128];
    switch (data[0] % 8) {
    case 0: {
        knit_duration d, d2;
        if (knit_parse_duration(s, &d) == 0) {
            knit_format_duration(d, buf, sizeof buf);
            if (knit_parse_duration(buf, &d2) != 0 || d2 != d) abort();
        }
        break;
    }
    case 1: {
        uint64_t n, n2;
        if (knit_parse_bytes(s, &n) == 0) {
            knit_format_bytes(n, buf, sizeof buf);
            if (knit_parse_bytes(buf, &n2) != 0 || n2 != n) abort();
        }
        break;
    }
    case 2: {
        int64_t v;
        knit_parse_int64(s, &v);
        break;
    }
    case 3: {
        uint64_t v;
        knit_parse_uint64(s, &v);
        break;
    }
    case 4: {
        double v;
        knit_parse_double(s, &v);
        break;
    }
    case 5: {
        bool v;
        knit_parse_bool(s, &v);
        break;
    }
    case 6:
        argv_mode(s, size - 1);
        break;
    case 7:
        file_mode(data + 1, size - 1);
        break;
    }
    free(s);
    return 0;
}
