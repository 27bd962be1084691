/* One query against a causal window of cached keys and values: the inner step shared by GQA and by
 * MLA in its absorbed form (where keys are [latent | rope key] rows and values are their latent part). */
#ifndef KR_BACKEND_CPU_ATTENTION_H
#define KR_BACKEND_CPU_ATTENTION_H

#include <stdint.h>

/* out[0..v_dim) = sum_s softmax_s(scale * q . k_s) v_s over s < n.
 * k_s = k + s * k_stride (qk_dim floats), v_s = v + s * v_stride; scores: n floats of scratch. */
void kr_attend(const float *q, int64_t qk_dim, const float *k, int64_t k_stride, const float *v, int64_t v_stride,
               int64_t v_dim, int64_t n, float scale, float *scores, float *out);

/* Every (position, head) query of an attention call, run in parallel over the thread pool. Query (t, h)
 * is q + t * q_t + h * q_h; it reads keys k + (h / group) * k_head (rows k_stride apart) and values
 * likewise, over the causal window of pos0 + t + 1 cached positions, and writes out + t * o_t + h * o_h.
 * Heads whose keys coincide (k_head == v_head == 0, as MLA's latent rows, or one GQA group) are read
 * together. scratch: kr_attention_scratch(b) floats, which depends on the shapes, the pool and T, not on
 * the window (a decode step's scratch does not grow with the context). */
typedef struct {
    const float *q;
    int64_t q_t, q_h, qk_dim;
    const float *k, *v;
    int64_t k_stride, v_stride, k_head, v_head, v_dim;
    int64_t T, H, group, pos0;
    float scale;
    float *out;
    int64_t o_t, o_h;
} kr_attention_batch;

int64_t kr_attention_scratch(const kr_attention_batch *b);
void kr_attend_batch(const kr_attention_batch *b, float *scratch);

#endif
