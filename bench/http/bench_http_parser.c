/* Parse-speed micro benchmark for the HTTP/1.1 request parser.
 *
 *   bench_http_parser [N [SAMPLE]]   parse each sample (or only SAMPLE) N times
 *                                    (default 1,000,000)
 *
 * Prints ns per request for each sample. For a machine-independent number run
 * it under callgrind and divide instructions by the number of parses:
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
 *       build-bench/bench/http/bench_http_parser 100000
 * (the `run` script does this and prints instructions per request).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/parser.h"

static const char *samples[][2] = {
    {"wrk", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"},
    {"curl", "GET /notes/42?x=1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\n"
             "Accept: */*\r\n\r\n"},
    {"browser",
     "GET /static/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\n"
     "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/119.0.0.0 Safari/537.36\r\n"
     "Accept: "
     "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
     "Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
     "Cookie: session=0123456789abcdef0123456789abcdef; theme=dark; lang=en\r\n"
     "Referer: https://www.example.com/index.html\r\n\r\n"},
};

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    knit__http_field fields[64];
    for (size_t s = 0; s < sizeof samples / sizeof samples[0]; s++) {
        if (argc > 2 && strcmp(argv[2], samples[s][0]) != 0) continue;
        const char *buf = samples[s][1];
        size_t len = strlen(buf);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        long ok = 0;
        for (long i = 0; i < n; i++) {
            knit__http_request req = {.fields = fields, .fields_cap = 64};
            __asm__ volatile("" : : "r"(buf) : "memory");
            if (knit__http_parse_request(buf, len, 0, &req, NULL) == (ssize_t)len) ok++;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns =
            ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n;
        printf("%-8s %4zu bytes  %7.1f ns/request  (%ld ok)\n", samples[s][0], len, ns, ok);
        if (ok != n) return 1;
    }
    return 0;
}
