/* examples/notes/notes_json.c — request parsing and response encoding with
 * Jansson. See notes_json.h for the accepted shape and the messages. */
#include "notes_json.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "knit/error.h"

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return KNIT_EPARSE;
}

void notes_input_clear(notes_input *in)
{
    if (!in) return;
    free(in->_tags);
    json_decref((json_t *)in->_root);
    memset(in, 0, sizeof *in);
}

static int parse_tags(json_t *tags, notes_input *in, char *err, size_t errlen)
{
    if (json_is_null(tags)) return 0;
    if (!json_is_array(tags)) return fail(err, errlen, "tags must be an array of strings");
    size_t n = json_array_size(tags);
    if (n > NOTES_MAX_TAGS)
        return fail(err, errlen, "tags must hold at most %d entries (got %zu)", NOTES_MAX_TAGS, n);
    if (n == 0) return 0;
    in->_tags = calloc(n, sizeof *in->_tags);
    if (!in->_tags) return KNIT_ENOMEM;
    size_t i;
    json_t *v;
    json_array_foreach(tags, i, v)
    {
        if (!json_is_string(v)) return fail(err, errlen, "tags[%zu] must be a string", i);
        size_t len = json_string_length(v);
        if (len == 0) return fail(err, errlen, "tags[%zu] must not be empty", i);
        if (len > NOTES_MAX_TAG_BYTES)
            return fail(err, errlen, "tags[%zu] must be at most %d bytes long", i,
                        NOTES_MAX_TAG_BYTES);
        in->_tags[i] = json_string_value(v);
    }
    in->f.tags = in->_tags;
    in->f.ntags = n;
    return 0;
}

static int parse_ttl(json_t *ttl, notes_input *in, char *err, size_t errlen)
{
    if (json_is_null(ttl)) return 0;
    if (!json_is_integer(ttl)) return fail(err, errlen, "ttl_seconds must be an integer");
    json_int_t v = json_integer_value(ttl);
    if (v <= 0) return fail(err, errlen, "ttl_seconds must be positive");
    if (v > NOTES_MAX_TTL_SECONDS)
        return fail(err, errlen, "ttl_seconds must be at most %lld", NOTES_MAX_TTL_SECONDS);
    in->f.ttl_ms = (int64_t)v * 1000;
    return 0;
}

int notes_json_parse_input(const char *body, size_t len, notes_input *in, char *err, size_t errlen)
{
    memset(in, 0, sizeof *in);
    if (errlen) err[0] = 0;
    if (!body || len == 0)
        return fail(err, errlen, "request body is empty; expected a JSON object");
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(err, errlen, "malformed JSON at line %d column %d: %s", je.line, je.column,
                    je.text);
    in->_root = root;
    int rc;
    if (!json_is_object(root)) {
        rc = fail(err, errlen, "request body must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "text") != 0 && strcmp(key, "tags") != 0 &&
            strcmp(key, "ttl_seconds") != 0) {
            rc = fail(err, errlen, "unknown field \"%.64s\" (expected text, tags, ttl_seconds)",
                      key);
            goto out;
        }
    }
    json_t *text = json_object_get(root, "text");
    if (!text || json_is_null(text)) {
        rc = fail(err, errlen, "text is required");
        goto out;
    }
    if (!json_is_string(text)) {
        rc = fail(err, errlen, "text must be a string");
        goto out;
    }
    if (json_string_length(text) == 0) {
        rc = fail(err, errlen, "text must not be empty");
        goto out;
    }
    in->f.text = json_string_value(text);
    json_t *tags = json_object_get(root, "tags");
    if (tags && (rc = parse_tags(tags, in, err, errlen)) != 0) goto out;
    json_t *ttl = json_object_get(root, "ttl_seconds");
    if (ttl && (rc = parse_ttl(ttl, in, err, errlen)) != 0) goto out;
    return 0;
out:
    notes_input_clear(in);
    return rc;
}

void notes_format_time(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int milli = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(buf, len, "%lld", (long long)ms);
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, milli);
}

/* Build the object for one note, or NULL when out of memory. */
static json_t *note_obj(const notes_note *n)
{
    json_t *o = json_object();
    json_t *tags = json_array();
    if (!o || !tags) goto oom;
    for (size_t i = 0; i < n->ntags; i++)
        if (json_array_append_new(tags, json_string(n->tags[i])) != 0) goto oom;
    char created[32], expires[32];
    notes_format_time(n->created_at, created, sizeof created);
    notes_format_time(n->expires_at, expires, sizeof expires);
    if (json_object_set_new(o, "id", json_integer(n->id)) != 0 ||
        json_object_set_new(o, "text", json_string(n->text ? n->text : "")) != 0)
        goto oom;
    if (json_object_set_new(o, "tags", tags) != 0) goto oom_o; /* tags consumed either way */
    if (json_object_set_new(o, "created_at", json_string(created)) != 0 ||
        json_object_set_new(o, "expires_at", n->expires_at ? json_string(expires) : json_null()) !=
            0)
        goto oom_o;
    return o;
oom:
    json_decref(tags);
oom_o:
    json_decref(o);
    return NULL;
}

static char *dump(json_t *o)
{
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

char *notes_json_note(const notes_note *n)
{
    return dump(note_obj(n));
}

char *notes_json_list(const notes_list *l)
{
    json_t *o = json_object();
    json_t *arr = json_array();
    if (!o || !arr) goto oom;
    for (size_t i = 0; i < l->n; i++) {
        json_t *n = note_obj(&l->items[i]);
        if (!n || json_array_append_new(arr, n) != 0) goto oom;
    }
    if (json_object_set_new(o, "notes", arr) != 0) {
        arr = NULL;
        goto oom;
    }
    if (json_object_set_new(o, "next", l->next ? json_integer(l->next) : json_null()) != 0)
        goto oom_o;
    return dump(o);
oom:
    json_decref(arr);
oom_o:
    json_decref(o);
    return NULL;
}

/* Length of the valid UTF-8 sequence at S (RFC 3629), or 0 if it is not. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

char *notes_json_error(const char *msg)
{
    /* Messages quote client input (a path, a parameter name) and may be cut
     * mid-character: replace every byte that is not valid UTF-8 with '?',
     * since JSON strings must be UTF-8. */
    if (!msg) msg = "error";
    size_t len = strlen(msg);
    char *clean = malloc(len + 1);
    if (!clean) return NULL;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq((const unsigned char *)msg + i);
        if (n == 0) {
            clean[i++] = '?';
        } else {
            memcpy(clean + i, msg + i, n);
            i += n;
        }
    }
    clean[len] = 0;
    json_t *o = json_object();
    json_t *v = json_string(clean);
    free(clean);
    if (!o || !v) {
        json_decref(o);
        json_decref(v);
        return NULL;
    }
    if (json_object_set_new(o, "error", v) != 0) {
        json_decref(o);
        return NULL;
    }
    return dump(o);
}
