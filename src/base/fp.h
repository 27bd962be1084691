/* Scalar conversions of the storage float formats to float32: bf16, IEEE f16, FP8 E4M3 (fn variant:
 * no infinities, 0x7f/0xff are NaN, max 448). Bit-exact; these are the reference for any SIMD version. */
#ifndef KR_BASE_FP_H
#define KR_BASE_FP_H

#include <stdint.h>
#include <string.h>

static inline float kr_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t kr_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float kr_bf16_to_f32(uint16_t h) { return kr_bits_to_f32((uint32_t)h << 16); }

static inline float kr_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return kr_bits_to_f32(kr_f32_to_bits(v) | sign);
    }
    if (exp == 31) /* inf or NaN */
        return kr_bits_to_f32(sign | 0x7f800000u | (mant << 13));
    return kr_bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline float kr_fp8_e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t exp = (b >> 3) & 0xfu;
    uint32_t mant = b & 0x7u;
    if (exp == 0xf && mant == 0x7)
        return kr_bits_to_f32(sign | 0x7fc00000u);
    if (exp == 0) { /* zero or subnormal: mant * 2^-9 */
        float v = (float)mant * (1.0f / 512.0f);
        return kr_bits_to_f32(kr_f32_to_bits(v) | sign);
    }
    return kr_bits_to_f32(sign | ((exp + 120u) << 23) | (mant << 20));
}

/* Round-to-nearest-even float32 -> bf16 (used by tests and tools that write bf16). */
static inline uint16_t kr_f32_to_bf16(float f) {
    uint32_t u = kr_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#endif
