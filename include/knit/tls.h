/* knit/tls.h — TLS contexts (OpenSSL 3) for ssl: listeners and tls:
 * connectors, and what a TLS transport can tell about its session.
 *
 * A knit_tls_ctx is an immutable, reference-counted SSL_CTX wrapper built
 * from knit_tls_options: certificates, minimum version (TLS 1.2 by
 * default), ALPN, verification. Every connection made with it:
 *   - handshakes without blocking on the reactor (phase timeout: the
 *     endpoint's, default KNIT_TLS_HANDSHAKE_TIMEOUT);
 *   - refuses renegotiation (SSL_OP_NO_RENEGOTIATION);
 *   - resumes sessions: servers keep a session cache and issue tickets,
 *     clients remember the last session per host and offer it again;
 *   - sends SNI (clients) and checks the certificate against the host name
 *     unless verify is off; servers record the SNI a client sent and, with
 *     sni_dir, answer with the certificate for that name;
 *   - releases its record buffers while idle (SSL_MODE_RELEASE_BUFFERS);
 *   - ends with close_notify on lose_connection / shutdown_write.
 * Errors carry OpenSSL's reason text: functions that take ERR write it
 * there, and handshake failures are logged (mod=tls) with it.
 *
 * Threads: contexts are [any] (OpenSSL contexts are thread-safe once
 * built); the transport queries are [reactor].
 */
#ifndef KNIT_TLS_H
#define KNIT_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "knit/clock.h"
#include "knit/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_TLS_HANDSHAKE_TIMEOUT KNIT_SEC(10)
#define KNIT_TLS_MIN_VERSION "TLSv1.2"

typedef struct knit_tls_ctx knit_tls_ctx;

typedef struct knit_tls_options {
    const char *cert_file;   /* PEM certificate (chain); server: required */
    const char *key_file;    /* PEM private key; default: cert_file */
    const char *chain_file;  /* extra chain certificates (PEM), optional */
    const char *ca_file;     /* trust anchors; client default: system store */
    const char *ca_dir;
    bool verify;             /* client: verify the server (default true);
                                server: require a client certificate (default false) */
    const char *min_version; /* "TLSv1.2" (default) or "TLSv1.3" */
    const char *alpn;        /* "h2,http/1.1"; NULL: no ALPN */
    const char *ciphers;     /* TLS 1.2 cipher list; NULL: OpenSSL's default */
    const char *sni_dir;     /* server: DIR/NAME.pem (chain + key in one file)
                                answers clients asking for NAME (SNI; a file
                                named "*.example.org.pem" covers one label);
                                others get cert_file. Loaded once. */
} knit_tls_options;

void knit_tls_options_init(knit_tls_options *o);

/* Build a server / client context. 0 and *out (one reference), or KNIT_ETLS
 * (or KNIT_ENOENT / KNIT_EINVAL) with OpenSSL's reason text in ERR. [any] */
int knit_tls_server_ctx_new(knit_tls_ctx **out, const knit_tls_options *o, char *err,
                            size_t errlen);
int knit_tls_client_ctx_new(knit_tls_ctx **out, const knit_tls_options *o, char *err,
                            size_t errlen);
knit_tls_ctx *knit_tls_ctx_ref(knit_tls_ctx *c);  /* [any] */
void knit_tls_ctx_unref(knit_tls_ctx *c);         /* [any]; NULL is a no-op */

/* The SSL_CTX * behind C, to tune what knit does not expose. [any] */
void *knit_tls_ctx_ssl_ctx(knit_tls_ctx *c);

/* ---- a TLS transport's session (KNIT_ENOTSUP on non-TLS transports) ---- */
/* Negotiated ALPN protocol ("" if none) into OUT. */
int knit_tls_alpn(const knit_transport *t, char *out, size_t n);
/* "TLSv1.3" etc., or NULL. */
const char *knit_tls_version(const knit_transport *t);
/* True if the session was resumed. */
bool knit_tls_session_reused(const knit_transport *t);
/* The SNI host name the client sent (server side) or we sent (client). */
const char *knit_tls_server_name(const knit_transport *t);

/* The last OpenSSL error on this thread as text ("" if none). [any] */
const char *knit_tls_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
