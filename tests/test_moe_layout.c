/* The GPU expert layout (backend/cuda/moe_layout.h), on the CPU: every packed element reads back as
 * the CPU quantization's integer and bf16 scale; the bytes each lane of a warp fetches are exactly
 * the B-fragment elements the header promises (re-derived here from the header's formulas, not
 * from the packer's code); bad shapes are refused naming the field; bf16 rounding is to nearest even. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "backend/cuda/moe_layout.h"
#include "test.h"

static unsigned long long rng = 0x2545F4914F6CDD1Dull;

static void check_matrix(int64_t n, int64_t k, int bits, int gs) {
    kr_qmatrix q;
    CHECK(kr_qmatrix_shape(&q, n, k, bits, gs) == KR_OK, "shape");
    uint8_t *qb = malloc((size_t)kr_qmatrix_qbytes(&q));
    float *sb = malloc((size_t)kr_qmatrix_sbytes(&q)), *x = malloc((size_t)k * sizeof *x);
    q.q = qb;
    q.s = sb;
    for (int64_t r = 0; r < n; r++) {
        float amp = r % 9 == 8 ? 0.0f : 0.01f * (float)(1 + r % 5); /* zero rows too */
        for (int64_t j = 0; j < k; j++)
            x[j] = amp * test_frand(&rng);
        kr_quantize_row(&q, r, x);
    }
    uint8_t *pq = malloc((size_t)kr_gpu_qlayout_qbytes(n, k, bits));
    uint16_t *ps = malloc((size_t)kr_gpu_qlayout_sbytes(n, k, gs));
    CHECK(kr_gpu_qlayout_pack(&q, pq, ps) == KR_OK, "pack: %s", kr_error());

    int bad = 0, bad_s = 0, bad_frag = 0, bad_sfrag = 0;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) {
            bad += kr_gpu_qlayout_get(pq, n, k, bits, r, j) != kr_qmatrix_get(&q, r, j);
            bad_s += kr_gpu_qlayout_scale(ps, n, k, gs, r, j) != kr_f32_to_bf16(q.s[r * q.groups + j / gs]);
        }
    /* what lane l of the warp loads from tile (nt, kt), per the header */
    int tb = bits == 4 ? 512 : 1024;
    for (int64_t nt = 0; nt < n / 64; nt++)
        for (int64_t kt = 0; kt < k / 16; kt++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *lb = pq + (nt * (k / 16) + kt) * tb + l * (tb / 32);
                int g = l / 4, c = l % 4;
                if (bits == 4) {
                    for (int jw = 0; jw < 4; jw++) {
                        uint32_t w;
                        memcpy(&w, lb + 4 * jw, 4);
                        for (int p = 0; p < 8; p++) {
                            int s = 2 * jw + ((p & 3) >> 1), col = 2 * c + 8 * (p & 1) + (p >> 2);
                            int v = (int)((w >> (4 * p)) & 15) - 8;
                            bad_frag += v != kr_qmatrix_get(&q, nt * 64 + 8 * s + g, kt * 16 + col);
                        }
                    }
                } else {
                    for (int s = 0; s < 8; s++)
                        for (int b = 0; b < 4; b++) {
                            int col = 2 * c + (b & 1) + 8 * (b >> 1);
                            bad_frag += (int)lb[4 * s + b] - 128 != kr_qmatrix_get(&q, nt * 64 + 8 * s + g, kt * 16 + col);
                        }
                }
            }
    for (int64_t nt = 0; nt < n / 64; nt++)
        for (int64_t G = 0; G < k / gs; G++)
            for (int l = 0; l < 32; l++)
                for (int s = 0; s < 8; s++) {
                    uint16_t got = ps[(nt * (k / gs) + G) * 64 + 8 * (l / 4) + s];
                    int64_t row = nt * 64 + 8 * s + l / 4;
                    bad_sfrag += got != kr_f32_to_bf16(q.s[row * q.groups + G]);
                }
    CHECK(bad == 0 && bad_s == 0, "int%d g%d [%lld, %lld]: %d values and %d scales differ", bits, gs, (long long)n,
          (long long)k, bad, bad_s);
    CHECK(bad_frag == 0 && bad_sfrag == 0, "int%d g%d: %d fragment values and %d fragment scales differ", bits, gs,
          bad_frag, bad_sfrag);
    free(qb);
    free(sb);
    free(x);
    free(pq);
    free(ps);
}

static void check_refused(int64_t n, int64_t k, int bits, int gs, const char *word) {
    kr_status s = kr_gpu_qlayout_check(n, k, bits, gs);
    CHECK(s == KR_ERR_ARG && strstr(kr_error(), word), "[%lld, %lld] int%d g%d: status %d, message '%s' should name %s",
          (long long)n, (long long)k, bits, gs, (int)s, kr_error(), word);
}

int main(void) {
    int gss[3] = {32, 64, 128};
    for (int b = 4; b <= 8; b += 4)
        for (int i = 0; i < 3; i++) {
            check_matrix(128, 384, b, gss[i]);
            check_matrix(64, 128, b, gss[i]);
        }
    check_refused(100, 128, 4, 32, "rows");
    check_refused(128, 96, 4, 64, "cols");
    check_refused(128, 32, 4, 32, "cols");
    check_refused(128, 128, 3, 32, "bits");
    check_refused(128, 128, 4, 16, "group size");

    CHECK(kr_f32_to_bf16(1.0f) == 0x3F80, "1.0");
    CHECK(kr_f32_to_bf16(1.0f + 1.0f / 256) == 0x3F80, "tie rounds to even (down)");
    CHECK(kr_f32_to_bf16(1.0f + 3.0f / 256) == 0x3F82, "tie rounds to even (up)");
    CHECK(kr_f32_to_bf16(-2.5f) == 0xC020, "-2.5");
    CHECK(kr_bf16_to_f32(kr_f32_to_bf16(NAN)) != kr_bf16_to_f32(kr_f32_to_bf16(NAN)), "NaN stays NaN");
    return test_summary("test_moe_layout");
}
