/* --expert-mode parsing and the mode choice by sizes (expert_mode.h). */
#include "backend/cuda/expert_mode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB 1073741824.0

kr_status kr_expert_mode_parse(const char *s, kr_expert_mode *out) {
    memset(out, 0, sizeof *out);
    if (!s || !*s)
        return kr_fail(KR_ERR_ARG, "--expert-mode: empty value (auto, persistent, grouped:N or chunked)");
    if (!strcmp(s, "auto"))
        return KR_OK;
    if (!strcmp(s, "persistent")) {
        out->kind = KR_EXPERTS_PERSISTENT;
        return KR_OK;
    }
    if (!strcmp(s, "chunked")) {
        out->kind = KR_EXPERTS_CHUNKED;
        out->group = 1;
        return KR_OK;
    }
    if (!strncmp(s, "grouped", 7)) {
        if (s[7] != ':' || !s[8])
            return kr_fail(KR_ERR_ARG, "--expert-mode %s: grouped needs a layer count, as in grouped:4", s);
        char *end;
        errno = 0;
        long n = strtol(s + 8, &end, 10);
        if (*end || errno || s[8] == '-' || s[8] == '+' || s[8] == ' ')
            return kr_fail(KR_ERR_ARG, "--expert-mode %s: '%s' is not a layer count (a positive integer)", s, s + 8);
        if (n < 1 || n > 1000000)
            return kr_fail(KR_ERR_ARG, "--expert-mode %s: the layer count must be at least 1", s);
        out->kind = n == 1 ? KR_EXPERTS_CHUNKED : KR_EXPERTS_GROUPED;
        out->group = (int)n;
        return KR_OK;
    }
    return kr_fail(KR_ERR_ARG, "--expert-mode %s: unknown mode (auto, persistent, grouped:N or chunked)", s);
}

void kr_expert_mode_str(const kr_expert_mode *m, char *buf, size_t n) {
    switch (m->kind) {
    case KR_EXPERTS_PERSISTENT: snprintf(buf, n, "persistent"); break;
    case KR_EXPERTS_GROUPED: snprintf(buf, n, "grouped:%d", m->group); break;
    case KR_EXPERTS_CHUNKED: snprintf(buf, n, "chunked"); break;
    default: snprintf(buf, n, "auto"); break;
    }
}

int64_t kr_expert_mode_bytes(const kr_expert_mode *m, int n_layers, int64_t layer_bytes) {
    if (m->kind == KR_EXPERTS_PERSISTENT)
        return (int64_t)n_layers * layer_bytes;
    if (m->kind == KR_EXPERTS_GROUPED || m->kind == KR_EXPERTS_CHUNKED)
        return 2 * (int64_t)(m->group > 0 ? m->group : 1) * layer_bytes;
    return 0;
}

static void say(char *why, size_t n, const char *fmt, const char *a, double x, double y) {
    if (why)
        snprintf(why, n, fmt, a, x, y);
}

kr_status kr_expert_mode_choose(const kr_expert_mode *req, int n_layers, int64_t layer_bytes, int64_t avail,
                                kr_expert_mode *out, char *why, size_t why_n) {
    if (n_layers <= 0 || layer_bytes <= 0)
        return kr_fail(KR_ERR_ARG, "expert mode: %d MoE layers of %lld bytes", n_layers, (long long)layer_bytes);
    if (avail < 0)
        avail = 0;
    kr_expert_mode m = *req;
    char name[32];
    int64_t all = (int64_t)n_layers * layer_bytes;
    if (m.kind == KR_EXPERTS_AUTO) {
        if (avail >= all) {
            *out = (kr_expert_mode){KR_EXPERTS_PERSISTENT, n_layers};
            say(why, why_n, "auto: %s (all experts %.2f GiB fit in %.2f GiB)", "persistent", all / GIB, avail / GIB);
            return KR_OK;
        }
        int64_t nmax = avail / (2 * layer_bytes);
        if (nmax < 1)
            return kr_fail(KR_ERR_ARG, "expert mode auto: not even chunked fits: two layers' experts need %.2f GiB,"
                           " %.2f GiB of VRAM are left for experts (give more --vram)", 2 * layer_bytes / GIB, avail / GIB);
        m = nmax == 1 ? (kr_expert_mode){KR_EXPERTS_CHUNKED, 1} : (kr_expert_mode){KR_EXPERTS_GROUPED, (int)nmax};
        kr_expert_mode_str(&m, name, sizeof name);
        say(why, why_n, "auto: %s (all experts %.2f GiB do not fit in %.2f GiB; two slots of this size do)", name,
            all / GIB, avail / GIB);
        *out = m;
        return KR_OK;
    }
    if (m.kind == KR_EXPERTS_PERSISTENT)
        m.group = n_layers;
    if ((m.kind == KR_EXPERTS_GROUPED || m.kind == KR_EXPERTS_CHUNKED) && 2 * (int64_t)m.group >= n_layers) {
        kr_expert_mode_str(&m, name, sizeof name);
        m = (kr_expert_mode){KR_EXPERTS_PERSISTENT, n_layers};
        say(why, why_n, "%s covers all layers with its two slots: run as persistent (%.2f GiB of %.2f GiB)", name,
            all / GIB, avail / GIB);
    } else {
        kr_expert_mode_str(&m, name, sizeof name);
        say(why, why_n, "%s (%.2f GiB of %.2f GiB)", name, kr_expert_mode_bytes(&m, n_layers, layer_bytes) / GIB,
            avail / GIB);
    }
    int64_t need = kr_expert_mode_bytes(&m, n_layers, layer_bytes);
    if (need > avail) {
        kr_expert_mode_str(&m, name, sizeof name);
        return kr_fail(KR_ERR_ARG, "--expert-mode %s needs %.2f GiB of VRAM for experts, %.2f GiB are left for them"
                       " (use auto, a smaller grouped:N, or more --vram)", name, need / GIB, avail / GIB);
    }
    *out = m;
    return KR_OK;
}
