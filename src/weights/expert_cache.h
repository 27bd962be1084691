/* The CPU expert cache file experts_cpu_int{4,8}_g{gs}.bin (DESIGN.md section 3): every routed expert
 * quantized once, in the layout the kernels stream (w13 = gate/up rows interleaved, then down), mapped
 * on every later run. Layout: a 4 KiB header page (magic, format and quantizer versions, bits, gs,
 * shapes, config hash, file size, a hash of header + table), the offset table, then 4 KiB-aligned data.
 * Written to a temporary name, fsynced and renamed, so a crash never leaves a file that loads. A file
 * whose header, size, table or hash does not match is reported and rebuilt, never used. */
#ifndef KR_WEIGHTS_EXPERT_CACHE_H
#define KR_WEIGHTS_EXPERT_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cpu/moe.h"
#include "base/mapfile.h"
#include "base/status.h"

#define KR_ECACHE_VERSION 1

typedef struct {
    int bits, gs;
    int n_layers;        /* MoE layers in the file (the caller maps them to model layers) */
    int n_experts;       /* per layer */
    int64_t hidden, inter;
    uint64_t config_hash; /* of config.json; the quantizer version is checked separately */
} kr_ecache_key;

/* Supplies float rows while building: which 0 = gate row, 1 = up row (hidden values), 2 = down row
 * (inter values) of expert e of MoE layer l. */
typedef kr_status (*kr_ecache_rows_fn)(void *ctx, int l, int e, int which, int64_t row, float *out);

typedef struct {
    kr_ecache_key key;
    kr_mapped_file map;
    kr_qexpert *experts; /* [n_layers * n_experts], views into map */
    bool rebuilt;        /* this open built the file */
} kr_ecache;

/* Optional, while building: writes row `row` of gate/up/down (which as above) straight into row dst_row
 * of dst (an exact re-encoding of already-quantized weights, weights/ggml_requant.h). Returns 1 when it
 * did, 0 to have the row come from the rows callback and be quantized. */
typedef int (*kr_ecache_encode_fn)(void *ctx, int l, int e, int which, int64_t row, const kr_qmatrix *dst,
                                   int64_t dst_row);

/* Opens path, building it first when it is missing, stale or corrupt (saying why on stderr). */
kr_status kr_ecache_open(const char *path, const kr_ecache_key *key, kr_ecache_rows_fn rows, void *ctx, kr_ecache *out);
/* Same, with an encode callback (may be NULL) tried before rows for every row. */
kr_status kr_ecache_open_ex(const char *path, const kr_ecache_key *key, kr_ecache_rows_fn rows,
                            kr_ecache_encode_fn encode, void *ctx, kr_ecache *out);
void kr_ecache_close(kr_ecache *c);

/* Checks a file without building: KR_OK when it would load, else an error saying why. */
kr_status kr_ecache_validate(const char *path, const kr_ecache_key *key);

/* The load-or-build loop of the cache files (this one and the GPU's, backend/cuda/moe_cache.h): maps path
 * and hands the mapping to bind; when the file is missing or bind refuses it (saying why on stderr), calls
 * build and tries once more. `what` names the kind of file in messages. On KR_OK *map is mapped and bound;
 * *rebuilt says whether build ran. */
typedef kr_status (*kr_cache_bind_fn)(void *ctx, const kr_mapped_file *map);
typedef kr_status (*kr_cache_build_fn)(void *ctx);
kr_status kr_cache_map_or_build(const char *path, const char *what, kr_cache_bind_fn bind, kr_cache_build_fn build,
                                void *ctx, kr_mapped_file *map, bool *rebuilt);

/* "experts_cpu_int4_g32.bin" */
void kr_ecache_file_name(int bits, int gs, char *buf, size_t n);
/* FNV-1a 64 of n bytes, continuing from h (start with KR_FNV_INIT). */
#define KR_FNV_INIT 0xcbf29ce484222325ull
uint64_t kr_fnv1a(uint64_t h, const void *p, size_t n);
/* mkdir -p */
kr_status kr_mkdirs(const char *path);

/* Shared with the GPU expert cache (backend/cuda/moe_cache.h), so both files follow one set of rules:
 * write n bytes to fd or fail naming path; the build progress line ("krasis: building <what>: layer
 * done/total, GB/s, ETA"; t0 from kr_ecache_now); and the end of an atomic write: given the status so
 * far, fsync + close fd, rename tmp to path and fsync the directory, or close and unlink tmp on failure. */
kr_status kr_ecache_write_all(int fd, const void *p, size_t n, const char *path);
double kr_ecache_now(void);
void kr_ecache_progress(const char *what, int done, int total, uint64_t bytes, double t0);
kr_status kr_ecache_commit(int fd, const char *tmp, const char *path, kr_status s);

#endif
