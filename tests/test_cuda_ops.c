/* GPU element-wise kernels (RMSNorm, RoPE in every pairing, SiLU-multiply, adds, conversions) against the
 * float32 CPU reference on random inputs, in f32 and bf16, outputs poisoned with NaN before each run. */
#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"

static unsigned long long seed = 0x9e3779b97f4a7c15ull;
static const kr_cuda_dtype dts[] = {KR_CU_F32, KR_CU_BF16};

static void test_rmsnorm(kr_cuda_dtype dt, int64_t rows, int64_t n, int in_place) {
    float *x = rand_vec(rows * n, 3.0f, &seed), *w = rand_vec(n, 1.5f, &seed);
    if (dt == KR_CU_BF16)
        round_bf16(x, rows * n);
    float *ref = malloc((size_t)(rows * n) * sizeof *ref);
    for (int64_t r = 0; r < rows; r++)
        kr_rmsnorm(ref + r * n, x + r * n, w, n, 1e-6f);
    void *dx = upload_as(x, dt, rows * n), *dout = in_place ? dx : dev_alloc((size_t)(rows * n) * 4);
    float *dw = dev_upload(w, (size_t)n * 4);
    if (!in_place)
        CK(kr_cuda_fill_nan(dout, dt, rows * n, NULL));
    CK(kr_cuda_rmsnorm(dt, dout, dx, dw, rows, n, 1e-6f, NULL));
    CK(kr_cuda_device_sync());
    float *out = download_as_f32(dout, dt, rows * n);
    char what[96];
    snprintf(what, sizeof what, "rmsnorm %s %lldx%lld%s", kr_cuda_dtype_name(dt), (long long)rows, (long long)n,
             in_place ? " in place" : "");
    CHECK_REL(out, ref, rows * n, tol_for(dt), "%s", what);
    if (!in_place)
        kr_cuda_free(dout);
    kr_cuda_free(dx);
    kr_cuda_free(dw);
    free(x), free(w), free(ref), free(out);
}

/* [T, heads, hd] tensor; the rotated block of each head starts at `offset` */
static void test_rope(kr_cuda_dtype dt, const kr_rope_config *rc, int64_t T, int64_t heads, int64_t hd, int64_t offset,
                      int64_t pos0, int use_positions, const char *name) {
    int64_t n = T * heads * hd;
    float *x = rand_vec(n, 2.0f, &seed);
    if (dt == KR_CU_BF16)
        round_bf16(x, n);
    float *inv = malloc((size_t)(rc->dim / 2) * sizeof *inv);
    kr_rope_inv_freq(rc, inv);
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    for (int64_t t = 0; t < T; t++)
        pos[t] = use_positions ? (int32_t)((t * 7919) % 40000) : (int32_t)(pos0 + t);
    float *ref = malloc((size_t)n * sizeof *ref);
    memcpy(ref, x, (size_t)n * sizeof *ref);
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < heads; h++)
            kr_rope_apply(rc, inv, ref + (t * heads + h) * hd + offset, pos[t]);
    void *dx = upload_as(x, dt, n);
    float *dinv = dev_upload(inv, (size_t)(rc->dim / 2) * 4);
    int32_t *dpos = use_positions ? dev_upload(pos, (size_t)T * 4) : NULL;
    kr_cuda_rope_params p = {rc->dim, rc->interleaved, (float)rc->attention_factor, dinv};
    CK(kr_cuda_rope(dt, dx, T, heads, heads * hd, hd, offset, &p, pos0, dpos, NULL));
    CK(kr_cuda_device_sync());
    float *out = download_as_f32(dx, dt, n);
    char what[128];
    snprintf(what, sizeof what, "rope %s %s", name, kr_cuda_dtype_name(dt));
    CHECK_REL(out, ref, n, tol_for(dt), "%s", what);
    /* the dims outside the rotated block are untouched, bit for bit */
    int64_t moved = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < hd; i++)
                if ((i < offset || i >= offset + rc->dim) && out[(t * heads + h) * hd + i] != x[(t * heads + h) * hd + i])
                    moved++;
    CHECK(moved == 0, "%s: %lld elements outside the rotary block changed", what, (long long)moved);
    kr_cuda_free(dx);
    kr_cuda_free(dinv);
    kr_cuda_free(dpos);
    free(x), free(inv), free(pos), free(ref), free(out);
}

static void test_silu_add(kr_cuda_dtype dt, int64_t rows, int64_t n) {
    /* fused [gate | up] rows, as the w13 projection writes them */
    float *gu = rand_vec(rows * 2 * n, 4.0f, &seed), *y = rand_vec(rows * n, 1.0f, &seed), *b = rand_vec(n, 1.0f, &seed);
    if (dt == KR_CU_BF16) {
        round_bf16(gu, rows * 2 * n);
        round_bf16(y, rows * n);
    }
    float *ref = malloc((size_t)(rows * n) * sizeof *ref);
    for (int64_t r = 0; r < rows; r++) {
        memcpy(ref + r * n, gu + r * 2 * n, (size_t)n * sizeof *ref);
        kr_silu_mul(ref + r * n, gu + r * 2 * n + n, n);
    }
    void *dgu = upload_as(gu, dt, rows * 2 * n), *dout = dev_alloc((size_t)(rows * n) * 4);
    CK(kr_cuda_fill_nan(dout, dt, rows * n, NULL));
    size_t el = kr_cuda_dtype_size(dt);
    CK(kr_cuda_silu_mul(dt, dout, n, dgu, (char *)dgu + n * el, 2 * n, rows, n, NULL));
    CK(kr_cuda_device_sync());
    float *out = download_as_f32(dout, dt, rows * n);
    CHECK_REL(out, ref, rows * n, tol_for(dt), "silu_mul %s", kr_cuda_dtype_name(dt));

    /* residual add, then a bias on every row */
    void *dy = upload_as(y, dt, rows * n);
    float *db = dev_upload(b, (size_t)n * 4);
    CK(kr_cuda_add(dt, dy, dout, rows * n, NULL));
    CK(kr_cuda_add_rows(dt, dy, db, rows, n, NULL));
    CK(kr_cuda_device_sync());
    float *sum = download_as_f32(dy, dt, rows * n);
    /* reference on the values the GPU held: out as stored, then each add rounded as stored */
    for (int64_t i = 0; i < rows * n; i++) {
        float v = y[i] + out[i];
        if (dt == KR_CU_BF16)
            v = kr_bf16_to_f32(kr_f32_to_bf16(v));
        ref[i] = v + b[i % n];
    }
    CHECK_REL(sum, ref, rows * n, tol_for(dt), "add + add_rows %s", kr_cuda_dtype_name(dt));
    kr_cuda_free(dgu), kr_cuda_free(dout), kr_cuda_free(dy), kr_cuda_free(db);
    free(gu), free(y), free(b), free(ref), free(out), free(sum);
}

static void test_convert(void) {
    int64_t n = 100003;
    float *x = rand_vec(n, 1e3f, &seed);
    x[0] = 0.0f, x[1] = -0.0f, x[2] = 3.0e38f, x[3] = 1e-40f; /* zero, signed zero, near max, subnormal */
    float *dx = dev_upload(x, (size_t)n * 4), *dback = dev_alloc((size_t)n * 4);
    uint16_t *db = dev_alloc((size_t)n * 2), *hb = malloc((size_t)n * 2);
    CK(kr_cuda_fill_nan(db, KR_CU_BF16, n, NULL));
    CK(kr_cuda_fill_nan(dback, KR_CU_F32, n, NULL));
    CK(kr_cuda_convert(KR_CU_BF16, db, KR_CU_F32, dx, n, NULL));
    CK(kr_cuda_convert(KR_CU_F32, dback, KR_CU_BF16, db, n, NULL));
    dev_download(hb, db, (size_t)n * 2);
    float *back = malloc((size_t)n * 4);
    dev_download(back, dback, (size_t)n * 4);
    int64_t bad = 0, bad_back = 0;
    for (int64_t i = 0; i < n; i++) {
        bad += hb[i] != kr_f32_to_bf16(x[i]);
        bad_back += back[i] != kr_bf16_to_f32(hb[i]);
    }
    CHECK(bad == 0, "f32 -> bf16: %lld of %lld differ from the CPU's rounding", (long long)bad, (long long)n);
    CHECK(bad_back == 0, "bf16 -> f32: %lld of %lld not exact", (long long)bad_back, (long long)n);
    CHECK(kr_cuda_f32_to_bf16_host(1.00390625f) == kr_f32_to_bf16(1.00390625f), "host bf16 rounding (a tie)");
    CHECK(kr_fp8_e4m3_to_f32(kr_cuda_f32_to_fp8_host(1000.0f)) == 448.0f, "fp8 saturates at 448");
    CHECK(kr_cuda_convert(KR_CU_FP8, db, KR_CU_F32, dx, n, NULL) == KR_ERR_ARG, "f32 -> fp8 convert is refused");
    CHECK(strstr(kr_error(), "fp8") != NULL, "the error names the type: %s", kr_error());
    kr_cuda_free(dx), kr_cuda_free(dback), kr_cuda_free(db);
    free(x), free(hb), free(back);
}

int main(void) {
    cuda_test_require_device("test_cuda_ops");
    for (int d = 0; d < 2; d++) {
        kr_cuda_dtype dt = dts[d];
        test_rmsnorm(dt, 37, 2048, 0);
        test_rmsnorm(dt, 5, 5003, 0);
        test_rmsnorm(dt, 300 * 32, 128, 1); /* per-head q norm: rows = tokens * heads */
        test_rmsnorm(dt, 1, 7168, 1);

        kr_rope_config neox = {.dim = 128, .interleaved = false, .theta = 1e6, .attention_factor = 1.0};
        test_rope(dt, &neox, 33, 4, 128, 0, 12345, 0, "neox full (Qwen3)");
        test_rope(dt, &neox, 17, 3, 128, 0, 0, 1, "neox full, positions array");
        kr_rope_config partial = {.dim = 64, .interleaved = false, .theta = 1e6, .attention_factor = 1.0};
        test_rope(dt, &partial, 29, 5, 128, 0, 100, 0, "neox partial 64 of 128 (GLM-4.5)");
        /* DeepSeek-V2-Lite: YaRN factor 40, interleaved pairs, the rope part after 128 nope dims */
        kr_rope_config yarn = {.dim = 64, .interleaved = true, .theta = 1e4, .yarn = true, .factor = 40,
                               .beta_fast = 32, .beta_slow = 1, .mscale = 0.707, .mscale_all_dim = 0.707,
                               .original_max_pos = 4096};
        yarn.attention_factor = kr_yarn_mscale(40, 0.707) / kr_yarn_mscale(40, 0.707);
        test_rope(dt, &yarn, 21, 16, 192, 128, 30000, 0, "yarn interleaved, offset 128 (DeepSeek-V2 q)");
        kr_rope_config yarn_af = yarn;
        yarn_af.attention_factor = 1.2773; /* a YaRN attention factor != 1 (e.g. when mscale_all_dim is 0) */
        yarn_af.interleaved = false;
        test_rope(dt, &yarn_af, 9, 1, 576, 512, 70000, 0, "yarn neox, attention factor, MLA k_pe");

        test_silu_add(dt, 19, 1408);
        test_silu_add(dt, 1, 768);
    }
    test_convert();
    CHECK(kr_cuda_rmsnorm(KR_CU_I8, NULL, NULL, NULL, 1, 8, 1e-6f, NULL) == KR_ERR_ARG, "int8 rmsnorm refused");
    CHECK(strstr(kr_error(), "int8") != NULL, "error names the dtype: %s", kr_error());
    return test_summary("test_cuda_ops");
}
