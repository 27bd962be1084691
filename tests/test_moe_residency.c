/* Expert residency modes (backend/cuda/moe_residency.h) on a GPU. A few synthetic MoE layers (small
 * shapes, random INT4 g64 and INT8 g32 experts quantized by the CPU quantizer) are written to a GPU
 * expert cache file (moe_cache.h) and mapped; its layer blocks are the host copies. kr_gpu_moe_forward
 * runs through MoE layers 0..L-1 in sequence, each layer's fp32 output RMS-normalized and converted to
 * bf16 as the next layer's input, in every mode: persistent, grouped:2, chunked, auto under VRAM budgets that force
 * grouped and chunked, the staged (unpinned) copy path, and a forced allocation failure that must fall
 * back from persistent to grouped. Each pass runs twice (the second needs the wrap-around prefetch),
 * once layer-major and once group-major over two token chunks (how a prefill runs a group).
 *
 * Checks: every mode's outputs equal persistent's within 1e-4 relative L2 (the only difference allowed
 * is the fp32-atomics order of moe_gemm.h, ~1e-7, which can flip a rare bf16 rounding of a layer's
 * input); every layer's output matches a float CPU reference on the same quantized weights and the
 * same (downloaded) bf16 input within 1e-2 (the bound and its budget are test_moe_gpu's); copy counts,
 * bytes and a positive copy rate in the stats; no misses when layers are used in order; misuse
 * (moving two groups on with a layer still acquired, releasing a layer not acquired) is refused.
 * Exits 77 without a CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/quant.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/moe_cache.h"
#include "backend/cuda/moe_residency.h"
#include "cuda_test.h"
#include "moe_ref.h"
#include "tmpdir.h"

enum { L = 6, E = 8, K = 2, T = 96 };
static const int64_t H = 128, I = 128;

static unsigned long long rng = 0x2545F4914F6CDD1Dull;

typedef struct {
    kr_ecache_key key;
    kr_qexpert *ex;  /* [L * E] CPU quantization */
    float *w13f, *downf; /* dequantized [L][E][2I][H], [L][E][H][I] */
} weights;

static kr_status rows(void *ctx, int l, int e, int which, int64_t row, float *out) {
    (void)ctx, (void)l, (void)e, (void)which, (void)row, (void)out;
    return kr_fail(KR_ERR_ARG, "test: rows are not used (the CPU quantization matches)");
}

static void make_weights(int bits, int gs, weights *w) {
    w->key = (kr_ecache_key){bits, gs, L, E, H, I, 0x77ull + (uint64_t)bits};
    w->ex = calloc(L * E, sizeof *w->ex);
    w->w13f = malloc((size_t)L * E * 2 * I * H * sizeof(float));
    w->downf = malloc((size_t)L * E * H * I * sizeof(float));
    float *x = malloc((size_t)(H > I ? H : I) * sizeof *x);
    for (int i = 0; i < L * E; i++) {
        kr_qexpert *e = &w->ex[i];
        e->inter = I;
        kr_qmatrix_shape(&e->w13, 2 * I, H, bits, gs);
        kr_qmatrix_shape(&e->down, H, I, bits, gs);
        e->w13.q = malloc((size_t)kr_qmatrix_qbytes(&e->w13));
        e->w13.s = malloc((size_t)kr_qmatrix_sbytes(&e->w13));
        e->down.q = malloc((size_t)kr_qmatrix_qbytes(&e->down));
        e->down.s = malloc((size_t)kr_qmatrix_sbytes(&e->down));
        for (int64_t r = 0; r < 2 * I; r++) {
            for (int64_t j = 0; j < H; j++)
                x[j] = 1.5f / sqrtf((float)H) * test_frand(&rng);
            kr_quantize_row(&e->w13, r, x);
            kr_dequantize_row(&e->w13, r, w->w13f + ((size_t)i * 2 * I + r) * H);
        }
        for (int64_t r = 0; r < H; r++) {
            for (int64_t j = 0; j < I; j++)
                x[j] = 1.5f / sqrtf((float)I) * test_frand(&rng);
            kr_quantize_row(&e->down, r, x);
            kr_dequantize_row(&e->down, r, w->downf + ((size_t)i * H + r) * I);
        }
    }
    free(x);
}

static void free_weights(weights *w) {
    for (int i = 0; i < L * E; i++) {
        free((void *)w->ex[i].w13.q);
        free((void *)w->ex[i].w13.s);
        free((void *)w->ex[i].down.q);
        free((void *)w->ex[i].down.s);
    }
    free(w->ex);
    free(w->w13f);
    free(w->downf);
}

/* out = sum_k w_k down(silu(gate x) * up x) for one token of layer l, in float */
static void reference_token(const weights *w, int l, const float *x, const int32_t *ids, const float *wt, float *out) {
    float h[256];
    moe_reference_token(w->w13f + (size_t)l * E * 2 * I * H, w->downf + (size_t)l * E * H * I, H, I, E, K, x, ids, wt, h,
                        out);
}

typedef struct {
    int32_t *ids;  /* device [L][T][K] */
    float *wt;     /* device [L][T][K] */
    uint16_t *x;   /* device bf16 [L + 1][T][H]: x[0] input, x[l + 1] = bf16(out[l]) */
    float *out;    /* device [L][T][H] */
    float *norm;   /* device [T][H] scratch */
    float *ones;   /* device [H]: the norm weight */
    void *ws;
    size_t ws_bytes;
    kr_cuda_stream st;
} run_bufs;

/* one MoE layer on tokens [t0, t0 + n) */
static void layer(kr_gpu_experts *x, run_bufs *b, int l, int64_t t0, int64_t n) {
    kr_gpu_moe_layer Lw;
    CK(kr_gpu_experts_acquire(x, l, b->st, &Lw));
    CK(kr_gpu_moe_forward(&Lw, b->x + ((size_t)l * T + t0) * H, n, b->ids + ((size_t)l * T + t0) * K,
                          b->wt + ((size_t)l * T + t0) * K, K, b->out + ((size_t)l * T + t0) * H, b->ws, b->ws_bytes, 0,
                          b->st));
    CK(kr_gpu_experts_release(x, l, b->st));
    /* the next layer's input: RMS-normalized (as a model's pre-MoE norm does; without it the
     * activations shrink layer after layer) and rounded to bf16; out[l] itself stays as computed */
    float *nx = b->norm + (size_t)t0 * H;
    CK(kr_cuda_copy(nx, b->out + ((size_t)l * T + t0) * H, (size_t)(n * H) * 4, b->st));
    CK(kr_cuda_rmsnorm(KR_CU_F32, nx, nx, b->ones, n, H, 1e-6f, b->st));
    CK(kr_cuda_convert(KR_CU_BF16, b->x + ((size_t)(l + 1) * T + t0) * H, KR_CU_F32, nx, n * H, b->st));
}

/* pass 0: layer-major over all tokens; pass 1: group-major over two chunks of tokens */
static void forward(kr_gpu_experts *x, run_bufs *b, int pass, int group) {
    CK(kr_cuda_fill_nan(b->out, KR_CU_F32, (int64_t)L * T * H, b->st));
    if (pass == 0) {
        for (int l = 0; l < L; l++)
            layer(x, b, l, 0, T);
    } else {
        for (int g0 = 0; g0 < L; g0 += group)
            for (int c = 0; c < 2; c++)
                for (int l = g0; l < g0 + group && l < L; l++)
                    layer(x, b, l, c * (T / 2), T / 2);
    }
    CK(kr_cuda_stream_sync(b->st));
}

static double rel_l2(const float *a, const float *r, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        d += ((double)a[i] - r[i]) * ((double)a[i] - r[i]);
        s += (double)r[i] * r[i];
    }
    return sqrt(d / (s + 1e-30));
}

typedef struct {
    const char *name, *mode;
    int64_t budget_layers; /* VRAM budget in layer blocks; 0: free memory */
    int no_register;
    int64_t alloc_limit_layers;
    kr_expert_mode_kind want;
    int want_group;
} mode_case;

static void check_bits(const char *dir, int bits, int gs) {
    weights w;
    make_weights(bits, gs, &w);
    char name[64], path[600];
    kr_gcache_file_name(bits, gs, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    kr_gcache c;
    kr_gcache_source src = {w.ex, rows, NULL};
    CK(kr_gcache_open(path, &w.key, &src, &c));
    CHECK(c.from_cpu, "int%d: cache not packed from the CPU quantization", bits);
    int64_t lb = (int64_t)c.geom.layer_bytes;

    /* routing and inputs */
    int32_t *ids = malloc((size_t)L * T * K * sizeof *ids);
    float *wt = malloc((size_t)L * T * K * sizeof *wt);
    uint16_t *x0 = malloc((size_t)T * H * 2);
    for (int i = 0; i < L * T; i++) {
        ids[i * K] = (int)((test_frand(&rng) + 1) * 0.5f * E) % E;
        ids[i * K + 1] = (ids[i * K] + 1 + (int)((test_frand(&rng) + 1) * 0.5f * (E - 1)) % (E - 1)) % E;
        for (int k = 0; k < K; k++)
            wt[i * K + k] = 0.3f + 0.35f * (test_frand(&rng) + 1);
    }
    for (int64_t i = 0; i < T * H; i++)
        x0[i] = kr_f32_to_bf16(test_frand(&rng));
    run_bufs b;
    b.ids = dev_upload(ids, (size_t)L * T * K * 4);
    b.wt = dev_upload(wt, (size_t)L * T * K * 4);
    b.x = dev_alloc((size_t)(L + 1) * T * H * 2);
    CK(kr_cuda_to_device(b.x, x0, (size_t)T * H * 2, NULL));
    b.out = dev_alloc((size_t)L * T * H * 4);
    b.norm = dev_alloc((size_t)T * H * 4);
    float onesh[256];
    for (int i = 0; i < H; i++)
        onesh[i] = 1.0f;
    b.ones = dev_upload(onesh, (size_t)H * 4);
    b.ws_bytes = kr_gpu_moe_ws_bytes(E, I, T, K);
    b.ws = dev_alloc(b.ws_bytes);
    CK(kr_cuda_stream_create(&b.st));
    CK(kr_cuda_stream_sync(NULL));

    mode_case cases[] = {
        {"persistent", "persistent", 0, 0, 0, KR_EXPERTS_PERSISTENT, L},
        {"grouped:2", "grouped:2", 0, 0, 0, KR_EXPERTS_GROUPED, 2},
        {"chunked", "chunked", 0, 0, 0, KR_EXPERTS_CHUNKED, 1},
        {"auto, budget 5 layers", "auto", 5, 0, 0, KR_EXPERTS_GROUPED, 2},
        {"auto, budget 3 layers", "auto", 3, 0, 0, KR_EXPERTS_CHUNKED, 1},
        {"auto, no budget", "auto", 0, 0, 0, KR_EXPERTS_PERSISTENT, L},
        {"grouped:2 staged", "grouped:2", 0, 1, 0, KR_EXPERTS_GROUPED, 2},
        {"persistent, allocation fails", "persistent", 0, 0, 3, KR_EXPERTS_GROUPED, 2},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    float *base = malloc((size_t)L * T * H * 4), *got = malloc((size_t)L * T * H * 4);
    for (int ci = 0; ci < nc; ci++) {
        const mode_case *m = &cases[ci];
        kr_gpu_experts_config cfg;
        memset(&cfg, 0, sizeof cfg);
        CK(kr_expert_mode_parse(m->mode, &cfg.mode));
        cfg.geom = c.geom;
        cfg.n_layers = L;
        cfg.host = c.layer;
        cfg.vram_budget = m->budget_layers * lb;
        cfg.no_register = m->no_register;
        cfg.alloc_limit = m->alloc_limit_layers * lb;
        kr_gpu_experts *x;
        CK(kr_gpu_experts_create(&cfg, &x));
        kr_gpu_experts_stats s0;
        CK(kr_gpu_experts_stats_get(x, &s0));
        CHECK(s0.mode.kind == m->want && s0.mode.group == m->want_group, "int%d %s: mode %d group %d, expected %d %d",
              bits, m->name, s0.mode.kind, s0.mode.group, m->want, m->want_group);
        CHECK(s0.fallbacks == (m->alloc_limit_layers ? 1 : 0), "int%d %s: %d fallbacks", bits, m->name, s0.fallbacks);
        /* pinning a read-only file mapping needs cudaHostRegisterReadOnly support; without it the
         * residency stages (correct, slower): reported, not failed */
        CHECK(!m->no_register || !s0.registered, "int%d %s: no_register but pinned", bits, m->name);
        if (!m->no_register && !s0.registered)
            printf("int%d %s: NOTE: the mapped cache could not be pinned; staged copies\n", bits, m->name);
        for (int pass = 0; pass < 2; pass++) {
            forward(x, &b, pass, s0.mode.group);
            CK(kr_cuda_to_host(got, b.out, (size_t)L * T * H * 4, NULL));
            CK(kr_cuda_stream_sync(NULL));
            if (ci == 0 && pass == 0) {
                memcpy(base, got, (size_t)L * T * H * 4);
                /* the CPU reference on each layer's actual bf16 input */
                uint16_t *xin = malloc((size_t)(L + 1) * T * H * 2);
                float *xf = malloc((size_t)T * H * 4), *ref = malloc((size_t)T * H * 4);
                CK(kr_cuda_to_host(xin, b.x, (size_t)(L + 1) * T * H * 2, NULL));
                CK(kr_cuda_stream_sync(NULL));
                for (int l = 0; l < L; l++) {
                    for (int64_t i = 0; i < T * H; i++)
                        xf[i] = kr_bf16_to_f32(xin[(size_t)l * T * H + i]);
                    for (int t = 0; t < T; t++)
                        reference_token(&w, l, xf + t * H, ids + ((size_t)l * T + t) * K, wt + ((size_t)l * T + t) * K,
                                        ref + t * H);
                    double e = rel_l2(got + (size_t)l * T * H, ref, T * H);
                    printf("int%d g%d layer %d: rel L2 vs CPU reference %.2e\n", bits, gs, l, e);
                    CHECK(e <= 1e-2, "int%d layer %d: relative error %.3g vs the CPU reference", bits, l, e);
                }
                free(xin);
                free(xf);
                free(ref);
            }
            double d = rel_l2(got, base, (int64_t)L * T * H);
            CHECK(d <= 1e-4, "int%d %s pass %d: differs from persistent by %.3g", bits, m->name, pass, d);
            printf("int%d g%d %-30s pass %d: rel L2 vs persistent %.2e\n", bits, gs, m->name, pass, d);
        }
        kr_gpu_experts_stats st;
        CK(kr_gpu_experts_stats_get(x, &st));
        int G = (L + st.mode.group - 1) / st.mode.group;
        /* create copies group 0; each new group prefetches the next (wrapping): G per pass */
        int64_t want_copies = st.mode.kind == KR_EXPERTS_PERSISTENT ? 1 : 1 + 2 * (int64_t)G;
        CHECK(st.copies == want_copies && st.misses == 0, "int%d %s: %lld copies (expected %lld), %lld misses", bits,
              m->name, (long long)st.copies, (long long)want_copies, (long long)st.misses);
        /* persistent: every layer once; else group 0 at create, then every layer once per pass */
        CHECK(st.bytes_copied == (uint64_t)(st.mode.kind == KR_EXPERTS_PERSISTENT ? L : st.mode.group + 2 * L) * (uint64_t)lb,
              "int%d %s: %llu bytes copied", bits, m->name, (unsigned long long)st.bytes_copied);
        CHECK(st.copy_gbps > 0 && st.copy_ms > 0, "int%d %s: copy rate %.3f GB/s", bits, m->name, st.copy_gbps);
        CHECK(st.vram_bytes == kr_expert_mode_bytes(&st.mode, L, lb), "int%d %s: %lld bytes of VRAM", bits, m->name,
              (long long)st.vram_bytes);
        printf("int%d g%d %-30s %lld copies, %.1f MB, %.2f GB/s, %s\n", bits, gs, m->name, (long long)st.copies,
               st.bytes_copied / 1e6, st.copy_gbps, st.registered ? "pinned" : "staged");
        if (st.mode.kind == KR_EXPERTS_CHUNKED) { /* misuse: layer 0 held while moving to layer 2 */
            kr_gpu_moe_layer Lw;
            CK(kr_gpu_experts_acquire(x, 0, b.st, &Lw));
            CK(kr_gpu_experts_acquire(x, 1, b.st, &Lw));
            CHECK(kr_gpu_experts_acquire(x, 2, b.st, &Lw) == KR_ERR_ARG && strstr(kr_error(), "release"),
                  "acquire two groups on with a layer held: %s", kr_error());
            CK(kr_gpu_experts_release(x, 0, b.st));
            CK(kr_gpu_experts_release(x, 1, b.st));
            CHECK(kr_gpu_experts_release(x, 1, b.st) == KR_ERR_ARG && strstr(kr_error(), "not acquired"),
                  "release twice: %s", kr_error());
            CHECK(kr_gpu_experts_acquire(x, L, b.st, &Lw) == KR_ERR_ARG, "layer out of range");
        }
        kr_gpu_experts_destroy(x);
    }
    /* an explicit mode that does not fit the budget is refused with the sizes */
    kr_gpu_experts_config cfg;
    memset(&cfg, 0, sizeof cfg);
    CK(kr_expert_mode_parse("persistent", &cfg.mode));
    cfg.geom = c.geom, cfg.n_layers = L, cfg.host = c.layer, cfg.vram_budget = 3 * lb;
    kr_gpu_experts *x;
    CHECK(kr_gpu_experts_create(&cfg, &x) == KR_ERR_ARG && strstr(kr_error(), "persistent"), "persistent over budget: %s",
          kr_error());
    free(base);
    free(got);
    free(ids);
    free(wt);
    free(x0);
    kr_cuda_free(b.ids);
    kr_cuda_free(b.wt);
    kr_cuda_free(b.x);
    kr_cuda_free(b.out);
    kr_cuda_free(b.norm);
    kr_cuda_free(b.ones);
    kr_cuda_free(b.ws);
    kr_cuda_stream_destroy(b.st);
    kr_gcache_close(&c);
    free_weights(&w);
}

int main(void) {
    cuda_test_require_device("test_moe_residency");
    char dir[512];
    if (!test_tmpdir(dir, sizeof dir))
        return 1;
    check_bits(dir, 4, 64);
    check_bits(dir, 8, 32);
    test_rmtree(dir);
    return test_summary("test_moe_residency");
}
