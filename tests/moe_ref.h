/* The float reference of one token through a layer's routed experts, for the GPU MoE tests:
 *   out = sum_k wt[k] * down_e(silu(gate_e x) * up_e x),  e = ids[k]  (ids outside [0, E) skipped),
 * with w13 [E][2 I][H] (rows gate_0, up_0, gate_1, ...) and down [E][H][I] dequantized to float; h: I floats
 * of scratch. */
#ifndef KR_TEST_MOE_REF_H
#define KR_TEST_MOE_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline void moe_reference_token(const float *w13f, const float *downf, int64_t H, int64_t I, int E, int K,
                                       const float *x, const int32_t *ids, const float *wt, float *h, float *out) {
    memset(out, 0, (size_t)H * sizeof *out);
    for (int k = 0; k < K; k++) {
        int e = ids[k];
        if (e < 0 || e >= E)
            continue;
        const float *w13 = w13f + (int64_t)e * 2 * I * H, *dn = downf + (int64_t)e * H * I;
        for (int64_t i = 0; i < I; i++) {
            float g = 0, u = 0;
            for (int64_t j = 0; j < H; j++) {
                g += w13[(2 * i) * H + j] * x[j];
                u += w13[(2 * i + 1) * H + j] * x[j];
            }
            h[i] = g / (1.0f + expf(-g)) * u;
        }
        for (int64_t r = 0; r < H; r++) {
            float acc = 0;
            for (int64_t i = 0; i < I; i++)
                acc += dn[r * I + i] * h[i];
            out[r] += wt[k] * acc;
        }
    }
}

#endif
