/* Reference float32 kernels, and the dense matmul every projection goes through (threaded; quantized
 * when the matrix carries a quantized copy). */
#include "backend/cpu/ops.h"

#include <math.h>
#include <stdlib.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/qlinear.h"
#include "backend/cpu/threadpool.h"

float kr_dot(const float *a, const float *b, int64_t n) { return kr_kernels_get()->dot_f32(a, b, n); }

float kr_dot_ref(const float *a, const float *b, int64_t n) {
    /* four partial sums: lets the compiler keep several FMAs in flight without -ffast-math */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

void kr_attn_scores_ref(const float *q, int64_t qs, int nh, const float *k, int64_t ks, int nk, int64_t d, float scale,
                        float *s, int64_t ss) {
    for (int h = 0; h < nh; h++)
        for (int j = 0; j < nk; j++)
            s[h * ss + j] = scale * kr_dot_ref(q + h * qs, k + j * ks, d);
}

float kr_exp_sum_ref(float *x, int n, float m) {
    float sum = 0;
    for (int i = 0; i < n; i++)
        sum += (x[i] = expf(x[i] - m));
    return sum;
}

void kr_attn_values_ref(const float *p, int64_t ps, int nh, const float *v, int64_t vs, int nk, int64_t d, float *o,
                        int64_t os) {
    for (int h = 0; h < nh; h++)
        for (int j = 0; j < nk; j++)
            for (int64_t i = 0; i < d; i++)
                o[h * os + i] += p[h * ps + j] * v[j * vs + i];
}

void kr_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = w[i] * (x[i] * r);
}

/* Scratch reused by every kr_matmul call (kr_matmul is called by one thread at a time, as the pool is
 * used): one dequantized-row buffer per worker and the quantized-activation workspace. It grows to the
 * widest matrix and largest T seen, so the forward pass allocates nothing here after its first step. */
static struct {
    float *rows;        /* [workers][cap] */
    int64_t cap;
    int workers;
    kr_qlinear_ws qws;
} scratch;

typedef struct {
    const kr_matrix *w;
    const float *x;
    int64_t T;
    float *y;
} matmul_job;

static void matmul_region(void *ctx, int wk, int n) {
    const matmul_job *j = ctx;
    const kr_matrix *w = j->w;
    float *row = scratch.rows + (size_t)wk * (size_t)scratch.cap;
    for (int64_t r = w->rows * wk / n; r < w->rows * (wk + 1) / n; r++) {
        kr_matrix_row(w, r, row);
        for (int64_t t = 0; t < j->T; t++)
            j->y[t * w->rows + r] = kr_dot(j->x + t * w->cols, row, w->cols);
    }
}

kr_status kr_matmul(const kr_matrix *w, const float *x, int64_t T, float *y) {
    if (w->q)
        return kr_qlinear(w->q, x, T, y, &scratch.qws);
    int workers = kr_pool_threads();
    if (w->cols > scratch.cap || workers > scratch.workers) {
        int64_t cap = w->cols > scratch.cap ? w->cols : scratch.cap;
        int nw = workers > scratch.workers ? workers : scratch.workers;
        float *rows = malloc((size_t)nw * (size_t)cap * sizeof *rows);
        if (!rows)
            return kr_fail(KR_ERR_NOMEM, "out of memory for %d %lld-wide weight rows", nw, (long long)cap);
        free(scratch.rows);
        scratch.rows = rows;
        scratch.cap = cap;
        scratch.workers = nw;
    }
    matmul_job j = {w, x, T, y};
    kr_pool_run_work(matmul_region, &j, (double)w->rows * (double)w->cols * (double)T);
    return KR_OK;
}

void kr_add_rows(float *y, const float *b, int64_t T, int64_t n) {
    for (int64_t t = 0; t < T; t++)
        kr_add(y + t * n, b, n);
}

void kr_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void kr_silu_mul(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kr_softmax(float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}
