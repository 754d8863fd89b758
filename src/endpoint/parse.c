/* parse.c — endpoint strings: Twisted's syntax, the kind registry and the
 * per-kind validation of the built-in kinds (knit/endpoint.h).
 *
 * Owns: the registry of endpoint kinds (a small array under a mutex; kinds
 * are registered at start-up and never removed).
 * Invariant: every message written to ERR names the offending part in
 * quotes and says what was expected; tests/unit/test_endpoint.c holds the
 * table of malformed strings and their exact messages — keep them in step.
 * Nothing here touches the network or the filesystem. [any]
 */
#include "knit/endpoint.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint/endpoint_int.h"
#include "knit/error.h"

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return KNIT_EBADENDPOINT;
}

void knit_endpoint_desc_free(knit_endpoint_desc *d)
{
    if (!d) return;
    free(d->kind);
    for (size_t i = 0; i < d->nargs; i++)
        free(d->args[i]);
    for (size_t i = 0; i < d->nkw; i++) {
        free(d->keys[i]);
        free(d->values[i]);
    }
    free(d->args);
    free(d->keys);
    free(d->values);
    free(d->inner);
    free(d);
}

const char *knit_endpoint_desc_get(const knit_endpoint_desc *d, const char *key)
{
    for (size_t i = 0; i < d->nkw; i++)
        if (strcmp(d->keys[i], key) == 0) return d->values[i];
    return NULL;
}

/* Copy S[0..n) removing escapes. */
static char *unescape(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) i++;
        *o++ = s[i];
    }
    *o = 0;
    return out;
}

/* Shorten long user input in messages so they stay readable. */
static const char *clip(const char *s, char *tmp, size_t n)
{
    size_t len = strlen(s);
    if (len < n) return s;
    snprintf(tmp, n, "%.*s...", (int)(n - 4), s);
    return tmp;
}

int knit_endpoint_parse(const char *desc, knit_endpoint_desc **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!desc || !*desc)
        return fail(err, errlen, "empty endpoint description: expected KIND:ARGS (e.g. tcp:8080)");
    char tmp[64];
    /* Find the unescaped separators first: checks escapes and counts. */
    size_t len = strlen(desc);
    size_t seps[KNIT_ENDPOINT_MAX_ARGS + 1];
    size_t nsep = 0;
    for (size_t i = 0; i < len; i++) {
        if (desc[i] == '\\') {
            if (i + 1 == len)
                return fail(err, errlen,
                            "\"%s\": dangling \"\\\" at the end: expected an escaped character",
                            clip(desc, tmp, sizeof tmp));
            i++;
            continue;
        }
        if (desc[i] == ':') {
            if (nsep == KNIT_ENDPOINT_MAX_ARGS)
                return fail(err, errlen, "\"%s\": too many parts: expected at most %d",
                            clip(desc, tmp, sizeof tmp), KNIT_ENDPOINT_MAX_ARGS);
            seps[nsep++] = i;
        }
    }
    if (nsep == 0)
        return fail(err, errlen, "\"%s\": missing kind: expected KIND:ARGS (e.g. tcp:8080)",
                    clip(desc, tmp, sizeof tmp));
    if (seps[0] == 0)
        return fail(err, errlen, "\"%s\": empty kind before \":\": expected KIND:ARGS",
                    clip(desc, tmp, sizeof tmp));
    for (size_t i = 0; i < seps[0]; i++) {
        unsigned char c = (unsigned char)desc[i];
        if (!isalnum(c) && c != '_' && c != '-')
            return fail(err, errlen,
                        "kind \"%.*s\": expected letters, digits, '-' or '_' (e.g. tcp)",
                        (int)(seps[0] > 40 ? 40 : seps[0]), desc);
    }
    knit_endpoint_desc *d = calloc(1, sizeof *d);
    if (!d) goto nomem;
    d->kind = unescape(desc, seps[0]);
    d->inner = strdup(desc + seps[0] + 1);
    d->args = calloc(nsep, sizeof *d->args);
    d->keys = calloc(nsep, sizeof *d->keys);
    d->values = calloc(nsep, sizeof *d->values);
    if (!d->kind || !d->inner || !d->args || !d->keys || !d->values) goto nomem;
    seps[nsep] = len;
    for (size_t k = 0; k < nsep; k++) {
        const char *p = desc + seps[k] + 1;
        size_t n = seps[k + 1] - seps[k] - 1;
        /* first unescaped '=' splits key=value */
        size_t eq = n;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '\\') {
                i++;
                continue;
            }
            if (p[i] == '=') {
                eq = i;
                break;
            }
        }
        if (eq == n) {
            if (!(d->args[d->nargs] = unescape(p, n))) goto nomem;
            d->nargs++;
            continue;
        }
        if (eq == 0) {
            int r = fail(err, errlen, "%s: option \"%.*s\": empty name: expected key=value",
                         d->kind, (int)(n > 40 ? 40 : n), p);
            knit_endpoint_desc_free(d);
            return r;
        }
        char *key = unescape(p, eq), *val = unescape(p + eq + 1, n - eq - 1);
        if (!key || !val) {
            free(key);
            free(val);
            goto nomem;
        }
        d->keys[d->nkw] = key;
        d->values[d->nkw] = val;
        d->nkw++;
        for (size_t j = 0; j + 1 < d->nkw; j++) {
            if (strcmp(d->keys[j], key) == 0) {
                int r = fail(err, errlen, "%s: option \"%s\" given twice: expected it once",
                             d->kind, clip(key, tmp, sizeof tmp));
                knit_endpoint_desc_free(d);
                return r;
            }
        }
    }
    *out = d;
    return 0;
nomem:
    knit_endpoint_desc_free(d);
    if (err && errlen) snprintf(err, errlen, "out of memory parsing an endpoint description");
    return KNIT_ENOMEM;
}

/* ---- registry ------------------------------------------------------------ */

#define MAX_KINDS 32
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const knit_endpoint_kind *kinds[MAX_KINDS];
static size_t nkinds;
static bool builtins_done;

static void add_builtins_locked(void)
{
    if (builtins_done) return;
    builtins_done = true;
    const knit_endpoint_kind *const *b = knit__endpoint_builtin_kinds();
    for (; *b; b++)
        kinds[nkinds++] = *b;
}

const knit_endpoint_kind *knit__endpoint_find_kind(const char *name)
{
    const knit_endpoint_kind *k = NULL;
    pthread_mutex_lock(&reg_mu);
    add_builtins_locked();
    for (size_t i = 0; i < nkinds; i++)
        if (strcmp(kinds[i]->name, name) == 0) k = kinds[i];
    pthread_mutex_unlock(&reg_mu);
    return k;
}

int knit_endpoint_register(const knit_endpoint_kind *kind)
{
    if (!kind || !kind->name || !*kind->name || strlen(kind->name) > 32) return KNIT_EINVAL;
    for (const char *c = kind->name; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-') return KNIT_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&reg_mu);
    add_builtins_locked();
    for (size_t i = 0; i < nkinds; i++)
        if (strcmp(kinds[i]->name, kind->name) == 0) rc = KNIT_EEXIST;
    if (rc == 0 && nkinds == MAX_KINDS) rc = KNIT_ELIMIT;
    if (rc == 0) kinds[nkinds++] = kind;
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

static void kind_list(char *out, size_t n)
{
    size_t used = 0;
    out[0] = 0;
    pthread_mutex_lock(&reg_mu);
    add_builtins_locked();
    for (size_t i = 0; i < nkinds && used < n; i++) {
        int w = snprintf(out + used, n - used, "%s%s", i ? ", " : "", kinds[i]->name);
        if (w < 0) break;
        used += (size_t)w;
    }
    pthread_mutex_unlock(&reg_mu);
}

int knit__endpoint_parse_kind(const char *desc, bool server, knit_endpoint_desc **out,
                              const knit_endpoint_kind **kind, char *err, size_t errlen)
{
    char dummy[KNIT_ENDPOINT_ERRLEN];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    knit_endpoint_desc *d;
    int rc = knit_endpoint_parse(desc, &d, err, errlen);
    if (rc) return rc;
    const knit_endpoint_kind *k = knit__endpoint_find_kind(d->kind);
    if (!k) {
        char list[160], tmp[48];
        kind_list(list, sizeof list);
        rc = fail(err, errlen, "unknown endpoint kind \"%s\": expected one of %s",
                  clip(d->kind, tmp, sizeof tmp), list);
        knit_endpoint_desc_free(d);
        return rc;
    }
    if ((server && !k->listen) || (!server && !k->connect)) {
        rc = fail(err, errlen, "%s: cannot be used as a %s endpoint", d->kind,
                  server ? "server (listening)" : "client (connecting)");
        knit_endpoint_desc_free(d);
        return rc;
    }
    if (k->check && (rc = k->check(d, server, err, errlen)) != 0) {
        knit_endpoint_desc_free(d);
        return rc;
    }
    *out = d;
    *kind = k;
    return 0;
}

int knit_endpoint_check(const char *desc, bool server, char *err, size_t errlen)
{
    knit_endpoint_desc *d;
    const knit_endpoint_kind *k;
    int rc = knit__endpoint_parse_kind(desc, server, &d, &k, err, errlen);
    if (rc == 0) knit_endpoint_desc_free(d);
    return rc;
}

/* ---- validation helpers for the built-in kinds --------------------------- */

/* Look up parameter NAME: positional slot POS (or -1) or option NAME. */
const char *knit__ep_param(const knit_endpoint_desc *d, const ep_spec *s, const char *name)
{
    for (size_t i = 0; i < s->npos && i < d->nargs; i++)
        if (strcmp(s->pos[i], name) == 0) return d->args[i];
    return knit_endpoint_desc_get(d, name);
}

static bool in_list(const char *const *list, const char *name)
{
    for (; *list; list++)
        if (strcmp(*list, name) == 0) return true;
    return false;
}

int knit__ep_check_shape(const knit_endpoint_desc *d, const ep_spec *s, char *err, size_t n)
{
    char tmp[48];
    if (d->nargs > s->npos)
        return fail(err, n, "%s: unexpected argument \"%s\": expected %s", d->kind,
                    clip(d->args[s->npos], tmp, sizeof tmp), s->usage);
    for (size_t i = 0; i < d->nkw; i++) {
        bool ok = in_list(s->opts, d->keys[i]);
        for (size_t j = 0; j < s->npos && !ok; j++)
            ok = strcmp(s->pos[j], d->keys[i]) == 0;
        if (!ok) {
            char list[160];
            size_t used = 0;
            list[0] = 0;
            for (size_t j = 0; j < s->npos; j++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "",
                                         s->pos[j]);
            for (const char *const *o = s->opts; *o && used < sizeof list; o++)
                used +=
                    (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", *o);
            return fail(err, n, "%s: unknown option \"%s\": expected one of %s", d->kind,
                        clip(d->keys[i], tmp, sizeof tmp), list);
        }
        for (size_t j = 0; j < s->npos && j < d->nargs; j++)
            if (strcmp(s->pos[j], d->keys[i]) == 0)
                return fail(err, n, "%s: %s given twice (as argument and as %s=): expected it once",
                            d->kind, d->keys[i], d->keys[i]);
    }
    for (size_t j = 0; j < s->nreq; j++)
        if (!knit__ep_param(d, s, s->pos[j]))
            return fail(err, n, "%s: missing %s: expected %s", d->kind, s->pos[j], s->usage);
    return 0;
}

bool knit__ep_parse_uint(const char *v, unsigned long max, unsigned long *out)
{
    if (!v || !*v || strlen(v) > 20) return false;
    unsigned long x = 0;
    for (const char *c = v; *c; c++) {
        if (*c < '0' || *c > '9') return false;
        x = x * 10 + (unsigned long)(*c - '0');
        if (x > max) return false;
    }
    *out = x;
    return true;
}

int knit__ep_check_port(const knit_endpoint_desc *d, const char *v, bool allow_zero, char *err,
                        size_t n)
{
    unsigned long p;
    char tmp[48];
    if (!knit__ep_parse_uint(v, 65535, &p) || (!allow_zero && p == 0))
        return fail(err, n, "%s: port \"%s\": expected a number %d-65535", d->kind,
                    clip(v, tmp, sizeof tmp), allow_zero ? 0 : 1);
    return 0;
}

int knit__ep_check_uint(const knit_endpoint_desc *d, const char *name, const char *v,
                        unsigned long lo, unsigned long hi, char *err, size_t n)
{
    unsigned long x;
    char tmp[48];
    if (!knit__ep_parse_uint(v, hi, &x) || x < lo)
        return fail(err, n, "%s: %s \"%s\": expected a number %lu-%lu", d->kind, name,
                    clip(v, tmp, sizeof tmp), lo, hi);
    return 0;
}

int knit__ep_check_bool(const knit_endpoint_desc *d, const char *name, const char *v, bool *out,
                        char *err, size_t n)
{
    static const char *yes[] = {"yes", "true", "1", "on", NULL};
    static const char *no[] = {"no", "false", "0", "off", NULL};
    char tmp[48];
    if (in_list(yes, v)) {
        if (out) *out = true;
        return 0;
    }
    if (in_list(no, v)) {
        if (out) *out = false;
        return 0;
    }
    return fail(err, n, "%s: %s \"%s\": expected yes or no", d->kind, name,
                clip(v, tmp, sizeof tmp));
}

int knit__ep_check_ip(const knit_endpoint_desc *d, const char *name, const char *v, int family,
                      char *err, size_t n)
{
    unsigned char buf[16];
    char tmp[48];
    if (family == AF_INET && inet_pton(AF_INET, v, buf) == 1) return 0;
    if (family == AF_INET6 && inet_pton(AF_INET6, v, buf) == 1) return 0;
    if (family == AF_UNSPEC &&
        (inet_pton(AF_INET, v, buf) == 1 || inet_pton(AF_INET6, v, buf) == 1))
        return 0;
    const char *want = family == AF_INET    ? "an IPv4 address (use tcp6: for IPv6)"
                       : family == AF_INET6 ? "an IPv6 address"
                                            : "an IPv4 or IPv6 address";
    return fail(err, n, "%s: %s \"%s\": expected %s", d->kind, name, clip(v, tmp, sizeof tmp),
                want);
}

int knit__ep_check_timeout(const knit_endpoint_desc *d, const char *v, knit_duration *out,
                           char *err, size_t n)
{
    char *end;
    char tmp[48];
    errno = 0;
    double s = strtod(v, &end);
    if (!*v || *end || errno || !(s > 0) || s > 86400.0 || !isdigit((unsigned char)v[0]))
        return fail(err, n, "%s: timeout \"%s\": expected seconds greater than 0 (e.g. 2.5)",
                    d->kind, clip(v, tmp, sizeof tmp));
    if (out) *out = KNIT_FROM_SEC(s);
    return 0;
}

int knit__ep_check_nonempty(const knit_endpoint_desc *d, const char *name, const char *v,
                            const char *what, char *err, size_t n)
{
    if (v && *v) return 0;
    return fail(err, n, "%s: %s is empty: expected %s", d->kind, name, what);
}

int knit__ep_check_alpn(const knit_endpoint_desc *d, const char *v, char *err, size_t n)
{
    char tmp[48];
    const char *p = v;
    if (!*v) goto bad;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0 || len > 255) goto bad;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) goto bad;
        }
    }
    return 0;
bad:
    return fail(err, n,
                "%s: alpn \"%s\": expected a comma-separated list of protocol names "
                "(e.g. h2,http/1.1)",
                d->kind, clip(v, tmp, sizeof tmp));
}

int knit__ep_check_min_version(const knit_endpoint_desc *d, const char *v, char *err, size_t n)
{
    char tmp[48];
    if (strcmp(v, "TLSv1.2") == 0 || strcmp(v, "TLSv1.3") == 0) return 0;
    return fail(err, n, "%s: minVersion \"%s\": expected TLSv1.2 or TLSv1.3", d->kind,
                clip(v, tmp, sizeof tmp));
}

int knit__ep_fail(char *err, size_t n, const char *fmt, ...)
{
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return KNIT_EBADENDPOINT;
}
