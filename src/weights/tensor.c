/* dtype tables and small tensor helpers. */
#include "weights/tensor.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[KR_DT_COUNT] = {
    [KR_DT_F32] = {"F32", 4},     [KR_DT_F16] = {"F16", 2},         [KR_DT_BF16] = {"BF16", 2},
    [KR_DT_F8_E4M3] = {"F8_E4M3", 1}, [KR_DT_F64] = {"F64", 8},     [KR_DT_F8_E5M2] = {"F8_E5M2", 1},
    [KR_DT_I8] = {"I8", 1},       [KR_DT_U8] = {"U8", 1},           [KR_DT_I16] = {"I16", 2},
    [KR_DT_U16] = {"U16", 2},     [KR_DT_I32] = {"I32", 4},         [KR_DT_U32] = {"U32", 4},
    [KR_DT_I64] = {"I64", 8},     [KR_DT_U64] = {"U64", 8},         [KR_DT_BOOL] = {"BOOL", 1},
};

size_t kr_dtype_size(kr_dtype t) { return dtype_info[t].size; }
const char *kr_dtype_name(kr_dtype t) { return dtype_info[t].name; }

int kr_dtype_from_name(const char *name, kr_dtype *out) {
    for (int i = 0; i < KR_DT_COUNT; i++)
        if (strcmp(dtype_info[i].name, name) == 0) {
            *out = (kr_dtype)i;
            return 1;
        }
    return 0;
}

int64_t kr_tensor_numel(const kr_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

const char *kr_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}
