/* tools/knit-wsgi/pymanhole.c — the Python manhole: a REPL into the live
 * interpreter over knit's manhole transports (UNIX socket with its peer
 * checks, SSH), as an engine (knit_manhole_set_engine in knit/manhole.h).
 *
 * Each session has a thread of its own that evaluates with Python's `code`
 * module semantics (InteractiveConsole: multi-line input, tracebacks, `_`
 * through sys.displayhook), so a long evaluation never stalls the reactor.
 * The session's input is queued to that thread (feed/eval answer PENDING);
 * the thread captures what the evaluation prints (sys.stdout and sys.stderr
 * are replaced once by a router that sends a manhole thread's writes to its
 * session and everyone else's to the real stream) and posts output and
 * status back to the reactor (knit_call_from_thread), which writes them and
 * calls knit_manhole_session_done.
 *
 * Ctrl-C: the reactor starts a short-lived thread that takes the GIL and
 * raises KeyboardInterrupt in the evaluating thread
 * (PyThreadState_SetAsyncExc) — only while it evaluates. Python sees it at
 * the next bytecode; code blocked inside C (time.sleep) sees it when it
 * returns. Closing a session interrupts its evaluation the same way.
 *
 * Life of a session (psess): references are held by the reactor side (from
 * open to close), the thread (until it exits), every delivery in flight
 * (until the reactor ran it) and every interrupter thread; the last one frees
 * it. After close nothing touches the manhole session (s) any more: the
 * reactor side's `closed` is checked by each delivery, and deliveries run on
 * the reactor in order.
 */
#include "wsgi.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "knit/manhole.h"

enum { IN_FEED, IN_EVAL, IN_RESET };

typedef struct item {
    struct item *next;
    int kind;
    size_t len;
    char text[];
} item;

typedef struct psess {
    knit_manhole_session *s; /* [reactor] NULL once closed */
    knit_reactor *r;
    int refs;  /* atomic */
    bool more; /* [reactor] the last line left an incomplete statement */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item *head, *tail; /* [mu] input waiting for the thread */
    bool stop;         /* [mu] */
    /* [GIL] */
    bool evaluating;
    unsigned long thread_id;
} psess;

static PyObject *helper;  /* the helper module (Console, router) */
static int threads_alive; /* session threads not yet ended (atomic) */

static void ps_unref(psess *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (item *it = p->head; it;) {
        item *n = it->next;
        free(it);
        it = n;
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

static void ps_ref(psess *p)
{
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
}

/* ---- back on the reactor ------------------------------------------------------------ */

typedef struct delivery {
    psess *p;
    int status;
    size_t len;
    char text[];
} delivery;

static void deliver(knit_reactor *r, void *arg)
{
    delivery *d = arg;
    psess *p = d->p;
    if (p->s) {
        if (d->len) knit_manhole_session_write(p->s, d->text, d->len);
        p->more = d->status == KNIT_MANHOLE_MORE;
        knit_manhole_session_done(p->s, d->status);
    }
    free(d);
    ps_unref(p);
}

static void post(psess *p, int status, const char *text, size_t len)
{
    delivery *d = malloc(sizeof *d + len);
    if (!d) {
        len = 0;
        d = malloc(sizeof *d);
        if (!d) return; /* the session stays busy until the client leaves */
    }
    d->p = p;
    d->status = status;
    d->len = len;
    memcpy(d->text, text, len);
    ps_ref(p);
    if (knit_call_from_thread(p->r, deliver, d) < 0) {
        free(d);
        ps_unref(p);
    }
}

/* ---- the evaluating thread ------------------------------------------------------------ */

static void *ps_main(void *arg)
{
    psess *p = arg;
    knit_signal_block_all();
    wsgi_gil_acquire();
    p->thread_id = PyThread_get_thread_ident();
    PyObject *console = PyObject_CallMethod(helper, "Console", NULL);
    if (!console) wsgi_log_exception("manhole: cannot make a console", false);
    for (;;) {
        wsgi_gil_release();
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        item *it = p->head;
        if (it) {
            p->head = it->next;
            if (!p->head) p->tail = NULL;
        }
        bool stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        wsgi_gil_acquire();
        if (stop) {
            free(it);
            break;
        }
        if (it->kind == IN_RESET) {
            if (console) {
                PyObject *r = PyObject_CallMethod(console, "resetbuffer", NULL);
                Py_XDECREF(r);
                PyErr_Clear();
            }
            free(it);
            continue;
        }
        PyObject *src = PyUnicode_DecodeUTF8(it->text, (Py_ssize_t)it->len, "replace");
        int kind = it->kind;
        free(it);
        p->evaluating = true;
        PyObject *r =
            console && src
                ? PyObject_CallMethod(console, kind == IN_FEED ? "feed" : "chunk", "O", src)
                : NULL;
        p->evaluating = false;
        Py_XDECREF(src);
        int status = KNIT_MANHOLE_FAILED;
        const char *out = "";
        Py_ssize_t outlen = 0;
        PyObject *res = NULL;
        if (!r) {
            /* the console itself failed (or the interrupt came between) */
            PyErr_Clear();
            out = "manhole: evaluation failed\n";
            outlen = (Py_ssize_t)strlen(out);
        } else if (PyArg_ParseTuple(r, "iO", &status, &res) && PyUnicode_Check(res)) {
            out = PyUnicode_AsUTF8AndSize(res, &outlen);
            if (!out) {
                PyErr_Clear();
                out = "";
                outlen = 0;
            }
        } else {
            PyErr_Clear();
        }
        post(p, status, out, (size_t)outlen);
        Py_XDECREF(r);
        /* a KeyboardInterrupt that arrived after the evaluation ended */
        if (PyErr_Occurred()) PyErr_Clear();
    }
    Py_XDECREF(console);
    wsgi_gil_release();
    __atomic_sub_fetch(&threads_alive, 1, __ATOMIC_ACQ_REL);
    ps_unref(p);
    return NULL;
}

/* ---- Ctrl-C ------------------------------------------------------------------------------ */

static void *interrupter(void *arg)
{
    psess *p = arg;
    knit_signal_block_all();
    PyGILState_STATE st = PyGILState_Ensure();
    if (p->evaluating) PyThreadState_SetAsyncExc(p->thread_id, PyExc_KeyboardInterrupt);
    PyGILState_Release(st);
    ps_unref(p);
    return NULL;
}

static void ps_interrupt(void *state)
{
    psess *p = state;
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    ps_ref(p);
    if (pthread_create(&th, &a, interrupter, p) != 0) {
        ps_unref(p);
        knit_log_kv(KNIT_LOG_WARN, "manhole", "cannot start a thread to interrupt", NULL);
    }
    pthread_attr_destroy(&a);
}

/* ---- the engine ----------------------------------------------------------------------------- */

static int ps_open(knit_manhole_session *s, void *arg, void **state)
{
    psess *p = calloc(1, sizeof *p);
    if (!p) return KNIT_ENOMEM;
    p->s = s;
    p->r = arg;
    p->refs = 2; /* the reactor side, the thread */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    __atomic_add_fetch(&threads_alive, 1, __ATOMIC_ACQ_REL);
    int rc = pthread_create(&th, &a, ps_main, p);
    pthread_attr_destroy(&a);
    if (rc) {
        __atomic_sub_fetch(&threads_alive, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return -rc;
    }
    knit_log_kv(KNIT_LOG_INFO, "manhole", "python session", "who", knit_manhole_session_who(s),
                NULL);
    *state = p;
    return 0;
}

static int ps_queue(psess *p, int kind, const char *text, size_t len)
{
    item *it = malloc(sizeof *it + len);
    if (!it) return KNIT_ENOMEM;
    it->next = NULL;
    it->kind = kind;
    it->len = len;
    memcpy(it->text, text, len);
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = it;
    else
        p->head = it;
    p->tail = it;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static int ps_feed(void *state, const char *line, size_t len)
{
    int rc = ps_queue(state, IN_FEED, line, len);
    return rc < 0 ? rc : KNIT_MANHOLE_PENDING;
}

static int ps_eval(void *state, const char *chunk, size_t len)
{
    int rc = ps_queue(state, IN_EVAL, chunk, len);
    return rc < 0 ? rc : KNIT_MANHOLE_PENDING;
}

static void ps_reset(void *state)
{
    psess *p = state;
    p->more = false;
    ps_queue(p, IN_RESET, "", 0);
}

static const char *ps_prompt(void *state)
{
    return ((psess *)state)->more ? "... " : ">>> ";
}

static void ps_close(void *state)
{
    psess *p = state;
    p->s = NULL;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    ps_interrupt(p); /* a runaway evaluation ends too */
    ps_unref(p);
}

static knit_manhole_engine engine = {
    .open = ps_open,
    .feed = ps_feed,
    .eval = ps_eval,
    .reset = ps_reset,
    .prompt = ps_prompt,
    .interrupt = ps_interrupt,
    .close = ps_close,
};

/* The console and the output router, in Python. */
static const char helper_src[] =
    "import code, sys, threading, builtins\n"
    "class _Router:\n"
    "    def __init__(self, real):\n"
    "        self.real, self.local = real, _local\n"
    "    def write(self, s):\n"
    "        sink = getattr(self.local, 'sink', None)\n"
    "        if sink is None:\n"
    "            return self.real.write(s) if self.real else len(s)\n"
    "        sink.append(s)\n"
    "        return len(s)\n"
    "    def flush(self):\n"
    "        if getattr(self.local, 'sink', None) is None and self.real: self.real.flush()\n"
    "    def __getattr__(self, name):\n"
    "        return getattr(self.real, name)\n"
    "_local = threading.local()\n"
    "def install():\n"
    "    if not isinstance(sys.stdout, _Router): sys.stdout = _Router(sys.stdout)\n"
    "    if not isinstance(sys.stderr, _Router): sys.stderr = _Router(sys.stderr)\n"
    "class Console(code.InteractiveConsole):\n"
    "    '''code.InteractiveConsole that reports (status, output) per input.'''\n"
    "    def __init__(self):\n"
    "        import knit\n"
    "        super().__init__({'__name__': '__console__', 'knit': knit})\n"
    "        self.failed = False\n"
    "    def showtraceback(self):\n"
    "        self.failed = True\n"
    "        super().showtraceback()\n"
    "    def showsyntaxerror(self, filename=None):\n"
    "        self.failed = True\n"
    "        super().showsyntaxerror(filename)\n"
    "    def write(self, data):\n"
    "        sys.stderr.write(data)\n"
    "    def _run(self, fn, *a):\n"
    "        self.failed, _local.sink = False, []\n"
    "        try:\n"
    "            try:\n"
    "                more = fn(*a)\n"
    "            except KeyboardInterrupt:\n"
    "                self.resetbuffer(); self.failed, more = True, False\n"
    "                sys.stderr.write('KeyboardInterrupt\\n')\n"
    "            except SystemExit:\n"
    "                self.failed, more = True, False\n"
    "                sys.stderr.write('SystemExit is ignored in the manhole\\n')\n"
    "            out = ''.join(_local.sink)\n"
    "        finally:\n"
    "            _local.sink = None\n"
    "        return (1 if more else 2 if self.failed else 0), out\n"
    "    def feed(self, line):\n"
    "        return self._run(self.push, line)\n"
    "    def _chunk(self, src):\n"
    "        # a whole chunk (knit-manhole -e): run it; a last expression is shown\n"
    "        import ast\n"
    "        try:\n"
    "            tree = ast.parse(src, '<manhole>', 'exec')\n"
    "            last = None\n"
    "            if tree.body and isinstance(tree.body[-1], ast.Expr):\n"
    "                last = compile(ast.Expression(tree.body.pop().value), '<manhole>', 'eval')\n"
    "            body = compile(tree, '<manhole>', 'exec')\n"
    "        except (SyntaxError, OverflowError, ValueError):\n"
    "            self.showsyntaxerror('<manhole>')\n"
    "            return False\n"
    "        try:\n"
    "            exec(body, self.locals)\n"
    "            if last is not None:\n"
    "                sys.displayhook(eval(last, self.locals))\n"
    "        except SystemExit:\n"
    "            raise\n"
    "        except BaseException:\n"
    "            self.showtraceback()\n"
    "        return False\n"
    "    def chunk(self, src):\n"
    "        return self._run(self._chunk, src)\n";

int pymanhole_attach(knit_manhole *m)
{
    /* [reactor], during setup: the GIL is taken here once, before any
     * request runs. */
    wsgi_gil_acquire();
    int rc = 0;
    if (!helper) {
        PyObject *mod = PyModule_New("knit_manhole");
        PyObject *dict = mod ? PyModule_GetDict(mod) : NULL;
        if (dict && PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) == 0) {
            PyObject *r = PyRun_String(helper_src, Py_file_input, dict, dict);
            if (r) {
                Py_DECREF(r);
                r = PyObject_CallMethod(mod, "install", NULL);
            }
            if (r) {
                Py_DECREF(r);
                helper = mod;
                mod = NULL;
            }
        }
        Py_XDECREF(mod);
        if (!helper) {
            wsgi_log_exception("manhole: cannot set up the Python console", false);
            rc = KNIT_EINVAL;
        }
    }
    if (rc == 0) {
        static char banner[200];
        snprintf(banner, sizeof banner,
                 "Python %.40s in knit-wsgi; a thread per session; knit.stats(), "
                 "knit.connections(), knit.flags()",
                 Py_GetVersion());
        char *sp = strchr(banner + 7, ' '); /* "3.11.2 (main, ...)": keep the number */
        if (sp && sp < banner + 7 + 12)
            memmove(sp, strstr(banner, " in knit-wsgi"),
                    strlen(strstr(banner, " in knit-wsgi")) + 1);
        engine.banner = banner;
        rc = knit_manhole_set_engine(m, &engine, wsgi_global->r);
    }
    wsgi_gil_release();
    return rc;
}

/* Wait (bounded) for the session threads to end before Python is finalized.
 * [reactor/main], with the GIL released. */
void pymanhole_wait_threads(knit_duration max)
{
    for (knit_duration waited = 0;
         __atomic_load_n(&threads_alive, __ATOMIC_ACQUIRE) > 0 && waited < max;
         waited += KNIT_MSEC(10))
        usleep(10000);
}
