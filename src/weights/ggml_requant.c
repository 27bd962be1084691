/* Exact ggml -> krasis INT4/INT8 re-encoding (ggml_requant.h). */
#include "weights/ggml_requant.h"

#include <string.h>

#include "base/fp.h"
#include "weights/ggml_quants.h"

bool kr_ggml_reencodes(uint32_t type, int bits, int gs) {
    if (gs != 32)
        return false;
    return (type == KR_GGML_Q4_0 && (bits == 4 || bits == 8)) || (type == KR_GGML_Q8_0 && bits == 8);
}

int64_t kr_ggml_reencode_row(uint32_t type, const uint8_t *src, int64_t cols, const kr_qmatrix *q, int64_t r) {
    if (!kr_ggml_reencodes(type, q->bits, q->gs) || q->cols != cols || cols % 32)
        return -1;
    uint8_t *row = (uint8_t *)q->q + r * q->row_bytes;
    float *srow = (float *)q->s + r * q->groups;
    int64_t clamped = 0;
    size_t bb = type == KR_GGML_Q4_0 ? 18 : 34; /* f16 d + 16 nibble bytes / 32 int8 codes */
    for (int64_t g = 0; g < cols / 32; g++) {
        const uint8_t *blk = src + (size_t)g * bb;
        uint16_t d;
        memcpy(&d, blk, 2);
        srow[g] = kr_f16_to_f32(d);
        if (type == KR_GGML_Q4_0 && q->bits == 4) {
            memcpy(row + g * 16, blk + 2, 16);
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
