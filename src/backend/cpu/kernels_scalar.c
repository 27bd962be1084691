/* Scalar reference kernels: the plainest loops that implement the contracts in isa.h. */
#include <string.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/ops.h"

static void rows_dot(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, float *y) {
    for (int64_t i = 0; i < nr; i++) {
        int64_t r = r0 + i;
        const float *sw = w->s + r * w->groups;
        float acc = 0;
        for (int64_t g = 0; g < w->groups; g++) {
            int32_t d = 0;
            for (int64_t j = g * w->gs; j < (g + 1) * w->gs; j++) {
                int wv = j < w->cols ? kr_qmatrix_get(w, r, j) : 0;
                d += wv * a->q[j];
            }
            acc += (float)d * (sw[g] * a->s[g]);
        }
        y[i] = acc;
    }
}

static void tile_dot(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, int nt, float *y, int64_t ys) {
    for (int t = 0; t < nt; t++)
        rows_dot(w, r0, nr, &a[t], y + t * ys);
}

static uint64_t read_sum(const uint8_t *p, size_t n) {
    uint64_t s0 = 0, s1 = 0;
    for (size_t i = 0; i < n; i += 16) {
        uint64_t a, b;
        memcpy(&a, p + i, 8);
        memcpy(&b, p + i + 8, 8);
        s0 += a;
        s1 ^= b;
    }
    return s0 + s1;
}

const kr_kernels kr_kernels_scalar = {KR_ISA_SCALAR, "scalar", kr_quantize_act_ref, rows_dot, tile_dot, read_sum,
                                     kr_dot_ref, kr_attn_scores_ref, kr_attn_values_ref, kr_exp_sum_ref};
