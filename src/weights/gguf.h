/* GGUF (llama.cpp) container reader: header and metadata key/values, memory-mapped, zero-copy.
 * Opening validates the whole metadata section against the file size (every string and array length
 * is checked before it is used), so a truncated or lying file is an error, never an out-of-bounds read.
 * Supports GGUF v2 and v3 (64-bit counts). Tensor infos are validated too: known ggml type, whole blocks
 * per row, aligned offsets, data inside the file. */
#ifndef KR_WEIGHTS_GGUF_H
#define KR_WEIGHTS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef enum {
    KR_GGUF_UINT8 = 0,
    KR_GGUF_INT8 = 1,
    KR_GGUF_UINT16 = 2,
    KR_GGUF_INT16 = 3,
    KR_GGUF_UINT32 = 4,
    KR_GGUF_INT32 = 5,
    KR_GGUF_FLOAT32 = 6,
    KR_GGUF_BOOL = 7,
    KR_GGUF_STRING = 8,
    KR_GGUF_ARRAY = 9,
    KR_GGUF_UINT64 = 10,
    KR_GGUF_INT64 = 11,
    KR_GGUF_FLOAT64 = 12,
} kr_gguf_type;

/* A string inside the mapping: not NUL-terminated. */
typedef struct {
    const char *ptr;
    size_t len;
} kr_gguf_str;

typedef struct {
    kr_gguf_str key;
    kr_gguf_type type;
    kr_gguf_type elem_type; /* arrays only */
    uint64_t n;             /* arrays: element count; scalars: 1 */
    const uint8_t *data;    /* the value (for arrays: the first element) inside the mapping */
    uint64_t *str_offs;     /* string arrays: offset of element i's length prefix from data */
} kr_gguf_kv;

typedef struct kr_gguf kr_gguf;

/* A tensor: dimensions in ggml order (ne[0] is the contiguous one: a PyTorch [out, in] matrix is
 * ne = {in, out}), its ggml type (weights/ggml_quants.h) and its bytes inside the mapping. */
typedef struct {
    kr_gguf_str name;
    uint32_t type;
    int n_dims;
    int64_t ne[4]; /* unused dimensions are 1 */
    uint64_t offset;
    const uint8_t *data;
    size_t nbytes;
} kr_gguf_tensor;

kr_status kr_gguf_open(const char *path, kr_gguf **out);
void kr_gguf_close(kr_gguf *g);

const char *kr_gguf_path(const kr_gguf *g);
uint32_t kr_gguf_version(const kr_gguf *g);
uint64_t kr_gguf_n_tensors(const kr_gguf *g);
size_t kr_gguf_tensor_info_offset(const kr_gguf *g);
/* The whole mapping (for the tensor-data extension). */
const uint8_t *kr_gguf_data(const kr_gguf *g, size_t *size);

size_t kr_gguf_n_kv(const kr_gguf *g);
const kr_gguf_kv *kr_gguf_kv_at(const kr_gguf *g, size_t i);
/* NULL when absent. */
const kr_gguf_kv *kr_gguf_find(const kr_gguf *g, const char *key);
const char *kr_gguf_type_name(kr_gguf_type t);

/* Typed getters. "req" fails when the key is absent; "opt" leaves *out untouched when absent. Both fail
 * on a type mismatch, naming the file and the key. Integer getters accept any integer type whose value
 * fits; bool accepts bool. */
kr_status kr_gguf_req_int(const kr_gguf *g, const char *key, int64_t *out);
kr_status kr_gguf_opt_int(const kr_gguf *g, const char *key, int64_t *out);
kr_status kr_gguf_opt_bool(const kr_gguf *g, const char *key, bool *out);
kr_status kr_gguf_req_str(const kr_gguf *g, const char *key, kr_gguf_str *out);
kr_status kr_gguf_opt_str(const kr_gguf *g, const char *key, kr_gguf_str *out);
kr_status kr_gguf_opt_num(const kr_gguf *g, const char *key, double *out);
/* An array whose elements have type elem (required when req, NULL when absent for opt). */
kr_status kr_gguf_req_array(const kr_gguf *g, const char *key, kr_gguf_type elem, const kr_gguf_kv **out);
kr_status kr_gguf_opt_array(const kr_gguf *g, const char *key, kr_gguf_type elem, const kr_gguf_kv **out);

const kr_gguf_tensor *kr_gguf_tensor_at(const kr_gguf *g, uint64_t i); /* NULL past the end */
const kr_gguf_tensor *kr_gguf_find_tensor(const kr_gguf *g, const char *name); /* NULL when absent */

/* Element i of an array (i < kv->n is the caller's to check: programmer error otherwise). */
kr_gguf_str kr_gguf_arr_str(const kr_gguf_kv *kv, uint64_t i);
/* integer or bool element types; a uint64 element past INT64_MAX reads as INT64_MAX */
int64_t kr_gguf_arr_int(const kr_gguf_kv *kv, uint64_t i);
double kr_gguf_arr_num(const kr_gguf_kv *kv, uint64_t i);    /* float or integer element types */

#endif
