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

/* Leading dimensions (row strides, elements) and batching of one problem; a plain GEMM has ldw = ldx = K,
 * ldy = N and batch 1. */
typedef struct {
    int64_t ldw, ldx, ldy;
    int64_t batch, stride_w, stride_x, stride_y;
} lt_shape;

typedef struct {
    int used;
    int64_t T, N, K;
    lt_shape g;
    int kind; /* 0 bf16 -> f32, 1 bf16 -> bf16, 2 int8, 3 f32 */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
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

static void plan_release(plan *p) {
    if (p->ld)
        cublasLtMatrixLayoutDestroy(p->ld);
    if (p->lb)
        cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la)
        cublasLtMatrixLayoutDestroy(p->la);
    if (p->op)
        cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

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
    for (int i = 0; i < PLAN_SLOTS; i++)
        plan_release(&h->plans[i]);
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

/* Describes the TN problem and picks cuBLASLt's algorithm for it, into p. */
static kr_status plan_create(kr_cuda_blas *h, plan *p, cudaDataType_t ab_type, cudaDataType_t d_type,
                             cublasComputeType_t compute, cudaDataType_t scale_type, const uint32_t al[3], int64_t T,
                             int64_t N, int64_t K, const lt_shape *g) {
    cublasLtMatmulPreference_t pref = NULL;
    kr_status st = KR_OK;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
#define TRY_LT(call)                                                                                    \
    do {                                                                                                \
        cublasStatus_t e_ = (call);                                                                     \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                              \
            st = kr_fail(KR_ERR_IO, "cuBLASLt: %s failed for a %lld x %lld x %lld GEMM: %s", #call,     \
                         (long long)T, (long long)N, (long long)K, cublasLtGetStatusString(e_));        \
            goto done;                                                                                  \
        }                                                                                               \
    } while (0)
    TRY_LT(cublasLtMatmulDescCreate(&p->op, compute, scale_type));
    TRY_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    TRY_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    TRY_LT(cublasLtMatrixLayoutCreate(&p->la, ab_type, (uint64_t)K, (uint64_t)N, g->ldw));
    TRY_LT(cublasLtMatrixLayoutCreate(&p->lb, ab_type, (uint64_t)K, (uint64_t)T, g->ldx));
    TRY_LT(cublasLtMatrixLayoutCreate(&p->ld, d_type, (uint64_t)N, (uint64_t)T, g->ldy));
    if (g->batch > 1) {
        int32_t count = (int32_t)g->batch;
        cublasLtMatrixLayout_t l3[3] = {p->la, p->lb, p->ld};
        const int64_t *strides[3] = {&g->stride_w, &g->stride_x, &g->stride_y};
        for (int i = 0; i < 3; i++) {
            TRY_LT(cublasLtMatrixLayoutSetAttribute(l3[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
            TRY_LT(cublasLtMatrixLayoutSetAttribute(l3[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, strides[i],
                                                    sizeof *strides[i]));
        }
    }
    {
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        TRY_LT(cublasLtMatmulPreferenceCreate(&pref));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &WORKSPACE,
                                                    sizeof WORKSPACE));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof al[0]));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof al[1]));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof al[2]));
        TRY_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], sizeof al[2]));
        TRY_LT(cublasLtMatmulAlgoGetHeuristic(h->lt, p->op, p->la, p->lb, p->ld, p->ld, pref, 1, &res, &found));
        if (found == 0) {
            st = kr_fail(KR_ERR_UNSUPPORTED, "cuBLASLt has no algorithm for a %lld x %lld x %lld GEMM of this type",
                         (long long)T, (long long)N, (long long)K);
            goto done;
        }
        p->algo = res.algo;
    }
#undef TRY_LT
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (st != KR_OK)
        plan_release(p);
    return st;
}

/* Finds (or makes) the plan of the problem and runs it. Plans keep their descriptors: a decode step's
 * GEMMs then cost one cublasLtMatmul call each on the host, not a dozen descriptor calls. */
static kr_status lt_matmul_ex(kr_cuda_blas *h, int kind, cudaDataType_t ab_type, cudaDataType_t d_type,
                              cublasComputeType_t compute, cudaDataType_t scale_type, const void *alpha,
                              const void *beta, void *y, const void *x, const void *w, int64_t T, int64_t N,
                              int64_t K, const lt_shape *g, cudaStream_t s) {
    uint32_t al[3] = {alignment(w), alignment(x), alignment(y)};
    const uint32_t align = log2u(al[0]) | log2u(al[1]) << 8 | log2u(al[2]) << 16;
    plan *p = NULL;
    for (int i = 0; i < PLAN_SLOTS && !p; i++)
        if (h->plans[i].used && h->plans[i].kind == kind && h->plans[i].T == T && h->plans[i].N == N &&
            h->plans[i].K == K && h->plans[i].align == align && !memcmp(&h->plans[i].g, g, sizeof *g))
            p = &h->plans[i];
    if (!p) {
        p = &h->plans[h->next];
        h->next = (h->next + 1) % PLAN_SLOTS;
        plan_release(p);
        KR_TRY(plan_create(h, p, ab_type, d_type, compute, scale_type, al, T, N, K, g));
        p->used = 1;
        p->kind = kind;
        p->T = T;
        p->N = N;
        p->K = K;
        p->g = *g;
        p->align = align;
    }
    cublasStatus_t e = cublasLtMatmul(h->lt, p->op, alpha, w, p->la, x, p->lb, beta, y, p->ld, y, p->ld, &p->algo,
                                      h->workspace, WORKSPACE, s);
    if (e != CUBLAS_STATUS_SUCCESS)
        return kr_fail(KR_ERR_IO, "cuBLASLt: cublasLtMatmul failed for a %lld x %lld x %lld GEMM: %s", (long long)T,
                       (long long)N, (long long)K, cublasLtGetStatusString(e));
    return KR_OK;
}

static kr_status lt_matmul(kr_cuda_blas *h, int kind, cudaDataType_t ab_type, cudaDataType_t d_type,
                           cublasComputeType_t compute, cudaDataType_t scale_type, const void *alpha,
                           const void *beta, void *y, const void *x, const void *w, int64_t T, int64_t N, int64_t K,
                           cudaStream_t s) {
    lt_shape g = {K, K, N, 1, 0, 0, 0};
    return lt_matmul_ex(h, kind, ab_type, d_type, compute, scale_type, alpha, beta, y, x, w, T, N, K, &g, s);
}

extern "C" kr_status kr_cuda_gemm_bf16(kr_cuda_blas *h, kr_cuda_dtype y_dt, void *y, const void *x, const void *w,
                                       int64_t T, int64_t N, int64_t K, float alpha, float beta, kr_cuda_stream s) {
    if (T == 0 || N == 0)
        return KR_OK;
    if (y_dt != KR_CU_F32 && y_dt != KR_CU_BF16)
        return kr_fail(KR_ERR_ARG, "kr_cuda_gemm_bf16: output dtype %s (want f32 or bf16)", kr_cuda_dtype_name(y_dt));
    return kr_cuda_gemm_bf16_batched(h, y_dt, y, N, 0, x, K, 0, w, 0, T, N, K, 1, alpha, beta, s);
}

/* Decode-sized products (T <= 8 tokens): one warp per output row streams the row once with 16-byte
 * loads and keeps the T dot products in registers. cuBLASLt's general kernels spend most of a decode
 * step's time on the host (a few microseconds of setup each, dozens per layer) and under-fill the GPU
 * at T = 1; this is one launch and reads each weight once. */
enum { GEMV_MAX_T = 8, GEMV_WARPS = 8 };

__device__ __forceinline__ void bf16x8(uint4 v, float f[8]) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(u[i] << 16);
        f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}

template <int TT, typename Y>
__global__ void gemv_kernel(Y *y, int64_t ldy, int64_t sy, const __nv_bfloat16 *x, int64_t ldx, int64_t sx,
                            const __nv_bfloat16 *w, int64_t sw, int64_t N, int64_t K, float alpha, float beta) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t n = (int64_t)blockIdx.x * GEMV_WARPS + warp, b = blockIdx.y;
    if (n >= N)
        return;
    const __nv_bfloat16 *wr = w + b * sw + n * K, *xb = x + b * sx;
    float acc[TT];
    for (int t = 0; t < TT; t++)
        acc[t] = 0;
    for (int64_t k = (int64_t)lane * 8; k < K; k += 256) {
        float wf[8], xf[8];
        bf16x8(__ldg((const uint4 *)(wr + k)), wf);
        for (int t = 0; t < TT; t++) {
            bf16x8(__ldg((const uint4 *)(xb + t * ldx + k)), xf);
            for (int i = 0; i < 8; i++)
                acc[t] = fmaf(wf[i], xf[i], acc[t]);
        }
    }
    for (int t = 0; t < TT; t++) {
        float v = kr_warp_sum(acc[t]) * alpha;
        if (lane == 0) {
            Y *o = y + b * sy + t * ldy + n;
            kr_st(o, beta != 0 ? v + beta * kr_ld(o) : v);
        }
    }
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Off unless KRASIS_GPU_GEMV=1 (or a test forces it): written after the session's last GPU run, so not yet
 * checked on a device (issue 8's notes); the next device run's test_cuda_gemm decides the default. */
static int gemv_forced = -1;
static int64_t gemv_launches;
extern "C" void kr_cuda_gemm_force_gemv(int on) { gemv_forced = on; }
extern "C" int64_t kr_cuda_gemv_launches(void) { return gemv_launches; }

static bool gemv_enabled(void) {
    static int from_env = -1; /* read once: this sits in front of every GEMM of a decode step */
    if (gemv_forced >= 0)
        return gemv_forced != 0;
    if (from_env < 0) {
        const char *e = getenv("KRASIS_GPU_GEMV");
        from_env = e && atoi(e) > 0;
    }
    return from_env != 0;
}

/* whether the GEMV kernel takes the problem: few tokens, 16-byte aligned rows */
static bool gemv_fits(const void *x, int64_t ldx, int64_t sx, const void *w, int64_t sw, int64_t T, int64_t K,
                      int64_t batch) {
    return gemv_enabled() && T >= 1 && T <= GEMV_MAX_T && K % 8 == 0 && ldx % 8 == 0 && sx % 8 == 0 && sw % 8 == 0 && aligned16(x) &&
           aligned16(w) && batch <= 65535;
}

template <typename Y>
static kr_status gemv(Y *y, int64_t ldy, int64_t sy, const void *x, int64_t ldx, int64_t sx, const void *w, int64_t sw,
                      int64_t T, int64_t N, int64_t K, int64_t batch, float alpha, float beta, cudaStream_t s) {
    dim3 grid(kr_blocks(N, GEMV_WARPS), (unsigned)batch);
    const __nv_bfloat16 *xb = (const __nv_bfloat16 *)x, *wb = (const __nv_bfloat16 *)w;
#define KR_GEMV(tt)                                                                                        \
    case tt:                                                                                               \
        gemv_kernel<tt, Y><<<grid, 32 * GEMV_WARPS, 0, s>>>(y, ldy, sy, xb, ldx, sx, wb, sw, N, K, alpha, beta); \
        break
    switch (T) {
        KR_GEMV(1);
        KR_GEMV(2);
        KR_GEMV(3);
        KR_GEMV(4);
        KR_GEMV(5);
        KR_GEMV(6);
        KR_GEMV(7);
        KR_GEMV(8);
    }
#undef KR_GEMV
    gemv_launches++;
    KR_CU_LAUNCHED("gemv");
    return KR_OK;
}

extern "C" kr_status kr_cuda_gemm_bf16_batched(kr_cuda_blas *h, kr_cuda_dtype y_dt, void *y, int64_t ldy,
                                               int64_t stride_y, const void *x, int64_t ldx, int64_t stride_x,
                                               const void *w, int64_t stride_w, int64_t T, int64_t N, int64_t K,
                                               int64_t batch, float alpha, float beta, kr_cuda_stream s) {
    if (T == 0 || N == 0 || batch == 0)
        return KR_OK;
    if (y_dt != KR_CU_F32 && y_dt != KR_CU_BF16)
        return kr_fail(KR_ERR_ARG, "kr_cuda_gemm_bf16_batched: output dtype %s (want f32 or bf16)",
                       kr_cuda_dtype_name(y_dt));
    if (ldx < K || ldy < N || batch < 1 || batch > 0x7fffffff)
        return kr_fail(KR_ERR_ARG, "kr_cuda_gemm_bf16_batched: bad strides (ldx %lld < K %lld or ldy %lld < N %lld) "
                       "or batch %lld", (long long)ldx, (long long)K, (long long)ldy, (long long)N, (long long)batch);
    if (gemv_fits(x, ldx, stride_x, w, stride_w, T, K, batch))
        return y_dt == KR_CU_F32 ? gemv((float *)y, ldy, stride_y, x, ldx, stride_x, w, stride_w, T, N, K, batch, alpha,
                                        beta, s)
                                 : gemv((__nv_bfloat16 *)y, ldy, stride_y, x, ldx, stride_x, w, stride_w, T, N, K, batch,
                                        alpha, beta, s);
    lt_shape g = {K, ldx, ldy, batch, stride_w, stride_x, stride_y};
    return lt_matmul_ex(h, y_dt == KR_CU_F32 ? 0 : 1, CUDA_R_16BF, y_dt == KR_CU_F32 ? CUDA_R_32F : CUDA_R_16BF,
                        CUBLAS_COMPUTE_32F, CUDA_R_32F, &alpha, &beta, y, x, w, T, N, K, &g, s);
}

extern "C" kr_status kr_cuda_gemm_f32(kr_cuda_blas *h, float *y, const float *x, const float *w, int64_t T, int64_t N,
                                      int64_t K, float beta, kr_cuda_stream s) {
    if (T == 0 || N == 0)
        return KR_OK;
    float alpha = 1.0f;
    return lt_matmul(h, 3, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, &alpha, &beta, y, x, w, T, N, K, s);
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
