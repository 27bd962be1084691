/* AVX2 + FMA kernels (the baseline level: AMD Zen 2/3). INT8 activations times INT4/INT8 weights with
 * maddubs (u8 x s8 -> s16 pairs) and madd (-> s32), one float FMA per group. INT4 nibbles are used as
 * unsigned 0..15 and the +8 offset is removed once per row through the activation's per-group
 * correction (quant.h). Two rows at a time share every activation load; one specialized loop per
 * (bits, group size). Compiled with -mavx2 -mfma. */
#include <immintrin.h>
#include <string.h>

#include "backend/cpu/isa.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* 16 packed bytes -> 32 unsigned nibbles in column order (low nibbles = columns 0..15): one broadcast
 * load, the upper lane shifted by 4, one mask. */
static inline __m256i unpack4(const uint8_t *p) {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    v = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* sum_g sw[g] * c[g]: the INT4 offset correction of one row */
static inline float corr_dot(const float *sw, const float *c, int64_t groups) {
    __m256 acc = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(sw + g), _mm256_loadu_ps(c + g), acc);
    float s = hsum8(acc);
    for (; g < groups; g++)
        s += sw[g] * c[g];
    return s;
}

/* int32 partial sums (8 lanes) of one group of NB 32-column blocks of a row against the activation */
static inline __attribute__((always_inline)) __m256i group4(const uint8_t *wq, const int8_t *aq, int NB) {
    __m256i s16 = _mm256_maddubs_epi16(unpack4(wq), _mm256_loadu_si256((const __m256i *)aq));
    /* int16 sums of up to 4 blocks stay below 4 * 2 * 15 * 127 = 15240: no saturation */
    for (int b = 1; b < NB; b++)
        s16 = _mm256_add_epi16(
            s16, _mm256_maddubs_epi16(unpack4(wq + 16 * b), _mm256_loadu_si256((const __m256i *)(aq + 32 * b))));
    return _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
}

static inline __attribute__((always_inline)) __m256i group8(const uint8_t *wq, const int8_t *aq, int NB) {
    __m256i s32 = _mm256_setzero_si256();
    for (int b = 0; b < NB; b++) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)(wq + 32 * b));
        __m256i av = _mm256_loadu_si256((const __m256i *)(aq + 32 * b));
        /* |w| * (a * sign w): u8 x s8 without overflow since |w|, |a| <= 127 */
        __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
        s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    }
    return s32;
}

/* R rows (1 to 4) from row r; BITS and NB (= gs / 32) are compile-time constants in every caller, so
 * the block loop disappears. Two accumulators per row (even / odd groups) hide the FMA latency. */
static inline __attribute__((always_inline)) void rows_k(const kr_qmatrix *w, int64_t r, int R, const kr_qvec *a,
                                                         float *y, int BITS, int NB) {
    const int64_t G = w->groups, gbytes = NB * 32 * BITS / 8;
    const uint8_t *wq[4];
    const float *sw[4];
    __m256 acc0[4], acc1[4];
    for (int k = 0; k < R; k++) {
        wq[k] = w->q + (r + k) * w->row_bytes;
        sw[k] = w->s + (r + k) * G;
        acc0[k] = acc1[k] = _mm256_setzero_ps();
    }
    int64_t g = 0;
    for (; g + 2 <= G; g += 2) {
        const int8_t *aq = a->q + g * NB * 32;
        float as0 = a->s[g], as1 = a->s[g + 1];
        /* the R rows are contiguous, so the next call's rows follow them: prefetch that block as one
         * sequential stream, R times faster than a row advances (the hardware prefetcher alone keeps
         * too few lines in flight for one core to reach the memory bandwidth) */
        const uint8_t *pq = wq[0] + R * w->row_bytes + g * R * gbytes;
        for (int64_t o = 0; o < 2 * R * gbytes; o += 64)
            _mm_prefetch((const char *)pq + o, _MM_HINT_T0);
        _mm_prefetch((const char *)(sw[0] + R * G + g * R), _MM_HINT_T0);
        for (int k = 0; k < R; k++) {
            __m256i d0 = BITS == 4 ? group4(wq[k] + g * gbytes, aq, NB) : group8(wq[k] + g * gbytes, aq, NB);
            __m256i d1 = BITS == 4 ? group4(wq[k] + (g + 1) * gbytes, aq + NB * 32, NB)
                                   : group8(wq[k] + (g + 1) * gbytes, aq + NB * 32, NB);
            acc0[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(sw[k][g] * as0), acc0[k]);
            acc1[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_set1_ps(sw[k][g + 1] * as1), acc1[k]);
        }
    }
    for (; g < G; g++) {
        const int8_t *aq = a->q + g * NB * 32;
        for (int k = 0; k < R; k++) {
            __m256i d0 = BITS == 4 ? group4(wq[k] + g * gbytes, aq, NB) : group8(wq[k] + g * gbytes, aq, NB);
            acc0[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(sw[k][g] * a->s[g]), acc0[k]);
        }
    }
    for (int k = 0; k < R; k++)
        y[k] = hsum8(_mm256_add_ps(acc0[k], acc1[k])) + (BITS == 4 ? corr_dot(sw[k], a->c, G) : 0.0f);
}

#ifndef R_MAIN
#define R_MAIN 4
#endif
#define ROWS_FN(BITS, NB)                                                                               \
    static void rows_##BITS##_##NB(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, float *y) { \
        int64_t i = 0;                                                                                  \
        for (; i + R_MAIN <= nr; i += R_MAIN)                                                           \
            rows_k(w, r0 + i, R_MAIN, a, y + i, BITS, NB);                                              \
        for (; i < nr; i++)                                                                             \
            rows_k(w, r0 + i, 1, a, y + i, BITS, NB);                                                   \
    }
ROWS_FN(4, 1)
ROWS_FN(4, 2)
ROWS_FN(4, 4)
ROWS_FN(8, 1)
ROWS_FN(8, 2)
ROWS_FN(8, 4)

static void rows_dot(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, float *y) {
    int nb = w->gs / 32;
    if (w->bits == 4)
        (nb == 1 ? rows_4_1 : nb == 2 ? rows_4_2 : rows_4_4)(w, r0, nr, a, y);
    else
        (nb == 1 ? rows_8_1 : nb == 2 ? rows_8_2 : rows_8_4)(w, r0, nr, a, y);
}

/* One row against NT tokens (1 to 4): the row's blocks are unpacked once per group and multiplied with
 * every token's activation, which is what makes prefill cheaper per token than decode. For each
 * (row, token) pair the arithmetic is rows_k's exactly (even groups in acc0, odd ones in acc1, same
 * order), so a token's result does not depend on how many tokens were batched with it. */
static inline __attribute__((always_inline)) void tile_k(const kr_qmatrix *w, int64_t r, const kr_qvec *a, int NT,
                                                         float *y, int64_t ys, int BITS, int NB) {
    const int64_t G = w->groups, gbytes = NB * 32 * BITS / 8;
    const uint8_t *wq = w->q + r * w->row_bytes;
    const float *sw = w->s + r * G;
    __m256 acc[4][2];
    for (int t = 0; t < NT; t++)
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        if ((g & 1) == 0) {
            const uint8_t *pq = wq + w->row_bytes + g * gbytes; /* the next row, as rows_k streams it */
            for (int64_t o = 0; o < 2 * gbytes; o += 64)
                _mm_prefetch((const char *)pq + o, _MM_HINT_T0);
        }
        __m256i wv[4], wabs[4];
        for (int b = 0; b < NB; b++) {
            if (BITS == 4) {
                wv[b] = unpack4(wq + g * gbytes + 16 * b);
            } else {
                wv[b] = _mm256_loadu_si256((const __m256i *)(wq + g * gbytes + 32 * b));
                wabs[b] = _mm256_sign_epi8(wv[b], wv[b]);
            }
        }
        for (int t = 0; t < NT; t++) {
            const int8_t *aq = a[t].q + g * NB * 32;
            __m256i d;
            if (BITS == 4) {
                __m256i s16 = _mm256_maddubs_epi16(wv[0], _mm256_loadu_si256((const __m256i *)aq));
                for (int b = 1; b < NB; b++)
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wv[b], _mm256_loadu_si256((const __m256i *)(aq + 32 * b))));
                d = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            } else {
                d = _mm256_setzero_si256();
                for (int b = 0; b < NB; b++) {
                    __m256i av = _mm256_loadu_si256((const __m256i *)(aq + 32 * b));
                    __m256i p = _mm256_maddubs_epi16(wabs[b], _mm256_sign_epi8(av, wv[b]));
                    d = _mm256_add_epi32(d, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
                }
            }
            acc[t][g & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(sw[g] * a[t].s[g]), acc[t][g & 1]);
        }
    }
    for (int t = 0; t < NT; t++)
        y[t * ys] = hsum8(_mm256_add_ps(acc[t][0], acc[t][1])) + (BITS == 4 ? corr_dot(sw, a[t].c, G) : 0.0f);
}

#define TILE_FN(BITS, NB)                                                                                  \
    static void tile_##BITS##_##NB(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, int nt,   \
                                   float *y, int64_t ys) {                                                 \
        for (int64_t i = 0; i < nr; i++)                                                                   \
            switch (nt) {                                                                                  \
            case 4: tile_k(w, r0 + i, a, 4, y + i, ys, BITS, NB); break;                                   \
            case 3: tile_k(w, r0 + i, a, 3, y + i, ys, BITS, NB); break;                                   \
            case 2: tile_k(w, r0 + i, a, 2, y + i, ys, BITS, NB); break;                                   \
            default: tile_k(w, r0 + i, a, 1, y + i, ys, BITS, NB); break;                                  \
            }                                                                                              \
    }
TILE_FN(4, 1)
TILE_FN(4, 2)
TILE_FN(4, 4)
TILE_FN(8, 1)
TILE_FN(8, 2)
TILE_FN(8, 4)

static void tile_dot(const kr_qmatrix *w, int64_t r0, int64_t nr, const kr_qvec *a, int nt, float *y, int64_t ys) {
    if (nt == 1) { /* decode: the multi-row kernel shares activation loads across rows instead */
        rows_dot(w, r0, nr, a, y);
        return;
    }
    int nb = w->gs / 32;
    if (w->bits == 4)
        (nb == 1 ? tile_4_1 : nb == 2 ? tile_4_2 : tile_4_4)(w, r0, nr, a, nt, y, ys);
    else
        (nb == 1 ? tile_8_1 : nb == 2 ? tile_8_2 : tile_8_4)(w, r0, nr, a, nt, y, ys);
}

/* Bit-identical to kr_quantize_act_ref: same amax, same 127 / amax, same round-to-nearest-even. */
static void quantize_act(const float *x, int64_t n, int gs, int8_t *q, float *s, float *c) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t full = n / gs, g = 0;
    for (; g < full; g++) {
        const float *xg = x + g * gs;
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < gs; j += 8)
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xg + j)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float sc = amax / 127.0f, inv = sc > 0 ? 127.0f / amax : 0;
        __m256 vinv = _mm256_set1_ps(inv);
        __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127), sum = _mm256_setzero_si256();
        for (int j = 0; j < gs; j += 32) {
            __m256i v[4];
            for (int k = 0; k < 4; k++) {
                v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + j + 8 * k), vinv));
                v[k] = _mm256_min_epi32(_mm256_max_epi32(v[k], lo), hi);
                sum = _mm256_add_epi32(sum, v[k]);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            _mm256_storeu_si256((__m256i *)(q + g * gs + j), _mm256_permutevar8x32_epi32(p, perm));
        }
        s[g] = sc;
        c[g] = -8.0f * sc * (float)hsum8i(sum);
    }
    if (full * gs < n)
        kr_quantize_act_ref(x + full * gs, n - full * gs, gs, q + full * gs, s + full, c + full);
}

static uint64_t read_sum(const uint8_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t out[4];
    memcpy(out, &a0, sizeof out);
    return out[0] + out[1] + out[2] + out[3];
}

/* four 8-wide FMA chains (latency 4 x throughput 2 needs 8 in flight; the loads bound it first) */
static float dot_f32(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++)
        r += a[i] * b[i];
    return r;
}

/* the 8 horizontal sums of v[0..7] as one vector: a reduction tree shared by all eight (6 hadds, 2 lane
 * permutes, 1 add) instead of eight separate ones */
static inline __m256 hsum8x8(const __m256 *v) {
    __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Attention tiles: TH heads x TK keys of scores (12 independent FMA chains at 4 x 3, each chunk of a key
 * row loaded once for all heads), TH heads x TC 8-float chunks of values (a key's value chunk loaded once
 * for all heads, the outputs kept in registers over the whole block). Constant tile sizes after inlining. */
/* every tile shape, 1..4 heads x 1..3 keys (or value chunks), as switch cases of constant-size calls */
#define KR_ATTN_TILES(CASE)                                                                                            \
    CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(2, 1) CASE(2, 2) CASE(2, 3) CASE(3, 1) CASE(3, 2) CASE(3, 3) CASE(4, 1)     \
        CASE(4, 2) CASE(4, 3)

static inline __attribute__((always_inline)) void scores_tile(const float *q, int64_t qs, const int TH,
                                                              const float *k, int64_t ks, const int TK, int64_t d,
                                                              float scale, float *s, int64_t ss) {
    __m256 acc[4][3];
    for (int h = 0; h < TH; h++)
        for (int j = 0; j < TK; j++)
            acc[h][j] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 kv[3];
        for (int j = 0; j < TK; j++)
            kv[j] = _mm256_loadu_ps(k + j * ks + i);
        for (int h = 0; h < TH; h++) {
            __m256 qv = _mm256_loadu_ps(q + h * qs + i);
            for (int j = 0; j < TK; j++)
                acc[h][j] = _mm256_fmadd_ps(qv, kv[j], acc[h][j]);
        }
    }
    /* the sums, eight at a time where the tile has eight (short rows: GQA's 128 floats make this epilogue
     * a third of the tile's time with one reduction per sum) */
    __m256 flat[12];
    float sums[16];
    for (int h = 0; h < TH; h++)
        for (int j = 0; j < TK; j++)
            flat[h * TK + j] = acc[h][j];
    int n = 0;
    for (; n + 8 <= TH * TK; n += 8)
        _mm256_storeu_ps(sums + n, hsum8x8(flat + n));
    for (; n < TH * TK; n++)
        sums[n] = hsum8(flat[n]);
    for (int h = 0; h < TH; h++)
        for (int j = 0; j < TK; j++) {
            float r = sums[h * TK + j];
            for (int64_t t = i; t < d; t++)
                r += q[h * qs + t] * k[j * ks + t];
            s[h * ss + j] = scale * r;
        }
}

static void attn_scores(const float *q, int64_t qs, int nh, const float *k, int64_t ks, int nk, int64_t d, float scale,
                        float *s, int64_t ss) {
    for (int h = 0; h < nh; h += 4)
        for (int j = 0; j < nk; j += 3) {
            int th = nh - h < 4 ? nh - h : 4, tk = nk - j < 3 ? nk - j : 3;
            const float *qh = q + h * qs, *kj = k + j * ks;
            float *sh = s + h * ss + j;
#define KR_SCORES_CASE(TH, TK)                                                                                         \
    case TH * 4 + TK: scores_tile(qh, qs, TH, kj, ks, TK, d, scale, sh, ss); break;
            switch (th * 4 + tk) { KR_ATTN_TILES(KR_SCORES_CASE) }
#undef KR_SCORES_CASE
        }
}

static inline __attribute__((always_inline)) void values_tile(const float *p, int64_t ps, const int TH, const float *v,
                                                              int64_t vs, int nk, const int TC, float *o, int64_t os) {
    __m256 acc[4][3];
    for (int h = 0; h < TH; h++)
        for (int c = 0; c < TC; c++)
            acc[h][c] = _mm256_loadu_ps(o + h * os + 8 * c);
    for (int j = 0; j < nk; j++) {
        __m256 vv[3];
        for (int c = 0; c < TC; c++)
            vv[c] = _mm256_loadu_ps(v + j * vs + 8 * c);
        for (int h = 0; h < TH; h++) {
            __m256 pb = _mm256_broadcast_ss(p + h * ps + j);
            for (int c = 0; c < TC; c++)
                acc[h][c] = _mm256_fmadd_ps(pb, vv[c], acc[h][c]);
        }
    }
    for (int h = 0; h < TH; h++)
        for (int c = 0; c < TC; c++)
            _mm256_storeu_ps(o + h * os + 8 * c, acc[h][c]);
}

static void attn_values(const float *p, int64_t ps, int nh, const float *v, int64_t vs, int nk, int64_t d, float *o,
                        int64_t os) {
    int64_t d8 = d & ~(int64_t)7;
    for (int h = 0; h < nh; h += 4) {
        int th = nh - h < 4 ? nh - h : 4;
        const float *ph = p + h * ps;
        float *oh = o + h * os;
        for (int64_t i = 0; i < d8; i += 24) {
            int tc = (int)((d8 - i) / 8 < 3 ? (d8 - i) / 8 : 3);
#define KR_VALUES_CASE(TH, TC)                                                                                         \
    case TH * 4 + TC: values_tile(ph, ps, TH, v + i, vs, nk, TC, oh + i, os); break;
            switch (th * 4 + tc) { KR_ATTN_TILES(KR_VALUES_CASE) }
#undef KR_VALUES_CASE
        }
        for (int hh = 0; hh < th; hh++) /* columns past the last full chunk */
            for (int j = 0; j < nk; j++)
                for (int64_t i = d8; i < d; i++)
                    oh[hh * os + i] += ph[hh * ps + j] * v[j * vs + i];
    }
}

/* exp(x) for x <= 0 (Cephes' single-precision polynomial: x = n ln2 + r, |r| <= ln2 / 2, e^r to degree
 * 7, times 2^n built in the exponent bits); inputs below -87.3 give ~1e-38, not 0 */
static inline __m256 exp_nonpos(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x); /* this operand order lets a NaN through, as expf does */
    __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static float exp_sum(float *x, int n, float m) {
    __m256 vm = _mm256_set1_ps(m), s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    float sum = hsum8(s);
    if (i < n) { /* the tail through the same polynomial, so every element agrees with its neighbours */
        float t[8] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof *t);
        __m256 e = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(t), vm));
        _mm256_storeu_ps(t, e);
        for (int j = 0; j < n - i; j++)
            sum += (x[i + j] = t[j]);
    }
    return sum;
}

const kr_kernels kr_kernels_avx2 = {KR_ISA_AVX2, "avx2",      quantize_act, rows_dot,   tile_dot,
                                    read_sum,    dot_f32,     attn_scores,  attn_values, exp_sum};
