/* Exact re-encoding of ggml blocks into krasis' INT4/INT8 group layout (backend/cpu/quant.h), where
 * the formats coincide, so a GGUF's quantized weights reach the kernels without a second rounding:
 *   Q4_0 -> INT4 g32: the 16 code bytes are the same bytes (byte i = column i low nibble, column i+16
 *           high nibble, stored as q + 8), the f16 scale widens to f32;
 *   Q4_0 -> INT8 g32: codes q - 8 as int8, same scale;
 *   Q8_0 -> INT8 g32: int8 codes copied, scale widened; krasis' INT8 range is [-127, 127], so a code
 *           of -128 (which ggml's quantizer never writes, but a file may hold) is clamped to -127 and
 *           counted: that one value moves by one scale step;
 *   Q5_0 -> INT8 g32: 5-bit codes q - 16 in [-16, 15] as int8, same scale;
 *   IQ4_NL -> INT8 g32: the non-linear table's values (-127..113) as int8 codes, same scale.
 * Everything else goes through float rows: Q4_1 / Q5_1 / Q4_K / Q5_K carry a per-block minimum (not
 * symmetric), Q2_K / Q3_K / Q6_K / IQ4_XS have sub-block scales finer than 32 columns, and any group
 * size other than 32 mixes blocks of different scales. */
#ifndef KR_WEIGHTS_GGML_REQUANT_H
#define KR_WEIGHTS_GGML_REQUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cpu/quant.h"

/* True when a row of ggml type `type` re-encodes exactly into bits/gs. */
bool kr_ggml_reencodes(uint32_t type, int bits, int gs);

/* Writes row r of q (q->cols == cols; q->q / q->s writable) from one ggml row at src. Returns the
 * number of clamped codes (Q8_0 -128s), or -1 when kr_ggml_reencodes is false (nothing written). */
int64_t kr_ggml_reencode_row(uint32_t type, const uint8_t *src, int64_t cols, const kr_qmatrix *q, int64_t r);

#endif
