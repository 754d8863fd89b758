/* examples/notes/notes_json.h — the notes service's JSON: request bodies in,
 * notes and errors out (Jansson).
 *
 * Parsing is strict and every rejection names the field at fault, because
 * the message goes straight into a 400 answer: "text must be a string",
 * "tags[2] must be a string", "unknown field \"colour\"". Duplicate keys and
 * NUL characters inside strings are rejected by Jansson itself.
 *
 * Threads: every function is [any]; nothing here is shared.
 */
#ifndef NOTES_JSON_H
#define NOTES_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NOTES_MAX_TAGS 32
#define NOTES_MAX_TAG_BYTES 64
#define NOTES_MAX_TTL_SECONDS (10LL * 366 * 24 * 3600) /* ten years */
#define NOTES_ERRMSG_MAX 256

/* A parsed request body. f's strings point into the parsed document, which
 * the input owns: valid until notes_input_clear. */
typedef struct notes_input {
    notes_fields f;
    const char **_tags;
    void *_root; /* json_t * */
} notes_input;

/* Parse a create/update body: an object with "text" (string, required,
 * non-empty), "tags" (array of non-empty strings of at most
 * NOTES_MAX_TAG_BYTES, at most NOTES_MAX_TAGS; optional, null = none) and
 * "ttl_seconds" (integer 1..NOTES_MAX_TTL_SECONDS; optional, null = none).
 * Any other key is an error. Returns 0 and fills *in, or KNIT_EPARSE with a
 * message for the client in ERR (at most ERRLEN bytes; NOTES_ERRMSG_MAX is
 * enough), or KNIT_ENOMEM. On error *in needs no clearing (clearing it is
 * harmless). */
int notes_json_parse_input(const char *body, size_t len, notes_input *in, char *err, size_t errlen);
void notes_input_clear(notes_input *in);

/* Encoders: a malloc'd, NUL-terminated compact JSON text, or NULL when out of
 * memory. The caller frees it with free().
 *   note:  {"id":1,"text":"…","tags":["a"],"created_at":"2026-11-26T11:40:34.123Z",
 *           "expires_at":null}
 *   list:  {"notes":[note…],"next":17}   (next is null on the last page)
 *   error: {"error":"…"} */
char *notes_json_note(const notes_note *n);
char *notes_json_list(const notes_list *l);
char *notes_json_error(const char *msg);

/* Milliseconds since the epoch as RFC 3339 UTC with milliseconds
 * ("2026-11-26T11:40:34.123Z"). BUF must hold 32 bytes. */
void notes_format_time(int64_t ms, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
