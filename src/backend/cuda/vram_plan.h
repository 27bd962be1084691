/* The VRAM planner: what of a model goes on one GPU of a given size, by arithmetic alone (no GPU
 * needed; `krasis plan` runs anywhere). Non-expert weights (attention, norms, routers, shared experts,
 * dense MLPs, lm_head) are resident at the QuantConfig's bits (0 = BF16); the prefill workspace and a
 * CUDA context reserve come off the top; the KV cache (BF16 or FP8 E4M3 with per-token-head scales)
 * gets its target context; routed experts then take what is left: all resident ("persistent"), N layers
 * at a time double-buffered ("layer-grouped"), one layer double-buffered ("chunked"), or none on the GPU
 * (they stay on the CPU, as in decode). If the fixed part plus a minimal KV cache does not fit, the plan
 * is refused with the numbers. The embedding table stays in host RAM (a row lookup per token). */
#ifndef KR_BACKEND_CUDA_VRAM_PLAN_H
#define KR_BACKEND_CUDA_VRAM_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cuda/cuda_attention.h"
#include "base/status.h"
#include "model/config.h"
#include "model/model.h"

typedef struct {
    int64_t vram_bytes;      /* the budget (a card's total or free memory, or --vram) */
    kr_quant_config qc;      /* bits per component; routed_bits 0 = BF16 experts on the GPU */
    int kv_fp8;              /* KV cache in FP8 E4M3 (else BF16) */
    int64_t ctx_target;      /* tokens the KV cache should hold before experts get VRAM; 0: min(max_pos, 32768) */
    int64_t prefill_chunk;   /* tokens per prefill chunk (sizes the workspace); 0: 4096 */
    bool experts_cpu;        /* routed experts stay on the CPU (--expert-mode cpu): the pipeline split
                                does not count them */
} kr_vram_request;

typedef struct {
    int64_t attention, norms, routers, shared, dense, lm_head; /* bytes resident */
    int64_t nonexpert;        /* their sum */
    int64_t routed_layer;     /* one MoE layer's routed experts */
    int64_t routed_total;
    int64_t moe_layers;
    int64_t workspace, reserve;
    int64_t kv_per_token;     /* all layers */
    int64_t kv_tokens;        /* capacity given to the KV cache */
    int64_t kv_bytes;
    int64_t expert_layers_resident; /* layers of routed experts on the GPU at once (0: none) */
    char expert_mode[64];
    int64_t unused;           /* VRAM left after everything */
} kr_vram_plan;

/* Bytes of n weights at `bits` (0: BF16; 4/8: INT4/INT8 plus a float scale per group_size weights). */
int64_t kr_weight_bytes(int64_t n, int bits, int group_size);
/* Refuses (KR_ERR_ARG, with the sizes) when nothing useful fits. */
kr_status kr_vram_plan_make(const kr_hparams *hp, const kr_vram_request *rq, kr_vram_plan *p);
/* "16G", "16GiB", "24GB", "8000M", "1.5T", a plain byte count: 0 on a bad value */
int64_t kr_parse_size(const char *s);
/* The GPU KV cache's shape for a model (capacity 1 token): MLA keeps [latent | rope key] with the value
 * inside it, GQA k and v per kv head. */
kr_cuda_kv_shape kr_kv_shape_of(const kr_hparams *hp, int fp8);

/* Pipeline parallelism (--pp N): the layers cut into N contiguous stages, one per GPU, each holding its
 * layers' non-expert weights (the arithmetic above, per layer), their KV cache for the target context,
 * a prefill workspace and the context reserve, the last stage the final norm and lm_head too (the
 * embedding stays in host RAM, as on one GPU: the forward looks its rows up there). The split minimizes
 * the largest fraction of its GPU that any stage uses: first with the routed experts counted (when that
 * fits, every stage keeps its layers' experts resident), else without them (each stage's experts then
 * take what its GPU has left: grouped, chunked or none). The KV cache holds the target context on every
 * stage (not grown to fill the GPU as on one). */
#define KR_PP_MAX_STAGES KR_GPU_MAX_STAGES

typedef struct {
    int first, last;          /* layers [first, last) */
    int64_t vram_bytes;       /* this stage's GPU */
    int64_t weights;          /* non-expert weights (+ final norm and lm_head on the last stage) */
    int64_t kv_bytes;         /* its layers' KV cache for kr_pp_plan.kv_tokens tokens */
    int64_t workspace, reserve;
    int64_t moe_layers;
    int64_t expert_layers_resident, experts; /* routed experts in its VRAM: layers at once, bytes */
    char expert_mode[64];
    int64_t free_bytes;       /* left after all of it; negative: that much is missing */
} kr_pp_stage;

typedef struct {
    int n_stages;
    kr_pp_stage stage[KR_PP_MAX_STAGES];
    int64_t kv_tokens;          /* the target context */
    int64_t kv_per_token_layer; /* KV bytes of one token in one layer */
    int experts_balanced;       /* the split counted the routed experts (they all fit) */
} kr_pp_plan;

/* vram[n]: each GPU's budget (rq->vram_bytes is not used). Refuses (KR_ERR_ARG) naming every stage that
 * does not fit and by how much; *p is filled either way (the CLI prints the table). */
kr_status kr_pp_plan_make(const kr_hparams *hp, const kr_vram_request *rq, int n, const int64_t *vram, kr_pp_plan *p);

#endif
