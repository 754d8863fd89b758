/* fuzz_notes.c — libFuzzer target for the notes service's request handling
 * (examples/notes): body parsing, query parsing, routing and the answers.
 *
 * Input: first byte picks the method (GET, HEAD, POST, PUT, DELETE, PATCH);
 * the rest up to the first '\n' is the request target (path and query, as
 * the server would pass them), and what follows is the body. The request
 * goes through notes_app_handle against a real store in a temporary
 * directory (synchronous=NORMAL), and the body alone also through
 * notes_json_parse_input. Findings: crashes, sanitizer reports, and answers
 * that break the API's promises (abort): a status outside the documented
 * set, an error body that is not {"error": "..."}.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../examples/notes/notes_api.h"
#include "../examples/notes/notes_json.h"
#include "knit/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path[128];
static notes_store *store;
static notes_app *app;

static void cleanup(void)
{
    notes_app_free(app);
    notes_store_close(store);
    char p[160];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    rmdir(dir);
}

static void init(void)
{
    knit_log_set_level(KNIT_LOG_OFF);
    strcpy(dir, "/tmp/knit-fuzz-notes-XXXXXX");
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/notes.db", dir);
    notes_store_options so;
    notes_store_options_init(&so);
    so.path = path;
    so.conns = 1;
    so.sync_full = false;
    if (notes_store_open(&store, &so, NULL, 0) != 0) abort();
    notes_app_options ao;
    notes_app_options_init(&ao);
    ao.store = store;
    ao.max_body = 4096;
    if (notes_app_new(&app, &ao) != 0) abort();
    atexit(cleanup);
}

static void check_answer(const notes_resp *r)
{
    static const int ok[] = {200, 201, 204, 400, 404, 405, 413, 500, 503};
    int found = 0;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        found |= r->status == ok[i];
    if (!found) abort();
    if (r->status >= 400) {
        json_t *doc = json_loadb(r->body, r->body_len, 0, NULL);
        if (!doc || !json_is_string(json_object_get(doc, "error")) || json_object_size(doc) != 1)
            abort();
        json_decref(doc);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store) init();
    if (size == 0) return 0;
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"};
    const char *method = methods[data[0] % 6];
    data++;
    size--;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t tlen = nl ? (size_t)(nl - data) : size;
    char *target = malloc(tlen + 1);
    if (!target) return 0;
    memcpy(target, data, tlen);
    target[tlen] = 0;
    const char *body = nl ? (const char *)nl + 1 : NULL;
    size_t blen = nl ? size - tlen - 1 : 0;

    notes_input in;
    char err[NOTES_ERRMSG_MAX];
    if (notes_json_parse_input(body, blen, &in, err, sizeof err) == 0) {
        if (!in.f.text || !in.f.text[0] || in.f.ntags > NOTES_MAX_TAGS) abort();
        notes_input_clear(&in);
    } else if (!err[0]) {
        abort(); /* every rejection has a message */
    }

    /* The path may hold NULs from the input: the server never passes those,
     * so the path ends at the first one, like a C string. */
    char *q = strchr(target, '?');
    if (q) *q++ = 0;
    notes_req req = {.method = method,
                     .path = target,
                     .query = q,
                     .body = body,
                     .body_len = blen,
                     .body_too_large = blen > 4096};
    notes_resp resp;
    notes_app_handle(app, &req, &resp);
    check_answer(&resp);
    notes_resp_clear(&resp);
    free(target);
    return 0;
}
