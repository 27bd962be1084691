/* The <think> splitter: a small state machine over bytes. DETECT holds leading whitespace and a
 * prefix of "<think>"; IN passes text to reasoning while holding a possible prefix of "</think>";
 * OUT passes everything to content. */
#include "server/reasoning.h"

#include <string.h>

static const char OPEN[] = "<think>", CLOSE[] = "</think>";

void kr_think_init(kr_think *t, bool enabled, bool inside) {
    memset(t, 0, sizeof *t);
    t->state = !enabled ? KR_THINK_OFF : inside ? KR_THINK_IN : KR_THINK_DETECT;
}

static void emit(kr_think_fn out, void *user, bool reasoning, const char *s, size_t n) {
    if (n)
        out(user, reasoning, s, n);
}

static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

void kr_think_push(kr_think *t, const char *s, size_t n, kr_think_fn out, void *user) {
    size_t i = 0;
    while (i < n) {
        if (t->state == KR_THINK_OFF || t->state == KR_THINK_OUT) {
            if (t->after_close) {
                while (i < n && (s[i] == '\n' || s[i] == '\r'))
                    i++;
                if (i == n)
                    return;
                t->after_close = false;
            }
            emit(out, user, false, s + i, n - i);
            return;
        }
        if (t->state == KR_THINK_DETECT) {
            /* hold: whitespace, then a growing prefix of <think> */
            char c = s[i++];
            size_t ws = 0;
            while (ws < t->nhold && is_space(t->hold[ws]))
                ws++;
            size_t tag = t->nhold - ws;
            if (tag == 0 && is_space(c) && t->nhold < sizeof t->hold - sizeof OPEN) {
                t->hold[t->nhold++] = c;
            } else if (tag < sizeof OPEN - 1 && c == OPEN[tag]) {
                t->hold[t->nhold++] = c;
                if (tag + 1 == sizeof OPEN - 1) {
                    t->state = KR_THINK_IN;
                    t->nhold = 0;
                }
            } else { /* not a tag: everything held is content */
                t->state = KR_THINK_OUT;
                emit(out, user, false, t->hold, t->nhold);
                t->nhold = 0;
                i--;
            }
            continue;
        }
        /* IN: text is reasoning until </think>; a partial tag waits in hold (start: unemitted text in s) */
        size_t start = i;
        while (i < n && t->state == KR_THINK_IN) {
            char c = s[i];
            if (c == CLOSE[t->nhold]) {
                if (t->nhold == 0)
                    emit(out, user, true, s + start, i - start);
                t->hold[t->nhold++] = c;
                start = ++i;
                if (t->nhold == sizeof CLOSE - 1) {
                    t->nhold = 0;
                    t->state = KR_THINK_OUT;
                    t->after_close = true;
                }
            } else if (t->nhold) { /* not the tag after all: the held bytes were reasoning; look at c again */
                emit(out, user, true, t->hold, t->nhold);
                t->nhold = 0;
                start = i;
            } else {
                i++;
            }
        }
        if (t->state == KR_THINK_IN)
            emit(out, user, true, s + start, i - start);
    }
}

void kr_think_flush(kr_think *t, kr_think_fn out, void *user) {
    if (t->nhold)
        emit(out, user, t->state == KR_THINK_IN, t->hold, t->nhold);
    t->nhold = 0;
}

bool kr_think_prompt_inside(const char *p) {
    size_t n = strlen(p);
    while (n && is_space(p[n - 1]))
        n--;
    return n >= sizeof OPEN - 1 && memcmp(p + n - (sizeof OPEN - 1), OPEN, sizeof OPEN - 1) == 0;
}
