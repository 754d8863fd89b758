/* value.c — text ⇄ value for the flag types (durations, byte sizes,
 * integers, doubles, booleans).
 *
 * Pure functions, no allocation, [any] thread. They read the NUL-terminated
 * input once, never past the terminator, and reject anything they do not
 * fully consume: a flag value is either exactly right or an error.
 */
#include "knit/flag.h"
#include "knit/error.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef unsigned __int128 u128;

/* Reads "DIGITS[.DIGITS]" at *p. Integer part into *ip (KNIT_ERANGE past
 * UINT64_MAX); up to 18 fraction digits into *fp with *fscale = 10^k (more
 * digits are read and dropped: they cannot change the rounded result at ns
 * or byte resolution). */
static int read_number(const char **p, uint64_t *ip, uint64_t *fp, uint64_t *fscale)
{
    const char *s = *p;
    uint64_t i = 0, f = 0, scale = 1;
    bool any = false;
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (i > (UINT64_MAX - d) / 10) return KNIT_ERANGE;
        i = i * 10 + d;
        s++;
        any = true;
    }
    if (*s == '.') {
        s++;
        bool fany = false;
        while (*s >= '0' && *s <= '9') {
            if (scale < 1000000000000000000ULL) {
                f = f * 10 + (uint64_t)(*s - '0');
                scale *= 10;
            }
            s++;
            fany = true;
        }
        if (!fany) return KNIT_EPARSE;
        any = true;
    }
    if (!any) return KNIT_EPARSE;
    *p = s;
    *ip = i;
    *fp = f;
    *fscale = scale;
    return 0;
}

int knit_parse_duration(const char *s, knit_duration *out)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1},       {"us", 1000},         {"\xc2\xb5s", 1000}, /* µs */
        {"ms", 1000000}, {"s", 1000000000ULL}, {"m", 60000000000ULL}, {"h", 3600000000000ULL},
    };
    if (!s || !*s) return KNIT_EPARSE;
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    u128 total = 0;
    const char *p = s;
    while (*p) {
        uint64_t ip, fp, scale;
        int rc = read_number(&p, &ip, &fp, &scale);
        if (rc < 0) return rc;
        size_t best = 0, bestlen = 0;
        for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
            size_t l = strlen(units[k].name);
            if (strncmp(p, units[k].name, l) == 0 && l > bestlen) {
                best = k;
                bestlen = l;
            }
        }
        if (bestlen == 0) return KNIT_EPARSE; /* missing or unknown unit */
        p += bestlen;
        u128 part = (u128)ip * units[best].ns + (u128)fp * units[best].ns / scale;
        total += part;
        if (total > INT64_MAX) return KNIT_ERANGE;
    }
    *out = (knit_duration)total;
    return 0;
}

int knit_parse_bytes(const char *s, uint64_t *out)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1ULL << 10},
        {"kib", 1ULL << 10},
        {"kb", 1000ULL},
        {"m", 1ULL << 20},
        {"mib", 1ULL << 20},
        {"mb", 1000000ULL},
        {"g", 1ULL << 30},
        {"gib", 1ULL << 30},
        {"gb", 1000000000ULL},
        {"t", 1ULL << 40},
        {"tib", 1ULL << 40},
        {"tb", 1000000000000ULL},
    };
    if (!s || !*s) return KNIT_EPARSE;
    const char *p = s;
    uint64_t ip, fp, scale;
    int rc = read_number(&p, &ip, &fp, &scale);
    if (rc < 0) return rc;
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        if (strcasecmp(p, units[k].name) != 0) continue;
        u128 v = (u128)ip * units[k].mult + (u128)fp * units[k].mult / scale;
        if (v > UINT64_MAX) return KNIT_ERANGE;
        *out = (uint64_t)v;
        return 0;
    }
    return KNIT_EPARSE;
}

int knit_parse_int64(const char *s, int64_t *out)
{
    if (!s) return KNIT_EPARSE;
    const char *p = s;
    if (*p == '-') p++;
    if (*p < '0' || *p > '9') return KNIT_EPARSE;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return KNIT_EPARSE;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE) return KNIT_ERANGE;
    if (*end) return KNIT_EPARSE;
    *out = v;
    return 0;
}

int knit_parse_uint64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return KNIT_EPARSE;
    for (const char *q = s; *q; q++)
        if (*q < '0' || *q > '9') return KNIT_EPARSE;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE) return KNIT_ERANGE;
    if (*end) return KNIT_EPARSE;
    *out = v;
    return 0;
}

int knit_parse_double(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s)) return KNIT_EPARSE;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s) return KNIT_EPARSE;
    if (!isfinite(v)) return KNIT_EPARSE;
    if (errno == ERANGE && (v > 1.0 || v < -1.0)) return KNIT_ERANGE;
    *out = v;
    return 0;
}

int knit_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    if (!s) return KNIT_EPARSE;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return KNIT_EPARSE;
}

int knit_format_duration(knit_duration d, char *buf, size_t len)
{
    static const struct {
        const char *name;
        int64_t ns;
    } parts[] = {
        {"h", 3600000000000LL}, {"m", 60000000000LL}, {"s", 1000000000LL},
        {"ms", 1000000LL},      {"us", 1000LL},       {"ns", 1LL},
    };
    if (d == 0) return snprintf(buf, len, "0s");
    char tmp[96];
    size_t o = 0;
    uint64_t rest;
    if (d < 0) {
        tmp[o++] = '-';
        rest = (uint64_t)(-(d + 1)) + 1;
    } else {
        rest = (uint64_t)d;
    }
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        uint64_t q = rest / (uint64_t)parts[i].ns;
        if (q == 0) continue;
        rest -= q * (uint64_t)parts[i].ns;
        o += (size_t)snprintf(tmp + o, sizeof tmp - o, "%" PRIu64 "%s", q, parts[i].name);
    }
    return snprintf(buf, len, "%s", tmp);
}

int knit_format_bytes(uint64_t n, char *buf, size_t len)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"TiB", 1ULL << 40},      {"GiB", 1ULL << 30},   {"MiB", 1ULL << 20}, {"KiB", 1ULL << 10},
        {"TB", 1000000000000ULL}, {"GB", 1000000000ULL}, {"MB", 1000000ULL},  {"kB", 1000ULL},
    };
    if (n != 0) {
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (n % units[i].mult == 0)
                return snprintf(buf, len, "%" PRIu64 "%s", n / units[i].mult, units[i].name);
    }
    return snprintf(buf, len, "%" PRIu64, n);
}
