/* The GPU expert layout: how one quantized expert matrix is stored for the grouped MoE GEMM
 * (moe_gemm.cu), and the host-side packer that builds it from the CPU quantization (kr_qmatrix,
 * backend/cpu/quant.h), so the CPU and GPU caches hold the very same integers and group scales.
 * Plain C with no CUDA dependency: the GPU cache can be built on a machine without a GPU.
 *
 * A matrix W [N, K] (N output rows, K input columns, groups of gs along K; N % 64 == 0, K % 64 == 0,
 * K % gs == 0) is cut into "warp tiles" of 64 rows x 16 columns: tile (nt, kt) covers rows
 * n = 64 nt .. 64 nt + 63 and columns k = 16 kt .. 16 kt + 15. Tiles are stored nt-major:
 *   q offset of tile (nt, kt) = (nt * K/16 + kt) * TB,   TB = 512 bytes (INT4) or 1024 bytes (INT8),
 * so one warp walking down K for its 64 rows streams one contiguous range, and a thread block that
 * owns 4 row tiles loads 4 contiguous runs of 4 tiles per 64 columns of K.
 *
 * Inside a tile the bytes are in the order of the tensor-core B fragment of mma.m16n8k16 (B is
 * "col" = W's own [N][K] order): lane l = 0..31 of the warp owns TB / 32 consecutive bytes (16 for
 * INT4, 32 for INT8) that it fetches with 128-bit loads and turns into its fragments with a few bit
 * operations, no shuffles. With g = l / 4 and c = l % 4 the lane holds, for each of the 8 n8 slices
 * s = 0..7 of the tile, row n = 8 s + g and columns k = 2c, 2c+1, 2c+8, 2c+9 (tile-relative):
 *  - INT4: 4 little-endian 32-bit words w[j], j = 0..3, each 8 nibbles q + 8 (0..15). Nibble p
 *    (bits 4p..4p+3) of w[j] is slice s = 2j + ((p & 3) >> 1), column k = 2c + 8 (p & 1) + (p >> 2).
 *    So (w >> 4p) & 0x000F000F, p = 0..3, is a pair {nibble p, nibble p+4} = {k, k+1} of one slice,
 *    and OR-ing 0x43004300 makes it the bf16 pair {128 + n0, 128 + n1}: subtracting 136 gives the
 *    exact integers (the magic-number trick of Marlin-style kernels, redone here for this order).
 *  - INT8: 8 words w[s], one per slice; byte b of w[s] is column k = 2c + (b & 1) + 8 (b >> 1),
 *    stored as q + 128 (1..255). A byte permute into the mantissa of 2^23 gives it exactly in fp32.
 * Scales: one bf16 per (row, group), the round-to-nearest-even of the CPU's float32 scale, stored
 *   s offset of (row-tile nt, group G) = (nt * K/gs + G) * 64 elements,
 * the 64 values in the order [g = 0..7][s = 0..7] (row 8 s + g): lane l reads the 8 scales of all
 * its slices with one 16-byte load at element 8 (l / 4).
 * The kernel multiplies the exact integers by the bf16 scale in bf16 (one rounding per weight), so
 * the GPU weights differ from the CPU's dequantized ones by at most one bf16 rounding of the scale
 * and one of the product: relative 2^-8 each, the same size as the bf16 rounding of activations.
 *
 * Experts of one layer are stored back to back with the strides below (no padding between them). */
#ifndef KR_BACKEND_CUDA_MOE_LAYOUT_H
#define KR_BACKEND_CUDA_MOE_LAYOUT_H

#include <stdint.h>

#include "backend/cpu/quant.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether [n, k] with (bits, gs) can be stored in this layout; KR_ERR_ARG naming the bad field if not. */
kr_status kr_gpu_qlayout_check(int64_t n, int64_t k, int bits, int gs);
int64_t kr_gpu_qlayout_qbytes(int64_t n, int64_t k, int bits); /* n * k * bits / 8 */
int64_t kr_gpu_qlayout_sbytes(int64_t n, int64_t k, int gs);   /* n * (k / gs) * 2 */

/* Packs a CPU-quantized matrix (INT4 or INT8, any gs) into the GPU layout: dst_q gets
 * kr_gpu_qlayout_qbytes bytes, dst_s kr_gpu_qlayout_sbytes bytes (bf16 bit patterns). */
kr_status kr_gpu_qlayout_pack(const kr_qmatrix *src, uint8_t *dst_q, uint16_t *dst_s);

/* Reads one element back from a packed matrix: the stored integer and the bf16 scale bits.
 * The definition of the layout in code, used by the tests (slow; not for hot paths). */
int kr_gpu_qlayout_get(const uint8_t *q, int64_t n, int64_t k, int bits, int64_t row, int64_t col);
uint16_t kr_gpu_qlayout_scale(const uint16_t *s, int64_t n, int64_t k, int gs, int64_t row, int64_t col);

/* float32 -> bf16 bits, round to nearest even (NaN stays NaN), and back. */
uint16_t kr_f32_to_bf16(float f);
float kr_bf16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
