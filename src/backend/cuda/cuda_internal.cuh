/* Shared by the .cu files: CUDA error -> kr_status, element load/store per dtype, launch checks. */
#ifndef KR_BACKEND_CUDA_INTERNAL_CUH
#define KR_BACKEND_CUDA_INTERNAL_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "backend/cuda/cuda_backend.h"

/* Returns from the calling kr_status function when a CUDA call fails, naming the call and the error. */
#define KR_CU(call)                                                                                         \
    do {                                                                                                    \
        cudaError_t kr_cu_e_ = (call);                                                                      \
        if (kr_cu_e_ != cudaSuccess)                                                                        \
            return kr_fail(KR_ERR_IO, "CUDA: %s failed: %s (%s:%d)", #call, cudaGetErrorString(kr_cu_e_), \
                           __FILE__, __LINE__);                                                             \
    } while (0)

/* After a launch: a bad configuration shows up here, a fault in the kernel at the next sync. */
#define KR_CU_LAUNCHED(what)                                                                                \
    do {                                                                                                    \
        cudaError_t kr_cu_e_ = cudaGetLastError();                                                          \
        if (kr_cu_e_ != cudaSuccess)                                                                        \
            return kr_fail(KR_ERR_IO, "CUDA: launching %s failed: %s", what, cudaGetErrorString(kr_cu_e_)); \
    } while (0)

static inline unsigned kr_blocks(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* load/store of one element as float, for the element types activations come in */
template <typename T> __device__ __forceinline__ float kr_ld(const T *p);
template <> __device__ __forceinline__ float kr_ld<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float kr_ld<__nv_bfloat16>(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
template <typename T> __device__ __forceinline__ void kr_st(T *p, float v);
template <> __device__ __forceinline__ void kr_st<float>(float *p, float v) { *p = v; }
template <> __device__ __forceinline__ void kr_st<__nv_bfloat16>(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* Calls f.template operator()<T>() with T the C++ type of an activation dtype (f32 or bf16). */
#define KR_DISPATCH_ACT(dt, what, ...)                                                                      \
    do {                                                                                                    \
        if ((dt) == KR_CU_F32) {                                                                            \
            typedef float T;                                                                                \
            __VA_ARGS__;                                                                                    \
        } else if ((dt) == KR_CU_BF16) {                                                                    \
            typedef __nv_bfloat16 T;                                                                        \
            __VA_ARGS__;                                                                                    \
        } else {                                                                                            \
            return kr_fail(KR_ERR_ARG, "%s: dtype %s is not an activation type (f32 or bf16)", what,       \
                           kr_cuda_dtype_name(dt));                                                         \
        }                                                                                                   \
    } while (0)

__device__ __forceinline__ float kr_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float kr_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
