/* Symmetric per-group INT4 / INT8 quantization along the input dimension (DESIGN.md section 3) and the
 * INT8 activation format the integer kernels consume.
 *
 * Weights: row r of a [rows, cols] matrix is cut into groups of gs columns (gs = 32, 64 or 128; the last
 * group of a ragged row is zero-padded). Each group has one float32 scale s = max|w| / qmax and values
 * q = round(w / s) clamped to [-8, 7] (INT4) or [-127, 127] (INT8). float32 scales (not fp16) keep the
 * quantizer exact to test and cost 4 bytes per group: 12.5% over the INT4 payload at gs 32.
 * INT4 storage: per 32-column block, 16 bytes; byte i holds column i in its low nibble and column i+16 in
 * its high nibble, both stored as q + 8 (0..15). That order lets AVX2 unpack a block with one shift and
 * one mask into 32 bytes in column order.
 *
 * Activations: quantized per group of the same gs to INT8 in [-127, 127] with one float scale, plus a
 * per-group correction c = -8 * scale * sum(q) so INT4 kernels can multiply unsigned nibbles (q + 8) and
 * subtract the offset once per group instead of sign-extending every weight. */
#ifndef KR_BACKEND_CPU_QUANT_H
#define KR_BACKEND_CPU_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

#define KR_QUANTIZER_VERSION 1

typedef struct kr_qmatrix {
    int64_t rows, cols;  /* logical shape */
    int bits, gs;        /* 4 or 8; 32, 64 or 128 */
    int64_t groups;      /* per row: ceil(cols / gs) */
    int64_t row_bytes;   /* groups * gs * bits / 8 */
    const uint8_t *q;    /* [rows][row_bytes] */
    const float *s;      /* [rows][groups] */
} kr_qmatrix;

/* One quantized activation vector (padded to groups * gs values). */
typedef struct {
    const int8_t *q;
    const float *s;      /* [groups] scales */
    const float *c;      /* [groups] -8 * s * sum(q): the INT4 offset correction */
} kr_qvec;

bool kr_quant_valid(int bits, int gs);
/* Fills the shape fields of q for a [rows, cols] matrix; data pointers are left NULL. */
kr_status kr_qmatrix_shape(kr_qmatrix *q, int64_t rows, int64_t cols, int bits, int gs);
int64_t kr_qmatrix_qbytes(const kr_qmatrix *q);     /* rows * row_bytes */
int64_t kr_qmatrix_sbytes(const kr_qmatrix *q);     /* rows * groups * 4 */

/* Quantizes one float row (q->cols values) into row r's storage of q (whose q/s point to writable memory). */
void kr_quantize_row(const kr_qmatrix *q, int64_t r, const float *x);
/* Dequantizes row r to float (q->cols values): the reference the tests compare against. */
void kr_dequantize_row(const kr_qmatrix *q, int64_t r, float *out);
/* The stored integer of row r, column j, in [-8, 7] or [-127, 127]. */
int kr_qmatrix_get(const kr_qmatrix *q, int64_t r, int64_t j);

/* Reference activation quantizer: x[0..n) into groups starting at q (n need not be a multiple of gs;
 * the tail up to the group boundary is zero-filled). s and c get ceil(n / gs) entries. */
void kr_quantize_act_ref(const float *x, int64_t n, int gs, int8_t *q, float *s, float *c);

#endif
