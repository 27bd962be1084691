/* Micro-benchmark of the GPU MoE kernels (backend/cuda/moe_gemm.h) on real expert shapes:
 * DeepSeek-V2-Lite (hidden 2048, moe_inter 1408, 64 experts, top-6, 26 MoE layers) and
 * Qwen3-30B-A3B (hidden 2048, moe_inter 768, 128 experts, top-8, 48 MoE layers).
 * Weights are random bytes in the GPU layout (the kernel's speed does not depend on how they were
 * quantized; correctness is test_moe_gpu's job), scales random bf16 in a realistic range, inputs
 * random bf16, routing random distinct top-k per token. One layer's weights (277 / 302 MB) are far
 * larger than L2, so every timed run streams them from HBM.
 * Per case: median of 20 timed runs (CUDA events) after 3 warm-ups of one whole forward (memset,
 * sort, gate+up, down); useful FLOPs = T * K * 6 * hidden * inter. The practical ceiling is cuBLAS:
 * the same FLOPs as two dense bf16 GEMMs [T*K, hidden] x [hidden, 2 inter] and
 * [T*K, inter] x [inter, hidden] (fp32 accumulate), timed the same way in the same program.
 * Implied prefill tok/s = T / (MoE layers * time per layer): the routed experts alone. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_exit_check.h"
#include "backend/cuda/moe_gemm.h"
#include "backend/cuda/moe_layout.h"

#define CB(call)                                                                   \
    do {                                                                           \
        cublasStatus_t s_ = (call);                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                         \
            fprintf(stderr, "%s:%d: %s failed: %d\n", __FILE__, __LINE__, #call, (int)s_); \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static unsigned long long rng = 88172645463325252ull;
static unsigned long long next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float frand01(void) { return (float)(next() >> 11) * (1.0f / 9007199254740992.0f); }

static void *dev_random_bytes(size_t n) {
    uint64_t *h = malloc((n + 7) / 8 * 8);
    for (size_t i = 0; i < (n + 7) / 8; i++)
        h[i] = next();
    void *d;
    CU(cudaMalloc(&d, n));
    CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static void *dev_bf16(size_t n, float lo, float hi) {
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        h[i] = kr_f32_to_bf16(lo + (hi - lo) * frand01());
    void *d;
    CU(cudaMalloc(&d, n * 2));
    CU(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    const char *name;
    int E, K, layers;
    int64_t H, I;
} shape;

enum { MAXREPS = 20 };
static int WARM = 3, REPS = 20, with_cublas = 1; /* --once: 1 warm-up + 1 run, no cuBLAS (for ncu) */

static float median_ms(float *v) {
    qsort(v, (size_t)REPS, sizeof *v, cmpf);
    return REPS < 2 ? v[0] : 0.5f * (v[REPS / 2 - 1] + v[REPS / 2]);
}

static void run(const shape *sh, int bits, int gs, int64_t T, cublasHandle_t cb) {
    int E = sh->E, K = sh->K;
    int64_t H = sh->H, I = sh->I;
    kr_gpu_moe_layer L = {E, H, I, bits, gs, NULL, NULL, NULL, NULL};
    L.w13_q = dev_random_bytes((size_t)(E * kr_gpu_qlayout_qbytes(2 * I, H, bits)));
    L.down_q = dev_random_bytes((size_t)(E * kr_gpu_qlayout_qbytes(H, I, bits)));
    /* |w| ~ 0.02-0.04 * q: activations stay O(1) through the layer */
    L.w13_s = dev_bf16((size_t)(E * kr_gpu_qlayout_sbytes(2 * I, H, gs) / 2), 0.002f, 0.004f);
    L.down_s = dev_bf16((size_t)(E * kr_gpu_qlayout_sbytes(H, I, gs) / 2), 0.002f, 0.004f);
    void *x = dev_bf16((size_t)(T * H), -1.0f, 1.0f);
    int32_t *ids = malloc((size_t)(T * K) * 4);
    float *w = malloc((size_t)(T * K) * 4);
    for (int64_t t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            int e, dup;
            do {
                e = (int)(next() % (unsigned)E);
                dup = 0;
                for (int j = 0; j < k; j++)
                    dup |= ids[t * K + j] == e;
            } while (dup);
            ids[t * K + k] = e;
            w[t * K + k] = 1.0f / K;
        }
    void *d_ids, *d_w, *d_out, *d_ws;
    size_t wsb = kr_gpu_moe_ws_bytes(E, I, T, K);
    CU(cudaMalloc(&d_ids, (size_t)(T * K) * 4));
    CU(cudaMalloc(&d_w, (size_t)(T * K) * 4));
    CU(cudaMalloc(&d_out, (size_t)(T * H) * 4));
    CU(cudaMalloc(&d_ws, wsb));
    CU(cudaMemcpy(d_ids, ids, (size_t)(T * K) * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d_w, w, (size_t)(T * K) * 4, cudaMemcpyHostToDevice));

    /* KR_MOE_BM=64|128 forces the row-block size (the default is the forward's own choice) */
    int bm_force = getenv("KR_MOE_BM") ? atoi(getenv("KR_MOE_BM")) : 0;
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    float t_moe[MAXREPS], t_cb[MAXREPS] = {0};
    for (int r = 0; r < WARM + REPS; r++) {
        CU(cudaEventRecord(e0, 0));
        if (kr_gpu_moe_forward(&L, x, T, d_ids, d_w, K, d_out, d_ws, wsb, bm_force, NULL) != KR_OK) {
            fprintf(stderr, "forward: %s\n", kr_error());
            exit(1);
        }
        CU(cudaEventRecord(e1, 0));
        CU(cudaEventSynchronize(e1));
        if (r >= WARM)
            CU(cudaEventElapsedTime(&t_moe[r - WARM], e0, e1));
    }
    CU(cudaGetLastError());

    /* cuBLAS: dense bf16 GEMMs of the same FLOPs (column-major: C^T = W^T-as-stored x X^T) */
    int64_t M = T * K;
    void *A = dev_bf16((size_t)(M * (H > I ? H : I)), -1.0f, 1.0f);
    void *W1 = dev_bf16((size_t)(2 * I * H), -0.03f, 0.03f), *W2 = dev_bf16((size_t)(H * I), -0.03f, 0.03f);
    void *C1, *C2;
    CU(cudaMalloc(&C1, (size_t)(M * 2 * I) * 2));
    CU(cudaMalloc(&C2, (size_t)(M * H) * 2));
    const float one = 1.0f, zero = 0.0f;
    for (int r = 0; r < (WARM + REPS) * with_cublas; r++) {
        CU(cudaEventRecord(e0, 0));
        CB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, (int)(2 * I), (int)M, (int)H, &one, W1, CUDA_R_16BF, (int)H, A,
                        CUDA_R_16BF, (int)H, &zero, C1, CUDA_R_16BF, (int)(2 * I), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        CB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, (int)H, (int)M, (int)I, &one, W2, CUDA_R_16BF, (int)I, C1,
                        CUDA_R_16BF, (int)I, &zero, C2, CUDA_R_16BF, (int)H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        CU(cudaEventRecord(e1, 0));
        CU(cudaEventSynchronize(e1));
        if (r >= WARM)
            CU(cudaEventElapsedTime(&t_cb[r - WARM], e0, e1));
    }
    float ms = median_ms(t_moe), ms_cb = median_ms(t_cb);
    float mn = t_moe[0], mx = t_moe[REPS - 1];
    double flops = (double)T * K * 6.0 * (double)H * (double)I;
    int bm = bm_force ? bm_force : T * K >= (int64_t)256 * E ? 128 : 64;
    printf("%-14s int%d g%-3d T=%-6lld block_m=%-3d %8.3f ms/layer (%.3f-%.3f) %6.1f TFLOP/s | cuBLAS bf16 same FLOPs %8.3f ms "
           "%6.1f TFLOP/s | ratio %.2f | experts-only prefill %8.0f tok/s (%d layers)\n",
           sh->name, bits, gs, (long long)T, bm, ms, mn, mx, flops / (ms * 1e-3) / 1e12, ms_cb,
           flops / (ms_cb * 1e-3) / 1e12, ms_cb / ms, (double)T / (sh->layers * ms * 1e-3), sh->layers);
    fflush(stdout);
    cudaFree((void *)L.w13_q);
    cudaFree((void *)L.w13_s);
    cudaFree((void *)L.down_q);
    cudaFree((void *)L.down_s);
    cudaFree(x);
    cudaFree(d_ids);
    cudaFree(d_w);
    cudaFree(d_out);
    cudaFree(d_ws);
    cudaFree(A);
    cudaFree(W1);
    cudaFree(W2);
    cudaFree(C1);
    cudaFree(C2);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    free(ids);
    free(w);
}

int main(int argc, char **argv) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("gpu_moe_bench: no CUDA device; nothing measured\n");
        return 77;
    }
    struct cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    printf("device: %s, %d SMs, %.0f MB L2\n", p.name, p.multiProcessorCount, p.l2CacheSize / 1e6);
    cublasHandle_t cb;
    CB(cublasCreate(&cb));
    const shape shapes[2] = {{"V2-Lite", 64, 6, 26, 2048, 1408}, {"Qwen3-30B-A3B", 128, 8, 48, 2048, 768}};
    if (argc > 4 && strcmp(argv[1], "--once") == 0) { /* --once SHAPE-INDEX T BITS [GS] */
        WARM = 1, REPS = 1, with_cublas = 0;
        run(&shapes[atoi(argv[2]) & 1], atoi(argv[4]), argc > 5 ? atoi(argv[5]) : 128, atoll(argv[3]), cb);
        cublasDestroy(cb);
        return 0;
    }
    /* a plain 8192^3 bf16 GEMM: the chip's practical dense rate on this machine today */
    {
        int64_t N = 8192;
        void *a = dev_bf16((size_t)(N * N), -1, 1), *b = dev_bf16((size_t)(N * N), -1, 1), *c;
        CU(cudaMalloc(&c, (size_t)(N * N) * 2));
        const float one = 1.0f, zero = 0.0f;
        cudaEvent_t e0, e1;
        CU(cudaEventCreate(&e0));
        CU(cudaEventCreate(&e1));
        float t[MAXREPS];
        for (int r = 0; r < WARM + REPS; r++) {
            CU(cudaEventRecord(e0, 0));
            CB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)N, (int)N, &one, a, CUDA_R_16BF, (int)N, b,
                            CUDA_R_16BF, (int)N, &zero, c, CUDA_R_16BF, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            CU(cudaEventRecord(e1, 0));
            CU(cudaEventSynchronize(e1));
            if (r >= WARM)
                CU(cudaEventElapsedTime(&t[r - WARM], e0, e1));
        }
        float ms = median_ms(t);
        printf("cuBLAS bf16 8192^3 GEMM: %.3f ms, %.1f TFLOP/s\n", ms, 2.0 * N * N * N / (ms * 1e-3) / 1e12);
        cudaFree(a);
        cudaFree(b);
        cudaFree(c);
    }
    const int64_t Ts[2] = {1024, 10240};
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 2; i++) {
            run(&shapes[s], 4, 128, Ts[i], cb);
            if (!quick) {
                run(&shapes[s], 4, 32, Ts[i], cb);
                run(&shapes[s], 8, 128, Ts[i], cb);
            }
        }
    cublasDestroy(cb);
    return 0;
}
