/* GPU attention benchmark on the H200 (or any CUDA GPU): causal prefill at 1K/10K/32K tokens and decode
 * after 32K cached tokens, for the attention shapes of configs/ files (GQA as written; DeepSeek MLA as its
 * prefill form, 192/128 heads after kv_b expansion, and its absorbed decode over the 576-wide latent).
 * Prints TFLOP/s against the dense BF16 ceiling it measures first (a cuBLASLt 8192^3 GEMM) and the
 * datasheet's 989, and decode GB/s against a measured device-to-device copy (decode timed as CUDA-graph
 * replays, the way a decode step runs it; prefill timed per call with events).
 * Usage: krasis_cuda_attention_bench CONFIG.json... [--out FILE.md] */
#include <cuda_runtime_api.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gemm.h"
#include "model/config.h"

#define CK(expr)                                                                              \
    do {                                                                                      \
        kr_status ck_s_ = (expr);                                                             \
        if (ck_s_ != KR_OK) {                                                                 \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, kr_error()); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static FILE *md;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (md) {
        va_start(ap, fmt);
        vfprintf(md, fmt, ap);
        va_end(ap);
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* median milliseconds of `reps` timed runs after `warm` untimed ones */
typedef kr_status (*run_fn)(void *ctx);
static float time_ms(run_fn f, void *ctx, int warm, int reps) {
    kr_cuda_event a, b;
    CK(kr_cuda_event_create(&a));
    CK(kr_cuda_event_create(&b));
    for (int i = 0; i < warm; i++)
        CK(f(ctx));
    float t[64];
    for (int i = 0; i < reps; i++) {
        CK(kr_cuda_event_record(a, NULL));
        CK(f(ctx));
        CK(kr_cuda_event_record(b, NULL));
        CK(kr_cuda_event_elapsed(a, b, &t[i]));
    }
    kr_cuda_event_destroy(a);
    kr_cuda_event_destroy(b);
    qsort(t, (size_t)reps, sizeof *t, cmp_float);
    return t[reps / 2];
}

/* random bf16 in [-amp, amp) on the device, through a host buffer (no zeros: they time faster) */
static void *rand_bf16(size_t n, float amp, unsigned long long *st) {
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        *st ^= *st << 13, *st ^= *st >> 7, *st ^= *st << 17;
        float f = ((float)((*st >> 40) & 0xffffff) / 16777216.0f * 2 - 1) * amp;
        h[i] = kr_cuda_f32_to_bf16_host(f);
    }
    void *d;
    CK(kr_cuda_malloc(&d, n * 2, "bench data"));
    CK(kr_cuda_to_device(d, h, n * 2, NULL));
    CK(kr_cuda_stream_sync(NULL));
    free(h);
    return d;
}

typedef struct {
    kr_cuda_attn a;
    void *ws;
    size_t wsb;
} attn_ctx;
static kr_status run_attn(void *c) {
    attn_ctx *x = c;
    return kr_cuda_attention(&x->a, x->ws, x->wsb, NULL);
}

typedef struct {
    kr_cuda_blas *h;
    void *x, *w, *y;
    int64_t n;
} gemm_ctx;
static kr_status run_gemm(void *c) {
    gemm_ctx *g = c;
    return kr_cuda_gemm_bf16(g->h, KR_CU_BF16, g->y, g->x, g->w, g->n, g->n, g->n, 1, 0, NULL);
}

typedef struct {
    void *dst, *src;
    size_t bytes;
} copy_ctx;
static kr_status run_copy(void *c) {
    copy_ctx *x = c;
    return kr_cuda_copy(x->dst, x->src, x->bytes, NULL);
}

static double gemm_peak, copy_gbs;

static void ceilings(void) {
    unsigned long long st = 42;
    gemm_ctx g = {0};
    g.n = 8192;
    CK(kr_cuda_blas_create(&g.h));
    g.x = rand_bf16((size_t)g.n * g.n, 1, &st);
    g.w = rand_bf16((size_t)g.n * g.n, 1, &st);
    CK(kr_cuda_malloc(&g.y, (size_t)g.n * g.n * 2, "bench gemm out"));
    float ms = time_ms(run_gemm, &g, 3, 10);
    gemm_peak = 2.0 * g.n * g.n * g.n / (ms * 1e-3) / 1e12;
    kr_cuda_free(g.x), kr_cuda_free(g.w), kr_cuda_free(g.y);
    kr_cuda_blas_destroy(g.h);
    copy_ctx c = {0};
    c.bytes = (size_t)4 << 30;
    CK(kr_cuda_malloc(&c.src, c.bytes, "bench copy"));
    CK(kr_cuda_malloc(&c.dst, c.bytes, "bench copy"));
    CK(kr_cuda_memset(c.src, 0x3c, c.bytes, NULL));
    ms = time_ms(run_copy, &c, 2, 10);
    copy_gbs = 2.0 * c.bytes / (ms * 1e-3) / 1e9; /* bytes read + written */
    kr_cuda_free(c.src), kr_cuda_free(c.dst);
}

typedef struct {
    char name[64];
    int64_t H, Hkv, qk, vd;                /* prefill form */
    int mla;                               /* decode in the absorbed form over the latent */
    int64_t layers, latent_w, latent_v;    /* MLA: kv_lora_rank + rope, kv_lora_rank */
} shape;

static int load_shape(const char *path, shape *s) {
    json_t *j = json_load_file(path, 0, NULL);
    if (!j) {
        fprintf(stderr, "cannot read %s\n", path);
        return 0;
    }
    kr_hparams hp;
    kr_status st = kr_hparams_from_json(j, path, &hp);
    json_decref(j);
    if (st != KR_OK) {
        fprintf(stderr, "%s\n", kr_error());
        return 0;
    }
    const char *slash = strrchr(path, '/');
    snprintf(s->name, sizeof s->name, "%s", slash ? slash + 1 : path);
    char *dot = strstr(s->name, ".json");
    if (dot)
        *dot = 0;
    s->H = hp.n_heads;
    s->layers = hp.n_layers;
    s->mla = hp.family == KR_FAMILY_DEEPSEEK2;
    if (s->mla) {
        s->Hkv = hp.n_heads;
        s->qk = hp.qk_nope_dim + hp.qk_rope_dim;
        s->vd = hp.v_head_dim;
        s->latent_w = hp.kv_lora_rank + hp.qk_rope_dim;
        s->latent_v = hp.kv_lora_rank;
    } else {
        s->Hkv = hp.n_kv_heads;
        s->qk = s->vd = hp.head_dim;
    }
    kr_hparams_free(&hp);
    return 1;
}

static void bench_prefill(const shape *s, int64_t T) {
    unsigned long long st = 7;
    attn_ctx c = {0};
    void *q = rand_bf16((size_t)(T * s->H * s->qk), 2, &st), *k = rand_bf16((size_t)(T * s->Hkv * s->qk), 2, &st),
         *v = rand_bf16((size_t)(T * s->Hkv * s->vd), 1, &st), *o;
    CK(kr_cuda_malloc(&o, (size_t)(T * s->H * s->vd) * 2, "bench out"));
    kr_cuda_attn a = {T, s->H, s->Hkv, s->qk, s->vd, 0, 1.0f / sqrtf((float)s->qk),
                      {q, KR_CU_BF16, s->H * s->qk, s->qk, NULL, 0},
                      {k, KR_CU_BF16, s->Hkv * s->qk, s->qk, NULL, 0},
                      {v, KR_CU_BF16, s->Hkv * s->vd, s->vd, NULL, 0},
                      {o, KR_CU_BF16, s->H * s->vd, s->vd, NULL, 0}};
    c.a = a;
    float ms = time_ms(run_attn, &c, 2, T >= 16384 ? 5 : 11);
    double pairs = (double)T * (T + 1) / 2; /* causal: query t sees t + 1 keys */
    double flop = 2.0 * s->H * (s->qk + s->vd) * pairs;
    double tf = flop / (ms * 1e-3) / 1e12;
    say("| %s | prefill | %lld | %lld/%lld x %lld/%lld | %s | %.3f | %.1f | %.1f%% | %.1f%% |\n", s->name,
        (long long)T, (long long)s->H, (long long)s->Hkv, (long long)s->qk, (long long)s->vd,
        kr_cuda_attention_path(&c.a), ms, tf, 100 * tf / gemm_peak, 100 * tf / 989.0);
    kr_cuda_free(q), kr_cuda_free(k), kr_cuda_free(v), kr_cuda_free(o);
}

/* Milliseconds of one attention call replayed from a CUDA graph (median of 7 runs of 20 replays), or -1
 * when capture fails. */
static float graph_ms(attn_ctx *c) {
    cudaStream_t st;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    if (cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess)
        return -1;
    float best[7];
    int ok = cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess &&
             kr_cuda_attention(&c->a, c->ws, c->wsb, (kr_cuda_stream)st) == KR_OK &&
             cudaStreamEndCapture(st, &g) == cudaSuccess && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess;
    if (ok) {
        cudaEvent_t a, b;
        cudaEventCreate(&a);
        cudaEventCreate(&b);
        for (int i = 0; i < 5; i++)
            cudaGraphLaunch(ge, st);
        for (int r = 0; r < 7; r++) {
            cudaEventRecord(a, st);
            for (int i = 0; i < 20; i++)
                cudaGraphLaunch(ge, st);
            cudaEventRecord(b, st);
            cudaEventSynchronize(b);
            cudaEventElapsedTime(&best[r], a, b);
            best[r] /= 20;
        }
        qsort(best, 7, sizeof *best, cmp_float);
        cudaEventDestroy(a);
        cudaEventDestroy(b);
        cudaGraphExecDestroy(ge);
        cudaGraphDestroy(g);
    } else {
        fprintf(stderr, "graph capture failed: %s\n", cudaGetErrorString(cudaGetLastError()));
    }
    cudaStreamDestroy(st);
    return ok ? best[3] : -1;
}

static void bench_decode(const shape *s, int64_t ctx, kr_cuda_dtype dt) {
    unsigned long long st = 9;
    int64_t kvh = s->mla ? 1 : s->Hkv, qk = s->mla ? s->latent_w : s->qk, vd = s->mla ? s->latent_v : s->vd;
    kr_cuda_kv_shape sh = {1, ctx + 1, kvh, qk, vd, s->mla, dt};
    kr_cuda_kv kv;
    CK(kr_cuda_kv_create(&kv, &sh));
    void *src = rand_bf16((size_t)((ctx + 1) * kvh * (qk > vd ? qk : vd)), 2, &st);
    kr_cuda_view kw = {src, KR_CU_BF16, kvh * qk, qk, NULL, 0}, vw = {src, KR_CU_BF16, kvh * vd, vd, NULL, 0};
    CK(kr_cuda_kv_write(&kv, 0, 0, ctx + 1, &kw, s->mla ? NULL : &vw, NULL));
    void *q = rand_bf16((size_t)(s->H * qk), 2, &st), *o;
    CK(kr_cuda_malloc(&o, (size_t)(s->H * vd) * 4, "bench out"));
    attn_ctx c = {0};
    kr_cuda_attn a = {1, s->H, kvh, qk, vd, ctx, 1.0f / sqrtf((float)qk), {q, KR_CU_BF16, s->H * qk, qk, NULL, 0},
                      kr_cuda_kv_k_view(&kv, 0), kr_cuda_kv_v_view(&kv, 0), {o, KR_CU_F32, s->H * vd, vd, NULL, 0}};
    c.a = a;
    c.wsb = kr_cuda_attention_ws_bytes(&c.a);
    if (c.wsb)
        CK(kr_cuda_malloc(&c.ws, c.wsb, "bench ws"));
    float ms = time_ms(run_attn, &c, 3, 21), call_ms = ms;
    float gms = graph_ms(&c);
    if (gms > 0)
        ms = gms; /* a decode step replays a graph: launch gaps are not the kernel's */
    kr_cuda_kv_shape one = sh;
    double bytes = (double)kr_cuda_kv_bytes_per_token(&one) * (ctx + 1);
    double gbs = bytes / (ms * 1e-3) / 1e9;
    say("| %s | decode %s%s | %lld | %lld/%lld x %lld/%lld | %s | %.4f (%.4f a call) | %.0f GB/s | %.1f%% of copy | %lld B/token/layer |\n",
        s->name, kr_cuda_dtype_name(dt), s->mla ? " (MLA absorbed)" : "", (long long)ctx, (long long)s->H,
        (long long)kvh, (long long)qk, (long long)vd, kr_cuda_attention_path(&c.a), ms, call_ms, gbs, 100 * gbs / copy_gbs,
        (long long)kr_cuda_kv_bytes_per_token(&one));
    kr_cuda_free(c.ws), kr_cuda_free(q), kr_cuda_free(o), kr_cuda_free(src);
    kr_cuda_kv_destroy(&kv);
}

int main(int argc, char **argv) {
    const char *out = NULL;
    const char *cfgs[16];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (n < 16)
            cfgs[n++] = argv[i];
    }
    if (n == 0) {
        fprintf(stderr, "usage: %s CONFIG.json... [--out FILE.md]\n", argv[0]);
        return 2;
    }
    if (kr_cuda_device_count() == 0) {
        printf("no CUDA device (%s)\n", kr_cuda_no_device_reason());
        return 77;
    }
    kr_cuda_device_info info;
    CK(kr_cuda_device_query(0, &info));
    if (out)
        md = fopen(out, "w");
    ceilings();
    say("GPU: %s, sm_%d%d, %d SMs, %.1f GiB; driver %d, runtime %d\n\n", info.name, info.cc_major, info.cc_minor,
        info.sm_count, info.total_bytes / 1073741824.0, info.driver_version, info.runtime_version);
    say("Measured ceilings: cuBLASLt bf16 8192^3 GEMM %.0f TFLOP/s; device copy %.0f GB/s (read + write)\n\n",
        gemm_peak, copy_gbs);
    say("| shape | phase | tokens | heads q/kv x dims qk/v | kernel | ms | rate | of GEMM peak | of 989 |\n");
    say("|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        shape s;
        if (!load_shape(cfgs[i], &s))
            return 1;
        int64_t Ts[] = {1024, 10240, 32768};
        for (int j = 0; j < 3; j++)
            bench_prefill(&s, Ts[j]);
    }
    say("\n| shape | phase | cached tokens | heads q/kv x dims qk/v | kernel | ms graph replay (per call) | KV read | of copy | KV bytes |\n");
    say("|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        shape s;
        load_shape(cfgs[i], &s);
        bench_decode(&s, 32768, KR_CU_BF16);
        bench_decode(&s, 32768, KR_CU_FP8);
    }
    if (md)
        fclose(md);
    return 0;
}
