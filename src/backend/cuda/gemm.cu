/* cuBLASLt GEMMs. Row-major y[T, N] = x[T, K] W[N, K]^T is, in cuBLAS's column-major terms,
 * y^T (N x T, ld N) = op_T(W as K x N, ld K) . (x as K x T, ld K): the "TN" form, which is also
 * the form cuBLASLt's INT8 tensor-core path requires. */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/cuda_internal.cuh"

#define KR_LT(call)                                                                                 \
    do {                                                                                            \
        cublasStatus_t kr_lt_e_ = (call);                                                           \
        if (kr_lt_e_ != CUBLAS_STATUS_SUCCESS)                                                      \
            return kr_fail(KR_ERR_IO, "cuBLASLt: %s failed: status %d (%s)", #call, (int)kr_lt_e_, \
                           cublasLtGetStatusString(kr_lt_e_));                                      \
    } while (0)

enum { PLAN_SLOTS = 64 };
static const size_t WORKSPACE = 32u << 20;

typedef struct {
    int used;
    int64_t T, N, K;
    int kind; /* 0 bf16 -> f32, 1 bf16 -> bf16, 2 int8 */
    uint32_t align; /* the operands' alignments (log2 bytes, 4 x 8 bits): an algorithm chosen for 256-byte
                     * aligned pointers may not take less-aligned ones */
    cublasLtMatmulAlgo_t algo;
} plan;

struct kr_cuda_blas {
    cublasLtHandle_t lt;
    void *workspace;
    plan plans[PLAN_SLOTS];
    int next;
};

extern "C" kr_status kr_cuda_blas_create(kr_cuda_blas **out) {
    *out = NULL;
    kr_cuda_blas *h = (kr_cuda_blas *)calloc(1, sizeof *h);
    if (!h)
        return kr_fail(KR_ERR_NOMEM, "out of memory for a cuBLASLt handle");
    cublasStatus_t e = cublasLtCreate(&h->lt);
    if (e != CUBLAS_STATUS_SUCCESS) {
        free(h);
        return kr_fail(KR_ERR_IO, "cuBLASLt: cublasLtCreate failed: %s", cublasLtGetStatusString(e));
    }
    kr_status st = kr_cuda_malloc(&h->workspace, WORKSPACE, "the cuBLASLt workspace");
    if (st != KR_OK) {
        cublasLtDestroy(h->lt);
        free(h);
        return st;
    }
    *out = h;
    return KR_OK;
}

extern "C" void kr_cuda_blas_destroy(kr_cuda_blas *h) {
    if (!h)
        return;
    kr_cuda_free(h->workspace);
    cublasLtDestroy(h->lt);
    free(h);
}

/* largest power of two (up to 256) dividing the address */
static uint32_t alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1)))
        al >>= 1;
    return al;
}

static uint32_t log2u(uint32_t v) {
    uint32_t l = 0;
    while (v > 1) {
        v >>= 1;
        l++;
    }
    return l;
}

/* Describes the TN problem, finds (or recalls) the algorithm and runs it. */
static kr_status lt_matmul(kr_cuda_blas *h, int kind, cudaDataType_t ab_type, cudaDataType_t d_type,
                           cublasComputeType_t compute, cudaDataType_t scale_type, const void *alpha,
                           const void *beta, void *y, const void *x, const void *w, int64_t T, int64_t N, int64_t K,
                           cudaStream_t s) {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    kr_status st = KR_OK;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    plan *p = NULL;
    uint32_t al_a = alignment(w), al_b = alignment(x), al_d = alignment(y);
    const uint32_t align = log2u(al_a) | log2u(al_b) << 8 | log2u(al_d) << 16;
#define TRY_LT(call)                                                                                    \
    do {                                                                                                \
        cublasStatus_t e_ = (call);                                                                     \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                              \
            st = kr_fail(KR_ERR_IO, "cuBLASLt: %s failed for a %lld x %lld x %lld GEMM: %s", #call,     \
                         (long long)T, (long long)N, (long long)K, cublasLtGetStatusString(e_));        \
            goto done;                                                                                  \
        }                                                                                               \
    } while (0)
    TRY_LT(cublasLtMatmulDescCreate(&op, compute, scale_type));
    TRY_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    TRY_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    TRY_LT(cublasLtMatrixLayoutCreate(&la, ab_type, (uint64_t)K, (uint64_t)N, K));
    TRY_LT(cublasLtMatrixLayoutCreate(&lb, ab_type, (uint64_t)K, (uint64_t)T, K));
    TRY_LT(cublasLtMatrixLayoutCreate(&ld, d_type, (uint64_t)N, (uint64_t)T, N));
    for (int i = 0; i < PLAN_SLOTS; i++)
        if (h->plans[i].used && h->plans[i].kind == kind && h->plans[i].T == T && h->plans[i].N == N &&
            h->plans[i].K == K && h->plans[i].align == align)
            p = &h->plans[i];
    if (!p) {
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        TRY_LT(cublasLtMatmulPreferenceCreate(&pref));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &WORKSPACE,
                                                    sizeof WORKSPACE));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d));
        TRY_LT(cublasLtMatmulAlgoGetHeuristic(h->lt, op, la, lb, ld, ld, pref, 1, &res, &found));
        if (found == 0) {
            st = kr_fail(KR_ERR_UNSUPPORTED, "cuBLASLt has no algorithm for a %lld x %lld x %lld GEMM of this type",
                         (long long)T, (long long)N, (long long)K);
            goto done;
        }
        p = &h->plans[h->next];
        h->next = (h->next + 1) % PLAN_SLOTS;
        p->used = 1;
        p->kind = kind;
        p->T = T;
        p->N = N;
        p->K = K;
        p->align = align;
        p->algo = res.algo;
    }
    TRY_LT(cublasLtMatmul(h->lt, op, alpha, w, la, x, lb, beta, y, ld, y, ld, &p->algo, h->workspace, WORKSPACE, s));
#undef TRY_LT
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (ld)
        cublasLtMatrixLayoutDestroy(ld);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (op)
        cublasLtMatmulDescDestroy(op);
    return st;
}

extern "C" kr_status kr_cuda_gemm_bf16(kr_cuda_blas *h, kr_cuda_dtype y_dt, void *y, const void *x, const void *w,
                                       int64_t T, int64_t N, int64_t K, float alpha, float beta, kr_cuda_stream s) {
    if (T == 0 || N == 0)
        return KR_OK;
    if (y_dt != KR_CU_F32 && y_dt != KR_CU_BF16)
        return kr_fail(KR_ERR_ARG, "kr_cuda_gemm_bf16: output dtype %s (want f32 or bf16)", kr_cuda_dtype_name(y_dt));
    return lt_matmul(h, y_dt == KR_CU_F32 ? 0 : 1, CUDA_R_16BF, y_dt == KR_CU_F32 ? CUDA_R_32F : CUDA_R_16BF,
                     CUBLAS_COMPUTE_32F, CUDA_R_32F, &alpha, &beta, y, x, w, T, N, K, s);
}

template <typename T>
__global__ void quantize_rows_kernel(const T *x, int64_t n, int8_t *q, float *scale) {
    const T *xr = x + blockIdx.x * n;
    float amax = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        amax = fmaxf(amax, fabsf(kr_ld(xr + i)));
    __shared__ float part[32];
    amax = kr_warp_max(amax);
    if (threadIdx.x % 32 == 0)
        part[threadIdx.x / 32] = amax;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        v = kr_warp_max(v);
        if (threadIdx.x == 0)
            part[0] = v;
    }
    __syncthreads();
    float sc = part[0] > 0 ? part[0] / 127.0f : 1.0f, inv = 1.0f / sc;
    if (threadIdx.x == 0)
        scale[blockIdx.x] = sc;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = rintf(kr_ld(xr + i) * inv);
        q[blockIdx.x * n + i] = (int8_t)fmaxf(-127.0f, fminf(127.0f, v));
    }
}

template <typename T>
__global__ void dequant_acc_kernel(T *y, const int32_t *acc, const float *xs, const float *ws, int64_t T_, int64_t N) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < T_ * N)
        kr_st(y + i, (float)acc[i] * xs[i / N] * ws[i % N]);
}

extern "C" kr_status kr_cuda_quantize_rows_i8(kr_cuda_dtype x_dt, const void *x, int64_t rows, int64_t n, int8_t *q,
                                              float *scale, kr_cuda_stream s) {
    if (rows == 0)
        return KR_OK;
    KR_DISPATCH_ACT(x_dt, "kr_cuda_quantize_rows_i8",
                    quantize_rows_kernel<T><<<(unsigned)rows, 256, 0, s>>>((const T *)x, n, q, scale));
    KR_CU_LAUNCHED("quantize_rows_i8");
    return KR_OK;
}

extern "C" kr_status kr_cuda_gemm_i8(kr_cuda_blas *h, kr_cuda_dtype y_dt, void *y, const int8_t *xq,
                                     const float *x_scale, const int8_t *wq, const float *w_scale, int64_t T, int64_t N,
                                     int64_t K, int32_t *acc, kr_cuda_stream s) {
    if (T == 0 || N == 0)
        return KR_OK;
    if (K % 4)
        return kr_fail(KR_ERR_ARG, "kr_cuda_gemm_i8: K = %lld is not a multiple of 4", (long long)K);
    int32_t one = 1, zero = 0;
    KR_TRY(lt_matmul(h, 2, CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUDA_R_32I, &one, &zero, acc, xq, wq, T, N, K,
                     s));
    const int64_t rows = T; /* the dispatch macro names the element type T */
    KR_DISPATCH_ACT(y_dt, "kr_cuda_gemm_i8",
                    dequant_acc_kernel<T><<<kr_blocks(rows * N, 256), 256, 0, s>>>((T *)y, acc, x_scale, w_scale, rows, N));
    KR_CU_LAUNCHED("int8 dequant");
    return KR_OK;
}
