/* Storage float formats: values fixed by the format definitions, and every FP8 / F16 bit pattern
 * against an independent ldexp decoding. */
#include <math.h>

#include "base/fp.h"
#include "test.h"

static double fp8_ref(int b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7)
        return NAN;
    double v = e ? ldexp(1 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
    return s ? -v : v;
}

static double f16_ref(int h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31 ? (m ? NAN : INFINITY) : e ? ldexp(1 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
    return s ? -v : v;
}

static int same(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

int main(void) {
    CHECK(kr_bf16_to_f32(0x3f80) == 1.0f, "bf16 1");
    CHECK(kr_bf16_to_f32(0xc000) == -2.0f, "bf16 -2");
    CHECK(kr_f16_to_f32(0x3c00) == 1.0f, "f16 1");
    CHECK(kr_f16_to_f32(0x3555) == 0.333251953125f, "f16 1/3");
    CHECK(kr_f16_to_f32(0x0001) == ldexpf(1, -24), "f16 smallest subnormal");
    CHECK(isinf(kr_f16_to_f32(0xfc00)) && kr_f16_to_f32(0xfc00) < 0, "f16 -inf");
    CHECK(kr_fp8_e4m3_to_f32(0x38) == 1.0f, "fp8 1");
    CHECK(kr_fp8_e4m3_to_f32(0x7e) == 448.0f, "fp8 max 448");
    CHECK(kr_fp8_e4m3_to_f32(0xb8) == -1.0f, "fp8 -1");
    CHECK(kr_fp8_e4m3_to_f32(0x08) == ldexpf(1, -6), "fp8 min normal");
    CHECK(kr_fp8_e4m3_to_f32(0x01) == ldexpf(1, -9), "fp8 min subnormal");
    CHECK(isnan(kr_fp8_e4m3_to_f32(0x7f)) && isnan(kr_fp8_e4m3_to_f32(0xff)), "fp8 NaN");
    int bad = 0;
    for (int b = 0; b < 256; b++)
        bad += !same(kr_fp8_e4m3_to_f32((uint8_t)b), fp8_ref(b));
    CHECK(bad == 0, "%d FP8 patterns decode wrongly", bad);
    bad = 0;
    for (int h = 0; h < 65536; h++)
        bad += !same(kr_f16_to_f32((uint16_t)h), f16_ref(h));
    CHECK(bad == 0, "%d F16 patterns decode wrongly", bad);
    /* round to nearest even on the way to bf16 */
    CHECK(kr_f32_to_bf16(kr_bits_to_f32(0x3f808000)) == 0x3f80, "tie to even (down)");
    CHECK(kr_f32_to_bf16(kr_bits_to_f32(0x3f818000)) == 0x3f82, "tie to even (up)");
    CHECK(kr_f32_to_bf16(kr_bits_to_f32(0x3f808001)) == 0x3f81, "above the tie rounds up");
    return test_summary("test_fp");
}
