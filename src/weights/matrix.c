/* Row-wise dequantization of stored weight matrices to float32. */
#include "weights/matrix.h"

#include <string.h>

#include "base/fp.h"
#include "weights/ggml_quants.h"

int kr_dtype_is_computable(kr_dtype t) {
    return t == KR_DT_F32 || t == KR_DT_F16 || t == KR_DT_BF16 || t == KR_DT_F8_E4M3;
}

void kr_convert_to_f32(kr_dtype dtype, const uint8_t *src, int64_t n, float *dst) {
    switch (dtype) {
    case KR_DT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float)); /* stored data need not be 4-byte aligned */
        break;
    case KR_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = kr_bf16_to_f32(h);
        }
        break;
    case KR_DT_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = kr_f16_to_f32(h);
        }
        break;
    case KR_DT_F8_E4M3:
        for (int64_t i = 0; i < n; i++)
            dst[i] = kr_fp8_e4m3_to_f32(src[i]);
        break;
    default:
        /* binding rejects every other dtype before a matrix is built */
        memset(dst, 0, (size_t)n * sizeof(float));
        break;
    }
}

void kr_matrix_row(const kr_matrix *m, int64_t r, float *out) {
    if (m->ggml) {
        kr_ggml_dequantize(m->ggml_type, m->data + (size_t)(r * m->row_bytes), m->cols, out);
        return;
    }
    size_t es = kr_dtype_size(m->dtype);
    kr_convert_to_f32(m->dtype, m->data + (size_t)(r * m->cols) * es, m->cols, out);
    if (!m->scale)
        return;
    size_t ses = kr_dtype_size(m->scale_dtype);
    const uint8_t *srow = m->scale + (size_t)((r / m->block_rows) * m->scale_cols) * ses;
    for (int64_t b = 0; b < m->scale_cols; b++) {
        float s;
        kr_convert_to_f32(m->scale_dtype, srow + (size_t)b * ses, 1, &s);
        int64_t end = (b + 1) * m->block_cols < m->cols ? (b + 1) * m->block_cols : m->cols;
        for (int64_t j = b * m->block_cols; j < end; j++)
            out[j] *= s;
    }
}
