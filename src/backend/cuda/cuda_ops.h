/* Element-wise and per-row kernels on the GPU, mirroring the float32 CPU reference in
 * backend/cpu/ops.h and rope.h. Activations are f32 or bf16 (math always in float32); norm weights,
 * biases and RoPE frequencies are f32. All calls are asynchronous on `s`. */
#ifndef KR_BACKEND_CUDA_OPS_H
#define KR_BACKEND_CUDA_OPS_H

#include "backend/cuda/cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[r, :] = w * x[r, :] / sqrt(mean(x[r, :]^2) + eps) for r < rows; rows contiguous, n wide; out may be x.
 * Also the per-head q/k norm: rows = tokens * heads, n = head_dim. */
kr_status kr_cuda_rmsnorm(kr_cuda_dtype dt, void *out, const void *x, const float *w, int64_t rows, int64_t n,
                          float eps, kr_cuda_stream s);
/* The same with row strides (ld_out, ld_x elements) and the output in another dtype: f32 -> bf16 is the
 * norm before a bf16 GEMM; x and out rows may be wider than n (MLA normalizes the latent part of a row). */
kr_status kr_cuda_rmsnorm_ex(kr_cuda_dtype out_dt, void *out, int64_t ld_out, kr_cuda_dtype x_dt, const void *x,
                             int64_t ld_x, const float *w, int64_t rows, int64_t n, float eps, kr_cuda_stream s);

/* RoPE over a [T, heads, ...] tensor in place: for token t, head h, the element block
 * x + t * token_stride + h * head_stride + offset holds the rope_dim rotated dims. Pairs are (i, i + dim/2)
 * (NeoX) or (2i, 2i+1) (interleaved). Position of token t: positions[t] if positions (device int32) is
 * non-NULL, else pos0 + t. inv_freq: device, rope_dim/2 floats from kr_rope_inv_freq (plain or YaRN);
 * cos/sin are multiplied by attention_factor, as the CPU does. */
typedef struct {
    int rope_dim;
    int interleaved;
    float attention_factor;
    const float *inv_freq; /* device */
} kr_cuda_rope_params;
kr_status kr_cuda_rope(kr_cuda_dtype dt, void *x, int64_t T, int64_t heads, int64_t token_stride, int64_t head_stride,
                       int64_t offset, const kr_cuda_rope_params *p, int64_t pos0, const int32_t *positions,
                       kr_cuda_stream s);

/* out[r, i] = silu(g[r, i]) * u[r, i] for r < rows, i < n, where g/u rows are ld_in apart and out rows
 * ld_out apart (a fused [gate | up] row: u = g + n, ld_in = 2n). out may be g. */
kr_status kr_cuda_silu_mul(kr_cuda_dtype dt, void *out, int64_t ld_out, const void *g, const void *u, int64_t ld_in,
                           int64_t rows, int64_t n, kr_cuda_stream s);

/* y[i] += x[i] (the residual add), both dtype dt */
kr_status kr_cuda_add(kr_cuda_dtype dt, void *y, const void *x, int64_t n, kr_cuda_stream s);
/* y[r, :] += b (f32 bias) for r < rows */
kr_status kr_cuda_add_rows(kr_cuda_dtype dt, void *y, const float *b, int64_t rows, int64_t n, kr_cuda_stream s);

/* dst = src converted (f32 <-> bf16, or same type: a copy); n elements */
kr_status kr_cuda_convert(kr_cuda_dtype dst_dt, void *dst, kr_cuda_dtype src_dt, const void *src, int64_t n,
                          kr_cuda_stream s);

#ifdef __cplusplus
}
#endif

#endif
