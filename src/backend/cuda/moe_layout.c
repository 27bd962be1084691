/* Packer for the GPU expert layout (moe_layout.h has the definition). Runs once per expert when the
 * GPU cache is built, so it is written for clarity: each output position is computed from the
 * layout's formulas, and kr_gpu_qlayout_get inverts the same formulas for the tests. */
#include "backend/cuda/moe_layout.h"

#include <string.h>


kr_status kr_gpu_qlayout_check(int64_t n, int64_t k, int bits, int gs) {
    if (bits != 4 && bits != 8)
        return kr_fail(KR_ERR_ARG, "GPU expert layout: bits = %d (must be 4 or 8)", bits);
    if (gs != 32 && gs != 64 && gs != 128)
        return kr_fail(KR_ERR_ARG, "GPU expert layout: group size = %d (must be 32, 64 or 128)", gs);
    if (n <= 0 || n % 64)
        return kr_fail(KR_ERR_ARG, "GPU expert layout: rows = %lld (must be a positive multiple of 64)", (long long)n);
    if (k <= 0 || k % 64 || k % gs)
        return kr_fail(KR_ERR_ARG, "GPU expert layout: cols = %lld (must be a positive multiple of 64 and of the group size %d)",
                       (long long)k, gs);
    return KR_OK;
}

int64_t kr_gpu_qlayout_qbytes(int64_t n, int64_t k, int bits) { return n * k * bits / 8; }
int64_t kr_gpu_qlayout_sbytes(int64_t n, int64_t k, int gs) { return n * (k / gs) * 2; }

uint16_t kr_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu))
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float kr_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Byte offset of (row, col) in the packed q array and, for INT4, which nibble (0 low, 1 high). */
static int64_t q_pos(int64_t k, int bits, int64_t row, int64_t col, int *nib_shift) {
    int64_t nt = row / 64, kt = col / 16;
    int r = (int)(row % 64), cc = (int)(col % 16);
    int s = r / 8, g = r % 8;                      /* slice and row-in-slice */
    int c = (cc % 8) / 2, hi8 = cc / 8, odd = cc & 1; /* col = 2c + odd + 8 hi8 */
    int lane = 4 * g + c;
    int64_t tile = (nt * (k / 16) + kt) * (bits == 4 ? 512 : 1024);
    if (bits == 8) {
        int b = odd + 2 * hi8;
        *nib_shift = 0;
        return tile + lane * 32 + s * 4 + b;
    }
    /* slice s = 2j + (pp >> 1), column = 2c + 8 (pp & 1) + (p >> 2), pp = p & 3 */
    int j = s / 2, p = (s % 2) * 2 + hi8 + 4 * odd;
    *nib_shift = (p % 2) * 4;                       /* nibble p lives in byte p / 2 of the word */
    return tile + lane * 16 + j * 4 + p / 2;
}

static int64_t s_pos(int64_t k, int gs, int64_t row, int64_t col) {
    int64_t nt = row / 64;
    int r = (int)(row % 64);
    return (nt * (k / gs) + col / gs) * 64 + (r % 8) * 8 + r / 8;
}

kr_status kr_gpu_qlayout_pack(const kr_qmatrix *src, uint8_t *dst_q, uint16_t *dst_s) {
    KR_TRY(kr_gpu_qlayout_check(src->rows, src->cols, src->bits, src->gs));
    int64_t n = src->rows, k = src->cols;
    int bits = src->bits, gs = src->gs;
    if (bits == 4)
        memset(dst_q, 0, (size_t)kr_gpu_qlayout_qbytes(n, k, bits));
    for (int64_t row = 0; row < n; row++) {
        for (int64_t col = 0; col < k; col++) {
            int sh, v = kr_qmatrix_get(src, row, col);
            int64_t at = q_pos(k, bits, row, col, &sh);
            if (bits == 8)
                dst_q[at] = (uint8_t)(v + 128);
            else
                dst_q[at] |= (uint8_t)((v + 8) << sh);
        }
        for (int64_t gi = 0; gi < k / gs; gi++)
            dst_s[s_pos(k, gs, row, gi * gs)] = kr_f32_to_bf16(src->s[row * src->groups + gi]);
    }
    return KR_OK;
}

int kr_gpu_qlayout_get(const uint8_t *q, int64_t n, int64_t k, int bits, int64_t row, int64_t col) {
    (void)n;
    int sh;
    uint8_t b = q[q_pos(k, bits, row, col, &sh)];
    return bits == 8 ? (int)b - 128 : (int)((b >> sh) & 15) - 8;
}

uint16_t kr_gpu_qlayout_scale(const uint16_t *s, int64_t n, int64_t k, int gs, int64_t row, int64_t col) {
    (void)n;
    return s[s_pos(k, gs, row, col)];
}
