/* httpc/httpc_int.h — the client's state, shared by the files of the httpc
 * module (client.c drives libcurl, request.c builds requests and responses,
 * stub.c is the in-process double, blocking.c the worker form). Internal to
 * knit. [reactor] unless said otherwise. */
#ifndef KNIT_HTTPC_INT_H
#define KNIT_HTTPC_INT_H

#include <curl/curl.h>

#include "knit/httpc.h"

struct knit_http_server;

/* A growable byte buffer we can hand over to a response (knit_buf keeps its
 * memory private). */
typedef struct hbuf {
    char *p;
    size_t len, cap;
} hbuf;
int knit__hbuf_add(hbuf *b, const void *data,
                   size_t n); /* 0 or KNIT_ENOMEM; keeps p NUL-terminated */
int knit__hbuf_reserve(hbuf *b, size_t n);
void knit__hbuf_free(hbuf *b);

/* One fd curl uses. Owned sockets come from our open callback and leave
 * through our close callback, so knit decides when the fd number is
 * released (curl's CURL_POLL_REMOVE may come after a close otherwise).
 * Foreign fds (the threaded resolver's socketpair) are dup()ed, and the
 * watch is on the dup: whatever curl does with its own number, epoll is
 * only ever told about an fd we own. */
typedef struct hsock {
    knit_io io; /* on fd (owned) or on the dup (foreign) */
    knit_httpc *c;
    int curl_fd; /* the number curl knows */
    bool owned;
    uint64_t ino; /* owned: the socket's inode, to tell it from a reused number */
} hsock;

enum { OP_REMOVE = 1u << 0, OP_ADD = 1u << 1 };

#define HTTPC_NMETHODS 8 /* GET HEAD POST PUT PATCH DELETE OPTIONS other */
#define HTTPC_NCLASSES 6 /* error 1xx 2xx 3xx 4xx 5xx */

struct knit_httpc_xfer {
    knit_httpc *c;
    CURL *easy;
    knit_deferred *d;             /* producer's reference; NULL once fired/cancelled */
    knit_httpc_xfer *prev, *next; /* c->xfers: every request not finished */
    knit_httpc_xfer *op_next;     /* c->ops while ops != 0 */
    unsigned ops;
    bool in_multi, cancelled, idempotent, streaming, connected, reused, retried, resubmit;
    bool got_status;    /* a final (non-1xx) status line since the last prereq */
    bool opened_socket; /* this transfer opened a socket since the last prereq */
    bool head_called, paused_recv, paused_send, body_fn_used;
    bool easy_dirty; /* method/body/auth options set: reset the handle before reuse */
    unsigned prereqs;
    int status;
    int abort_code; /* set by us (limits, callbacks, timeouts): wins over curl's */
    char *abort_msg;
    knit_timer t_conn, t_total, t_resume;
    knit_time start;
    knit_duration timeout, connect_timeout;
    size_t max_body;
    hbuf head; /* the current response's fields: "name\0value\0" ... */
    size_t nheaders;
    hbuf body;
    char *url;    /* what we asked for, with the query parameters */
    char *method; /* as given */
    char *body_copy;
    size_t body_len;
    struct curl_slist *hdrs;
    knit_httpc_head_fn on_head;
    knit_httpc_chunk_fn on_chunk;
    knit_httpc_body_fn body_fn;
    void *arg;
    unsigned method_idx, host_idx;
    char errbuf[CURL_ERROR_SIZE];
};

struct knit_httpc {
    knit_reactor *r;
    CURLM *multi;
    knit_timer timer;      /* curl's timer */
    knit_timer idle_timer; /* closes idle connections once nothing is in flight */
    int depth;             /* > 0 while inside a libcurl call */
    int busy;              /* > 0 while an entry point runs (user callbacks may run) */
    bool free_requested, closing;
    struct knit_http_server *server; /* the stub's server, or NULL */
    int stub_fd;                     /* the stub's private listener (AF_UNIX) */
    knit_io stub_io;
    char stub_name[108];
    knit_httpc_options o; /* strings point into the copies below */
    char *s_name, *s_ua, *s_ca_file, *s_ca_dir, *s_cert, *s_key, *s_keypw;
    char *proxy_http, *proxy_https, *no_proxy;
    struct curl_slist *resolve;
    knit_httpc_xfer *xfers; /* not finished */
    knit_httpc_xfer *ops, *ops_tail;
    hsock **socks; /* by curl fd */
    size_t nsocks;
    CURL **spare; /* easy handles kept for reuse */
    bool *spare_clean;
    size_t nspare;
    bool verbose;
    knit_httpc_stats st;
    uint64_t counts[HTTPC_NMETHODS][HTTPC_NCLASSES][KNIT_HTTPC_MAX_HOST_LABELS + 1];
    char *hosts[KNIT_HTTPC_MAX_HOST_LABELS];
    size_t nhosts;
};

/* request.c */
extern const char *const knit__httpc_methods[HTTPC_NMETHODS];
extern const char *const knit__httpc_classes[HTTPC_NCLASSES];
unsigned knit__httpc_method_idx(const char *method);
/* The URL with PARAMS appended (percent-encoded), malloc'd; NULL if out of memory. */
char *knit__httpc_url_with_params(const char *url, const char *const *params);
/* PAIRS as application/x-www-form-urlencoded, malloc'd (*len set). */
char *knit__httpc_form_encode(const char *const *pairs, size_t *len);
/* "host[:port]" of URL, lowercased, into OUT. */
void knit__httpc_url_host(const char *url, char *out, size_t n);
/* URL without userinfo, query and fragment (for messages), into OUT. */
void knit__httpc_url_safe(const char *url, char *out, size_t n);
/* Build the response handed to users from X's state. Takes X's head and
 * body buffers. NULL if out of memory. */
knit_httpc_response *knit__httpc_response_build(knit_httpc_xfer *x, bool take_body);

/* client.c */
/* An easy handle, or NULL; *CLEAN: set up by an earlier plain request. */
CURL *knit__httpc_easy_get(knit_httpc *c, bool *clean);
/* Set the options of X's easy handle (all of them unless CLEAN). 0 or
 * KNIT_EINVAL. */
int knit__httpc_setopts(knit_httpc_xfer *x, const knit_httpc_req *rq, bool clean,
                        knit_duration connect_to, unsigned max_redirects, int follow);
/* Timers, the client's list, the multi: 0 or a negative code (then X is
 * not started and the caller frees it with knit__httpc_xfer_free). */
int knit__httpc_start(knit_httpc_xfer *x, knit_duration timeout, knit_duration connect_to);
void knit__httpc_xfer_free(knit_httpc_xfer *x);
void knit__httpc_cancel(knit_deferred *d, void *arg); /* the Deferred's canceller */

/* transfer.c: libcurl's per-transfer callbacks (CURLOPT_*FUNCTION, their
 * data the transfer), the abort reason (the first one wins) and the failure
 * a finished transfer turns into. [reactor] */
void knit__httpc_set_abort(knit_httpc_xfer *x, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int knit__httpc_prereq_cb(void *clientp, char *pip, char *lip, int pport, int lport);
size_t knit__httpc_header_cb(char *buf, size_t size, size_t n, void *ud);
size_t knit__httpc_write_cb(char *p, size_t size, size_t n, void *ud);
size_t knit__httpc_read_cb(char *buf, size_t size, size_t n, void *ud);
/* Run the user's on_head for X once its head is complete: 0 or their code. */
int knit__httpc_call_on_head(knit_httpc_xfer *x);
knit_failure *knit__httpc_make_failure(knit_httpc_xfer *x, CURLcode rc);

/* stub.c: the stub's private listener, whose connections go to c->server. */
int knit__httpc_stub_listen(knit_httpc *c);
void knit__httpc_stub_close(knit_httpc *c);
int knit__httpc_new_common(knit_reactor *r, const knit_httpc_options *opts,
                           struct knit_http_server *server, knit_httpc **out);

#endif
