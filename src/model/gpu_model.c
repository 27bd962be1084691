/* The GPU forward pass (see gpu_model.h). Layout of the work per layer, on one stream:
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
#include "model/gpu_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* one cache per stage, on its device, of its layers (kv[s] layer i is layer first + i) */
struct kr_gpu_kv {
    int n;
    int device[KR_GPU_MAX_STAGES];
    kr_cuda_kv kv[KR_GPU_MAX_STAGES];
};

/* ------------------------------------------------------------------------------------------------ */

static kr_status dgrow(gpu_stage *g, int which, size_t bytes, const char *what) {
    dbuf *b = &g->buf[which];
    if (bytes <= b->cap)
        return KR_OK;
    KR_TRY(kr_cuda_stream_sync(g->s)); /* the old buffer may still be read by queued work */
    kr_cuda_free(b->p);
    b->p = NULL;
    b->cap = 0;
    size_t cap = bytes + bytes / 4;
    KR_TRY(kr_cuda_malloc(&b->p, cap, what));
    b->cap = cap;
    return KR_OK;
}

static kr_status track(gpu_stage *g, void *p) {
    if (g->n_mem == g->cap_mem) {
        int cap = g->cap_mem ? 2 * g->cap_mem : 64;
        void **mem = realloc(g->mem, (size_t)cap * sizeof *mem);
        if (!mem) {
            kr_cuda_free(p);
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        }
        g->mem = mem;
        g->cap_mem = cap;
    }
    g->mem[g->n_mem++] = p;
    return KR_OK;
}

static kr_status dalloc(gpu_stage *g, size_t bytes, const char *what, void **out) {
    KR_TRY(kr_cuda_malloc(out, bytes, what));
    g->weight_bytes += (int64_t)bytes;
    return track(g, *out);
}

static kr_status upload_floats(gpu_stage *g, const float *v, int64_t n, float **out) {
    *out = NULL;
    if (!v)
        return KR_OK;
    KR_TRY(dalloc(g, (size_t)n * sizeof(float), "a norm or bias vector", (void **)out));
    return kr_cuda_to_device(*out, v, (size_t)n * sizeof(float), NULL);
}

/* Host staging for weight uploads: rows of bf16 bits. */
typedef struct {
    uint16_t *h;
    float *row;
} stage;

static kr_status upload_stage(gpu_stage *g, const uint16_t *h, int64_t n, const char *what, uint16_t **out) {
    KR_TRY(dalloc(g, (size_t)n * 2, what, (void **)out));
    KR_TRY(kr_cuda_to_device(*out, h, (size_t)n * 2, NULL));
    return kr_cuda_stream_sync(NULL);
}

/* rows [r0, r0 + n) of w as bf16 into h (n * w->cols values) */
static void rows_bf16(const kr_matrix *w, int64_t r0, int64_t n, uint16_t *h, float *row) {
    for (int64_t r = 0; r < n; r++) {
        kr_matrix_row(w, r0 + r, row);
        for (int64_t c = 0; c < w->cols; c++)
            h[r * w->cols + c] = kr_f32_to_bf16(row[c]);
    }
}

/* a matrix as one bf16 device matrix; a and b (optional) stacked by rows */
static kr_status upload_matrix2(gpu_stage *g, const kr_matrix *a, const kr_matrix *b, const char *what,
                                uint16_t **out) {
    *out = NULL;
    if (!a->rows)
        return KR_OK;
    int64_t rows = a->rows + (b ? b->rows : 0), cols = a->cols;
    uint16_t *h = malloc((size_t)(rows * cols) * 2);
    float *row = malloc((size_t)cols * sizeof(float));
    kr_status st = KR_OK;
    if (!h || !row)
        st = kr_fail(KR_ERR_NOMEM, "out of memory staging %s for the GPU", what);
    if (st == KR_OK) {
        rows_bf16(a, 0, a->rows, h, row);
        if (b)
            rows_bf16(b, 0, b->rows, h + a->rows * cols, row);
        st = upload_stage(g, h, rows * cols, what, out);
    }
    free(h);
    free(row);
    return st;
}

static kr_status upload_matrix(gpu_stage *g, const kr_matrix *a, const char *what, uint16_t **out) {
    return upload_matrix2(g, a, NULL, what, out);
}

static kr_status upload_matrix_f32(gpu_stage *g, const kr_matrix *w, float **out) {
    float *h = malloc((size_t)(w->rows * w->cols) * sizeof(float));
    if (!h)
        return kr_fail(KR_ERR_NOMEM, "out of memory staging the router for the GPU");
    for (int64_t r = 0; r < w->rows; r++)
        kr_matrix_row(w, r, h + r * w->cols);
    kr_status st = dalloc(g, (size_t)(w->rows * w->cols) * sizeof(float), "the router", (void **)out);
    if (st == KR_OK)
        st = kr_cuda_to_device(*out, h, (size_t)(w->rows * w->cols) * sizeof(float), NULL);
    if (st == KR_OK)
        st = kr_cuda_stream_sync(NULL);
    free(h);
    return st;
}

static kr_status upload_mlp(gpu_stage *g, const kr_mlp *mlp, gpu_mlp *out) {
    out->inter = mlp->gate.rows;
    KR_TRY(upload_matrix2(g, &mlp->gate, &mlp->up, "an MLP's gate/up", &out->gu));
    return upload_matrix(g, &mlp->down, "an MLP's down", &out->down);
}

/* MLA's per-head Wk_b as kb [H][C][Dn] (the absorbed query) and kbr [H][Dn][C] (prefill's expanded keys),
 * Wv_b as vb [H][Dv][C]; from split k_b / v_b (GGUF: k_b rows are kb's) or from kv_b (rows are kbr's) */
static kr_status upload_mla_b(gpu_stage *g, const kr_hparams *hp, const kr_layer *L, gpu_layer *G) {
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dv = hp->v_head_dim, C = hp->kv_lora_rank;
    uint16_t *kb = malloc((size_t)(H * C * Dn) * 2), *kbr = malloc((size_t)(H * C * Dn) * 2);
    float *row = malloc((size_t)(C > Dn ? C : Dn) * sizeof(float));
    kr_status st = KR_OK;
    if (!kb || !kbr || !row)
        st = kr_fail(KR_ERR_NOMEM, "out of memory staging MLA kv_b for the GPU");
    for (int64_t h = 0; st == KR_OK && h < H; h++)
        if (L->k_b.rows) {
            for (int64_t c = 0; c < C; c++) {
                kr_matrix_row(&L->k_b, h * C + c, row);
                for (int64_t d = 0; d < Dn; d++)
                    kb[(h * C + c) * Dn + d] = kbr[(h * Dn + d) * C + c] = kr_f32_to_bf16(row[d]);
            }
        } else {
            for (int64_t d = 0; d < Dn; d++) {
                kr_matrix_row(&L->kv_b, h * (Dn + Dv) + d, row);
                for (int64_t c = 0; c < C; c++)
                    kb[(h * C + c) * Dn + d] = kbr[(h * Dn + d) * C + c] = kr_f32_to_bf16(row[c]);
            }
        }
    if (st == KR_OK)
        st = upload_stage(g, kb, H * C * Dn, "MLA Wk_b", &G->kb);
    if (st == KR_OK)
        st = upload_stage(g, kbr, H * C * Dn, "MLA Wk_b", &G->kbr);
    free(kb);
    free(kbr);
    free(row);
    if (st != KR_OK || L->v_b.rows)
        return st == KR_OK ? upload_matrix(g, &L->v_b, "MLA v_b", &G->vb) : st;
    uint16_t *vb = malloc((size_t)(H * Dv * C) * 2);
    row = malloc((size_t)C * sizeof(float));
    if (!vb || !row)
        st = kr_fail(KR_ERR_NOMEM, "out of memory staging MLA kv_b for the GPU");
    for (int64_t h = 0; st == KR_OK && h < H; h++)
        rows_bf16(&L->kv_b, h * (Dn + Dv) + Dn, Dv, vb + h * Dv * C, row);
    if (st == KR_OK)
        st = upload_stage(g, vb, H * Dv * C, "MLA Wv_b", &G->vb);
    free(vb);
    free(row);
    return st;
}

static kr_status upload_layer(gpu_stage *g, const kr_model *m, int l) {
    const kr_hparams *hp = &m->hp;
    const kr_layer *L = &m->layers[l];
    gpu_layer *G = &g->layers[l];
    int64_t D = hp->hidden;
    KR_TRY(upload_floats(g, L->input_norm, D, &G->input_norm));
    KR_TRY(upload_floats(g, L->post_norm, D, &G->post_norm));
    if (hp->family == KR_FAMILY_DEEPSEEK2) {
        int64_t C = hp->kv_lora_rank, W = C + hp->qk_rope_dim;
        if (hp->q_lora_rank) {
            KR_TRY(upload_matrix(g, &L->q_a, "MLA q_a", &G->q_a));
            KR_TRY(upload_matrix(g, &L->q_b, "MLA q_b", &G->q_b));
            KR_TRY(upload_floats(g, L->q_a_norm, hp->q_lora_rank, &G->q_a_norm));
            KR_TRY(upload_floats(g, L->q_a_bias, hp->q_lora_rank, &G->q_a_bias));
        } else {
            KR_TRY(upload_matrix(g, &L->q_proj, "MLA q_proj", &G->q_proj));
        }
        KR_TRY(upload_matrix(g, &L->kv_a, "MLA kv_a", &G->kv_a));
        KR_TRY(upload_floats(g, L->kv_a_norm, C, &G->kv_a_norm));
        KR_TRY(upload_floats(g, L->kv_a_bias, W, &G->kv_a_bias));
        KR_TRY(upload_mla_b(g, hp, L, G));
        KR_TRY(upload_matrix(g, &L->o_proj, "o_proj", &G->o));
    } else {
        int64_t hd = hp->head_dim;
        KR_TRY(upload_matrix(g, &L->wq, "q_proj", &G->wq));
        KR_TRY(upload_matrix(g, &L->wk, "k_proj", &G->wk));
        KR_TRY(upload_matrix(g, &L->wv, "v_proj", &G->wv));
        KR_TRY(upload_matrix(g, &L->wo, "o_proj", &G->o));
        KR_TRY(upload_floats(g, L->bq, hp->n_heads * hd, &G->bq));
        KR_TRY(upload_floats(g, L->bk, hp->n_kv_heads * hd, &G->bk));
        KR_TRY(upload_floats(g, L->bv, hp->n_kv_heads * hd, &G->bv));
        KR_TRY(upload_floats(g, L->q_norm, hd, &G->q_norm));
        KR_TRY(upload_floats(g, L->k_norm, hd, &G->k_norm));
    }
    KR_TRY(upload_floats(g, L->o_bias, D, &G->o_bias));
    if (!L->moe)
        return upload_mlp(g, &L->dense, &G->mlp);
    KR_TRY(upload_matrix_f32(g, &L->router, &G->router));
    KR_TRY(upload_floats(g, L->router_bias, hp->router.n_experts, &G->router_bias));
    if (L->has_shared)
        KR_TRY(upload_mlp(g, &L->shared, &G->mlp));
    return KR_OK;
}

/* The VRAM planner's request (vram_plan.h) for what this path keeps: non-expert weights in BF16, the
 * routed experts at the CPU quantization's bits, the KV cache and a prefill chunk's workspace. */
static kr_vram_request plan_request(const kr_gpu_model *g, kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    kr_vram_request rq = {.qc = *qc, .kv_fp8 = g->cfg.kv_fp8, .prefill_chunk = g->chunk,
                          .experts_cpu = g->cfg.experts_cpu};
    rq.qc.shared_bits = rq.qc.attention_bits = rq.qc.dense_bits = rq.qc.lm_head_bits = 0;
    for (int l = 0; l < hp->n_layers; l++) {
        const kr_qexpert *qe = hp->layer_is_moe[l] ? kr_model_routed_qexperts(m, l) : NULL;
        if (qe) {
            rq.qc.routed_bits = qe[0].w13.bits;
            rq.qc.group_size = qe[0].w13.gs;
            break;
        }
    }
    return rq;
}

/* The plan of one GPU at start-up. It refuses, with the sizes, a GPU the non-expert part does not fit;
 * otherwise it says how much the experts may take (what is left after a KV cache for min(max_pos, 32K)
 * tokens). */
static kr_status plan_vram(kr_gpu_model *gm, kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    gpu_stage *g = &gm->st[0];
    kr_cuda_device_info info;
    KR_TRY(kr_cuda_device_query(g->device, &info));
    kr_vram_request rq = plan_request(gm, m, qc);
    rq.vram_bytes = (int64_t)info.free_bytes;
    if (gm->cfg.vram_cap && gm->cfg.vram_cap < rq.vram_bytes)
        rq.vram_bytes = gm->cfg.vram_cap;
    kr_vram_plan p;
    if (kr_vram_plan_make(hp, &rq, &p) != KR_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", kr_error());
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu on %s: %s", info.name, why);
    }
    g->first = 0;
    g->last = (int)hp->n_layers;
    int64_t max_ctx = hp->max_pos > 0 && hp->max_pos < 32768 ? hp->max_pos : 32768;
    g->expert_budget = rq.vram_bytes - p.nonexpert - p.workspace - p.reserve - max_ctx * p.kv_per_token;
    if (g->expert_budget < 0)
        g->expert_budget = 0;
    fprintf(stderr, "krasis: VRAM plan: %.2f GiB usable on %s; non-expert weights %.2f GiB, workspace %.2f GiB, KV "
            "%lld bytes a token (%s); %.2f GiB left for routed experts\n",
            rq.vram_bytes / 1073741824.0, info.name, p.nonexpert / 1073741824.0, p.workspace / 1073741824.0,
            (long long)p.kv_per_token, gm->cfg.kv_fp8 ? "fp8" : "bf16", g->expert_budget / 1073741824.0);
    return KR_OK;
}

/* --pp: the planner's split of the layers (kr_pp_plan_make) over the stages' devices, each with its free
 * memory (shared evenly where one device holds several stages) under --vram. Refuses, naming the stage
 * and what it misses, when one does not fit its layers and their KV cache for min(max_pos, 32K) tokens. */
static kr_status plan_stages(kr_gpu_model *gm, kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    kr_vram_request rq = plan_request(gm, m, qc);
    int64_t vram[KR_GPU_MAX_STAGES];
    for (int s = 0; s < gm->n_stages; s++) {
        kr_cuda_device_info info;
        KR_TRY(kr_cuda_device_query(gm->st[s].device, &info));
        int sharing = 0;
        for (int t = 0; t < gm->n_stages; t++)
            sharing += gm->st[t].device == gm->st[s].device;
        vram[s] = (int64_t)info.free_bytes / sharing;
        if (gm->cfg.vram_cap && gm->cfg.vram_cap < vram[s])
            vram[s] = gm->cfg.vram_cap;
    }
    kr_pp_plan p;
    if (kr_pp_plan_make(hp, &rq, gm->n_stages, vram, &p) != KR_OK) {
        char why[1536];
        snprintf(why, sizeof why, "%s", kr_error());
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: %s", why);
    }
    for (int s = 0; s < gm->n_stages; s++) {
        gpu_stage *g = &gm->st[s];
        const kr_pp_stage *t = &p.stage[s];
        g->first = t->first;
        g->last = t->last;
        g->expert_budget = t->experts + t->free_bytes;
        fprintf(stderr, "krasis: VRAM plan, stage %d on GPU %d: layers [%d, %d), %.2f GiB usable; non-expert weights "
                "%.2f GiB, KV %.2f GiB (%lld tokens), workspace %.2f GiB; %.2f GiB left for routed experts\n", s,
                g->device, g->first, g->last, t->vram_bytes / 1073741824.0, t->weights / 1073741824.0,
                t->kv_bytes / 1073741824.0, (long long)p.kv_tokens, t->workspace / 1073741824.0,
                g->expert_budget / 1073741824.0);
    }
    return KR_OK;
}

/* 1 MiB of a known pattern from device a to device b by the hand-off's own copy, read back on the host */
static kr_status test_copy(int a, int b, bool *same) {
    const size_t n = 1 << 18, bytes = n * sizeof(uint32_t);
    uint32_t *h = malloc(2 * bytes);
    void *da = NULL, *db = NULL;
    *same = false;
    kr_status st = h ? kr_cuda_set_device(a) : kr_fail(KR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; h && i < n; i++)
        h[i] = (uint32_t)i * 2654435761u ^ 0x5bd1e995u; /* distinct words: zeros, a shift or a part show */
    if (st == KR_OK)
        st = kr_cuda_malloc(&da, bytes, "the pipeline's test copy");
    if (st == KR_OK)
        st = kr_cuda_to_device(da, h, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_stream_sync(NULL);
    if (st == KR_OK)
        st = kr_cuda_set_device(b);
    if (st == KR_OK)
        st = kr_cuda_malloc(&db, bytes, "the pipeline's test copy");
    if (st == KR_OK)
        st = kr_cuda_memset(db, 0, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_copy_peer(db, b, da, a, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_to_host(h + n, db, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_stream_sync(NULL);
    if (st == KR_OK)
        *same = memcmp(h, h + n, bytes) == 0;
    kr_cuda_free(db); /* b is current */
    kr_cuda_set_device(a);
    kr_cuda_free(da);
    free(h);
    return st;
}

/* How stage s - 1 hands its residual stream to stage s, decided once: a device-to-device copy where both
 * stages are on one device or their devices have peer access (enabled both ways), once a test copy of a
 * known pattern read back on the host came out right (some consumer cards report peer access and return
 * zeros); else, or when asked (pp_host_bounce, KRASIS_PP_BOUNCE=1), through pinned host memory. */
static kr_status choose_link(kr_gpu_model *gm, int s) {
    int a = gm->st[s - 1].device, b = gm->st[s].device;
    const char *env = getenv("KRASIS_PP_BOUNCE");
    char why[512] = "";
    bool same = false;
    if (gm->cfg.pp_host_bounce || (env && atoi(env) > 0))
        snprintf(why, sizeof why, "asked for (KRASIS_PP_BOUNCE=1 or the config's pp_host_bounce)");
    else if (a != b && !(kr_cuda_can_access_peer(a, b) && kr_cuda_can_access_peer(b, a)))
        snprintf(why, sizeof why, "the driver reports no peer access between GPUs %d and %d", a, b);
    else if (a != b && (kr_cuda_set_device(b) != KR_OK || kr_cuda_enable_peer(a) != KR_OK ||
                        kr_cuda_set_device(a) != KR_OK || kr_cuda_enable_peer(b) != KR_OK))
        snprintf(why, sizeof why, "enabling peer access failed: %s", kr_error());
    else if (test_copy(a, b, &same) != KR_OK)
        snprintf(why, sizeof why, "the test copy failed: %s", kr_error());
    else if (!same)
        snprintf(why, sizeof why, "a test copy of a known pattern from GPU %d to GPU %d came back wrong, although the "
                 "driver reports peer access", a, b);
    gm->link[s] = why[0] ? LINK_BOUNCE : LINK_COPY;
    fprintf(stderr, "krasis: pipeline stage %d (GPU %d) -> stage %d (GPU %d): %s%s\n", s - 1, a, s, b,
            why[0] ? "through pinned host memory: " : a == b ? "device copy (one GPU), test copy checked"
                                                            : "peer copy, test copy checked",
            why);
    return KR_OK;
}


/* Bytes of each working buffer for a prompt of n tokens run in chunks of T (all_positions: logits of every
 * position, at most min(T, 256) rows at a time) over a context of up to ctx positions. One account for
 * reserve() (ctx 0: the buffers sized by the context, MLA's expanded keys/values and its absorbed form's
 * ones, grow where they are used) and for the experts' VRAM budget. */
static void buffer_bytes(const kr_model *m, bool experts_on_gpu, bool last_stage, int64_t n, int64_t T, int64_t ctx,
                         bool all_positions, size_t out[B_COUNT]) {
    const kr_hparams *hp = &m->hp;
    bool mla = hp->family == KR_FAMILY_DEEPSEEK2;
    int64_t D = hp->hidden, H = hp->n_heads, f = sizeof(float), b = 2, q = H * hp->head_dim;
    int64_t W = hp->kv_lora_rank + hp->qk_rope_dim, kvw = mla ? W : hp->n_kv_heads * hp->head_dim;
    int64_t o = H * (mla ? hp->v_head_dim : hp->head_dim), shared = hp->n_shared > 0 ? hp->n_shared : 1;
    int64_t inter = hp->moe_intermediate * shared > hp->intermediate ? hp->moe_intermediate * shared : hp->intermediate;
    int E = hp->router.n_experts > 0 ? hp->router.n_experts : 1, K = hp->router.top_k > 0 ? hp->router.top_k : 1;
    int64_t rows = all_positions ? (T < 256 ? T : 256) : 1; /* logits rows at a time: they pass through B_XB */
    memset(out, 0, B_COUNT * sizeof *out);
    out[B_X] = (size_t)(n * D * f);
    out[B_XN] = out[B_MOE] = (size_t)(T * D * f);
    out[B_XB] = (size_t)(T * D * b);
    out[B_Q] = (size_t)(T * q * f);
    out[B_QA] = (size_t)(T * (hp->q_lora_rank ? hp->q_lora_rank : 1) * f);
    out[B_QB] = (size_t)(T * (q > hp->q_lora_rank ? q : hp->q_lora_rank) * b);
    out[B_KV] = out[B_K] = out[B_V] = (size_t)(T * kvw * f);
    out[B_O] = (size_t)(T * o * b);
    out[B_GU] = (size_t)(T * 2 * inter * b);
    out[B_ACT] = (size_t)(T * inter * b);
    out[B_LOGITS] = (size_t)(T * E * f);
    out[B_IDX] = (size_t)(T * K) * sizeof(int32_t);
    out[B_W] = (size_t)(T * K * f);
    if (experts_on_gpu)
        out[B_MOE_WS] = kr_gpu_moe_ws_bytes(E, hp->moe_intermediate, T, K);
    if (last_stage)
        out[B_OUT] = (size_t)(rows * hp->vocab * f);
    if (!mla) {
        out[B_ATT] = (size_t)(T * q * b);
    } else if (ctx > 0) {
        out[B_QABS] = (size_t)(T * H * W * f);
        out[B_ATT] = (size_t)(T * H * hp->kv_lora_rank * b);
        out[B_KX] = (size_t)(ctx * q * b);
        out[B_VX] = (size_t)(ctx * o * b);
    }
}

/* What a stage's experts may take now: the plan's share, and no more than is free after the working
 * buffers of a prompt chunk and a KV cache for min(max_pos, 32K) tokens (less 512 MiB of slack). 0 when
 * nothing is left: the experts then stay on the CPU (auto) or the mode is refused. */
static int64_t expert_budget(const kr_gpu_model *gm, const gpu_stage *g, const kr_model *m) {
    const kr_hparams *hp = &m->hp;
    kr_cuda_device_info info;
    if (kr_cuda_device_query(g->device, &info) != KR_OK)
        return 0;
    int64_t ctx = hp->max_pos > 0 && hp->max_pos < 32768 ? hp->max_pos : 32768;
    kr_cuda_kv_shape ks = kr_kv_shape_of(hp, gm->cfg.kv_fp8);
    /* 1.5x: growing the cache holds the old and the new one for a moment */
    int64_t kv = 3 * ctx * kr_cuda_kv_bytes_per_token(&ks) * (g->last - g->first) / (hp->n_layers > 0 ? 2 * hp->n_layers : 2);
    size_t sz[B_COUNT];
    buffer_bytes(m, true, g->last == hp->n_layers, ctx, gm->chunk, ctx, true, sz);
    int64_t working = 0;
    for (int i = 0; i < B_COUNT; i++)
        working += (int64_t)sz[i];
    int64_t free_now = (int64_t)info.free_bytes - working - kv - (512ll << 20);
    int64_t b = g->expert_budget < free_now ? g->expert_budget : free_now;
    return b > 0 ? b : 0;
}

/* Puts the routed experts in VRAM per cfg.experts (after the other weights, which the budget counts).
 * With auto, anything that stops it leaves them on the CPU and says why in `why`; an explicit mode that
 * cannot run is an error. */
static kr_status place_experts(kr_gpu_model *gm, kr_model *m, const kr_quant_config *qc, char *why, size_t n) {
    const kr_hparams *hp = &m->hp;
    bool asked = gm->cfg.experts.kind != KR_EXPERTS_AUTO;
    int n_moe = 0, first = -1;
    for (int l = 0; l < hp->n_layers; l++) {
        gm->moe_index[l] = hp->layer_is_moe[l] ? n_moe++ : -1;
        first = first < 0 && hp->layer_is_moe[l] ? l : first;
    }
    const kr_qexpert *qe = first >= 0 ? kr_model_routed_qexperts(m, first) : NULL;
    kr_gpu_moe_geom geom;
    kr_status st = first < 0 ? kr_fail(KR_ERR_ARG, "the model has no MoE layers")
                   : !qe     ? kr_fail(KR_ERR_ARG, "the routed experts are not quantized (give --expert-bits 4|8)")
                             : kr_gpu_moe_geom_make(hp->router.n_experts, hp->hidden, qe[0].inter, qe[0].w13.bits,
                                                    qe[0].w13.gs, &geom);
    if (st == KR_OK) {
        st = kr_model_open_gpu_cache(m, qc, &gm->gcache);
        gm->have_gcache = st == KR_OK;
    }
    size_t off = 0;
    for (int s = 0; st == KR_OK && s < gm->n_stages; s++) { /* each stage its own layers' residency */
        gpu_stage *g = &gm->st[s];
        int n_s = 0;
        g->moe0 = 0;
        for (int l = 0; l < g->last; l++) {
            if (hp->layer_is_moe[l] && l < g->first)
                g->moe0++;
            else if (hp->layer_is_moe[l])
                n_s++;
        }
        if (n_s == 0)
            continue;
        if (gm->n_stages > 1)
            st = kr_cuda_set_device(g->device);
        int64_t budget = expert_budget(gm, g, m); /* 0 would mean "all free memory" to the residency */
        if (st == KR_OK && budget <= 0)
            st = kr_fail(KR_ERR_ARG, "no VRAM is left for routed experts%s after the non-expert weights, the working "
                         "buffers and a KV cache (give more --vram, or --expert-mode cpu)",
                         gm->n_stages > 1 ? " on a pipeline stage" : "");
        kr_gpu_experts_config xc = {.mode = gm->cfg.experts, .geom = gm->gcache.geom, .n_layers = n_s,
                                    .host = gm->gcache.layer + g->moe0, .vram_budget = budget};
        if (st == KR_OK)
            st = kr_gpu_experts_create(&xc, &g->experts);
        kr_gpu_experts_stats xs;
        if (st == KR_OK)
            st = kr_gpu_experts_stats_get(g->experts, &xs); /* persistent: waits for the upload */
        if (st != KR_OK)
            break;
        g->decode_on_gpu = xs.mode.kind == KR_EXPERTS_PERSISTENT;
        g->group_moe_layers = xs.mode.group > 0 ? xs.mode.group : n_s;
        g->expert_bytes = xs.vram_bytes;
        char mode[64], label[32] = "";
        kr_expert_mode_str(&xs.mode, mode, sizeof mode);
        if (gm->n_stages > 1)
            snprintf(label, sizeof label, "stage %d: ", s);
        if (off < n)
            off += (size_t)snprintf(why + off, n - off, "%s%s%s, %.2f GB of VRAM%s", off ? "; " : "", label, mode,
                                    xs.vram_bytes / 1e9,
                                    g->decode_on_gpu ? "; decode on the GPU too" : "; decode on the CPU (hybrid)");
    }
    if (st != KR_OK) {
        if (asked)
            return st;
        snprintf(why, n, "%s", kr_error());
        for (int s = 0; s < gm->n_stages; s++) {
            if (gm->n_stages > 1)
                kr_cuda_set_device(gm->st[s].device);
            kr_gpu_experts_destroy(gm->st[s].experts);
            gm->st[s].experts = NULL;
            gm->st[s].decode_on_gpu = false;
        }
    }
    return KR_OK;
}

/* A stage's stream, events, cuBLASLt handle and weights, on its device (the last stage: the final norm
 * and lm_head too). */
static kr_status create_stage(kr_gpu_model *gm, const kr_model *m, int s) {
    const kr_hparams *hp = &m->hp;
    gpu_stage *g = &gm->st[s];
    KR_TRY(kr_cuda_set_device(g->device));
    KR_TRY(kr_cuda_stream_create(&g->s));
    KR_TRY(kr_cuda_event_create(&g->copied));
    KR_TRY(kr_cuda_event_create(&g->done));
    KR_TRY(kr_cuda_blas_create(&g->blas));
    for (int l = g->first; l < g->last; l++)
        KR_TRY(upload_layer(g, m, l));
    if (g->last == hp->n_layers) {
        KR_TRY(upload_floats(g, m->final_norm, hp->hidden, &gm->final_norm));
        KR_TRY(upload_matrix(g, &m->lm_head, "lm_head", &gm->lm_head));
    }
    KR_TRY(upload_floats(g, m->inv_freq, hp->rope.dim / 2, &g->inv_freq));
    g->rope = (kr_cuda_rope_params){.rope_dim = hp->rope.dim, .interleaved = hp->rope.interleaved,
                                    .attention_factor = (float)hp->rope.attention_factor, .inv_freq = g->inv_freq};
    return KR_OK;
}

kr_status kr_gpu_model_create(kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    const kr_gpu_config *cfg = &qc->gpu;
    int n_dev = kr_cuda_device_count();
    if (n_dev == 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: no usable CUDA device (%s)", kr_cuda_no_device_reason());
    if (hp->family == KR_FAMILY_DEEPSEEK2 &&
        (hp->qk_nope_dim < 1 || hp->kv_lora_rank + hp->qk_rope_dim > KR_CUDA_ATTN_MAX_QK ||
         hp->kv_lora_rank > KR_CUDA_ATTN_MAX_V))
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: MLA with qk_nope_head_dim %lld, kv_lora_rank %lld and "
                       "qk_rope_head_dim %lld is not supported on the GPU (needs qk_nope_head_dim >= 1, kv_lora_rank "
                       "+ qk_rope_head_dim <= %d, kv_lora_rank <= %d)", (long long)hp->qk_nope_dim,
                       (long long)hp->kv_lora_rank, (long long)hp->qk_rope_dim, KR_CUDA_ATTN_MAX_QK,
                       KR_CUDA_ATTN_MAX_V);
    if (hp->family != KR_FAMILY_DEEPSEEK2 && hp->head_dim > KR_CUDA_ATTN_MAX_V)
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: head_dim %lld is more than the GPU attention takes (%d)",
                       (long long)hp->head_dim, KR_CUDA_ATTN_MAX_V);
    if (hp->router.n_experts > KR_CUDA_ROUTER_MAX_EXPERTS)
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: %d experts is more than the GPU router takes (%d)",
                       hp->router.n_experts, KR_CUDA_ROUTER_MAX_EXPERTS);
    int n = cfg->n_stages ? cfg->n_stages : cfg->n_devices ? cfg->n_devices : 1;
    if (n < 1 || n > KR_GPU_MAX_STAGES) /* the CLI refuses these too; a library caller may not */
        return kr_fail(KR_ERR_ARG, "--pp %d: from 1 to %d pipeline stages", n, KR_GPU_MAX_STAGES);
    if (cfg->prefill_chunk < 0 || cfg->prefill_chunk > KR_GPU_MAX_PREFILL_CHUNK)
        return kr_fail(KR_ERR_ARG, "--prefill-chunk %lld: from 1 to %d tokens (0: the default)",
                       (long long)cfg->prefill_chunk, KR_GPU_MAX_PREFILL_CHUNK);
    if (cfg->n_devices && cfg->n_devices != n)
        return kr_fail(KR_ERR_ARG, "--pp %d with --gpus listing %d devices: give one device per stage", n,
                       cfg->n_devices);
    if (n > hp->n_layers)
        return kr_fail(KR_ERR_ARG, "--pp %d: the model has only %lld layers", n, (long long)hp->n_layers);
    for (int s = 0; s < n; s++)
        if ((cfg->n_devices ? cfg->devices[s] : s) >= n_dev)
            return kr_fail(KR_ERR_ARG, "%s: there is no CUDA device %d here (%d found; --gpus picks the devices, "
                           "and one may repeat: --gpus 0,0)", cfg->n_devices ? "--gpus" : "--pp",
                           cfg->n_devices ? cfg->devices[s] : s, n_dev);
    kr_gpu_model *g = calloc(1, sizeof *g);
    if (!g)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    g->cfg = *cfg;
    g->n_stages = n;
    g->chunk = cfg->prefill_chunk > 0 ? cfg->prefill_chunk : 4096;
    g->profile = getenv("KRASIS_GPU_PROFILE") && atoi(getenv("KRASIS_GPU_PROFILE")) > 0;
    g->layers = calloc((size_t)hp->n_layers, sizeof *g->layers);
    g->moe_index = calloc((size_t)hp->n_layers, sizeof *g->moe_index);
    for (int s = 0; s < n; s++) {
        gpu_stage *S = &g->st[s];
        S->device = cfg->n_devices ? cfg->devices[s] : s;
        S->layers = g->layers;
        S->moe_index = g->moe_index;
        S->gpu_min_tokens = cfg->experts_min_tokens > 0 ? cfg->experts_min_tokens : 64;
        S->profile = g->profile;
    }
    kr_status st = g->layers && g->moe_index ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
    if (st == KR_OK)
        st = kr_cuda_set_device(g->st[0].device);
    if (st == KR_OK)
        st = n == 1 ? plan_vram(g, m, qc) : plan_stages(g, m, qc);
    for (int s = 0; st == KR_OK && s < n; s++)
        st = create_stage(g, m, s);
    for (int s = 1; st == KR_OK && s < n; s++)
        st = choose_link(g, s);
    char where[768] = "on the CPU (hybrid): --expert-mode cpu";
    if (st == KR_OK && !cfg->experts_cpu && hp->router.n_experts > 0) {
        char why[640] = "";
        st = place_experts(g, m, qc, why, sizeof why);
        bool in_vram = false;
        for (int s = 0; s < n; s++)
            in_vram |= g->st[s].experts != NULL;
        snprintf(where, sizeof where, "%s: %s", in_vram ? "in VRAM" : "on the CPU (hybrid)", why);
    }
    if (st == KR_OK && n > 1)
        st = kr_cuda_set_device(g->st[0].device); /* what a multi-stage call leaves current */
    if (st != KR_OK) {
        kr_gpu_model_destroy(g);
        return st;
    }
    int64_t weights = 0;
    for (int s = 0; s < n; s++)
        weights += g->st[s].weight_bytes;
    fprintf(stderr, "krasis: GPU forward: %.2f GB of BF16 non-expert weights in VRAM%s; routed experts %s\n",
            weights / 1e9, n > 1 ? " over the pipeline's stages" : "", where);
    m->gpu = g;
    return KR_OK;
}

void kr_gpu_model_destroy(kr_gpu_model *g) {
    if (!g)
        return;
    double wait = 0, cpu = 0;
    for (int s = 0; s < g->n_stages; s++) {
        wait += g->st[s].prof_wait;
        cpu += g->st[s].prof_cpu;
    }
    if (g->profile && g->prof_steps)
        fprintf(stderr, "krasis: GPU profile, %lld decode steps: %.3f ms a step; per step %.3f ms waiting for the GPU's "
                "part of the MoE layers (attention, norms, router, hand-off), %.3f ms in the CPU experts, %.3f ms "
                "else (expert output upload, dense layers, lm_head, host overhead)\n",
                (long long)g->prof_steps, 1e3 * g->prof_total / g->prof_steps, 1e3 * wait / g->prof_steps,
                1e3 * cpu / g->prof_steps, 1e3 * (g->prof_total - wait - cpu) / g->prof_steps);
    for (int s = 0; s < g->n_stages; s++) { /* the residencies read the cache file's blocks: first */
        gpu_stage *S = &g->st[s];
        kr_cuda_set_device(S->device);
        if (S->s)
            kr_cuda_stream_sync(S->s);
        kr_gpu_experts_destroy(S->experts);
    }
    if (g->have_gcache)
        kr_gcache_close(&g->gcache);
    for (int s = 0; s < g->n_stages; s++) {
        gpu_stage *S = &g->st[s];
        kr_cuda_set_device(S->device);
        for (int i = 0; i < S->n_mem; i++)
            kr_cuda_free(S->mem[i]);
        for (int i = 0; i < B_COUNT; i++)
            kr_cuda_free(S->buf[i].p);
        kr_cuda_host_free(S->h_x);
        kr_cuda_host_free(S->h_out);
        kr_cuda_host_free(S->h_idx);
        kr_cuda_host_free(S->h_w);
        kr_cuda_blas_destroy(S->blas);
        if (S->copied)
            kr_cuda_event_destroy(S->copied);
        if (S->done)
            kr_cuda_event_destroy(S->done);
        if (S->s)
            kr_cuda_stream_destroy(S->s);
        free(S->mem);
    }
    if (g->n_stages > 1)
        kr_cuda_set_device(g->st[0].device);
    kr_cuda_host_free(g->h_emb);
    kr_cuda_host_free(g->h_bounce);
    free(g->layers);
    free(g->moe_index);
    free(g);
}

/* ---------------------------------------------------------------------------------------- KV cache */

static kr_cuda_kv_shape kv_shape(const kr_model *m, int64_t capacity) {
    kr_cuda_kv_shape sh = kr_kv_shape_of(&m->hp, m->gpu->cfg.kv_fp8);
    sh.capacity = capacity;
    return sh;
}

int64_t kr_gpu_kv_bytes_per_token(const kr_model *m) {
    kr_cuda_kv_shape sh = kv_shape(m, 0);
    return kr_cuda_kv_bytes_per_token(&sh);
}

kr_status kr_gpu_kv_create(const kr_model *m, kr_kv_cache *kv) {
    kv->gpu = calloc(1, sizeof *kv->gpu);
    if (!kv->gpu)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    const kr_gpu_model *g = m->gpu;
    kv->gpu->n = g->n_stages;
    for (int s = 0; s < g->n_stages; s++) {
        kr_cuda_kv_shape sh = kv_shape(m, 0);
        sh.n_layers = g->st[s].last - g->st[s].first;
        kv->gpu->kv[s].shape = sh;
        kv->gpu->device[s] = g->st[s].device;
    }
    return KR_OK;
}

/* bytes of the first len tokens of one layer's k (or v) and of its FP8 scales */
static void kv_layer_bytes(const kr_cuda_kv_shape *sh, int64_t len, int v, size_t *el, size_t *sc) {
    int64_t dim = v ? sh->v_dim : sh->k_dim;
    *el = (size_t)(len * sh->n_kv_heads * dim) * kr_cuda_dtype_size(sh->dt);
    *sc = sh->dt == KR_CU_FP8 ? (size_t)(len * sh->n_kv_heads) * sizeof(float) : 0;
}

/* one stage's cache to cap tokens, keeping its first len */
static kr_status kv_grow(kr_cuda_kv *old, int64_t cap, int64_t len) {
    kr_cuda_kv_shape sh = old->shape;
    sh.capacity = cap;
    kr_cuda_kv nk;
    KR_TRY(kr_cuda_kv_create(&nk, &sh));
    kr_status st = KR_OK;
    if (old->k) {
        /* the old cache is in use by nothing now: GPU forwards finish before kr_forward returns */
        for (int64_t l = 0; st == KR_OK && l < sh.n_layers; l++)
            for (int v = 0; st == KR_OK && v < 2; v++) {
                if (v && sh.v_in_k)
                    continue;
                size_t el, sc;
                kv_layer_bytes(&sh, len, v, &el, &sc);
                st = kr_cuda_copy(v ? nk.v[l] : nk.k[l], v ? old->v[l] : old->k[l], el, NULL);
                if (st == KR_OK && sc)
                    st = kr_cuda_copy(v ? nk.v_scale[l] : nk.k_scale[l], v ? old->v_scale[l] : old->k_scale[l], sc,
                                      NULL);
            }
        if (st == KR_OK)
            st = kr_cuda_device_sync();
    }
    if (st != KR_OK) {
        kr_cuda_kv_destroy(&nk);
        return st;
    }
    if (old->k)
        kr_cuda_kv_destroy(old);
    *old = nk;
    return KR_OK;
}

/* Each stage's cache grows on its own device to at least `need` (one that failed to grow before is retried,
 * so stages never stay at different sizes); kv->cap is the smallest. The current device is set even for
 * one stage: a server's engine thread starts on device 0 whatever --gpus said. */
kr_status kr_gpu_kv_reserve(kr_kv_cache *kv, int64_t need) {
    struct kr_gpu_kv *c = kv->gpu;
    kr_status st = KR_OK;
    int64_t smallest = INT64_MAX;
    for (int s = 0; s < c->n && st == KR_OK; s++) {
        int64_t cap = c->kv[s].shape.capacity;
        if (need > cap) {
            cap = cap ? cap : 256;
            while (cap < need)
                cap *= 2;
            st = kr_cuda_set_device(c->device[s]);
            if (st == KR_OK)
                st = kv_grow(&c->kv[s], cap, kv->len);
        }
        if (st == KR_OK && c->kv[s].shape.capacity < smallest)
            smallest = c->kv[s].shape.capacity;
    }
    kr_cuda_set_device(c->device[0]);
    if (st == KR_OK)
        kv->cap = smallest;
    return st;
}

void kr_gpu_kv_free(kr_kv_cache *kv) {
    if (!kv->gpu)
        return;
    for (int s = 0; s < kv->gpu->n; s++) {
        kr_cuda_set_device(kv->gpu->device[s]);
        if (kv->gpu->kv[s].k)
            kr_cuda_kv_destroy(&kv->gpu->kv[s]);
    }
    kr_cuda_set_device(kv->gpu->device[0]);
    free(kv->gpu);
    kv->gpu = NULL;
}

/* ------------------------------------------------------------------------------------------ forward */

#define BUF(i) (g->buf[i].p)

/* Sizes the stage's working buffers for a prompt of n tokens in chunks of T (grow-only: a decode step after
 * the first allocates nothing) and its pinned hand-off buffers for a chunk. */
static kr_status reserve(gpu_stage *g, const kr_model *m, int64_t n, int64_t T, bool all_positions) {
    size_t sz[B_COUNT];
    buffer_bytes(m, g->experts != NULL, g->last == m->hp.n_layers, n, T, 0, all_positions, sz);
    static const char *what[B_COUNT] = {
        [B_X] = "the residual stream", [B_XN] = "normalized hidden states", [B_XB] = "bf16 hidden states",
        [B_Q] = "queries", [B_QA] = "q_a", [B_QB] = "bf16 queries", [B_KV] = "new keys", [B_K] = "new keys",
        [B_V] = "new values", [B_ATT] = "attention output", [B_O] = "attention heads' values", [B_GU] = "MLP gate/up",
        [B_ACT] = "MLP activations", [B_LOGITS] = "router logits", [B_IDX] = "expert ids", [B_W] = "expert weights",
        [B_MOE] = "routed expert output", [B_MOE_WS] = "MoE workspace", [B_OUT] = "logits"};
    for (int i = 0; i < B_COUNT; i++)
        if (sz[i])
            KR_TRY(dgrow(g, i, sz[i], what[i] ? what[i] : "a working buffer of the GPU forward"));
    int64_t D = m->hp.hidden, K = m->hp.router.top_k > 0 ? m->hp.router.top_k : 1, f = sizeof(float);
    if (T > g->h_cap) {
        kr_cuda_host_free(g->h_x);
        kr_cuda_host_free(g->h_out);
        kr_cuda_host_free(g->h_idx);
        kr_cuda_host_free(g->h_w);
        g->h_x = g->h_out = g->h_w = NULL;
        g->h_idx = NULL;
        g->h_cap = 0;
        KR_TRY(kr_cuda_host_alloc((void **)&g->h_x, (size_t)(T * D * f), "pinned hidden states"));
        KR_TRY(kr_cuda_host_alloc((void **)&g->h_out, (size_t)(T * D * f), "pinned expert output"));
        KR_TRY(kr_cuda_host_alloc((void **)&g->h_idx, (size_t)(T * K) * sizeof(int32_t), "pinned expert ids"));
        KR_TRY(kr_cuda_host_alloc((void **)&g->h_w, (size_t)(T * K * f), "pinned expert weights"));
        g->h_cap = T;
    }
    return KR_OK;
}

static kr_cuda_view view(const void *p, kr_cuda_dtype dt, int64_t ts, int64_t hs) {
    return (kr_cuda_view){.ptr = p, .dt = dt, .token_stride = ts, .head_stride = hs};
}

static kr_status attend(gpu_stage *g, kr_cuda_attn *a) {
    size_t ws = kr_cuda_attention_ws_bytes(a);
    KR_TRY(dgrow(g, B_ATTN_WS, ws ? ws : 1, "attention workspace"));
    return kr_cuda_attention(a, BUF(B_ATTN_WS), g->buf[B_ATTN_WS].cap, g->s);
}

/* Prefill-sized chunks expand the cached latents into per-head keys [Wk_b c | k_pe] and values Wv_b c
 * and run the tensor-core flash kernel at (Dn + Dr, Dv) per head: for a 10K prompt that is several
 * times fewer FLOPs than attending over the 576-wide latent in the absorbed form. The latents come
 * from a BF16 cache, or (FP8 cache, first chunk) from the new rows themselves. Small chunks over a
 * long context stay absorbed: expanding the whole context would cost more than it saves. */
static bool mla_expands(const kr_cuda_kv *kv, int64_t T, int64_t pos0) {
    return T >= 16 && T * 8 >= pos0 + T && (kv->shape.dt == KR_CU_BF16 || pos0 == 0);
}

static kr_status mla_expanded(gpu_stage *g, const kr_hparams *hp, const gpu_layer *G, kr_cuda_kv *kv, int l,
                              int64_t T, int64_t pos0) {
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dr = hp->qk_rope_dim, Dq = Dn + Dr, Dv = hp->v_head_dim;
    int64_t C = hp->kv_lora_rank, W = C + Dr, ctx = pos0 + T;
    const uint16_t *lat = kv->k[l]; /* [ctx, W] bf16 */
    if (kv->shape.dt != KR_CU_BF16) {
        KR_TRY(dgrow(g, B_LATB, (size_t)(T * W) * 2, "bf16 latents"));
        KR_TRY(kr_cuda_convert(KR_CU_BF16, BUF(B_LATB), KR_CU_F32, BUF(B_KV), T * W, g->s));
        lat = BUF(B_LATB);
    }
    KR_TRY(dgrow(g, B_KX, (size_t)(ctx * H * Dq) * 2, "expanded MLA keys"));
    KR_TRY(dgrow(g, B_VX, (size_t)(ctx * H * Dv) * 2, "expanded MLA values"));
    uint16_t *kx = BUF(B_KX), *vx = BUF(B_VX);
    KR_TRY(kr_cuda_gemm_bf16_batched(g->blas, KR_CU_BF16, kx, H * Dq, Dq, lat, W, 0, G->kbr, Dn * C, ctx, Dn, C, H, 1,
                                     0, g->s));
    for (int64_t h = 0; h < H; h++) /* the shared rope key next to every head's nope part */
        KR_TRY(kr_cuda_copy_2d(kx + h * Dq + Dn, (size_t)(H * Dq) * 2, lat + C, (size_t)W * 2, (size_t)Dr * 2,
                               (size_t)ctx, g->s));
    KR_TRY(kr_cuda_gemm_bf16_batched(g->blas, KR_CU_BF16, vx, H * Dv, Dv, lat, W, 0, G->vb, Dv * C, ctx, Dv, C, H, 1,
                                     0, g->s));
    kr_cuda_attn a = {.T = T, .n_heads = H, .n_kv_heads = H, .qk_dim = Dq, .v_dim = Dv, .pos0 = pos0,
                      .scale = (float)hp->attn_scale, .q = view(BUF(B_QB), KR_CU_BF16, H * Dq, Dq),
                      .k = view(kx, KR_CU_BF16, H * Dq, Dq), .v = view(vx, KR_CU_BF16, H * Dv, Dv),
                      .out = view(BUF(B_O), KR_CU_BF16, H * Dv, Dv)};
    return attend(g, &a);
}

/* decode and small chunks: [Wk_b^T q_nope | RoPE(q_pe)] against the latent cache, then Wv_b per head */
static kr_status mla_absorbed(gpu_stage *g, const kr_hparams *hp, const gpu_layer *G, kr_cuda_kv *kv, int l,
                              int64_t T, int64_t pos0) {
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dr = hp->qk_rope_dim, Dq = Dn + Dr, Dv = hp->v_head_dim;
    int64_t C = hp->kv_lora_rank, W = C + Dr;
    KR_TRY(dgrow(g, B_QABS, (size_t)(T * H * W) * sizeof(float), "absorbed queries"));
    KR_TRY(dgrow(g, B_ATT, (size_t)(T * H * C) * 2, "attended latents"));
    float *q = BUF(B_Q), *qabs = BUF(B_QABS);
    void *qb = BUF(B_QB), *lat = BUF(B_ATT), *ob = BUF(B_O);
    KR_TRY(kr_cuda_gemm_bf16_batched(g->blas, KR_CU_F32, qabs, H * W, W, qb, H * Dq, Dq, G->kb, C * Dn, T, C, Dn, H,
                                     1, 0, g->s));
    KR_TRY(kr_cuda_copy_2d(qabs + C, (size_t)W * sizeof(float), q + Dn, (size_t)Dq * sizeof(float),
                           (size_t)Dr * sizeof(float), (size_t)(T * H), g->s));
    kr_cuda_attn a = {.T = T, .n_heads = H, .n_kv_heads = 1, .qk_dim = W, .v_dim = C, .pos0 = pos0,
                      .scale = (float)hp->attn_scale, .q = view(qabs, KR_CU_F32, H * W, W),
                      .k = kr_cuda_kv_k_view(kv, l), .v = kr_cuda_kv_v_view(kv, l),
                      .out = view(lat, KR_CU_BF16, H * C, C)};
    KR_TRY(attend(g, &a));
    return kr_cuda_gemm_bf16_batched(g->blas, KR_CU_BF16, ob, H * Dv, Dv, lat, H * C, C, G->vb, Dv * C, T, Dv, C, H,
                                     1, 0, g->s);
}

/* x += o_proj(attention(xb)) for layer l, MLA */
static kr_status mla_attention(gpu_stage *g, const kr_model *m, int l, kr_cuda_kv *kv, int64_t T, int64_t pos0) {
    const kr_hparams *hp = &m->hp;
    const gpu_layer *G = &g->layers[l];
    int64_t D = hp->hidden, H = hp->n_heads, Dn = hp->qk_nope_dim, Dr = hp->qk_rope_dim, Dq = Dn + Dr;
    int64_t Dv = hp->v_head_dim, C = hp->kv_lora_rank, W = C + Dr, R = hp->q_lora_rank;
    float eps = (float)hp->mla_norm_eps;
    float *q = BUF(B_Q), *ckv = BUF(B_KV);
    void *xb = BUF(B_XB), *qb = BUF(B_QB), *ob = BUF(B_O);
    if (R) {
        float *qa = BUF(B_QA);
        KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, qa, xb, G->q_a, T, R, D, 1, 0, g->s));
        if (G->q_a_bias)
            KR_TRY(kr_cuda_add_rows(KR_CU_F32, qa, G->q_a_bias, T, R, g->s));
        KR_TRY(kr_cuda_rmsnorm_ex(KR_CU_BF16, qb, R, KR_CU_F32, qa, R, G->q_a_norm, T, R, eps, g->s));
        KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, q, qb, G->q_b, T, H * Dq, R, 1, 0, g->s));
    } else {
        KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, q, xb, G->q_proj, T, H * Dq, D, 1, 0, g->s));
    }
    /* cache rows [RMSNorm(c) | RoPE(k_pe)] */
    KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, ckv, xb, G->kv_a, T, W, D, 1, 0, g->s));
    if (G->kv_a_bias)
        KR_TRY(kr_cuda_add_rows(KR_CU_F32, ckv, G->kv_a_bias, T, W, g->s));
    KR_TRY(kr_cuda_rmsnorm_ex(KR_CU_F32, ckv, W, KR_CU_F32, ckv, W, G->kv_a_norm, T, C, eps, g->s));
    KR_TRY(kr_cuda_rope(KR_CU_F32, ckv, T, 1, W, 0, C, &g->rope, pos0, NULL, g->s));
    kr_cuda_view kv_new = view(ckv, KR_CU_F32, W, W);
    int kl = l - g->first; /* the layer in this stage's cache */
    KR_TRY(kr_cuda_kv_write(kv, kl, pos0, T, &kv_new, NULL, g->s));
    KR_TRY(kr_cuda_rope(KR_CU_F32, q, T, H, H * Dq, Dq, Dn, &g->rope, pos0, NULL, g->s));
    KR_TRY(kr_cuda_convert(KR_CU_BF16, qb, KR_CU_F32, q, T * H * Dq, g->s));
    if (mla_expands(kv, T, pos0))
        KR_TRY(mla_expanded(g, hp, G, kv, kl, T, pos0));
    else
        KR_TRY(mla_absorbed(g, hp, G, kv, kl, T, pos0));
    KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, g->x, ob, G->o, T, D, H * Dv, 1, 1, g->s));
    return G->o_bias ? kr_cuda_add_rows(KR_CU_F32, g->x, G->o_bias, T, D, g->s) : KR_OK;
}

/* bias, per-head RMSNorm and RoPE of T rows of `heads` heads (gqa.c's prepare_heads) */
static kr_status prepare_heads(gpu_stage *g, const kr_hparams *hp, float *y, const float *bias, const float *norm,
                               int64_t T, int64_t heads, int64_t pos0) {
    int64_t hd = hp->head_dim;
    if (bias)
        KR_TRY(kr_cuda_add_rows(KR_CU_F32, y, bias, T, heads * hd, g->s));
    if (norm)
        KR_TRY(kr_cuda_rmsnorm(KR_CU_F32, y, y, norm, T * heads, hd, (float)hp->rms_eps, g->s));
    return kr_cuda_rope(KR_CU_F32, y, T, heads, heads * hd, hd, 0, &g->rope, pos0, NULL, g->s);
}

static kr_status gqa_attention(gpu_stage *g, const kr_model *m, int l, kr_cuda_kv *kv, int64_t T, int64_t pos0) {
    const kr_hparams *hp = &m->hp;
    const gpu_layer *G = &g->layers[l];
    int64_t D = hp->hidden, hd = hp->head_dim, Hq = hp->n_heads, Hkv = hp->n_kv_heads;
    float *q = BUF(B_Q), *k = BUF(B_K), *v = BUF(B_V);
    void *xb = BUF(B_XB), *qb = BUF(B_QB), *att = BUF(B_ATT);
    KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, q, xb, G->wq, T, Hq * hd, D, 1, 0, g->s));
    KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, k, xb, G->wk, T, Hkv * hd, D, 1, 0, g->s));
    KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, v, xb, G->wv, T, Hkv * hd, D, 1, 0, g->s));
    KR_TRY(prepare_heads(g, hp, q, G->bq, G->q_norm, T, Hq, pos0));
    KR_TRY(prepare_heads(g, hp, k, G->bk, G->k_norm, T, Hkv, pos0));
    if (G->bv)
        KR_TRY(kr_cuda_add_rows(KR_CU_F32, v, G->bv, T, Hkv * hd, g->s));
    kr_cuda_view kn = view(k, KR_CU_F32, Hkv * hd, hd), vn = view(v, KR_CU_F32, Hkv * hd, hd);
    int kl = l - g->first; /* the layer in this stage's cache */
    KR_TRY(kr_cuda_kv_write(kv, kl, pos0, T, &kn, &vn, g->s));
    KR_TRY(kr_cuda_convert(KR_CU_BF16, qb, KR_CU_F32, q, T * Hq * hd, g->s));
    kr_cuda_attn a = {.T = T, .n_heads = Hq, .n_kv_heads = Hkv, .qk_dim = hd, .v_dim = hd, .pos0 = pos0,
                      .scale = (float)hp->attn_scale, .q = view(qb, KR_CU_BF16, Hq * hd, hd),
                      .k = kr_cuda_kv_k_view(kv, kl), .v = kr_cuda_kv_v_view(kv, kl),
                      .out = view(att, KR_CU_BF16, Hq * hd, hd)};
    KR_TRY(attend(g, &a));
    KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, g->x, att, G->o, T, D, Hq * hd, 1, 1, g->s));
    return G->o_bias ? kr_cuda_add_rows(KR_CU_F32, g->x, G->o_bias, T, D, g->s) : KR_OK;
}

/* x += down(silu(gate xb) * up xb) */
static kr_status mlp(gpu_stage *g, const gpu_mlp *p, int64_t D, int64_t T) {
    int64_t I = p->inter;
    void *gu = BUF(B_GU), *act = BUF(B_ACT);
    KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_BF16, gu, BUF(B_XB), p->gu, T, 2 * I, D, 1, 0, g->s));
    KR_TRY(kr_cuda_silu_mul(KR_CU_BF16, act, I, gu, (uint16_t *)gu + I, 2 * I, T, I, g->s));
    return kr_cuda_gemm_bf16(g->blas, KR_CU_F32, g->x, act, p->down, T, D, I, 1, 1, g->s);
}

static kr_status moe(gpu_stage *g, kr_model *m, int l, int64_t T) {
    const kr_hparams *hp = &m->hp;
    const gpu_layer *G = &g->layers[l];
    int64_t D = hp->hidden;
    int E = hp->router.n_experts, K = hp->router.top_k;
    float *xn = BUF(B_XN), *out = BUF(B_MOE);
    int32_t *idx = BUF(B_IDX);
    float *w = BUF(B_W);
    KR_TRY(kr_cuda_gemm_f32(g->blas, BUF(B_LOGITS), xn, G->router, T, E, D, 0, g->s));
    kr_cuda_router_params rp = kr_cuda_router_params_from(&hp->router);
    KR_TRY(kr_cuda_route(&rp, BUF(B_LOGITS), G->router_bias, idx, w, T, g->s));
    bool on_gpu = g->experts && (g->decode_on_gpu || T >= g->gpu_min_tokens);
    if (!on_gpu) {
        /* hand-off first, so the CPU starts while the GPU runs the shared experts */
        KR_TRY(kr_cuda_to_host(g->h_x, xn, (size_t)(T * D) * sizeof(float), g->s));
        KR_TRY(kr_cuda_to_host(g->h_idx, idx, (size_t)(T * K) * sizeof(int32_t), g->s));
        KR_TRY(kr_cuda_to_host(g->h_w, w, (size_t)(T * K) * sizeof(float), g->s));
        KR_TRY(kr_cuda_event_record(g->copied, g->s));
    }
    if (G->mlp.inter)
        KR_TRY(mlp(g, &G->mlp, D, T));
    if (on_gpu) {
        kr_gpu_moe_layer E_l;
        KR_TRY(kr_gpu_experts_acquire(g->experts, g->moe_index[l] - g->moe0, g->s, &E_l));
        KR_TRY(kr_gpu_moe_forward(&E_l, BUF(B_XB), T, idx, w, K, out, BUF(B_MOE_WS), g->buf[B_MOE_WS].cap, 0,
                                  (struct CUstream_st *)g->s));
        KR_TRY(kr_gpu_experts_release(g->experts, g->moe_index[l] - g->moe0, g->s));
    } else {
        double t0 = g->profile ? now_s() : 0;
        KR_TRY(kr_cuda_event_sync(g->copied)); /* the hand-off, not the shared experts queued after it */
        double t1 = g->profile ? now_s() : 0;
        KR_TRY(kr_model_routed_ffn(m, l, g->h_x, T, g->h_idx, g->h_w, g->h_out));
        if (g->profile && T == 1) {
            g->prof_wait += t1 - t0;
            g->prof_cpu += now_s() - t1;
        }
        KR_TRY(kr_cuda_to_device(out, g->h_out, (size_t)(T * D) * sizeof(float), g->s));
    }
    return kr_cuda_add(KR_CU_F32, g->x, out, T * D, g->s);
}

/* One layer for the T rows at g->x (positions pos0 ..) */
static kr_status layer(gpu_stage *g, kr_model *m, int l, kr_cuda_kv *kv, int64_t T, int64_t pos0) {
    const kr_hparams *hp = &m->hp;
    const gpu_layer *G = &g->layers[l];
    int64_t D = hp->hidden;
    float eps = (float)hp->rms_eps, *xn = BUF(B_XN);
    void *xb = BUF(B_XB);
    KR_TRY(kr_cuda_rmsnorm_ex(KR_CU_BF16, xb, D, KR_CU_F32, g->x, D, G->input_norm, T, D, eps, g->s));
    KR_TRY(hp->family == KR_FAMILY_DEEPSEEK2 ? mla_attention(g, m, l, kv, T, pos0) : gqa_attention(g, m, l, kv, T, pos0));
    KR_TRY(kr_cuda_rmsnorm(KR_CU_F32, xn, g->x, G->post_norm, T, D, eps, g->s));
    KR_TRY(kr_cuda_convert(KR_CU_BF16, xb, KR_CU_F32, xn, T * D, g->s));
    return m->layers[l].moe ? moe(g, m, l, T) : mlp(g, &G->mlp, D, T);
}

/* The layer after the residency group that starts at layer a: the stage's every layer when the experts
 * stay put (on the CPU, or all resident), else up to the group's last MoE layer. */
static int group_end(const gpu_stage *g, const kr_model *m, int a) {
    int L = g->last;
    if (!g->experts || g->decode_on_gpu)
        return L;
    int first = -1, b = a;
    for (; b < L; b++) {
        int mi = g->moe_index[b] - g->moe0;
        if (g->moe_index[b] < 0)
            continue;
        if (first < 0)
            first = mi - mi % g->group_moe_layers; /* the group's first MoE layer */
        if (mi >= first + g->group_moe_layers)
            break;
    }
    return b;
}

/* Runs the prompt through the layers group by group and, inside a group, chunk by chunk: with experts
 * copied in per group, each crosses the bus once per prompt, not once per chunk. A chunk's attention at
 * layer l reads the keys the earlier chunks wrote at l, which they did in this group's pass. */
/* a pinned host buffer of at least n floats (grow-only; nothing may be using it: forwards finish before
 * they return) */
static kr_status host_floats(float **p, int64_t *cap, int64_t n, const char *what) {
    if (n <= *cap)
        return KR_OK;
    kr_cuda_host_free(*p);
    *p = NULL;
    *cap = 0;
    KR_TRY(kr_cuda_host_alloc((void **)p, (size_t)n * sizeof(float), what));
    *cap = n;
    return KR_OK;
}

/* Stage s's residual stream [bytes] from stage s - 1's, on stage s's stream once stage s - 1's layers are
 * done: a device-to-device copy (peer between devices) or a bounce through pinned host memory. */
static kr_status hand_off(kr_gpu_model *gm, int s, size_t bytes) {
    gpu_stage *a = &gm->st[s - 1], *b = &gm->st[s];
    bool bounce = gm->link[s] == LINK_BOUNCE;
    KR_TRY(kr_cuda_set_device(a->device));
    if (bounce)
        KR_TRY(kr_cuda_to_host(gm->h_bounce, a->buf[B_X].p, bytes, a->s));
    KR_TRY(kr_cuda_event_record(a->done, a->s));
    KR_TRY(kr_cuda_set_device(b->device));
    KR_TRY(kr_cuda_stream_wait(b->s, a->done));
    return bounce ? kr_cuda_to_device(b->buf[B_X].p, gm->h_bounce, bytes, b->s)
                  : kr_cuda_copy_peer(b->buf[B_X].p, b->device, a->buf[B_X].p, a->device, bytes, b->s);
}

static kr_status forward(kr_model *m, kr_kv_cache *kv, const int32_t *ids, int64_t n, bool all_positions,
                         float *logits) {
    kr_gpu_model *gm = m->gpu;
    const kr_hparams *hp = &m->hp;
    int64_t D = hp->hidden, pos0 = kv->len, chunk = n < gm->chunk ? n : gm->chunk;
    float eps = (float)hp->rms_eps;
    double t_start = gm->profile ? now_s() : 0;
    KR_TRY(kr_gpu_kv_reserve(kv, pos0 + n));
    KR_TRY(host_floats(&gm->h_emb, &gm->h_emb_cap, n * D, "pinned embedding rows"));
    for (int s = 1; s < gm->n_stages; s++)
        if (gm->link[s] == LINK_BOUNCE)
            KR_TRY(host_floats(&gm->h_bounce, &gm->h_bounce_cap, n * D, "pinned pipeline hand-off"));
    for (int64_t t = 0; t < n; t++)
        kr_matrix_row(&m->embed, ids[t], gm->h_emb + t * D);
    gpu_stage *g = NULL;
    for (int s = 0; s < gm->n_stages; s++) {
        g = &gm->st[s];
        if (gm->n_stages > 1)
            KR_TRY(kr_cuda_set_device(g->device));
        KR_TRY(reserve(g, m, n, chunk, all_positions));
        kr_cuda_kv *ckv = &kv->gpu->kv[s];
        float *x = BUF(B_X);
        if (s == 0)
            KR_TRY(kr_cuda_to_device(x, gm->h_emb, (size_t)(n * D) * sizeof(float), g->s));
        else
            KR_TRY(hand_off(gm, s, (size_t)(n * D) * sizeof(float)));
        for (int a = g->first, b; a < g->last; a = b) {
            b = group_end(g, m, a);
            for (int64_t c0 = 0; c0 < n; c0 += chunk) {
                int64_t T = n - c0 < chunk ? n - c0 : chunk;
                g->x = x + c0 * D;
                for (int l = a; l < b; l++)
                    KR_TRY(layer(g, m, l, ckv, T, pos0 + c0));
            }
        }
    }
    float *x = BUF(B_X); /* the last stage's */
    /* logits of the last position, or of all in chunks of up to 256 rows */
    int64_t first = all_positions ? 0 : n - 1, V = hp->vocab, rows_max = all_positions ? (chunk < 256 ? chunk : 256) : 1;
    void *xb = BUF(B_XB);
    for (int64_t r0 = first; r0 < n; r0 += rows_max) {
        int64_t rows = n - r0 < rows_max ? n - r0 : rows_max;
        KR_TRY(kr_cuda_rmsnorm_ex(KR_CU_BF16, xb, D, KR_CU_F32, x + r0 * D, D, gm->final_norm, rows, D, eps, g->s));
        KR_TRY(kr_cuda_gemm_bf16(g->blas, KR_CU_F32, BUF(B_OUT), xb, gm->lm_head, rows, V, D, 1, 0, g->s));
        KR_TRY(kr_cuda_to_host(logits + (r0 - first) * V, BUF(B_OUT), (size_t)(rows * V) * sizeof(float), g->s));
        KR_TRY(kr_cuda_stream_sync(g->s));
    }
    if (gm->n_stages > 1)
        KR_TRY(kr_cuda_set_device(gm->st[0].device));
    kv->len += n;
    if (gm->profile && n == 1) {
        gm->prof_steps++;
        gm->prof_total += now_s() - t_start;
    }
    return KR_OK;
}

kr_status kr_gpu_forward(kr_model *m, kr_kv_cache *kv, const int32_t *ids, int64_t n, bool all_positions,
                         float *logits) {
    if (!kv->gpu)
        return kr_fail(KR_ERR_ARG, "this KV cache was made before the model moved to the GPU: make it after "
                                   "kr_model_quantize");
    kr_status st = kr_cuda_set_device(m->gpu->st[0].device); /* the calling thread's device may be another */
    if (st == KR_OK)
        st = forward(m, kv, ids, n, all_positions, logits);
    if (st != KR_OK) { /* nothing queued may outlive the call: it reads and writes the pinned buffers */
        kr_gpu_model *gm = m->gpu;
        for (int s = 0; s < gm->n_stages; s++) {
            kr_cuda_set_device(gm->st[s].device);
            kr_cuda_stream_sync(gm->st[s].s);
        }
        kr_cuda_set_device(gm->st[0].device);
    }
    return st;
}
