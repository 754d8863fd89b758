/* http/access_log.c — access-log lines, combined (Apache/nginx) or JSON,
 * written with one write(2) each to options.access_log_fd.
 *
 * Threads: the reactor (a request is logged when it ends there).
 */
#include "knit/http.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http/server_int.h"

/* Escape for the access log: quotes, backslashes and controls as \xHH. */
static size_t log_escape(char *dst, size_t cap, const char *s, bool json)
{
    size_t o = 0;
    if (!s) s = "-";
    for (; *s && o + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\' || (json && ch >= 0x80)) {
            o += (size_t)snprintf(dst + o, cap - o, json ? "\\u%04x" : "\\x%02x", ch);
        } else {
            dst[o++] = (char)ch;
        }
    }
    dst[o] = 0;
    return o;
}

/* One access-log line. REMOTE "addr:port"; REQLINE false: the request line
 * could not be parsed (logged as "-"). [reactor] */
void knit__http_access_log_line(knit_http_server *s, const char *remote, int64_t wall,
                                const char *method, const char *target_raw, int minor, int status,
                                uint64_t bytes, const char *referer_raw, const char *ua_raw,
                                knit_duration took)
{
    char host[64], target[1024], ref[512], ua[512], line[2400];
    snprintf(host, sizeof host, "%s", remote);
    char *colon = strrchr(host, ':');
    if (colon && host[0] != 'u') *colon = 0; /* drop the port */
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        char *br = strchr(host, ']');
        if (br) *br = 0;
    }
    bool json = s->o.access_log == KNIT_HTTP_LOG_JSON;
    log_escape(target, sizeof target, target_raw, json);
    log_escape(ref, sizeof ref, referer_raw, json);
    log_escape(ua, sizeof ua, ua_raw, json);
    time_t t = (time_t)(wall / 1000000000LL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char ts[40], version[16];
    if (method)
        snprintf(version, sizeof version, "HTTP/1.%d", minor);
    else
        snprintf(version, sizeof version, "-");
    int n;
    if (json) {
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"remote\":\"%s\",\"method\":\"%s\",\"target\":\"%s\","
                     "\"version\":\"%s\",\"status\":%d,\"bytes\":%" PRIu64
                     ",\"referer\":\"%s\",\"user_agent\":\"%s\",\"duration\":%.6f}\n",
                     ts, host, method ? method : "-", method ? target : "-", version, status, bytes,
                     ref, ua, KNIT_TO_SEC(took));
    } else {
        char reqline[1100];
        if (method)
            snprintf(reqline, sizeof reqline, "%s %s %s", method, target, version);
        else
            snprintf(reqline, sizeof reqline, "-");
        strftime(ts, sizeof ts, "%d/%b/%Y:%H:%M:%S +0000", &tm);
        n = snprintf(line, sizeof line, "%s - - [%s] \"%s\" %d %" PRIu64 " \"%s\" \"%s\" %.6f\n",
                     host, ts, reqline, status, bytes, ref, ua, KNIT_TO_SEC(took));
    }
    if (n > 0) {
        size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        ssize_t w = write(s->o.access_log_fd, line, len);
        (void)w;
    }
}

void knit__http_access_log(knit_http_request *req, knit_duration took)
{
    knit_http_server *s = req->srv;
    if (s->o.access_log == KNIT_HTTP_LOG_NONE) return;
    knit__http_access_log_line(s, knit_http_remote_addr(req), req->wall0, req->method, req->target,
                               req->h.minor_version, req->status, req->body_sent,
                               knit_http_header(req, "referer"),
                               knit_http_header(req, "user-agent"), took);
}
