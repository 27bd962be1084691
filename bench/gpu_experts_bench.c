/* Expert residency benchmark (backend/cuda/moe_residency.h): the routed-expert FFN of every MoE layer
 * of synthetic DeepSeek-V2-Lite shapes (configs/DeepSeek-V2-Lite.json: hidden 2048, moe_intermediate
 * 1408, 64 experts, top-6, 26 MoE layers) for prompts of T = 1K, 10K, 32K tokens (one chunk of T), per
 * expert mode, INT4 and INT8 at group size 128:
 *   persistent           all layers resident;
 *   auto, 16 GB card     the VRAM budget the planner leaves for experts on a 16 GiB card
 *                        (`krasis plan --synthetic configs/DeepSeek-V2-Lite.json --vram 16G
 *                        --prefill-chunk 10240`: 16 GiB - non-expert 2.052 - workspace 0.803 - reserve
 *                        0.500 - a 32K-token fp8 KV cache 0.478 = 12.17 GiB): INT4 fits (persistent),
 *                        INT8 runs grouped:11;
 *   grouped:4, chunked   explicit;
 *   chunked, staged      the fallback copy path without cudaHostRegister (INT4, T = 10K only).
 * Host copies: one 4 KiB-aligned block per layer (the GPU cache file's layer layout, kr_gpu_moe_geom),
 * random INT4/INT8 codes and bf16 scales in a realistic range, pinned once with cudaHostRegister (the
 * residency finds them pinned). Routing: random distinct top-6 per token, weights 1/6; every layer
 * reads the same input (the speed of a layer does not depend on it).
 * Per case: a cold pass right after create (it includes the first group's or, persistent, every
 * layer's upload), then the median of 3 steady passes (for grouped modes the wrap-around prefetch has
 * group 0 in place, as for the next prompt). tok/s = T / pass time; copy GB/s = bytes / copy time from
 * the residency's copy-stream events, next to the plain pinned cudaMemcpy host-to-device rate measured
 * first (1 GiB, best and median of 5).
 * Usage: gpu_experts_bench [--quick]   (--quick: INT4, T = 1K, for a smoke run) */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_exit_check.h"
#include "backend/cuda/moe_cache.h"
#include "backend/cuda/moe_gemm.h"
#include "backend/cuda/moe_layout.h"
#include "backend/cuda/moe_residency.h"


enum { E = 64, K = 6, NL = 26, PASSES = 3 };
static const int64_t H = 2048, I = 1408;
static const double BUDGET_16G = 12.17; /* GiB: see the file comment */

static unsigned long long rng = 88172645463325252ull;
static unsigned long long next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double h2d_rate(double *best) {
    size_t n = (size_t)1 << 30;
    void *h, *d;
    CU(cudaHostAlloc(&h, n, cudaHostAllocDefault));
    CU(cudaMalloc(&d, n));
    memset(h, 1, n);
    cudaEvent_t a, b;
    CU(cudaEventCreate(&a));
    CU(cudaEventCreate(&b));
    double r[5];
    for (int i = 0; i < 5; i++) {
        CU(cudaEventRecord(a, 0));
        CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
        CU(cudaEventRecord(b, 0));
        CU(cudaEventSynchronize(b));
        float ms;
        CU(cudaEventElapsedTime(&ms, a, b));
        r[i] = n / (ms * 1e6);
    }
    qsort(r, 5, sizeof *r, cmpd);
    *best = r[4];
    cudaFreeHost(h);
    cudaFree(d);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return r[2];
}

typedef struct {
    const char *label, *mode;
    double budget_gib; /* 0: free memory */
    int staged;        /* no_register: the staged copy path (INT4, T = 10K only) */
} mode_case;

int main(int argc, char **argv) {
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("gpu_experts_bench: no CUDA device; nothing measured\n");
        return 77;
    }
    struct cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    double best, h2d = h2d_rate(&best);
    printf("device: %s; pinned cudaMemcpy host-to-device: %.1f GB/s median, %.1f best (1 GiB x 5)\n", p.name, h2d, best);

    const int64_t Ts[3] = {1024, 10240, 32768};
    int nT = quick ? 1 : 3;
    int64_t Tmax = Ts[nT - 1];
    /* inputs shared by all cases */
    uint16_t *xh = malloc((size_t)Tmax * H * 2);
    for (int64_t i = 0; i < Tmax * H; i++)
        xh[i] = kr_f32_to_bf16((float)(next() >> 11) * (2.0f / 9007199254740992.0f) - 1.0f);
    int32_t *ids = malloc((size_t)Tmax * K * 4);
    float *w = malloc((size_t)Tmax * K * 4);
    for (int64_t t = 0; t < Tmax; t++)
        for (int k = 0; k < K; k++) {
            int e, dup;
            do {
                e = (int)(next() % E);
                dup = 0;
                for (int j = 0; j < k; j++)
                    dup |= ids[t * K + j] == e;
            } while (dup);
            ids[t * K + k] = e;
            w[t * K + k] = 1.0f / K;
        }
    void *d_x, *d_ids, *d_w, *d_out, *d_ws;
    size_t wsb = kr_gpu_moe_ws_bytes(E, I, Tmax, K);
    CU(cudaMalloc(&d_x, (size_t)Tmax * H * 2));
    CU(cudaMalloc(&d_ids, (size_t)Tmax * K * 4));
    CU(cudaMalloc(&d_w, (size_t)Tmax * K * 4));
    CU(cudaMalloc(&d_out, (size_t)Tmax * H * 4));
    CU(cudaMalloc(&d_ws, wsb));
    CU(cudaMemcpy(d_x, xh, (size_t)Tmax * H * 2, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d_ids, ids, (size_t)Tmax * K * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d_w, w, (size_t)Tmax * K * 4, cudaMemcpyHostToDevice));
    cudaStream_t st;
    CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));

    const mode_case cases[] = {{"persistent", "persistent", 0, 0}, {"auto, 16 GB card", "auto", BUDGET_16G, 0},
                               {"grouped:4", "grouped:4", 0, 0}, {"chunked", "chunked", 0, 0},
                               {"chunked, staged", "chunked", 0, 1}};
    for (int bits = 4; bits <= (quick ? 4 : 8); bits += 4) {
        kr_gpu_moe_geom g;
        KR(kr_gpu_moe_geom_make(E, H, I, bits, 128, &g));
        uint8_t **host = malloc(NL * sizeof *host);
        for (int l = 0; l < NL; l++) {
            host[l] = aligned_alloc(4096, (size_t)g.layer_bytes);
            if (!host[l]) {
                fprintf(stderr, "out of host memory\n");
                return 1;
            }
            if (l == 0) {
                uint64_t *q = (uint64_t *)host[0];
                for (size_t i = 0; i < g.layer_bytes / 8; i++)
                    q[i] = next();
                for (int j = 1; j < 4; j += 2) { /* scales: bf16 in [0.002, 0.004): activations stay O(1) */
                    uint16_t *s = (uint16_t *)(host[0] + g.off[j]);
                    for (uint64_t i = 0; i < g.expert_bytes[j] * E / 2; i++)
                        s[i] = kr_f32_to_bf16(0.002f + 0.002f * (float)(next() >> 11) * (1.0f / 9007199254740992.0f));
                }
            } else {
                memcpy(host[l], host[0], (size_t)g.layer_bytes);
            }
            CU(cudaHostRegister(host[l], (size_t)g.layer_bytes, cudaHostRegisterDefault));
        }
        printf("\nint%d g128: %d MoE layers x %.1f MiB = %.2f GiB of experts\n", bits, NL, g.layer_bytes / 1048576.0,
               NL * (double)g.layer_bytes / 1073741824.0);
        for (int ti = 0; ti < nT; ti++) {
            int64_t T = Ts[ti];
            for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
                if (cases[ci].staged && (bits != 4 || T != 10240))
                    continue;
                kr_gpu_experts_config cfg;
                memset(&cfg, 0, sizeof cfg);
                cfg.no_register = cases[ci].staged;
                KR(kr_expert_mode_parse(cases[ci].mode, &cfg.mode));
                cfg.geom = g;
                cfg.n_layers = NL;
                cfg.host = (const uint8_t *const *)host;
                cfg.vram_budget = (int64_t)(cases[ci].budget_gib * 1073741824.0);
                cfg.quiet = 1;
                kr_gpu_experts *x;
                if (kr_gpu_experts_create(&cfg, &x) != KR_OK) {
                    printf("  T=%-6lld %-18s: %s\n", (long long)T, cases[ci].label, kr_error());
                    continue;
                }
                double ms[PASSES + 1];
                kr_gpu_experts_stats s0 = {0}, s1;
                for (int pass = 0; pass <= PASSES; pass++) {
                    if (pass == 1)
                        KR(kr_gpu_experts_stats_get(x, &s0));
                    CU(cudaEventRecord(e0, st));
                    for (int l = 0; l < NL; l++) {
                        kr_gpu_moe_layer L;
                        KR(kr_gpu_experts_acquire(x, l, st, &L));
                        KR(kr_gpu_moe_forward(&L, d_x, T, d_ids, d_w, K, d_out, d_ws, wsb, 0, st));
                        KR(kr_gpu_experts_release(x, l, st));
                    }
                    CU(cudaEventRecord(e1, st));
                    CU(cudaEventSynchronize(e1));
                    float f;
                    CU(cudaEventElapsedTime(&f, e0, e1));
                    ms[pass] = f;
                }
                CU(cudaGetLastError());
                KR(kr_gpu_experts_stats_get(x, &s1));
                qsort(ms + 1, PASSES, sizeof *ms, cmpd);
                double steady = ms[1 + PASSES / 2];
                uint64_t bytes = s1.bytes_copied - s0.bytes_copied;
                double cms = s1.copy_ms - s0.copy_ms, gbps = cms > 0 ? bytes / (cms * 1e6) : 0;
                char mname[32];
                kr_expert_mode_str(&s1.mode, mname, sizeof mname);
                printf("  T=%-6lld %-18s -> %-12s %5.2f GiB VRAM | cold pass %8.1f ms | steady %8.1f ms %9.0f tok/s |"
                       " copied %6.2f GB/pass at %5.1f GB/s (%.2f of cudaMemcpy)\n",
                       (long long)T, cases[ci].label, mname, s1.vram_bytes / 1073741824.0, ms[0], steady,
                       T / (steady * 1e-3), bytes / 1e9 / PASSES, gbps, gbps / h2d);
                fflush(stdout);
                kr_gpu_experts_destroy(x);
            }
        }
        for (int l = 0; l < NL; l++) {
            cudaHostUnregister(host[l]);
            free(host[l]);
        }
        free(host);
    }
    free(xh);
    free(ids);
    free(w);
    return 0;
}
