/* tools/knit-wsgi/main.c — knit-wsgi: host a Python WSGI application on
 * knit's half-sync HTTP container.
 *
 *   knit-wsgi --app=module:callable [--pythonpath=DIR] --http=ENDPOINT --threads=N
 *   knit-wsgi --app=path/to/app.py[:callable] ...
 *
 * What it owns: the flags (every HTTP limit and timeout of knit_http_options,
 * plus --app, --mount, --threads, --request-timeout, --debug, --metrics,
 * --manhole), the embedded interpreter (initialised in setup on the reactor
 * thread, which then gives the GIL away for good; finalised in teardown after
 * the pool was joined), a worker pool sized by --threads, and the service
 * tree: manhole (the Python REPL, pymanhole.c) then http. knit_main owns flag
 * parsing, logging (SIGHUP reopens --log-file), signals and the SIGTERM
 * sequence: the HTTP server drains (in-flight requests finish, up to 3/4 of
 * --shutdown-timeout), then the pool drains and joins.
 *
 * Exit status: 0 after a clean stop, 1 when it could not start, 2 for a bad
 * flag — including an --app that cannot be loaded (the message names the
 * module, the file or the attribute and Python's exception).
 */
#include "wsgi.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/service.h"

#define WSGI_VERSION "0.1.0"

/* ---- flags ------------------------------------------------------------------------------ */

static int validate_app(const char *text, char *why, size_t whylen, void *arg)
{
    if (text[0] && text[0] != ':' && !strchr(text, '\n')) return 0;
    snprintf(why, whylen, "module:callable or path/to/file.py[:callable], e.g. myapp:app");
    return KNIT_EINVAL;
}

static int validate_threads(const char *text, char *why, size_t whylen, void *arg)
{
    uint64_t n;
    if (knit_parse_uint64(text, &n) == 0 && n >= 1 && n <= WSGI_MAX_THREADS) return 0;
    snprintf(why, whylen, "a number of threads from 1 to %d", WSGI_MAX_THREADS);
    return KNIT_EINVAL;
}

static int validate_positive(const char *text, char *why, size_t whylen, void *arg)
{
    uint64_t n;
    if (knit_parse_uint64(text, &n) == 0 && n >= 1 && n <= (1u << 24)) return 0;
    snprintf(why, whylen, "a number from 1 to %u", 1u << 24);
    return KNIT_EINVAL;
}

static int validate_mount(const char *text, char *why, size_t whylen, void *arg)
{
    size_t n = strlen(text);
    if (n == 0 || (text[0] == '/' && n > 1 && text[n - 1] != '/' && !strchr(text, '*') &&
                   !strchr(text, '{') && !strchr(text, '?')))
        return 0;
    snprintf(why, whylen, "a path prefix such as /api (no trailing '/'), or empty");
    return KNIT_EINVAL;
}

static int validate_path_or_off(const char *text, char *why, size_t whylen, void *arg)
{
    if (!text[0] || strcmp(text, "off") == 0 || (text[0] == '/' && !strchr(text, '*'))) return 0;
    snprintf(why, whylen, "a path such as /metrics, or off");
    return KNIT_EINVAL;
}

static bool is_off(const char *text)
{
    return !text[0] || strcmp(text, "off") == 0 || strcmp(text, "none") == 0;
}

static int validate_manhole(const char *text, char *why, size_t whylen, void *arg)
{
    if (is_off(text)) return 0;
    int rc = knit_flag_validate_endpoint(text, why, whylen, NULL);
    if (rc < 0) return rc;
    static const char *const kinds[] = {"unix:", "fd:", "systemd:", "ssh:"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(text, kinds[i], strlen(kinds[i])) == 0) return 0;
    snprintf(why, whylen, "the manhole serves unix:PATH or ssh:PORT:authorizedKeys=FILE; off");
    return KNIT_EBADENDPOINT;
}

static const char *const log_formats[] = {"combined", "json", NULL};

static const knit_flag_def wsgi_flag_defs[] = {
    KNIT_FLAG_DEF("app", KNIT_FLAG_STRING, NULL,
                  "the WSGI application: module:callable, or path/to/file.py[:callable] "
                  "(callable default: application)",
                  .validate = validate_app, .metavar = "MODULE:CALLABLE"),
    KNIT_FLAG_DEF("pythonpath", KNIT_FLAG_LIST, "",
                  "directories put first on sys.path (the current directory always is)"),
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, WSGI_DEFAULT_HTTP,
                  "where HTTP is served (endpoint string; ssl:... gives wsgi.url_scheme https)"),
    KNIT_FLAG_DEF("mount", KNIT_FLAG_STRING, "",
                  "serve the application below this prefix: SCRIPT_NAME=PREFIX, PATH_INFO the rest",
                  .validate = validate_mount),
    KNIT_FLAG_DEF("threads", KNIT_FLAG_UINT64, WSGI_DEFAULT_THREADS,
                  "worker threads running the application", .validate = validate_threads),
    KNIT_FLAG_DEF("queue", KNIT_FLAG_UINT64, WSGI_DEFAULT_QUEUE,
                  "requests waiting for a thread; beyond it 503 with Retry-After",
                  .validate = validate_positive),
    KNIT_FLAG_DEF("request-timeout", KNIT_FLAG_DURATION, "0",
                  "a request running longer gets 504 and its Python stack logged (0: none)"),
    KNIT_FLAG_DEF("debug", KNIT_FLAG_BOOL, "false",
                  "put tracebacks in 500 answers (they are always in the log)"),
    KNIT_FLAG_DEF("metrics", KNIT_FLAG_STRING, "/metrics",
                  "serve Prometheus metrics at this path (ahead of the app), or off",
                  .validate = validate_path_or_off),
    KNIT_FLAG_DEF("manhole", KNIT_FLAG_ENDPOINT, "off",
                  "Python REPL into the process (knit-manhole PATH): unix:PATH, "
                  "ssh:PORT:authorizedKeys=FILE; off to disable",
                  .validate = validate_manhole),
    KNIT_FLAG_DEF("access-log", KNIT_FLAG_STRING, "",
                  "access log: a file, - for stdout, empty for none"),
    KNIT_FLAG_DEF("access-log-format", KNIT_FLAG_ENUM, "combined",
                  "access log format: combined or json", .choices = log_formats),
    KNIT_FLAG_DEF("max-body", KNIT_FLAG_BYTES, WSGI_DEFAULT_MAX_BODY,
                  "largest request body (413 above); streamed, never held whole"),
    KNIT_FLAG_DEF("max-body-memory", KNIT_FLAG_BYTES, "64MiB",
                  "request body bytes the server holds at once (503 above)"),
    KNIT_FLAG_DEF("max-head", KNIT_FLAG_BYTES, "8KiB", "request line and headers (431 above)"),
    KNIT_FLAG_DEF("max-headers", KNIT_FLAG_UINT64, "64", "header lines (431 above)",
                  .validate = validate_positive),
    KNIT_FLAG_DEF("max-connections", KNIT_FLAG_UINT64, "10000",
                  "open connections per listener (0: unlimited)"),
    KNIT_FLAG_DEF("max-pipeline", KNIT_FLAG_UINT64, "16",
                  "pipelined requests queued behind the current one"),
    KNIT_FLAG_DEF("output-budget", KNIT_FLAG_BYTES, "256MiB",
                  "bytes queued for all clients (0: unlimited)"),
    KNIT_FLAG_DEF("header-timeout", KNIT_FLAG_DURATION, "10s", "the whole head must arrive"),
    KNIT_FLAG_DEF("idle-timeout", KNIT_FLAG_DURATION, "75s", "keep-alive connection idle"),
    KNIT_FLAG_DEF("body-timeout", KNIT_FLAG_DURATION, "60s", "between two arrivals of body bytes"),
    KNIT_FLAG_DEF("body-deadline", KNIT_FLAG_DURATION, "300s", "a whole request body"),
    KNIT_FLAG_DEF("write-timeout", KNIT_FLAG_DURATION, "60s",
                  "output stuck above the high-water mark"),
};

static int add_flags(knit_flags *fs, void *arg)
{
    int rc = knit_manhole_init(); /* ssh:... must validate */
    if (rc < 0) return rc;
    return knit_flags_add(fs, "wsgi", "WSGI server", wsgi_flag_defs,
                          sizeof wsgi_flag_defs / sizeof wsgi_flag_defs[0]);
}

/* ---- state -------------------------------------------------------------------------------- */

typedef struct wsgi_main {
    wsgi_server w;
    knit_app *kapp;
    knit_manhole *mh;
    PyThreadState *main_ts; /* the setup thread's, saved while others run Python */
    bool py_up;
    bool bad_app;
    const char *http_desc, *manhole_desc, *metrics_path;
    char mount[256];
    int access_fd;
    knit_http_options ho;
    uint64_t max_body;
} wsgi_main;

/* ---- loading the application ---------------------------------------------------------------- */

/* The exception set, as "Type: message" in BUF. [GIL] */
static void exc_text(char *buf, size_t len)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyObject *s = v ? PyObject_Str(v) : NULL;
    const char *name = t ? ((PyTypeObject *)t)->tp_name : "error";
    const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(buf, len, "%s%s%s", name, msg && msg[0] ? ": " : "", msg ? msg : "");
    PyErr_Clear();
    Py_XDECREF(s);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
}

/* Import --app. Returns the callable, or NULL after printing why. [GIL] */
static PyObject *load_app(const char *spec)
{
    char what[512], why[1024];
    char *copy = strdup(spec);
    if (!copy) return NULL;
    const char *attr = "application";
    char *target = copy;
    /* "file.py:callable", "file.py", "module:callable", "module" */
    char *colon = strrchr(copy, ':');
    if (colon && colon[1] && !strchr(colon, '/')) {
        *colon = 0;
        attr = colon + 1;
    }
    size_t tl = strlen(target);
    bool file = tl > 3 && strcmp(target + tl - 3, ".py") == 0;
    PyObject *mod = NULL;
    if (file) {
        snprintf(what, sizeof what, "file %s", target);
        if (access(target, R_OK) != 0) {
            snprintf(why, sizeof why, "%s", strerror(errno));
        } else {
            PyObject *util = PyImport_ImportModule("importlib.util");
            PyObject *specobj = util ? PyObject_CallMethod(util, "spec_from_file_location", "ss",
                                                           "__wsgi_app__", target)
                                     : NULL;
            mod = specobj && specobj != Py_None
                      ? PyObject_CallMethod(util, "module_from_spec", "O", specobj)
                      : NULL;
            if (mod) {
                PyObject *sys_modules = PyImport_GetModuleDict();
                PyDict_SetItemString(sys_modules, "__wsgi_app__", mod);
                PyObject *loader = PyObject_GetAttrString(specobj, "loader");
                PyObject *r = loader ? PyObject_CallMethod(loader, "exec_module", "O", mod) : NULL;
                Py_XDECREF(loader);
                if (!r) Py_CLEAR(mod);
                Py_XDECREF(r);
            }
            if (!mod && !PyErr_Occurred())
                PyErr_SetString(PyExc_ImportError, "not a loadable Python file");
            Py_XDECREF(specobj);
            Py_XDECREF(util);
            if (!mod) exc_text(why, sizeof why);
        }
    } else {
        snprintf(what, sizeof what, "module %s", target);
        mod = PyImport_ImportModule(target);
        if (!mod) exc_text(why, sizeof why);
    }
    PyObject *app = NULL;
    if (mod) {
        app = PyObject_GetAttrString(mod, attr);
        if (!app) {
            PyErr_Clear();
            snprintf(why, sizeof why, "it has no attribute '%s'", attr);
        } else if (!PyCallable_Check(app)) {
            snprintf(why, sizeof why, "'%s' is a %s, not a callable", attr, Py_TYPE(app)->tp_name);
            Py_CLEAR(app);
        }
        Py_DECREF(mod);
    }
    if (!app) fprintf(stderr, "knit-wsgi: --app=%s: cannot load %s: %s\n", spec, what, why);
    free(copy);
    return app;
}

static int python_init(wsgi_main *g, knit_flags *fs)
{
    int rc = pyknit_register();
    if (rc < 0) return rc;
    PyConfig c;
    PyConfig_InitPythonConfig(&c);
    c.install_signal_handlers = 0; /* knit owns the signals */
    c.parse_argv = 0;
    char *argv0[] = {"knit-wsgi", NULL};
    PyStatus st = PyConfig_SetBytesArgv(&c, 1, argv0);
    if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&c);
    PyConfig_Clear(&c);
    if (PyStatus_Exception(st)) {
        knit_log_kv(KNIT_LOG_ERROR, "wsgi", "cannot start Python", "why",
                    st.err_msg ? st.err_msg : "?", NULL);
        return KNIT_EINVAL;
    }
    g->py_up = true;
    /* sys.path: --pythonpath entries, then the current directory, first */
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    size_t n = 0;
    const char *const *dirs = knit_flags_list(fs, "pythonpath", &n);
    PyObject *cwd = PyUnicode_FromString("");
    if (path && cwd) PyList_Insert(path, 0, cwd);
    Py_XDECREF(cwd);
    for (size_t i = n; i-- > 0;) {
        PyObject *d = PyUnicode_DecodeFSDefault(dirs[i]);
        if (path && d) PyList_Insert(path, 0, d);
        Py_XDECREF(d);
    }
    PyObject *knit = PyImport_ImportModule("knit");
    Py_XDECREF(knit);
    if (!knit || wsgi_types_init() < 0) {
        wsgi_log_exception("cannot set up the knit module", false);
        return KNIT_EINVAL;
    }
    g->w.app = load_app(knit_flags_string(fs, "app"));
    if (!g->w.app) {
        g->bad_app = true;
        return KNIT_EINVAL;
    }
    return 0;
}

/* ---- services -------------------------------------------------------------------------------- */

static knit_deferred *manhole_start(knit_service *s, void *arg)
{
    wsgi_main *g = arg;
    int rc = knit_manhole_new(&g->mh, g->w.r, NULL);
    if (rc == 0) rc = knit_manhole_attach_flags(g->mh, g->w.flags);
    if (rc == 0) rc = pymanhole_attach(g->mh);
    if (rc == 0) rc = knit_manhole_listen(g->mh, g->manhole_desc);
    if (rc < 0) {
        knit_manhole_free(g->mh);
        g->mh = NULL;
        return knit_deferred_failed(
            knit_failure_new(rc, "manhole on %s: %s", g->manhole_desc, knit_strerror(rc)));
    }
    knit_log_kv(KNIT_LOG_INFO, "wsgi", "manhole", "endpoint", g->manhole_desc, NULL);
    return NULL;
}

static knit_deferred *manhole_stop(knit_service *s, void *arg)
{
    wsgi_main *g = arg;
    knit_manhole_free(g->mh); /* sessions close; their threads end on their own */
    g->mh = NULL;
    return NULL;
}

/* SERVER_NAME from the endpoint's interface (or the host name). */
static void server_name(wsgi_main *g)
{
    const char *p = strstr(g->http_desc, ":interface=");
    if (p) {
        p += strlen(":interface=");
        size_t n = strcspn(p, ":");
        if (n && n < sizeof g->w.server_name) {
            memcpy(g->w.server_name, p, n);
            g->w.server_name[n] = 0;
            return;
        }
    }
    if (gethostname(g->w.server_name, sizeof g->w.server_name) != 0)
        snprintf(g->w.server_name, sizeof g->w.server_name, "localhost");
}

static knit_deferred *http_start(knit_service *s, void *arg)
{
    wsgi_main *g = arg;
    wsgi_server *w = &g->w;
    int rc = knit_http_server_new(w->r, &g->ho, &w->http);
    if (rc == 0 && !is_off(g->metrics_path))
        rc = knit_metrics_route(w->http, g->metrics_path, w->mx);
    knit_http_route_options ro;
    knit_http_route_options_init(&ro);
    ro.mode = KNIT_HTTP_POOL_STREAM;
    ro.max_body = g->max_body;
    char pattern[300];
    if (rc == 0 && w->mount_len)
        rc = knit_http_route_with(w->http, NULL, w->mount, &ro, wsgi_handle, w);
    snprintf(pattern, sizeof pattern, "%s/*", w->mount);
    if (rc == 0) rc = knit_http_route_with(w->http, NULL, pattern, &ro, wsgi_handle, w);
    if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "http server"));
    char err[256] = "";
    rc = knit_http_listen(w->http, g->http_desc, err, sizeof err);
    if (rc < 0)
        return knit_deferred_failed(
            knit_failure_new(rc, "cannot listen on %s: %s", g->http_desc, err));
    knit_metrics_add_http(w->mx, w->r, w->http, "wsgi");
    unsigned port = knit_http_port(w->http, 0);
    server_name(g);
    snprintf(w->server_port, sizeof w->server_port, "%u", port);
    rc = wsgi_watchdog_start(w);
    if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "the request-timeout watchdog"));
    printf("knit-wsgi %s: serving %s on %s (port %u, %u threads)\n", WSGI_VERSION,
           knit_flags_string(w->flags, "app"), g->http_desc, port,
           (unsigned)knit_flags_uint64(w->flags, "threads"));
    fflush(stdout);
    knit_log_kv(KNIT_LOG_INFO, "wsgi", "listening", "http", g->http_desc, NULL);
    return NULL;
}

static void http_drained(knit_http_server *s, void *arg)
{
    knit_deferred *d = arg;
    knit_deferred_callback(d, NULL, NULL);
    knit_deferred_unref(d);
}

static knit_deferred *http_stop(knit_service *s, void *arg)
{
    wsgi_main *g = arg;
    if (!g->w.http) return NULL;
    knit_deferred *d = knit_deferred_new();
    knit_deferred *ret = knit_deferred_ref(d);
    knit_http_server_drain(g->w.http, http_drained, d);
    return ret;
}

static const knit_service_ops manhole_ops = {.start = manhole_start, .stop = manhole_stop};
static const knit_service_ops http_ops = {.start = http_start, .stop = http_stop};

static int add_service(knit_app *app, const char *name, const knit_service_ops *ops, void *arg)
{
    knit_service *s;
    int rc = knit_service_new(&s, name, ops, arg);
    if (rc < 0) return rc;
    rc = knit_service_add(knit_app_services(app), s);
    if (rc < 0) knit_service_free(s);
    return rc;
}

/* ---- knit_main hooks
 * ----------------------------------------------------------------------------- */

static int setup(knit_app *app, void *arg)
{
    wsgi_main *g = arg;
    knit_flags *fs = knit_app_flags(app);
    wsgi_server *w = &g->w;
    g->kapp = app;
    w->r = knit_app_reactor(app);
    w->flags = fs;
    w->mx = knit_app_metrics(app);
    w->debug = knit_flags_bool(fs, "debug");
    w->request_timeout = knit_flags_duration(fs, "request-timeout");
    snprintf(g->mount, sizeof g->mount, "%s", knit_flags_string(fs, "mount"));
    w->mount = g->mount;
    w->mount_len = strlen(g->mount);
    g->http_desc = knit_flags_string(fs, "http");
    g->manhole_desc = knit_flags_string(fs, "manhole");
    g->metrics_path = knit_flags_string(fs, "metrics");
    g->max_body = knit_flags_uint64(fs, "max-body");
    if (!knit_flags_string(fs, "app")[0]) {
        fprintf(stderr, "knit-wsgi: --app is required (module:callable or file.py)\n");
        g->bad_app = true;
        return KNIT_EINVAL;
    }

    knit_http_options *ho = &g->ho;
    knit_http_options_init(ho);
    ho->max_body = g->max_body;
    ho->max_body_memory = knit_flags_uint64(fs, "max-body-memory");
    ho->max_head = (size_t)knit_flags_uint64(fs, "max-head");
    ho->max_headers = (size_t)knit_flags_uint64(fs, "max-headers");
    ho->max_connections = (unsigned)knit_flags_uint64(fs, "max-connections");
    ho->max_pipeline = (unsigned)knit_flags_uint64(fs, "max-pipeline");
    ho->output_budget = (size_t)knit_flags_uint64(fs, "output-budget");
    ho->header_timeout = knit_flags_duration(fs, "header-timeout");
    ho->idle_timeout = knit_flags_duration(fs, "idle-timeout");
    ho->body_timeout = knit_flags_duration(fs, "body-timeout");
    ho->body_deadline = knit_flags_duration(fs, "body-deadline");
    ho->write_timeout = knit_flags_duration(fs, "write-timeout");
    knit_duration st = knit_flags_duration(fs, "shutdown-timeout");
    ho->drain_timeout = st - st / 4; /* the rest for the pool and Python */
    const char *log = knit_flags_string(fs, "access-log");
    g->access_fd = -1;
    if (strcmp(log, "-") == 0) {
        g->access_fd = 1;
    } else if (log[0]) {
        g->access_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (g->access_fd < 0) {
            int rc = -errno;
            knit_log_kv(KNIT_LOG_ERROR, "wsgi", "cannot open the access log", "path", log, "error",
                        knit_strerror(rc), NULL);
            return rc;
        }
    }
    if (g->access_fd >= 0) {
        ho->access_log = knit_flags_enum(fs, "access-log-format") == 1 ? KNIT_HTTP_LOG_JSON
                                                                       : KNIT_HTTP_LOG_COMBINED;
        ho->access_log_fd = g->access_fd;
    }

    w->app_errors = knit_counter_new(w->mx, "knit_wsgi_app_errors_total",
                                     "Exceptions the WSGI application raised.");
    w->bad_headers = knit_counter_new(w->mx, "knit_wsgi_bad_headers_total",
                                      "Invalid status lines or headers refused.");
    w->timeouts = knit_counter_new(w->mx, "knit_wsgi_request_timeouts_total",
                                   "Requests stopped by --request-timeout.");
    w->in_flight =
        knit_gauge_new(w->mx, "knit_wsgi_requests_in_app", "Requests inside the application now.");
    wsgi_global = w;

    int rc = python_init(g, fs);
    if (rc < 0) return rc;
    g->main_ts = PyEval_SaveThread(); /* from here on Python runs on workers */

    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "wsgi";
    po.min_threads = (unsigned)knit_flags_uint64(fs, "threads");
    po.max_threads = po.min_threads;
    po.max_queue = (size_t)knit_flags_uint64(fs, "queue");
    po.keep_idle = true; /* each worker keeps its Python thread state */
    rc = knit_pool_new(&w->pool, w->r, &po);
    if (rc < 0) return rc;
    ho->pool = w->pool;
    knit_metrics_add_pool(w->mx, w->pool);

    if (!is_off(g->manhole_desc) && (rc = add_service(app, "manhole", &manhole_ops, g)) < 0)
        return rc;
    return add_service(app, "http", &http_ops, g);
}

static void teardown(knit_app *app, void *arg)
{
    wsgi_main *g = arg;
    wsgi_server *w = &g->w;
    if (w->http) {
        knit_metrics_remove_http(w->mx, w->http);
        knit_http_server_free(w->http);
        w->http = NULL;
    }
    if (w->pool) {
        knit_metrics_remove_pool(w->mx, w->pool);
        knit_pool_free(w->pool);
        w->pool = NULL;
    }
    knit_manhole_free(g->mh);
    g->mh = NULL;
    if (g->py_up) {
        if (g->main_ts) PyEval_RestoreThread(g->main_ts);
        wsgi_watchdog_stop();
        Py_BEGIN_ALLOW_THREADS pymanhole_wait_threads(KNIT_SEC(2));
        Py_END_ALLOW_THREADS Py_CLEAR(w->app);
        if (Py_FinalizeEx() < 0) knit_log_kv(KNIT_LOG_WARN, "wsgi", "Python's exit failed", NULL);
        g->py_up = false;
    }
    if (g->access_fd > 2) close(g->access_fd);
    wsgi_global = NULL;
}

/* Under ASan (make test's integration-asan stage): CPython does not free
 * everything at Py_FinalizeEx (interned strings, static types, per-thread
 * states), nor do its _hashlib/_ssl extension modules free what they got
 * from OpenSSL (the stacks end in libcrypto: it has no frame pointers);
 * LeakSanitizer reads this (weak) hook from the executable. knit's own TLS
 * code is leak-checked by its unit tests, which do not carry this list. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libpython3.11\nleak:libcrypto.so\nleak:libssl.so\n";
}

int main(int argc, char **argv)
{
    static wsgi_main g;
    knit_main_options o;
    knit_main_options_init(&o);
    o.program = "knit-wsgi";
    o.version = WSGI_VERSION;
    o.summary = "Host a Python WSGI application (PEP 3333) on knit: IO on the reactor, each "
                "request on a worker thread, the GIL held only while Python runs. Every flag "
                "can also be set as KNIT_WSGI_<NAME> in the environment or in a --config file.";
    o.env_prefix = "KNIT_WSGI_";
    o.add_flags = add_flags;
    o.setup = setup;
    o.teardown = teardown;
    o.arg = &g;
    o.no_pool = true; /* the pool is ours, sized by --threads */
    int rc = knit_main(argc, argv, &o);
    return g.bad_app ? KNIT_EXIT_USAGE : rc;
}
