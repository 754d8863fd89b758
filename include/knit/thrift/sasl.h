/* knit/thrift/sasl.h — the SASL transport (Thrift's TSaslTransport, as used
 * by Hive/Impala), for the server and the client.
 *
 * A pure state machine over bytes, using Cyrus SASL (libsasl2) for the
 * mechanisms; the caller moves the bytes. Negotiation messages are
 *   status(1) | length(4, big-endian) | payload
 * with status START=1 (payload: mechanism name), OK=2, BAD=3, ERROR=4,
 * COMPLETE=5. The client sends START then its initial response with OK or
 * COMPLETE (both accepted); the server answers OK + challenge until the
 * mechanism completes, then COMPLETE (+ final data). A failure is answered
 * with BAD (authentication) or ERROR (protocol) carrying a short reason, and
 * the connection must then be closed. Negotiation payloads are limited to
 * max_negotiation bytes (64 KiB by default).
 *
 * After completion every message travels as length(4) | payload, where the
 * payload is passed through the SASL security layer (sasl_encode/decode)
 * when the negotiated strength (SSF) is above zero, i.e. a QOP beyond
 * "auth" (DIGEST-MD5 auth-int/auth-conf, GSSAPI). PLAIN and SCRAM have none.
 *
 * The server never lets a call through before knit_thrift_sasl_feed has
 * returned KNIT_THRIFT_SASL_DONE.
 *
 * Threads: one knit_thrift_sasl belongs to one thread at a time (the
 * reactor, for the server); creating them is [any] (libsasl2 is initialised
 * once per process under a pthread_once).
 *
 * Ownership: knit_thrift_sasl_*_new copies the option strings; the object
 * is freed with knit_thrift_sasl_free. Output goes into a caller-owned
 * knit_thrift_writer; unwrapped messages point into the object or into IN
 * (see knit_thrift_sasl_unwrap).
 */
#ifndef KNIT_THRIFT_SASL_H
#define KNIT_THRIFT_SASL_H

#include <stddef.h>
#include <stdint.h>

#include "knit/thrift/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits and defaults --------------------------------------------------- */

#define KNIT_THRIFT_SASL_MAX_NEGOTIATION 65536u /* SASL negotiation payload */

enum {
    KNIT_THRIFT_SASL_START = 1,
    KNIT_THRIFT_SASL_OK = 2,
    KNIT_THRIFT_SASL_BAD = 3,
    KNIT_THRIFT_SASL_ERROR = 4,
    KNIT_THRIFT_SASL_COMPLETE = 5,
};

/* knit_thrift_sasl_feed results besides negative errors */
enum {
    KNIT_THRIFT_SASL_MORE = 0, /* keep feeding bytes */
    KNIT_THRIFT_SASL_DONE = 1, /* authenticated: what follows is framed data */
};

/* Application password check for PLAIN (and LOGIN): return 0 to accept. Runs
 * on the thread that feeds the state machine. */
typedef int (*knit_thrift_sasl_check_fn)(void *arg, const char *user, const char *password,
                                         size_t password_len);

typedef struct knit_thrift_sasl_options {
    const char *service;     /* SASL service name; default "thrift" */
    const char *server_fqdn; /* default "localhost" */
    const char *realm;       /* server: user realm; NULL = server_fqdn */
    /* server: mechanisms offered, space-separated (default "PLAIN SCRAM-SHA-256");
     * client: mechanisms to try, in preference order (default "SCRAM-SHA-256 PLAIN") */
    const char *mechanisms;
    const char *sasldb_path;                  /* server: sasldb file with the users' secrets */
    knit_thrift_sasl_check_fn check_password; /* server: instead of / before sasldb */
    void *check_arg;
    const char *username;     /* client */
    const char *password;     /* client */
    const char *authzid;      /* client: authorization id, default none */
    uint32_t max_negotiation; /* bytes per negotiation payload; default 64 KiB */
    uint32_t max_frame;       /* bytes per data frame after negotiation; default 16,384,000 */
    unsigned min_ssf;         /* security layer strength wanted; default 0 */
    unsigned max_ssf;         /* default 256 (a layer is used when the mechanism offers one) */
} knit_thrift_sasl_options;

typedef struct knit_thrift_sasl knit_thrift_sasl;

void knit_thrift_sasl_options_init(knit_thrift_sasl_options *o);

/* Server side: waits for START. Returns 0 and *out, KNIT_ESASL when libsasl2
 * cannot be set up, KNIT_ENOMEM. Strings in O are copied. [any] */
int knit_thrift_sasl_server_new(const knit_thrift_sasl_options *o, knit_thrift_sasl **out);

/* Client side: returns 0 and *out; then call knit_thrift_sasl_client_start. */
int knit_thrift_sasl_client_new(const knit_thrift_sasl_options *o, knit_thrift_sasl **out);
/* Append START and the initial response to OUT. 0 or KNIT_ESASL. */
int knit_thrift_sasl_client_start(knit_thrift_sasl *s, knit_thrift_writer *out);

void knit_thrift_sasl_free(knit_thrift_sasl *s);

/* Feed bytes received from the peer during negotiation. Consumes whole
 * messages only (*CONSUMED bytes; keep the rest and feed it again with more),
 * appends what must be sent to OUT. Returns KNIT_THRIFT_SASL_MORE,
 * KNIT_THRIFT_SASL_DONE (bytes after *CONSUMED are data frames), or a
 * negative code (KNIT_ESASL authentication failed, KNIT_ETHRIFT malformed,
 * KNIT_ELIMIT too large) after which OUT may hold a BAD/ERROR message to
 * send before closing. */
int knit_thrift_sasl_feed(knit_thrift_sasl *s, const uint8_t *in, size_t len, size_t *consumed,
                          knit_thrift_writer *out);

/* After DONE: the authenticated user name (server: as canonicalised by SASL;
 * client: as configured), the mechanism, the security strength (0 = none). */
const char *knit_thrift_sasl_username(const knit_thrift_sasl *s);
const char *knit_thrift_sasl_mechanism(const knit_thrift_sasl *s);
unsigned knit_thrift_sasl_ssf(const knit_thrift_sasl *s);
/* The reason of the last failure ("" if none). */
const char *knit_thrift_sasl_error(const knit_thrift_sasl *s);

/* After DONE: append one message to OUT as length(4) | payload, through the
 * security layer when there is one. 0 or KNIT_ESASL / KNIT_ENOMEM. */
int knit_thrift_sasl_wrap(knit_thrift_sasl *s, const uint8_t *msg, size_t len,
                          knit_thrift_writer *out);
/* After DONE: take one frame from IN[0, LEN). Returns 1 with *MSG and *MSG_LEN
 * (valid until the next call on S or until IN changes) and *CONSUMED; 0 when
 * the frame is not complete yet; KNIT_ELIMIT for a frame above max_frame,
 * KNIT_ESASL when the security layer refuses it. */
int knit_thrift_sasl_unwrap(knit_thrift_sasl *s, const uint8_t *in, size_t len, size_t *consumed,
                            const uint8_t **msg, size_t *msg_len);

#ifdef __cplusplus
}
#endif
#endif
