/* tools/knit-wsgi/pyknit.c — the "knit" module Python code imports.
 *
 *   knit.log(msg, level="info")            a line in knit's log (module "py")
 *   knit.counter(name, help="")            a Counter on /metrics: .inc(n=1), .value
 *   knit.gauge(name, help="")              a Gauge: .set(v), .inc(d=1), .dec(d=1), .value
 *   knit.histogram(name, help="", buckets=None)  a Histogram: .observe(v), .count, .sum
 *   knit.call_later(seconds, fn, *args)    run fn(*args) on knit's pool after the delay;
 *                                          returns a handle with .cancel()
 *   knit.LoopingCall(fn, *args)            .start(seconds, now=True), .stop(), .running:
 *                                          fn on the pool every interval, runs never
 *                                          overlap (the next is scheduled after one ends)
 *   knit.stats()                           reactor, pool and HTTP counters (a dict)
 *   knit.connections()                     the open connections (a list of dicts)
 *   knit.flags()                           every flag's value (a dict of strings)
 *   knit.RequestTimeout                    raised in a request's thread after
 *                                          --request-timeout
 *
 * Threads: every function is called from Python threads (knit's workers, the
 * manhole's evaluators, threads the application started) with the GIL held.
 * What belongs to the reactor (timers, HTTP statistics, connections, flags)
 * is reached with knit_call_from_thread / knit_blocking_call_from_thread, the
 * GIL released while waiting. The metrics registry is [any].
 */
#include "wsgi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

/* ---- log -------------------------------------------------------------------------- */

static PyObject *k_log(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"msg", "level", NULL};
    const char *msg, *level = "info";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|s:log", kwlist, &msg, &level)) return NULL;
    int lv = knit_log_level_parse(level);
    if (lv < 0) return PyErr_Format(PyExc_ValueError, "unknown log level %s", level);
    knit_log_emit(lv, "py", "%s", msg);
    Py_RETURN_NONE;
}

/* ---- metrics ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD int kind; /* 0 counter, 1 gauge, 2 histogram */
    void *series;
} MetricObject;

static PyObject *m_inc(MetricObject *m, PyObject *args)
{
    double d = 1;
    if (!PyArg_ParseTuple(args, "|d", &d)) return NULL;
    if (m->kind == 0) {
        if (d < 0) return PyErr_Format(PyExc_ValueError, "a counter only goes up");
        knit_counter_add(m->series, (uint64_t)d);
    } else if (m->kind == 1) {
        knit_gauge_add(m->series, d);
    } else {
        return PyErr_Format(PyExc_TypeError, "a histogram observes, it does not count");
    }
    Py_RETURN_NONE;
}

static PyObject *m_dec(MetricObject *m, PyObject *args)
{
    double d = 1;
    if (!PyArg_ParseTuple(args, "|d", &d)) return NULL;
    if (m->kind != 1) return PyErr_Format(PyExc_TypeError, "only a gauge goes down");
    knit_gauge_add(m->series, -d);
    Py_RETURN_NONE;
}

static PyObject *m_set(MetricObject *m, PyObject *arg)
{
    double v = PyFloat_AsDouble(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (m->kind != 1) return PyErr_Format(PyExc_TypeError, "only a gauge is set");
    knit_gauge_set(m->series, v);
    Py_RETURN_NONE;
}

static PyObject *m_observe(MetricObject *m, PyObject *arg)
{
    double v = PyFloat_AsDouble(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (m->kind != 2) return PyErr_Format(PyExc_TypeError, "only a histogram observes");
    knit_histogram_observe(m->series, v);
    Py_RETURN_NONE;
}

static PyObject *m_value(MetricObject *m, void *unused)
{
    if (m->kind == 0) return PyLong_FromUnsignedLongLong(knit_counter_value(m->series));
    if (m->kind == 1) return PyFloat_FromDouble(knit_gauge_value(m->series));
    return PyLong_FromUnsignedLongLong(knit_histogram_count(m->series));
}

static PyObject *m_sum(MetricObject *m, void *unused)
{
    if (m->kind != 2) return PyErr_Format(PyExc_TypeError, "only a histogram has a sum");
    return PyFloat_FromDouble(knit_histogram_sum(m->series));
}

static PyMethodDef metric_methods[] = {
    {"inc", (PyCFunction)m_inc, METH_VARARGS, "add (counter, gauge)"},
    {"dec", (PyCFunction)m_dec, METH_VARARGS, "subtract (gauge)"},
    {"set", (PyCFunction)m_set, METH_O, "set (gauge)"},
    {"observe", (PyCFunction)m_observe, METH_O, "observe a value (histogram)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef metric_getset[] = {
    {"value", (getter)m_value, NULL, "the value (a histogram: its count)", NULL},
    {"count", (getter)m_value, NULL, "the count", NULL},
    {"sum", (getter)m_sum, NULL, "a histogram's sum", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MetricType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "knit.Metric",
    .tp_basicsize = sizeof(MetricObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = metric_methods,
    .tp_getset = metric_getset,
};

static PyObject *new_metric(int kind, void *series)
{
    if (!series)
        return PyErr_Format(PyExc_ValueError,
                            "cannot register the metric (a bad name, or the name is taken by "
                            "another type)");
    MetricObject *m = PyObject_New(MetricObject, &MetricType);
    if (!m) return NULL;
    m->kind = kind;
    m->series = series;
    return (PyObject *)m;
}

static knit_metrics *mx(void)
{
    return wsgi_global ? wsgi_global->mx : NULL;
}

static PyObject *k_counter(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "help", NULL};
    const char *name, *help = "";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|s:counter", kwlist, &name, &help)) return NULL;
    if (!mx()) return PyErr_Format(PyExc_RuntimeError, "no metrics registry");
    return new_metric(0, knit_counter_new(mx(), name, help[0] ? help : name));
}

static PyObject *k_gauge(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "help", NULL};
    const char *name, *help = "";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|s:gauge", kwlist, &name, &help)) return NULL;
    if (!mx()) return PyErr_Format(PyExc_RuntimeError, "no metrics registry");
    return new_metric(1, knit_gauge_new(mx(), name, help[0] ? help : name));
}

static PyObject *k_histogram(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "help", "buckets", NULL};
    const char *name, *help = "";
    PyObject *buckets = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|sO:histogram", kwlist, &name, &help, &buckets))
        return NULL;
    if (!mx()) return PyErr_Format(PyExc_RuntimeError, "no metrics registry");
    double b[KNIT_METRICS_MAX_BUCKETS] = KNIT_METRICS_DEFAULT_BUCKETS;
    size_t n = 11;
    if (buckets != Py_None) {
        PyObject *seq = PySequence_Fast(buckets, "buckets must be a sequence of numbers");
        if (!seq) return NULL;
        n = (size_t)PySequence_Fast_GET_SIZE(seq);
        if (n < 1 || n > KNIT_METRICS_MAX_BUCKETS) {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "from 1 to %d buckets", KNIT_METRICS_MAX_BUCKETS);
        }
        for (size_t i = 0; i < n; i++)
            b[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i));
        Py_DECREF(seq);
        if (PyErr_Occurred()) return NULL;
    }
    return new_metric(2, knit_histogram_new(mx(), name, help[0] ? help : name, b, n));
}

/* ---- call_later ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD PyObject *fn;
    PyObject *args;
    knit_duration delay;
    int cancelled; /* atomic */
    int ran;       /* atomic */
} DelayedObject;

static PyObject *dc_cancel(DelayedObject *d, PyObject *unused)
{
    int was = __atomic_exchange_n(&d->cancelled, 1, __ATOMIC_ACQ_REL);
    return PyBool_FromLong(!was && !__atomic_load_n(&d->ran, __ATOMIC_ACQUIRE));
}

static PyObject *dc_active(DelayedObject *d, void *unused)
{
    return PyBool_FromLong(!__atomic_load_n(&d->cancelled, __ATOMIC_ACQUIRE) &&
                           !__atomic_load_n(&d->ran, __ATOMIC_ACQUIRE));
}

static void dc_dealloc(DelayedObject *d)
{
    Py_XDECREF(d->fn);
    Py_XDECREF(d->args);
    Py_TYPE(d)->tp_free((PyObject *)d);
}

static PyMethodDef dc_methods[] = {
    {"cancel", (PyCFunction)dc_cancel, METH_NOARGS, "do not run it (True if it had not run)"},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef dc_getset[] = {
    {"active", (getter)dc_active, NULL, "neither run nor cancelled yet", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DelayedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "knit.DelayedCall",
    .tp_basicsize = sizeof(DelayedObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)dc_dealloc,
    .tp_methods = dc_methods,
    .tp_getset = dc_getset,
};

/* [worker] run it */
static void dc_run(void *arg)
{
    DelayedObject *d = arg;
    wsgi_gil_acquire();
    if (!__atomic_exchange_n(&d->cancelled, 1, __ATOMIC_ACQ_REL)) {
        __atomic_store_n(&d->ran, 1, __ATOMIC_RELEASE);
        PyObject *r = PyObject_Call(d->fn, d->args, NULL);
        if (!r)
            wsgi_log_exception("knit.call_later: the function raised", false);
        else
            Py_DECREF(r);
    }
    Py_DECREF(d);
    wsgi_gil_release();
}

/* [any] drop a reference we hold without the GIL */
static void dc_drop(void *arg)
{
    wsgi_gil_acquire();
    Py_DECREF((PyObject *)arg);
    wsgi_gil_release();
}

/* [reactor] the delay passed: hand it to the pool */
static void dc_fire(knit_reactor *r, void *arg)
{
    DelayedObject *d = arg;
    if (__atomic_load_n(&d->cancelled, __ATOMIC_ACQUIRE) ||
        knit_call_in_thread(wsgi_global->pool, dc_run, d, NULL) < 0) {
        /* never on the reactor: a worker drops it */
        if (knit_call_in_thread(wsgi_global->pool, dc_drop, d, NULL) < 0)
            knit_log_kv(KNIT_LOG_WARN, "py", "call_later: the pool refused the call", NULL);
    }
}

/* [reactor] arm the timer */
static void dc_arm(knit_reactor *r, void *arg)
{
    DelayedObject *d = arg;
    knit_call_later(wsgi_global->r, d->delay, dc_fire, d);
}

static PyObject *k_call_later(PyObject *self, PyObject *args)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 2) return PyErr_Format(PyExc_TypeError, "call_later(seconds, fn, *args)");
    double secs = PyFloat_AsDouble(PyTuple_GET_ITEM(args, 0));
    if (secs == -1 && PyErr_Occurred()) return NULL;
    if (secs < 0 || secs > 1e9) return PyErr_Format(PyExc_ValueError, "a delay of 0 s or more");
    PyObject *fn = PyTuple_GET_ITEM(args, 1);
    if (!PyCallable_Check(fn)) return PyErr_Format(PyExc_TypeError, "fn must be callable");
    if (!wsgi_global || !wsgi_global->pool)
        return PyErr_Format(PyExc_RuntimeError, "knit is not running");
    DelayedObject *d = PyObject_New(DelayedObject, &DelayedType);
    if (!d) return NULL;
    Py_INCREF(fn);
    d->fn = fn;
    d->args = PyTuple_GetSlice(args, 2, n);
    d->delay = (knit_duration)(secs * 1e9);
    d->cancelled = d->ran = 0;
    if (!d->args) {
        Py_DECREF(d);
        return NULL;
    }
    Py_INCREF(d); /* the timer's */
    if (knit_call_from_thread(wsgi_global->r, dc_arm, d) < 0) {
        Py_DECREF(d);
        Py_DECREF(d);
        return PyErr_Format(PyExc_RuntimeError, "cannot reach the reactor");
    }
    return (PyObject *)d;
}

/* ---- reactor-side queries ------------------------------------------------------------------ */

typedef struct query {
    int what;   /* 0 stats, 1 connections, 2 flags */
    char *text; /* a Python literal built on the reactor, evaluated here */
    size_t len, cap;
} query;

static void q_put(query *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void q_put(query *q, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(q->text ? q->text + q->len : NULL, q->text ? q->cap - q->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (q->text && q->len + (size_t)n < q->cap) {
            q->len += (size_t)n;
            return;
        }
        size_t cap = q->cap ? q->cap * 2 : 4096;
        while (cap < q->len + (size_t)n + 1)
            cap *= 2;
        char *nt = realloc(q->text, cap);
        if (!nt) return;
        q->text = nt;
        q->cap = cap;
    }
}

/* A Python string literal of S (repr-like, ASCII only). */
static void q_str(query *q, const char *s)
{
    q_put(q, "'");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\'' || c == '\\')
            q_put(q, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            q_put(q, "\\x%02x", c);
        else
            q_put(q, "%c", c);
    }
    q_put(q, "'");
}

static void visit_conn(knit_transport *t, void *arg)
{
    query *q = arg;
    char peer[96] = "";
    knit_sockaddr sa;
    if (knit_transport_peer(t, &sa) == 0) knit_sockaddr_format(&sa, peer, sizeof peer);
    uint64_t in = 0, out = 0;
    knit_transport_bytes(t, &in, &out);
    knit_time now = knit_reactor_now(wsgi_global->r);
    q_put(q, "{'id': %llu, 'kind': ", (unsigned long long)knit_transport_id(t));
    q_str(q, knit_transport_kind(t));
    q_put(q, ", 'peer': ");
    q_str(q, peer);
    q_put(q, ", 'state': ");
    q_str(q, knit_transport_state(t));
    q_put(q, ", 'age': %.3f, 'bytes_in': %llu, 'bytes_out': %llu, 'memory': %zu},",
          KNIT_TO_SEC(now - knit_transport_started(t)), (unsigned long long)in,
          (unsigned long long)out, knit_transport_memory(t));
}

static void visit_flag(const knit_flag *f, void *arg)
{
    query *q = arg;
    char v[512];
    if (knit_flag_format(f, v, sizeof v) < 0) v[0] = 0;
    q_str(q, knit_flag_def_of(f)->name);
    q_put(q, ": ");
    q_str(q, v);
    q_put(q, ",");
}

/* [reactor] */
static void run_query(knit_result *res, void *arg)
{
    query *q = arg;
    wsgi_server *w = wsgi_global;
    if (q->what == 0) {
        knit_reactor_stats rs;
        knit_reactor_get_stats(w->r, &rs);
        knit_pool_stats ps;
        knit_pool_get_stats(w->pool, &ps);
        knit_http_stats hs = {0};
        if (w->http) knit_http_get_stats(w->http, &hs);
        q_put(q,
              "{'reactor': {'iterations': %llu, 'events': %llu, 'timers_fired': %llu, "
              "'calls_run': %llu, 'watched_fds': %zu, 'pending_timers': %zu, "
              "'lag_max': %.6f},",
              (unsigned long long)rs.iterations, (unsigned long long)rs.events,
              (unsigned long long)rs.timers_fired, (unsigned long long)rs.calls_run, rs.watched_fds,
              rs.pending_timers, KNIT_TO_SEC(rs.lag_max));
        q_put(q,
              "'pool': {'threads': %u, 'busy': %u, 'sleeping': %u, 'queued': %zu, "
              "'max_queue': %zu, 'submitted': %llu, 'completed': %llu, 'rejected': %llu, "
              "'wakeups': %llu},",
              ps.threads, ps.threads_busy, ps.threads_sleeping, ps.queued, ps.max_queue,
              (unsigned long long)ps.submitted, (unsigned long long)ps.completed,
              (unsigned long long)ps.rejected, (unsigned long long)ps.wakeups);
        q_put(q,
              "'http': {'requests': %llu, 'connections_open': %llu, 'connections_total': %llu, "
              "'rejected_busy': %llu, 'timeouts': %llu, 'parse_errors': %llu, "
              "'status_5xx': %llu},",
              (unsigned long long)hs.requests, (unsigned long long)hs.connections_open,
              (unsigned long long)hs.connections_total, (unsigned long long)hs.rejected_busy,
              (unsigned long long)hs.timeouts, (unsigned long long)hs.parse_errors,
              (unsigned long long)hs.by_status[5]);
        q_put(q, "'connections': %zu}", knit_transports_count(w->r));
    } else if (q->what == 1) {
        q_put(q, "[");
        knit_transports_visit(w->r, visit_conn, q);
        q_put(q, "]");
    } else {
        q_put(q, "{");
        knit_flags_visit(w->flags, visit_flag, q);
        q_put(q, "}");
    }
    knit_result_set(res, NULL, NULL);
}

static PyObject *ask_reactor(int what)
{
    if (!wsgi_global || !wsgi_global->r)
        return PyErr_Format(PyExc_RuntimeError, "knit is not running");
    query q = {.what = what};
    knit_result res;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = knit_blocking_call_from_thread(wsgi_global->r, run_query, &q, &res);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        free(q.text);
        return PyErr_Format(PyExc_RuntimeError, "cannot reach the reactor: %s", knit_strerror(rc));
    }
    knit_result_clear(&res);
    if (!q.text) return PyErr_NoMemory();
    PyObject *ast = PyImport_ImportModule("ast");
    PyObject *out = ast ? PyObject_CallMethod(ast, "literal_eval", "s", q.text) : NULL;
    Py_XDECREF(ast);
    free(q.text);
    return out;
}

static PyObject *k_stats(PyObject *self, PyObject *unused)
{
    return ask_reactor(0);
}
static PyObject *k_connections(PyObject *self, PyObject *unused)
{
    return ask_reactor(1);
}
static PyObject *k_flags(PyObject *self, PyObject *unused)
{
    return ask_reactor(2);
}

/* ---- the module ------------------------------------------------------------------------------ */

static PyMethodDef knit_methods[] = {
    {"log", (PyCFunction)(void (*)(void))k_log, METH_VARARGS | METH_KEYWORDS,
     "log(msg, level='info')"},
    {"counter", (PyCFunction)(void (*)(void))k_counter, METH_VARARGS | METH_KEYWORDS,
     "counter(name, help='') -> a counter on /metrics"},
    {"gauge", (PyCFunction)(void (*)(void))k_gauge, METH_VARARGS | METH_KEYWORDS,
     "gauge(name, help='') -> a gauge on /metrics"},
    {"histogram", (PyCFunction)(void (*)(void))k_histogram, METH_VARARGS | METH_KEYWORDS,
     "histogram(name, help='', buckets=None) -> a histogram on /metrics"},
    {"call_later", (PyCFunction)k_call_later, METH_VARARGS,
     "call_later(seconds, fn, *args) -> DelayedCall: fn on the pool after the delay"},
    {"stats", (PyCFunction)k_stats, METH_NOARGS, "reactor, pool and HTTP statistics"},
    {"connections", (PyCFunction)k_connections, METH_NOARGS, "the open connections"},
    {"flags", (PyCFunction)k_flags, METH_NOARGS, "every flag's value"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef knit_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "knit",
    .m_doc = "knit-wsgi's bridge to knit: logging, metrics, the pool, the reactor.",
    .m_size = -1,
    .m_methods = knit_methods,
};

/* LoopingCall in Python on top of call_later: the next run is scheduled when
 * one ends, so runs never overlap. */
static const char looping_src[] =
    "class LoopingCall:\n"
    "    '''fn(*args) on knit's pool every interval; runs never overlap.'''\n"
    "    def __init__(self, fn, *args):\n"
    "        self.fn, self.args = fn, args\n"
    "        self.running, self._dc, self.interval = False, None, None\n"
    "    def start(self, interval, now=True):\n"
    "        if self.running: raise RuntimeError('already running')\n"
    "        if interval <= 0: raise ValueError('an interval above 0')\n"
    "        self.interval, self.running = interval, True\n"
    "        self._dc = call_later(0 if now else interval, self._run)\n"
    "        return self\n"
    "    def stop(self):\n"
    "        self.running = False\n"
    "        if self._dc is not None: self._dc.cancel()\n"
    "    def _run(self):\n"
    "        if not self.running: return\n"
    "        try:\n"
    "            self.fn(*self.args)\n"
    "        except Exception:\n"
    "            import traceback\n"
    "            log('LoopingCall: ' + traceback.format_exc().rstrip(), 'error')\n"
    "        if self.running: self._dc = call_later(self.interval, self._run)\n";

static PyObject *PyInit_knit(void)
{
    if (PyType_Ready(&MetricType) < 0 || PyType_Ready(&DelayedType) < 0) return NULL;
    PyObject *m = PyModule_Create(&knit_module);
    if (!m) return NULL;
    PyObject *rt = PyErr_NewExceptionWithDoc("knit.RequestTimeout",
                                             "The request ran longer than --request-timeout.",
                                             PyExc_Exception, NULL);
    if (!rt || PyModule_AddObject(m, "RequestTimeout", rt) < 0) {
        Py_XDECREF(rt);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *dict = PyModule_GetDict(m);
    PyObject *builtins = PyEval_GetBuiltins();
    if (PyDict_SetItemString(dict, "__builtins__", builtins) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *r = PyRun_String(looping_src, Py_file_input, dict, dict);
    if (!r) {
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(r);
    return m;
}

int pyknit_register(void)
{
    return PyImport_AppendInittab("knit", PyInit_knit) < 0 ? KNIT_ENOMEM : 0;
}
