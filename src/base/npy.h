/* NumPy .npy files (format 1.0) of little-endian float32: how logits leave krasis and how test
 * references come in. Only C-order '<f4' arrays of up to 4 dimensions are read. */
#ifndef KR_BASE_NPY_H
#define KR_BASE_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    int ndim;
    int64_t shape[4];
    float *data; /* owned, product(shape) floats */
} kr_npy;

kr_status kr_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape);
kr_status kr_npy_read_f32(const char *path, kr_npy *out);
void kr_npy_free(kr_npy *a);

#endif
