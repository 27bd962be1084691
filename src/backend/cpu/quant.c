/* Group quantizers for weights (INT4/INT8) and activations (INT8). Scalar on purpose: weights are
 * quantized once into the expert cache, and this file is the definition the kernels are tested against. */
#include "backend/cpu/quant.h"

#include <math.h>
#include <string.h>

bool kr_quant_valid(int bits, int gs) { return (bits == 4 || bits == 8) && (gs == 32 || gs == 64 || gs == 128); }

kr_status kr_qmatrix_shape(kr_qmatrix *q, int64_t rows, int64_t cols, int bits, int gs) {
    memset(q, 0, sizeof *q);
    if (!kr_quant_valid(bits, gs))
        return kr_fail(KR_ERR_ARG, "quantization int%d with group size %d is not supported (bits 4 or 8, group size 32, 64 or 128)", bits, gs);
    if (rows <= 0 || cols <= 0)
        return kr_fail(KR_ERR_ARG, "cannot quantize a [%lld, %lld] matrix", (long long)rows, (long long)cols);
    q->rows = rows;
    q->cols = cols;
    q->bits = bits;
    q->gs = gs;
    q->groups = (cols + gs - 1) / gs;
    q->row_bytes = q->groups * gs * bits / 8;
    return KR_OK;
}

int64_t kr_qmatrix_qbytes(const kr_qmatrix *q) { return q->rows * q->row_bytes; }
int64_t kr_qmatrix_sbytes(const kr_qmatrix *q) { return q->rows * q->groups * (int64_t)sizeof(float); }

static int clampi(long v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

void kr_quantize_row(const kr_qmatrix *q, int64_t r, const float *x) {
    int qmax = q->bits == 4 ? 7 : 127, qmin = q->bits == 4 ? -8 : -127;
    uint8_t *row = (uint8_t *)q->q + r * q->row_bytes;
    float *srow = (float *)q->s + r * q->groups;
    memset(row, q->bits == 4 ? 0x88 : 0, (size_t)q->row_bytes); /* padding stores integer 0 */
    for (int64_t g = 0; g < q->groups; g++) {
        int64_t j0 = g * q->gs, j1 = j0 + q->gs < q->cols ? j0 + q->gs : q->cols;
        float amax = 0;
        for (int64_t j = j0; j < j1; j++)
            amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        float s = amax / (float)qmax, inv = s > 0 ? 1.0f / s : 0;
        srow[g] = s;
        for (int64_t j = j0; j < j1; j++) {
            int v = clampi(lrintf(x[j] * inv), qmin, qmax);
            if (q->bits == 8) {
                row[j] = (uint8_t)(int8_t)v;
            } else {
                int64_t blk = j / 32, i = j % 32;
                uint8_t *b = row + blk * 16 + (i & 15);
                uint8_t nib = (uint8_t)(v + 8);
                *b = i < 16 ? (uint8_t)((*b & 0xF0) | nib) : (uint8_t)((*b & 0x0F) | (nib << 4));
            }
        }
    }
}

int kr_qmatrix_get(const kr_qmatrix *q, int64_t r, int64_t j) {
    const uint8_t *row = q->q + r * q->row_bytes;
    if (q->bits == 8)
        return (int8_t)row[j];
    int64_t blk = j / 32, i = j % 32;
    uint8_t b = row[blk * 16 + (i & 15)];
    return (i < 16 ? (b & 0xF) : (b >> 4)) - 8;
}

void kr_dequantize_row(const kr_qmatrix *q, int64_t r, float *out) {
    const float *srow = q->s + r * q->groups;
    for (int64_t j = 0; j < q->cols; j++)
        out[j] = (float)kr_qmatrix_get(q, r, j) * srow[j / q->gs];
}

void kr_quantize_act_ref(const float *x, int64_t n, int gs, int8_t *q, float *s, float *c) {
    int64_t groups = (n + gs - 1) / gs;
    for (int64_t g = 0; g < groups; g++) {
        int64_t j0 = g * gs, j1 = j0 + gs < n ? j0 + gs : n;
        float amax = 0;
        for (int64_t j = j0; j < j1; j++)
            amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        float sc = amax / 127.0f, inv = sc > 0 ? 127.0f / amax : 0;
        int sum = 0;
        for (int64_t j = j0; j < j0 + gs; j++) {
            int v = j < j1 ? clampi(lrintf(x[j] * inv), -127, 127) : 0;
            q[j] = (int8_t)v;
            sum += v;
        }
        s[g] = sc;
        c[g] = -8.0f * sc * (float)sum;
    }
}
