/* Stop-string matcher: a pending buffer of text not yet shown; after each push, the earliest complete
 * stop string ends generation, otherwise everything but the longest tail that is a prefix of a stop
 * string is released. */
#define _GNU_SOURCE /* memmem */
#include "engine/stop.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

struct kr_stop {
    char **stops;
    size_t n;
    char *pending; /* [0, held) not yet shown; the released part is moved out before the next push */
    size_t held, cap;
    size_t released; /* bytes at the front of pending handed out by the previous call */
};

kr_status kr_stop_create(const char *const *stops, size_t n, kr_stop **out) {
    kr_stop *s = calloc(1, sizeof *s);
    if (!s || !(s->stops = calloc(n + 1, sizeof *s->stops)))
        goto oom;
    for (size_t i = 0; i < n; i++)
        if (stops[i] && stops[i][0] && !(s->stops[s->n++] = strdup(stops[i])))
            goto oom;
    *out = s;
    return KR_OK;
oom:
    kr_stop_free(s);
    return kr_fail(KR_ERR_NOMEM, "out of memory");
}

void kr_stop_free(kr_stop *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->stops[i]);
    free(s->stops);
    free(s->pending);
    free(s);
}

/* length of the longest suffix of buf[0, len) that is a proper prefix of some stop string */
static size_t partial_tail(const kr_stop *s, const char *buf, size_t len) {
    size_t best = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t sl = strlen(s->stops[i]);
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > best; k--)
            if (memcmp(buf + len - k, s->stops[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

bool kr_stop_push(kr_stop *s, const char *text, size_t len, const char **emit, size_t *emit_len) {
    /* drop what the previous call released */
    if (s->released)
        memmove(s->pending, s->pending + s->released, s->held - s->released);
    s->held -= s->released;
    s->released = 0;
    if (!kr_grow(&s->pending, &s->cap, s->held + len + 1, 64)) { /* cannot hold back: show everything */
        *emit = text;
        *emit_len = len;
        return false;
    }
    memcpy(s->pending + s->held, text, len);
    s->held += len;

    size_t first = s->held;
    for (size_t i = 0; i < s->n; i++) {
        char *hit = memmem(s->pending, s->held, s->stops[i], strlen(s->stops[i]));
        if (hit && (size_t)(hit - s->pending) < first)
            first = (size_t)(hit - s->pending);
    }
    *emit = s->pending;
    if (first < s->held) {
        *emit_len = s->released = first;
        s->held = first;
        return true;
    }
    *emit_len = s->released = s->held - partial_tail(s, s->pending, s->held);
    return false;
}

void kr_stop_flush(kr_stop *s, const char **emit, size_t *emit_len) {
    *emit = s->pending ? s->pending + s->released : "";
    *emit_len = s->held - s->released;
    s->held = s->released = 0;
}
