/* Dequantization of ggml block formats. Each function mirrors ggml's reference C (and the gguf Python
 * package's numpy code, the test oracle): the same products in the same order, in float32, so results
 * are bit-identical. Fields are read with memcpy: blocks inside a GGUF mapping need not be aligned. */
#include "weights/ggml_quants.h"

#include <string.h>

#include "base/fp.h"

#define QK_K 256

static const kr_ggml_type_info infos[KR_GGML_TYPE_LIMIT] = {
    [KR_GGML_F32] = {"F32", 1, 4, true},          [KR_GGML_F16] = {"F16", 1, 2, true},
    [KR_GGML_Q4_0] = {"Q4_0", 32, 18, true},      [KR_GGML_Q4_1] = {"Q4_1", 32, 20, true},
    [KR_GGML_Q5_0] = {"Q5_0", 32, 22, true},      [KR_GGML_Q5_1] = {"Q5_1", 32, 24, true},
    [KR_GGML_Q8_0] = {"Q8_0", 32, 34, true},      [KR_GGML_Q8_1] = {"Q8_1", 32, 36, false},
    [KR_GGML_Q2_K] = {"Q2_K", QK_K, 84, true},    [KR_GGML_Q3_K] = {"Q3_K", QK_K, 110, true},
    [KR_GGML_Q4_K] = {"Q4_K", QK_K, 144, true},   [KR_GGML_Q5_K] = {"Q5_K", QK_K, 176, true},
    [KR_GGML_Q6_K] = {"Q6_K", QK_K, 210, true},   [KR_GGML_Q8_K] = {"Q8_K", QK_K, 292, false},
    [16] = {"IQ2_XXS", QK_K, 66, false},          [17] = {"IQ2_XS", QK_K, 74, false},
    [18] = {"IQ3_XXS", QK_K, 98, false},          [19] = {"IQ1_S", QK_K, 50, false},
    [KR_GGML_IQ4_NL] = {"IQ4_NL", 32, 18, true},  [21] = {"IQ3_S", QK_K, 110, false},
    [22] = {"IQ2_S", QK_K, 82, false},            [KR_GGML_IQ4_XS] = {"IQ4_XS", QK_K, 136, true},
    [24] = {"I8", 1, 1, false},                   [25] = {"I16", 1, 2, false},
    [26] = {"I32", 1, 4, false},                  [27] = {"I64", 1, 8, false},
    [28] = {"F64", 1, 8, false},                  [29] = {"IQ1_M", QK_K, 56, false},
    [KR_GGML_BF16] = {"BF16", 1, 2, true},        [34] = {"TQ1_0", QK_K, 54, false},
    [35] = {"TQ2_0", QK_K, 66, false},            [39] = {"MXFP4", 32, 17, false},
};

kr_ggml_type_info kr_ggml_info(uint32_t type) {
    if (type >= KR_GGML_TYPE_LIMIT)
        return (kr_ggml_type_info){0};
    return infos[type];
}

static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return kr_f16_to_f32(h);
}

static void q4_0(const uint8_t *b, float *y) {
    float d = f16_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 0xF) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

static void q4_1(const uint8_t *b, float *y) {
    float d = f16_at(b), m = f16_at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(qs[j] & 0xF) + m;
        y[j + 16] = d * (float)(qs[j] >> 4) + m;
    }
}

/* Q5_0 / Q5_1: the fifth bit of element j is bit j of the 32-bit qh */
static void q5(const uint8_t *b, float *y, bool with_min) {
    float d = f16_at(b), m = with_min ? f16_at(b + 2) : 0;
    const uint8_t *p = b + (with_min ? 4 : 2);
    uint32_t qh;
    memcpy(&qh, p, 4);
    const uint8_t *qs = p + 4;
    for (int j = 0; j < 16; j++) {
        int x0 = (qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
        int x1 = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        if (with_min) {
            y[j] = d * (float)x0 + m;
            y[j + 16] = d * (float)x1 + m;
        } else {
            y[j] = d * (float)(x0 - 16);
            y[j + 16] = d * (float)(x1 - 16);
        }
    }
}

static void q8_0(const uint8_t *b, float *y) {
    float d = f16_at(b);
    for (int j = 0; j < 32; j++)
        y[j] = (float)(int8_t)b[2 + j] * d;
}

static void q2_k(const uint8_t *b, float *y) {
    const uint8_t *scales = b, *qs = b + 16;
    float d = f16_at(b + 80), dmin = f16_at(b + 82);
    for (int e = 0; e < QK_K; e++) {
        int g = e / 128, s = (e % 128) / 32, l = e % 32, sub = e / 16;
        float dl = d * (float)(scales[sub] & 0xF), ml = dmin * (float)(scales[sub] >> 4);
        y[e] = dl * (float)((qs[g * 32 + l] >> (2 * s)) & 3) - ml;
    }
}

static void q3_k(const uint8_t *b, float *y) {
    const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
    float d = f16_at(b + 108);
    float dl[16];
    for (int i = 0; i < 16; i++) {
        int lo = (i < 8 ? sc[i] : sc[i - 8] >> 4) & 0xF;
        int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        dl[i] = d * (float)((int8_t)(lo | hi << 4) - 32);
    }
    for (int e = 0; e < QK_K; e++) {
        int g = e / 128, s = (e % 128) / 32, l = e % 32;
        int ql = (qs[g * 32 + l] >> (2 * s)) & 3;
        int high = ((hmask[l] >> (e / 32)) & 1) ^ 1; /* a set mask bit means no offset */
        y[e] = dl[e / 16] * (float)(ql - (high << 2));
    }
}

/* the 6-bit scales and mins of Q4_K / Q5_K, packed in 12 bytes */
static void scale_min_k4(const uint8_t *s, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[4 + j] & 0x3F;
        sc[4 + j] = (uint8_t)((s[8 + j] & 0xF) | ((s[j] >> 2) & 0x30));
        mn[4 + j] = (uint8_t)((s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30));
    }
}

static void q45_k(const uint8_t *b, float *y, bool five) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    uint8_t sc[8], mn[8];
    scale_min_k4(b + 4, sc, mn);
    const uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
    for (int e = 0; e < QK_K; e++) {
        int sub = e / 32, g = e / 64, h = (e / 32) % 2, l = e % 32;
        int q = (qs[g * 32 + l] >> (4 * h)) & 0xF;
        if (five)
            q |= ((qh[l] >> sub) & 1) << 4;
        float dl = d * (float)sc[sub], ml = dmin * (float)mn[sub];
        y[e] = dl * (float)q - ml;
    }
}

static void q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *scales = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int e = 0; e < QK_K; e++) {
        int g = e / 128, r = e % 128;
        int lo = (ql[g * 64 + r % 64] >> (4 * (r / 64))) & 0xF;
        int hi = (qh[g * 32 + r % 32] >> (2 * (r / 32))) & 3;
        float dl = d * (float)scales[e / 16];
        y[e] = dl * (float)((int8_t)(lo | hi << 4) - 32);
    }
}

static void iq4_nl(const uint8_t *b, float *y) {
    float d = f16_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)kvalues_iq4nl[qs[j] & 0xF];
        y[j + 16] = d * (float)kvalues_iq4nl[qs[j] >> 4];
    }
}

static void iq4_xs(const uint8_t *b, float *y) {
    float d = f16_at(b);
    uint16_t sh;
    memcpy(&sh, b + 2, 2);
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int sub = 0; sub < 8; sub++) {
        int ls = (sl[sub / 2] >> (4 * (sub % 2))) & 0xF, hs = (sh >> (2 * sub)) & 3;
        float dl = d * (float)((int8_t)(ls | hs << 4) - 32);
        for (int l = 0; l < 16; l++) {
            y[sub * 32 + l] = dl * (float)kvalues_iq4nl[qs[sub * 16 + l] & 0xF];
            y[sub * 32 + 16 + l] = dl * (float)kvalues_iq4nl[qs[sub * 16 + l] >> 4];
        }
    }
}

void kr_ggml_dequantize(uint32_t type, const uint8_t *src, int64_t n, float *dst) {
    kr_ggml_type_info ti = kr_ggml_info(type);
    int64_t blocks = n / ti.block_elems;
    for (int64_t i = 0; i < blocks; i++) {
        const uint8_t *b = src + i * ti.block_bytes;
        float *y = dst + i * ti.block_elems;
        switch (type) {
        case KR_GGML_F32: memcpy(y, b, 4); break;
        case KR_GGML_F16: *y = f16_at(b); break;
        case KR_GGML_BF16: {
            uint16_t h;
            memcpy(&h, b, 2);
            *y = kr_bf16_to_f32(h);
            break;
        }
        case KR_GGML_Q4_0: q4_0(b, y); break;
        case KR_GGML_Q4_1: q4_1(b, y); break;
        case KR_GGML_Q5_0: q5(b, y, false); break;
        case KR_GGML_Q5_1: q5(b, y, true); break;
        case KR_GGML_Q8_0: q8_0(b, y); break;
        case KR_GGML_Q2_K: q2_k(b, y); break;
        case KR_GGML_Q3_K: q3_k(b, y); break;
        case KR_GGML_Q4_K: q45_k(b, y, false); break;
        case KR_GGML_Q5_K: q45_k(b, y, true); break;
        case KR_GGML_Q6_K: q6_k(b, y); break;
        case KR_GGML_IQ4_NL: iq4_nl(b, y); break;
        case KR_GGML_IQ4_XS: iq4_xs(b, y); break;
        default: memset(y, 0, (size_t)ti.block_elems * sizeof *y); break; /* callers check dequantizable */
        }
    }
}
