/* metrics.c — the metrics registry, lock-free series and Prometheus text
 * exposition.
 *
 * Owns: families (name, help, type, label names, bounds) and their series,
 * all append-only until knit_metrics_free.
 *
 * Threads: any thread updates a series with relaxed atomics only; creation
 * of families/series and exposition take `mu`. Series are published on a
 * singly linked list with a release store, so an exposition that walks the
 * list never sees a half-built series.
 *
 * Striping: a counter or histogram holds KNIT_METRICS_SHARDS slots, each on
 * its own cache line. A thread picks its slot once (round-robin over the
 * threads that ever touched a metric) and adds there with a relaxed
 * fetch_add — still atomic, because with more threads than slots two share
 * one. Reading sums the slots, so a value read during updates is some value
 * between the start and end of the read: fine for monotonic counters.
 */
#include "knit/metrics.h"
#include "knit/error.h"
#include "metrics/internal.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CACHELINE 64

typedef struct shard {
    _Atomic uint64_t v;
    char pad[CACHELINE - sizeof(uint64_t)];
} shard;

struct knit_counter {
    shard s[KNIT_METRICS_SHARDS];
};

struct knit_gauge {
    _Atomic uint64_t bits; /* a double's bits */
};

/* Histogram shard: `stride` uint64 words = [count per bucket (n+1)] [sum bits],
 * rounded up to whole cache lines. */
struct knit_histogram {
    const struct knit_metric *f;
    size_t stride;
    _Atomic uint64_t *w; /* KNIT_METRICS_SHARDS * stride, cache-line aligned */
};

typedef struct series {
    struct series *_Atomic next;
    char **values; /* label values, f->nlabels of them */
    union {
        struct knit_counter *c;
        struct knit_gauge *g;
        struct knit_histogram *h;
        void *p;
    } u;
} series;

struct knit_metric {
    knit_metrics *m;
    struct knit_metric *next;
    knit_metric_type type;
    char *name;
    char *help;
    size_t nlabels;
    char *labels[KNIT_METRICS_MAX_LABELS];
    char *labels_text; /* as registered, for the sameness check */
    double *bounds;
    size_t nbounds;
    series *_Atomic head;
    series *tail;
};

typedef struct collector {
    knit_metrics_collect_fn fn;
    void *arg;
    void *key;  /* owned collectors: what they watch (a reactor, a pool) */
    bool owned; /* arg is freed with the collector */
    struct collector *next;
} collector;

struct knit_metrics {
    pthread_mutex_t mu;         /* families, series creation, exposition */
    pthread_mutex_t collect_mu; /* collectors (run without mu held) */
    struct knit_metric *first, *last;
    collector *collectors;
};

/* ---- shard selection ----------------------------------------------------------- */

static _Atomic unsigned next_shard;
static _Thread_local unsigned my_shard; /* 0 = not chosen yet, else index + 1 */

static inline unsigned shard_index(void)
{
    unsigned s = my_shard;
    if (__builtin_expect(s == 0, 0)) {
        s = (atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) &
             (KNIT_METRICS_SHARDS - 1)) +
            1;
        my_shard = s;
    }
    return s - 1;
}

/* ---- names ---------------------------------------------------------------------------- */

static bool valid_metric_name(const char *n)
{
    if (!n || !*n || strlen(n) > KNIT_METRICS_NAME_MAX) return false;
    if (!(isalpha((unsigned char)n[0]) || n[0] == '_' || n[0] == ':')) return false;
    for (const char *p = n; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == ':')) return false;
    for (const char *p = n; *p; p++)
        if ((unsigned char)*p > 127) return false;
    return true;
}

static bool valid_label_name(const char *n, size_t len)
{
    if (len == 0 || len > KNIT_METRICS_NAME_MAX) return false;
    if (!(isalpha((unsigned char)n[0]) || n[0] == '_')) return false;
    if (len >= 2 && n[0] == '_' && n[1] == '_') return false;
    for (size_t i = 0; i < len; i++)
        if (!(isalnum((unsigned char)n[i]) || n[i] == '_') || (unsigned char)n[i] > 127)
            return false;
    return true;
}

/* ---- registry -------------------------------------------------------------------------- */

int knit_metrics_new(knit_metrics **out)
{
    knit_metrics *m = calloc(1, sizeof *m);
    if (!m) return KNIT_ENOMEM;
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->collect_mu, NULL);
    *out = m;
    return 0;
}

static void free_series(knit_metric *f, series *s)
{
    for (size_t i = 0; s->values && i < f->nlabels; i++) /* NULL: new_series failed early */
        free(s->values[i]);
    free(s->values);
    if (f->type == KNIT_METRIC_HISTOGRAM && s->u.h) free(s->u.h->w);
    free(s->u.p);
    free(s);
}

static void free_family(knit_metric *f)
{
    series *s = atomic_load_explicit(&f->head, memory_order_relaxed);
    while (s) {
        series *n = atomic_load_explicit(&s->next, memory_order_relaxed);
        free_series(f, s);
        s = n;
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->labels_text);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void knit_metrics_free(knit_metrics *m)
{
    if (!m) return;
    knit_metric *f = m->first;
    while (f) {
        knit_metric *n = f->next;
        free_family(f);
        f = n;
    }
    collector *c = m->collectors;
    while (c) {
        collector *n = c->next;
        if (c->owned) free(c->arg);
        free(c);
        c = n;
    }
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->collect_mu);
    free(m);
}

static series *new_series(knit_metric *f, const char *const *values);

static bool same_bounds(const knit_metric *f, const double *b, size_t n)
{
    if (f->nbounds != n) return false;
    for (size_t i = 0; i < n; i++)
        if (f->bounds[i] != b[i]) return false;
    return true;
}

static int add_family(knit_metrics *m, knit_metric_type type, const char *name, const char *help,
                      const char *labels, const double *bounds, size_t nbounds, knit_metric **out)
{
    if (!valid_metric_name(name)) return KNIT_EINVAL;
    if (!labels) labels = "";
    if (type == KNIT_METRIC_HISTOGRAM) {
        if (!bounds || nbounds == 0 || nbounds > KNIT_METRICS_MAX_BUCKETS) return KNIT_EINVAL;
        for (size_t i = 0; i < nbounds; i++) {
            if (!isfinite(bounds[i])) return KNIT_EINVAL;
            if (i && !(bounds[i] > bounds[i - 1])) return KNIT_EINVAL;
        }
    }
    knit_metric *f = calloc(1, sizeof *f);
    if (!f) return KNIT_ENOMEM;
    f->m = m;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->labels_text = strdup(labels);
    if (!f->name || !f->help || !f->labels_text) goto nomem;
    for (const char *p = labels; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l && isspace((unsigned char)*p))
            p++, l--;
        while (l && isspace((unsigned char)p[l - 1]))
            l--;
        if (!valid_label_name(p, l) || f->nlabels == KNIT_METRICS_MAX_LABELS ||
            (type == KNIT_METRIC_HISTOGRAM && l == 2 && memcmp(p, "le", 2) == 0)) {
            free_family(f);
            return KNIT_EINVAL;
        }
        if (!(f->labels[f->nlabels++] = strndup(p, l))) goto nomem;
        for (size_t i = 0; i + 1 < f->nlabels; i++)
            if (strcmp(f->labels[i], f->labels[f->nlabels - 1]) == 0) {
                free_family(f);
                return KNIT_EINVAL;
            }
        if (!e) break;
        p = e + 1;
        if (!*p) { /* trailing comma */
            free_family(f);
            return KNIT_EINVAL;
        }
    }
    if (type == KNIT_METRIC_HISTOGRAM) {
        f->bounds = malloc(nbounds * sizeof *bounds);
        if (!f->bounds) goto nomem;
        memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
        f->nbounds = nbounds;
    }

    pthread_mutex_lock(&m->mu);
    for (knit_metric *g = m->first; g; g = g->next) {
        if (strcmp(g->name, name) != 0) continue;
        bool same = g->type == type && g->nlabels == f->nlabels &&
                    (type != KNIT_METRIC_HISTOGRAM || same_bounds(g, bounds, nbounds));
        for (size_t i = 0; same && i < f->nlabels; i++)
            same = strcmp(g->labels[i], f->labels[i]) == 0;
        pthread_mutex_unlock(&m->mu);
        free_family(f);
        if (!same) return KNIT_EEXIST;
        if (out) *out = g;
        return 0;
    }
    /* An unlabelled family has its one series from the start, so it is
     * exposed (as 0) before the first update. */
    if (f->nlabels == 0 && !new_series(f, NULL)) {
        pthread_mutex_unlock(&m->mu);
        free_family(f);
        return KNIT_ENOMEM;
    }
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    pthread_mutex_unlock(&m->mu);
    if (out) *out = f;
    return 0;
nomem:
    free_family(f);
    return KNIT_ENOMEM;
}

int knit_metrics_counter(knit_metrics *m, const char *name, const char *help, const char *labels,
                         knit_metric **out)
{
    return add_family(m, KNIT_METRIC_COUNTER, name, help, labels, NULL, 0, out);
}

int knit_metrics_gauge(knit_metrics *m, const char *name, const char *help, const char *labels,
                       knit_metric **out)
{
    return add_family(m, KNIT_METRIC_GAUGE, name, help, labels, NULL, 0, out);
}

int knit_metrics_histogram(knit_metrics *m, const char *name, const char *help, const char *labels,
                           const double *bounds, size_t n, knit_metric **out)
{
    return add_family(m, KNIT_METRIC_HISTOGRAM, name, help, labels, bounds, n, out);
}

/* ---- series ------------------------------------------------------------------------- */

/* Called with m->mu held (or before the family is published). */
static series *new_series(knit_metric *f, const char *const *values)
{
    series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (f->nlabels) {
        s->values = calloc(f->nlabels, sizeof *s->values);
        if (!s->values) goto fail;
        for (size_t i = 0; i < f->nlabels; i++)
            if (!(s->values[i] = strdup(values[i] ? values[i] : ""))) goto fail;
    }
    switch (f->type) {
    case KNIT_METRIC_COUNTER:
        s->u.c = aligned_alloc(CACHELINE, sizeof(struct knit_counter));
        if (!s->u.c) goto fail;
        for (size_t i = 0; i < KNIT_METRICS_SHARDS; i++)
            atomic_init(&s->u.c->s[i].v, 0);
        break;
    case KNIT_METRIC_GAUGE:
        s->u.g = calloc(1, sizeof(struct knit_gauge));
        if (!s->u.g) goto fail;
        atomic_init(&s->u.g->bits, 0); /* +0.0 */
        break;
    case KNIT_METRIC_HISTOGRAM: {
        s->u.h = calloc(1, sizeof(struct knit_histogram));
        if (!s->u.h) goto fail;
        size_t words = f->nbounds + 2; /* buckets incl. +Inf, sum */
        size_t per_line = CACHELINE / sizeof(uint64_t);
        size_t stride = (words + per_line - 1) / per_line * per_line;
        s->u.h->f = f;
        s->u.h->stride = stride;
        s->u.h->w = aligned_alloc(CACHELINE, KNIT_METRICS_SHARDS * stride * sizeof(uint64_t));
        if (!s->u.h->w) goto fail;
        for (size_t i = 0; i < KNIT_METRICS_SHARDS * stride; i++)
            atomic_init(&s->u.h->w[i], 0);
        break;
    }
    }
    atomic_init(&s->next, NULL);
    if (f->tail)
        atomic_store_explicit(&f->tail->next, s, memory_order_release);
    else
        atomic_store_explicit(&f->head, s, memory_order_release);
    f->tail = s;
    return s;
fail:
    free_series(f, s);
    return NULL;
}

static void *get_series(knit_metric *f, knit_metric_type type, const char *const *values)
{
    if (!f || f->type != type) return NULL;
    knit_metrics *m = f->m;
    pthread_mutex_lock(&m->mu);
    series *s = atomic_load_explicit(&f->head, memory_order_relaxed);
    for (; s; s = atomic_load_explicit(&s->next, memory_order_relaxed)) {
        size_t i = 0;
        for (; i < f->nlabels; i++)
            if (strcmp(s->values[i], values[i] ? values[i] : "") != 0) break;
        if (i == f->nlabels) break;
    }
    if (!s) {
        /* Values must be as many as the labels. */
        for (size_t i = 0; f->nlabels && i < f->nlabels; i++)
            if (!values) {
                pthread_mutex_unlock(&m->mu);
                return NULL;
            }
        s = new_series(f, values);
    }
    pthread_mutex_unlock(&m->mu);
    return s ? s->u.p : NULL;
}

knit_counter *knit_counter_get(knit_metric *f, const char *const *values)
{
    return get_series(f, KNIT_METRIC_COUNTER, values);
}

knit_gauge *knit_gauge_get(knit_metric *f, const char *const *values)
{
    return get_series(f, KNIT_METRIC_GAUGE, values);
}

knit_histogram *knit_histogram_get(knit_metric *f, const char *const *values)
{
    return get_series(f, KNIT_METRIC_HISTOGRAM, values);
}

knit_counter *knit_counter_new(knit_metrics *m, const char *name, const char *help)
{
    knit_metric *f;
    if (knit_metrics_counter(m, name, help, NULL, &f) < 0) return NULL;
    return knit_counter_get(f, NULL);
}

knit_gauge *knit_gauge_new(knit_metrics *m, const char *name, const char *help)
{
    knit_metric *f;
    if (knit_metrics_gauge(m, name, help, NULL, &f) < 0) return NULL;
    return knit_gauge_get(f, NULL);
}

knit_histogram *knit_histogram_new(knit_metrics *m, const char *name, const char *help,
                                   const double *bounds, size_t n)
{
    knit_metric *f;
    if (knit_metrics_histogram(m, name, help, NULL, bounds, n, &f) < 0) return NULL;
    return knit_histogram_get(f, NULL);
}

/* ---- updates ------------------------------------------------------------------------- */

static inline uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void knit_counter_add(knit_counter *c, uint64_t n)
{
    if (!c) return; /* a series that could not be created (out of memory) */
    atomic_fetch_add_explicit(&c->s[shard_index()].v, n, memory_order_relaxed);
}

uint64_t knit_counter_value(const knit_counter *c)
{
    uint64_t t = 0;
    if (!c) return 0;
    for (size_t i = 0; i < KNIT_METRICS_SHARDS; i++)
        t += atomic_load_explicit(&((struct knit_counter *)c)->s[i].v, memory_order_relaxed);
    return t;
}

void knit_counter_set_total(knit_counter *c, uint64_t total)
{
    if (!c) return;
    atomic_store_explicit(&c->s[0].v, total, memory_order_relaxed);
    for (size_t i = 1; i < KNIT_METRICS_SHARDS; i++)
        atomic_store_explicit(&c->s[i].v, 0, memory_order_relaxed);
}

void knit_gauge_set(knit_gauge *g, double v)
{
    if (!g) return;
    atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

static void add_double(_Atomic uint64_t *w, double d)
{
    uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(w, &old, dbits(bitsd(old) + d),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

void knit_gauge_add(knit_gauge *g, double d)
{
    if (!g) return;
    add_double(&g->bits, d);
}

double knit_gauge_value(const knit_gauge *g)
{
    if (!g) return 0;
    return bitsd(atomic_load_explicit(&((knit_gauge *)g)->bits, memory_order_relaxed));
}

void knit_histogram_observe(knit_histogram *h, double v)
{
    if (!h) return;
    const knit_metric *f = h->f;
    size_t n = f->nbounds, b;
    if (n <= 8) {
        for (b = 0; b < n && v > f->bounds[b]; b++) {
        }
    } else { /* first bound >= v */
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (v > f->bounds[mid])
                lo = mid + 1;
            else
                hi = mid;
        }
        b = lo;
    }
    /* NaN is greater than no bound: count it in +Inf only (and the sum
     * becomes NaN, as in Prometheus' own clients). */
    if (isnan(v)) b = n;
    _Atomic uint64_t *w = h->w + shard_index() * h->stride;
    atomic_fetch_add_explicit(&w[b], 1, memory_order_relaxed);
    add_double(&w[n + 1], v);
}

void knit_histogram_set_counts(knit_histogram *h, const uint64_t *counts, double sum)
{
    if (!h) return;
    size_t n = h->f->nbounds;
    for (size_t k = 0; k < KNIT_METRICS_SHARDS; k++)
        for (size_t b = 0; b <= n + 1; b++)
            atomic_store_explicit(&h->w[k * h->stride + b], 0, memory_order_relaxed);
    for (size_t b = 0; b <= n; b++)
        atomic_store_explicit(&h->w[b], counts[b], memory_order_relaxed);
    atomic_store_explicit(&h->w[n + 1], dbits(sum), memory_order_relaxed);
}

uint64_t knit_histogram_count(const knit_histogram *h)
{
    uint64_t t = 0;
    if (!h) return 0;
    size_t n = h->f->nbounds;
    for (size_t s = 0; s < KNIT_METRICS_SHARDS; s++)
        for (size_t b = 0; b <= n; b++)
            t += atomic_load_explicit(&h->w[s * h->stride + b], memory_order_relaxed);
    return t;
}

double knit_histogram_sum(const knit_histogram *h)
{
    double t = 0;
    if (!h) return 0;
    size_t n = h->f->nbounds;
    for (size_t s = 0; s < KNIT_METRICS_SHARDS; s++)
        t += bitsd(atomic_load_explicit(&h->w[s * h->stride + n + 1], memory_order_relaxed));
    return t;
}

/* ---- collectors ----------------------------------------------------------------------- */

static int add_collector(knit_metrics *m, knit_metrics_collect_fn fn, void *arg, void *key,
                         bool owned)
{
    collector *c = calloc(1, sizeof *c);
    if (!c) return KNIT_ENOMEM;
    c->fn = fn;
    c->arg = arg;
    c->key = key;
    c->owned = owned;
    pthread_mutex_lock(&m->collect_mu);
    collector **pp = &m->collectors;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    pthread_mutex_unlock(&m->collect_mu);
    return 0;
}

int knit_metrics_add_collector(knit_metrics *m, knit_metrics_collect_fn fn, void *arg)
{
    return add_collector(m, fn, arg, NULL, false);
}

int knit__metrics_add_owned(knit_metrics *m, knit_metrics_collect_fn fn, void *state, void *key)
{
    return add_collector(m, fn, state, key, true);
}

/* Remove the first collector matching FN and (owned ? key : arg). */
static int remove_collector(knit_metrics *m, knit_metrics_collect_fn fn, void *what, bool owned)
{
    pthread_mutex_lock(&m->collect_mu);
    for (collector **pp = &m->collectors; *pp; pp = &(*pp)->next) {
        collector *c = *pp;
        if (c->fn == fn && c->owned == owned && (owned ? c->key : c->arg) == what) {
            *pp = c->next;
            pthread_mutex_unlock(&m->collect_mu);
            if (c->owned) free(c->arg);
            free(c);
            return 0;
        }
    }
    pthread_mutex_unlock(&m->collect_mu);
    return KNIT_ENOTFOUND;
}

int knit_metrics_remove_collector(knit_metrics *m, knit_metrics_collect_fn fn, void *arg)
{
    return remove_collector(m, fn, arg, false);
}

int knit__metrics_remove_owned(knit_metrics *m, knit_metrics_collect_fn fn, void *key)
{
    return remove_collector(m, fn, key, true);
}

/* ---- exposition ------------------------------------------------------------------------ */

/* Shortest text that reads back to the same double; Prometheus spellings
 * for the infinities and NaN. */
static void fmt_double(double d, char *buf, size_t len)
{
    if (isnan(d)) {
        snprintf(buf, len, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, len, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) return;
    }
}

static void put_escaped(FILE *o, const char *s, bool quote_too)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", o);
        else if (*s == '\n')
            fputs("\\n", o);
        else if (quote_too && *s == '"')
            fputs("\\\"", o);
        else
            fputc(*s, o);
    }
}

/* {a="x",b="y"[,le="..."]} or nothing. */
static void put_labels(FILE *o, const knit_metric *f, const series *s, const char *le)
{
    if (f->nlabels == 0 && !le) return;
    fputc('{', o);
    for (size_t i = 0; i < f->nlabels; i++) {
        fprintf(o, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_escaped(o, s->values[i], true);
        fputc('"', o);
    }
    if (le) fprintf(o, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    fputc('}', o);
}

static const char *type_name(knit_metric_type t)
{
    switch (t) {
    case KNIT_METRIC_COUNTER:
        return "counter";
    case KNIT_METRIC_GAUGE:
        return "gauge";
    case KNIT_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

static void write_family(FILE *o, const knit_metric *f)
{
    fprintf(o, "# HELP %s ", f->name);
    put_escaped(o, f->help, false);
    fprintf(o, "\n# TYPE %s %s\n", f->name, type_name(f->type));
    char num[64];
    for (series *s = atomic_load_explicit(&((knit_metric *)f)->head, memory_order_acquire); s;
         s = atomic_load_explicit(&s->next, memory_order_acquire)) {
        switch (f->type) {
        case KNIT_METRIC_COUNTER:
            fputs(f->name, o);
            put_labels(o, f, s, NULL);
            fprintf(o, " %" PRIu64 "\n", knit_counter_value(s->u.c));
            break;
        case KNIT_METRIC_GAUGE:
            fputs(f->name, o);
            put_labels(o, f, s, NULL);
            fmt_double(knit_gauge_value(s->u.g), num, sizeof num);
            fprintf(o, " %s\n", num);
            break;
        case KNIT_METRIC_HISTOGRAM: {
            const knit_histogram *h = s->u.h;
            uint64_t cum = 0;
            double sum = 0;
            for (size_t b = 0; b <= f->nbounds; b++) {
                for (size_t k = 0; k < KNIT_METRICS_SHARDS; k++)
                    cum += atomic_load_explicit(&h->w[k * h->stride + b], memory_order_relaxed);
                if (b < f->nbounds)
                    fmt_double(f->bounds[b], num, sizeof num);
                else
                    snprintf(num, sizeof num, "+Inf");
                fprintf(o, "%s_bucket", f->name);
                put_labels(o, f, s, num);
                fprintf(o, " %" PRIu64 "\n", cum);
            }
            for (size_t k = 0; k < KNIT_METRICS_SHARDS; k++)
                sum += bitsd(atomic_load_explicit(&h->w[k * h->stride + f->nbounds + 1],
                                                  memory_order_relaxed));
            fmt_double(sum, num, sizeof num);
            fprintf(o, "%s_sum", f->name);
            put_labels(o, f, s, NULL);
            fprintf(o, " %s\n", num);
            /* _count equals the +Inf bucket by definition (same snapshot). */
            fprintf(o, "%s_count", f->name);
            put_labels(o, f, s, NULL);
            fprintf(o, " %" PRIu64 "\n", cum);
            break;
        }
        }
    }
}

static void run_collectors(knit_metrics *m)
{
    pthread_mutex_lock(&m->collect_mu);
    for (collector *c = m->collectors; c; c = c->next)
        c->fn(m, c->arg);
    pthread_mutex_unlock(&m->collect_mu);
}

size_t knit_metrics_visit(knit_metrics *m, knit_metrics_visit_fn fn, void *arg)
{
    run_collectors(m);
    size_t n = 0;
    uint64_t cum[KNIT_METRICS_MAX_BUCKETS + 1];
    pthread_mutex_lock(&m->mu);
    for (knit_metric *f = m->first; f; f = f->next) {
        for (series *s = atomic_load_explicit(&f->head, memory_order_acquire); s;
             s = atomic_load_explicit(&s->next, memory_order_acquire)) {
            knit_metric_sample x = {
                .name = f->name,
                .help = f->help,
                .type = f->type,
                .nlabels = f->nlabels,
                .label_names = (const char *const *)f->labels,
                .label_values = (const char *const *)s->values,
            };
            switch (f->type) {
            case KNIT_METRIC_COUNTER:
                x.value = (double)knit_counter_value(s->u.c);
                break;
            case KNIT_METRIC_GAUGE:
                x.value = knit_gauge_value(s->u.g);
                break;
            case KNIT_METRIC_HISTOGRAM: {
                const knit_histogram *h = s->u.h;
                uint64_t c = 0;
                for (size_t b = 0; b <= f->nbounds; b++) {
                    for (size_t k = 0; k < KNIT_METRICS_SHARDS; k++)
                        c += atomic_load_explicit(&h->w[k * h->stride + b], memory_order_relaxed);
                    cum[b] = c;
                }
                x.nbounds = f->nbounds;
                x.bounds = f->bounds;
                x.cumulative = cum;
                x.count = c;
                x.sum = knit_histogram_sum(h);
                x.value = (double)c;
                break;
            }
            }
            fn(&x, arg);
            n++;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return n;
}

int knit_metrics_write(knit_metrics *m, FILE *o)
{
    pthread_mutex_lock(&m->collect_mu);
    for (collector *c = m->collectors; c; c = c->next)
        c->fn(m, c->arg);
    pthread_mutex_unlock(&m->collect_mu);
    pthread_mutex_lock(&m->mu);
    for (const knit_metric *f = m->first; f; f = f->next)
        write_family(o, f);
    pthread_mutex_unlock(&m->mu);
    return ferror(o) ? KNIT_EIO : 0;
}

int knit_metrics_expose(knit_metrics *m, char **out, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *o = open_memstream(&buf, &n);
    if (!o) return KNIT_ENOMEM;
    int rc = knit_metrics_write(m, o);
    if (fclose(o) != 0 && rc == 0) rc = KNIT_ENOMEM;
    if (rc < 0) {
        free(buf);
        return rc == KNIT_EIO ? KNIT_ENOMEM : rc;
    }
    *out = buf;
    if (len) *len = n;
    return 0;
}
