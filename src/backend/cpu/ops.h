/* Reference CPU kernels in float32: clear loops that the fast kernels are checked against. */
#ifndef KR_BACKEND_CPU_OPS_H
#define KR_BACKEND_CPU_OPS_H

#include <stdint.h>

#include "base/status.h"
#include "weights/matrix.h"

float kr_dot(const float *a, const float *b, int64_t n); /* through the ISA table's dot_f32 */
float kr_dot_ref(const float *a, const float *b, int64_t n); /* the scalar level's */
/* the scalar level's attention block kernels (isa.h's attn_scores / attn_values) */
void kr_attn_scores_ref(const float *q, int64_t qs, int nh, const float *k, int64_t ks, int nk, int64_t d, float scale,
                        float *s, int64_t ss);
float kr_exp_sum_ref(float *x, int n, float m);
void kr_attn_values_ref(const float *p, int64_t ps, int nh, const float *v, int64_t vs, int nk, int64_t d, float *o,
                        int64_t os);

/* out = w * x / sqrt(mean(x^2) + eps); out may alias x. */
void kr_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* y[t, r] = sum_j x[t, j] * W[r, j] for t < T (x: [T, W.cols], y: [T, W.rows], both contiguous).
 * Each weight row is dequantized once and applied to all T rows of x; rows are split over the thread
 * pool. A matrix with a quantized copy (w->q) runs through kr_qlinear instead. Not reentrant: one
 * caller at a time, never from inside a pool region. */
kr_status kr_matmul(const kr_matrix *w, const float *x, int64_t T, float *y);

/* y[t, :] += b for t < T */
void kr_add_rows(float *y, const float *b, int64_t T, int64_t n);
void kr_add(float *y, const float *x, int64_t n);

/* g = silu(g) * u, silu(z) = z * sigmoid(z) */
void kr_silu_mul(float *g, const float *u, int64_t n);

void kr_softmax(float *x, int64_t n);

#endif
