/* The routed-expert FFN of one MoE layer on the GPU, for prefill-sized batches:
 *   out[t] = sum_k w[t, k] * down_e(silu(gate_e(x_t)) * up_e(x_t)),  e = ids[t, k],
 * with the experts' weights INT4 or INT8 in the GPU layout (moe_layout.h), activations bf16 and
 * accumulation fp32 (tensor-core mma.sync m16n8k16, dequantization fused into the operand load).
 * One call = four launches on the given stream, no host synchronization (graph-capturable):
 *   1. out := 0;
 *   2. sort: the T*K (token, slot) pairs grouped by expert, each expert's segment padded to a
 *      multiple of block_m rows (padding rows are -1), plus the expert of every block_m-row block;
 *   3. grouped GEMM gate+up over all blocks of all active experts, SiLU(gate) * up fused into the
 *      epilogue, written as bf16 [rows, inter] in sorted order;
 *   4. grouped GEMM down over the same blocks, each row scaled by its routing weight and added
 *      (fp32 atomics) into out at its token's row.
 * Atomics make the order of the K additions per output element vary from run to run: results agree
 * to fp32 rounding, not bit for bit. */
#ifndef KR_BACKEND_CUDA_MOE_GEMM_H
#define KR_BACKEND_CUDA_MOE_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct CUstream_st; /* cudaStream_t; NULL = the default stream */

/* One layer's routed experts, on the device, each matrix in the GPU layout, experts back to back. */
typedef struct {
    int n_experts;          /* at most KR_GPU_MOE_MAX_EXPERTS */
    int64_t hidden, inter;  /* multiples of 64 and of gs */
    int bits, gs;           /* 4 or 8; 32, 64 or 128 */
    const uint8_t *w13_q;   /* [E] x w13 [2 inter, hidden], rows gate_0, up_0, gate_1, up_1, ... */
    const uint16_t *w13_s;  /* bf16 scales of w13 */
    const uint8_t *down_q;  /* [E] x down [hidden, inter] */
    const uint16_t *down_s;
} kr_gpu_moe_layer;

#define KR_GPU_MOE_MAX_EXPERTS 1024

/* Upper bounds for T tokens of K experts out of E with blocks of block_m rows (64 or 128). */
int64_t kr_gpu_moe_max_blocks(int64_t T, int K, int E, int block_m);
/* Device workspace bytes kr_gpu_moe_forward needs for up to T tokens (any block_m). */
size_t kr_gpu_moe_ws_bytes(int E, int64_t inter, int64_t T, int K);

/* Step 2 alone (forward calls it; exposed for tests). ids: device [T, K]; an id outside [0, E) is
 * ignored (that slot contributes nothing). Outputs (device): sorted [max_blocks * block_m] holding
 * t * K + k or -1, block_expert [max_blocks], offsets [E + 1] (padded row offsets), n_blocks [1]. */
kr_status kr_gpu_moe_sort(const int32_t *ids, int64_t T, int K, int E, int block_m, int32_t *sorted,
                          int32_t *block_expert, int32_t *offsets, int32_t *n_blocks, struct CUstream_st *stream);

/* x: device bf16 [T, hidden]; ids, w: device [T, K]; out: device fp32 [T, hidden] (overwritten).
 * block_m: 0 picks 64 or 128 from the average rows per expert. ws: device, ws_bytes >= kr_gpu_moe_ws_bytes. */
kr_status kr_gpu_moe_forward(const kr_gpu_moe_layer *L, const uint16_t *x, int64_t T, const int32_t *ids,
                             const float *w, int K, float *out, void *ws, size_t ws_bytes, int block_m,
                             struct CUstream_st *stream);

#ifdef __cplusplus
}
#endif

#endif
