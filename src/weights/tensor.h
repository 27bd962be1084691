/* A tensor as stored in a weights file: dtype, shape and a pointer into mapped memory. */
#ifndef KR_WEIGHTS_TENSOR_H
#define KR_WEIGHTS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define KR_MAX_DIMS 8

typedef enum {
    KR_DT_F32,
    KR_DT_F16,
    KR_DT_BF16,
    KR_DT_F8_E4M3,
    /* stored types krasis can validate and skip but not compute with */
    KR_DT_F64,
    KR_DT_F8_E5M2,
    KR_DT_I8,
    KR_DT_U8,
    KR_DT_I16,
    KR_DT_U16,
    KR_DT_I32,
    KR_DT_U32,
    KR_DT_I64,
    KR_DT_U64,
    KR_DT_BOOL,
    KR_DT_COUNT
} kr_dtype;

typedef struct {
    const char *name;
    kr_dtype dtype;
    int ndim;
    int64_t shape[KR_MAX_DIMS];
    const uint8_t *data; /* inside a mapped file; no alignment is guaranteed */
    size_t nbytes;
    int file; /* index of the file that holds it, for messages */
} kr_tensor;

size_t kr_dtype_size(kr_dtype t);
const char *kr_dtype_name(kr_dtype t); /* the safetensors spelling: "BF16", "F8_E4M3", ... */
int kr_dtype_from_name(const char *name, kr_dtype *out); /* 1 on success */
int64_t kr_tensor_numel(const kr_tensor *t);
/* Writes "[a, b, c]" into buf. */
const char *kr_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap);

#endif
