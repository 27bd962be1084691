/* Growable byte buffers (buf.h). */
#include "base/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool kr_grow(char **p, size_t *cap, size_t need, size_t first) {
    if (need <= *cap)
        return true;
    if (need > SIZE_MAX / 2)
        return false;
    size_t c = *cap > first ? *cap : first;
    while (c < need)
        c *= 2;
    char *q = realloc(*p, c);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

void kr_buf_add(kr_buf *b, const void *s, size_t n) {
    if (b->oom)
        return;
    if (n > SIZE_MAX / 4 || !kr_grow(&b->p, &b->cap, b->n + n + 1, 64)) {
        b->oom = true;
        return;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void kr_buf_free(kr_buf *b) {
    free(b->p);
    *b = (kr_buf){0};
}
