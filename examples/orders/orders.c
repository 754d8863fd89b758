/* knit-orders — the first service of issue 12, the knit way: a JSON API over
 * SQLite with blocking routes on the worker pool, an inline health route,
 * metrics, an access log, a manhole and a drain on SIGTERM.
 * docs/getting-started.md walks through it and ends with the same service
 * on Twisted + Klein (56 lines of code to this file's 111).
 *
 *   knit-orders --http=tcp:8080 --db=orders.db --manhole=unix:orders.manhole:mode=600
 *   curl -XPOST localhost:8080/orders -d '{"item": "tea", "qty": 2}'
 *   curl localhost:8080/orders/1     -> {"id":1,"item":"tea","qty":2}
 */
#include <jansson.h>
#include <knit/error.h>
#include <knit/http.h>
#include <knit/log.h>
#include <knit/metrics.h>
#include <knit/service.h>
#include <sqlite3.h>
#include <stdlib.h>

static const knit_flag_def orders_flags[] = {
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, "tcp:8080:interface=127.0.0.1", "HTTP endpoint"),
    KNIT_FLAG_DEF("db", KNIT_FLAG_STRING, "orders.db", "SQLite database file"),
    KNIT_FLAG_DEF("manhole", KNIT_FLAG_STRING, "", "manhole endpoint (empty: none)"),
    KNIT_FLAG_DEF("access-log", KNIT_FLAG_BOOL, "true", "one line per request on stdout"),
};

typedef struct orders {
    sqlite3 *db; /* serialized mode: one connection shared by the workers */
    knit_counter *created;
} orders;

/* [worker] Run SQL with one text and one integer parameter (the text may be
 * NULL): the first row as JSON {"id", "item", "qty"}, or NULL. */
static json_t *row(orders *o, const char *sql, const char *text, json_int_t n)
{
    sqlite3_stmt *st;
    json_t *r = NULL;
    if (sqlite3_prepare_v2(o->db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    if (text) sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, text ? 2 : 1, n);
    if (sqlite3_step(st) == SQLITE_ROW)
        r = json_pack("{s:I, s:s, s:I}", "id", (json_int_t)sqlite3_column_int64(st, 0), "item",
                      (const char *)sqlite3_column_text(st, 1), "qty",
                      (json_int_t)sqlite3_column_int64(st, 2));
    sqlite3_finalize(st);
    return r;
}

/* POST /orders {"item": "tea", "qty": 2} -> 201 {"id": 1, "item": "tea",
 * "qty": 2}. [worker]: SQLite blocks. */
static int create(knit_http_request *req, void *arg, json_t **out)
{
    orders *o = arg;
    json_t *body = knit_http_body_json(req);
    const char *item;
    json_int_t qty;
    int rc;
    if (!body) return 0; /* answered 400 */
    if (json_unpack(body, "{s:s, s:I !}", "item", &item, "qty", &qty) != 0 || qty < 1)
        rc = knit_http_respond_error(req, 400, "want {\"item\": text, \"qty\": n > 0}");
    else if ((*out = row(o, "INSERT INTO orders(item, qty) VALUES (?, ?) RETURNING *", item, qty)))
        knit_counter_inc(o->created), rc = 201;
    else
        rc = knit_http_respond_error(req, 500, "database: %s", sqlite3_errmsg(o->db));
    json_decref(body);
    return rc;
}

/* GET /orders/{id} -> 200 {"id", "item", "qty"} or 404. [worker] */
static int get(knit_http_request *req, void *arg, json_t **out)
{
    const char *id = knit_http_param(req, "id");
    if (!(*out = row(arg, "SELECT * FROM orders WHERE id = ?", NULL, atoll(id))))
        return knit_http_respond_error(req, 404, "no order %s", id);
    return 200;
}

/* GET /health -> {"ok": true}, on the reactor: never queued behind orders. */
static int health(knit_http_request *req, void *arg, json_t **out)
{
    *out = json_pack("{s:b}", "ok", 1);
    return 200;
}

static const knit_http_route_def routes[] = {
    {"GET", "/health", KNIT_HTTP_INLINE, .json = health},
    {"POST", "/orders", KNIT_HTTP_POOL, .json = create},
    {"GET", "/orders/{id}", KNIT_HTTP_POOL, .json = get},
};

static int setup(knit_app *app, void *arg)
{
    orders *o = arg;
    knit_flags *fs = knit_app_flags(app);
    int rc = KNIT_EIO;
    if (sqlite3_open_v2(knit_flags_string(fs, "db"), &o->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK ||
        sqlite3_exec(o->db,
                     "CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, "
                     "item TEXT NOT NULL, qty INTEGER NOT NULL)",
                     NULL, NULL, NULL)) {
        KNIT_ERROR("orders", "--db=%s: %s", knit_flags_string(fs, "db"), sqlite3_errmsg(o->db));
        return rc;
    }
    o->created = knit_counter_new(knit_app_metrics(app), "orders_created_total", "Orders taken.");
    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.access_log = knit_flags_bool(fs, "access-log") ? KNIT_HTTP_LOG_COMBINED : KNIT_HTTP_LOG_NONE;
    knit_http_server *srv;
    if ((rc = knit_app_http(app, "http", knit_flags_string(fs, "http"), &ho, &srv)) < 0 ||
        (rc = knit_http_routes(srv, routes, 3, o)) < 0 ||
        (rc = knit_metrics_route(srv, NULL, knit_app_metrics(app))) < 0)
        return rc;
    return knit_app_manhole(app, knit_flags_string(fs, "manhole"), NULL);
}

static void teardown(knit_app *app, void *arg)
{
    sqlite3_close(((orders *)arg)->db); /* after the drain: no handler runs now */
}

int main(int argc, char **argv)
{
    static orders o;
    knit_main_options mo;
    knit_main_options_init(&mo);
    mo.program = "knit-orders";
    mo.version = "0.1.0";
    mo.summary = "Orders: a JSON API over SQLite.";
    mo.env_prefix = "ORDERS_";
    mo.flags = orders_flags;
    mo.nflags = 4;
    mo.setup = setup;
    mo.teardown = teardown;
    mo.arg = &o;
    return knit_main(argc, argv, &mo);
}
