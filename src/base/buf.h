/* Growable byte buffers: one growth rule (doubling, overflow-checked) for every text the runtime
 * accumulates (responses, streamed events, stop-string hold-back, tokenizer output). */
#ifndef KR_BASE_BUF_H
#define KR_BASE_BUF_H

#include <stdbool.h>
#include <stddef.h>

/* Makes *p (of *cap bytes) hold at least need bytes, doubling from at least `first`; false when out of
 * memory (or need is absurd), leaving *p and *cap as they were. */
bool kr_grow(char **p, size_t *cap, size_t need, size_t first);

/* Bytes with a NUL kept after them (p is NULL until something is added). On out of memory oom is set
 * and everything added later is dropped, so a caller checks once at the end. */
typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} kr_buf;

void kr_buf_add(kr_buf *b, const void *s, size_t n);
void kr_buf_free(kr_buf *b);

#endif
