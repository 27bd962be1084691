/* Quantized linear layer over the thread pool (see qlinear.h). */
#include "backend/cpu/qlinear.h"

#include <stdlib.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/threadpool.h"

typedef struct {
    const kr_qmatrix *w;
    const float *x;
    float *y;
    int64_t T;
    kr_qlinear_ws *ws;
    const kr_kernels *k;
} job;

static void region(void *ctx, int wk, int n) {
    job *j = ctx;
    const kr_qmatrix *w = j->w;
    int64_t pad = w->groups * w->gs;
    for (int64_t t = j->T * wk / n; t < j->T * (wk + 1) / n; t++)
        j->k->quantize_act(j->x + t * w->cols, w->cols, w->gs, j->ws->q + t * pad, j->ws->s + t * w->groups,
                           j->ws->c + t * w->groups);
    kr_pool_barrier();
    /* rows in chunks that stay in L2 while every token (KR_TILE_TOKENS at a time) passes over them */
    int64_t r0 = w->rows * wk / n, r1 = w->rows * (wk + 1) / n;
    for (int64_t r = r0; r < r1; r += 64) {
        int64_t nr = r1 - r < 64 ? r1 - r : 64;
        for (int64_t t = 0; t < j->T; t += KR_TILE_TOKENS) {
            int nt = j->T - t < KR_TILE_TOKENS ? (int)(j->T - t) : KR_TILE_TOKENS;
            kr_qvec a[KR_TILE_TOKENS];
            for (int i = 0; i < nt; i++)
                a[i] = (kr_qvec){j->ws->q + (t + i) * pad, j->ws->s + (t + i) * w->groups, j->ws->c + (t + i) * w->groups};
            j->k->tile_dot(w, r, nr, a, nt, j->y + t * w->rows + r, w->rows);
        }
    }
}

kr_status kr_qlinear(const kr_qmatrix *w, const float *x, int64_t T, float *y, kr_qlinear_ws *ws) {
    int64_t need = T * w->groups * w->gs, ng = T * w->groups;
    if (need > ws->cap || ng > ws->cap_groups) {
        kr_qlinear_ws_free(ws);
        ws->q = malloc((size_t)need);
        ws->s = malloc((size_t)ng * sizeof(float));
        ws->c = malloc((size_t)ng * sizeof(float));
        if (!ws->q || !ws->s || !ws->c) {
            kr_qlinear_ws_free(ws);
            return kr_fail(KR_ERR_NOMEM, "out of memory for %lld quantized activations", (long long)T);
        }
        ws->cap = need;
        ws->cap_groups = ng;
    }
    job j = {w, x, y, T, ws, kr_kernels_get()};
    kr_pool_run(region, &j);
    return KR_OK;
}

void kr_qlinear_ws_free(kr_qlinear_ws *ws) {
    free(ws->q);
    free(ws->s);
    free(ws->c);
    ws->q = NULL;
    ws->s = ws->c = NULL;
    ws->cap = ws->cap_groups = 0;
}
