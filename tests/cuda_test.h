/* Helpers of the CUDA kernel tests: skip (exit 77) without a device, upload/download, bf16 rounding,
 * relative error ||out - ref|| / ||ref|| in double with NaN failing, and a checked-call macro. */
#ifndef KR_TEST_CUDA_H
#define KR_TEST_CUDA_H

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_exit_check.h"
#include "base/fp.h"
#include "test.h"

/* a failed krasis CUDA call ends the test: what follows would read garbage */
#define CK(expr) KR(expr)

static inline void cuda_test_require_device(const char *name) {
    if (kr_cuda_device_count() == 0) {
        printf("%s: SKIP: no CUDA device (%s)\n", name, kr_cuda_no_device_reason());
        exit(77);
    }
    kr_cuda_device_info info;
    CK(kr_cuda_device_query(0, &info));
    CK(kr_cuda_set_device(0));
    printf("%s: on %s (sm_%d%d)\n", name, info.name, info.cc_major, info.cc_minor);
}

static inline void *dev_alloc(size_t bytes) {
    void *p;
    CK(kr_cuda_malloc(&p, bytes, "a test buffer"));
    return p;
}

static inline void *dev_upload(const void *h, size_t bytes) {
    void *p = dev_alloc(bytes);
    CK(kr_cuda_to_device(p, h, bytes, NULL));
    CK(kr_cuda_stream_sync(NULL));
    return p;
}

static inline void dev_download(void *h, const void *d, size_t bytes) {
    CK(kr_cuda_to_host(h, d, bytes, NULL));
    CK(kr_cuda_stream_sync(NULL));
}

static inline float *rand_vec(int64_t n, float amp, unsigned long long *st) {
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = amp * test_frand(st);
    return v;
}

static inline uint16_t *to_bf16(const float *x, int64_t n) {
    uint16_t *b = malloc((size_t)n * sizeof *b);
    for (int64_t i = 0; i < n; i++)
        b[i] = kr_f32_to_bf16(x[i]);
    return b;
}

/* x := bf16(x), so a CPU reference sees exactly the inputs a bf16 kernel sees */
static inline void round_bf16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = kr_bf16_to_f32(kr_f32_to_bf16(x[i]));
}

/* device tensor of dtype dt (f32 or bf16) to host floats */
static inline float *download_as_f32(const void *d, kr_cuda_dtype dt, int64_t n) {
    float *out = malloc((size_t)n * sizeof *out);
    if (dt == KR_CU_F32) {
        dev_download(out, d, (size_t)n * 4);
    } else {
        uint16_t *b = malloc((size_t)n * 2);
        dev_download(b, d, (size_t)n * 2);
        for (int64_t i = 0; i < n; i++)
            out[i] = kr_bf16_to_f32(b[i]);
        free(b);
    }
    return out;
}

/* host floats to a new device tensor of dtype dt (f32 or bf16) */
static inline void *upload_as(const float *x, kr_cuda_dtype dt, int64_t n) {
    if (dt == KR_CU_F32)
        return dev_upload(x, (size_t)n * 4);
    uint16_t *b = to_bf16(x, n);
    void *d = dev_upload(b, (size_t)n * 2);
    free(b);
    return d;
}

/* ||out - ref|| / ||ref||; +inf when out has a NaN or infinity (an unwritten poisoned element) */
static inline double rel_err(const float *out, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(out[i]))
            return INFINITY;
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den + 1e-300));
}

/* the error bound of an output stored in dtype dt, whose math ran in float32 */
static inline double tol_for(kr_cuda_dtype dt) { return dt == KR_CU_F32 ? 2e-6 : 6e-3; }

/* CHECK_REL(out, ref, n, tol, "label %s", ...): the label is printf-formatted */
#define CHECK_REL(out, ref, n, tol, ...)                                                           \
    do {                                                                                           \
        char lbl_[160];                                                                            \
        snprintf(lbl_, sizeof lbl_, __VA_ARGS__);                                                  \
        double e_ = rel_err(out, ref, n);                                                          \
        CHECK(e_ <= (tol), "%s: relative error %.3g > %.3g", lbl_, e_, (double)(tol));             \
        if (getenv("KR_TEST_VERBOSE"))                                                             \
            printf("  %-60s rel err %.3g (bound %.3g)\n", lbl_, e_, (double)(tol));                \
    } while (0)

#endif
