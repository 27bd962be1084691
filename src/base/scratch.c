/* Growable scratch slots (scratch.h). */
#include "base/scratch.h"

#include <stdlib.h>

void *kr_scratch_get(kr_scratch *s, int slot, size_t n) {
    if (slot < 0 || slot >= KR_SCRATCH_SLOTS)
        return NULL;
    if (n > s->cap[slot] || !s->p[slot]) {
        /* half again as much as asked: positions grow by one per decode step */
        size_t cap = n + n / 2 + 64;
        cap = (cap + 63) / 64 * 64;
        void *p = aligned_alloc(64, cap);
        if (!p)
            return NULL;
        free(s->p[slot]);
        s->p[slot] = p;
        s->cap[slot] = cap;
    }
    return s->p[slot];
}

void kr_scratch_free(kr_scratch *s) {
    for (int i = 0; i < KR_SCRATCH_SLOTS; i++) {
        free(s->p[i]);
        s->p[i] = NULL;
        s->cap[i] = 0;
    }
}
