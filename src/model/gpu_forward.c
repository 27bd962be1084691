/* The GPU forward pass itself: the working buffers, attention (MLA absorbed or expanded, GQA), the MLP
 * and MoE layers (routed experts on the GPU or handed to the CPU), the prompt in chunks group by group
 * and the hand-off between pipeline stages. */
#include "model/gpu_model_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

#define BUF(i) (g->buf[i].p)

/* Sizes the stage's working buffers for a prompt of n tokens in chunks of T (grow-only: a decode step after
 * the first allocates nothing) and its pinned hand-off buffers for a chunk. */
static kr_status reserve(gpu_stage *g, const kr_model *m, int64_t n, int64_t T, bool all_positions) {
    size_t sz[B_COUNT];
    kr_gpu_buffer_bytes(m, g->experts != NULL, g->last == m->hp.n_layers, n, T, 0, all_positions, sz);
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
