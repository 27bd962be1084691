/* Reference float32 kernels. */
#include "backend/cpu/ops.h"

#include <math.h>
#include <stdlib.h>

float kr_dot(const float *a, const float *b, int64_t n) {
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

void kr_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = w[i] * (x[i] * r);
}

kr_status kr_matmul(const kr_matrix *w, const float *x, int64_t T, float *y) {
    float *row = malloc((size_t)w->cols * sizeof *row);
    if (!row)
        return kr_fail(KR_ERR_NOMEM, "out of memory for a %lld-wide weight row", (long long)w->cols);
    for (int64_t r = 0; r < w->rows; r++) {
        kr_matrix_row(w, r, row);
        for (int64_t t = 0; t < T; t++)
            y[t * w->rows + r] = kr_dot(x + t * w->cols, row, w->cols);
    }
    free(row);
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
