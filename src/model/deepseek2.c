/* DeepSeek-V2 / V3 / Kimi-K2 (llama.cpp's "deepseek2"): multi-head latent attention (MLA) and the
 * DeepSeek routers. Attention runs in the absorbed form for prefill and decode alike: the cache keeps
 * only the normalized latent c (kv_lora_rank) and the roped k_pe (qk_rope_head_dim) per token, and
 *   q_nope . k_nope[s] = (Wk_b^T q_nope) . c[s],    O = Wv_b . sum_s P[s] c[s]
 * with kv_b_proj = per head [Wk_b (qk_nope rows); Wv_b (v_head rows)], both [*, kv_lora_rank].
 * With attention_bits both products run on the integer kernels (kr_layer.mla_k / mla_v, built by model.c
 * in k_b / v_b's orientation from either layout): q_nope and the attended latent are quantized to INT8
 * once per (token, head) row; without it the weights are read as stored, one float row at a time.
 * Matches transformers' modeling_deepseek_v2 / _v3 (see specs/models.md sections 1-2). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attention.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/quant.h"
#include "backend/cpu/threadpool.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "base/json.h"
#include "model/gguf_model.h"
#include "model/model.h"

static kr_status parse_router(const json_t *cfg, const char *where, bool v3, kr_hparams *hp) {
    kr_router_config *rc = &hp->router;
    const char *method = v3 ? "noaux_tc" : "greedy", *scoring = v3 ? "sigmoid" : "softmax";
    KR_TRY(kr_json_opt_str(cfg, "topk_method", where, &method));
    KR_TRY(kr_json_opt_str(cfg, "scoring_func", where, &scoring));
    int64_t n_group = v3 ? 8 : 1, topk_group = v3 ? 4 : 1;
    KR_TRY(kr_parse_int_field(cfg, "n_group", where, false, 1, &n_group));
    KR_TRY(kr_parse_int_field(cfg, "topk_group", where, false, 1, &topk_group));
    bool norm = v3;
    KR_TRY(kr_json_opt_bool(cfg, "norm_topk_prob", where, &norm));
    double scale = v3 ? 2.5 : 1.0;
    KR_TRY(kr_json_opt_num(cfg, "routed_scaling_factor", where, &scale));

    if (v3) {
        if (strcmp(method, "noaux_tc") != 0)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: topk_method '%s' is not supported for %s (supported: noaux_tc)",
                           where, method, hp->model_type);
        if (strcmp(scoring, "sigmoid") != 0)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: scoring_func '%s' is not supported for %s (supported: sigmoid)",
                           where, scoring, hp->model_type);
        rc->scoring = KR_SCORE_SIGMOID;
        rc->use_bias = true;
        rc->group_rule = KR_GROUP_TOP2_SUM;
        rc->normalize = norm;
        rc->norm_eps = 1e-20f;
    } else {
        /* "gready" is the spelling DeepSeek's own V2 code tests */
        if (strcmp(method, "greedy") == 0 || strcmp(method, "gready") == 0)
            rc->group_rule = KR_GROUP_NONE;
        else if (strcmp(method, "group_limited_greedy") == 0)
            rc->group_rule = KR_GROUP_MAX;
        else
            return kr_fail(KR_ERR_UNSUPPORTED,
                           "%s: topk_method '%s' is not supported for deepseek_v2 (supported: greedy, "
                           "group_limited_greedy)",
                           where, method);
        if (strcmp(scoring, "softmax") != 0)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: scoring_func '%s' is not supported for deepseek_v2 (supported: softmax)",
                           where, scoring);
        /* transformers ignores norm_topk_prob for V2 while DeepSeek's own code normalizes and then skips the
         * scaling; no released V2 sets it, so refuse rather than pick one */
        if (norm)
            return kr_fail(KR_ERR_UNSUPPORTED,
                           "%s: norm_topk_prob true is not supported for deepseek_v2 (the reference implementations "
                           "disagree on it)",
                           where);
        rc->scoring = KR_SCORE_SOFTMAX;
    }
    rc->n_group = (int)n_group;
    rc->topk_group = (int)topk_group;
    rc->scale = (float)scale;
    return KR_OK;
}

kr_status kr_deepseek2_parse_config(const json_t *cfg, const char *where, kr_hparams *hp) {
    bool v3 = strcmp(hp->model_type, "deepseek_v2") != 0; /* deepseek_v3, kimi_k2 */
    /* q_lora_rank: null selects the plain q_proj path (V2-Lite); absent means transformers' default */
    json_t *ql = json_object_get(cfg, "q_lora_rank");
    hp->q_lora_rank = 1536;
    if (ql && json_is_null(ql))
        hp->q_lora_rank = 0;
    else
        KR_TRY(kr_parse_int_field(cfg, "q_lora_rank", where, false, 1, &hp->q_lora_rank));
    hp->kv_lora_rank = 512;
    hp->qk_nope_dim = 128;
    hp->qk_rope_dim = 64;
    hp->v_head_dim = 128;
    KR_TRY(kr_parse_int_field(cfg, "kv_lora_rank", where, false, 1, &hp->kv_lora_rank));
    KR_TRY(kr_parse_int_field(cfg, "qk_nope_head_dim", where, false, 0, &hp->qk_nope_dim));
    KR_TRY(kr_parse_int_field(cfg, "qk_rope_head_dim", where, false, 2, &hp->qk_rope_dim));
    KR_TRY(kr_parse_int_field(cfg, "v_head_dim", where, false, 1, &hp->v_head_dim));
    KR_TRY(kr_parse_int_field(cfg, "intermediate_size", where, true, 1, &hp->intermediate));
    KR_TRY(kr_json_opt_bool(cfg, "attention_bias", where, &hp->attention_bias));
    hp->head_dim = hp->qk_nope_dim + hp->qk_rope_dim;

    int64_t n_experts = 0, first_dense = v3 ? 3 : 0, freq = 1;
    KR_TRY(kr_parse_int_field(cfg, "n_routed_experts", where, false, 0, &n_experts));
    KR_TRY(kr_parse_int_field(cfg, "num_local_experts", where, false, 0, &n_experts)); /* v5 alias */
    KR_TRY(kr_parse_int_field(cfg, "first_k_dense_replace", where, false, 0, &first_dense));
    KR_TRY(kr_parse_int_field(cfg, "moe_layer_freq", where, false, 1, &freq));
    for (int64_t l = 0; l < hp->n_layers; l++)
        hp->layer_is_moe[l] = n_experts > 0 && l >= first_dense && l % freq == 0;
    if (n_experts > 0) {
        int64_t top_k;
        hp->n_shared = v3 ? 1 : 2;
        KR_TRY(kr_parse_int_field(cfg, "moe_intermediate_size", where, true, 1, &hp->moe_intermediate));
        KR_TRY(kr_parse_int_field(cfg, "n_shared_experts", where, false, 0, &hp->n_shared));
        KR_TRY(kr_parse_int_field(cfg, "num_experts_per_tok", where, true, 1, &top_k));
        hp->router.n_experts = (int)n_experts;
        hp->router.top_k = (int)top_k;
        KR_TRY(parse_router(cfg, where, v3, hp));
        const kr_router_config *rc = &hp->router;
        if (n_experts % rc->n_group || rc->topk_group > rc->n_group)
            return kr_fail(KR_ERR_FORMAT, "%s: n_group %d must divide n_routed_experts %lld and be >= topk_group %d",
                           where, rc->n_group, (long long)n_experts, rc->topk_group);
        if (rc->group_rule == KR_GROUP_TOP2_SUM && rc->n_group > 1 && n_experts / rc->n_group < 2)
            return kr_fail(KR_ERR_FORMAT, "%s: n_group %d leaves fewer than 2 experts per group (noaux_tc scores a group "
                           "by its top 2)", where, rc->n_group);
        if (top_k > n_experts / rc->n_group * rc->topk_group)
            return kr_fail(KR_ERR_FORMAT, "%s: num_experts_per_tok %lld exceeds the experts of the topk_group groups",
                           where, (long long)top_k);
    }

    bool interleave = true;
    if (v3)
        KR_TRY(kr_json_opt_bool(cfg, "rope_interleave", where, &interleave));
    KR_TRY(kr_parse_rope(cfg, where, (int)hp->qk_rope_dim, interleave, &hp->rope));
    hp->attn_scale = 1.0 / sqrt((double)hp->head_dim);
    if (hp->rope.yarn && hp->rope.mscale_all_dim != 0) {
        double m = kr_yarn_mscale(hp->rope.factor, hp->rope.mscale_all_dim);
        hp->attn_scale *= m * m;
    }
    return KR_OK;
}

kr_status kr_deepseek2_bind_attention(kr_model *m, int l) {
    const kr_hparams *hp = &m->hp;
    kr_layer *L = &m->layers[l];
    int64_t D = hp->hidden, H = hp->n_heads, Dq = hp->head_dim, C = hp->kv_lora_rank, Dr = hp->qk_rope_dim;
    char n[256];
#define NAME(s) (snprintf(n, sizeof n, "model.layers.%d.self_attn." s, l), n)
    if (hp->q_lora_rank) {
        KR_TRY(kr_bind_matrix(m, NAME("q_a_proj.weight"), hp->q_lora_rank, D, &L->q_a));
        KR_TRY(kr_bind_vector(m, NAME("q_a_layernorm.weight"), hp->q_lora_rank, &L->q_a_norm));
        KR_TRY(kr_bind_matrix(m, NAME("q_b_proj.weight"), H * Dq, hp->q_lora_rank, &L->q_b));
        if (hp->attention_bias)
            KR_TRY(kr_bind_vector(m, NAME("q_a_proj.bias"), hp->q_lora_rank, &L->q_a_bias));
    } else {
        KR_TRY(kr_bind_matrix(m, NAME("q_proj.weight"), H * Dq, D, &L->q_proj));
    }
    KR_TRY(kr_bind_matrix(m, NAME("kv_a_proj_with_mqa.weight"), C + Dr, D, &L->kv_a));
    KR_TRY(kr_bind_vector(m, NAME("kv_a_layernorm.weight"), C, &L->kv_a_norm));
    char kb[64];
    snprintf(kb, sizeof kb, "blk.%d.attn_k_b.weight", l);
    if (m->gguf && kr_gguf_has_tensor(m, kb)) {
        /* current llama.cpp converters: Wk_b transposed per head {Dn, C, H}, Wv_b {C, Dv, H} */
        char vb[64];
        snprintf(vb, sizeof vb, "blk.%d.attn_v_b.weight", l);
        KR_TRY(kr_gguf_bind_tensor(m, kb, 3, (int64_t[]){hp->qk_nope_dim, C, H}, &L->k_b));
        KR_TRY(kr_gguf_bind_tensor(m, vb, 3, (int64_t[]){C, hp->v_head_dim, H}, &L->v_b));
    } else {
        KR_TRY(kr_bind_matrix(m, NAME("kv_b_proj.weight"), H * (hp->qk_nope_dim + hp->v_head_dim), C, &L->kv_b));
    }
    KR_TRY(kr_bind_matrix(m, NAME("o_proj.weight"), D, H * hp->v_head_dim, &L->o_proj));
    if (hp->attention_bias) {
        KR_TRY(kr_bind_vector(m, NAME("kv_a_proj_with_mqa.bias"), C + Dr, &L->kv_a_bias));
        KR_TRY(kr_bind_vector(m, NAME("o_proj.bias"), D, &L->o_bias));
    }
#undef NAME
    return KR_OK;
}

/* Scratch of one attention call (model scratch slots), sized for T new positions; row has one stripe per
 * pool worker. On the quantized path (L->mla_k) aq / as / ac hold the INT8
 * activations of the (t, h) rows, a_pad bytes and a_groups groups each: q_nope for the k product, then
 * (reused) the attended latent for the v product. */
typedef struct {
    float *q, *qa, *ckv, *qabs, *lat, *o, *row;
    int64_t row_stride;
    int8_t *aq;
    float *as, *ac;
    int64_t a_pad, a_groups;
} mla_scratch;

typedef struct {
    const kr_model *m;
    const kr_layer *L;
    const mla_scratch *s;
    int64_t T, pos0;
    const kr_kernels *k;
} mla_job;

/* y[t * ys + i] = <row r0 + i of w, x_t> for i < nr and t < T, x_t = x + t * xs (w->cols values):
 * each x_t quantized to INT8 once (into (t, h) row t * H + h of the activation scratch), then the
 * integer kernels, KR_TILE_TOKENS tokens per pass over the rows (they stay in L1/L2: one head's). */
static void qproduct(const mla_job *j, const kr_qmatrix *w, int64_t r0, int64_t nr, int64_t h, const float *x,
                     int64_t xs, float *y, int64_t ys) {
    const mla_scratch *s = j->s;
    int64_t H = j->m->hp.n_heads;
    for (int64_t t = 0; t < j->T; t++) {
        int64_t a = t * H + h;
        j->k->quantize_act(x + t * xs, w->cols, w->gs, s->aq + a * s->a_pad, s->as + a * s->a_groups,
                           s->ac + a * s->a_groups);
    }
    for (int64_t t = 0; t < j->T; t += KR_TILE_TOKENS) {
        int nt = j->T - t < KR_TILE_TOKENS ? (int)(j->T - t) : KR_TILE_TOKENS;
        kr_qvec a[KR_TILE_TOKENS];
        for (int i = 0; i < nt; i++) {
            int64_t r = (t + i) * H + h;
            a[i] = (kr_qvec){s->aq + r * s->a_pad, s->as + r * s->a_groups, s->ac + r * s->a_groups};
        }
        j->k->tile_dot(w, r0, nr, a, nt, y + t * ys, ys);
    }
}

/* absorbed queries [Wk_b^T q_nope | RoPE(q_pe)] of the worker's heads; kv_b's k rows (or k_b's) are
 * read once for all T */
static void absorb_region(void *ctx, int w, int n) {
    const mla_job *j = ctx;
    const kr_hparams *hp = &j->m->hp;
    const kr_layer *L = j->L;
    const mla_scratch *s = j->s;
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dr = hp->qk_rope_dim, Dq = Dn + Dr, Dv = hp->v_head_dim;
    int64_t C = hp->kv_lora_rank, W = C + Dr, T = j->T;
    float *row = s->row + (size_t)w * (size_t)s->row_stride;
    for (int64_t h = H * w / n; h < H * (w + 1) / n; h++) {
        /* quantized (either layout, model.c puts it in k_b's orientation): integer dots */
        if (L->mla_k)
            qproduct(j, L->mla_k, h * C, C, h, s->q + h * Dq, H * Dq, s->qabs + h * W, H * W);
        /* split k_b: row (h, c) is column c of Wk_b[h], so qabs[c] = k_b row . q_nope */
        for (int64_t c = 0; !L->mla_k && L->k_b.rows && c < C; c++) {
            kr_matrix_row(&L->k_b, h * C + c, row);
            for (int64_t t = 0; t < T; t++)
                s->qabs[(t * H + h) * W + c] = kr_dot(row, s->q + (t * H + h) * Dq, Dn);
        }
        for (int64_t d = 0; !L->mla_k && !L->k_b.rows && d < Dn; d++) {
            kr_matrix_row(&L->kv_b, h * (Dn + Dv) + d, row);
            for (int64_t t = 0; t < T; t++) {
                float qd = s->q[(t * H + h) * Dq + d];
                float *qa = s->qabs + (t * H + h) * W;
                for (int64_t c = 0; c < C; c++)
                    qa[c] += qd * row[c];
            }
        }
        for (int64_t t = 0; t < T; t++) {
            float *qa = s->qabs + (t * H + h) * W + C;
            memcpy(qa, s->q + (t * H + h) * Dq + Dn, (size_t)Dr * sizeof(float));
            kr_rope_apply(&hp->rope, j->m->inv_freq, qa, j->pos0 + t);
        }
    }
}

/* the attended latent of the worker's heads up-projected through Wv_b */
static void value_region(void *ctx, int w, int n) {
    const mla_job *j = ctx;
    const kr_hparams *hp = &j->m->hp;
    const kr_layer *L = j->L;
    const mla_scratch *s = j->s;
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dv = hp->v_head_dim, C = hp->kv_lora_rank, T = j->T;
    float *row = s->row + (size_t)w * (size_t)s->row_stride;
    for (int64_t h = H * w / n; h < H * (w + 1) / n; h++) {
        if (L->mla_v) {
            qproduct(j, L->mla_v, h * Dv, Dv, h, s->lat + h * C, H * C, s->o + h * Dv, H * Dv);
            continue;
        }
        for (int64_t d = 0; d < Dv; d++) {
            if (L->v_b.rows)
                kr_matrix_row(&L->v_b, h * Dv + d, row);
            else
                kr_matrix_row(&L->kv_b, h * (Dn + Dv) + Dn + d, row);
            for (int64_t t = 0; t < T; t++)
                s->o[(t * H + h) * Dv + d] = kr_dot(row, s->lat + (t * H + h) * C, C);
        }
    }
}

kr_status kr_deepseek2_attention(kr_model *m, int l, const float *x, int64_t T, kr_kv_cache *kv, float *out) {
    const kr_hparams *hp = &m->hp;
    const kr_layer *L = &m->layers[l];
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dr = hp->qk_rope_dim, Dq = Dn + Dr, Dv = hp->v_head_dim;
    int64_t C = hp->kv_lora_rank, W = C + Dr, pos0 = kv->len;
    mla_scratch s = {
        .q = kr_model_scratch(m, KR_SLOT_ATTN, T * H * Dq),
        .qa = kr_model_scratch(m, KR_SLOT_ATTN + 1, T * (hp->q_lora_rank ? hp->q_lora_rank : 1)),
        .ckv = kr_model_scratch(m, KR_SLOT_ATTN + 2, T * W),
        .qabs = kr_model_scratch(m, KR_SLOT_ATTN + 3, T * H * W),
        .lat = kr_model_scratch(m, KR_SLOT_ATTN + 4, T * H * C),
        .o = kr_model_scratch(m, KR_SLOT_ATTN + 5, T * H * Dv),
        .row_stride = C > Dn ? C : Dn,
    };
    int workers = kr_pool_threads();
    s.row = kr_model_scratch(m, KR_SLOT_ATTN + 6, workers * s.row_stride);
    if (s.qabs)
        memset(s.qabs, 0, (size_t)(T * H * W) * sizeof(float));
    bool qok = true;
    if (L->mla_k || L->mla_v) { /* one activation buffer, as wide as the wider of q_nope (k) and the latent (v) */
        const kr_qmatrix *K = L->mla_k ? L->mla_k : L->mla_v, *V = L->mla_v ? L->mla_v : L->mla_k;
        s.a_groups = K->groups > V->groups ? K->groups : V->groups;
        s.a_pad = s.a_groups * K->gs;
        s.aq = (int8_t *)kr_model_scratch(m, KR_SLOT_ATTN + 8, (T * H * s.a_pad + 3) / 4);
        s.as = kr_model_scratch(m, KR_SLOT_ATTN + 9, T * H * s.a_groups);
        s.ac = kr_model_scratch(m, KR_SLOT_ATTN + 10, T * H * s.a_groups);
        qok = s.aq && s.as && s.ac;
    }
    kr_status st = KR_OK;
    if (!s.q || !s.qa || !s.ckv || !s.qabs || !s.lat || !s.o || !s.row || !qok) {
        st = kr_fail(KR_ERR_NOMEM, "out of memory in MLA attention");
        goto done;
    }

    /* queries */
    if (hp->q_lora_rank) {
        int64_t R = hp->q_lora_rank;
        if ((st = kr_matmul(&L->q_a, x, T, s.qa)) != KR_OK)
            goto done;
        if (L->q_a_bias)
            kr_add_rows(s.qa, L->q_a_bias, T, R);
        for (int64_t t = 0; t < T; t++)
            kr_rmsnorm(s.qa + t * R, s.qa + t * R, L->q_a_norm, R, (float)hp->mla_norm_eps);
        st = kr_matmul(&L->q_b, s.qa, T, s.q);
    } else {
        st = kr_matmul(&L->q_proj, x, T, s.q);
    }
    if (st != KR_OK)
        goto done;

    /* compressed kv -> cache rows [RMSNorm(c) | RoPE(k_pe)] */
    if ((st = kr_matmul(&L->kv_a, x, T, s.ckv)) != KR_OK)
        goto done;
    if (L->kv_a_bias)
        kr_add_rows(s.ckv, L->kv_a_bias, T, W);
    for (int64_t t = 0; t < T; t++) {
        float *row = kv->k[l] + (pos0 + t) * W;
        kr_rmsnorm(row, s.ckv + t * W, L->kv_a_norm, C, (float)hp->mla_norm_eps);
        memcpy(row + C, s.ckv + t * W + C, (size_t)Dr * sizeof(float));
        kr_rope_apply(&hp->rope, m->inv_freq, row + C, pos0 + t);
    }

    /* absorbed queries, attention over the latent cache (values are the latent part of the same rows),
     * and the up-projection of the attended latent: each split over the heads */
    mla_job job = {m, L, &s, T, pos0, kr_kernels_get()};
    double head_work = (double)(T * H) * (double)C * (double)(Dn > Dv ? Dn : Dv); /* each of the two */
    kr_pool_run_work(absorb_region, &job, head_work);
    kr_attention_batch b = {.q = s.qabs, .q_t = H * W, .q_h = W, .qk_dim = W, .k = kv->k[l], .v = kv->k[l],
                            .k_stride = W, .v_stride = W, .v_dim = C, .T = T, .H = H, .group = 1, .pos0 = pos0,
                            .scale = (float)hp->attn_scale, .out = s.lat, .o_t = H * C, .o_h = C};
    float *scratch = kr_model_scratch(m, KR_SLOT_ATTN + 7, kr_attention_scratch(&b));
    if (!scratch) {
        st = kr_fail(KR_ERR_NOMEM, "out of memory in MLA attention");
        goto done;
    }
    kr_attend_batch(&b, scratch);
    kr_pool_run_work(value_region, &job, head_work);
    if ((st = kr_matmul(&L->o_proj, s.o, T, out)) != KR_OK)
        goto done;
    if (L->o_bias)
        kr_add_rows(out, L->o_bias, T, hp->hidden);
done:
    return st;
}
