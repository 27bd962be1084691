/* Grouped-query attention as Qwen3-MoE and GLM-4.5 use it: optional q/k/v biases, optional per-head
 * q/k RMSNorm before RoPE, NeoX RoPE on the first rope.dim dimensions of each head (partial rotary),
 * query head h reading kv head h / (n_heads / n_kv_heads). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attention.h"
#include "backend/cpu/threadpool.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "model/model.h"

kr_status kr_gqa_bind_attention(kr_model *m, int l) {
    const kr_hparams *hp = &m->hp;
    kr_layer *L = &m->layers[l];
    int64_t D = hp->hidden, hd = hp->head_dim, Hq = hp->n_heads * hd, Hkv = hp->n_kv_heads * hd;
    char n[256];
#define NAME(s) (snprintf(n, sizeof n, "model.layers.%d.self_attn." s, l), n)
    KR_TRY(kr_bind_matrix(m, NAME("q_proj.weight"), Hq, D, &L->wq));
    KR_TRY(kr_bind_matrix(m, NAME("k_proj.weight"), Hkv, D, &L->wk));
    KR_TRY(kr_bind_matrix(m, NAME("v_proj.weight"), Hkv, D, &L->wv));
    KR_TRY(kr_bind_matrix(m, NAME("o_proj.weight"), D, Hq, &L->wo));
    if (hp->attention_bias) {
        KR_TRY(kr_bind_vector(m, NAME("q_proj.bias"), Hq, &L->bq));
        KR_TRY(kr_bind_vector(m, NAME("k_proj.bias"), Hkv, &L->bk));
        KR_TRY(kr_bind_vector(m, NAME("v_proj.bias"), Hkv, &L->bv));
    }
    if (hp->o_bias)
        KR_TRY(kr_bind_vector(m, NAME("o_proj.bias"), D, &L->o_bias));
    if (hp->qk_norm) {
        KR_TRY(kr_bind_vector(m, NAME("q_norm.weight"), hd, &L->q_norm));
        KR_TRY(kr_bind_vector(m, NAME("k_norm.weight"), hd, &L->k_norm));
    }
#undef NAME
    return KR_OK;
}

/* bias, per-head norm and RoPE for T rows of `heads` heads */
static void prepare_heads(const kr_model *m, float *y, const float *bias, const float *norm, int64_t T, int64_t heads,
                          int64_t pos0) {
    const kr_hparams *hp = &m->hp;
    int64_t hd = hp->head_dim;
    if (bias)
        kr_add_rows(y, bias, T, heads * hd);
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < heads; h++) {
            float *v = y + (t * heads + h) * hd;
            if (norm)
                kr_rmsnorm(v, v, norm, hd, (float)hp->rms_eps);
            kr_rope_apply(&hp->rope, m->inv_freq, v, pos0 + t);
        }
}

kr_status kr_gqa_attention(kr_model *m, int l, const float *x, int64_t T, kr_kv_cache *kv, float *out) {
    const kr_hparams *hp = &m->hp;
    const kr_layer *L = &m->layers[l];
    int64_t hd = hp->head_dim, Hq = hp->n_heads, Hkv = hp->n_kv_heads, group = Hq / Hkv, W = Hkv * hd;
    int64_t pos0 = kv->len, cap = kv->layer_cap[l];
    float *q = kr_model_scratch(m, KR_SLOT_ATTN, T * Hq * hd);
    float *o = kr_model_scratch(m, KR_SLOT_ATTN + 1, T * Hq * hd);
    float *kn = kr_model_scratch(m, KR_SLOT_ATTN + 3, T * W), *vn = kr_model_scratch(m, KR_SLOT_ATTN + 4, T * W);
    /* the cache is head-major: kv head g's rows start at g * cap * hd */
    kr_attention_batch b = {.q = q, .q_t = Hq * hd, .q_h = hd, .qk_dim = hd, .k = kv->k[l], .v = kv->v[l],
                            .k_stride = hd, .v_stride = hd, .k_head = cap * hd, .v_head = cap * hd, .v_dim = hd,
                            .T = T, .H = Hq, .group = group, .pos0 = pos0, .scale = (float)hp->attn_scale, .out = o,
                            .o_t = Hq * hd, .o_h = hd};
    float *scores = kr_model_scratch(m, KR_SLOT_ATTN + 2, kr_attention_scratch(&b));
    kr_status s = KR_OK;
    if (!q || !o || !kn || !vn || !scores) {
        s = kr_fail(KR_ERR_NOMEM, "out of memory in attention");
        goto done;
    }
    /* new keys and values [T, Hkv, hd], then each head's rows into its part of the cache at pos0 .. */
    if ((s = kr_matmul(&L->wq, x, T, q)) != KR_OK || (s = kr_matmul(&L->wk, x, T, kn)) != KR_OK ||
        (s = kr_matmul(&L->wv, x, T, vn)) != KR_OK)
        goto done;
    prepare_heads(m, q, L->bq, L->q_norm, T, Hq, pos0);
    prepare_heads(m, kn, L->bk, L->k_norm, T, Hkv, pos0);
    if (L->bv)
        kr_add_rows(vn, L->bv, T, W);
    for (int64_t g = 0; g < Hkv; g++)
        for (int64_t t = 0; t < T; t++) {
            memcpy(kv->k[l] + (g * cap + pos0 + t) * hd, kn + t * W + g * hd, (size_t)hd * sizeof(float));
            memcpy(kv->v[l] + (g * cap + pos0 + t) * hd, vn + t * W + g * hd, (size_t)hd * sizeof(float));
        }
    kr_attend_batch(&b, scores);
    if ((s = kr_matmul(&L->wo, o, T, out)) != KR_OK)
        goto done;
    if (L->o_bias)
        kr_add_rows(out, L->o_bias, T, hp->hidden);
done:
    return s;
}
