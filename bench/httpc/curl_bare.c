/* curl_bare — the floor for bench/httpc: N GETs of URL through libcurl's
 * multi interface with C easy handles reused over and over (each keeps its
 * keep-alive connection), driven by curl_multi_poll, bodies discarded. No
 * reactor, no Deferreds, no metrics: what knit's httpc adds is measured
 * against this.
 *
 *   curl_bare URL N C   ->   requests=N ok=N errors=N rps=R
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: curl_bare URL N C\n");
        return 2;
    }
    const char *url = argv[1];
    long n = atol(argv[2]), c = atol(argv[3]);
    if (n <= 0 || c <= 0) return 2;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, c);
    CURL **h = calloc((size_t)c, sizeof *h);
    long started = 0, done = 0, ok = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < c && started < n; i++, started++) {
        h[i] = curl_easy_init();
        curl_easy_setopt(h[i], CURLOPT_URL, url);
        curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(m, h[i]);
    }
    while (done < n) {
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *e = msg->easy_handle;
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            if (msg->data.result == CURLE_OK && code < 400) ok++;
            done++;
            curl_multi_remove_handle(m, e);
            if (started < n) {
                started++;
                curl_multi_add_handle(m, e);
            }
        }
        if (done < n) curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("requests=%ld ok=%ld errors=%ld rps=%.0f\n", n, ok, n - ok, (double)n / secs);
    for (long i = 0; i < c; i++)
        if (h[i]) {
            curl_multi_remove_handle(m, h[i]);
            curl_easy_cleanup(h[i]);
        }
    free(h);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    return ok == n ? 0 : 1;
}
