/* One query against a causal window of cached keys and values: the inner step shared by GQA and by
 * MLA in its absorbed form (where keys are [latent | rope key] rows and values are their latent part). */
#ifndef KR_BACKEND_CPU_ATTENTION_H
#define KR_BACKEND_CPU_ATTENTION_H

#include <stdint.h>

/* out[0..v_dim) = sum_s softmax_s(scale * q . k_s) v_s over s < n.
 * k_s = k + s * k_stride (qk_dim floats), v_s = v + s * v_stride; scores: n floats of scratch. */
void kr_attend(const float *q, int64_t qk_dim, const float *k, int64_t k_stride, const float *v, int64_t v_stride,
               int64_t v_dim, int64_t n, float scale, float *scores, float *out);

#endif
