/* No allocation per token on the quantized CPU path: the allocator entry points of this binary are wrapped
 * (alloc_counter.h) and counted; after one warm-up call, 200 decode-sized MoE forwards and
 * quantized linear layers on 2 threads must not allocate at all. */
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu/moe.h"
#include "backend/cpu/qlinear.h"
#include "alloc_counter.h"
#include "backend/cpu/threadpool.h"


static void make(kr_qmatrix *m, int64_t rows, int64_t cols) {
    kr_qmatrix_shape(m, rows, cols, 4, 32);
    uint8_t *q = malloc((size_t)kr_qmatrix_qbytes(m));
    float *s = malloc((size_t)kr_qmatrix_sbytes(m));
    for (int64_t i = 0; i < kr_qmatrix_qbytes(m); i++)
        q[i] = (uint8_t)(i * 37);
    for (int64_t i = 0; i < rows * m->groups; i++)
        s[i] = 0.001f;
    m->q = q;
    m->s = s;
}

int main(void) {
    enum { D = 256, I = 128, E = 8, K = 2 };
    kr_qexpert ex[E + 1];
    for (int e = 0; e <= E; e++) {
        ex[e].inter = I;
        ex[e].node = 0;
        make(&ex[e].w13, 2 * I, D);
        make(&ex[e].down, D, I);
    }
    kr_qmoe q = {D, 32, E, ex, &ex[E]};
    if (kr_pool_init(2) != KR_OK)
        return 1;
    kr_qmoe_ws *ws = NULL;
    float x[D], out[D], y[2 * I];
    for (int i = 0; i < D; i++)
        x[i] = (float)(i % 17) - 8;
    int idx[K];
    float w[K] = {0.6f, 0.4f};
    kr_qlinear_ws lws = {0};
    if (kr_qmoe_ws_reserve(&ws, &q, 1, K) != KR_OK)
        return 1;
    idx[0] = 0;
    idx[1] = 1;
    kr_qmoe_forward(&q, ws, x, 1, idx, w, K, out);
    kr_qlinear(&ex[0].w13, x, 1, y, &lws);
    long before = atomic_load(&n_alloc);
    for (int t = 0; t < 200; t++) {
        idx[0] = t % E;
        idx[1] = (t * 3 + 1) % E;
        if (idx[1] == idx[0])
            idx[1] = (idx[0] + 1) % E;
        if (kr_qmoe_forward(&q, ws, x, 1, idx, w, K, out) != KR_OK || kr_qlinear(&ex[0].w13, x, 1, y, &lws) != KR_OK) {
            fprintf(stderr, "FAIL: %s\n", kr_error());
            return 1;
        }
    }
    long got = atomic_load(&n_alloc) - before;
    kr_qmoe_ws_free(ws);
    kr_qlinear_ws_free(&lws);
    kr_pool_shutdown();
    for (int e = 0; e <= E; e++) {
        free((void *)ex[e].w13.q);
        free((void *)ex[e].w13.s);
        free((void *)ex[e].down.q);
        free((void *)ex[e].down.s);
    }
    if (got != 0) {
        fprintf(stderr, "FAIL: %ld allocations in 200 decode steps (want 0)\n", got);
        return 1;
    }
    printf("test_kernels_alloc: 200 decode-sized MoE + linear steps on 2 threads, 0 allocations: ok\n");
    return 0;
}
