/* Reference attention: softmax in float32 over all positions of the window. */
#include "backend/cpu/attention.h"

#include <string.h>

#include "backend/cpu/ops.h"
#include "backend/cpu/threadpool.h"

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

typedef struct {
    const kr_attention_batch *b;
    float *scores;
    int64_t scores_stride;
} batch_job;

static void batch_region(void *ctx, int w, int n) {
    const batch_job *j = ctx;
    const kr_attention_batch *b = j->b;
    int64_t total = b->T * b->H;
    float *scores = j->scores + (size_t)w * (size_t)j->scores_stride;
    for (int64_t i = total * w / n; i < total * (w + 1) / n; i++) {
        int64_t t = i / b->H, h = i % b->H, g = h / b->group;
        kr_attend(b->q + t * b->q_t + h * b->q_h, b->qk_dim, b->k + g * b->k_head, b->k_stride, b->v + g * b->v_head,
                  b->v_stride, b->v_dim, b->pos0 + t + 1, b->scale, scores, b->out + t * b->o_t + h * b->o_h);
    }
}

void kr_attend_batch(const kr_attention_batch *b, float *scores, int64_t scores_stride) {
    batch_job j = {b, scores, scores_stride};
    /* per query: the window's dot products and the weighted value sum */
    double window = (double)b->pos0 + (double)(b->T + 1) / 2;
    kr_pool_run_work(batch_region, &j, (double)(b->T * b->H) * window * (double)(b->qk_dim + b->v_dim));
}
