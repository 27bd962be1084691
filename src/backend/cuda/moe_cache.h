/* The GPU expert cache file experts_marlin_int{4,8}_g{gs}.bin (DESIGN.md section 3): every routed expert
 * of every MoE layer in the GPU layout of moe_layout.h, built once and then mapped; a layer's bytes are
 * one contiguous, 4 KiB-aligned block that is copied to VRAM as is (backend/cuda/moe_residency.h).
 * Plain C with no CUDA dependency: any build (a CPU-only one too) can write and check the file.
 *
 * File: a 4 KiB header page (magic "KRXGPU1", format, quantizer and GPU-layout versions, bits, gs,
 * shapes, config hash, layer block size and piece offsets, file size, a hash of header + table), the
 * offset table (one uint64 per MoE layer: where its block starts), then the layer blocks. Inside a block
 * (kr_gpu_moe_geom), four 4 KiB-aligned pieces, each holding all experts back to back, exactly what
 * kr_gpu_moe_layer points to (moe_gemm.h):
 *   w13_q  [E] x w13 [2 inter, hidden] (rows gate_0, up_0, gate_1, up_1, ...: the CPU cache's order),
 *   w13_s  their bf16 group scales,  down_q [E] x down [hidden, inter],  down_s.
 * Same rules as the CPU cache (weights/expert_cache.h, whose write/commit/progress helpers it uses):
 * written to a temporary name, fsynced and renamed; a file whose header, size, table or hash does not
 * match is reported (naming the file and the field) and rebuilt, never used.
 *
 * The integers and scales come from the CPU quantization when it has the requested bits and group
 * size (kr_gcache_source.experts: the kr_qexpert array of the CPU expert cache), so CPU and GPU run the
 * very same weights; otherwise each expert is quantized from float rows (the rows callback of
 * kr_ecache_open) into the requested bits/gs first. The GPU cache's choice is independent of the CPU's. */
#ifndef KR_BACKEND_CUDA_MOE_CACHE_H
#define KR_BACKEND_CUDA_MOE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cpu/moe.h"
#include "backend/cuda/moe_gemm.h"
#include "base/mapfile.h"
#include "base/status.h"
#include "weights/expert_cache.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KR_GCACHE_VERSION 1
/* Bump when moe_layout.h's tile or scale order changes: files of the old order are then rebuilt. */
#define KR_GCACHE_LAYOUT_VERSION 1

/* Where the four pieces of one layer's experts lie inside its block (the same for every layer). */
typedef struct {
    int n_experts;
    int64_t hidden, inter;
    int bits, gs;
    uint64_t expert_bytes[4]; /* one expert's w13_q, w13_s, down_q, down_s */
    uint64_t off[4];          /* piece offsets in the block, 4 KiB multiples */
    uint64_t layer_bytes;     /* the block, a 4 KiB multiple */
} kr_gpu_moe_geom;

/* KR_ERR_ARG naming the field when the shapes do not fit moe_layout.h (multiples of 64 and gs). */
kr_status kr_gpu_moe_geom_make(int n_experts, int64_t hidden, int64_t inter, int bits, int gs, kr_gpu_moe_geom *g);
/* The kr_gpu_moe_layer of a block at base (host or device memory: pointers are only offset). */
void kr_gpu_moe_geom_bind(const kr_gpu_moe_geom *g, const void *base, kr_gpu_moe_layer *out);

typedef struct {
    const kr_qexpert *experts; /* [n_layers * n_experts] CPU quantization (kr_ecache.experts), or NULL */
    kr_ecache_rows_fn rows;    /* float rows (as for kr_ecache_open): used when experts is NULL or has
                                  other bits / gs than the key */
    void *ctx;
} kr_gcache_source;

typedef struct {
    kr_ecache_key key;      /* bits, gs, n_layers (MoE layers), n_experts, hidden, inter, config_hash */
    kr_gpu_moe_geom geom;
    kr_mapped_file map;
    const uint8_t **layer;  /* [n_layers]: each layer's block in the mapping, geom.layer_bytes long */
    bool rebuilt;           /* this open built the file */
    bool from_cpu;          /* when built: packed from the CPU quantization (else quantized from rows) */
} kr_gcache;

/* Opens path, building it first (progress bar on stderr) when it is missing, stale or corrupt (saying
 * why on stderr). The key's config_hash should be the one the CPU cache uses. */
kr_status kr_gcache_open(const char *path, const kr_ecache_key *key, const kr_gcache_source *src, kr_gcache *out);
void kr_gcache_close(kr_gcache *c);
/* Checks a file without building: KR_OK when it would load, else an error naming the file and field. */
kr_status kr_gcache_validate(const char *path, const kr_ecache_key *key);
/* Layer l's experts in host memory (pointers into the mapping). */
void kr_gcache_layer(const kr_gcache *c, int l, kr_gpu_moe_layer *out);

/* "experts_marlin_int4_g128.bin" */
void kr_gcache_file_name(int bits, int gs, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
