/* flag.c — the flag set: registration, the four sources, help and
 * print-config, run-time reads and writes.
 *
 * Owns: every flag's current value and where it came from. Def tables are
 * borrowed (static const in the modules that declare them).
 *
 * Threads: parse runs on the main thread before any other thread starts;
 * afterwards reads and knit_flags_set run on the reactor thread only, so
 * there is no locking here.
 *
 * Invariant: a flag's value is only ever replaced by a value that went
 * through parse_value() — defaults, files, env, argv and run-time writes all
 * take that one path — and strings that were replaced are parked in
 * `retired` until the set is freed, so pointers handed out stay valid.
 */
#include "knit/flag.h"
#include "knit/error.h"
#include "knit/log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

extern char **environ;

struct knit_flag {
    const knit_flag_def *def;
    knit_flags *fs;
    size_t group; /* index into fs->groups */
    knit_flag_source src;
    unsigned epoch; /* which source instance set it (lists append within one) */
    char *origin;   /* "notes.conf:3" / "env NOTES_X"; NULL: static by src */
    bool builtin;
    union {
        char *s;
        int64_t i;
        uint64_t u;
        double d;
        bool b;
        int e;
    } v;
    char **list; /* LIST: NULL-terminated */
    size_t nlist;
};

struct group {
    char *name;
    char *title;
};

struct knit_flags {
    knit_flags_options o;
    knit_flag **flags;
    size_t n, cap;
    struct group *groups;
    size_t ngroups;
    char err[KNIT_FLAG_ERROR_MAX];
    char **retired; /* replaced strings and lists, freed with the set */
    size_t nretired, capretired;
    char **args;
    int nargs;
    bool parsed;
    unsigned epoch;
    /* builtins */
    bool want_help, want_version, want_print;
};

/* ---- built-in flags ----------------------------------------------------------- */

static const knit_flag_def builtin_defs[] = {
    KNIT_FLAG_DEF("help", KNIT_FLAG_BOOL, "false", "show this help and exit"),
    KNIT_FLAG_DEF("version", KNIT_FLAG_BOOL, "false", "print the version and exit"),
    KNIT_FLAG_DEF("config", KNIT_FLAG_LIST, "",
                  "read flags from this file (name = value lines; repeatable, later files win)",
                  .metavar = "FILE"),
    KNIT_FLAG_DEF("print-config", KNIT_FLAG_BOOL, "false",
                  "print every flag's effective value and where it came from, then exit"),
    KNIT_FLAG_DEF("help-markdown", KNIT_FLAG_BOOL, "false",
                  "print every flag as a Markdown table (for the docs), then exit",
                  .opts = KNIT_FLAG_HIDDEN),
};

/* ---- small helpers ------------------------------------------------------------ */

static void set_err(knit_flags *fs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(knit_flags *fs, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fs->err, sizeof fs->err, fmt, ap);
    va_end(ap);
}

static int retire(knit_flags *fs, char *p)
{
    if (!p) return 0;
    if (fs->nretired == fs->capretired) {
        size_t nc = fs->capretired ? fs->capretired * 2 : 16;
        char **r = realloc(fs->retired, nc * sizeof *r);
        if (!r) return KNIT_ENOMEM;
        fs->retired = r;
        fs->capretired = nc;
    }
    fs->retired[fs->nretired++] = p;
    return 0;
}

static bool valid_name(const char *n)
{
    size_t l = strlen(n);
    if (l == 0 || l > KNIT_FLAG_NAME_MAX || !islower((unsigned char)n[0])) return false;
    if (n[l - 1] == '-') return false;
    for (const char *p = n; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-') return false;
    if (strncmp(n, "no-", 3) == 0) return false; /* would clash with --no-NAME */
    return true;
}

static void env_name(const knit_flags *fs, const char *name, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "%s", fs->o.env_prefix ? fs->o.env_prefix : "");
    for (const char *p = name; *p && o + 1 < len; p++)
        buf[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    if (o < len) buf[o] = '\0';
}

static bool env_enabled(const knit_flags *fs)
{
    return fs->o.env_prefix && *fs->o.env_prefix;
}

static knit_flag *find(const knit_flags *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->flags[i]->def->name, name) == 0) return fs->flags[i];
    return NULL;
}

/* Levenshtein distance, capped inputs (names are short). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* The closest flag name to NAME (a bool also as "no-NAME"), or NULL. */
static const char *suggest(const knit_flags *fs, const char *name, bool *negated)
{
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    size_t l = strlen(name);
    *negated = false;
    /* "--no-threads" for a non-boolean: point at the flag itself. */
    if (strncmp(name, "no-", 3) == 0 && find(fs, name + 3)) return find(fs, name + 3)->def->name;
    size_t limit = l / 3 > KNIT_FLAG_SUGGEST_DIST ? l / 3 : KNIT_FLAG_SUGGEST_DIST;
    *negated = false;
    for (size_t i = 0; i < fs->n; i++) {
        const knit_flag *f = fs->flags[i];
        size_t d = edit_distance(name, f->def->name);
        if (d < bestd && d <= limit) {
            best = f->def->name;
            bestd = d;
            *negated = false;
        }
        if (f->def->type == KNIT_FLAG_BOOL && strncmp(name, "no", 2) == 0) {
            char neg[KNIT_FLAG_NAME_MAX + 8];
            snprintf(neg, sizeof neg, "no-%s", f->def->name);
            d = edit_distance(name, neg);
            if (d < bestd && d <= limit) {
                best = f->def->name;
                bestd = d;
                *negated = true;
            }
        }
    }
    return best;
}

/* ---- types ---------------------------------------------------------------------- */

const char *knit_flag_type_name(knit_flag_type t)
{
    switch (t) {
    case KNIT_FLAG_STRING:
        return "string";
    case KNIT_FLAG_INT64:
        return "int";
    case KNIT_FLAG_UINT64:
        return "uint";
    case KNIT_FLAG_DOUBLE:
        return "float";
    case KNIT_FLAG_BOOL:
        return "bool";
    case KNIT_FLAG_DURATION:
        return "duration";
    case KNIT_FLAG_BYTES:
        return "bytes";
    case KNIT_FLAG_ENUM:
        return "enum";
    case KNIT_FLAG_LIST:
        return "list";
    case KNIT_FLAG_ENDPOINT:
        return "endpoint";
    }
    return "unknown";
}

static void expected(const knit_flag_def *d, char *buf, size_t len)
{
    switch (d->type) {
    case KNIT_FLAG_STRING:
        snprintf(buf, len, "a string");
        return;
    case KNIT_FLAG_INT64:
        snprintf(buf, len, "an integer");
        return;
    case KNIT_FLAG_UINT64:
        snprintf(buf, len, "a non-negative integer");
        return;
    case KNIT_FLAG_DOUBLE:
        snprintf(buf, len, "a number");
        return;
    case KNIT_FLAG_BOOL:
        snprintf(buf, len, "true or false");
        return;
    case KNIT_FLAG_DURATION:
        snprintf(buf, len, "a duration like 250ms, 5s or 1m30s");
        return;
    case KNIT_FLAG_BYTES:
        snprintf(buf, len, "a byte size like 512, 64KiB or 10MB");
        return;
    case KNIT_FLAG_LIST:
        snprintf(buf, len, "a comma-separated list");
        return;
    case KNIT_FLAG_ENDPOINT:
        snprintf(buf, len, "an endpoint like tcp:8080");
        return;
    case KNIT_FLAG_ENUM: {
        size_t o = (size_t)snprintf(buf, len, "one of ");
        for (size_t i = 0; d->choices && d->choices[i] && o < len; i++)
            o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", d->choices[i]);
        return;
    }
    }
    snprintf(buf, len, "a value");
}

/* A parsed value, not yet committed. */
struct value {
    union {
        int64_t i;
        uint64_t u;
        double d;
        bool b;
        int e;
    } v;
    char **list;
    size_t nlist;
};

static void free_list(char **l)
{
    if (!l) return;
    for (char **p = l; *p; p++)
        free(*p);
    free(l);
}

/* Split "a, b,c" into a NULL-terminated list of trimmed, non-empty items. */
static int split_list(const char *text, char ***out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        if (*p == ',') cap++;
    char **l = calloc(cap + 1, sizeof *l);
    if (!l) return KNIT_ENOMEM;
    size_t k = 0;
    const char *p = text;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (b > a) {
            l[k] = strndup(a, (size_t)(b - a));
            if (!l[k]) {
                free_list(l);
                return KNIT_ENOMEM;
            }
            k++;
        }
        if (!*e) break;
        p = e + 1;
    }
    *out = l;
    *n = k;
    return 0;
}

/* Parse TEXT for flag D. On error returns KNIT_EBADFLAG (or KNIT_ENOMEM) and
 * writes what was expected into WHY. */
static int parse_value(const knit_flag_def *d, const char *text, struct value *v, char *why,
                       size_t whylen)
{
    int rc = 0;
    memset(v, 0, sizeof *v);
    switch (d->type) {
    case KNIT_FLAG_STRING:
    case KNIT_FLAG_ENDPOINT:
        break;
    case KNIT_FLAG_INT64:
        rc = knit_parse_int64(text, &v->v.i);
        break;
    case KNIT_FLAG_UINT64:
        rc = knit_parse_uint64(text, &v->v.u);
        break;
    case KNIT_FLAG_DOUBLE:
        rc = knit_parse_double(text, &v->v.d);
        break;
    case KNIT_FLAG_BOOL:
        rc = knit_parse_bool(text, &v->v.b);
        break;
    case KNIT_FLAG_DURATION:
        rc = knit_parse_duration(text, &v->v.i);
        break;
    case KNIT_FLAG_BYTES:
        rc = knit_parse_bytes(text, &v->v.u);
        break;
    case KNIT_FLAG_ENUM:
        rc = KNIT_EPARSE;
        for (int i = 0; d->choices && d->choices[i]; i++)
            if (strcmp(d->choices[i], text) == 0) {
                v->v.e = i;
                rc = 0;
                break;
            }
        break;
    case KNIT_FLAG_LIST:
        rc = split_list(text, &v->list, &v->nlist);
        if (rc == KNIT_ENOMEM) return rc;
        break;
    }
    if (rc < 0) {
        expected(d, why, whylen);
        if (rc == KNIT_ERANGE) {
            size_t o = strlen(why);
            snprintf(why + o, whylen - o, " (out of range)");
        }
        return KNIT_EBADFLAG;
    }
    knit_flag_validate_fn check = d->validate;
    void *check_arg = d->validate_arg;
    if (!check && d->type == KNIT_FLAG_ENDPOINT) check = knit_flag_validate_endpoint;
    if (check) {
        char reason[256] = "";
        if (check(text, reason, sizeof reason, check_arg) < 0) {
            free_list(v->list);
            v->list = NULL;
            expected(d, why, whylen);
            if (reason[0]) {
                size_t o = strlen(why);
                snprintf(why + o, whylen - o, " (%s)", reason);
            }
            return KNIT_EBADFLAG;
        }
    }
    return 0;
}

static void update_bind(knit_flag *f)
{
    void *b = f->def->bind;
    if (!b) return;
    switch (f->def->type) {
    case KNIT_FLAG_STRING:
    case KNIT_FLAG_ENDPOINT:
        *(const char **)b = f->v.s;
        break;
    case KNIT_FLAG_INT64:
    case KNIT_FLAG_DURATION:
        *(int64_t *)b = f->v.i;
        break;
    case KNIT_FLAG_UINT64:
    case KNIT_FLAG_BYTES:
        *(uint64_t *)b = f->v.u;
        break;
    case KNIT_FLAG_DOUBLE:
        *(double *)b = f->v.d;
        break;
    case KNIT_FLAG_BOOL:
        *(bool *)b = f->v.b;
        break;
    case KNIT_FLAG_ENUM:
        *(int *)b = f->v.e;
        break;
    case KNIT_FLAG_LIST:
        break;
    }
}

/* Commit a parsed value. ORIGIN is copied. EPOCH identifies the source
 * instance: a list set again by the same instance appends. */
static int commit(knit_flag *f, const char *text, struct value *v, knit_flag_source src,
                  const char *origin, unsigned epoch)
{
    knit_flags *fs = f->fs;
    char *norigin = NULL;
    if (origin) {
        norigin = strdup(origin);
        if (!norigin) {
            free_list(v->list);
            return KNIT_ENOMEM;
        }
    }
    switch (f->def->type) {
    case KNIT_FLAG_STRING:
    case KNIT_FLAG_ENDPOINT: {
        char *s = strdup(text);
        if (!s || retire(fs, f->v.s) < 0) {
            free(s);
            free(norigin);
            return KNIT_ENOMEM;
        }
        f->v.s = s;
        break;
    }
    case KNIT_FLAG_LIST:
        if (f->list && f->epoch == epoch && f->src == src) {
            char **l = realloc(f->list, (f->nlist + v->nlist + 1) * sizeof *l);
            if (!l) {
                free_list(v->list);
                free(norigin);
                return KNIT_ENOMEM;
            }
            memcpy(l + f->nlist, v->list, (v->nlist + 1) * sizeof *l);
            free(v->list);
            f->list = l;
            f->nlist += v->nlist;
        } else {
            /* Old items may be held by readers; park the whole old list. */
            if (f->list) {
                for (size_t i = 0; i < f->nlist; i++)
                    retire(fs, f->list[i]);
                retire(fs, (char *)f->list);
            }
            f->list = v->list;
            f->nlist = v->nlist;
        }
        break;
    case KNIT_FLAG_INT64:
    case KNIT_FLAG_DURATION:
        f->v.i = v->v.i;
        break;
    case KNIT_FLAG_UINT64:
    case KNIT_FLAG_BYTES:
        f->v.u = v->v.u;
        break;
    case KNIT_FLAG_DOUBLE:
        f->v.d = v->v.d;
        break;
    case KNIT_FLAG_BOOL:
        f->v.b = v->v.b;
        break;
    case KNIT_FLAG_ENUM:
        f->v.e = v->v.e;
        break;
    }
    free(f->origin);
    f->origin = norigin;
    f->src = src;
    f->epoch = epoch;
    update_bind(f);
    return 0;
}

/* Parse and commit, or set the standard bad-value message. WHERE is the
 * human form of the source ("argv", "env NOTES_X", "a.conf:3"). */
static int assign(knit_flag *f, const char *text, knit_flag_source src, const char *where,
                  const char *origin, unsigned epoch)
{
    knit_flags *fs = f->fs;
    struct value v;
    char why[KNIT_FLAG_ERROR_MAX / 2];
    int rc = parse_value(f->def, text, &v, why, sizeof why);
    if (rc == KNIT_ENOMEM) {
        set_err(fs, "%s: out of memory", fs->o.program);
        return rc;
    }
    if (rc < 0) {
        set_err(fs, "%s: flag --%s: bad value \"%s\" from %s: expected %s", fs->o.program,
                f->def->name, text, where, why);
        return KNIT_EBADFLAG;
    }
    rc = commit(f, text, &v, src, origin, epoch);
    if (rc < 0) set_err(fs, "%s: out of memory", fs->o.program);
    return rc;
}

/* ---- creation ---------------------------------------------------------------------- */

void knit_flags_options_init(knit_flags_options *o)
{
    memset(o, 0, sizeof *o);
    o->program = "program";
    o->version = "unknown";
}

static int add_group(knit_flags *fs, const char *group, const char *title, size_t *idx)
{
    for (size_t i = 0; i < fs->ngroups; i++)
        if (strcmp(fs->groups[i].name, group) == 0) {
            *idx = i;
            return 0;
        }
    struct group *g = realloc(fs->groups, (fs->ngroups + 1) * sizeof *g);
    if (!g) return KNIT_ENOMEM;
    fs->groups = g;
    g[fs->ngroups].name = strdup(group);
    g[fs->ngroups].title = strdup(title ? title : group);
    if (!g[fs->ngroups].name || !g[fs->ngroups].title) {
        free(g[fs->ngroups].name);
        free(g[fs->ngroups].title);
        return KNIT_ENOMEM;
    }
    *idx = fs->ngroups++;
    return 0;
}

static int add_flags(knit_flags *fs, const char *group, const char *title,
                     const knit_flag_def *defs, size_t n, bool builtin)
{
    if (!group || !*group) group = "general";
    if (n == (size_t)-1)
        for (n = 0; defs[n].name; n++) {
        }
    for (size_t i = 0; i < n; i++) {
        const knit_flag_def *d = &defs[i];
        if (!d->name || !valid_name(d->name)) {
            set_err(fs, "%s: flag \"%s\" in group %s: invalid name", fs->o.program,
                    d->name ? d->name : "(null)", group);
            return KNIT_EBADFLAG;
        }
        if (find(fs, d->name)) {
            set_err(fs, "%s: flag --%s in group %s: already defined", fs->o.program, d->name,
                    group);
            return KNIT_EBADFLAG;
        }
        if (d->type == KNIT_FLAG_ENUM && (!d->choices || !d->choices[0])) {
            set_err(fs, "%s: flag --%s: enum without choices", fs->o.program, d->name);
            return KNIT_EBADFLAG;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(defs[j].name, d->name) == 0) {
                set_err(fs, "%s: flag --%s in group %s: already defined", fs->o.program, d->name,
                        group);
                return KNIT_EBADFLAG;
            }
    }
    size_t gi;
    if (add_group(fs, group, title, &gi) < 0) return KNIT_ENOMEM;
    if (fs->n + n > fs->cap) {
        size_t nc = fs->cap ? fs->cap : 16;
        while (nc < fs->n + n)
            nc *= 2;
        knit_flag **a = realloc(fs->flags, nc * sizeof *a);
        if (!a) return KNIT_ENOMEM;
        fs->flags = a;
        fs->cap = nc;
    }
    size_t first = fs->n;
    for (size_t i = 0; i < n; i++) {
        knit_flag *f = calloc(1, sizeof *f);
        if (!f) return KNIT_ENOMEM;
        f->def = &defs[i];
        f->fs = fs;
        f->group = gi;
        f->builtin = builtin;
        fs->flags[fs->n++] = f;
        const char *text = defs[i].def ? defs[i].def : "";
        /* An empty default is the zero value for every type. */
        if (!*text && defs[i].type != KNIT_FLAG_STRING && defs[i].type != KNIT_FLAG_LIST &&
            defs[i].type != KNIT_FLAG_ENDPOINT) {
            if (defs[i].type == KNIT_FLAG_ENUM) {
                set_err(fs, "%s: flag --%s: enum needs a default", fs->o.program, defs[i].name);
                goto bad;
            }
            update_bind(f);
            continue;
        }
        struct value v;
        char why[KNIT_FLAG_ERROR_MAX / 2];
        int rc = parse_value(&defs[i], text, &v, why, sizeof why);
        /* Validators may reject "" (an unset endpoint): an empty default is
         * allowed to mean "not set". */
        if (rc == KNIT_EBADFLAG && !*text) {
            if (defs[i].type == KNIT_FLAG_STRING || defs[i].type == KNIT_FLAG_ENDPOINT) {
                f->v.s = strdup("");
                if (!f->v.s) return KNIT_ENOMEM;
                update_bind(f);
                continue;
            }
        }
        if (rc == KNIT_EBADFLAG) {
            set_err(fs, "%s: flag --%s: bad default \"%s\": expected %s", fs->o.program,
                    defs[i].name, text, why);
            goto bad;
        }
        if (rc < 0 || commit(f, text, &v, KNIT_FLAG_SRC_DEFAULT, NULL, 0) < 0) return KNIT_ENOMEM;
    }
    return 0;
bad:
    /* Leave the set as it was before this call. */
    while (fs->n > first) {
        knit_flag *f = fs->flags[--fs->n];
        if (f->def->type == KNIT_FLAG_STRING || f->def->type == KNIT_FLAG_ENDPOINT) free(f->v.s);
        free_list(f->list);
        free(f->origin);
        free(f);
    }
    return KNIT_EBADFLAG;
}

int knit_flags_new(knit_flags **out, const knit_flags_options *opts)
{
    knit_flags *fs = calloc(1, sizeof *fs);
    if (!fs) return KNIT_ENOMEM;
    if (opts)
        fs->o = *opts;
    else
        knit_flags_options_init(&fs->o);
    if (!fs->o.program) fs->o.program = "program";
    if (!fs->o.version) fs->o.version = "unknown";
    int rc = add_flags(fs, "general", "General", builtin_defs,
                       sizeof builtin_defs / sizeof builtin_defs[0], true);
    if (rc < 0) {
        knit_flags_free(fs);
        return rc;
    }
    *out = fs;
    return 0;
}

void knit_flags_free(knit_flags *fs)
{
    if (!fs) return;
    for (size_t i = 0; i < fs->n; i++) {
        knit_flag *f = fs->flags[i];
        if (f->def->type == KNIT_FLAG_STRING || f->def->type == KNIT_FLAG_ENDPOINT) free(f->v.s);
        free_list(f->list);
        free(f->origin);
        free(f);
    }
    for (size_t i = 0; i < fs->ngroups; i++) {
        free(fs->groups[i].name);
        free(fs->groups[i].title);
    }
    for (size_t i = 0; i < fs->nretired; i++)
        free(fs->retired[i]);
    for (int i = 0; i < fs->nargs; i++)
        free(fs->args[i]);
    free(fs->args);
    free(fs->retired);
    free(fs->groups);
    free(fs->flags);
    free(fs);
}

int knit_flags_add(knit_flags *fs, const char *group, const char *title, const knit_flag_def *defs,
                   size_t n)
{
    fs->err[0] = '\0';
    return add_flags(fs, group, title, defs, n, false);
}

const char *knit_flags_error(const knit_flags *fs)
{
    return fs->err;
}

char **knit_flags_args(const knit_flags *fs, int *argc)
{
    if (argc) *argc = fs->nargs;
    return fs->args;
}

/* ---- config files ------------------------------------------------------------------ */

struct file_ctx {
    knit_flags *fs;
    const char *path;
    const char *data; /* whole file, NUL-terminated */
    size_t pos, len;
    int lineno; /* line most recently handed to inih */
    int rc;     /* first error */
    unsigned epoch;
};

/* fgets-style reader for ini_parse_stream that counts lines (Debian's inih
 * is built without INI_HANDLER_LINENO) and refuses over-long lines instead
 * of letting inih split them into two. */
static char *file_reader(char *str, int num, void *stream)
{
    struct file_ctx *c = stream;
    if (c->pos >= c->len || c->rc < 0) return NULL;
    const char *start = c->data + c->pos;
    const char *nl = memchr(start, '\n', c->len - c->pos);
    size_t l = nl ? (size_t)(nl - start) + 1 : c->len - c->pos;
    c->pos += l;
    c->lineno++;
    if (memchr(start, '\0', l)) {
        set_err(c->fs, "%s: %s:%d: NUL byte in config file", c->fs->o.program, c->path, c->lineno);
        c->rc = KNIT_EBADFLAG;
        return NULL;
    }
    size_t content = l - (start[l - 1] == '\n');
    if (content + 3 > (size_t)num || content > KNIT_FLAG_LINE_MAX) {
        set_err(c->fs, "%s: %s:%d: line longer than %d bytes", c->fs->o.program, c->path, c->lineno,
                num - 3 < KNIT_FLAG_LINE_MAX ? num - 3 : KNIT_FLAG_LINE_MAX);
        c->rc = KNIT_EBADFLAG;
        return NULL;
    }
    memcpy(str, start, l);
    str[l] = '\0';
    return str;
}

static int file_handler(void *user, const char *section, const char *key, const char *value)
{
    struct file_ctx *c = user;
    knit_flags *fs = c->fs;
    if (c->rc < 0) return 0;
    char name[2 * KNIT_FLAG_NAME_MAX + 2];
    size_t o = 0;
    if (section && *section) o = (size_t)snprintf(name, sizeof name, "%s-", section);
    snprintf(name + (o < sizeof name ? o : sizeof name - 1), sizeof name - o, "%s", key);
    for (char *p = name; *p; p++)
        *p = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
    char where[512];
    snprintf(where, sizeof where, "%s:%d", c->path, c->lineno);
    knit_flag *f = find(fs, name);
    if (!f || f->builtin) {
        bool neg;
        const char *s = f ? NULL : suggest(fs, name, &neg);
        if (f)
            set_err(fs, "%s: flag --%s from %s: only allowed on the command line", fs->o.program,
                    name, where);
        else if (s)
            set_err(fs, "%s: unknown flag \"%s\" from %s (did you mean \"%s%s\"?)", fs->o.program,
                    name, where, neg ? "no-" : "", s);
        else
            set_err(fs, "%s: unknown flag \"%s\" from %s", fs->o.program, name, where);
        c->rc = KNIT_EBADFLAG;
        return 0;
    }
    /* Optional double quotes keep leading/trailing spaces. */
    size_t vl = strlen(value);
    char *v = NULL;
    if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
        v = strndup(value + 1, vl - 2);
        if (!v) {
            c->rc = KNIT_ENOMEM;
            return 0;
        }
    }
    int rc = assign(f, v ? v : value, KNIT_FLAG_SRC_FILE, where, where, c->epoch);
    free(v);
    if (rc < 0) {
        c->rc = rc;
        return 0;
    }
    return 1;
}

static int read_file(knit_flags *fs, const char *path, char **out, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -errno;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            size_t nc = cap ? cap * 2 : 8192;
            if (nc > (64u << 20)) {
                free(buf);
                fclose(fp);
                return KNIT_ELIMIT;
            }
            char *b = realloc(buf, nc);
            if (!b) {
                free(buf);
                fclose(fp);
                return KNIT_ENOMEM;
            }
            buf = b;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(fp) ? -EIO : 0;
    fclose(fp);
    if (err) {
        free(buf);
        return err;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    (void)fs;
    return 0;
}

static int load_file(knit_flags *fs, const char *path)
{
    char *data = NULL;
    size_t len = 0;
    int rc = read_file(fs, path, &data, &len);
    if (rc < 0) {
        set_err(fs, "%s: cannot read config file \"%s\" (from --config): %s", fs->o.program, path,
                rc == KNIT_ELIMIT ? "larger than 64 MiB" : knit_strerror(rc));
        return KNIT_EBADFLAG;
    }
    struct file_ctx c = {.fs = fs, .path = path, .data = data, .len = len, .epoch = ++fs->epoch};
    /* Debian's inih (r55) reads into a 200-byte stack buffer (its
     * ini_max_line / ini_use_stack globals do not change that in the
     * packaged build), so lines are limited to 197 bytes; file_reader
     * reports longer ones instead of letting inih split them. */
    int line = ini_parse_stream(file_reader, &c, file_handler, &c);
    free(data);
    if (c.rc < 0) return c.rc == KNIT_ENOMEM ? KNIT_ENOMEM : KNIT_EBADFLAG;
    if (line > 0) {
        set_err(fs, "%s: %s:%d: expected \"name = value\", a [section] or a # comment",
                fs->o.program, path, line);
        return KNIT_EBADFLAG;
    }
    if (line < 0) {
        set_err(fs, "%s: cannot read config file \"%s\": out of memory", fs->o.program, path);
        return KNIT_ENOMEM;
    }
    return 0;
}

/* ---- environment ----------------------------------------------------------------- */

static int load_env(knit_flags *fs, char **envp)
{
    if (!env_enabled(fs)) return 0;
    const char *prefix = fs->o.env_prefix;
    size_t pl = strlen(prefix);
    unsigned epoch = ++fs->epoch;
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, pl) != 0) continue;
        const char *eq = strchr(*e, '=');
        if (!eq || (size_t)(eq - *e) <= pl) continue;
        char var[KNIT_FLAG_NAME_MAX + 64];
        size_t vl = (size_t)(eq - *e);
        if (vl >= sizeof var) vl = sizeof var - 1;
        memcpy(var, *e, vl);
        var[vl] = '\0';
        char name[KNIT_FLAG_NAME_MAX + 64];
        size_t k = 0;
        for (const char *p = var + pl; *p && k + 1 < sizeof name; p++)
            name[k++] = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
        name[k] = '\0';
        knit_flag *f = find(fs, name);
        char where[sizeof var + 8];
        snprintf(where, sizeof where, "env %s", var);
        if (!f || f->builtin) {
            bool neg;
            const char *s = f ? NULL : suggest(fs, name, &neg);
            if (f) {
                set_err(fs, "%s: flag --%s from %s: only allowed on the command line",
                        fs->o.program, name, where);
            } else if (s) {
                char sug[KNIT_FLAG_NAME_MAX + 64];
                env_name(fs, s, sug, sizeof sug);
                set_err(fs, "%s: unknown flag %s from env (did you mean %s?)", fs->o.program, var,
                        sug);
            } else {
                set_err(fs, "%s: unknown flag %s from env", fs->o.program, var);
            }
            if (!f && fs->o.env_unknown_warn) {
                KNIT_WARN("flag", "%s (ignored)", fs->err);
                fs->err[0] = '\0';
                continue;
            }
            return KNIT_EBADFLAG;
        }
        int rc = assign(f, eq + 1, KNIT_FLAG_SRC_ENV, where, where, epoch);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ---- command line ---------------------------------------------------------------- */

static int add_arg(knit_flags *fs, const char *a)
{
    if (!fs->o.args_usage) {
        set_err(fs, "%s: unexpected argument \"%s\" from argv", fs->o.program, a);
        return KNIT_EBADFLAG;
    }
    char **n = realloc(fs->args, (size_t)(fs->nargs + 2) * sizeof *n);
    if (!n) return KNIT_ENOMEM;
    fs->args = n;
    if (!(n[fs->nargs] = strdup(a))) return KNIT_ENOMEM;
    n[++fs->nargs] = NULL;
    return 0;
}

/* Split "--name=value" / "-name" into NAME (copied to buf) and VALUE (NULL
 * when there is no '='). */
static void split_arg(const char *a, char *buf, size_t len, const char **value)
{
    a += a[1] == '-' ? 2 : 1;
    const char *eq = strchr(a, '=');
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
    if (nl >= len) nl = len - 1;
    memcpy(buf, a, nl);
    buf[nl] = '\0';
    *value = eq ? eq + 1 : NULL;
}

static void unknown_arg(knit_flags *fs, const char *name)
{
    bool neg;
    const char *s = suggest(fs, name, &neg);
    if (s)
        set_err(fs, "%s: unknown flag --%s from argv (did you mean --%s%s?)", fs->o.program, name,
                neg ? "no-" : "", s);
    else
        set_err(fs, "%s: unknown flag --%s from argv (see --help)", fs->o.program, name);
}

/* One pass over argv. PASS 0 only collects --config/--help/--version (so
 * files load first and help works even next to a bad flag); PASS 1 applies
 * everything else. */
static int scan_argv(knit_flags *fs, int argc, char **argv, int pass, unsigned epoch)
{
    bool flags_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (flags_done || a[0] != '-' || a[1] == '\0') {
            if (pass == 1) {
                int rc = add_arg(fs, a);
                if (rc < 0) return rc;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags_done = true;
            continue;
        }
        char name[KNIT_FLAG_NAME_MAX + 8];
        const char *value;
        split_arg(a, name, sizeof name, &value);
        if (strcmp(name, "h") == 0) strcpy(name, "help");
        bool negated = false;
        knit_flag *f = find(fs, name);
        if (!f && strncmp(name, "no-", 3) == 0) {
            knit_flag *g = find(fs, name + 3);
            if (g && g->def->type == KNIT_FLAG_BOOL) {
                f = g;
                negated = true;
            }
        }
        if (!f) {
            if (pass == 0) continue;
            unknown_arg(fs, name);
            return KNIT_EBADFLAG;
        }
        const char *text = value;
        if (f->def->type == KNIT_FLAG_BOOL) {
            if (negated && value) {
                if (pass == 0) continue;
                set_err(fs, "%s: flag --%s: takes no value (from argv)", fs->o.program, name);
                return KNIT_EBADFLAG;
            }
            if (!value) text = negated ? "false" : "true";
        } else if (!value) {
            if (i + 1 >= argc) {
                if (pass == 0) continue;
                char why[KNIT_FLAG_ERROR_MAX / 2];
                expected(f->def, why, sizeof why);
                set_err(fs, "%s: flag --%s: missing value from argv: expected %s", fs->o.program,
                        name, why);
                return KNIT_EBADFLAG;
            }
            text = argv[++i];
        }
        bool is_builtin = f->builtin;
        if ((pass == 0) != is_builtin) continue;
        if (is_builtin && strcmp(f->def->name, "print-config") != 0) {
            /* help/version act in pass 0, config files are read after it. */
        }
        int rc = assign(f, text, KNIT_FLAG_SRC_ARGV, "argv", NULL, epoch);
        if (rc < 0) return rc;
    }
    return 0;
}

int knit_flags_parse(knit_flags *fs, int argc, char **argv, char **envp)
{
    fs->err[0] = '\0';
    if (fs->parsed) {
        set_err(fs, "%s: flags parsed twice", fs->o.program);
        return KNIT_EBADFLAG;
    }
    fs->parsed = true;
    FILE *out = fs->o.out ? fs->o.out : stdout;
    FILE *err = fs->o.err ? fs->o.err : stderr;
    int rc = scan_argv(fs, argc, argv, 0, ++fs->epoch);
    if (rc == 0 && knit_flags_bool(fs, "help")) {
        knit_flags_write_help(fs, out);
        fflush(out);
        return KNIT_FLAGS_EXIT;
    }
    if (rc == 0 && knit_flags_bool(fs, "help-markdown")) {
        knit_flags_write_docs(fs, out);
        fflush(out);
        return KNIT_FLAGS_EXIT;
    }
    if (rc == 0 && knit_flags_bool(fs, "version")) {
        fprintf(out, "%s %s\n", fs->o.program, fs->o.version);
        fflush(out);
        return KNIT_FLAGS_EXIT;
    }
    size_t nconf = 0;
    const char *const *conf = rc == 0 ? knit_flags_list(fs, "config", &nconf) : NULL;
    if (nconf > KNIT_FLAG_CONFIG_MAX) {
        set_err(fs, "%s: flag --config: more than %d files (from argv)", fs->o.program,
                KNIT_FLAG_CONFIG_MAX);
        rc = KNIT_EBADFLAG;
    }
    for (size_t i = 0; rc == 0 && i < nconf; i++)
        rc = load_file(fs, conf[i]);
    if (rc == 0) rc = load_env(fs, envp ? envp : environ);
    if (rc == 0) rc = scan_argv(fs, argc, argv, 1, ++fs->epoch);
    if (rc < 0) {
        if (rc == KNIT_ENOMEM && !fs->err[0]) set_err(fs, "%s: out of memory", fs->o.program);
        fprintf(err, "%s\n", fs->err);
        fflush(err);
        return rc == KNIT_ENOMEM ? rc : KNIT_EBADFLAG;
    }
    if (knit_flags_bool(fs, "print-config")) {
        knit_flags_write_config(fs, out);
        fflush(out);
        return KNIT_FLAGS_EXIT;
    }
    return 0;
}

void knit_flags_parse_or_exit(knit_flags *fs, int argc, char **argv)
{
    int rc = knit_flags_parse(fs, argc, argv, NULL);
    if (rc == 0) return;
    knit_flags_free(fs);
    exit(rc == KNIT_FLAGS_EXIT ? 0 : 2);
}

/* ---- output ------------------------------------------------------------------------- */

static void metavar(const knit_flag_def *d, char *buf, size_t len)
{
    if (d->metavar) {
        snprintf(buf, len, "%s", d->metavar);
        return;
    }
    switch (d->type) {
    case KNIT_FLAG_STRING:
        snprintf(buf, len, "STRING");
        return;
    case KNIT_FLAG_INT64:
        snprintf(buf, len, "INT");
        return;
    case KNIT_FLAG_UINT64:
        snprintf(buf, len, "UINT");
        return;
    case KNIT_FLAG_DOUBLE:
        snprintf(buf, len, "FLOAT");
        return;
    case KNIT_FLAG_BOOL:
        buf[0] = '\0';
        return;
    case KNIT_FLAG_DURATION:
        snprintf(buf, len, "DURATION");
        return;
    case KNIT_FLAG_BYTES:
        snprintf(buf, len, "BYTES");
        return;
    case KNIT_FLAG_LIST:
        snprintf(buf, len, "LIST");
        return;
    case KNIT_FLAG_ENDPOINT:
        snprintf(buf, len, "ENDPOINT");
        return;
    case KNIT_FLAG_ENUM: {
        size_t o = 0;
        buf[0] = '\0';
        for (size_t i = 0; d->choices[i] && o < len; i++)
            o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? "|" : "", d->choices[i]);
        return;
    }
    }
    buf[0] = '\0';
}

void knit_flags_write_help(const knit_flags *fs, FILE *out)
{
    fprintf(out, "Usage: %s [flags]%s%s\n", fs->o.program, fs->o.args_usage ? " " : "",
            fs->o.args_usage ? fs->o.args_usage : "");
    if (fs->o.summary) fprintf(out, "\n%s\n", fs->o.summary);
    for (size_t g = 0; g < fs->ngroups; g++) {
        bool header = false;
        for (size_t i = 0; i < fs->n; i++) {
            const knit_flag *f = fs->flags[i];
            const knit_flag_def *d = f->def;
            if (f->group != g || (d->opts & KNIT_FLAG_HIDDEN)) continue;
            if (!header) {
                fprintf(out, "\n%s:\n", fs->groups[g].title);
                header = true;
            }
            char mv[256];
            metavar(d, mv, sizeof mv);
            if (d->type == KNIT_FLAG_BOOL)
                fprintf(out, "  --%s%s", f->builtin ? "" : "[no-]", d->name);
            else
                fprintf(out, "  --%s %s", d->name, mv);
            if (!f->builtin) {
                const char *def = d->def ? d->def : "";
                fprintf(out, " (%s", knit_flag_type_name(d->type));
                if (*def)
                    fprintf(out, ", default %s", def);
                else
                    fprintf(out, ", default \"\"");
                if (env_enabled(fs)) {
                    char env[KNIT_FLAG_NAME_MAX + 64];
                    env_name(fs, d->name, env, sizeof env);
                    fprintf(out, ", env %s", env);
                }
                if (d->opts & KNIT_FLAG_MUTABLE) fprintf(out, ", mutable");
                fputc(')', out);
            }
            fprintf(out, "\n      %s\n", d->help ? d->help : "");
        }
    }
}

const char *knit_flag_origin(const knit_flag *f)
{
    if (f->origin) return f->origin;
    switch (f->src) {
    case KNIT_FLAG_SRC_DEFAULT:
        return "default";
    case KNIT_FLAG_SRC_FILE:
        return "file";
    case KNIT_FLAG_SRC_ENV:
        return "env";
    case KNIT_FLAG_SRC_ARGV:
        return "argv";
    case KNIT_FLAG_SRC_RUNTIME:
        return "runtime";
    }
    return "unknown";
}

int knit_flag_format(const knit_flag *f, char *buf, size_t len)
{
    switch (f->def->type) {
    case KNIT_FLAG_STRING:
    case KNIT_FLAG_ENDPOINT:
        return snprintf(buf, len, "%s", f->v.s ? f->v.s : "");
    case KNIT_FLAG_INT64:
        return snprintf(buf, len, "%" PRId64, f->v.i);
    case KNIT_FLAG_UINT64:
        return snprintf(buf, len, "%" PRIu64, f->v.u);
    case KNIT_FLAG_DOUBLE:
        return snprintf(buf, len, "%.17g", f->v.d);
    case KNIT_FLAG_BOOL:
        return snprintf(buf, len, "%s", f->v.b ? "true" : "false");
    case KNIT_FLAG_DURATION:
        return knit_format_duration(f->v.i, buf, len);
    case KNIT_FLAG_BYTES:
        return knit_format_bytes(f->v.u, buf, len);
    case KNIT_FLAG_ENUM:
        return snprintf(buf, len, "%s", f->def->choices[f->v.e]);
    case KNIT_FLAG_LIST: {
        size_t o = 0;
        if (len) buf[0] = '\0';
        for (size_t i = 0; i < f->nlist; i++) {
            int k = snprintf(o < len ? buf + o : NULL, o < len ? len - o : 0, "%s%s", i ? "," : "",
                             f->list[i]);
            o += (size_t)k;
        }
        return (int)o;
    }
    }
    return 0;
}

/* Shortest "%g" form that reads back to the same double, for print-config. */
static void format_value(const knit_flag *f, char *buf, size_t len)
{
    if (f->def->type == KNIT_FLAG_DOUBLE) {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, len, "%.*g", prec, f->v.d);
            if (strtod(buf, NULL) == f->v.d) return;
        }
    }
    knit_flag_format(f, buf, len);
}

void knit_flags_write_config(const knit_flags *fs, FILE *out)
{
    fprintf(out, "# %s: effective configuration (value ; source)\n", fs->o.program);
    for (size_t g = 0; g < fs->ngroups; g++) {
        bool header = false;
        for (size_t i = 0; i < fs->n; i++) {
            const knit_flag *f = fs->flags[i];
            if (f->group != g || f->builtin) continue;
            if (!header) {
                fprintf(out, "\n# %s\n", fs->groups[g].title);
                header = true;
            }
            char small[256];
            int need = knit_flag_format(f, small, sizeof small);
            char *val = small;
            if (need >= (int)sizeof small) {
                val = malloc((size_t)need + 1);
                if (!val) continue;
                knit_flag_format(f, val, (size_t)need + 1);
            } else {
                format_value(f, small, sizeof small);
            }
            size_t vl = strlen(val);
            bool quote = vl == 0 || isspace((unsigned char)val[0]) ||
                         isspace((unsigned char)val[vl - 1]) || val[0] == '"';
            char env[KNIT_FLAG_NAME_MAX + 64] = "";
            fprintf(out, "%s = %s%s%s ; %s\n", f->def->name, quote ? "\"" : "", val,
                    quote ? "\"" : "", knit_flag_origin(f));
            (void)env;
            if (val != small) free(val);
        }
    }
}

static void md_cell(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') fputc('\\', out);
        fputc(*s, out);
    }
}

void knit_flags_write_docs(const knit_flags *fs, FILE *out)
{
    for (size_t g = 0; g < fs->ngroups; g++) {
        fprintf(out,
                "### %s\n\n| flag | type | default | env | description |\n"
                "|---|---|---|---|---|\n",
                fs->groups[g].title);
        for (size_t i = 0; i < fs->n; i++) {
            const knit_flag *f = fs->flags[i];
            const knit_flag_def *d = f->def;
            if (f->group != g || (d->opts & KNIT_FLAG_HIDDEN)) continue;
            char mv[256], env[KNIT_FLAG_NAME_MAX + 64] = "";
            metavar(d, mv, sizeof mv);
            if (env_enabled(fs) && !f->builtin) env_name(fs, d->name, env, sizeof env);
            fprintf(out, "| `--%s` | ", d->name);
            md_cell(out, d->type == KNIT_FLAG_ENUM ? mv : knit_flag_type_name(d->type));
            fprintf(out, " | `");
            md_cell(out, d->def && *d->def ? d->def : "\"\"");
            fprintf(out, "` | %s%s%s | ", *env ? "`" : "", env, *env ? "`" : "");
            md_cell(out, d->help);
            if (d->opts & KNIT_FLAG_MUTABLE) fprintf(out, " (mutable at run time)");
            fprintf(out, " |\n");
        }
        fputc('\n', out);
    }
}

/* ---- run-time access ---------------------------------------------------------------- */

const knit_flag *knit_flags_find(const knit_flags *fs, const char *name)
{
    return find(fs, name);
}

static const knit_flag *typed(const knit_flags *fs, const char *name, unsigned types)
{
    const knit_flag *f = find(fs, name);
    if (!f) {
        KNIT_WARN("flag", "no flag named %s", name);
        return NULL;
    }
    if (!(types & (1u << f->def->type))) {
        KNIT_WARN("flag", "flag --%s is a %s", name, knit_flag_type_name(f->def->type));
        return NULL;
    }
    return f;
}

#define T(x) (1u << KNIT_FLAG_##x)

const char *knit_flags_string(const knit_flags *fs, const char *name)
{
    const knit_flag *f = typed(fs, name, T(STRING) | T(ENDPOINT) | T(ENUM));
    if (!f) return "";
    if (f->def->type == KNIT_FLAG_ENUM) return f->def->choices[f->v.e];
    return f->v.s ? f->v.s : "";
}

int64_t knit_flags_int64(const knit_flags *fs, const char *name)
{
    const knit_flag *f = typed(fs, name, T(INT64) | T(DURATION));
    return f ? f->v.i : 0;
}

uint64_t knit_flags_uint64(const knit_flags *fs, const char *name)
{
    const knit_flag *f = typed(fs, name, T(UINT64) | T(BYTES));
    return f ? f->v.u : 0;
}

double knit_flags_double(const knit_flags *fs, const char *name)
{
    const knit_flag *f = typed(fs, name, T(DOUBLE));
    return f ? f->v.d : 0.0;
}

bool knit_flags_bool(const knit_flags *fs, const char *name)
{
    const knit_flag *f = typed(fs, name, T(BOOL));
    return f ? f->v.b : false;
}

knit_duration knit_flags_duration(const knit_flags *fs, const char *name)
{
    const knit_flag *f = typed(fs, name, T(DURATION));
    return f ? f->v.i : 0;
}

int knit_flags_enum(const knit_flags *fs, const char *name)
{
    const knit_flag *f = typed(fs, name, T(ENUM));
    return f ? f->v.e : 0;
}

const char *const *knit_flags_list(const knit_flags *fs, const char *name, size_t *n)
{
    static const char *const empty[] = {NULL};
    const knit_flag *f = typed(fs, name, T(LIST));
    if (n) *n = f ? f->nlist : 0;
    if (!f || !f->list) return empty;
    return (const char *const *)f->list;
}

int knit_flags_set(knit_flags *fs, const char *name, const char *value)
{
    fs->err[0] = '\0';
    knit_flag *f = find(fs, name);
    if (!f || f->builtin) {
        bool neg;
        const char *s = f ? NULL : suggest(fs, name, &neg);
        if (s)
            set_err(fs, "%s: unknown flag --%s (did you mean --%s?)", fs->o.program, name, s);
        else
            set_err(fs, "%s: unknown flag --%s", fs->o.program, name);
        return KNIT_ENOTFOUND;
    }
    if (!(f->def->opts & KNIT_FLAG_MUTABLE)) {
        set_err(fs, "%s: flag --%s cannot be changed at run time", fs->o.program, name);
        return KNIT_EPERM;
    }
    if (!value) value = "";
    int rc = assign(f, value, KNIT_FLAG_SRC_RUNTIME, "runtime", NULL, ++fs->epoch);
    if (rc < 0) return rc;
    KNIT_INFO("flag", "--%s set to \"%s\" at run time", name, value);
    if (f->def->changed) f->def->changed(fs, f, f->def->changed_arg);
    return 0;
}

void knit_flags_visit(const knit_flags *fs, knit_flag_visit_fn fn, void *arg)
{
    for (size_t i = 0; i < fs->n; i++)
        fn(fs->flags[i], arg);
}

const knit_flag_def *knit_flag_def_of(const knit_flag *f)
{
    return f->def;
}
const char *knit_flag_group(const knit_flag *f)
{
    return f->fs->groups[f->group].name;
}
knit_flag_source knit_flag_source_of(const knit_flag *f)
{
    return f->src;
}
