/* A 2-D weight matrix [rows, cols] (PyTorch nn.Linear layout: rows = out_features) in any storage
 * dtype krasis computes from. The forward pass reads it one row at a time, converted to float32, so
 * BF16/F16/FP8 weights are never expanded in memory. FP8 E4M3 rows are multiplied by their block
 * scale (DeepSeek-V3 "weight_scale_inv": W[i,j] = fp8(W[i,j]) * scale_inv[i / block_rows, j / block_cols]). */
#ifndef KR_WEIGHTS_MATRIX_H
#define KR_WEIGHTS_MATRIX_H

#include <stdbool.h>
#include <stdint.h>

#include "weights/tensor.h"

typedef struct {
    int64_t rows, cols;
    kr_dtype dtype;
    const uint8_t *data;
    /* FP8 block scales; NULL otherwise */
    const uint8_t *scale;
    kr_dtype scale_dtype;
    int64_t scale_cols;
    int64_t block_rows, block_cols;
    /* A quantized copy (backend/cpu/quant.h) made at load by the QuantConfig; when set, kr_matmul
     * multiplies with it instead of the stored weights. NULL otherwise. */
    const struct kr_qmatrix *q;
    /* GGUF quantized storage (ggml block types, weights/ggml_quants.h): when ggml is set, row r is the
     * row_bytes bytes at data + r * row_bytes, dequantized by kr_ggml_dequantize; dtype is unused.
     * from_gguf + ggml_type are set for every matrix bound from a GGUF (F32/F16/BF16 ones too, which
     * take the plain dtype path), so the requantizer knows each matrix's type in the file. */
    bool ggml, from_gguf;
    uint32_t ggml_type;
    int64_t row_bytes;
} kr_matrix;

/* Converts n contiguous stored elements to float32. dtype must be F32, F16, BF16 or F8_E4M3. */
void kr_convert_to_f32(kr_dtype dtype, const uint8_t *src, int64_t n, float *dst);

/* out[0..cols) = row r of m, dequantized. */
void kr_matrix_row(const kr_matrix *m, int64_t r, float *out);

/* True for the dtypes a kr_matrix or a vector may be stored in. */
int kr_dtype_is_computable(kr_dtype t);

#endif
