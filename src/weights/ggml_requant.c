/* Exact ggml -> krasis INT4/INT8 re-encoding (ggml_requant.h). */
#include "weights/ggml_requant.h"

#include <string.h>

#include "base/fp.h"
#include "weights/ggml_quants.h"

bool kr_ggml_reencodes(uint32_t type, int bits, int gs) {
    if (gs != 32)
        return false;
    if (type == KR_GGML_Q4_0)
        return bits == 4 || bits == 8;
    return bits == 8 && (type == KR_GGML_Q8_0 || type == KR_GGML_Q5_0 || type == KR_GGML_IQ4_NL);
}

int64_t kr_ggml_reencode_row(uint32_t type, const uint8_t *src, int64_t cols, const kr_qmatrix *q, int64_t r) {
    if (!kr_ggml_reencodes(type, q->bits, q->gs) || q->cols != cols || cols % 32)
        return -1;
    uint8_t *row = (uint8_t *)q->q + r * q->row_bytes;
    float *srow = (float *)q->s + r * q->groups;
    int64_t clamped = 0;
    static const int8_t iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    /* f16 d, then: 16 nibble bytes (Q4_0, IQ4_NL) / u32 fifth bits + 16 nibble bytes (Q5_0) / 32 int8 */
    size_t bb = type == KR_GGML_Q8_0 ? 34 : type == KR_GGML_Q5_0 ? 22 : 18;
    for (int64_t g = 0; g < cols / 32; g++) {
        const uint8_t *blk = src + (size_t)g * bb;
        uint16_t d;
        memcpy(&d, blk, 2);
        srow[g] = kr_f16_to_f32(d);
        if (type == KR_GGML_Q4_0 && q->bits == 4) {
            memcpy(row + g * 16, blk + 2, 16);
        } else if (type == KR_GGML_Q5_0) {
            uint32_t qh;
            memcpy(&qh, blk + 2, 4);
            const uint8_t *qs = blk + 6;
            for (int i = 0; i < 16; i++) {
                row[g * 32 + i] = (uint8_t)(int8_t)(((qs[i] & 0xF) | (int)((qh >> i & 1) << 4)) - 16);
                row[g * 32 + i + 16] = (uint8_t)(int8_t)(((qs[i] >> 4) | (int)((qh >> (i + 16) & 1) << 4)) - 16);
            }
        } else if (type == KR_GGML_IQ4_NL) {
            for (int i = 0; i < 16; i++) {
                row[g * 32 + i] = (uint8_t)iq4nl[blk[2 + i] & 0xF];
                row[g * 32 + i + 16] = (uint8_t)iq4nl[blk[2 + i] >> 4];
            }
        } else if (type == KR_GGML_Q4_0) {
            for (int i = 0; i < 16; i++) {
                row[g * 32 + i] = (uint8_t)(int8_t)((blk[2 + i] & 0xF) - 8);
                row[g * 32 + i + 16] = (uint8_t)(int8_t)((blk[2 + i] >> 4) - 8);
            }
        } else {
            for (int i = 0; i < 32; i++) {
                int8_t c = (int8_t)blk[2 + i];
                if (c == -128) {
                    c = -127;
                    clamped++;
                }
                row[g * 32 + i] = (uint8_t)c;
            }
        }
    }
    return clamped;
}
