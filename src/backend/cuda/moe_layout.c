/* Packer for the GPU expert layout (moe_layout.h has the definition). q_pos / s_pos are the layout's
 * formulas (kr_gpu_qlayout_get inverts them for the tests); the packer evaluates q_pos once per call for
 * the 64 x 16 positions of a tile and then copies tile by tile, row tiles spread over the thread pool:
 * a 600 GB model's GPU cache is built from ~10^12 weights, so the per-element formula is too slow. */
#include "backend/cuda/moe_layout.h"

#include <string.h>

#include "backend/cpu/threadpool.h"


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

typedef struct {
    const kr_qmatrix *src;
    uint8_t *dst_q;
    uint16_t *dst_s;
    uint16_t at[64 * 16]; /* byte offset inside a tile of (row r, col cc) at r * 16 + cc */
    uint8_t shift[64 * 16];
} pack_job;

/* row tiles [nt0, nt1) of the job's matrix */
static void pack_tiles(void *ctx, int w, int n) {
    const pack_job *j = ctx;
    const kr_qmatrix *src = j->src;
    int64_t k = src->cols, n_tiles = src->rows / 64, kts = k / 16;
    int bits = src->bits;
    int64_t tb = bits == 4 ? 512 : 1024;
    for (int64_t nt = n_tiles * w / n; nt < n_tiles * (w + 1) / n; nt++) {
        for (int r = 0; r < 64; r++) {
            int64_t row = nt * 64 + r;
            const uint8_t *in = src->q + row * src->row_bytes;
            for (int64_t kt = 0; kt < kts; kt++) {
                uint8_t *tile = j->dst_q + (nt * kts + kt) * tb;
                const uint16_t *at = j->at + r * 16;
                if (bits == 8) {
                    for (int cc = 0; cc < 16; cc++)
                        tile[at[cc]] = (uint8_t)((int8_t)in[kt * 16 + cc] + 128);
                } else {
                    /* CPU INT4: block of 32 columns = 16 bytes, low nibbles columns 0..15, high 16..31 */
                    const uint8_t *blk = in + (kt / 2) * 16;
                    int hi = (int)(kt & 1) * 4;
                    const uint8_t *sh = j->shift + r * 16;
                    for (int cc = 0; cc < 16; cc++) /* stored nibble = q + 8, the same bits in both layouts */
                        tile[at[cc]] |= (uint8_t)(((blk[cc] >> hi) & 15) << sh[cc]);
                }
            }
            for (int64_t gi = 0; gi < k / src->gs; gi++)
                j->dst_s[s_pos(k, src->gs, row, gi * src->gs)] = kr_f32_to_bf16(src->s[row * src->groups + gi]);
        }
    }
}

kr_status kr_gpu_qlayout_pack(const kr_qmatrix *src, uint8_t *dst_q, uint16_t *dst_s) {
    KR_TRY(kr_gpu_qlayout_check(src->rows, src->cols, src->bits, src->gs));
    static _Thread_local pack_job j; /* 3 KiB of tables: not on a worker's stack */
    j.src = src;
    j.dst_q = dst_q;
    j.dst_s = dst_s;
    for (int r = 0; r < 64; r++)
        for (int cc = 0; cc < 16; cc++) {
            int sh;
            j.at[r * 16 + cc] = (uint16_t)q_pos(src->cols, src->bits, r, cc, &sh); /* tile (0, 0) */
            j.shift[r * 16 + cc] = (uint8_t)sh;
        }
    if (src->bits == 4)
        memset(dst_q, 0, (size_t)kr_gpu_qlayout_qbytes(src->rows, src->cols, src->bits));
    kr_pool_run_work(pack_tiles, &j, (double)src->rows * (double)src->cols);
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
