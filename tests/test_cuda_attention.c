/* GPU attention against backend/cpu/attention.c's kr_attend on random inputs: the flash kernel (bf16,
 * head dims 128/128, 192/128, 64/64, with and without a cached prefix), the split-key kernel (decode over
 * long caches, f32/bf16/FP8 inputs, several splits), MLA's absorbed form over the latent cache, KV cache
 * writes (BF16 exact, FP8 bytes and scales exact), KV bytes per token, and refused arguments. The
 * reference always reads the same values the GPU read (bf16-rounded inputs, the cache as stored). */
#include "backend/cpu/attention.h"
#include "backend/cuda/cuda_attention.h"
#include "cuda_test.h"

static unsigned long long seed = 0x0ddba11c0ffee123ull;

/* q [T, H, qk], k [n, Hkv, qk] (k_ts/k_hs strides), v likewise; out [T, H, vd] */
static void ref_attention(const float *q, const float *k, int64_t k_ts, int64_t k_hs, const float *v, int64_t v_ts,
                          int64_t v_hs, int64_t T, int64_t H, int64_t Hkv, int64_t qk, int64_t vd, int64_t pos0,
                          float scale, float *out) {
    float *scores = malloc((size_t)(pos0 + T) * sizeof *scores);
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            int64_t g = h / (H / Hkv);
            kr_attend(q + (t * H + h) * qk, qk, k + g * k_hs, k_ts, v + g * v_hs, v_ts, vd, pos0 + t + 1, scale, scores,
                      out + (t * H + h) * vd);
        }
    free(scores);
}

static kr_cuda_view view(const void *p, kr_cuda_dtype dt, int64_t ts, int64_t hs) {
    kr_cuda_view v = {p, dt, ts, hs, NULL, 0};
    return v;
}

static float *run_attention(kr_cuda_attn *a, const char *want_path) {
    int64_t n_out = a->T * a->n_heads * a->v_dim;
    void *dout = dev_alloc((size_t)n_out * 4);
    CK(kr_cuda_fill_nan(dout, a->out.dt, n_out, NULL));
    a->out = view(dout, a->out.dt, a->n_heads * a->v_dim, a->v_dim);
    size_t wsb = kr_cuda_attention_ws_bytes(a);
    void *ws = wsb ? dev_alloc(wsb) : NULL;
    const char *path = kr_cuda_attention_path(a);
    CHECK(!want_path || !strcmp(path, want_path), "attention path %s, expected %s", path, want_path);
    CK(kr_cuda_attention(a, ws, wsb, NULL));
    CK(kr_cuda_device_sync());
    float *out = download_as_f32(dout, a->out.dt, n_out);
    kr_cuda_free(dout);
    kr_cuda_free(ws);
    return out;
}

/* K/V as plain [pos0 + T, Hkv, dim] tensors of dtype kv_dt (the prefill form) */
static void case_views(const char *name, int64_t T, int64_t H, int64_t Hkv, int64_t qk, int64_t vd, int64_t pos0,
                       kr_cuda_dtype act_dt, kr_cuda_dtype out_dt, int split, const char *want_path, double tol) {
    int64_t n = pos0 + T;
    float *q = rand_vec(T * H * qk, 2.0f, &seed), *k = rand_vec(n * Hkv * qk, 2.0f, &seed),
          *v = rand_vec(n * Hkv * vd, 1.0f, &seed), *ref = malloc((size_t)(T * H * vd) * sizeof *ref);
    if (act_dt == KR_CU_BF16) {
        round_bf16(q, T * H * qk);
        round_bf16(k, n * Hkv * qk);
        round_bf16(v, n * Hkv * vd);
    }
    float scale = 1.0f / sqrtf((float)qk);
    ref_attention(q, k, Hkv * qk, qk, v, Hkv * vd, vd, T, H, Hkv, qk, vd, pos0, scale, ref);
    void *dq = upload_as(q, act_dt, T * H * qk), *dk = upload_as(k, act_dt, n * Hkv * qk),
         *dv = upload_as(v, act_dt, n * Hkv * vd);
    kr_cuda_attn a = {T, H, Hkv, qk, vd, pos0, scale, view(dq, act_dt, H * qk, qk), view(dk, act_dt, Hkv * qk, qk),
                      view(dv, act_dt, Hkv * vd, vd), view(NULL, out_dt, 0, 0)};
    kr_cuda_attention_force_split(split);
    float *out = run_attention(&a, want_path);
    kr_cuda_attention_force_split(0);
    CHECK_REL(out, ref, T * H * vd, tol, "%s (T %lld, pos0 %lld, %lld/%lld heads, %lld/%lld, %s -> %s)", name,
              (long long)T, (long long)pos0, (long long)H, (long long)Hkv, (long long)qk, (long long)vd,
              kr_cuda_dtype_name(act_dt), kr_cuda_dtype_name(out_dt));
    kr_cuda_free(dq), kr_cuda_free(dk), kr_cuda_free(dv);
    free(q), free(k), free(v), free(ref), free(out);
}

/* reads back layer l of the cache as floats (FP8 times its scales): what the kernel sees */
static float *cache_as_f32(const kr_cuda_kv *kv, int64_t l, int is_v, int64_t n) {
    const kr_cuda_kv_shape *s = &kv->shape;
    int64_t dim = is_v ? s->v_dim : s->k_dim, heads = s->n_kv_heads, cnt = n * heads * dim;
    const void *src = is_v ? kv->v[l] : kv->k[l];
    if (s->dt == KR_CU_BF16)
        return download_as_f32(src, KR_CU_BF16, cnt);
    uint8_t *b = malloc((size_t)cnt);
    float *sc = malloc((size_t)(n * heads) * 4), *out = malloc((size_t)cnt * 4);
    dev_download(b, src, (size_t)cnt);
    dev_download(sc, is_v ? kv->v_scale[l] : kv->k_scale[l], (size_t)(n * heads) * 4);
    for (int64_t i = 0; i < cnt; i++)
        out[i] = kr_fp8_e4m3_to_f32(b[i]) * sc[i / dim];
    free(b), free(sc);
    return out;
}

/* The decode form: keys/values written into a KV cache (layer 1 of 2), then T queries after pos0 cached. */
static void case_cache(const char *name, int64_t T, int64_t H, int64_t Hkv, int64_t qk, int64_t vd, int64_t pos0,
                       kr_cuda_dtype kv_dt, int mla, kr_cuda_dtype q_dt, kr_cuda_dtype out_dt, double tol) {
    int64_t n = pos0 + T, kvh = mla ? 1 : Hkv;
    kr_cuda_kv_shape sh = {2, n + 7, kvh, qk, vd, mla, kv_dt};
    kr_cuda_kv kv;
    CK(kr_cuda_kv_create(&kv, &sh));
    float *k = rand_vec(n * kvh * qk, 2.0f, &seed), *v = mla ? NULL : rand_vec(n * kvh * vd, 1.0f, &seed);
    float *q = rand_vec(T * H * qk, 2.0f, &seed);
    if (q_dt == KR_CU_BF16)
        round_bf16(q, T * H * qk);
    float *dk = dev_upload(k, (size_t)(n * kvh * qk) * 4), *dv = mla ? NULL : dev_upload(v, (size_t)(n * kvh * vd) * 4);
    /* written in two calls: the prompt, then the new tokens (positions continue) */
    int64_t first = pos0 > 0 ? pos0 : n;
    kr_cuda_view kvw = view(dk, KR_CU_F32, kvh * qk, qk), vvw = view(dv, KR_CU_F32, kvh * vd, vd);
    CK(kr_cuda_kv_write(&kv, 1, 0, first, &kvw, mla ? NULL : &vvw, NULL));
    if (first < n) {
        kr_cuda_view k2 = view(dk + first * kvh * qk, KR_CU_F32, kvh * qk, qk);
        kr_cuda_view v2 = view(mla ? NULL : dv + first * kvh * vd, KR_CU_F32, kvh * vd, vd);
        CK(kr_cuda_kv_write(&kv, 1, first, n - first, &k2, mla ? NULL : &v2, NULL));
    }
    CK(kr_cuda_device_sync());
    float *kc = cache_as_f32(&kv, 1, 0, n), *vc = mla ? kc : cache_as_f32(&kv, 1, 1, n);
    if (kv_dt == KR_CU_BF16) { /* the cache holds exactly bf16(x) */
        int64_t bad = 0;
        for (int64_t i = 0; i < n * kvh * qk; i++)
            bad += kc[i] != kr_bf16_to_f32(kr_f32_to_bf16(k[i]));
        CHECK(bad == 0, "%s: %lld bf16 cache keys differ from bf16(x)", name, (long long)bad);
    } else { /* FP8 bytes and scales as the host computes them */
        uint8_t *b = malloc((size_t)(n * kvh * qk));
        float *sc = malloc((size_t)(n * kvh) * 4);
        dev_download(b, kv.k[1], (size_t)(n * kvh * qk));
        dev_download(sc, kv.k_scale[1], (size_t)(n * kvh) * 4);
        int64_t bad = 0;
        for (int64_t r = 0; r < n * kvh; r++) {
            float amax = 0;
            for (int64_t i = 0; i < qk; i++)
                amax = fmaxf(amax, fabsf(k[r * qk + i]));
            float s = amax / 448.0f, inv = 1.0f / s;
            bad += sc[r] != s;
            for (int64_t i = 0; i < qk; i++)
                bad += b[r * qk + i] != kr_cuda_f32_to_fp8_host(k[r * qk + i] * inv);
        }
        CHECK(bad == 0, "%s: %lld FP8 key bytes/scales differ from the host's conversion", name, (long long)bad);
        free(b), free(sc);
    }
    float scale = 1.0f / sqrtf((float)qk);
    int64_t vts = mla ? qk : kvh * vd, vhs = mla ? qk : vd;
    float *ref = malloc((size_t)(T * H * vd) * 4), *ref_exact = malloc((size_t)(T * H * vd) * 4);
    ref_attention(q, kc, kvh * qk, qk, vc, vts, vhs, T, H, kvh, qk, vd, pos0, scale, ref);
    ref_attention(q, k, kvh * qk, qk, mla ? k : v, vts, vhs, T, H, kvh, qk, vd, pos0, scale, ref_exact);
    void *dq = upload_as(q, q_dt, T * H * qk);
    kr_cuda_attn a = {T, H, kvh, qk, vd, pos0, scale, view(dq, q_dt, H * qk, qk), kr_cuda_kv_k_view(&kv, 1),
                      kr_cuda_kv_v_view(&kv, 1), view(NULL, out_dt, 0, 0)};
    float *out = run_attention(&a, NULL);
    const char *what = mla ? "MLA absorbed" : "GQA";
    CHECK_REL(out, ref, T * H * vd, tol, "%s %s cache %s (T %lld after %lld, %lld/%lld heads, %lld/%lld)", name, what,
              kr_cuda_dtype_name(kv_dt), (long long)T, (long long)pos0, (long long)H, (long long)kvh, (long long)qk,
              (long long)vd);
    /* and the quality the cache's storage costs, against the unrounded inputs */
    CHECK_REL(out, ref_exact, T * H * vd, kv_dt == KR_CU_BF16 ? 1.5e-2 : 8e-2, "%s %s cache %s vs unquantized", name,
              what, kr_cuda_dtype_name(kv_dt));
    kr_cuda_free(dq), kr_cuda_free(dk), kr_cuda_free(dv);
    kr_cuda_kv_destroy(&kv);
    free(k), free(v), free(q), free(kc);
    if (!mla)
        free(vc);
    free(ref), free(ref_exact), free(out);
}

static void test_bytes_per_token(void) {
    /* Qwen3-30B-A3B: 48 layers, 4 kv heads of 128; DeepSeek-V2-Lite: 27 layers of 512 + 64 latent */
    kr_cuda_kv_shape q3 = {48, 1, 4, 128, 128, 0, KR_CU_BF16}, q3f = q3, ds = {27, 1, 1, 576, 512, 1, KR_CU_BF16},
                     dsf = ds;
    q3f.dt = dsf.dt = KR_CU_FP8;
    CHECK(kr_cuda_kv_bytes_per_token(&q3) == 48 * 4 * 256 * 2, "qwen3 bf16: %lld", (long long)kr_cuda_kv_bytes_per_token(&q3));
    CHECK(kr_cuda_kv_bytes_per_token(&q3f) == 48 * 4 * (256 + 8), "qwen3 fp8: %lld", (long long)kr_cuda_kv_bytes_per_token(&q3f));
    CHECK(kr_cuda_kv_bytes_per_token(&ds) == 27 * 576 * 2, "dsv2-lite bf16: %lld", (long long)kr_cuda_kv_bytes_per_token(&ds));
    CHECK(kr_cuda_kv_bytes_per_token(&dsf) == 27 * (576 + 4), "dsv2-lite fp8: %lld", (long long)kr_cuda_kv_bytes_per_token(&dsf));
}

static void test_refusals(void) {
    kr_cuda_kv_shape sh = {1, 8, 1, 64, 64, 0, KR_CU_F32};
    kr_cuda_kv kv;
    CHECK(kr_cuda_kv_create(&kv, &sh) == KR_ERR_ARG, "an f32 KV cache is refused");
    CHECK(strstr(kr_error(), "f32") != NULL, "error names the dtype: %s", kr_error());
    sh.dt = KR_CU_BF16;
    CK(kr_cuda_kv_create(&kv, &sh));
    float *x = dev_alloc(64 * 4 * 9);
    kr_cuda_view w = view(x, KR_CU_F32, 64, 64);
    CHECK(kr_cuda_kv_write(&kv, 0, 4, 5, &w, &w, NULL) == KR_ERR_ARG, "writing past the capacity is refused");
    CHECK(strstr(kr_error(), "KV cache full") != NULL, "error says the cache is full: %s", kr_error());
    kr_cuda_attn a = {1, 4, 1, 1000, 64, 0, 1, view(x, KR_CU_F32, 0, 0), view(x, KR_CU_F32, 0, 0),
                      view(x, KR_CU_F32, 0, 0), view(x, KR_CU_F32, 0, 0)};
    CHECK(kr_cuda_attention(&a, NULL, 0, NULL) == KR_ERR_UNSUPPORTED, "qk_dim 1000 refused");
    CHECK(strstr(kr_error(), "1000") != NULL, "error names the dim: %s", kr_error());
    a.qk_dim = 64;
    a.pos0 = 100000;
    size_t need = kr_cuda_attention_ws_bytes(&a);
    CHECK(need > 0, "a long decode splits the keys and needs a workspace");
    CHECK(kr_cuda_attention(&a, x, need - 1, NULL) == KR_ERR_ARG, "too small a workspace is refused");
    CHECK(strstr(kr_error(), "workspace") != NULL, "error names the workspace: %s", kr_error());
    kr_cuda_free(x);
    kr_cuda_kv_destroy(&kv);
}

int main(void) {
    cuda_test_require_device("test_cuda_attention");
    /* flash kernel: bf16, prefill shapes (Qwen3 GQA 32/4 scaled down to 8/2 heads; DeepSeek MLA prefill 192/128) */
    case_views("flash qwen3 shape", 300, 8, 2, 128, 128, 0, KR_CU_BF16, KR_CU_BF16, 0, "flash_mma", 1e-2);
    case_views("flash qwen3 shape, f32 out", 129, 8, 2, 128, 128, 0, KR_CU_BF16, KR_CU_F32, 0, "flash_mma", 8e-3);
    case_views("flash with cached prefix", 100, 4, 4, 128, 128, 237, KR_CU_BF16, KR_CU_BF16, 0, "flash_mma", 1e-2);
    case_views("flash deepseek prefill", 200, 4, 4, 192, 128, 0, KR_CU_BF16, KR_CU_BF16, 0, "flash_mma", 1e-2);
    case_views("flash head 64", 77, 6, 3, 64, 64, 5, KR_CU_BF16, KR_CU_F32, 0, "flash_mma", 8e-3);
    case_views("flash one tile", 16, 2, 1, 128, 128, 0, KR_CU_BF16, KR_CU_F32, 0, "flash_mma", 8e-3);
    case_views("flash long", 2048, 2, 1, 128, 128, 0, KR_CU_BF16, KR_CU_F32, 0, "flash_mma", 8e-3);
    /* split-key kernel on the same problems, f32 throughout: float32 agreement */
    case_views("split f32", 300, 8, 2, 128, 128, 0, KR_CU_F32, KR_CU_F32, 1, "split_kv", 2e-5);
    case_views("split f32 deepseek dims", 70, 4, 4, 192, 128, 33, KR_CU_F32, KR_CU_F32, 1, "split_kv", 2e-5);
    case_views("split bf16, odd dims", 40, 6, 2, 80, 48, 3, KR_CU_BF16, KR_CU_BF16, 0, "split_kv", 1e-2);
    case_views("decode, views", 1, 32, 4, 128, 128, 8191, KR_CU_F32, KR_CU_F32, 0, "split_kv", 2e-5);
    /* decode over caches: GQA groups of 8 (Qwen3-30B-A3B), several splits; FP8 with scales */
    case_cache("decode", 1, 32, 4, 128, 128, 6000, KR_CU_BF16, 0, KR_CU_F32, KR_CU_F32, 2e-5);
    case_cache("decode", 1, 32, 4, 128, 128, 6000, KR_CU_FP8, 0, KR_CU_F32, KR_CU_F32, 2e-5);
    case_cache("decode, 3 new tokens", 3, 16, 2, 128, 128, 1500, KR_CU_FP8, 0, KR_CU_BF16, KR_CU_BF16, 1e-2);
    case_cache("decode, 20 heads a group", 1, 20, 1, 64, 64, 700, KR_CU_BF16, 0, KR_CU_F32, KR_CU_F32, 2e-5);
    /* MLA absorbed: one latent head [512 | 64 rope], value = the latent; DeepSeek-V2-Lite's 16 heads */
    case_cache("mla decode", 1, 16, 1, 576, 512, 4000, KR_CU_BF16, 1, KR_CU_F32, KR_CU_F32, 2e-5);
    case_cache("mla decode", 1, 16, 1, 576, 512, 4000, KR_CU_FP8, 1, KR_CU_F32, KR_CU_F32, 2e-5);
    case_cache("mla prefill, absorbed", 33, 16, 1, 576, 512, 0, KR_CU_BF16, 1, KR_CU_F32, KR_CU_BF16, 1e-2);
    case_cache("mla decode, 128 heads (V3)", 2, 128, 1, 576, 512, 300, KR_CU_FP8, 1, KR_CU_BF16, KR_CU_F32, 2e-5);
    test_bytes_per_token();
    test_refusals();
    return test_summary("test_cuda_attention");
}
