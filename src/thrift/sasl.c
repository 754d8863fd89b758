/* sasl.c — the Thrift SASL transport negotiation as a state machine over
 * bytes, with Cyrus SASL doing the mechanisms.
 *
 * Owns: one sasl_conn_t per knit_thrift_sasl and the per-connection callback
 * table it points at (so the table lives exactly as long as the connection).
 * Runs on whichever thread feeds it (the reactor for the server).
 *
 * Invariants:
 *   - a negotiation message is processed only when all of it has arrived, and
 *     its declared length is checked against max_negotiation before waiting
 *     for it (a peer cannot make us buffer more);
 *   - the server reports DONE only after libsasl2 returned SASL_OK and the
 *     COMPLETE message has been queued; nothing before that is data;
 *   - after a failure every call fails (state FAILED).
 */
#include "knit/thrift/sasl.h"

#include <pthread.h>
#include <sasl/sasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "knit/log.h"

/* libsasl2 stores every callback as int (*)(void); going through void (*)(void)
 * keeps -Wcast-function-type quiet about the documented practice. */
#define CB(f) ((int (*)(void))(void (*)(void))(f))

enum state { WANT_START, WANT_RESPONSE, CLIENT_WAIT, DONE, FAILED };

struct knit_thrift_sasl {
    bool server;
    enum state st;
    bool first_response;
    sasl_conn_t *conn;
    sasl_callback_t cbs[8];
    char *service, *fqdn, *realm, *mechs, *sasldb, *user, *pass, *authzid;
    sasl_secret_t *secret; /* client password in libsasl2's shape */
    knit_thrift_sasl_check_fn check;
    void *check_arg;
    uint32_t max_neg, max_frame;
    unsigned min_ssf, max_ssf;
    char mech[64];
    unsigned ssf;
    unsigned maxout;
    char err[160];
};

/* ---- process-wide init ---------------------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

static int log_cb(void *ctx, int level, const char *message)
{
    (void)ctx;
    if (level <= SASL_LOG_ERR)
        KNIT_WARN("thrift", "sasl: %s", message);
    else if (level <= SASL_LOG_NOTE)
        KNIT_DEBUG("thrift", "sasl: %s", message);
    return SASL_OK;
}

static void do_init(void)
{
    static const sasl_callback_t global[] = {
        {SASL_CB_LOG, CB(log_cb), NULL},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    int rc = sasl_server_init(global, "knit");
    if (rc == SASL_OK) rc = sasl_client_init(global);
    init_rc = rc;
    if (rc != SASL_OK) KNIT_ERROR("thrift", "sasl init failed: %s", sasl_errstring(rc, NULL, NULL));
}

/* ---- callbacks -------------------------------------------------------------------- */

static int getopt_cb(void *ctx, const char *plugin, const char *option, const char **result,
                     unsigned *len)
{
    knit_thrift_sasl *s = ctx;
    (void)plugin;
    const char *v = NULL;
    if (strcmp(option, "sasldb_path") == 0 && s->sasldb)
        v = s->sasldb;
    else if (strcmp(option, "auxprop_plugin") == 0 && s->sasldb)
        v = "sasldb";
    else if (strcmp(option, "pwcheck_method") == 0)
        v = "auxprop";
    else if (strcmp(option, "mech_list") == 0 && s->server)
        v = s->mechs;
    if (!v) return SASL_FAIL;
    *result = v;
    if (len) *len = (unsigned)strlen(v);
    return SASL_OK;
}

static int checkpass_cb(sasl_conn_t *conn, void *ctx, const char *user, const char *pass,
                        unsigned passlen, struct propctx *propctx)
{
    knit_thrift_sasl *s = ctx;
    (void)conn;
    (void)propctx;
    if (!s->check) return SASL_NOUSER; /* fall back to sasldb */
    return s->check(s->check_arg, user, pass, passlen) == 0 ? SASL_OK : SASL_BADAUTH;
}

static int simple_cb(void *ctx, int id, const char **result, unsigned *len)
{
    knit_thrift_sasl *s = ctx;
    const char *v = NULL;
    switch (id) {
    case SASL_CB_USER:
        v = s->authzid ? s->authzid : "";
        break;
    case SASL_CB_AUTHNAME:
        v = s->user;
        break;
    default:
        return SASL_BADPARAM;
    }
    if (!v) return SASL_FAIL;
    *result = v;
    if (len) *len = (unsigned)strlen(v);
    return SASL_OK;
}

static int pass_cb(sasl_conn_t *conn, void *ctx, int id, sasl_secret_t **psecret)
{
    knit_thrift_sasl *s = ctx;
    (void)conn;
    if (id != SASL_CB_PASS || !s->secret) return SASL_BADPARAM;
    *psecret = s->secret;
    return SASL_OK;
}

/* ---- helpers ----------------------------------------------------------------------- */

void knit_thrift_sasl_options_init(knit_thrift_sasl_options *o)
{
    memset(o, 0, sizeof *o);
    o->service = "thrift";
    o->server_fqdn = "localhost";
    o->max_negotiation = KNIT_THRIFT_SASL_MAX_NEGOTIATION;
    o->max_frame = KNIT_THRIFT_MAX_FRAME_DEFAULT;
    o->max_ssf = 256;
}

static char *dup_or_null(const char *s, bool *bad)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *bad = true;
    return d;
}

static void set_err(knit_thrift_sasl *s, const char *what, int rc)
{
    const char *detail = s->conn ? sasl_errdetail(s->conn) : sasl_errstring(rc, NULL, NULL);
    snprintf(s->err, sizeof s->err, "%s: %s", what, detail ? detail : "?");
}

static void put_msg(knit_thrift_writer *out, uint8_t status, const void *p, size_t len)
{
    uint8_t h[5];
    h[0] = status;
    knit_thrift_put_be32(h + 1, (uint32_t)len);
    knit_thrift_write_raw(out, h, 5);
    knit_thrift_write_raw(out, p, len);
}

static int fail(knit_thrift_sasl *s, knit_thrift_writer *out, uint8_t status, int code,
                const char *reason)
{
    if (!s->err[0]) snprintf(s->err, sizeof s->err, "%s", reason);
    if (out) put_msg(out, status, reason, strlen(reason));
    s->st = FAILED;
    return code;
}

static knit_thrift_sasl *alloc_common(const knit_thrift_sasl_options *o, bool server)
{
    knit_thrift_sasl_options d;
    if (!o) {
        knit_thrift_sasl_options_init(&d);
        o = &d;
    }
    knit_thrift_sasl *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    bool bad = false;
    s->server = server;
    s->service = dup_or_null(o->service ? o->service : "thrift", &bad);
    s->fqdn = dup_or_null(o->server_fqdn ? o->server_fqdn : "localhost", &bad);
    s->realm = dup_or_null(o->realm, &bad);
    s->mechs = dup_or_null(o->mechanisms ? o->mechanisms
                           : server      ? "PLAIN SCRAM-SHA-256"
                                         : "SCRAM-SHA-256 PLAIN",
                           &bad);
    s->sasldb = dup_or_null(o->sasldb_path, &bad);
    s->user = dup_or_null(o->username, &bad);
    s->pass = dup_or_null(o->password, &bad);
    s->authzid = dup_or_null(o->authzid, &bad);
    s->check = o->check_password;
    s->check_arg = o->check_arg;
    s->max_neg = o->max_negotiation ? o->max_negotiation : KNIT_THRIFT_SASL_MAX_NEGOTIATION;
    s->max_frame = o->max_frame ? o->max_frame : KNIT_THRIFT_MAX_FRAME_DEFAULT;
    s->min_ssf = o->min_ssf;
    s->max_ssf = o->max_ssf;
    if (s->pass) {
        size_t n = strlen(s->pass);
        s->secret = malloc(sizeof(sasl_secret_t) + n);
        if (s->secret) {
            s->secret->len = n;
            memcpy(s->secret->data, s->pass, n + 1);
        } else {
            bad = true;
        }
    }
    if (bad) {
        knit_thrift_sasl_free(s);
        return NULL;
    }
    return s;
}

static int set_secprops(knit_thrift_sasl *s)
{
    sasl_security_properties_t sp;
    memset(&sp, 0, sizeof sp);
    sp.min_ssf = s->min_ssf;
    sp.max_ssf = s->max_ssf;
    sp.maxbufsize = s->max_ssf ? 65536 : 0;
    return sasl_setprop(s->conn, SASL_SEC_PROPS, &sp);
}

int knit_thrift_sasl_server_new(const knit_thrift_sasl_options *o, knit_thrift_sasl **out)
{
    *out = NULL;
    pthread_once(&init_once, do_init);
    if (init_rc != SASL_OK) return KNIT_ESASL;
    knit_thrift_sasl *s = alloc_common(o, true);
    if (!s) return KNIT_ENOMEM;
    int i = 0;
    s->cbs[i++] = (sasl_callback_t){SASL_CB_GETOPT, CB(getopt_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_SERVER_USERDB_CHECKPASS, CB(checkpass_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_LOG, CB(log_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};
    int rc = sasl_server_new(s->service, s->fqdn, s->realm, NULL, NULL, s->cbs, 0, &s->conn);
    if (rc == SASL_OK) rc = set_secprops(s);
    if (rc != SASL_OK) {
        knit_thrift_sasl_free(s);
        return KNIT_ESASL;
    }
    s->st = WANT_START;
    *out = s;
    return 0;
}

int knit_thrift_sasl_client_new(const knit_thrift_sasl_options *o, knit_thrift_sasl **out)
{
    *out = NULL;
    pthread_once(&init_once, do_init);
    if (init_rc != SASL_OK) return KNIT_ESASL;
    knit_thrift_sasl *s = alloc_common(o, false);
    if (!s) return KNIT_ENOMEM;
    int i = 0;
    s->cbs[i++] = (sasl_callback_t){SASL_CB_GETOPT, CB(getopt_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_USER, CB(simple_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_AUTHNAME, CB(simple_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_PASS, CB(pass_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_LOG, CB(log_cb), s};
    s->cbs[i++] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};
    int rc = sasl_client_new(s->service, s->fqdn, NULL, NULL, s->cbs, 0, &s->conn);
    if (rc == SASL_OK) rc = set_secprops(s);
    if (rc != SASL_OK) {
        knit_thrift_sasl_free(s);
        return KNIT_ESASL;
    }
    s->st = CLIENT_WAIT;
    *out = s;
    return 0;
}

void knit_thrift_sasl_free(knit_thrift_sasl *s)
{
    if (!s) return;
    if (s->conn) sasl_dispose(&s->conn);
    free(s->service);
    free(s->fqdn);
    free(s->realm);
    free(s->mechs);
    free(s->sasldb);
    free(s->user);
    if (s->pass) explicit_bzero(s->pass, strlen(s->pass));
    free(s->pass);
    if (s->secret) explicit_bzero(s->secret->data, s->secret->len);
    free(s->secret);
    free(s->authzid);
    free(s);
}

/* Record the negotiated security strength and buffer size. */
static void finish(knit_thrift_sasl *s)
{
    const void *p = NULL;
    s->ssf = 0;
    if (sasl_getprop(s->conn, SASL_SSF, &p) == SASL_OK && p) s->ssf = *(const sasl_ssf_t *)p;
    s->maxout = 65536;
    if (sasl_getprop(s->conn, SASL_MAXOUTBUF, &p) == SASL_OK && p && *(const unsigned *)p)
        s->maxout = *(const unsigned *)p;
    s->st = DONE;
}

/* Mechanism names are 1..20 of [A-Z0-9_-] (RFC 4422). */
static bool mech_name_ok(const uint8_t *p, size_t n)
{
    if (n < 1 || n > 20) return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

static bool mech_offered(const char *list, const char *mech)
{
    size_t ml = strlen(mech);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != ',')
            e++;
        if ((size_t)(e - p) == ml && strncasecmp(p, mech, ml) == 0) return true;
        p = e;
    }
    return false;
}

static int server_msg(knit_thrift_sasl *s, uint8_t status, const uint8_t *p, size_t n,
                      knit_thrift_writer *out)
{
    const char *sout = NULL;
    unsigned soutlen = 0;
    int rc;
    if (s->st == WANT_START) {
        if (status != KNIT_THRIFT_SASL_START)
            return fail(s, out, KNIT_THRIFT_SASL_ERROR, KNIT_ETHRIFT, "expected START");
        if (!mech_name_ok(p, n))
            return fail(s, out, KNIT_THRIFT_SASL_BAD, KNIT_ESASL, "bad mechanism name");
        memcpy(s->mech, p, n);
        s->mech[n] = 0;
        if (!mech_offered(s->mechs, s->mech))
            return fail(s, out, KNIT_THRIFT_SASL_BAD, KNIT_ESASL, "mechanism not offered");
        s->st = WANT_RESPONSE;
        s->first_response = true;
        return KNIT_THRIFT_SASL_MORE;
    }
    /* WANT_RESPONSE: the client's (initial) response, with OK or COMPLETE */
    if (status != KNIT_THRIFT_SASL_OK && status != KNIT_THRIFT_SASL_COMPLETE)
        return fail(s, out, KNIT_THRIFT_SASL_ERROR, KNIT_ETHRIFT, "expected OK or COMPLETE");
    if (s->first_response) {
        s->first_response = false;
        /* an empty initial response means "none" (server-first mechanisms) */
        rc = sasl_server_start(s->conn, s->mech, n ? (const char *)p : NULL, (unsigned)n, &sout,
                               &soutlen);
    } else {
        rc = sasl_server_step(s->conn, (const char *)p, (unsigned)n, &sout, &soutlen);
    }
    if (rc == SASL_OK) {
        put_msg(out, KNIT_THRIFT_SASL_COMPLETE, sout, soutlen);
        finish(s);
        return KNIT_THRIFT_SASL_DONE;
    }
    if (rc == SASL_CONTINUE) {
        put_msg(out, KNIT_THRIFT_SASL_OK, sout, soutlen);
        return KNIT_THRIFT_SASL_MORE;
    }
    set_err(s, "authentication failed", rc);
    return fail(s, out, KNIT_THRIFT_SASL_BAD, KNIT_ESASL, "authentication failed");
}

int knit_thrift_sasl_client_start(knit_thrift_sasl *s, knit_thrift_writer *out)
{
    if (s->server || s->st != CLIENT_WAIT || s->mech[0]) return KNIT_EINVAL;
    const char *cout = NULL, *mech = NULL;
    unsigned coutlen = 0;
    sasl_interact_t *inter = NULL;
    int rc = sasl_client_start(s->conn, s->mechs, &inter, &cout, &coutlen, &mech);
    if (rc != SASL_OK && rc != SASL_CONTINUE) {
        set_err(s, "client start", rc);
        s->st = FAILED;
        return KNIT_ESASL;
    }
    snprintf(s->mech, sizeof s->mech, "%s", mech);
    put_msg(out, KNIT_THRIFT_SASL_START, s->mech, strlen(s->mech));
    put_msg(out, rc == SASL_OK ? KNIT_THRIFT_SASL_COMPLETE : KNIT_THRIFT_SASL_OK, cout, coutlen);
    return out->err;
}

static int client_msg(knit_thrift_sasl *s, uint8_t status, const uint8_t *p, size_t n,
                      knit_thrift_writer *out)
{
    if (!s->mech[0]) return fail(s, NULL, 0, KNIT_EINVAL, "client not started");
    if (status == KNIT_THRIFT_SASL_BAD || status == KNIT_THRIFT_SASL_ERROR) {
        snprintf(s->err, sizeof s->err, "server refused: %.*s", (int)(n > 100 ? 100 : n),
                 (const char *)p);
        s->st = FAILED;
        return KNIT_ESASL;
    }
    if (status != KNIT_THRIFT_SASL_OK && status != KNIT_THRIFT_SASL_COMPLETE)
        return fail(s, out, KNIT_THRIFT_SASL_ERROR, KNIT_ETHRIFT, "unexpected status");
    const char *cout = NULL;
    unsigned coutlen = 0;
    sasl_interact_t *inter = NULL;
    int rc = SASL_OK;
    if (status == KNIT_THRIFT_SASL_OK || n > 0)
        rc = sasl_client_step(s->conn, (const char *)p, (unsigned)n, &inter, &cout, &coutlen);
    if (status == KNIT_THRIFT_SASL_COMPLETE) {
        if (rc != SASL_OK) {
            set_err(s, "server's final message rejected", rc);
            s->st = FAILED;
            return KNIT_ESASL;
        }
        finish(s);
        return KNIT_THRIFT_SASL_DONE;
    }
    if (rc != SASL_OK && rc != SASL_CONTINUE) {
        set_err(s, "client step", rc);
        return fail(s, out, KNIT_THRIFT_SASL_BAD, KNIT_ESASL, "client authentication failed");
    }
    put_msg(out, rc == SASL_OK ? KNIT_THRIFT_SASL_COMPLETE : KNIT_THRIFT_SASL_OK, cout, coutlen);
    return KNIT_THRIFT_SASL_MORE;
}

int knit_thrift_sasl_feed(knit_thrift_sasl *s, const uint8_t *in, size_t len, size_t *consumed,
                          knit_thrift_writer *out)
{
    *consumed = 0;
    if (s->st == FAILED) return KNIT_ESASL;
    if (s->st == DONE) return KNIT_THRIFT_SASL_DONE;
    size_t off = 0;
    for (;;) {
        if (len - off < 5) return KNIT_THRIFT_SASL_MORE;
        uint8_t status = in[off];
        uint32_t n = knit_thrift_get_be32(in + off + 1);
        if (status < KNIT_THRIFT_SASL_START || status > KNIT_THRIFT_SASL_COMPLETE)
            return fail(s, out, KNIT_THRIFT_SASL_ERROR, KNIT_ETHRIFT, "bad status byte");
        if (n > s->max_neg)
            return fail(s, out, KNIT_THRIFT_SASL_ERROR, KNIT_ELIMIT,
                        "negotiation message too large");
        if (len - off - 5 < n) return KNIT_THRIFT_SASL_MORE;
        const uint8_t *p = in + off + 5;
        off += 5 + (size_t)n;
        *consumed = off;
        int rc = s->server ? server_msg(s, status, p, n, out) : client_msg(s, status, p, n, out);
        if (rc != KNIT_THRIFT_SASL_MORE) return rc;
    }
}

const char *knit_thrift_sasl_username(const knit_thrift_sasl *s)
{
    if (s->st != DONE) return NULL;
    if (!s->server) return s->user;
    const void *p = NULL;
    if (sasl_getprop(s->conn, SASL_USERNAME, &p) != SASL_OK) return NULL;
    return p;
}

const char *knit_thrift_sasl_mechanism(const knit_thrift_sasl *s)
{
    return s->mech;
}
unsigned knit_thrift_sasl_ssf(const knit_thrift_sasl *s)
{
    return s->ssf;
}
const char *knit_thrift_sasl_error(const knit_thrift_sasl *s)
{
    return s->err;
}

int knit_thrift_sasl_wrap(knit_thrift_sasl *s, const uint8_t *msg, size_t len,
                          knit_thrift_writer *out)
{
    if (s->st != DONE) return KNIT_EINVAL;
    if (len > INT32_MAX) return KNIT_ELIMIT;
    if (s->ssf == 0) {
        uint8_t h[4];
        knit_thrift_put_be32(h, (uint32_t)len);
        knit_thrift_write_raw(out, h, 4);
        knit_thrift_write_raw(out, msg, len);
        return out->err;
    }
    /* length placeholder, then the encoded chunks (each at most maxout bytes of input) */
    size_t at = out->len;
    uint8_t zero[4] = {0};
    knit_thrift_write_raw(out, zero, 4);
    size_t off = 0;
    do {
        size_t chunk = len - off < s->maxout ? len - off : s->maxout;
        const char *enc;
        unsigned enclen;
        int rc = sasl_encode(s->conn, (const char *)msg + off, (unsigned)chunk, &enc, &enclen);
        if (rc != SASL_OK) {
            set_err(s, "encode", rc);
            out->len = at;
            return KNIT_ESASL;
        }
        knit_thrift_write_raw(out, enc, enclen);
        off += chunk;
    } while (off < len);
    if (out->err) return out->err;
    size_t total = out->len - at - 4;
    if (total > INT32_MAX) return KNIT_ELIMIT;
    knit_thrift_put_be32(out->data + at, (uint32_t)total);
    return 0;
}

int knit_thrift_sasl_unwrap(knit_thrift_sasl *s, const uint8_t *in, size_t len, size_t *consumed,
                            const uint8_t **msg, size_t *msg_len)
{
    *consumed = 0;
    if (s->st != DONE) return KNIT_EINVAL;
    if (len < 4) return 0;
    uint32_t n = knit_thrift_get_be32(in);
    if (n > s->max_frame) return KNIT_ELIMIT;
    if (len - 4 < n) return 0;
    if (s->ssf == 0) {
        *msg = in + 4;
        *msg_len = n;
    } else {
        const char *dec;
        unsigned declen;
        int rc = sasl_decode(s->conn, (const char *)in + 4, n, &dec, &declen);
        if (rc != SASL_OK) {
            set_err(s, "decode", rc);
            return KNIT_ESASL;
        }
        *msg = (const uint8_t *)dec;
        *msg_len = declen;
    }
    *consumed = 4 + (size_t)n;
    return 1;
}
