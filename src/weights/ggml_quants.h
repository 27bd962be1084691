/* llama.cpp's (ggml's) tensor storage types: block sizes, and dequantization of each type to float32,
 * bit-compatible with ggml's reference `dequantize_row_*` and the `gguf` Python package. Types are
 * identified by their ggml numbers, as GGUF tensor infos store them. */
#ifndef KR_WEIGHTS_GGML_QUANTS_H
#define KR_WEIGHTS_GGML_QUANTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    KR_GGML_F32 = 0,
    KR_GGML_F16 = 1,
    KR_GGML_Q4_0 = 2,
    KR_GGML_Q4_1 = 3,
    KR_GGML_Q5_0 = 6,
    KR_GGML_Q5_1 = 7,
    KR_GGML_Q8_0 = 8,
    KR_GGML_Q8_1 = 9,
    KR_GGML_Q2_K = 10,
    KR_GGML_Q3_K = 11,
    KR_GGML_Q4_K = 12,
    KR_GGML_Q5_K = 13,
    KR_GGML_Q6_K = 14,
    KR_GGML_Q8_K = 15,
    KR_GGML_IQ4_NL = 20,
    KR_GGML_IQ4_XS = 23,
    KR_GGML_BF16 = 30,
    KR_GGML_TYPE_LIMIT = 64 /* ids at or above this are unknown */
} kr_ggml_type;

typedef struct {
    const char *name;     /* NULL: unknown type id */
    uint32_t block_elems; /* elements per block */
    uint32_t block_bytes; /* bytes per block */
    bool dequantizable;   /* kr_ggml_dequantize supports it */
} kr_ggml_type_info;

/* Information on a type id; .name is NULL for an id krasis does not know. */
kr_ggml_type_info kr_ggml_info(uint32_t type);

/* Dequantizes n elements (a multiple of the block size) starting at src. The type must be dequantizable. */
void kr_ggml_dequantize(uint32_t type, const uint8_t *src, int64_t n, float *dst);

#endif
