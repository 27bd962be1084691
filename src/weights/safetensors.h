/* safetensors checkpoints: one file or a sharded set described by model.safetensors.index.json,
 * memory-mapped, zero-copy. Opening validates every header completely (well-formed JSON, known dtypes,
 * offsets inside the file, sizes equal to dtype x shape, no overlapping tensors, no duplicate names),
 * so code that later reads a tensor's bytes can trust them. */
#ifndef KR_WEIGHTS_SAFETENSORS_H
#define KR_WEIGHTS_SAFETENSORS_H

#include <jansson.h>

#include "base/mapfile.h"
#include "base/status.h"
#include "weights/tensor.h"

typedef struct {
    int n_files;
    kr_mapped_file *files;
    json_t **headers;   /* parsed headers; tensor names point into them */
    int n_tensors;
    kr_tensor *tensors;
    json_t *by_name;    /* name -> index into tensors */
} kr_safetensors;

/* path: a .safetensors file, or a directory holding model.safetensors.index.json or model.safetensors. */
kr_status kr_st_open(const char *path, kr_safetensors *out);
void kr_st_close(kr_safetensors *st);

/* NULL when absent. */
const kr_tensor *kr_st_find(const kr_safetensors *st, const char *name);
const char *kr_st_file_of(const kr_safetensors *st, const kr_tensor *t);

#endif
