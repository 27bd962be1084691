/* The GPU forward pass (see gpu_model.h), private to its four files: gpu_model.c (start-up: the VRAM
 * plan, the pipeline stages, where the experts go, create/destroy), gpu_weights.c (the weight uploads),
 * gpu_kv.c (the KV cache in VRAM) and gpu_forward.c (the layers). Layout of the work per layer, on one stream:
 *   xb = bf16(RMSNorm(x))                         x: the float32 residual stream [T, D]
 *   attention(xb) -> x += o_proj(...)             (the residual add is the GEMM's beta = 1)
 *   xn = RMSNorm(x), xb = bf16(xn)
 *   dense MLP or: router (float32 GEMM, GPU top-k), shared experts (x += ...), routed experts:
 *     on the GPU: grouped INT4/INT8 kernel -> x += out
 *     on the CPU: xn, ids, weights -> pinned host; the CPU kernels run while the GPU does the shared
 *                 expert; their output comes back and x += out
 * Weights are BF16 copies of whatever the checkpoint holds (kr_matrix_row dequantizes FP8 / GGUF blocks),
 * except the router (float32, so expert choices match the CPU's) and the routed experts (the CPU
 * quantization's own integers and scales, in the GPU layout). MLA keeps the absorbed form throughout:
 * per-head products with Wk_b / Wv_b are batched GEMMs, the cache holds [latent | roped k_pe].
 * Pipeline parallelism (--pp N): the layers split into N stages by the VRAM planner (kr_pp_plan_make), each
 * stage with its own device, stream, cuBLASLt handle, weights, KV layers, working buffers and expert
 * residency; the forward runs them in turn and hands the float32 residual stream [n, D] from one stage to
 * the next (a device-to-device copy, peer where the devices differ, or through pinned host memory). One
 * stage is the plain path: no hand-off, no device switch (it runs on the device current since create,
 * which multi-stage calls leave at their stage 0's). */
#ifndef KR_MODEL_GPU_MODEL_IMPL_H
#define KR_MODEL_GPU_MODEL_IMPL_H

#include "model/gpu_model.h"

#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_router.h"
#include "backend/cuda/moe_gemm.h"
#include "backend/cuda/moe_cache.h"
#include "backend/cuda/moe_layout.h"
#include "backend/cuda/moe_residency.h"
#include "backend/cuda/vram_plan.h"

typedef struct {
    void *p;
    size_t cap;
} dbuf;

typedef struct {
    uint16_t *gu, *down; /* [2 inter, D] (gate rows then up rows), [D, inter] */
    int64_t inter;
} gpu_mlp;

typedef struct {
    float *input_norm, *post_norm;
    /* MLA */
    uint16_t *q_a, *q_b, *q_proj, *kv_a, *kb, *vb; /* kb [H][C][Dn], vb [H][Dv][C] */
    uint16_t *kbr;                                 /* Wk_b as kv_b holds it, [H][Dn][C]: prefill's expansion */
    float *q_a_norm, *kv_a_norm, *q_a_bias, *kv_a_bias;
    /* GQA */
    uint16_t *wq, *wk, *wv;
    float *bq, *bk, *bv, *q_norm, *k_norm;
    uint16_t *o;
    float *o_bias;
    /* FFN */
    gpu_mlp mlp; /* dense MLP, or the shared experts of a MoE layer (inter 0: none) */
    float *router, *router_bias;
} gpu_layer;

enum {
    B_X, B_XN, B_XB, B_Q, B_QA, B_QB, B_KV, B_K, B_V, B_QABS, B_ATT, B_O, B_GU, B_ACT,
    B_LOGITS, B_IDX, B_W, B_MOE, B_MOE_WS, B_ATTN_WS, B_OUT, B_KX, B_VX, B_LATB, B_COUNT
};

/* One pipeline stage: layers [first, last) on one device, with everything their work touches there.
 * Without --pp there is one, with every layer. */
typedef struct {
    int device, first, last;
    kr_cuda_blas *blas;
    kr_cuda_stream s;
    kr_cuda_event copied; /* the hybrid hand-off has reached the host */
    kr_cuda_event done;   /* recorded after the stage's layers: the next stage's stream waits for it */
    gpu_layer *layers;    /* the model's (indexed by layer; this stage uploads [first, last)) */
    float *inv_freq;
    kr_cuda_rope_params rope;
    /* routed experts in VRAM (NULL: on the CPU): this stage's residency of its MoE layers, numbered from
     * moe0 (moe_index[l] - moe0); decode uses them only when all are resident */
    kr_gpu_experts *experts;
    bool decode_on_gpu;
    int64_t gpu_min_tokens;
    int group_moe_layers; /* MoE layers per residency group (all of them when persistent) */
    const int *moe_index; /* the model's: each layer's index among the MoE layers, -1 for dense ones */
    int moe0;             /* MoE layers before this stage */
    float *x;             /* the residual rows of the chunk being run (inside buf[B_X]) */
    int64_t expert_budget; /* the VRAM plan's room for routed experts */
    void **mem; /* every weight allocation, freed at destroy */
    int n_mem, cap_mem;
    dbuf buf[B_COUNT];
    /* pinned host side of the hand-offs */
    float *h_x, *h_out; /* the hybrid hand-off: normalized hidden states out, routed-expert output back */
    int32_t *h_idx;
    float *h_w;
    int64_t h_cap; /* tokens */
    int64_t weight_bytes, expert_bytes;
    bool profile;
    double prof_wait, prof_cpu;
} gpu_stage;

/* how stage s - 1 hands the residual stream to stage s */
enum { LINK_COPY, LINK_BOUNCE };

typedef struct kr_gpu_model kr_gpu_model;
struct kr_gpu_model {
    kr_gpu_config cfg;
    int n_stages;
    gpu_stage st[KR_GPU_MAX_STAGES];
    int link[KR_GPU_MAX_STAGES]; /* link[s]: from stage s - 1 to s (s >= 1) */
    gpu_layer *layers;
    int *moe_index;
    float *final_norm; /* on the last stage */
    uint16_t *lm_head;
    kr_gcache gcache; /* the GPU expert cache file, shared by the stages' residencies */
    bool have_gcache;
    int64_t chunk;        /* prompt tokens per pass through a layer group (the planner's prefill chunk) */
    float *h_emb;         /* pinned embedding rows of a whole prompt */
    int64_t h_emb_cap;
    float *h_bounce;      /* pinned residual stream of LINK_BOUNCE hand-offs */
    int64_t h_bounce_cap;
    /* KRASIS_GPU_PROFILE=1: where a decode step's time goes on the host (printed at destroy) */
    bool profile;
    int64_t prof_steps;
    double prof_total;
};

/* one cache per stage, on its device, of its layers (kv[s] layer i is layer first + i) */
struct kr_gpu_kv {
    int n;
    int device[KR_GPU_MAX_STAGES];
    kr_cuda_kv kv[KR_GPU_MAX_STAGES];
};

/* gpu_weights.c: BF16 (or float32) copies of the model's weights on stage g's device, freed at destroy */
kr_status kr_gpu_upload_floats(gpu_stage *g, const float *v, int64_t n, float **out);
kr_status kr_gpu_upload_matrix(gpu_stage *g, const kr_matrix *a, const char *what, uint16_t **out);
kr_status kr_gpu_upload_layer(gpu_stage *g, const kr_model *m, int l);

/* gpu_model.c: bytes of each working buffer for a prompt of n tokens run in chunks of T (all_positions:
 * logits of every position, at most min(T, 256) rows at a time) over a context of up to ctx positions. One
 * account for the forward's reserve() (ctx 0: the buffers sized by the context, MLA's expanded keys/values
 * and its absorbed form's ones, grow where they are used) and for the experts' VRAM budget. */
void kr_gpu_buffer_bytes(const kr_model *m, bool experts_on_gpu, bool last_stage, int64_t n, int64_t T, int64_t ctx,
                         bool all_positions, size_t out[B_COUNT]);

#endif
