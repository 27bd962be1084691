/* cuBLASLt projections: BF16 (f32 and bf16 outputs, accumulate onto y) against float32 dot products of
 * the same bf16 inputs, and INT8 with per-channel weight scales and per-token activation scales,
 * checked exactly against integer dot products and loosely against the float product. */
#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_gemm.h"
#include "cuda_test.h"

static unsigned long long seed = 0x1234abcd5678ef01ull;

/* off: the operands start that many bytes into their allocations (sub-views of larger buffers) */
static void test_bf16_at(kr_cuda_blas *h, int64_t T, int64_t N, int64_t K, kr_cuda_dtype y_dt, float beta, size_t off) {
    float *x = rand_vec(T * K, 1.0f, &seed), *w = rand_vec(N * K, 0.05f, &seed), *y0 = rand_vec(T * N, 1.0f, &seed);
    round_bf16(x, T * K);
    round_bf16(w, N * K);
    if (y_dt == KR_CU_BF16)
        round_bf16(y0, T * N);
    float *ref = malloc((size_t)(T * N) * sizeof *ref);
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++)
            ref[t * N + n] = kr_dot(x + t * K, w + n * K, K) + beta * y0[t * N + n];
    size_t ys = kr_cuda_dtype_size(y_dt);
    uint16_t *xb = to_bf16(x, T * K), *wb = to_bf16(w, N * K);
    char *bx = dev_alloc((size_t)(T * K) * 2 + off), *bw = dev_alloc((size_t)(N * K) * 2 + off),
         *by = dev_alloc((size_t)(T * N) * ys + off);
    void *dx = bx + off, *dw = bw + off, *dy = by + off;
    CK(kr_cuda_to_device(dx, xb, (size_t)(T * K) * 2, NULL));
    CK(kr_cuda_to_device(dw, wb, (size_t)(N * K) * 2, NULL));
    if (beta != 0) {
        void *t = upload_as(y0, y_dt, T * N);
        CK(kr_cuda_copy(dy, t, (size_t)(T * N) * ys, NULL));
        CK(kr_cuda_device_sync());
        kr_cuda_free(t);
    } else {
        CK(kr_cuda_fill_nan(dy, y_dt, T * N, NULL)); /* beta = 0 must not read y: NaN * 0 would show */
    }
    CK(kr_cuda_gemm_bf16(h, y_dt, dy, dx, dw, T, N, K, 1.0f, beta, NULL));
    CK(kr_cuda_device_sync());
    float *y = download_as_f32(dy, y_dt, T * N);
    CHECK_REL(y, ref, T * N, y_dt == KR_CU_F32 ? 1e-5 : 6e-3, "gemm bf16 %lldx%lldx%lld -> %s, beta %g, offset %zu",
              (long long)T, (long long)N, (long long)K, kr_cuda_dtype_name(y_dt), beta, off);
    kr_cuda_free(bx), kr_cuda_free(bw), kr_cuda_free(by);
    free(xb), free(wb);
    free(x), free(w), free(y0), free(ref), free(y);
}

static void test_bf16(kr_cuda_blas *h, int64_t T, int64_t N, int64_t K, kr_cuda_dtype y_dt, float beta) {
    test_bf16_at(h, T, N, K, y_dt, beta, 0);
}

/* batch heads of a [T, batch, K] input against [batch][N][K] weights into a [T, batch, N] output (MLA's
 * per-head products); T <= 8 takes the GEMV kernel, larger T cuBLASLt's strided batch */
static void test_batched(kr_cuda_blas *h, int64_t T, int64_t batch, int64_t N, int64_t K, kr_cuda_dtype y_dt, float beta) {
    float *x = rand_vec(T * batch * K, 1.0f, &seed), *w = rand_vec(batch * N * K, 0.05f, &seed);
    float *y0 = rand_vec(T * batch * N, 1.0f, &seed), *ref = malloc((size_t)(T * batch * N) * sizeof *ref);
    round_bf16(x, T * batch * K);
    round_bf16(w, batch * N * K);
    if (y_dt == KR_CU_BF16)
        round_bf16(y0, T * batch * N);
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < batch; b++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += (double)x[(t * batch + b) * K + k] * w[(b * N + n) * K + k];
                ref[(t * batch + b) * N + n] = (float)(acc + beta * y0[(t * batch + b) * N + n]);
            }
    uint16_t *xb = to_bf16(x, T * batch * K), *wb = to_bf16(w, batch * N * K);
    void *dx = dev_upload(xb, (size_t)(T * batch * K) * 2), *dw = dev_upload(wb, (size_t)(batch * N * K) * 2);
    void *dy = upload_as(y0, y_dt, T * batch * N);
    if (beta == 0)
        CK(kr_cuda_fill_nan(dy, y_dt, T * batch * N, NULL));
    CK(kr_cuda_gemm_bf16_batched(h, y_dt, dy, batch * N, N, dx, batch * K, K, dw, N * K, T, N, K, batch, 1.0f, beta,
                                 NULL));
    CK(kr_cuda_device_sync());
    float *y = download_as_f32(dy, y_dt, T * batch * N);
    CHECK_REL(y, ref, T * batch * N, y_dt == KR_CU_F32 ? 1e-5 : 6e-3, "batched gemm bf16 T %lld x %lld heads x %lld x %lld -> %s, beta %g",
              (long long)T, (long long)batch, (long long)N, (long long)K, kr_cuda_dtype_name(y_dt), beta);
    kr_cuda_free(dx), kr_cuda_free(dw), kr_cuda_free(dy);
    free(x), free(w), free(y0), free(ref), free(xb), free(wb), free(y);
}

/* the router's float32 product: exact to float32 rounding */
static void test_f32(kr_cuda_blas *h, int64_t T, int64_t N, int64_t K) {
    float *x = rand_vec(T * K, 1.0f, &seed), *w = rand_vec(N * K, 0.05f, &seed), *ref = malloc((size_t)(T * N) * 4);
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)x[t * K + k] * w[n * K + k];
            ref[t * N + n] = (float)acc;
        }
    float *dx = dev_upload(x, (size_t)(T * K) * 4), *dw = dev_upload(w, (size_t)(N * K) * 4), *dy = dev_alloc((size_t)(T * N) * 4);
    CK(kr_cuda_fill_nan(dy, KR_CU_F32, T * N, NULL));
    CK(kr_cuda_gemm_f32(h, dy, dx, dw, T, N, K, 0, NULL));
    float *y = malloc((size_t)(T * N) * 4);
    dev_download(y, dy, (size_t)(T * N) * 4);
    CHECK_REL(y, ref, T * N, 1e-5, "gemm f32 %lldx%lldx%lld (no TF32)", (long long)T, (long long)N, (long long)K);
    kr_cuda_free(dx), kr_cuda_free(dw), kr_cuda_free(dy);
    free(x), free(w), free(ref), free(y);
}

static void test_i8(kr_cuda_blas *h, int64_t T, int64_t N, int64_t K) {
    float *x = rand_vec(T * K, 2.0f, &seed), *w = rand_vec(N * K, 0.05f, &seed);
    /* weights: symmetric per output channel, as a loader would store them */
    int8_t *wq = malloc((size_t)(N * K));
    float *ws = malloc((size_t)N * sizeof *ws);
    for (int64_t n = 0; n < N; n++) {
        float amax = 0;
        for (int64_t k = 0; k < K; k++)
            amax = fmaxf(amax, fabsf(w[n * K + k]));
        ws[n] = amax / 127.0f;
        for (int64_t k = 0; k < K; k++)
            wq[n * K + k] = (int8_t)lrintf(w[n * K + k] / ws[n]);
    }
    float *dx = dev_upload(x, (size_t)(T * K) * 4), *dws = dev_upload(ws, (size_t)N * 4), *dxs = dev_alloc((size_t)T * 4);
    int8_t *dwq = dev_upload(wq, (size_t)(N * K)), *dxq = dev_alloc((size_t)(T * K));
    int32_t *acc = dev_alloc((size_t)(T * N) * 4);
    float *dy = dev_alloc((size_t)(T * N) * 4);
    CK(kr_cuda_fill_nan(dy, KR_CU_F32, T * N, NULL));
    CK(kr_cuda_quantize_rows_i8(KR_CU_F32, dx, T, K, dxq, dxs, NULL));
    CK(kr_cuda_gemm_i8(h, KR_CU_F32, dy, dxq, dxs, dwq, dws, T, N, K, acc, NULL));
    CK(kr_cuda_device_sync());
    int8_t *xq = malloc((size_t)(T * K));
    float *xs = malloc((size_t)T * 4), *y = malloc((size_t)(T * N) * 4);
    dev_download(xq, dxq, (size_t)(T * K));
    dev_download(xs, dxs, (size_t)T * 4);
    dev_download(y, dy, (size_t)(T * N) * 4);
    /* the activation quantizer, element for element */
    int64_t qbad = 0;
    for (int64_t t = 0; t < T; t++) {
        float amax = 0;
        for (int64_t k = 0; k < K; k++)
            amax = fmaxf(amax, fabsf(x[t * K + k]));
        float sc = amax / 127.0f, inv = 1.0f / sc;
        qbad += xs[t] != sc;
        for (int64_t k = 0; k < K; k++)
            qbad += xq[t * K + k] != (int8_t)fmaxf(-127.0f, fminf(127.0f, rintf(x[t * K + k] * inv)));
    }
    CHECK(qbad == 0, "int8 row quantizer: %lld values differ from the CPU's", (long long)qbad);
    float *exact = malloc((size_t)(T * N) * 4), *ref = malloc((size_t)(T * N) * 4);
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            int64_t a = 0;
            for (int64_t k = 0; k < K; k++)
                a += (int64_t)xq[t * K + k] * wq[n * K + k];
            exact[t * N + n] = (float)a * xs[t] * ws[n];
            ref[t * N + n] = kr_dot(x + t * K, w + n * K, K);
        }
    CHECK_REL(y, exact, T * N, 1e-6, "gemm int8 %lldx%lldx%lld vs integer dot products", (long long)T, (long long)N,
              (long long)K);
    CHECK_REL(y, ref, T * N, 2e-2, "gemm int8 %lldx%lldx%lld vs the float product", (long long)T, (long long)N,
              (long long)K);
    kr_cuda_free(dx), kr_cuda_free(dws), kr_cuda_free(dxs), kr_cuda_free(dwq), kr_cuda_free(dxq), kr_cuda_free(acc),
        kr_cuda_free(dy);
    free(x), free(w), free(wq), free(ws), free(xq), free(xs), free(y), free(exact), free(ref);
}

int main(void) {
    cuda_test_require_device("test_cuda_gemm");
    kr_cuda_blas *h;
    CK(kr_cuda_blas_create(&h));
    test_bf16(h, 1, 2048, 2048, KR_CU_F32, 0);     /* decode: one token */
    test_bf16(h, 77, 2816, 2048, KR_CU_F32, 0);    /* a fused w13 of 1408-wide experts */
    test_bf16(h, 300, 768, 2048, KR_CU_BF16, 0);
    test_bf16(h, 64, 2048, 4096, KR_CU_F32, 1.0f); /* o_proj added onto the residual */
    test_bf16(h, 33, 1000, 520, KR_CU_BF16, 1.0f);
    test_bf16(h, 64, 2048, 4096, KR_CU_F32, 0);     /* the same shape again: the cached plan */
    test_bf16_at(h, 64, 2048, 4096, KR_CU_F32, 0, 16); /* same shape, 16-byte aligned views: another plan */
    test_bf16_at(h, 5, 1024, 512, KR_CU_BF16, 1.0f, 48);
    /* decode sizes, through the GEMV kernel and through cuBLASLt: 1..8 tokens, onto the residual, bf16 out,
     * rows not a multiple of 8; batched as MLA's per-head products */
    for (int gemv = 1; gemv >= 0; gemv--) {
        kr_cuda_gemm_force_gemv(gemv);
        int64_t launches = kr_cuda_gemv_launches();
        test_bf16(h, 1, 3072, 2048, KR_CU_F32, 1.0f);
        test_bf16(h, 3, 576, 2048, KR_CU_F32, 0);
        test_bf16(h, 8, 2816, 2048, KR_CU_BF16, 0);
        test_bf16(h, 2, 1001, 1408, KR_CU_F32, 1.0f);
        test_bf16_at(h, 4, 512, 256, KR_CU_F32, 0, 8); /* 8-byte aligned: cuBLASLt takes it */
        test_batched(h, 1, 16, 512, 128, KR_CU_F32, 0); /* MLA absorb: 16 heads of Wk_b^T q_nope */
        test_batched(h, 1, 16, 128, 512, KR_CU_BF16, 0); /* MLA value: Wv_b . latent */
        test_batched(h, 5, 4, 64, 96, KR_CU_F32, 1.0f);
        /* all but the 8-byte aligned one qualify: the GEMV ran when on, and only then */
        int64_t ran = kr_cuda_gemv_launches() - launches;
        CHECK(gemv ? ran >= 7 : ran == 0, "GEMV %s: %lld GEMV launches", gemv ? "on" : "off", (long long)ran);
    }
    kr_cuda_gemm_force_gemv(-1);
    test_batched(h, 40, 4, 64, 96, KR_CU_BF16, 0); /* cuBLASLt's strided batch */
    test_f32(h, 1, 64, 2048);
    test_f32(h, 37, 160, 5120);
    test_i8(h, 1, 2048, 2048);
    test_i8(h, 100, 1408, 2048);
    test_i8(h, 512, 512, 7168);
    CHECK(kr_cuda_gemm_i8(h, KR_CU_F32, NULL, NULL, NULL, NULL, NULL, 4, 4, 6, NULL, NULL) == KR_ERR_ARG,
          "int8 GEMM with K = 6 is refused");
    CHECK(strstr(kr_error(), "multiple of 4") != NULL, "error says why: %s", kr_error());
    CHECK(kr_cuda_gemm_bf16(h, KR_CU_I8, NULL, NULL, NULL, 4, 4, 8, 1, 0, NULL) == KR_ERR_ARG, "int8 output refused");
    kr_cuda_blas_destroy(h);
    return test_summary("test_cuda_gemm");
}
