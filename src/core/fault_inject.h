/* fault_inject.h — allocation-failure injection for the fault build.
 *
 * Only the fault build uses this file (`meson setup build-fault -Dfault_inject=true`,
 * see scripts/faults and tests/fault/README.md). There every source of libknit (and the
 * notes service's sources in its unit tests) is compiled with
 * `-include core/fault_inject.h`, which redirects the allocators knit
 * calls (malloc, calloc, realloc, aligned_alloc, strdup, strndup, open_memstream) to
 * the wrappers below. Each wrapper knows its call site (file:line) and can be told to
 * return NULL (errno ENOMEM) there. Normal builds never see this header: zero cost.
 *
 * Control, in one process:
 *   KNIT_FI_FAIL=src/http/server.c:123[:K]   fail the K-th allocation (default the
 *                                           first) made at that site, once
 *   KNIT_FI_RECORD=path                     append, at exit, one line per site
 *                                           reached: "site<TAB>hits<TAB>function"
 *                                           in the order first reached
 *   KNIT_FI_BACKTRACE=1                     print a backtrace with each injected failure
 *   knit__fi_arm(n, this_thread)            (tests) fail the n-th allocation from now
 * Every injected failure prints "knit-fi: injected ... at SITE" on stderr, so a
 * runner can tell a run where the fault fired from one where it did not.
 *
 * Threads: the wrappers are safe from any thread (one mutex guards the site table).
 */
#ifndef KNIT_FAULT_INJECT_H
#define KNIT_FAULT_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *knit__fi_malloc(size_t n, const char *file, int line, const char *func);
void *knit__fi_calloc(size_t k, size_t n, const char *file, int line, const char *func);
void *knit__fi_realloc(void *p, size_t n, const char *file, int line, const char *func);
void *knit__fi_aligned_alloc(size_t a, size_t n, const char *file, int line, const char *func);
char *knit__fi_strdup(const char *s, const char *file, int line, const char *func);
char *knit__fi_strndup(const char *s, size_t n, const char *file, int line, const char *func);
FILE *knit__fi_open_memstream(char **buf, size_t *len, const char *file, int line,
                              const char *func);

/* Fail the NTH allocation (1-based) counted from now, once. THIS_THREAD: count only
 * allocations made by the calling thread (deterministic next to worker threads);
 * otherwise count every thread's. [any] */
void knit__fi_arm(long nth, bool this_thread);

/* Allocations at sites starting with one of the comma-separated PREFIXES (e.g.
 * "src/deferred/,src/stream/memory.c") are not counted by knit__fi_arm (the last
 * call wins; NULL: none). [any] */
void knit__fi_exempt(const char *prefixes);

/* While ON, knit__fi_arm counts nothing (test scaffolding allocating). [any] */
void knit__fi_hold(bool on);

/* Stop counting; true if the armed failure was injected since knit__fi_arm. [any] */
bool knit__fi_disarm(void);

/* The site ("src/x.c:123") of the last injected failure, or "" if none. [any] */
const char *knit__fi_last_site(void);

/* Allocations counted since the last knit__fi_arm (for test messages). [any] */
long knit__fi_counted(void);

#ifndef KNIT_FI_NO_REDIRECT
#undef malloc
#undef calloc
#undef realloc
#undef aligned_alloc
#undef strdup
#undef strndup
#undef open_memstream
#define malloc(n) knit__fi_malloc((n), __FILE__, __LINE__, __func__)
#define calloc(k, n) knit__fi_calloc((k), (n), __FILE__, __LINE__, __func__)
#define realloc(p, n) knit__fi_realloc((p), (n), __FILE__, __LINE__, __func__)
#define aligned_alloc(a, n) knit__fi_aligned_alloc((a), (n), __FILE__, __LINE__, __func__)
#define strdup(s) knit__fi_strdup((s), __FILE__, __LINE__, __func__)
#define strndup(s, n) knit__fi_strndup((s), (n), __FILE__, __LINE__, __func__)
#define open_memstream(b, l) knit__fi_open_memstream((b), (l), __FILE__, __LINE__, __func__)
#endif

#endif
