/* endpoint_int.h — internals shared by the endpoint sources. */
#ifndef KNIT_ENDPOINT_INT_H
#define KNIT_ENDPOINT_INT_H

#include "knit/endpoint.h"

/* Shape of a built-in kind: positional parameter names (the first NREQ are
 * required, as argument or as name=value), allowed options, usage text. */
typedef struct ep_spec {
    const char *pos[3];
    size_t npos, nreq;
    const char *const *opts; /* NULL-terminated */
    const char *usage;
} ep_spec;

const knit_endpoint_kind *const *knit__endpoint_builtin_kinds(void);
const knit_endpoint_kind *knit__endpoint_find_kind(const char *name);
int knit__endpoint_parse_kind(const char *desc, bool server, knit_endpoint_desc **out,
                              const knit_endpoint_kind **kind, char *err, size_t errlen);

const char *knit__ep_param(const knit_endpoint_desc *d, const ep_spec *s, const char *name);
int knit__ep_check_shape(const knit_endpoint_desc *d, const ep_spec *s, char *err, size_t n);
bool knit__ep_parse_uint(const char *v, unsigned long max, unsigned long *out);
int knit__ep_check_port(const knit_endpoint_desc *d, const char *v, bool allow_zero, char *err,
                        size_t n);
int knit__ep_check_uint(const knit_endpoint_desc *d, const char *name, const char *v,
                        unsigned long lo, unsigned long hi, char *err, size_t n);
int knit__ep_check_bool(const knit_endpoint_desc *d, const char *name, const char *v, bool *out,
                        char *err, size_t n);
int knit__ep_check_ip(const knit_endpoint_desc *d, const char *name, const char *v, int family,
                      char *err, size_t n);
int knit__ep_check_timeout(const knit_endpoint_desc *d, const char *v, knit_duration *out,
                           char *err, size_t n);
int knit__ep_check_nonempty(const knit_endpoint_desc *d, const char *name, const char *v,
                            const char *what, char *err, size_t n);
int knit__ep_check_alpn(const knit_endpoint_desc *d, const char *v, char *err, size_t n);
int knit__ep_check_min_version(const knit_endpoint_desc *d, const char *v, char *err, size_t n);
int knit__ep_fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Built-in listen/connect implementations (listen.c, connect.c). */
int knit__ep_tcp_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                        const knit_listen_options *o, knit_listener **out, char *err, size_t n);
int knit__ep_unix_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                         const knit_listen_options *o, knit_listener **out, char *err, size_t n);
int knit__ep_systemd_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                            const knit_listen_options *o, knit_listener **out, char *err, size_t n);
int knit__ep_fd_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                       const knit_listen_options *o, knit_listener **out, char *err, size_t n);
int knit__ep_haproxy_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                            const knit_listen_options *o, knit_listener **out, char *err, size_t n);
int knit__ep_tcp_connect(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                         const knit_connect_options *o, knit_connect_cb cb, void *arg,
                         knit_connect **out, char *err, size_t n);
int knit__ep_unix_connect(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                          const knit_connect_options *o, knit_connect_cb cb, void *arg,
                          knit_connect **out, char *err, size_t n);

/* Resolve HOST/PORT (getaddrinfo with SOCKTYPE, AI_ADDRCONFIG) on a
 * resolver thread (resolve.c), at most KNIT_RESOLVER_MAX_THREADS in the
 * process. CB runs once on R's thread with the result (RES freed after CB
 * returns; GAI is getaddrinfo's code); ARG must stay valid until then. 0,
 * or KNIT_EQUEUEFULL / KNIT_ENOMEM / a thread error + ERR (CB will not
 * run). */
struct addrinfo;
typedef void (*knit__resolve_cb)(knit_reactor *r, struct addrinfo *res, int gai, void *arg);
int knit__resolve(knit_reactor *r, const char *host, const char *port, int socktype,
                  knit__resolve_cb cb, void *arg, char *err, size_t n);

/* Owner hook of client transports: t->owner is their endpoint string. */
void knit__connect_owner_freed(knit_transport *t, void *owner);

/* Connect to ADDRS in the given order with the happy-eyeballs stagger (for
 * tests: no resolution, no TLS). */
int knit__endpoint_connect_addrs(knit_reactor *r, const knit_sockaddr *addrs, size_t n,
                                 knit_protocol_factory *f, const knit_connect_options *o,
                                 knit_connect_cb cb, void *arg, knit_connect **out);

#endif
