/* tools/knit-wsgi/wsgi.c — one WSGI request (PEP 3333) on a knit worker.
 *
 * wsgi_handle runs on a worker of knit's pool for every request (a
 * KNIT_HTTP_POOL_STREAM route: it starts once the head is parsed). It takes
 * the GIL, builds the environ, calls the application, and sends what the
 * application produces as it is produced: the status and headers at the first
 * non-empty piece (or write()), every piece at once through knit_http_write,
 * which blocks this worker — with the GIL released — while the client is
 * slower than the application. result.close() is called on every path.
 *
 * Python types (all live only as long as their request, except Errors):
 *   StartResponse  start_response(status, headers, exc_info=None) -> write;
 *                  headers are checked here (name a token, value without
 *                  CR/LF/NUL, latin-1): a bad one raises ValueError, is
 *                  logged and never sent; the request then ends with a 500.
 *   Input          wsgi.input: read(n), read(), readline(n), readlines(hint),
 *                  iteration. Reads go to knit_http_read with the GIL
 *                  released; only what readline needs is buffered here.
 *   Errors         wsgi.errors: lines written go to knit's log (WARN, "wsgi").
 *   FileWrapper    wsgi.file_wrapper(filelike, blksize): when the object has
 *                  a fileno() of a regular file, the handler sends it from C
 *                  (pread + knit_http_write, GIL released), never through
 *                  Python objects; otherwise it iterates read(blksize).
 *
 * A request's C state (wreq) lives on the worker's stack; the Python objects
 * point at it and are cut loose (req = NULL) before the handler returns, so
 * an application that keeps start_response or wsgi.input gets an error, not
 * a dangling pointer.
 *
 * Errors: an exception before the headers went out answers 500 (traceback
 * in the log; in the body only with --debug); after, the connection is
 * closed without a clean end of the answer (knit_http_abort), so the client
 * sees it broke. start_response(..., exc_info) after the headers went out
 * re-raises exc_info, as PEP 3333 asks.
 *
 * --request-timeout: a watchdog thread looks at the requests in flight every
 * WSGI_WATCHDOG_TICK; one over the deadline gets its Python stack logged and
 * a RequestTimeout exception raised in its thread (PyThreadState_SetAsyncExc,
 * seen at the next bytecode); the handler answers 504 if nothing was sent.
 * Code blocked in C (a sleeping syscall) sees it only when it returns to
 * Python.
 */
#include "wsgi.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"

wsgi_server *wsgi_global;

/* ---- the GIL ------------------------------------------------------------------- */

static __thread PyThreadState *tls_ts;

void wsgi_gil_acquire(void)
{
    if (tls_ts) {
        PyEval_RestoreThread(tls_ts);
        return;
    }
    /* First time on this thread: PyGILState_Ensure makes the thread state
     * and registers it for PyGILState_* (C extensions use those); never
     * released, so it stays this thread's. */
    (void)PyGILState_Ensure();
    tls_ts = PyThreadState_Get();
}

void wsgi_gil_release(void)
{
    PyEval_SaveThread();
}

/* ---- the request ----------------------------------------------------------------- */

typedef struct wreq {
    knit_http_request *req;
    wsgi_server *w;
    bool started; /* start_response called (status and headers stored) */
    bool sent;    /* the head went to the client */
    bool broken;  /* a write failed: the client is gone */
    int status;
    PyObject *headers; /* the list start_response got (strong) */
    int64_t length;    /* Content-Length the app set, or -1 */
    bool head;         /* HEAD: the server suppresses the body */
    /* for the watchdog */
    unsigned long thread_id;
    knit_time deadline;
    bool timed_out;
    struct wreq *prev, *next;
} wreq;

static PyObject *RequestTimeout; /* knit.RequestTimeout */

/* ---- wsgi.errors ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD char *buf;
    size_t len, cap;
} ErrorsObject;

static void errors_emit(ErrorsObject *e, bool all)
{
    size_t start = 0;
    for (size_t i = 0; i < e->len; i++) {
        if (e->buf[i] != '\n') continue;
        knit_log_emit(KNIT_LOG_WARN, "wsgi", "%.*s", (int)(i - start), e->buf + start);
        start = i + 1;
    }
    if (all && start < e->len) {
        knit_log_emit(KNIT_LOG_WARN, "wsgi", "%.*s", (int)(e->len - start), e->buf + start);
        start = e->len;
    }
    if (start) memmove(e->buf, e->buf + start, e->len - start);
    e->len -= start;
}

static PyObject *errors_write(ErrorsObject *e, PyObject *arg)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!s) return NULL;
    if (e->len + (size_t)n > e->cap) {
        size_t cap = e->cap ? e->cap : 256;
        while (cap < e->len + (size_t)n)
            cap *= 2;
        char *nb = realloc(e->buf, cap);
        if (!nb) return PyErr_NoMemory();
        e->buf = nb;
        e->cap = cap;
    }
    if (n) memcpy(e->buf + e->len, s, (size_t)n);
    e->len += (size_t)n;
    errors_emit(e, e->len > 8192); /* a line longer than that is logged in pieces */
    return PyLong_FromSsize_t(n);
}

static PyObject *errors_writelines(ErrorsObject *e, PyObject *seq)
{
    PyObject *it = PyObject_GetIter(seq);
    if (!it) return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        PyObject *r = errors_write(e, item);
        Py_DECREF(item);
        if (!r) {
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *errors_flush(ErrorsObject *e, PyObject *unused)
{
    errors_emit(e, true);
    Py_RETURN_NONE;
}

static void errors_dealloc(ErrorsObject *e)
{
    free(e->buf);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef errors_methods[] = {
    {"write", (PyCFunction)errors_write, METH_O, "log the text (line by line)"},
    {"writelines", (PyCFunction)errors_writelines, METH_O, "write each string"},
    {"flush", (PyCFunction)errors_flush, METH_NOARGS, "log a pending partial line"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ErrorsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "knit.wsgi.Errors",
    .tp_basicsize = sizeof(ErrorsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)errors_dealloc,
    .tp_methods = errors_methods,
    .tp_new = PyType_GenericNew,
};

static PyObject *the_errors; /* one for the process (lines are short-lived) */

/* ---- logging exceptions -------------------------------------------------------------- */

char *wsgi_log_exception(const char *what, bool want_text)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type) return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb) PyException_SetTraceback(value, tb);
    char *text = NULL;
    PyObject *mod = PyImport_ImportModule("traceback");
    PyObject *lines =
        mod ? PyObject_CallMethod(mod, "format_exception", "OOO", type, value, tb ? tb : Py_None)
            : NULL;
    PyObject *sep = lines ? PyUnicode_FromString("") : NULL;
    PyObject *joined = sep ? PyUnicode_Join(sep, lines) : NULL;
    const char *s = joined ? PyUnicode_AsUTF8(joined) : NULL;
    if (s) {
        knit_log_kv(KNIT_LOG_ERROR, "wsgi", what, "traceback", s, NULL);
        if (want_text) text = strdup(s);
    } else {
        PyErr_Clear();
        knit_log_kv(KNIT_LOG_ERROR, "wsgi", what, "traceback", "(could not be formatted)", NULL);
    }
    Py_XDECREF(joined);
    Py_XDECREF(sep);
    Py_XDECREF(lines);
    Py_XDECREF(mod);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return text;
}

/* ---- sending ---------------------------------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Header names the server owns or that are hop-by-hop (PEP 3333 forbids the
 * latter; RFC 9110 7.6.1): dropped, with a warning. */
static bool hop_by_hop(const char *name)
{
    static const char *const names[] = {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "te",         "trailer",    "transfer-encoding",  "upgrade",
        "date",       "server"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i]) == 0) return true;
    return false;
}

/* A str as latin-1 bytes (PEP 3333 "native strings"): a new bytes object, or
 * NULL with ValueError for a character above U+00FF. */
static PyObject *latin1(PyObject *s, const char *what)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be str, not %.80s", what, Py_TYPE(s)->tp_name);
        return NULL;
    }
    PyObject *b = PyUnicode_AsLatin1String(s);
    if (!b) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s is not latin-1: %R", what, s);
    }
    return b;
}

/* Check status and headers as start_response gets them; 0, or -1 with
 * ValueError/TypeError set (nothing is stored then). */
static int check_response(PyObject *status, PyObject *headers, int *code)
{
    PyObject *sb = latin1(status, "status");
    if (!sb) return -1;
    const char *s = PyBytes_AS_STRING(sb);
    Py_ssize_t n = PyBytes_GET_SIZE(sb);
    bool ok = n >= 4 && s[0] >= '1' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
              s[2] <= '9' && s[3] == ' ';
    for (Py_ssize_t i = 0; ok && i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ok = false;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "invalid status %R: want \"NNN Reason\"", status);
        Py_DECREF(sb);
        return -1;
    }
    *code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    Py_DECREF(sb);
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "response headers must be a list, not %.80s",
                     Py_TYPE(headers)->tp_name);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *h = PyList_GET_ITEM(headers, i);
        if (!PyTuple_Check(h) || PyTuple_GET_SIZE(h) != 2) {
            PyErr_Format(PyExc_TypeError, "response header %zd must be a (name, value) tuple", i);
            return -1;
        }
        PyObject *nb = latin1(PyTuple_GET_ITEM(h, 0), "header name");
        if (!nb) return -1;
        PyObject *vb = latin1(PyTuple_GET_ITEM(h, 1), "header value");
        if (!vb) {
            Py_DECREF(nb);
            return -1;
        }
        const char *name = PyBytes_AS_STRING(nb), *value = PyBytes_AS_STRING(vb);
        Py_ssize_t nl = PyBytes_GET_SIZE(nb), vl = PyBytes_GET_SIZE(vb);
        bool good = nl > 0;
        for (Py_ssize_t j = 0; good && j < nl; j++)
            good = is_tchar((unsigned char)name[j]);
        if (!good)
            PyErr_Format(PyExc_ValueError, "invalid response header name %R",
                         PyTuple_GET_ITEM(h, 0));
        for (Py_ssize_t j = 0; good && j < vl; j++) {
            unsigned char c = (unsigned char)value[j];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                good = false;
                PyErr_Format(PyExc_ValueError, "invalid response header value for %R: %R",
                             PyTuple_GET_ITEM(h, 0), PyTuple_GET_ITEM(h, 1));
            }
        }
        Py_DECREF(nb);
        Py_DECREF(vb);
        if (!good) return -1;
    }
    return 0;
}

/* Send the head: status and the application's headers (checked already).
 * EXTRA_LENGTH: a length the server knows (a list's total, a file's size)
 * when the app set none, or -1. [GIL held on entry and exit] */
static int send_head(wreq *q, int64_t extra_length)
{
    const char *ctype = NULL;
    PyObject *ctype_b = NULL;
    int64_t length = -1;
    int rc = 0;
    Py_ssize_t n = PyList_GET_SIZE(q->headers);
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        PyObject *h = PyList_GET_ITEM(q->headers, i);
        PyObject *nb = PyUnicode_AsLatin1String(PyTuple_GET_ITEM(h, 0));
        PyObject *vb = nb ? PyUnicode_AsLatin1String(PyTuple_GET_ITEM(h, 1)) : NULL;
        if (!vb) {
            Py_XDECREF(nb);
            return -1; /* changed since start_response: exception set */
        }
        const char *name = PyBytes_AS_STRING(nb), *value = PyBytes_AS_STRING(vb);
        if (strcasecmp(name, "content-length") == 0) {
            char *end;
            errno = 0;
            long long v = strtoll(value, &end, 10);
            if (errno || end == value || *end || v < 0) {
                PyErr_Format(PyExc_ValueError, "invalid Content-Length %R", PyTuple_GET_ITEM(h, 1));
                rc = -1;
            } else {
                length = v;
            }
        } else if (strcasecmp(name, "content-type") == 0) {
            Py_XDECREF(ctype_b);
            ctype_b = vb;
            Py_INCREF(ctype_b);
            ctype = value;
        } else if (hop_by_hop(name)) {
            knit_log_kv(KNIT_LOG_WARN, "wsgi", "dropped a hop-by-hop response header", "name", name,
                        NULL);
        } else if (knit_http_add_header(q->req, name, value) < 0) {
            PyErr_Format(PyExc_ValueError, "response header %R refused by the server",
                         PyTuple_GET_ITEM(h, 0));
            rc = -1;
        }
        Py_DECREF(nb);
        Py_DECREF(vb);
    }
    if (rc == 0) {
        if (length < 0) length = extra_length;
        q->length = length;
        q->sent = true;
        wsgi_gil_release();
        rc = knit_http_start(q->req, q->status, ctype, length);
        wsgi_gil_acquire();
        if (rc < 0) q->broken = true;
        rc = 0; /* a client that left is not the application's error */
    }
    Py_XDECREF(ctype_b);
    return rc;
}

/* Write DATA with the GIL released (blocks above the high-water mark). */
static int send_bytes(wreq *q, const char *data, size_t len)
{
    if (q->broken || len == 0) return q->broken ? KNIT_ECLOSED : 0;
    wsgi_gil_release();
    int rc = knit_http_write(q->req, data, len);
    wsgi_gil_acquire();
    if (rc == KNIT_EINVAL)
        knit_log_kv(KNIT_LOG_ERROR, "wsgi", "the application sent more than its Content-Length",
                    "target", knit_http_target(q->req), NULL);
    if (rc < 0) q->broken = true;
    return rc;
}

/* ---- start_response and write ----------------------------------------------------------- */

typedef struct {
    PyObject_HEAD wreq *q; /* NULL once the request is over */
} StartResponseObject;

static PyObject *sr_call(StartResponseObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"status", "headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:start_response", kwlist, &status, &headers,
                                     &exc_info))
        return NULL;
    wreq *q = self->q;
    if (!q) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called after its request ended");
        return NULL;
    }
    if (exc_info != Py_None) {
        if (q->sent) {
            /* PEP 3333: too late to change the answer: re-raise. */
            PyObject *t, *v, *tb;
            if (!PyArg_ParseTuple(exc_info, "OOO", &t, &v, &tb)) return NULL;
            Py_INCREF(t);
            Py_INCREF(v);
            Py_INCREF(tb);
            PyErr_Restore(t, v, tb);
            return NULL;
        }
    } else if (q->started) {
        PyErr_SetString(PyExc_AssertionError,
                        "start_response called a second time without exc_info");
        return NULL;
    }
    int code;
    if (check_response(status, headers, &code) < 0) {
        knit_counter_inc(q->w->bad_headers);
        return NULL; /* the handler logs it and answers 500 if it goes unhandled */
    }
    Py_INCREF(headers);
    Py_XSETREF(q->headers, headers);
    q->status = code;
    q->started = true;
    return PyObject_GetAttrString((PyObject *)self, "write");
}

static PyObject *sr_write(StartResponseObject *self, PyObject *data)
{
    wreq *q = self->q;
    if (!q) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after its request ended");
        return NULL;
    }
    if (!q->started) {
        PyErr_SetString(PyExc_AssertionError, "write() before start_response");
        return NULL;
    }
    Py_buffer view;
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() wants bytes, not %.80s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    int rc = 0;
    if (!q->sent) rc = send_head(q, -1);
    if (rc == 0) rc = send_bytes(q, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (rc == KNIT_ECLOSED || (rc < 0 && !PyErr_Occurred())) {
        PyErr_Format(PyExc_OSError, "client connection lost: %s", knit_strerror(rc));
        return NULL;
    }
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef sr_methods[] = {
    {"write", (PyCFunction)sr_write, METH_O, "write bytes to the client (PEP 3333 write())"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StartResponseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "knit.wsgi.StartResponse",
    .tp_basicsize = sizeof(StartResponseObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_call = (ternaryfunc)sr_call,
    .tp_methods = sr_methods,
};

/* ---- wsgi.input ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD wreq *q;
    char *buf; /* bytes read from the request but not yet given to the app */
    size_t off, len, cap;
    bool eof;
} InputObject;

static PyObject *input_gone(void)
{
    PyErr_SetString(PyExc_ValueError, "wsgi.input used after its request ended");
    return NULL;
}

static PyObject *read_error(ssize_t rc)
{
    return PyErr_Format(PyExc_OSError, "reading the request body: %s", knit_strerror((int)rc));
}

/* Read up to N more body bytes into DST with the GIL released. */
static ssize_t body_read(InputObject *in, char *dst, size_t n)
{
    if (in->eof) return 0;
    wsgi_gil_release();
    ssize_t r = knit_http_read(in->q->req, dst, n);
    wsgi_gil_acquire();
    if (r == 0) in->eof = true;
    return r;
}

/* Up to N bytes (N < 0: everything): what readline left first, then the
 * body, until N bytes or the end. */
static PyObject *input_read_impl(InputObject *in, Py_ssize_t n)
{
    if (!in->q) return input_gone();
    size_t have = in->len - in->off;
    if (n < 0) {
        size_t cap = have + WSGI_READ_CHUNK, len = have;
        char *b = malloc(cap);
        if (!b) return PyErr_NoMemory();
        if (have) memcpy(b, in->buf + in->off, have);
        in->off = in->len = 0;
        for (;;) {
            if (cap - len < WSGI_READ_CHUNK / 2) {
                char *nb = realloc(b, cap * 2);
                if (!nb) {
                    free(b);
                    return PyErr_NoMemory();
                }
                b = nb;
                cap *= 2;
            }
            ssize_t r = body_read(in, b + len, cap - len);
            if (r < 0) {
                free(b);
                return read_error(r);
            }
            if (r == 0) break;
            len += (size_t)r;
        }
        PyObject *out = PyBytes_FromStringAndSize(b, (Py_ssize_t)len);
        free(b);
        return out;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) return NULL;
    char *dst = PyBytes_AS_STRING(out);
    size_t got = have < (size_t)n ? have : (size_t)n;
    if (got) memcpy(dst, in->buf + in->off, got);
    in->off += got;
    while (got < (size_t)n) {
        ssize_t r = body_read(in, dst + got, (size_t)n - got);
        if (r < 0) {
            Py_DECREF(out);
            return read_error(r);
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got != (size_t)n && _PyBytes_Resize(&out, (Py_ssize_t)got) < 0) return NULL;
    return out;
}

static PyObject *input_read(InputObject *in, PyObject *args)
{
    Py_ssize_t n = -1;
    PyObject *arg = Py_None;
    if (!PyArg_ParseTuple(args, "|O:read", &arg)) return NULL;
    if (arg != Py_None) {
        n = PyLong_AsSsize_t(arg);
        if (n == -1 && PyErr_Occurred()) return NULL;
    }
    return input_read_impl(in, n);
}

/* One line (up to and including '\n'), at most LIMIT bytes (< 0: no limit). */
static PyObject *input_readline_impl(InputObject *in, Py_ssize_t limit)
{
    if (!in->q) return input_gone();
    size_t scanned = 0;
    for (;;) {
        size_t have = in->len - in->off;
        size_t upto = limit >= 0 && (size_t)limit < have ? (size_t)limit : have;
        char *nl =
            upto > scanned ? memchr(in->buf + in->off + scanned, '\n', upto - scanned) : NULL;
        if (nl || (limit >= 0 && have >= (size_t)limit) || in->eof) {
            size_t n = nl ? (size_t)(nl - (in->buf + in->off)) + 1 : upto;
            PyObject *out = PyBytes_FromStringAndSize(n ? in->buf + in->off : "", (Py_ssize_t)n);
            in->off += n;
            return out;
        }
        scanned = upto;
        /* refill: compact, grow, read */
        if (in->off) {
            memmove(in->buf, in->buf + in->off, have);
            in->off = 0;
            in->len = have;
        }
        if (in->cap - in->len < WSGI_READ_CHUNK / 4) {
            size_t cap = in->cap ? in->cap * 2 : WSGI_READ_CHUNK;
            char *nb = realloc(in->buf, cap);
            if (!nb) return PyErr_NoMemory();
            in->buf = nb;
            in->cap = cap;
        }
        ssize_t r = body_read(in, in->buf + in->len, in->cap - in->len);
        if (r < 0) return read_error(r);
        in->len += (size_t)r;
    }
}

static PyObject *input_readline(InputObject *in, PyObject *args)
{
    Py_ssize_t n = -1;
    PyObject *arg = Py_None;
    if (!PyArg_ParseTuple(args, "|O:readline", &arg)) return NULL;
    if (arg != Py_None) {
        n = PyLong_AsSsize_t(arg);
        if (n == -1 && PyErr_Occurred()) return NULL;
    }
    return input_readline_impl(in, n);
}

static PyObject *input_readlines(InputObject *in, PyObject *args)
{
    Py_ssize_t hint = -1;
    PyObject *arg = Py_None;
    if (!PyArg_ParseTuple(args, "|O:readlines", &arg)) return NULL;
    if (arg != Py_None) {
        hint = PyLong_AsSsize_t(arg);
        if (hint == -1 && PyErr_Occurred()) return NULL;
    }
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    Py_ssize_t total = 0;
    for (;;) {
        PyObject *line = input_readline_impl(in, -1);
        if (!line) {
            Py_DECREF(list);
            return NULL;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(line);
        if (n == 0) {
            Py_DECREF(line);
            break;
        }
        int rc = PyList_Append(list, line);
        Py_DECREF(line);
        if (rc < 0) {
            Py_DECREF(list);
            return NULL;
        }
        total += n;
        if (hint > 0 && total >= hint) break;
    }
    return list;
}

static PyObject *input_iternext(InputObject *in)
{
    PyObject *line = input_readline_impl(in, -1);
    if (line && PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return NULL; /* StopIteration */
    }
    return line;
}

static void input_dealloc(InputObject *in)
{
    free(in->buf);
    Py_TYPE(in)->tp_free((PyObject *)in);
}

static PyMethodDef input_methods[] = {
    {"read", (PyCFunction)input_read, METH_VARARGS, "read([size]) -> bytes"},
    {"readline", (PyCFunction)input_readline, METH_VARARGS, "readline([size]) -> bytes"},
    {"readlines", (PyCFunction)input_readlines, METH_VARARGS, "readlines([hint]) -> list"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject InputType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "knit.wsgi.Input",
    .tp_basicsize = sizeof(InputObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)input_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)input_iternext,
    .tp_methods = input_methods,
};

/* ---- wsgi.file_wrapper ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD PyObject *filelike;
    Py_ssize_t blksize;
} FileWrapperObject;

static PyObject *fw_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"filelike", "blksize", NULL};
    PyObject *f;
    Py_ssize_t blksize = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n:file_wrapper", kwlist, &f, &blksize))
        return NULL;
    if (blksize <= 0) blksize = 8192;
    FileWrapperObject *fw = (FileWrapperObject *)type->tp_alloc(type, 0);
    if (!fw) return NULL;
    Py_INCREF(f);
    fw->filelike = f;
    fw->blksize = blksize;
    return (PyObject *)fw;
}

static PyObject *fw_iternext(FileWrapperObject *fw)
{
    PyObject *data = PyObject_CallMethod(fw->filelike, "read", "n", fw->blksize);
    if (!data) return NULL;
    if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) == 0) {
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *fw_close(FileWrapperObject *fw, PyObject *unused)
{
    if (PyObject_HasAttrString(fw->filelike, "close"))
        return PyObject_CallMethod(fw->filelike, "close", NULL);
    Py_RETURN_NONE;
}

static void fw_dealloc(FileWrapperObject *fw)
{
    Py_XDECREF(fw->filelike);
    Py_TYPE(fw)->tp_free((PyObject *)fw);
}

static PyMethodDef fw_methods[] = {
    {"close", (PyCFunction)fw_close, METH_NOARGS, "close the file"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FileWrapperType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "knit.wsgi.FileWrapper",
    .tp_basicsize = sizeof(FileWrapperObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = fw_new,
    .tp_dealloc = (destructor)fw_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)fw_iternext,
    .tp_methods = fw_methods,
};

/* The fd of a FileWrapper's regular file, or -1 (then iterate it). */
static int fw_fd(FileWrapperObject *fw, off_t *pos, off_t *size)
{
    PyObject *r = PyObject_CallMethod(fw->filelike, "fileno", NULL);
    if (!r) {
        PyErr_Clear();
        return -1;
    }
    int fd = (int)PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd < 0 || PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    /* a Python file object may have read ahead: ask it where it is */
    PyObject *t = PyObject_CallMethod(fw->filelike, "tell", NULL);
    if (!t) {
        PyErr_Clear();
        return -1;
    }
    long long p = PyLong_AsLongLong(t);
    Py_DECREF(t);
    struct stat st;
    if (PyErr_Occurred() || p < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        PyErr_Clear();
        return -1;
    }
    *pos = (off_t)p;
    *size = st.st_size;
    return fd;
}

/* Send the file from C: pread + knit_http_write with the GIL released.
 * 0, or -1 with an exception set. */
static int send_file(wreq *q, int fd, off_t pos, off_t size)
{
    if (!q->sent && send_head(q, size > pos ? size - pos : 0) < 0) return -1;
    if (q->head) return 0;
    int64_t left = q->length >= 0 ? q->length : (int64_t)(size - pos);
    char *buf = malloc(WSGI_FILE_CHUNK);
    if (!buf) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = 0;
    wsgi_gil_release();
    while (left > 0 && rc == 0) {
        size_t want = left < (int64_t)WSGI_FILE_CHUNK ? (size_t)left : WSGI_FILE_CHUNK;
        ssize_t n = pread(fd, buf, want, pos);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : KNIT_EPARSE; /* shorter than it was */
            break;
        }
        pos += n;
        left -= n;
        if (knit_http_write(q->req, buf, (size_t)n) < 0) {
            q->broken = true;
            break;
        }
    }
    wsgi_gil_acquire();
    free(buf);
    if (rc < 0) {
        PyErr_Format(PyExc_OSError, "sending a file: %s", knit_strerror(rc));
        return -1;
    }
    return 0;
}

/* ---- the environ -------------------------------------------------------------------------- */

static PyObject *k_method, *k_script, *k_path, *k_query, *k_ctype, *k_clen, *k_sname, *k_sport,
    *k_proto, *k_raddr, *k_rport, *k_version, *k_scheme, *k_input, *k_errors, *k_mthread, *k_mproc,
    *k_once, *k_fw, *k_term, *k_uri;
static PyObject *v_version, *v_http, *v_https, *v_proto10, *v_proto11, *v_empty;

static int set_str(PyObject *env, PyObject *key, const char *s, Py_ssize_t n)
{
    PyObject *v = PyUnicode_DecodeLatin1(s, n < 0 ? (Py_ssize_t)strlen(s) : n, NULL);
    if (!v) return -1;
    int rc = PyDict_SetItem(env, key, v);
    Py_DECREF(v);
    return rc;
}

/* "HTTP_" + upper(name) with '-' as '_'; headers repeated are joined with
 * ", " (RFC 9110 5.3; "; " for Cookie). Content-Type and Content-Length go to
 * their CGI names. Names with '_' are dropped: they would be confused with
 * '-' (a smuggling trick against apps that trust X-Forwarded-For). */
static int add_headers(PyObject *env, knit_http_request *req)
{
    size_t n = knit_http_header_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        if (knit_http_header_at(req, i, &name, &value) < 0) continue;
        char key[160];
        size_t nl = strlen(name);
        if (nl + 6 > sizeof key || strchr(name, '_')) continue;
        PyObject *k;
        if (strcasecmp(name, "content-type") == 0) {
            k = k_ctype;
            Py_INCREF(k);
        } else if (strcasecmp(name, "content-length") == 0) {
            k = k_clen;
            Py_INCREF(k);
        } else {
            memcpy(key, "HTTP_", 5);
            for (size_t j = 0; j < nl; j++) {
                char c = name[j];
                key[5 + j] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
            }
            key[5 + nl] = 0;
            k = PyUnicode_FromStringAndSize(key, (Py_ssize_t)(5 + nl));
            if (!k) return -1;
        }
        PyObject *old = PyDict_GetItemWithError(env, k);
        PyObject *v = NULL;
        if (old) {
            const char *sep = strcasecmp(name, "cookie") == 0 ? "; " : ", ";
            PyObject *add = PyUnicode_DecodeLatin1(value, (Py_ssize_t)strlen(value), NULL);
            v = add ? PyUnicode_FromFormat("%U%s%U", old, sep, add) : NULL;
            Py_XDECREF(add);
        } else if (!PyErr_Occurred()) {
            v = PyUnicode_DecodeLatin1(value, (Py_ssize_t)strlen(value), NULL);
        }
        int rc = v ? PyDict_SetItem(env, k, v) : -1;
        Py_XDECREF(v);
        Py_DECREF(k);
        if (rc < 0) return -1;
    }
    return 0;
}

static PyObject *make_environ(wsgi_server *w, knit_http_request *req, PyObject *input)
{
    PyObject *env = PyDict_New();
    if (!env) return NULL;
    const char *target = knit_http_target(req);
    const char *q = strchr(target, '?');
    const char *path = knit_http_path(req);
    /* PATH_INFO: the decoded path below the mount (latin-1, as PEP 3333
     * asks: bytes 0-255 as code points). */
    const char *info = path;
    if (w->mount_len) info = path + w->mount_len;
    const char *remote = knit_http_remote_addr(req);
    char host[80] = "", port[16] = "";
    if (remote[0] == '[') {
        const char *e = strchr(remote, ']');
        if (e && (size_t)(e - remote - 1) < sizeof host) {
            memcpy(host, remote + 1, (size_t)(e - remote - 1));
            host[e - remote - 1] = 0;
            if (e[1] == ':') snprintf(port, sizeof port, "%s", e + 2);
        }
    } else {
        const char *c = strrchr(remote, ':');
        size_t hl = c ? (size_t)(c - remote) : strlen(remote);
        if (hl < sizeof host) {
            memcpy(host, remote, hl);
            host[hl] = 0;
        }
        if (c) snprintf(port, sizeof port, "%s", c + 1);
    }
    if (strcmp(host, "-") == 0) host[0] = 0;
    int rc = set_str(env, k_method, knit_http_method(req), -1);
    if (rc == 0) rc = set_str(env, k_script, w->mount, (Py_ssize_t)w->mount_len);
    if (rc == 0) rc = set_str(env, k_path, info, -1);
    if (rc == 0) rc = set_str(env, k_query, q ? q + 1 : "", -1);
    if (rc == 0) rc = set_str(env, k_uri, target, -1);
    if (rc == 0) rc = set_str(env, k_sname, w->server_name, -1);
    if (rc == 0) rc = set_str(env, k_sport, w->server_port, -1);
    if (rc == 0) rc = PyDict_SetItem(env, k_proto, knit_http_version(req) ? v_proto11 : v_proto10);
    if (rc == 0) rc = set_str(env, k_raddr, host, -1);
    if (rc == 0) rc = set_str(env, k_rport, port, -1);
    if (rc == 0) rc = add_headers(env, req);
    if (rc == 0) rc = PyDict_SetItem(env, k_version, v_version);
    if (rc == 0) rc = PyDict_SetItem(env, k_scheme, knit_http_is_tls(req) ? v_https : v_http);
    if (rc == 0) rc = PyDict_SetItem(env, k_input, input);
    if (rc == 0) rc = PyDict_SetItem(env, k_errors, the_errors);
    if (rc == 0) rc = PyDict_SetItem(env, k_mthread, Py_True);
    if (rc == 0) rc = PyDict_SetItem(env, k_mproc, Py_False);
    if (rc == 0) rc = PyDict_SetItem(env, k_once, Py_False);
    if (rc == 0) rc = PyDict_SetItem(env, k_fw, (PyObject *)&FileWrapperType);
    if (rc == 0) rc = PyDict_SetItem(env, k_term, Py_True);
    if (rc < 0) {
        Py_DECREF(env);
        return NULL;
    }
    return env;
}

/* ---- the watchdog (--request-timeout) ------------------------------------------------------ */

static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv = PTHREAD_COND_INITIALIZER;
static wreq *wd_list; /* requests inside the application */
static bool wd_run;
static pthread_t wd_thread;

static void wd_add(wreq *q)
{
    if (!q->w->request_timeout) return;
    q->thread_id = PyThread_get_thread_ident();
    q->deadline = knit_reactor_now(q->w->r) + q->w->request_timeout;
    pthread_mutex_lock(&wd_mu);
    q->next = wd_list;
    if (wd_list) wd_list->prev = q;
    wd_list = q;
    pthread_mutex_unlock(&wd_mu);
}

static void wd_remove(wreq *q)
{
    if (!q->w->request_timeout) return;
    pthread_mutex_lock(&wd_mu);
    if (q->prev)
        q->prev->next = q->next;
    else if (wd_list == q)
        wd_list = q->next;
    if (q->next) q->next->prev = q->prev;
    q->prev = q->next = NULL;
    pthread_mutex_unlock(&wd_mu);
}

/* Log THREAD's Python stack (sys._current_frames). [GIL] */
static void log_stack(unsigned long thread, const char *method, const char *target)
{
    PyObject *sys = PyImport_ImportModule("sys");
    PyObject *tb = PyImport_ImportModule("traceback");
    PyObject *frames = sys ? PyObject_CallMethod(sys, "_current_frames", NULL) : NULL;
    PyObject *key = PyLong_FromUnsignedLong(thread);
    PyObject *frame = frames && key ? PyDict_GetItemWithError(frames, key) : NULL;
    PyObject *lines = frame && tb ? PyObject_CallMethod(tb, "format_stack", "O", frame) : NULL;
    PyObject *sep = lines ? PyUnicode_FromString("") : NULL;
    PyObject *text = sep ? PyUnicode_Join(sep, lines) : NULL;
    const char *s = text ? PyUnicode_AsUTF8(text) : NULL;
    knit_log_kv(KNIT_LOG_ERROR, "wsgi", "request timed out (--request-timeout)", "method", method,
                "target", target, "stack", s ? s : "(not in Python)", NULL);
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(sep);
    Py_XDECREF(lines);
    Py_XDECREF(key);
    Py_XDECREF(frames);
    Py_XDECREF(tb);
    Py_XDECREF(sys);
}

static void *wd_main(void *arg)
{
    wsgi_server *w = arg;
    knit_signal_block_all();
    pthread_mutex_lock(&wd_mu);
    while (wd_run) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)WSGI_WATCHDOG_TICK;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&wd_cv, &wd_mu, &ts);
        if (!wd_run) break;
        knit_time now = knit_reactor_now(w->r);
        bool any = false;
        for (wreq *q = wd_list; q; q = q->next)
            if (!q->timed_out && now >= q->deadline) any = true;
        if (!any) continue;
        /* Take the GIL without holding wd_mu (a worker may wait for wd_mu
         * while holding the GIL); requests found again under both. */
        pthread_mutex_unlock(&wd_mu);
        wsgi_gil_acquire();
        pthread_mutex_lock(&wd_mu);
        for (wreq *q = wd_list; q; q = q->next) {
            if (q->timed_out || now < q->deadline) continue;
            q->timed_out = true;
            knit_counter_inc(w->timeouts);
            log_stack(q->thread_id, knit_http_method(q->req), knit_http_target(q->req));
            PyThreadState_SetAsyncExc(q->thread_id, RequestTimeout);
        }
        pthread_mutex_unlock(&wd_mu);
        wsgi_gil_release();
        pthread_mutex_lock(&wd_mu);
    }
    pthread_mutex_unlock(&wd_mu);
    return NULL;
}

int wsgi_watchdog_start(wsgi_server *w)
{
    if (!w->request_timeout) return 0;
    wd_run = true;
    int rc = pthread_create(&wd_thread, NULL, wd_main, w);
    if (rc) {
        wd_run = false;
        return -rc;
    }
    return 0;
}

void wsgi_watchdog_stop(void)
{
    pthread_mutex_lock(&wd_mu);
    bool was = wd_run;
    wd_run = false;
    pthread_cond_signal(&wd_cv);
    pthread_mutex_unlock(&wd_mu);
    if (was) {
        /* it may be waiting for the GIL: let it have it */
        Py_BEGIN_ALLOW_THREADS pthread_join(wd_thread, NULL);
        Py_END_ALLOW_THREADS
    }
}

/* ---- the handler ---------------------------------------------------------------------------- */

/* Answer 500 (or 504 after --request-timeout) for the exception set, if
 * nothing was sent yet; otherwise break the connection. [GIL] */
static void app_failed(wreq *q, const char *what)
{
    bool timeout = q->timed_out && PyErr_ExceptionMatches(RequestTimeout);
    knit_counter_inc(q->w->app_errors);
    char what2[200];
    snprintf(what2, sizeof what2, "%s: %s %s", what, knit_http_method(q->req),
             knit_http_target(q->req));
    char *tb = wsgi_log_exception(what2, q->w->debug && !q->sent);
    if (q->sent) {
        knit_http_abort(q->req);
        q->broken = true;
    } else {
        int code = timeout ? 504 : 500;
        char body[160];
        const char *text = tb;
        if (!text) {
            snprintf(body, sizeof body, "%d %s\n", code, knit_http_reason(code));
            text = body;
        }
        q->sent = true;
        wsgi_gil_release();
        knit_http_respond(q->req, code, "text/plain; charset=utf-8", text, strlen(text));
        wsgi_gil_acquire();
    }
    free(tb);
}

/* Iterate RESULT and send it. [GIL] 0, or -1 with the exception set. */
static int send_result(wreq *q, PyObject *result)
{
    if (Py_IS_TYPE(result, &FileWrapperType) && q->started) {
        off_t pos, size;
        int fd = fw_fd((FileWrapperObject *)result, &pos, &size);
        if (fd >= 0) return send_file(q, fd, pos, size);
    }
    /* A list or tuple: its length is known, so the answer gets a
     * Content-Length; one piece goes out with the head in one write. */
    if ((PyList_CheckExact(result) || PyTuple_CheckExact(result)) && !q->sent) {
        PyObject *seq = result;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        int64_t total = 0;
        bool all_bytes = true;
        for (Py_ssize_t i = 0; i < n && all_bytes; i++) {
            PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyBytes_Check(it))
                all_bytes = false;
            else
                total += PyBytes_GET_SIZE(it);
        }
        if (all_bytes) {
            if (!q->started) {
                PyErr_SetString(PyExc_AssertionError,
                                "the application returned without calling start_response");
                return -1;
            }
            if (send_head(q, total) < 0) return -1;
            for (Py_ssize_t i = 0; i < n && !q->broken; i++) {
                PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
                send_bytes(q, PyBytes_AS_STRING(it), (size_t)PyBytes_GET_SIZE(it));
            }
            return 0;
        }
    }
    PyObject *it = PyObject_GetIter(result);
    if (!it) return -1;
    PyObject *item;
    int rc = 0;
    while (!q->broken && (item = PyIter_Next(it))) {
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "the application yielded %.80s, not bytes",
                         Py_TYPE(item)->tp_name);
            Py_DECREF(item);
            rc = -1;
            break;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        if (n == 0) {
            Py_DECREF(item);
            continue; /* PEP 3333: empty pieces do not send the head */
        }
        if (!q->started) {
            PyErr_SetString(PyExc_AssertionError, "body produced before start_response");
            Py_DECREF(item);
            rc = -1;
            break;
        }
        if (!q->sent && send_head(q, -1) < 0) {
            Py_DECREF(item);
            rc = -1;
            break;
        }
        send_bytes(q, PyBytes_AS_STRING(item), (size_t)n);
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred()) rc = -1;
    if (rc == 0 && !q->sent) {
        if (!q->started) {
            PyErr_SetString(PyExc_AssertionError,
                            "the application returned without calling start_response");
            return -1;
        }
        rc = send_head(q, 0);
    }
    return rc;
}

void wsgi_handle(knit_http_request *req, void *arg)
{
    wsgi_server *w = arg;
    wreq q = {.req = req, .w = w, .length = -1};
    q.head = strcmp(knit_http_method(req), "HEAD") == 0;
    wsgi_gil_acquire();
    knit_gauge_inc(w->in_flight);
    StartResponseObject *sr = PyObject_New(StartResponseObject, &StartResponseType);
    InputObject *in = PyObject_New(InputObject, &InputType);
    PyObject *env = NULL, *result = NULL;
    if (sr) sr->q = &q;
    if (in) {
        in->q = &q;
        in->buf = NULL;
        in->off = in->len = in->cap = 0;
        in->eof = false;
    }
    if (sr && in) env = make_environ(w, req, (PyObject *)in);
    wd_add(&q);
    if (env) result = PyObject_CallFunctionObjArgs(w->app, env, (PyObject *)sr, NULL);
    if (!result) {
        app_failed(&q, sr && in && env ? "the application raised" : "cannot build the environ");
    } else {
        if (send_result(&q, result) < 0) app_failed(&q, "the application raised");
        /* PEP 3333: close() on every path, success or not */
        if (PyObject_HasAttrString(result, "close")) {
            PyObject *r = PyObject_CallMethod(result, "close", NULL);
            if (!r)
                wsgi_log_exception("result.close() raised", false);
            else
                Py_DECREF(r);
        }
        Py_DECREF(result);
    }
    wd_remove(&q);
    if (q.timed_out) PyErr_Clear(); /* an async exception that arrived late */
    if (sr) sr->q = NULL;
    if (in) in->q = NULL;
    Py_XDECREF(env);
    Py_XDECREF((PyObject *)sr);
    Py_XDECREF((PyObject *)in);
    Py_XDECREF(q.headers);
    knit_gauge_dec(w->in_flight);
    wsgi_gil_release();
    if (q.sent && !q.broken) knit_http_finish(req);
    /* else: answered (respond), or the client left / the answer was broken */
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int intern(PyObject **k, const char *s)
{
    *k = PyUnicode_InternFromString(s);
    return *k ? 0 : -1;
}

int wsgi_types_init(void)
{
    if (PyType_Ready(&ErrorsType) < 0 || PyType_Ready(&StartResponseType) < 0 ||
        PyType_Ready(&InputType) < 0 || PyType_Ready(&FileWrapperType) < 0)
        return -1;
    the_errors = PyObject_CallObject((PyObject *)&ErrorsType, NULL);
    if (!the_errors) return -1;
    PyObject *knit = PyImport_ImportModule("knit");
    RequestTimeout = knit ? PyObject_GetAttrString(knit, "RequestTimeout") : NULL;
    Py_XDECREF(knit);
    if (!RequestTimeout) return -1;
    if (intern(&k_method, "REQUEST_METHOD") || intern(&k_script, "SCRIPT_NAME") ||
        intern(&k_path, "PATH_INFO") || intern(&k_query, "QUERY_STRING") ||
        intern(&k_ctype, "CONTENT_TYPE") || intern(&k_clen, "CONTENT_LENGTH") ||
        intern(&k_sname, "SERVER_NAME") || intern(&k_sport, "SERVER_PORT") ||
        intern(&k_proto, "SERVER_PROTOCOL") || intern(&k_raddr, "REMOTE_ADDR") ||
        intern(&k_rport, "REMOTE_PORT") || intern(&k_version, "wsgi.version") ||
        intern(&k_scheme, "wsgi.url_scheme") || intern(&k_input, "wsgi.input") ||
        intern(&k_errors, "wsgi.errors") || intern(&k_mthread, "wsgi.multithread") ||
        intern(&k_mproc, "wsgi.multiprocess") || intern(&k_once, "wsgi.run_once") ||
        intern(&k_fw, "wsgi.file_wrapper") || intern(&k_term, "wsgi.input_terminated") ||
        intern(&k_uri, "REQUEST_URI") || intern(&v_http, "http") || intern(&v_https, "https") ||
        intern(&v_proto10, "HTTP/1.0") || intern(&v_proto11, "HTTP/1.1") || intern(&v_empty, ""))
        return -1;
    v_version = Py_BuildValue("(ii)", 1, 0);
    return v_version ? 0 : -1;
}
