/* Shared by attention.cu (split-key kernel, dispatch) and attention_flash.cu (the tensor-core prefill
 * kernel), which are two translation units so that a 2-core build compiles them in parallel. */
#ifndef KR_BACKEND_CUDA_ATTENTION_INTERNAL_CUH
#define KR_BACKEND_CUDA_ATTENTION_INTERNAL_CUH

#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_internal.cuh"

__device__ __forceinline__ float ld_act(const void *p, kr_cuda_dtype dt, int64_t i) {
    return dt == KR_CU_F32 ? ((const float *)p)[i] : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
__device__ __forceinline__ void st_act(void *p, kr_cuda_dtype dt, int64_t i, float v) {
    if (dt == KR_CU_F32)
        ((float *)p)[i] = v;
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}

/* Raises a kernel's dynamic shared-memory limit only when a launch needs more than it was given. The
 * attribute is per device (pipeline stages run on several), so `given` is one value per device. */
enum { KR_SMEM_DEVICES = 64 };
template <typename K> static inline kr_status ensure_smem(K kernel, size_t bytes, int given[KR_SMEM_DEVICES]) {
    int dev = 0;
    KR_CU(cudaGetDevice(&dev));
    int *g = &given[dev >= 0 && dev < KR_SMEM_DEVICES ? dev : 0];
    if (bytes <= 48 * 1024 || ((int)bytes <= *g && dev < KR_SMEM_DEVICES))
        return KR_OK;
    KR_CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    *g = (int)bytes;
    return KR_OK;
}

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* the flash kernel for variant 1 (128/128), 2 (192/128) or 3 (64/64); attention_flash.cu */
kr_status kr_cuda_flash_attention(const kr_cuda_attn *a, int variant, cudaStream_t s);

#endif
