/* Group quantizers against their definition on random data, ragged shapes included: stored integers in
 * range, |max| of each group mapped to the top code, error at most half a step, the INT4 nibble layout
 * round-trips, and the activation quantizer equals round(x * 127 / amax). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "test.h"


static unsigned long long rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { return test_frand(&rng); }

static void test_weights(int64_t rows, int64_t cols, int bits, int gs) {
    kr_qmatrix q;
    CHECK(kr_qmatrix_shape(&q, rows, cols, bits, gs) == KR_OK, "shape");
    uint8_t *qb = malloc((size_t)kr_qmatrix_qbytes(&q));
    float *sb = malloc((size_t)kr_qmatrix_sbytes(&q));
    q.q = qb;
    q.s = sb;
    float *x = malloc((size_t)cols * sizeof *x), *y = malloc((size_t)cols * sizeof *y);
    int qmax = bits == 4 ? 7 : 127, qmin = bits == 4 ? -8 : -127;
    for (int64_t r = 0; r < rows; r++) {
        float amp = r % 5 == 4 ? 0.0f : powf(10.0f, (float)(r % 7) - 3); /* zero rows and many scales */
        for (int64_t j = 0; j < cols; j++)
            x[j] = amp * frand();
        kr_quantize_row(&q, r, x);
        kr_dequantize_row(&q, r, y);
        for (int64_t g = 0; g < q.groups; g++) {
            int64_t j0 = g * gs, j1 = j0 + gs < cols ? j0 + gs : cols;
            float amax = 0, s = q.s[r * q.groups + g];
            int top = 0;
            for (int64_t j = j0; j < j1; j++)
                amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
            CHECK(fabsf(s - amax / qmax) <= 1e-6f * amax, "scale of row %lld group %lld", (long long)r, (long long)g);
            for (int64_t j = j0; j < j1; j++) {
                int v = kr_qmatrix_get(&q, r, j);
                CHECK(v >= qmin && v <= qmax, "value %d out of range", v);
                top |= v == qmax || v == -qmax;
                CHECK(fabsf(y[j] - x[j]) <= 0.5f * s * 1.0001f + 1e-30f, "error at [%lld,%lld]: %g vs %g (step %g)",
                      (long long)r, (long long)j, y[j], x[j], s);
            }
            CHECK(amax == 0 || top, "group max not mapped to the top code");
            for (int64_t j = j1; j < j0 + gs; j++)
                CHECK(kr_qmatrix_get(&q, r, j) == 0, "padding is not zero");
        }
    }
    free(qb);
    free(sb);
    free(x);
    free(y);
}

static void test_acts(int64_t n, int gs) {
    int64_t groups = (n + gs - 1) / gs;
    float *x = malloc((size_t)n * sizeof *x), *s = malloc((size_t)groups * sizeof *s), *c = malloc((size_t)groups * sizeof *c);
    int8_t *q = malloc((size_t)(groups * gs));
    for (int64_t j = 0; j < n; j++)
        x[j] = frand() * (j % 3 ? 1.0f : 40.0f);
    kr_quantize_act_ref(x, n, gs, q, s, c);
    for (int64_t g = 0; g < groups; g++) {
        float amax = 0;
        int sum = 0;
        for (int64_t j = g * gs; j < (g + 1) * gs && j < n; j++)
            amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        for (int64_t j = g * gs; j < (g + 1) * gs; j++) {
            int want = j < n && amax > 0 ? (int)lrintf(x[j] * (127.0f / amax)) : 0;
            CHECK(q[j] == want, "act %lld: %d vs %d", (long long)j, q[j], want);
            sum += q[j];
        }
        CHECK(s[g] == amax / 127.0f, "act scale");
        CHECK(c[g] == -8.0f * s[g] * (float)sum, "act correction");
    }
    free(x);
    free(s);
    free(c);
    free(q);
}

int main(void) {
    static const int64_t shapes[][2] = {{1, 32}, {3, 100}, {7, 257}, {16, 2048}, {5, 33}, {2, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int bits = 4; bits <= 8; bits += 4)
            for (int gs = 32; gs <= 128; gs *= 2) {
                test_weights(shapes[i][0], shapes[i][1], bits, gs);
                test_acts(shapes[i][1], gs);
            }
    kr_qmatrix q;
    CHECK(kr_qmatrix_shape(&q, 4, 64, 3, 32) != KR_OK, "int3 accepted");
    CHECK(kr_qmatrix_shape(&q, 4, 64, 4, 48) != KR_OK, "gs 48 accepted");
    return test_summary("test_quant");
}
