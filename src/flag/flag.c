/* flag.c — the flag set: registration, values, the order of the sources,
 * run-time reads and writes. The sources themselves (source_file.c,
 * source_env.c, source_argv.c) and the output (output.c: help,
 * print-config, docs; suggest.c: "did you mean") are files of their own;
 * flag_int.h holds what they share.
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
 * take that one path (knit__flag_assign) — and strings that were replaced
 * are parked in `retired` until the set is freed, so pointers handed out
 * stay valid.
 */
#include "flag/flag_int.h"

#include "knit/error.h"
#include "knit/log.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

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

void knit__flag_err(knit_flags *fs, const char *fmt, ...)
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

knit_flag *knit__flag_find(const knit_flags *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->flags[i]->def->name, name) == 0) return fs->flags[i];
    return NULL;
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

void knit__flag_expected(const knit_flag_def *d, char *buf, size_t len)
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
        knit__flag_expected(d, why, whylen);
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
            knit__flag_expected(d, why, whylen);
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
int knit__flag_assign(knit_flag *f, const char *text, knit_flag_source src, const char *where,
                      const char *origin, unsigned epoch)
{
    knit_flags *fs = f->fs;
    struct value v;
    char why[KNIT_FLAG_ERROR_MAX / 2];
    int rc = parse_value(f->def, text, &v, why, sizeof why);
    if (rc == KNIT_ENOMEM) {
        knit__flag_err(fs, "%s: out of memory", fs->o.program);
        return rc;
    }
    if (rc < 0) {
        knit__flag_err(fs, "%s: flag --%s: bad value \"%s\" from %s: expected %s", fs->o.program,
                       f->def->name, text, where, why);
        return KNIT_EBADFLAG;
    }
    rc = commit(f, text, &v, src, origin, epoch);
    if (rc < 0) knit__flag_err(fs, "%s: out of memory", fs->o.program);
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
    struct knit__flag_group *g = realloc(fs->groups, (fs->ngroups + 1) * sizeof *g);
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
            knit__flag_err(fs, "%s: flag \"%s\" in group %s: invalid name", fs->o.program,
                           d->name ? d->name : "(null)", group);
            return KNIT_EBADFLAG;
        }
        if (knit__flag_find(fs, d->name)) {
            knit__flag_err(fs, "%s: flag --%s in group %s: already defined", fs->o.program, d->name,
                           group);
            return KNIT_EBADFLAG;
        }
        if (d->type == KNIT_FLAG_ENUM && (!d->choices || !d->choices[0])) {
            knit__flag_err(fs, "%s: flag --%s: enum without choices", fs->o.program, d->name);
            return KNIT_EBADFLAG;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(defs[j].name, d->name) == 0) {
                knit__flag_err(fs, "%s: flag --%s in group %s: already defined", fs->o.program,
                               d->name, group);
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
                knit__flag_err(fs, "%s: flag --%s: enum needs a default", fs->o.program,
                               defs[i].name);
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
            knit__flag_err(fs, "%s: flag --%s: bad default \"%s\": expected %s", fs->o.program,
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

/* ---- parsing: the sources in precedence order -------------------------------------- */

int knit_flags_parse(knit_flags *fs, int argc, char **argv, char **envp)
{
    fs->err[0] = '\0';
    if (fs->parsed) {
        knit__flag_err(fs, "%s: flags parsed twice", fs->o.program);
        return KNIT_EBADFLAG;
    }
    fs->parsed = true;
    FILE *out = fs->o.out ? fs->o.out : stdout;
    FILE *err = fs->o.err ? fs->o.err : stderr;
    int rc = knit__flag_scan_argv(fs, argc, argv, 0, ++fs->epoch);
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
        knit__flag_err(fs, "%s: flag --config: more than %d files (from argv)", fs->o.program,
                       KNIT_FLAG_CONFIG_MAX);
        rc = KNIT_EBADFLAG;
    }
    for (size_t i = 0; rc == 0 && i < nconf; i++)
        rc = knit__flag_load_file(fs, conf[i]);
    if (rc == 0) rc = knit__flag_load_env(fs, envp ? envp : environ);
    if (rc == 0) rc = knit__flag_scan_argv(fs, argc, argv, 1, ++fs->epoch);
    if (rc < 0) {
        if (rc == KNIT_ENOMEM && !fs->err[0])
            knit__flag_err(fs, "%s: out of memory", fs->o.program);
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

/* ---- run-time access ---------------------------------------------------------------- */

const knit_flag *knit_flags_find(const knit_flags *fs, const char *name)
{
    return knit__flag_find(fs, name);
}

static const knit_flag *typed(const knit_flags *fs, const char *name, unsigned types)
{
    const knit_flag *f = knit__flag_find(fs, name);
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
    knit_flag *f = knit__flag_find(fs, name);
    if (!f || f->builtin) {
        bool neg;
        const char *s = f ? NULL : knit__flag_suggest(fs, name, &neg);
        if (s)
            knit__flag_err(fs, "%s: unknown flag --%s (did you mean --%s?)", fs->o.program, name,
                           s);
        else
            knit__flag_err(fs, "%s: unknown flag --%s", fs->o.program, name);
        return KNIT_ENOTFOUND;
    }
    if (!(f->def->opts & KNIT_FLAG_MUTABLE)) {
        knit__flag_err(fs, "%s: flag --%s cannot be changed at run time", fs->o.program, name);
        return KNIT_EPERM;
    }
    if (!value) value = "";
    int rc = knit__flag_assign(f, value, KNIT_FLAG_SRC_RUNTIME, "runtime", NULL, ++fs->epoch);
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
