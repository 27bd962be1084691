/* Reference attention: softmax in float32 over all positions of the window. */
#include "backend/cpu/attention.h"

#include <string.h>

#include "backend/cpu/ops.h"

void kr_attend(const float *q, int64_t qk_dim, const float *k, int64_t k_stride, const float *v, int64_t v_stride,
               int64_t v_dim, int64_t n, float scale, float *scores, float *out) {
    for (int64_t s = 0; s < n; s++)
        scores[s] = scale * kr_dot(q, k + s * k_stride, qk_dim);
    kr_softmax(scores, n);
    memset(out, 0, (size_t)v_dim * sizeof *out);
    for (int64_t s = 0; s < n; s++) {
        const float *vs = v + s * v_stride;
        float p = scores[s];
        for (int64_t d = 0; d < v_dim; d++)
            out[d] += p * vs[d];
    }
}
