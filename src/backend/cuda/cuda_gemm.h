/* Dense projections on the GPU through cuBLASLt: y[T, N] = x[T, K] . W[N, K]^T (W as stored in a
 * checkpoint: one row per output). BF16 operands with float32 accumulation, or INT8 operands (weights
 * per output channel, activations per token, both symmetric) with int32 accumulation and a float
 * rescale. The handle caches cuBLASLt's algorithm choice per shape. */
#ifndef KR_BACKEND_CUDA_GEMM_H
#define KR_BACKEND_CUDA_GEMM_H

#include "backend/cuda/cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kr_cuda_blas kr_cuda_blas;

kr_status kr_cuda_blas_create(kr_cuda_blas **h);
void kr_cuda_blas_destroy(kr_cuda_blas *h);

/* y = alpha * x W^T + beta * y. x, W: bf16; y: f32 or bf16 (y_dt). beta = 1 adds onto y (a residual). */
kr_status kr_cuda_gemm_bf16(kr_cuda_blas *h, kr_cuda_dtype y_dt, void *y, const void *x, const void *w, int64_t T,
                            int64_t N, int64_t K, float alpha, float beta, kr_cuda_stream s);

/* `batch` independent GEMMs y_b = alpha * x_b W_b^T + beta * y_b with row strides ldx / ldy (elements) and
 * element offsets stride_* from one problem to the next; W_b rows are K apart. MLA's per-head products:
 * the heads of a [T, H, d] tensor are batch b = h with ldx = H * d and stride_x = d. */
kr_status kr_cuda_gemm_bf16_batched(kr_cuda_blas *h, kr_cuda_dtype y_dt, void *y, int64_t ldy, int64_t stride_y,
                                    const void *x, int64_t ldx, int64_t stride_x, const void *w, int64_t stride_w,
                                    int64_t T, int64_t N, int64_t K, int64_t batch, float alpha, float beta,
                                    kr_cuda_stream s);

/* 1: problems of up to 8 tokens use the GEMV kernel, 0: always cuBLASLt, -1: KRASIS_GPU_GEMV decides
 * (default off until checked on a device). For tests; not thread-safe. */
void kr_cuda_gemm_force_gemv(int on);
/* GEMV kernel launches so far (tests: which path a GEMM took) */
int64_t kr_cuda_gemv_launches(void);

/* y = x W^T + beta * y in float32 throughout (no TF32): the router, whose top-k must match the CPU's. */
kr_status kr_cuda_gemm_f32(kr_cuda_blas *h, float *y, const float *x, const float *w, int64_t T, int64_t N, int64_t K,
                           float beta, kr_cuda_stream s);

/* Symmetric per-row INT8 quantization: q[r, :] = round(x[r, :] / scale[r]), scale[r] = max|x[r, :]| / 127
 * (1 when the row is zero). x: f32 or bf16. */
kr_status kr_cuda_quantize_rows_i8(kr_cuda_dtype x_dt, const void *x, int64_t rows, int64_t n, int8_t *q, float *scale,
                                   kr_cuda_stream s);

/* y[t, n] = (sum_k xq[t, k] wq[n, k]) * x_scale[t] * w_scale[n]. K must be a multiple of 4 (cuBLASLt's
 * INT8 rule). acc: T * N int32 of workspace. y: f32 or bf16. */
kr_status kr_cuda_gemm_i8(kr_cuda_blas *h, kr_cuda_dtype y_dt, void *y, const int8_t *xq, const float *x_scale,
                          const int8_t *wq, const float *w_scale, int64_t T, int64_t N, int64_t K, int32_t *acc,
                          kr_cuda_stream s);

#ifdef __cplusplus
}
#endif

#endif
