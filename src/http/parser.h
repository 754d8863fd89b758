/* http/parser.h — knit's strict HTTP/1.1 request-head parser and chunked-body
 * decoder (internal to the http module, and to its tests and fuzz target).
 *
 * What it owns: turning bytes into a parsed request head and decoded body
 * spans. It never allocates, never copies and never reads outside
 * buf[0, len): every returned pointer points into the caller's buffer, which
 * must stay unchanged while the results are used. It runs on whatever thread
 * calls it (the reactor, in the server) and holds no global state.
 *
 * Incremental use (picohttpparser style): keep appending received bytes to
 * one buffer and call knit__http_parse_request(buf, len, prev_len, ...) again
 * with prev_len = the length at the previous call (0 the first time). The
 * result is:
 *   > 0   the head is complete; that many bytes were consumed (the body, if
 *         any, starts right after);
 *   KNIT__HTTP_INCOMPLETE  need more bytes;
 *   KNIT__HTTP_ERROR       the request is bad: req->status holds the status to
 *         answer (400, 413, 414, 417, 431, 501, 505) and req->error a short
 *         static reason; the connection must not be reused.
 * The head is re-parsed from the start only when the new bytes could change
 * the answer (a separator in an unfinished request line, a blank line or a
 * bad attempt at one after it, or a limit crossed), so feeding a head one
 * byte at a time costs a memchr per call, not a full parse; bytes that are
 * bad from the start are rejected at the first call.
 *
 * Strictness (RFC 9110, RFC 9112): lines end in CRLF only (a bare CR or bare
 * LF is an error); exactly one SP between the request-line parts; the
 * method is a token; the target is origin-form, absolute-form (http/https),
 * asterisk-form (OPTIONS only) or authority-form (CONNECT, which takes
 * nothing else) and contains only URI characters with valid %XX escapes;
 * the version is HTTP/1.0 or HTTP/1.1, and HTTP/1.2 to HTTP/1.9 are served
 * as HTTP/1.1 (minor_version 1, RFC 9112 2.3; other HTTP/d.d: 505). The
 * authority of an absolute-form target and a Host value are uri-host
 * [":" port] (RFC 9110 4.2.3, 7.2; RFC 3986 3.2): a non-empty reg-name or a
 * well-formed bracketed IP literal, at most one port of digits, no
 * userinfo; CONNECT's authority-form needs a non-empty port (RFC 9112
 * 3.2.3). Field names are tokens immediately followed by ':' (whitespace
 * before the colon, obs-fold, empty names: 400); field values hold only
 * VCHAR, obs-text, SP and HTAB. Framing: Content-Length is 1*DIGIT (leading
 * zeros allowed) or a list of equal such values. Content-Length together
 * with Transfer-Encoding, differing or malformed Content-Length values,
 * Transfer-Encoding in HTTP/1.0, Transfer-Encoding whose final coding
 * is not chunked or that names chunked twice are 400; another coding before
 * a final chunked is 501; a missing or repeated Host in HTTP/1.1 is 400; an
 * Expect other than 100-continue is 417; Content-Length above max_body is
 * 413. Limits: target longer than max_target is 414; more than max_headers
 * fields or a head longer than max_head is 431.
 */
#ifndef KNIT_HTTP_PARSER_H
#define KNIT_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Defaults for the parser limits (the server's options start from these). */
#define KNIT__HTTP_MAX_HEAD_DEFAULT 8192u      /* request line + fields + blank line */
#define KNIT__HTTP_MAX_TARGET_DEFAULT 4096u    /* request-target bytes */
#define KNIT__HTTP_MAX_HEADERS_DEFAULT 64u     /* field lines */
#define KNIT__HTTP_MAX_BODY_DEFAULT (1u << 20) /* body bytes (Content-Length or chunked) */
#define KNIT__HTTP_MAX_CHUNK_LINE 1024u        /* chunk-size line with extensions */
#define KNIT__HTTP_MAX_TRAILER 4096u           /* trailer section bytes */

#define KNIT__HTTP_INCOMPLETE (-2)
#define KNIT__HTTP_ERROR (-1)

typedef struct knit__http_limits {
    size_t max_head;
    size_t max_target;
    size_t max_headers;
    uint64_t max_body;
} knit__http_limits;

void knit__http_limits_init(knit__http_limits *l);

typedef struct knit__http_field {
    const char *name;
    const char *value; /* OWS trimmed on both sides */
    uint32_t name_len;
    uint32_t value_len;
} knit__http_field;

enum knit__http_body {
    KNIT__HTTP_BODY_NONE = 0,    /* no body (no CL/TE, or CL: 0) */
    KNIT__HTTP_BODY_LENGTH = 1,  /* content_length bytes follow */
    KNIT__HTTP_BODY_CHUNKED = 2, /* chunked coding follows */
};

/* Well-known methods, for fast dispatch; other tokens are KNIT__HTTP_M_OTHER. */
enum knit__http_method {
    KNIT__HTTP_M_OTHER = 0,
    KNIT__HTTP_M_GET,
    KNIT__HTTP_M_HEAD,
    KNIT__HTTP_M_POST,
    KNIT__HTTP_M_PUT,
    KNIT__HTTP_M_DELETE,
    KNIT__HTTP_M_PATCH,
    KNIT__HTTP_M_OPTIONS,
    KNIT__HTTP_M_CONNECT,
    KNIT__HTTP_M_TRACE,
};

typedef struct knit__http_request {
    /* In: where to store field lines and how many fit (the count limit is
     * min(fields_cap, limits->max_headers)). */
    knit__http_field *fields;
    size_t fields_cap;
    /* Out: */
    const char *method;
    const char *target;
    uint32_t method_len;
    uint32_t target_len;
    size_t num_fields;
    int method_id;     /* enum knit__http_method */
    int minor_version; /* 0 or 1 (HTTP/1.2-1.9 are served as 1.1) */
    int body;          /* enum knit__http_body */
    uint64_t content_length;
    bool keep_alive; /* after Connection and version rules */
    bool expect_continue;
    const char *host; /* Host value (NULL when absent, HTTP/1.0 only) */
    uint32_t host_len;
    int status;        /* on KNIT__HTTP_ERROR: the status to answer */
    const char *error; /* on KNIT__HTTP_ERROR: a short static reason */
} knit__http_request;

/* Parse a request head from BUF[0, LEN). PREV_LEN is LEN at the previous
 * (incomplete) call on the same buffer, or 0. REQ->fields/fields_cap must be
 * set; everything else in REQ is written. LIMITS may be NULL (defaults).
 * Returns bytes consumed (> 0), KNIT__HTTP_INCOMPLETE or KNIT__HTTP_ERROR. */
ssize_t knit__http_parse_request(const char *buf, size_t len, size_t prev_len,
                                 knit__http_request *req, const knit__http_limits *limits);

/* Case-insensitive ASCII comparison of a field name with a lower-case NAME. */
bool knit__http_name_is(const char *s, size_t n, const char *lower, size_t lower_len);

/* ---- chunked body decoder ------------------------------------------------- */

/* Incremental decoder of the chunked transfer coding (RFC 9112 §7.1).
 * Chunk extensions are validated and ignored; trailer fields are validated
 * and ignored. Zero-copy: data comes back as spans of the input. */
typedef struct knit__http_chunked {
    uint64_t remaining; /* data bytes left in the current chunk */
    uint64_t total;     /* data bytes decoded so far */
    uint64_t max_body;
    uint32_t line_len; /* bytes of the current size line / trailer section */
    uint8_t state;
    uint8_t ndigits;
    bool done;  /* the last chunk and the trailer section were read */
    int status; /* on error: the status to answer (400 or 413) */
    const char *error;
} knit__http_chunked;

void knit__http_chunked_init(knit__http_chunked *d, uint64_t max_body);

/* Decode from IN[0, LEN). Returns the number of input bytes consumed (>= 0)
 * or KNIT__HTTP_ERROR (d->status, d->error set). If the consumed bytes hold
 * body data, *DATA / *DATA_LEN name it (a span of IN; *DATA_LEN is 0 when
 * none). Each call returns at most one data span and stops right after it,
 * so call again with the rest of the input. d->done turns true once the
 * final chunk and trailers were consumed; bytes after that belong to the
 * next request and are not consumed. */
ssize_t knit__http_chunked_decode(knit__http_chunked *d, const char *in, size_t len,
                                  const char **data, size_t *data_len);

#endif
