/* tools/knit-wsgi/wsgi.h — what the files of knit-wsgi share.
 *
 * knit-wsgi hosts a Python WSGI application (PEP 3333) on knit's HTTP
 * container: the reactor thread does all network IO, every request runs on a
 * worker of knit's pool (a KNIT_HTTP_POOL_STREAM route, so the body streams
 * in while the application reads it), and CPython is embedded once in the
 * process.
 *
 * The GIL (the invariant of this tool): a thread holds it only while Python
 * runs. Every knit call that may block — reading the body, writing to the
 * socket (which blocks above the connection's high-water mark), sending a
 * file — is made with the GIL released (wsgi_gil_release/acquire around it),
 * and the reactor thread never takes it once the application is loaded,
 * except in setup and teardown.
 *
 * Files: main.c (flags, services, life cycle), wsgi.c (the WSGI handler and
 * its Python types), pyknit.c (the importable "knit" module), pymanhole.c
 * (the Python manhole: an engine for knit's manhole, include/knit/manhole.h).
 */
#ifndef KNIT_WSGI_H
#define KNIT_WSGI_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/flag.h"
#include "knit/http.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/reactor.h"

/* ---- limits and defaults -------------------------------------------------- */
#define WSGI_DEFAULT_HTTP "tcp:8000:interface=127.0.0.1"
#define WSGI_DEFAULT_THREADS "16"
#define WSGI_MAX_THREADS 1024
#define WSGI_DEFAULT_QUEUE "4096"         /* requests waiting for a worker (then 503) */
#define WSGI_DEFAULT_MAX_BODY "1GiB"      /* streamed to the app, never held whole */
#define WSGI_READ_CHUNK (64u * 1024u)     /* wsgi.input read-all / readline refill */
#define WSGI_FILE_CHUNK (128u * 1024u)    /* wsgi.file_wrapper: bytes per write */
#define WSGI_WATCHDOG_TICK KNIT_MSEC(100) /* --request-timeout resolution */

typedef struct wsgi_server {
    PyObject *app;     /* the WSGI callable (strong reference) */
    const char *mount; /* SCRIPT_NAME: "" or "/prefix" without a trailing '/' */
    size_t mount_len;
    bool debug; /* tracebacks in 500 bodies */
    char server_name[128];
    char server_port[16];
    knit_duration request_timeout; /* 0: none */
    knit_reactor *r;
    knit_pool *pool;
    knit_http_server *http;
    knit_metrics *mx;
    knit_flags *flags;
    knit_counter *app_errors;  /* exceptions from the application */
    knit_counter *bad_headers; /* invalid status/headers refused */
    knit_counter *timeouts;    /* --request-timeout answers (504) */
    knit_gauge *in_flight;     /* requests inside the application */
} wsgi_server;

extern wsgi_server *wsgi_global; /* the one server of the process */

/* GIL hand-over for threads that are not Python's (knit's workers, the
 * manhole's evaluators): each thread gets one thread state, made on its
 * first acquire and kept. [any] */
void wsgi_gil_acquire(void);
void wsgi_gil_release(void);

/* wsgi.c */
int wsgi_types_init(void); /* the Python types; with the GIL; 0 or -1 (exception set) */
void wsgi_handle(knit_http_request *req, void *arg); /* the route's handler [worker] */
/* Log the current Python exception (with its traceback) as one ERROR line
 * under WHAT, and clear it; returns the formatted text (caller frees) if
 * WANT_TEXT. [GIL] */
char *wsgi_log_exception(const char *what, bool want_text);
int wsgi_watchdog_start(wsgi_server *w);
void wsgi_watchdog_stop(void);

/* pyknit.c: registers the "knit" module (before Py_Initialize). */
int pyknit_register(void);

/* pymanhole.c */
struct knit_manhole;
int pymanhole_attach(struct knit_manhole *m);
void pymanhole_wait_threads(knit_duration max); /* before Py_Finalize */

#endif
