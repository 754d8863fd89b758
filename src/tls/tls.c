/* tls.c — OpenSSL 3 contexts and the TLS layer under socket transports.
 *
 * Owns: knit_tls_ctx (refcounted SSL_CTX + options) and, per connection,
 * one SSL object bound to the socket fd (the layer state of a transport).
 * Thread: contexts are shared between threads; an SSL object is used only
 * by the reactor thread of its transport.
 * Invariants: renegotiation is always refused; a handshake or record error
 * leaves the reason text in a thread-local string (knit_tls_last_error)
 * and is logged once; the layer never blocks — SSL_ERROR_WANT_* becomes
 * KNIT_EAGAIN plus t->layer_want.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "knit/error.h"
#include "knit/log.h"
#include "tls/tls_int.h"

struct knit_tls_ctx {
    SSL_CTX *ssl;
    atomic_int refs;
    bool server;
    bool verify;
    unsigned char *alpn_wire; /* length-prefixed list */
    size_t alpn_len;
    /* client session cache: last session per host (one slot is enough for
     * a client that keeps talking to one service; misses are harmless) */
    pthread_mutex_t mu;
    char *sess_host;
    SSL_SESSION *sess;
    /* server: certificates chosen by the client's SNI (sni_dir) */
    size_t nsni;
    struct sni_entry {
        char *name; /* lower case; "*.example.org" matches one label */
        struct knit_tls_ctx *ctx;
    } *sni;
};

static _Thread_local char last_err[256];

const char *knit_tls_last_error(void)
{
    return last_err;
}

/* Drain OpenSSL's error queue into last_err (and ERR if given). */
static void take_error(const char *what, char *err, size_t n)
{
    unsigned long e, first = 0;
    while ((e = ERR_get_error()) != 0)
        if (!first) first = e;
    char reason[200] = "";
    if (first)
        ERR_error_string_n(first, reason, sizeof reason);
    else if (errno)
        snprintf(reason, sizeof reason, "%s", strerror(errno));
    else
        snprintf(reason, sizeof reason, "unknown error");
    snprintf(last_err, sizeof last_err, "%s: %s", what, reason);
    if (err && n) snprintf(err, n, "%s", last_err);
}

void knit_tls_options_init(knit_tls_options *o)
{
    memset(o, 0, sizeof *o);
    o->min_version = KNIT_TLS_MIN_VERSION;
    o->verify = true;
}

static int parse_alpn(knit_tls_ctx *c, const char *list)
{
    size_t n = strlen(list);
    c->alpn_wire = malloc(n + 1);
    if (!c->alpn_wire) return KNIT_ENOMEM;
    size_t w = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == 0 || l > 255) return KNIT_EINVAL;
        c->alpn_wire[w++] = (unsigned char)l;
        memcpy(c->alpn_wire + w, p, l);
        w += l;
        p += l;
        if (*p == ',') p++;
    }
    c->alpn_len = w;
    return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    knit_tls_ctx *c = arg;
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, c->alpn_wire, (unsigned)c->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no overlap: continue without ALPN */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    knit_tls_ctx *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const char *host = SSL_get_app_data(ssl);
    if (!c || !host) return 0;
    pthread_mutex_lock(&c->mu);
    if (c->sess) SSL_SESSION_free(c->sess);
    free(c->sess_host);
    c->sess = sess;
    c->sess_host = strdup(host);
    pthread_mutex_unlock(&c->mu);
    return 1; /* we keep the reference */
}

/* SNI: switch the handshake to the context whose certificate names the
 * host the client asked for; unknown names keep the default certificate. */
static bool sni_match(const char *pattern, const char *host)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *dot = strchr(host, '.');
        return dot && dot != host && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    knit_tls_ctx *c = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!host) return SSL_TLSEXT_ERR_NOACK;
    for (size_t i = 0; i < c->nsni; i++) {
        if (sni_match(c->sni[i].name, host)) {
            SSL_set_SSL_CTX(ssl, c->sni[i].ctx->ssl);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* default certificate */
}

static int ctx_new(knit_tls_ctx **out, const knit_tls_options *o, bool server, char *err,
                   size_t n);

/* One context per DIR/NAME.pem (certificate chain and key in one file). */
static int load_sni_dir(knit_tls_ctx *c, const knit_tls_options *o, char *err, size_t n)
{
    DIR *d = opendir(o->sni_dir);
    if (!d) {
        snprintf(err, n, "sniCertDir %s: %s", o->sni_dir, strerror(errno));
        return -errno;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".pem") != 0 || e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", o->sni_dir, e->d_name);
        knit_tls_options so = *o;
        so.cert_file = so.key_file = path;
        so.chain_file = NULL;
        so.sni_dir = NULL;
        knit_tls_ctx *sub;
        if ((rc = ctx_new(&sub, &so, true, err, n)) < 0) break;
        struct sni_entry *grown = realloc(c->sni, (c->nsni + 1) * sizeof *grown);
        char *name = strndup(e->d_name, len - 4);
        if (!grown || !name) {
            if (grown) c->sni = grown;
            free(name);
            knit_tls_ctx_unref(sub);
            rc = KNIT_ENOMEM;
            break;
        }
        for (char *p = name; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
        c->sni = grown;
        c->sni[c->nsni].name = name;
        c->sni[c->nsni].ctx = sub;
        c->nsni++;
    }
    closedir(d);
    if (rc == 0) {
        SSL_CTX_set_tlsext_servername_callback(c->ssl, on_servername);
        SSL_CTX_set_tlsext_servername_arg(c->ssl, c);
    }
    return rc;
}

static int ctx_new(knit_tls_ctx **out, const knit_tls_options *o, bool server, char *err, size_t n)
{
    knit_tls_options def;
    if (!o) {
        knit_tls_options_init(&def);
        o = &def;
    }
    ERR_clear_error();
    knit_tls_ctx *c = calloc(1, sizeof *c);
    if (!c) return KNIT_ENOMEM;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    c->server = server;
    c->verify = o->verify;
    int rc = KNIT_ETLS;
    c->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!c->ssl) {
        take_error("SSL_CTX_new", err, n);
        goto fail;
    }
    SSL_CTX_set_app_data(c->ssl, c);
    int minv = TLS1_2_VERSION;
    if (o->min_version && strcmp(o->min_version, "TLSv1.3") == 0)
        minv = TLS1_3_VERSION;
    else if (o->min_version && strcmp(o->min_version, "TLSv1.2") != 0) {
        snprintf(err, n, "minVersion \"%s\": expected TLSv1.2 or TLSv1.3", o->min_version);
        rc = KNIT_EINVAL;
        goto fail;
    }
    SSL_CTX_set_min_proto_version(c->ssl, minv);
    SSL_CTX_set_options(c->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                    SSL_OP_NO_COMPRESSION |
                                    (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    SSL_CTX_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->ciphers && SSL_CTX_set_cipher_list(c->ssl, o->ciphers) != 1) {
        take_error("ciphers", err, n);
        goto fail;
    }
    if (o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(c->ssl, o->cert_file) != 1) {
            char what[300];
            snprintf(what, sizeof what, "certificate %s", o->cert_file);
            take_error(what, err, n);
            goto fail;
        }
        const char *key = o->key_file ? o->key_file : o->cert_file;
        if (SSL_CTX_use_PrivateKey_file(c->ssl, key, SSL_FILETYPE_PEM) != 1) {
            char what[300];
            snprintf(what, sizeof what, "private key %s", key);
            take_error(what, err, n);
            goto fail;
        }
        if (SSL_CTX_check_private_key(c->ssl) != 1) {
            take_error("private key does not match the certificate", err, n);
            goto fail;
        }
    } else if (o->key_file && server) {
        /* Twisted's ssl: with privateKey only: the file holds both. */
        if (SSL_CTX_use_certificate_chain_file(c->ssl, o->key_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(c->ssl, o->key_file, SSL_FILETYPE_PEM) != 1) {
            char what[300];
            snprintf(what, sizeof what, "certificate/key %s", o->key_file);
            take_error(what, err, n);
            goto fail;
        }
    } else if (server) {
        snprintf(err, n, "a server context needs a certificate and a private key");
        rc = KNIT_EINVAL;
        goto fail;
    }
    if (o->chain_file) {
        FILE *f = fopen(o->chain_file, "r");
        if (!f) {
            snprintf(err, n, "extraCertChain %s: %s", o->chain_file, strerror(errno));
            rc = -errno;
            goto fail;
        }
        X509 *x;
        while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
            if (SSL_CTX_add0_chain_cert(c->ssl, x) != 1) X509_free(x);
        fclose(f);
        ERR_clear_error(); /* PEM_read_X509 leaves "no start line" at EOF */
    }
    if (o->ca_file || o->ca_dir) {
        if (SSL_CTX_load_verify_locations(c->ssl, o->ca_file, o->ca_dir) != 1) {
            take_error("CA certificates", err, n);
            goto fail;
        }
    } else if (!server) {
        SSL_CTX_set_default_verify_paths(c->ssl);
    }
    if (o->alpn && *o->alpn) {
        if ((rc = parse_alpn(c, o->alpn)) < 0) {
            snprintf(err, n, "alpn \"%s\": expected a comma-separated list", o->alpn);
            goto fail;
        }
        rc = KNIT_ETLS;
        if (server) {
            SSL_CTX_set_alpn_select_cb(c->ssl, alpn_select, c);
        } else if (SSL_CTX_set_alpn_protos(c->ssl, c->alpn_wire, (unsigned)c->alpn_len) != 0) {
            take_error("alpn", err, n);
            goto fail;
        }
    }
    if (server) {
        static const unsigned char sid[] = "knit";
        SSL_CTX_set_session_id_context(c->ssl, sid, sizeof sid - 1);
        SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_SERVER);
        if (o->verify && (o->ca_file || o->ca_dir))
            SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        if (o->sni_dir && (rc = load_sni_dir(c, o, err, n)) < 0) goto fail;
    } else {
        SSL_CTX_set_verify(c->ssl, o->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(c->ssl,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c->ssl, new_session_cb);
    }
    *out = c;
    return 0;
fail:
    knit_tls_ctx_unref(c);
    return rc;
}

int knit_tls_server_ctx_new(knit_tls_ctx **out, const knit_tls_options *o, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) err = dummy, errlen = sizeof dummy;
    return ctx_new(out, o, true, err, errlen);
}

int knit_tls_client_ctx_new(knit_tls_ctx **out, const knit_tls_options *o, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) err = dummy, errlen = sizeof dummy;
    return ctx_new(out, o, false, err, errlen);
}

knit_tls_ctx *knit_tls_ctx_ref(knit_tls_ctx *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void knit_tls_ctx_unref(knit_tls_ctx *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    if (c->ssl) SSL_CTX_free(c->ssl);
    if (c->sess) SSL_SESSION_free(c->sess);
    free(c->sess_host);
    free(c->alpn_wire);
    for (size_t i = 0; i < c->nsni; i++) {
        free(c->sni[i].name);
        knit_tls_ctx_unref(c->sni[i].ctx);
    }
    free(c->sni);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void *knit_tls_ctx_ssl_ctx(knit_tls_ctx *c)
{
    return c->ssl;
}
bool knit__tls_ctx_is_server(const knit_tls_ctx *c)
{
    return c->server;
}

/* ---- the layer ----------------------------------------------------------- */

typedef struct tls_state {
    SSL *ssl;
    char *host;        /* client: SNI/verification name; also SSL app data */
    knit_tls_ctx *ctx; /* a reference: OpenSSL's callbacks read it while SSL lives */
} tls_state;

static SSL *ssl_of(const knit_transport *t)
{
    return ((tls_state *)t->ext->layer_state)->ssl;
}

/* Map SSL_get_error to knit: EAGAIN (+want), 0 (EOF) or an error. */
static int map_err(knit_transport *t, int ret, const char *what)
{
    SSL *ssl = ssl_of(t);
    int e = SSL_get_error(ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        t->layer_want = KNIT_READABLE;
        return KNIT_EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        t->layer_want = KNIT_WRITABLE;
        return KNIT_EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            int en = errno;
            ERR_clear_error();
            if (en == 0 || en == ECONNRESET || en == EPIPE) return KNIT_ECONNRESET;
            return -en;
        }
        /* fallthrough */
    default: {
        take_error(what, NULL, 0);
        long vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK) {
            size_t l = strlen(last_err);
            snprintf(last_err + l, sizeof last_err - l, " (%s)", X509_verify_cert_error_string(vr));
        }
        KNIT_INFO("tls", "%s", last_err);
        return KNIT_ETLS;
    }
    }
}

static int l_handshake(knit_transport *t)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_of(t));
    if (r == 1) return 0;
    int rc = map_err(t, r, "TLS handshake");
    return rc == 0 ? KNIT_ECONNRESET : rc;
}

static ssize_t l_recv(knit_transport *t, void *buf, size_t n)
{
    ERR_clear_error();
    size_t got = 0;
    int r = SSL_read_ex(ssl_of(t), buf, n, &got);
    if (r == 1) {
        if (t->layer_want == KNIT_READABLE) t->layer_want = 0;
        return (ssize_t)got;
    }
    int rc = map_err(t, 0, "TLS read");
    if (rc == KNIT_EAGAIN && t->layer_want == KNIT_READABLE) t->layer_want = 0; /* normal */
    return rc;
}

static ssize_t l_send(knit_transport *t, const void *buf, size_t n)
{
    ERR_clear_error();
    size_t done = 0;
    int r = SSL_write_ex(ssl_of(t), buf, n, &done);
    if (r == 1) return (ssize_t)done;
    int rc = map_err(t, 0, "TLS write");
    if (rc == KNIT_EAGAIN && t->layer_want == KNIT_WRITABLE)
        t->layer_want = 0; /* out buffer waits */
    return rc == 0 ? KNIT_EPIPE : rc;
}

static int l_shutdown(knit_transport *t)
{
    ERR_clear_error();
    SSL *ssl = ssl_of(t);
    if (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) return 0;
    int r = SSL_shutdown(ssl);
    if (r >= 0) return 0; /* close_notify sent; we do not wait for the peer's */
    int rc = map_err(t, r, "TLS shutdown");
    return rc == KNIT_EAGAIN ? rc : 0;
}

static bool l_pending(knit_transport *t)
{
    return SSL_pending(ssl_of(t)) > 0;
}

static void l_free(knit_transport *t)
{
    tls_state *s = t->ext ? t->ext->layer_state : NULL;
    if (!s) return;
    SSL_free(s->ssl);
    free(s->host);
    knit_tls_ctx_unref(s->ctx);
    free(s);
    t->ext->layer_state = NULL;
}

static const knit__layer_ops tls_ops = {"tls",      l_handshake, l_recv, l_send,
                                        l_shutdown, l_pending,   NULL,   l_free};

int knit__tls_layer_new(knit_tls_ctx *c, int fd, const char *host, const knit__layer_ops **ops,
                        void **state)
{
    tls_state *s = calloc(1, sizeof *s);
    if (!s) return KNIT_ENOMEM;
    s->ctx = knit_tls_ctx_ref(c);
    int rc = KNIT_ETLS;
    ERR_clear_error();
    s->ssl = SSL_new(c->ssl);
    if (!s->ssl || SSL_set_fd(s->ssl, fd) != 1) goto fail;
    if (c->server) {
        SSL_set_accept_state(s->ssl);
    } else {
        SSL_set_connect_state(s->ssl);
        if (host && *host) {
            s->host = strdup(host);
            if (!s->host) {
                rc = KNIT_ENOMEM;
                goto fail;
            }
            SSL_set_app_data(s->ssl, s->host);
            unsigned char ip[16];
            bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
            if (!is_ip) SSL_set_tlsext_host_name(s->ssl, host);
            if (c->verify) {
                X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
                if (is_ip)
                    X509_VERIFY_PARAM_set1_ip_asc(vp, host);
                else
                    SSL_set1_host(s->ssl, host);
            }
            pthread_mutex_lock(&c->mu);
            if (c->sess && c->sess_host && strcmp(c->sess_host, host) == 0)
                SSL_set_session(s->ssl, c->sess);
            pthread_mutex_unlock(&c->mu);
        }
    }
    *ops = &tls_ops;
    *state = s;
    return 0;
fail:
    if (rc == KNIT_ETLS) take_error("SSL_new", NULL, 0);
    if (s->ssl) SSL_free(s->ssl);
    free(s->host);
    knit_tls_ctx_unref(s->ctx);
    free(s);
    return rc;
}

/* ---- session queries ---------------------------------------------------------- */

static SSL *tls_of(const knit_transport *t)
{
    if (!t->ext || t->ext->layer != &tls_ops || !t->ext->layer_state) return NULL;
    return ssl_of(t);
}

int knit_tls_alpn(const knit_transport *t, char *out, size_t n)
{
    SSL *ssl = tls_of(t);
    if (!ssl) return KNIT_ENOTSUP;
    const unsigned char *p;
    unsigned len;
    SSL_get0_alpn_selected(ssl, &p, &len);
    if (n) snprintf(out, n, "%.*s", (int)len, p ? (const char *)p : "");
    return 0;
}

const char *knit_tls_version(const knit_transport *t)
{
    SSL *ssl = tls_of(t);
    return ssl ? SSL_get_version(ssl) : NULL;
}

bool knit_tls_session_reused(const knit_transport *t)
{
    SSL *ssl = tls_of(t);
    return ssl && SSL_session_reused(ssl);
}

const char *knit_tls_server_name(const knit_transport *t)
{
    SSL *ssl = tls_of(t);
    return ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}
