/* Routed experts on the GPU during prefill (DESIGN.md section 5, issue 9): which MoE layers' experts
 * are in VRAM when, copied from host memory (the mapped GPU expert cache, moe_cache.h) as is.
 *   persistent  all layers uploaded once (at create, asynchronously; acquire waits for its layer);
 *   grouped:N   layers cut into groups of N; two VRAM slots of N layers: while the compute stream runs
 *               group g from one slot, group g+1 is copied into the other on a separate copy stream;
 *               events order it (a copy waits for the slot's last release; compute waits for the copy);
 *   chunked     grouped:1.
 * Host blocks are pinned in place with cudaHostRegister (read-only) so copies run at the bus's rate
 * and overlap compute; where that fails (or no_register is set) every copy is staged through two
 * pinned 16 MiB buffers by host callbacks on the copy stream (still asynchronous to the caller, at
 * roughly half the rate).
 *
 * How the forward pass uses it (one compute stream):
 *   kr_gpu_experts_create(&cfg, &X);                      // once per model, after the VRAM planner
 *   for each prompt chunk / group ...:                    // any order; see "Order" below
 *       kr_gpu_moe_layer L;
 *       kr_gpu_experts_acquire(X, moe_layer, stream, &L); // stream waits for the copy; prefetch of the
 *       kr_gpu_moe_forward(&L, ..., stream);              //   next group starts on a new group
 *       kr_gpu_experts_release(X, moe_layer, stream);     // the slot may be overwritten after this
 * Order: layers in increasing order within a forward; in grouped mode every prompt chunk should run
 * through a group's layers before the next group is acquired (each expert then crosses the bus once
 * per prompt, not once per chunk); a new group's acquire prefetches the group after it (wrapping to
 * group 0 after the last one, for the next prompt). Acquiring a layer of a group that is not in a slot
 * copies it there first (counted as a miss). A group's layers may still be held when the next group
 * is acquired (the prefetch into their slot then starts at their last release), but all must be
 * released before a layer two groups on is acquired: acquire refuses that (KR_ERR_ARG).
 * Not thread-safe: one host thread drives it. */
#ifndef KR_BACKEND_CUDA_MOE_RESIDENCY_H
#define KR_BACKEND_CUDA_MOE_RESIDENCY_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/expert_mode.h"
#include "backend/cuda/moe_cache.h"
#include "backend/cuda/moe_gemm.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    kr_expert_mode mode;         /* requested: auto, persistent, grouped:N, chunked */
    kr_gpu_moe_geom geom;        /* one layer block's shape (kr_gcache.geom) */
    int n_layers;                /* MoE layers */
    const uint8_t *const *host;  /* [n_layers] host blocks of geom.layer_bytes (kr_gcache.layer) */
    int64_t vram_budget;         /* bytes of VRAM the experts may take (what the planner leaves under
                                    --vram); 0: the device's free memory less 1 GiB */
    bool no_register;            /* do not cudaHostRegister the host blocks: stage (tests, fallback) */
    bool quiet;                  /* no mode line on stderr */
    int64_t alloc_limit;         /* tests: a slot allocation over this many bytes fails as out of memory
                                    (exercises the fallback); 0: none */
} kr_gpu_experts_config;

typedef struct {
    kr_expert_mode mode;         /* what runs (after auto and any fallback) */
    int n_groups;
    int64_t vram_bytes;          /* allocated for expert slots */
    bool registered;             /* host blocks pinned in place (else staged) */
    int fallbacks;               /* allocation failures that moved to a smaller mode */
    int64_t copies;              /* group (or persistent layer) copies made */
    int64_t misses;              /* acquires that found their group neither resident nor prefetched */
    uint64_t bytes_copied;
    double copy_ms;              /* sum of copy durations, from events on the copy stream */
    double copy_gbps;            /* bytes_copied / copy time (1e9 bytes per second) */
} kr_gpu_experts_stats;

typedef struct kr_gpu_experts kr_gpu_experts;

/* Chooses the mode (kr_expert_mode_choose under cfg->vram_budget), allocates the slots, falling back
 * persistent -> grouped -> chunked with a line on stderr when an allocation fails, pins the host
 * blocks and (persistent) starts the upload. The host blocks must outlive the object. */
kr_status kr_gpu_experts_create(const kr_gpu_experts_config *cfg, kr_gpu_experts **out);
void kr_gpu_experts_destroy(kr_gpu_experts *x); /* synchronizes the device first; NULL is fine */

/* Device pointers of MoE layer `moe_layer` (0-based) into *out; `compute` waits for its copy. */
kr_status kr_gpu_experts_acquire(kr_gpu_experts *x, int moe_layer, kr_cuda_stream compute, kr_gpu_moe_layer *out);
/* The work queued on `compute` so far is the last use of the layer's slot until its next acquire. */
kr_status kr_gpu_experts_release(kr_gpu_experts *x, int moe_layer, kr_cuda_stream compute);

/* Waits for the copies issued so far and fills *out. */
kr_status kr_gpu_experts_stats_get(kr_gpu_experts *x, kr_gpu_experts_stats *out);

#ifdef __cplusplus
}
#endif

#endif
