/* AVX-512 + VNNI kernels (Intel Ice Lake / Sapphire Rapids and later, AMD Zen 4 and later). The
 * integer dot products are vpdpbusd (u8 x s8 summed in fours into s32) over 64 columns at a time:
 * INT4 weights as unsigned nibbles 0..15 directly (the +8 offset removed once per row through the
 * activation's per-group correction, as in the AVX2 kernels), INT8 weights as |w| against the
 * activation with w's sign moved onto it. One float FMA per group (per pair of groups at gs 32).
 *
 * One core routine serves rows_dot and tile_dot: one row against NT tokens, the row's weights
 * unpacked once for all of them. rows_dot is its NT = 1 case, so a token's result is bit-identical
 * whether it was batched or not. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
 * -mavx512vnni -mavx2 -mfma; the dispatch table only picks it when cpuid reports all of them. */
#include <immintrin.h>
#include <string.h>

#include "backend/cpu/isa.h"

/* 32 packed bytes (two 32-column INT4 blocks) -> 64 unsigned nibbles in column order: 128-bit lanes
 * [bytes 0-15 low, bytes 0-15 high, bytes 16-31 low, bytes 16-31 high]. */
static inline __m512i unpack64(const uint8_t *p) {
    __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p));
    v = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(1, 1, 0, 0));
    v = _mm512_srlv_epi32(v, _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4));
    return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

/* One 16-byte INT4 block -> 32 nibbles in the low half, zeros above. */
static inline __m512i unpack32(const uint8_t *p) {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    v = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm512_zextsi256_si512(_mm256_and_si256(v, _mm256_set1_epi8(0x0F)));
}

/* acc + the 16-lane s32 dot of 64 weight bytes (already unpacked for INT4) with 64 activation bytes */
static inline __m512i dot64(__m512i acc, __m512i w, __m512i a, int BITS) {
    if (BITS == 4)
        return _mm512_dpbusd_epi32(acc, w, a);
    __mmask64 neg = _mm512_movepi8_mask(w);
    __m512i as = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
    return _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(w), as);
}

static inline float corr_dot(const float *sw, const float *c, int64_t groups) {
    __m512 acc = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 16 <= groups; g += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(sw + g), _mm512_loadu_ps(c + g), acc);
    if (g < groups) {
        __mmask16 m = (__mmask16)((1u << (groups - g)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, sw + g), _mm512_maskz_loadu_ps(m, c + g), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* How far ahead the weight stream is prefetched, in rows: decode reads every row once, and one core
 * needs several KiB in flight to keep up with memory (the AVX2 kernels stream 4 rows ahead too). */
#define PF_ROWS 4

/* Row r against NT tokens (1 to KR_TILE_TOKENS): y[t * ys] for t < NT. BITS and NB (= gs / 32) are
 * compile-time constants in every caller. */
static inline __attribute__((always_inline)) void row_k(const kr_qmatrix *w, int64_t r, const kr_qvec *a, int NT,
                                                        float *y, int64_t ys, int BITS, int NB) {
    const int64_t G = w->groups, gbytes = NB * 32 * BITS / 8;
    const uint8_t *wq = w->q + r * w->row_bytes;
    const float *sw = w->s + r * G;
    __m512 acc[KR_TILE_TOKENS];
    for (int t = 0; t < NT; t++)
        acc[t] = _mm512_setzero_ps();
    const uint8_t *pf = wq + PF_ROWS * w->row_bytes;
    for (int64_t o = 0; o < G * (int64_t)sizeof(float); o += 64)
        _mm_prefetch((const char *)(sw + PF_ROWS * G) + o, _MM_HINT_T0);
    if (NB == 1) {
        /* 64 columns = two groups: lanes 0-7 hold group g's sums, lanes 8-15 group g + 1's */
        int64_t g = 0;
        for (; g + 2 <= G; g += 2) {
            const uint8_t *p = wq + g * gbytes;
            if (((g * gbytes) & 63) == 0)
                _mm_prefetch((const char *)pf + g * gbytes, _MM_HINT_T0);
            __m512i wv = BITS == 4 ? unpack64(p) : _mm512_loadu_si512((const void *)p);
            for (int t = 0; t < NT; t++) {
                __m512i d = dot64(_mm512_setzero_si512(), wv, _mm512_loadu_si512((const void *)(a[t].q + g * 32)), BITS);
                __m512 sc = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(sw[g] * a[t].s[g]),
                                                 _mm512_set1_ps(sw[g + 1] * a[t].s[g + 1]));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sc, acc[t]);
            }
        }
        if (g < G) { /* an odd last group: the low half only */
            const uint8_t *p = wq + g * gbytes;
            __m512i wv = BITS == 4 ? unpack32(p) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)p));
            for (int t = 0; t < NT; t++) {
                __m512i av = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(a[t].q + g * 32)));
                __m512i d = dot64(_mm512_setzero_si512(), wv, av, BITS);
                __m512 sc = _mm512_maskz_mov_ps(0x00FF, _mm512_set1_ps(sw[g] * a[t].s[g]));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sc, acc[t]);
            }
        }
    } else {
        for (int64_t g = 0; g < G; g++) {
            const uint8_t *p = wq + g * gbytes;
            for (int64_t o = 0; o < gbytes; o += 64)
                _mm_prefetch((const char *)pf + g * gbytes + o, _MM_HINT_T0);
            __m512i wv[2];
            for (int c = 0; c < NB / 2; c++)
                wv[c] = BITS == 4 ? unpack64(p + 32 * c) : _mm512_loadu_si512((const void *)(p + 64 * c));
            for (int t = 0; t < NT; t++) {
                const int8_t *aq = a[t].q + g * NB * 32;
                __m512i d = _mm512_setzero_si512();
                for (int c = 0; c < NB / 2; c++)
                    d = dot64(d, wv[c], _mm512_loadu_si512((const void *)(aq + 64 * c)), BITS);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(sw[g] * a[t].s[g]), acc[t]);
            }
        }
    }
    for (int t = 0; t < NT; t++)
        y[t * ys] = _mm512_reduce_add_ps(acc[t]) + (BITS == 4 ? corr_dot(sw, a[t].c, G) : 0.0f);
}

#define ROW_FNS(BITS, NB)                                                                                  \
    static void tile_##BITS##_##NB(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, int nt,   \
                                   float *y, int64_t ys) {                                                 \
        for (int64_t i = 0; i < nr; i++)                                                                   \
            switch (nt) {                                                                                  \
            case 4: row_k(w, r0 + i, a, 4, y + i, ys, BITS, NB); break;                                    \
            case 3: row_k(w, r0 + i, a, 3, y + i, ys, BITS, NB); break;                                    \
            case 2: row_k(w, r0 + i, a, 2, y + i, ys, BITS, NB); break;                                    \
            default: row_k(w, r0 + i, a, 1, y + i, ys, BITS, NB); break;                                   \
            }                                                                                              \
    }
ROW_FNS(4, 1)
ROW_FNS(4, 2)
ROW_FNS(4, 4)
ROW_FNS(8, 1)
ROW_FNS(8, 2)
ROW_FNS(8, 4)

static void tile_dot(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, int nt, float *y, int64_t ys) {
    int nb = w->gs / 32;
    if (w->bits == 4)
        (nb == 1 ? tile_4_1 : nb == 2 ? tile_4_2 : tile_4_4)(w, r0, nr, a, nt, y, ys);
    else
        (nb == 1 ? tile_8_1 : nb == 2 ? tile_8_2 : tile_8_4)(w, r0, nr, a, nt, y, ys);
}

static void rows_dot(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, float *y) {
    tile_dot(w, r0, nr, a, 1, y, 1);
}

/* The AVX2 quantizer is bit-identical to the reference already; activations are a tiny part of the
 * work, so this level reuses it. */
static void quantize_act(const float *x, int64_t n, int gs, int8_t *q, float *s, float *c) {
    kr_kernels_avx2.quantize_act(x, n, gs, q, s, c);
}

/* The bandwidth probe measures memory, not SIMD width: the AVX2 one, so both levels' rooflines are
 * against the same number. */
static uint64_t read_sum(const uint8_t *p, size_t n) { return kr_kernels_avx2.read_sum(p, n); }

static float dot_f32(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) { /* the tail under a mask: no scalar loop */
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* Attention is bound by loads from L2 and FMA chains at the AVX2 tile sizes; the 16-wide version would
 * need 32 accumulators for the same reuse. The AVX2 tiles it is. */
static void attn_scores(const float *q, int64_t qs, int nh, const float *k, int64_t ks, int nk, int64_t d, float scale,
                        float *s, int64_t ss) {
    kr_kernels_avx2.attn_scores(q, qs, nh, k, ks, nk, d, scale, s, ss);
}

static void attn_values(const float *p, int64_t ps, int nh, const float *v, int64_t vs, int nk, int64_t d, float *o,
                        int64_t os) {
    kr_kernels_avx2.attn_values(p, ps, nh, v, vs, nk, d, o, os);
}

static float exp_sum(float *x, int n, float m) { return kr_kernels_avx2.exp_sum(x, n, m); }

const kr_kernels kr_kernels_avx512 = {KR_ISA_AVX512, "avx512", quantize_act, rows_dot, tile_dot, read_sum, dot_f32,
                                      attn_scores,   attn_values, exp_sum};
