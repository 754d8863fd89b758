/* buf.c — growable byte buffers (knit/buf.h).
 *
 * Owns: nothing global except the shared empty region, which is never
 * written (every write path reserves first, and reserve never returns the
 * empty region with space in it because its capacity is 0).
 * Invariant: _rd <= _wr <= _cap; _cap == 0 iff _base == knit__buf_empty.
 * Borrowed memory (flag BORROWED) is never passed to free/realloc.
 */
#include "knit/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"

enum { BORROWED = 1u };

uint8_t knit__buf_empty[16];

void knit_buf_init(knit_buf *b)
{
    b->_base = knit__buf_empty;
    b->_cap = 0;
    b->_rd = b->_wr = 0;
    b->_flags = 0;
    b->_pad = 0;
}

void knit_buf_init_borrowed(knit_buf *b, void *mem, size_t cap)
{
    if (!mem || cap == 0) {
        knit_buf_init(b);
        return;
    }
    if (cap > KNIT_BUF_MAX) cap = KNIT_BUF_MAX;
    b->_base = mem;
    b->_cap = cap;
    b->_rd = b->_wr = 0;
    b->_flags = BORROWED;
    b->_pad = 0;
}

void knit_buf_release(knit_buf *b)
{
    if (b->_cap && !(b->_flags & BORROWED)) free(b->_base);
    knit_buf_init(b);
}

size_t knit_buf_allocated(const knit_buf *b)
{
    return (b->_flags & BORROWED) ? 0 : b->_cap;
}

void knit_buf_consume(knit_buf *b, size_t n)
{
    size_t len = knit_buf_len(b);
    if (n >= len) {
        b->_rd = b->_wr = 0;
        return;
    }
    b->_rd += (uint32_t)n;
}

int knit_buf_iov(const knit_buf *b, struct iovec *iov)
{
    if (knit_buf_empty(b)) return 0;
    iov->iov_base = knit_buf_data(b);
    iov->iov_len = knit_buf_len(b);
    return 1;
}

long knit_buf_find(const knit_buf *b, size_t from, int c)
{
    size_t len = knit_buf_len(b);
    if (from >= len) return -1;
    const uint8_t *p = memchr(knit_buf_data(b) + from, c, len - from);
    return p ? (long)(p - knit_buf_data(b)) : -1;
}

/* Round up to a power of two, at least KNIT_BUF_MIN_ALLOC. */
static size_t grow_size(size_t need)
{
    size_t n = KNIT_BUF_MIN_ALLOC;
    while (n < need)
        n <<= 1;
    return n;
}

uint8_t *knit_buf_reserve(knit_buf *b, size_t n, int *err)
{
    size_t len = knit_buf_len(b);
    if (n > KNIT_BUF_MAX || len + n > KNIT_BUF_MAX) {
        if (err) *err = KNIT_ELIMIT;
        return NULL;
    }
    if (b->_cap - b->_wr >= n && n > 0) return b->_base + b->_wr;
    if (n == 0 && b->_cap > b->_wr) return b->_base + b->_wr;
    /* Enough room if we slide the readable bytes to the front? Only do it
     * when that frees at least half the buffer, so a stream of small
     * appends does not memmove on every call. */
    if (b->_cap >= len + n && n > 0 && b->_rd >= b->_cap / 2) {
        memmove(b->_base, b->_base + b->_rd, len);
        b->_rd = 0;
        b->_wr = (uint32_t)len;
        return b->_base + b->_wr;
    }
    size_t want = grow_size(len + (n ? n : 1));
    if (want > KNIT_BUF_MAX) want = KNIT_BUF_MAX;
    uint8_t *p;
    if (b->_cap && !(b->_flags & BORROWED) && b->_rd == 0) {
        p = realloc(b->_base, want);
        if (!p) goto nomem;
    } else {
        p = malloc(want);
        if (!p) goto nomem;
        if (len) memcpy(p, b->_base + b->_rd, len);
        if (b->_cap && !(b->_flags & BORROWED)) free(b->_base);
    }
    b->_base = p;
    b->_cap = want;
    b->_rd = 0;
    b->_wr = (uint32_t)len;
    b->_flags &= ~(uint32_t)BORROWED;
    return b->_base + b->_wr;
nomem:
    if (err) *err = KNIT_ENOMEM;
    return NULL;
}

void knit_buf_commit(knit_buf *b, size_t n)
{
    if (n > b->_cap - b->_wr) n = b->_cap - b->_wr; /* never run past the end */
    b->_wr += (uint32_t)n;
}

int knit_buf_append(knit_buf *b, const void *data, size_t n)
{
    if (n == 0) return 0;
    int err = 0;
    uint8_t *p = knit_buf_reserve(b, n, &err);
    if (!p) return err;
    memcpy(p, data, n);
    b->_wr += (uint32_t)n;
    return 0;
}

int knit_buf_append_str(knit_buf *b, const char *s)
{
    return knit_buf_append(b, s, strlen(s));
}

int knit_buf_appendv(knit_buf *b, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > KNIT_BUF_MAX - total) return KNIT_ELIMIT;
        total += iov[i].iov_len;
    }
    if (total == 0) return 0;
    int err = 0;
    uint8_t *p = knit_buf_reserve(b, total, &err);
    if (!p) return err;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len) memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    b->_wr += (uint32_t)total;
    return 0;
}

int knit_buf_vprintf(knit_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0) return KNIT_EINVAL;
    if ((size_t)n < sizeof small) return knit_buf_append(b, small, (size_t)n);
    int err = 0;
    uint8_t *p = knit_buf_reserve(b, (size_t)n + 1, &err);
    if (!p) return err;
    vsnprintf((char *)p, (size_t)n + 1, fmt, ap);
    b->_wr += (uint32_t)n;
    return 0;
}

int knit_buf_printf(knit_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = knit_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int knit_buf_move(knit_buf *dst, knit_buf *src)
{
    if (src == dst) return 0;
    if (knit_buf_empty(src)) {
        knit_buf_release(src);
        return 0;
    }
    if (knit_buf_empty(dst) && src->_cap && !(src->_flags & BORROWED)) {
        knit_buf_release(dst);
        *dst = *src;
        knit_buf_init(src);
        return 0;
    }
    int rc = knit_buf_append(dst, knit_buf_data(src), knit_buf_len(src));
    if (rc == 0) knit_buf_release(src);
    return rc;
}

int knit_buf_shrink(knit_buf *b)
{
    if (b->_flags & BORROWED) return 0;
    size_t len = knit_buf_len(b);
    if (len == 0) {
        knit_buf_release(b);
        return 0;
    }
    size_t want = grow_size(len);
    if (want >= b->_cap) return 0;
    uint8_t *p = malloc(want);
    if (!p) return KNIT_ENOMEM;
    memcpy(p, knit_buf_data(b), len);
    free(b->_base);
    b->_base = p;
    b->_cap = want;
    b->_rd = 0;
    b->_wr = (uint32_t)len;
    return 0;
}
