/* The ISA dispatch table: one set of kernel entry points per SIMD level, chosen once at start from
 * cpuid (or forced with KRASIS_ISA=scalar|avx2|avx512|amx). The scalar level is always built and is the
 * oracle every other level is tested against. This table is one of the few pieces of global state. */
#ifndef KR_BACKEND_CPU_ISA_H
#define KR_BACKEND_CPU_ISA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cpu/quant.h"

/* tokens per tile_dot call */
#define KR_TILE_TOKENS 4

typedef enum { KR_ISA_SCALAR, KR_ISA_AVX2, KR_ISA_AVX512, KR_ISA_AMX, KR_ISA_COUNT } kr_isa;

typedef struct {
    kr_isa isa;
    const char *name;
    /* Activation quantizer: same contract and bit-identical results as kr_quantize_act_ref. */
    void (*quantize_act)(const float *x, int64_t n, int gs, int8_t *q, float *s, float *c);
    /* y[i] = <row r0 + i of w, a> for i < nr, integer dot products per group, float across groups. */
    void (*rows_dot)(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, float *y);
    /* The same for nt tokens at once (1 <= nt <= KR_TILE_TOKENS): y[t * ys + i] = <row r0 + i, a[t]>.
     * Each value is bit-identical to what rows_dot gives for that token alone, so batching (prefill)
     * never changes a result. */
    void (*tile_dot)(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, int nt, float *y, int64_t ys);
    /* Reads n bytes (n a multiple of 128, p 64-byte aligned) and returns a value depending on all of
     * them, so the read cannot be optimized away: the memory-bandwidth probe. */
    uint64_t (*read_sum)(const uint8_t *p, size_t n);
    /* sum_i a[i] b[i] in float32 (kr_dot: attention over the cache, the float path). Levels sum in other
     * orders: results agree to float rounding, not bit for bit. */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* Attention over a block of cached rows, for nh heads that read the same rows (kr_attend_batch):
     * scores s[h * ss + j] = scale <q + h qs, k + j ks> (d floats) for h < nh, j < nk, and values
     * o[h * os + i] += sum_j p[h * ps + j] v[j * vs + i] for h < nh, i < d. Register tiles of heads x
     * keys (x value columns) read each row once per tile, not once per head. */
    void (*attn_scores)(const float *q, int64_t qs, int nh, const float *k, int64_t ks, int nk, int64_t d, float scale,
                        float *s, int64_t ss);
    void (*attn_values)(const float *p, int64_t ps, int nh, const float *v, int64_t vs, int nk, int64_t d, float *o,
                        int64_t os);
    /* x[i] = exp(x[i] - m) for i < n (x[i] <= m), returning their sum: the softmax step of attention. The
     * SIMD levels use a polynomial within 4 ulp of expf (results below e^-87 are not flushed to 0). */
    float (*exp_sum)(float *x, int n, float m);
} kr_kernels;

/* The active table (chosen on first call). */
const kr_kernels *kr_kernels_get(void);
/* The table of one level, or NULL when this machine or build cannot run it. */
const kr_kernels *kr_kernels_for(kr_isa isa);
/* Forces a level (tests, benchmarks). Returns the previous one. */
kr_isa kr_kernels_force(kr_isa isa);
const char *kr_isa_name(kr_isa isa);
/* Whether the CPU supports a level (cpuid + OS state), independent of what was built. */
int kr_cpu_has(kr_isa isa);
/* Extra feature flags for reports: "avx512vnni", "avx512bf16", "avxvnni", "f16c", "fma". */
int kr_cpu_has_feature(const char *name);

/* Per-level tables, defined in kernels_<level>.c. Only the levels this build compiles are declared. */
extern const kr_kernels kr_kernels_scalar;
extern const kr_kernels kr_kernels_avx2;
extern const kr_kernels kr_kernels_avx512;

#endif
