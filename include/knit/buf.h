/* knit/buf.h — growable byte buffers with read and write cursors.
 *
 * A knit_buf is one contiguous region [base, base+cap) with two cursors:
 *
 *       base          rd               wr              cap
 *        |  consumed  |  readable data  |  free space   |
 *
 * Writers reserve free space, fill it and commit; readers look at
 * [rd, wr), use what they can and consume it. When the last readable byte is
 * consumed the cursors go back to 0 so the space is reused without moving
 * data; knit_buf_consume_all() / knit_buf_release() also give the memory back.
 *
 * Idle costs nothing: an initialised buffer with nothing in it points at one
 * shared, read-only, zero-length region (KNIT_BUF_INIT, knit_buf_init) and
 * owns no heap memory. Connections keep their input and output buffers in
 * that state while idle and allocate only when bytes arrive (STYLE item 6).
 * sizeof(knit_buf) is 32 bytes on 64-bit targets.
 *
 * A buffer may also *borrow* caller memory (knit_buf_init_borrowed): a
 * reactor reads into a per-thread scratch area wrapped this way and hands it
 * to a protocol; a borrowed buffer never frees or reallocs that memory — if
 * it must grow it moves its bytes to a fresh heap allocation.
 *
 * Limits: a buffer never grows past KNIT_BUF_MAX; growing beyond it fails
 * with KNIT_ELIMIT (callers bound their own buffers far lower).
 *
 * Ownership: the struct is the caller's (embed it, put it on the stack);
 * heap memory behind it belongs to the buffer until knit_buf_release(). A
 * pointer from knit_buf_data()/knit_buf_reserve() stays valid until the next
 * call that may grow or release the buffer (reserve, append*, printf,
 * release, consume_all) — consume() never moves bytes.
 *
 * Threads: a buffer is a plain value with no locking: one thread at a time.
 * The shared empty region is read-only, so empty buffers on many threads
 * are fine. Every function is [any].
 */
#ifndef KNIT_BUF_H
#define KNIT_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults ------------------------------------------------------------ */
#define KNIT_BUF_MIN_ALLOC 1024u            /* smallest heap allocation */
#define KNIT_BUF_MAX ((size_t)1 << 30)      /* hard ceiling: 1 GiB */

typedef struct knit_buf {
    uint8_t *_base; /* heap, borrowed memory, or the shared empty region */
    size_t _cap;    /* bytes at _base; 0 for the shared empty region */
    uint32_t _rd;   /* read cursor: first unconsumed byte */
    uint32_t _wr;   /* write cursor: one past the last written byte */
    uint32_t _flags;
    uint32_t _pad;
} knit_buf;

/* The shared empty region (read-only, zero bytes usable). Internal. */
extern uint8_t knit__buf_empty[16];

/* Static initialiser: an empty buffer owning nothing. */
#define KNIT_BUF_INIT {knit__buf_empty, 0, 0, 0, 0, 0}

/* Make B empty, owning nothing. Does not free what B held before: use
 * knit_buf_release for that. */
void knit_buf_init(knit_buf *b);

/* Wrap caller memory MEM[0..CAP) as an empty buffer. The memory is never
 * freed or resized by knit; growing past CAP moves to the heap. */
void knit_buf_init_borrowed(knit_buf *b, void *mem, size_t cap);

/* Free any heap memory and make B empty again (owning nothing). */
void knit_buf_release(knit_buf *b);

/* ---- reading ------------------------------------------------------------- */

/* Readable bytes. */
static inline size_t knit_buf_len(const knit_buf *b) { return (size_t)(b->_wr - b->_rd); }
static inline bool knit_buf_empty(const knit_buf *b) { return b->_wr == b->_rd; }
/* First readable byte (valid for knit_buf_len() bytes). */
static inline uint8_t *knit_buf_data(const knit_buf *b) { return b->_base + b->_rd; }
/* Bytes of heap memory owned (0 when idle or borrowed). */
size_t knit_buf_allocated(const knit_buf *b);
/* True if B owns no heap memory and borrows none (the idle state). */
static inline bool knit_buf_is_idle(const knit_buf *b) { return b->_cap == 0; }

/* Drop N readable bytes from the front (N is clamped to knit_buf_len). When
 * nothing is left the cursors go back to the start; memory is kept. */
void knit_buf_consume(knit_buf *b, size_t n);

/* Drop everything and release the memory: the idle state. */
static inline void knit_buf_consume_all(knit_buf *b) { knit_buf_release(b); }

/* Point IOV at the readable bytes. Returns the number of iovecs filled: 0
 * when empty, else 1 (a knit_buf is contiguous; the count lets callers
 * gather several buffers into one writev). */
int knit_buf_iov(const knit_buf *b, struct iovec *iov);

/* Find byte C among the readable bytes starting at offset FROM; returns its
 * offset from the first readable byte, or -1. */
long knit_buf_find(const knit_buf *b, size_t from, int c);

/* ---- writing ------------------------------------------------------------- */

/* Make room for at least N more bytes after the write cursor and return a
 * pointer to the free space (knit_buf_avail() bytes long), or NULL with
 * *err set (KNIT_ENOMEM or KNIT_ELIMIT; ERR may be NULL). Compacts
 * (moves readable bytes to the front) before growing. */
uint8_t *knit_buf_reserve(knit_buf *b, size_t n, int *err);

/* Free space after the write cursor. */
static inline size_t knit_buf_avail(const knit_buf *b) { return b->_cap - b->_wr; }

/* Mark N bytes of reserved space as written (N <= knit_buf_avail). */
void knit_buf_commit(knit_buf *b, size_t n);

/* Copy N bytes in. 0, KNIT_ENOMEM or KNIT_ELIMIT (B unchanged on failure). */
int knit_buf_append(knit_buf *b, const void *data, size_t n);
int knit_buf_append_str(knit_buf *b, const char *s);
int knit_buf_appendv(knit_buf *b, const struct iovec *iov, int iovcnt);
/* printf-style append. */
int knit_buf_printf(knit_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int knit_buf_vprintf(knit_buf *b, const char *fmt, va_list ap);

/* Move everything readable from SRC to the end of DST and leave SRC idle.
 * When DST is empty and SRC owns heap memory this is a pointer swap, no
 * copy. 0 or a negative code (both unchanged on failure). */
int knit_buf_move(knit_buf *dst, knit_buf *src);

/* Shrink the allocation to fit the readable bytes (or release it when
 * empty). For buffers that grew large once and then stay mostly idle. */
int knit_buf_shrink(knit_buf *b);

#ifdef __cplusplus
}
#endif
#endif
