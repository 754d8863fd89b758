/* rows.c — knit_db_rows: a result set copied out of the database into one
 * object, and its JSON form.
 *
 * Layout: nrows * ncols cells (type + an int64/double, or an offset and a
 * length into `data`, where text and blobs are stored back to back, each
 * NUL-terminated). Offsets rather than pointers, so that growing `data`
 * moves nothing a reader holds: readers get pointers only once the rows
 * are complete. Built by one thread, then read-only: any thread may read.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "db/db_int.h"
#include "knit/error.h"

typedef struct cell {
    uint8_t type;
    uint32_t len; /* text/blob */
    union {
        int64_t i;
        double f;
        size_t off;
    } v;
} cell;

struct knit_db_rows {
    size_t nrows, ncols, cap; /* cap: rows allocated */
    int64_t changes, last_id;
    size_t *name_off; /* ncols offsets into data (SIZE_MAX: none) */
    cell *cells;
    char *data;
    size_t dlen, dcap;
};

knit_db_rows *knit__rows_new(size_t ncols)
{
    knit_db_rows *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->ncols = ncols;
    if (ncols) {
        r->name_off = malloc(ncols * sizeof *r->name_off);
        if (!r->name_off) {
            free(r);
            return NULL;
        }
        for (size_t i = 0; i < ncols; i++)
            r->name_off[i] = SIZE_MAX;
    }
    return r;
}

void knit_db_rows_free(knit_db_rows *r)
{
    if (!r) return;
    free(r->name_off);
    free(r->cells);
    free(r->data);
    free(r);
}

/* Append LEN bytes + NUL to data; the offset in *off. */
static int store(knit_db_rows *r, const void *p, size_t len, size_t *off)
{
    if (len > UINT32_MAX - 1) return KNIT_ENOMEM;
    if (r->dcap - r->dlen < len + 1) {
        size_t ncap = r->dcap ? r->dcap : 256;
        while (ncap - r->dlen < len + 1)
            ncap *= 2;
        char *d = realloc(r->data, ncap);
        if (!d) return KNIT_ENOMEM;
        r->data = d;
        r->dcap = ncap;
    }
    if (len) memcpy(r->data + r->dlen, p, len);
    r->data[r->dlen + len] = 0;
    *off = r->dlen;
    r->dlen += len + 1;
    return 0;
}

int knit__rows_set_name(knit_db_rows *r, size_t col, const char *name)
{
    if (col >= r->ncols || !name) return 0;
    return store(r, name, strlen(name), &r->name_off[col]);
}

int knit__rows_add_row(knit_db_rows *r)
{
    if (r->ncols == 0) {
        r->nrows++;
        return 0;
    }
    if (r->nrows == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 4;
        cell *c = realloc(r->cells, ncap * r->ncols * sizeof *c);
        if (!c) return KNIT_ENOMEM;
        r->cells = c;
        r->cap = ncap;
    }
    memset(&r->cells[r->nrows * r->ncols], 0, r->ncols * sizeof(cell));
    r->nrows++;
    return 0;
}

static cell *last(knit_db_rows *r, size_t col)
{
    if (!r->nrows || col >= r->ncols) return NULL;
    return &r->cells[(r->nrows - 1) * r->ncols + col];
}

void knit__rows_set_int(knit_db_rows *r, size_t col, int64_t v)
{
    cell *c = last(r, col);
    if (!c) return;
    c->type = KNIT_DB_INT;
    c->v.i = v;
}

void knit__rows_set_float(knit_db_rows *r, size_t col, double v)
{
    cell *c = last(r, col);
    if (!c) return;
    c->type = KNIT_DB_FLOAT;
    c->v.f = v;
}

void knit__rows_set_bool(knit_db_rows *r, size_t col, bool v)
{
    cell *c = last(r, col);
    if (!c) return;
    c->type = KNIT_DB_BOOL;
    c->v.i = v;
}

int knit__rows_set_bytes(knit_db_rows *r, size_t col, knit_db_type t, const void *p, size_t len)
{
    cell *c = last(r, col);
    if (!c) return 0;
    size_t off;
    int rc = store(r, p, len, &off);
    if (rc) return rc;
    c = last(r, col); /* cells did not move, but be plain about it */
    c->type = (uint8_t)t;
    c->len = (uint32_t)len;
    c->v.off = off;
    return 0;
}

void knit__rows_set_counts(knit_db_rows *r, int64_t changes, int64_t last_id)
{
    r->changes = changes;
    r->last_id = last_id;
}

/* ---- reading ------------------------------------------------------------------ */

static const cell *at(const knit_db_rows *r, size_t row, size_t col)
{
    if (!r || row >= r->nrows || col >= r->ncols) return NULL;
    return &r->cells[row * r->ncols + col];
}

size_t knit_db_rows_count(const knit_db_rows *r)
{
    return r ? r->nrows : 0;
}

size_t knit_db_rows_columns(const knit_db_rows *r)
{
    return r ? r->ncols : 0;
}

const char *knit_db_rows_name(const knit_db_rows *r, size_t col)
{
    if (!r || col >= r->ncols || r->name_off[col] == SIZE_MAX) return NULL;
    return r->data + r->name_off[col];
}

int knit_db_rows_find(const knit_db_rows *r, const char *name)
{
    if (!r || !name) return -1;
    for (size_t i = 0; i < r->ncols; i++) {
        const char *n = knit_db_rows_name(r, i);
        if (n && strcmp(n, name) == 0) return (int)i;
    }
    return -1;
}

knit_db_type knit_db_rows_type(const knit_db_rows *r, size_t row, size_t col)
{
    const cell *c = at(r, row, col);
    return c ? (knit_db_type)c->type : KNIT_DB_NULL;
}

bool knit_db_rows_is_null(const knit_db_rows *r, size_t row, size_t col)
{
    return knit_db_rows_type(r, row, col) == KNIT_DB_NULL;
}

int64_t knit_db_rows_int(const knit_db_rows *r, size_t row, size_t col)
{
    const cell *c = at(r, row, col);
    if (!c) return 0;
    switch (c->type) {
    case KNIT_DB_INT:
    case KNIT_DB_BOOL:
        return c->v.i;
    case KNIT_DB_FLOAT:
        if (isnan(c->v.f)) return 0;
        if (c->v.f >= 9.2233720368547758e18) return INT64_MAX;
        if (c->v.f <= -9.2233720368547758e18) return INT64_MIN;
        return (int64_t)c->v.f;
    case KNIT_DB_TEXT: {
        const char *s = r->data + c->v.off;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || *end || errno) return 0;
        return v;
    }
    default:
        return 0;
    }
}

double knit_db_rows_float(const knit_db_rows *r, size_t row, size_t col)
{
    const cell *c = at(r, row, col);
    if (!c) return 0;
    switch (c->type) {
    case KNIT_DB_INT:
    case KNIT_DB_BOOL:
        return (double)c->v.i;
    case KNIT_DB_FLOAT:
        return c->v.f;
    case KNIT_DB_TEXT: {
        const char *s = r->data + c->v.off;
        char *end;
        double v = strtod(s, &end);
        return end == s || *end ? 0 : v;
    }
    default:
        return 0;
    }
}

const char *knit_db_rows_text(const knit_db_rows *r, size_t row, size_t col, size_t *len)
{
    const cell *c = at(r, row, col);
    if (len) *len = 0;
    if (!c || (c->type != KNIT_DB_TEXT && c->type != KNIT_DB_BLOB)) return NULL;
    if (len) *len = c->len;
    return r->data + c->v.off;
}

const void *knit_db_rows_blob(const knit_db_rows *r, size_t row, size_t col, size_t *len)
{
    return knit_db_rows_text(r, row, col, len);
}

int64_t knit_db_rows_changes(const knit_db_rows *r)
{
    return r ? r->changes : 0;
}

int64_t knit_db_rows_last_id(const knit_db_rows *r)
{
    return r ? r->last_id : 0;
}

/* ---- JSON ----------------------------------------------------------------------- */

static json_t *cell_json(const knit_db_rows *r, const cell *c)
{
    switch (c->type) {
    case KNIT_DB_INT:
        return json_integer(c->v.i);
    case KNIT_DB_BOOL:
        return json_boolean(c->v.i);
    case KNIT_DB_FLOAT:
        return isfinite(c->v.f) ? json_real(c->v.f) : json_null();
    case KNIT_DB_TEXT:
        return json_stringn(r->data + c->v.off, c->len);
    case KNIT_DB_BLOB: {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *p = (const unsigned char *)r->data + c->v.off;
        char *s = malloc((size_t)c->len * 2 + 1);
        if (!s) return NULL;
        for (size_t i = 0; i < c->len; i++) {
            s[2 * i] = hex[p[i] >> 4];
            s[2 * i + 1] = hex[p[i] & 15];
        }
        json_t *j = json_stringn(s, (size_t)c->len * 2);
        free(s);
        return j;
    }
    default:
        return json_null();
    }
}

json_t *knit_db_rows_json(const knit_db_rows *r)
{
    json_t *arr = json_array();
    if (!arr || !r) return arr;
    for (size_t i = 0; i < r->nrows; i++) {
        json_t *o = json_object();
        if (!o || json_array_append_new(arr, o) < 0) goto fail;
        for (size_t k = 0; k < r->ncols; k++) {
            const char *name = knit_db_rows_name(r, k);
            json_t *v = cell_json(r, &r->cells[i * r->ncols + k]);
            if (!v || json_object_set_new(o, name ? name : "?", v) < 0) goto fail;
        }
    }
    return arr;
fail:
    json_decref(arr);
    return NULL;
}
