/* Reusable scratch memory for a computation that runs again and again with similar sizes (one forward
 * step after another): numbered slots, each a buffer that only ever grows. After the first step of a
 * given size the same buffers come back, so a decode step allocates nothing. Not thread-safe: one
 * owner (e.g. a model's forward pass) at a time. */
#ifndef KR_BASE_SCRATCH_H
#define KR_BASE_SCRATCH_H

#include <stddef.h>

#define KR_SCRATCH_SLOTS 32

typedef struct {
    void *p[KR_SCRATCH_SLOTS];
    size_t cap[KR_SCRATCH_SLOTS];
} kr_scratch;

/* Slot `slot`'s buffer, at least n bytes, 64-byte aligned; its contents are undefined (a grown buffer
 * is not copied). NULL when out of memory. */
void *kr_scratch_get(kr_scratch *s, int slot, size_t n);
void kr_scratch_free(kr_scratch *s);

#endif
