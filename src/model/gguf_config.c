/* GGUF metadata -> kr_hparams for the architectures deepseek2, qwen3moe and glm4moe, the keys that
 * llama.cpp's convert_hf_to_gguf.py writes (specs/models.md section 8). The result is the same struct
 * config.json fills, with the same meaning: where llama.cpp's reading of a key departs from
 * transformers, this follows transformers:
 *   - deepseek2 `rope.scaling.yarn_log_multiplier` holds 0.1 * mscale_all_dim (the converter's
 *     TAG_DEEPSEEK2_YARN_LOG_MUL_FIX); the softmax scale gets m(factor, mscale_all_dim)^2 as in HF;
 *   - the YaRN beta keys are read (llama.cpp's deepseek2 loader ignores them: Kimi-K2 differs);
 *   - the group rule comes from the family (softmax = DeepSeek-V2: a group scores its best expert;
 *     sigmoid = V3: the sum of its top 2), not llama.cpp's always-top-2;
 *   - q_a / kv_a norms use transformers' class default eps 1e-6, not the file's rms eps.
 * Facts the metadata does not carry are read from the tensors: tied embeddings (no output.weight),
 * attention biases, q/k norms, which layers are MoE (blk.N.ffn_gate_inp). */
#include "model/gguf_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const kr_gguf_set *set;
    const kr_gguf *g;
    const char *arch;
    char key[256];
} meta;

static const char *K(meta *c, const char *suffix) {
    snprintf(c->key, sizeof c->key, "%s.%s", c->arch, suffix);
    return c->key;
}

/* An integer key in [min, KR_MAX_CONFIG_INT]; required ones fail naming file and key when absent. */
static kr_status get_int(meta *c, const char *suffix, bool required, int64_t min, int64_t *out) {
    const char *key = K(c, suffix);
    if (!required && !kr_gguf_find(c->g, key))
        return KR_OK; /* *out keeps its default */
    KR_TRY(kr_gguf_req_int(c->g, key, out));
    if (*out < min || *out > KR_MAX_CONFIG_INT)
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' is %lld, must be in [%lld, %d]", kr_gguf_path(c->g), key,
                       (long long)*out, (long long)min, KR_MAX_CONFIG_INT);
    return KR_OK;
}

static kr_status get_num(meta *c, const char *suffix, bool required, double *out) {
    const char *key = K(c, suffix);
    if (required && !kr_gguf_find(c->g, key))
        return kr_fail(KR_ERR_FORMAT, "%s: required key '%s' is missing", kr_gguf_path(c->g), key);
    return kr_gguf_opt_num(c->g, key, out);
}

static bool has_tensor(const meta *c, const char *fmt, int l) {
    char n[256];
    snprintf(n, sizeof n, fmt, l);
    return kr_gguf_set_find(c->set, n, NULL) != NULL;
}

static kr_status parse_rope(meta *c, kr_hparams *hp, int dim, bool interleaved) {
    kr_rope_config *r = &hp->rope;
    memset(r, 0, sizeof *r);
    r->dim = dim;
    r->interleaved = interleaved;
    r->theta = 10000.0;
    r->attention_factor = 1.0;
    if (dim <= 0 || dim % 2)
        return kr_fail(KR_ERR_FORMAT, "%s: rotary dimension %d must be positive and even", kr_gguf_path(c->g), dim);
    KR_TRY(get_num(c, "rope.freq_base", false, &r->theta));
    if (!(r->theta > 1.0))
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' must be > 1, got %g", kr_gguf_path(c->g), K(c, "rope.freq_base"),
                       r->theta);
    kr_gguf_str type = {"none", 4};
    KR_TRY(kr_gguf_opt_str(c->g, K(c, "rope.scaling.type"), &type));
    if (type.len == 4 && !memcmp(type.ptr, "none", 4))
        return KR_OK;
    if (!(type.len == 4 && !memcmp(type.ptr, "yarn", 4)))
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: key '%s' is '%.*s' (supported: none, yarn)", kr_gguf_path(c->g),
                       K(c, "rope.scaling.type"), (int)type.len, type.ptr);
    r->yarn = true;
    r->truncate = true;
    KR_TRY(get_num(c, "rope.scaling.factor", true, &r->factor));
    if (!(r->factor > 0))
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' must be > 0", kr_gguf_path(c->g), K(c, "rope.scaling.factor"));
    KR_TRY(get_int(c, "rope.scaling.original_context_length", true, 1, &r->original_max_pos));
    r->beta_fast = 32;
    r->beta_slow = 1;
    KR_TRY(get_num(c, "rope.scaling.yarn_beta_fast", false, &r->beta_fast));
    KR_TRY(get_num(c, "rope.scaling.yarn_beta_slow", false, &r->beta_slow));
    double log_mul = 0, attn_factor = -1;
    KR_TRY(get_num(c, "rope.scaling.yarn_log_multiplier", false, &log_mul));
    KR_TRY(get_num(c, "rope.scaling.yarn_attn_factor", false, &attn_factor));
    if (hp->family == KR_FAMILY_DEEPSEEK2 && log_mul != 0) {
        /* stored as 0.1 * mscale_all_dim; the GGUF has no mscale, and every DeepSeek config sets
         * mscale == mscale_all_dim, for which transformers' attention factor is exactly 1 */
        r->mscale_all_dim = log_mul / 0.1;
        r->mscale = r->mscale_all_dim;
    }
    if (attn_factor >= 0)
        r->attention_factor = attn_factor;
    else if (r->mscale != 0 && r->mscale_all_dim != 0)
        r->attention_factor = kr_yarn_mscale(r->factor, r->mscale) / kr_yarn_mscale(r->factor, r->mscale_all_dim);
    else
        r->attention_factor = kr_yarn_mscale(r->factor, 1.0);
    return KR_OK;
}

/* Layers with a router are MoE; the leading-dense count (when the file has one) must agree. */
static kr_status moe_layers(meta *c, kr_hparams *hp, int64_t leading_dense) {
    for (int64_t l = 0; l < hp->n_layers; l++) {
        hp->layer_is_moe[l] = has_tensor(c, "blk.%d.ffn_gate_inp.weight", (int)l);
        if (leading_dense >= 0 && hp->layer_is_moe[l] != (l >= leading_dense))
            return kr_fail(KR_ERR_FORMAT, "%s: block %lld %s a router (blk.%lld.ffn_gate_inp.weight) but key '%s' is %lld",
                           kr_gguf_path(c->g), (long long)l, hp->layer_is_moe[l] ? "has" : "lacks", (long long)l,
                           K(c, "leading_dense_block_count"), (long long)leading_dense);
    }
    return KR_OK;
}

static kr_status parse_moe(meta *c, kr_hparams *hp) {
    int64_t E = 0, K_ = 0;
    KR_TRY(get_int(c, "expert_count", true, 1, &E));
    KR_TRY(get_int(c, "expert_used_count", true, 1, &K_));
    KR_TRY(get_int(c, "expert_feed_forward_length", true, 1, &hp->moe_intermediate));
    if (K_ > E)
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' %lld exceeds '%s' %lld", kr_gguf_path(c->g),
                       K(c, "expert_used_count"), (long long)K_, "expert_count", (long long)E);
    hp->router.n_experts = (int)E;
    hp->router.top_k = (int)K_;
    return KR_OK;
}

static kr_status parse_deepseek2(meta *c, kr_hparams *hp) {
    const char *path = kr_gguf_path(c->g);
    KR_TRY(get_int(c, "attention.kv_lora_rank", true, 1, &hp->kv_lora_rank));
    KR_TRY(get_int(c, "attention.q_lora_rank", false, 0, &hp->q_lora_rank)); /* 0: no q_lora (V2-Lite) */
    int64_t Dr = 0, kl = 0, vl = 0, kl_mla = 0, vl_mla = 0;
    KR_TRY(get_int(c, "rope.dimension_count", true, 2, &Dr));
    KR_TRY(get_int(c, "attention.key_length", true, 1, &kl));
    KR_TRY(get_int(c, "attention.value_length", true, 1, &vl));
    KR_TRY(get_int(c, "attention.key_length_mla", false, 1, &kl_mla));
    KR_TRY(get_int(c, "attention.value_length_mla", false, 1, &vl_mla));
    if (kl_mla || vl_mla) {
        /* current converters: key/value_length describe the MQA view (C + Dr, C); *_mla the heads */
        if (!kl_mla || !vl_mla)
            return kr_fail(KR_ERR_FORMAT, "%s: required key '%s' is missing", path,
                           K(c, kl_mla ? "attention.value_length_mla" : "attention.key_length_mla"));
        if (kl != hp->kv_lora_rank + Dr || vl != hp->kv_lora_rank)
            return kr_fail(KR_ERR_FORMAT, "%s: key_length %lld / value_length %lld, expected kv_lora_rank + rope dims %lld / kv_lora_rank %lld",
                           path, (long long)kl, (long long)vl, (long long)(hp->kv_lora_rank + Dr), (long long)hp->kv_lora_rank);
        kl = kl_mla;
        vl = vl_mla;
    }
    if (kl <= Dr)
        return kr_fail(KR_ERR_FORMAT, "%s: key length %lld must exceed the rope dimensions %lld", path, (long long)kl, (long long)Dr);
    hp->qk_rope_dim = Dr;
    hp->qk_nope_dim = kl - Dr;
    hp->v_head_dim = vl;
    hp->head_dim = kl;
    hp->n_kv_heads = hp->n_heads; /* MLA: head_count_kv is 1 in the MQA view; the math uses n_heads */
    hp->attention_bias = has_tensor(c, "blk.%d.attn_kv_a_mqa.bias", 0);

    int64_t leading = 0;
    KR_TRY(get_int(c, "leading_dense_block_count", false, 0, &leading));
    KR_TRY(get_int(c, "expert_shared_count", false, 0, &hp->n_shared));
    KR_TRY(parse_moe(c, hp));
    KR_TRY(moe_layers(c, hp, leading));
    int64_t gating = 1, n_group = 1, topk_group = 1;
    KR_TRY(get_int(c, "expert_gating_func", false, 1, &gating));
    KR_TRY(get_int(c, "expert_group_count", false, 1, &n_group));
    KR_TRY(get_int(c, "expert_group_used_count", false, 1, &topk_group));
    double scale = 1.0;
    bool norm = false;
    KR_TRY(get_num(c, "expert_weights_scale", false, &scale));
    KR_TRY(kr_gguf_opt_bool(c->g, K(c, "expert_weights_norm"), &norm));
    kr_router_config *rc = &hp->router;
    if (gating == 2) { /* sigmoid: DeepSeek-V3 / Kimi-K2 noaux_tc */
        snprintf(hp->model_type, sizeof hp->model_type, "deepseek_v3");
        rc->scoring = KR_SCORE_SIGMOID;
        rc->use_bias = true;
        rc->group_rule = KR_GROUP_TOP2_SUM;
        rc->normalize = norm;
        rc->norm_eps = 1e-20f;
    } else if (gating == 1) { /* softmax: DeepSeek-V2 */
        snprintf(hp->model_type, sizeof hp->model_type, "deepseek_v2");
        rc->scoring = KR_SCORE_SOFTMAX;
        rc->group_rule = n_group > 1 ? KR_GROUP_MAX : KR_GROUP_NONE;
        if (norm)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: key '%s' true with softmax gating is not supported (the reference implementations disagree on DeepSeek-V2 normalization)",
                           path, K(c, "expert_weights_norm"));
    } else {
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: key '%s' is %lld (supported: 1 softmax, 2 sigmoid)", path,
                       K(c, "expert_gating_func"), (long long)gating);
    }
    rc->n_group = (int)n_group;
    rc->topk_group = (int)topk_group;
    rc->scale = (float)scale;
    if (rc->n_experts % rc->n_group || rc->topk_group > rc->n_group ||
        rc->top_k > rc->n_experts / rc->n_group * rc->topk_group ||
        (rc->group_rule == KR_GROUP_TOP2_SUM && rc->n_group > 1 && rc->n_experts / rc->n_group < 2))
        return kr_fail(KR_ERR_FORMAT, "%s: expert_group_count %d / expert_group_used_count %d / expert_used_count %d do not fit %d experts",
                       path, rc->n_group, rc->topk_group, rc->top_k, rc->n_experts);
    KR_TRY(parse_rope(c, hp, (int)Dr, true));
    hp->attn_scale = 1.0 / sqrt((double)hp->head_dim);
    if (hp->rope.yarn && hp->rope.mscale_all_dim != 0) {
        double m = kr_yarn_mscale(hp->rope.factor, hp->rope.mscale_all_dim);
        hp->attn_scale *= m * m;
    }
    return KR_OK;
}

static kr_status parse_gqa(meta *c, kr_hparams *hp, bool glm) {
    const char *path = kr_gguf_path(c->g);
    hp->head_dim = hp->hidden / hp->n_heads;
    KR_TRY(get_int(c, "attention.key_length", false, 2, &hp->head_dim));
    int64_t vl = hp->head_dim;
    KR_TRY(get_int(c, "attention.value_length", false, 2, &vl));
    if (vl != hp->head_dim)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: value_length %lld differs from key_length %lld", path, (long long)vl,
                       (long long)hp->head_dim);
    if (hp->n_heads % hp->n_kv_heads)
        return kr_fail(KR_ERR_FORMAT, "%s: head_count %lld is not a multiple of head_count_kv %lld", path,
                       (long long)hp->n_heads, (long long)hp->n_kv_heads);
    hp->attention_bias = has_tensor(c, "blk.%d.attn_q.bias", 0) || has_tensor(c, "blk.%d.attn_qkv.bias", 0);
    hp->o_bias = has_tensor(c, "blk.%d.attn_output.bias", 0);
    hp->qk_norm = has_tensor(c, "blk.%d.attn_q_norm.weight", 0);
    KR_TRY(parse_moe(c, hp));
    kr_router_config *rc = &hp->router;
    int64_t rot = hp->head_dim;
    if (glm) {
        int64_t leading = 0, n_group = 1, topk_group = 1, gating = 2;
        KR_TRY(get_int(c, "leading_dense_block_count", false, 0, &leading));
        hp->n_shared = 1;
        KR_TRY(get_int(c, "expert_shared_count", false, 0, &hp->n_shared));
        KR_TRY(moe_layers(c, hp, leading));
        KR_TRY(get_int(c, "expert_gating_func", false, 1, &gating));
        if (gating != 2)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: key '%s' is %lld (glm4moe routes with sigmoid, 2)", path,
                           K(c, "expert_gating_func"), (long long)gating);
        KR_TRY(get_int(c, "expert_group_count", false, 1, &n_group));
        KR_TRY(get_int(c, "expert_group_used_count", false, 1, &topk_group));
        double scale = 1.0;
        bool norm = true;
        KR_TRY(get_num(c, "expert_weights_scale", false, &scale));
        KR_TRY(kr_gguf_opt_bool(c->g, K(c, "expert_weights_norm"), &norm));
        *rc = (kr_router_config){.n_experts = rc->n_experts, .top_k = rc->top_k, .scoring = KR_SCORE_SIGMOID,
                                 .use_bias = true, .group_rule = KR_GROUP_TOP2_SUM, .n_group = (int)n_group,
                                 .topk_group = (int)topk_group, .normalize = norm, .norm_eps = 1e-20f,
                                 .scale = (float)scale};
        if (rc->n_experts % rc->n_group || rc->topk_group > rc->n_group ||
            rc->top_k > rc->n_experts / rc->n_group * rc->topk_group || (rc->n_group > 1 && rc->n_experts / rc->n_group < 2))
            return kr_fail(KR_ERR_FORMAT, "%s: expert groups %d / %d do not fit %d experts", path, rc->n_group,
                           rc->topk_group, rc->n_experts);
        KR_TRY(get_int(c, "rope.dimension_count", true, 2, &rot));
        snprintf(hp->model_type, sizeof hp->model_type, "glm4_moe");
    } else {
        /* llama.cpp's qwen3moe always renormalizes (transformers: norm_topk_prob, true in every release) */
        bool norm = true;
        KR_TRY(kr_gguf_opt_bool(c->g, K(c, "expert_weights_norm"), &norm));
        *rc = (kr_router_config){.n_experts = rc->n_experts, .top_k = rc->top_k, .scoring = KR_SCORE_SOFTMAX,
                                 .group_rule = KR_GROUP_NONE, .n_group = 1, .topk_group = 1, .normalize = norm,
                                 .norm_eps = 0, .scale = 1};
        KR_TRY(moe_layers(c, hp, -1));
        KR_TRY(get_int(c, "rope.dimension_count", false, 2, &rot));
        snprintf(hp->model_type, sizeof hp->model_type, "qwen3_moe");
    }
    if (rot > hp->head_dim)
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' %lld exceeds the head dimension %lld", path,
                       K(c, "rope.dimension_count"), (long long)rot, (long long)hp->head_dim);
    KR_TRY(parse_rope(c, hp, (int)rot, false));
    hp->attn_scale = 1.0 / sqrt((double)hp->head_dim);
    return KR_OK;
}

static kr_status token_ids(meta *c, kr_hparams *hp) {
    hp->bos_id = -1;
    KR_TRY(kr_gguf_opt_int(c->g, "tokenizer.ggml.bos_token_id", &hp->bos_id));
    int64_t eos = -1, eot = -1;
    KR_TRY(kr_gguf_opt_int(c->g, "tokenizer.ggml.eos_token_id", &eos));
    KR_TRY(kr_gguf_opt_int(c->g, "tokenizer.ggml.eot_token_id", &eot));
    if (eos >= 0)
        hp->eos_ids[hp->n_eos++] = eos;
    if (eot >= 0 && eot != eos)
        hp->eos_ids[hp->n_eos++] = eot;
    return KR_OK;
}

static kr_status parse(const kr_gguf_set *set, kr_hparams *hp) {
    meta c = {.set = set, .g = kr_gguf_set_meta(set)};
    const char *path = kr_gguf_path(c.g);
    kr_gguf_str a;
    KR_TRY(kr_gguf_req_str(c.g, "general.architecture", &a));
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(a.len < 31 ? a.len : 31), a.ptr);
    c.arch = arch;
    if (!strcmp(arch, "deepseek2"))
        hp->family = KR_FAMILY_DEEPSEEK2;
    else if (!strcmp(arch, "qwen3moe"))
        hp->family = KR_FAMILY_QWEN3MOE;
    else if (!strcmp(arch, "glm4moe"))
        hp->family = KR_FAMILY_GLM4MOE;
    else
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: general.architecture '%.*s' is not supported (supported: deepseek2, qwen3moe, glm4moe)",
                       path, (int)a.len, a.ptr);
    snprintf(hp->outer_model_type, sizeof hp->outer_model_type, "gguf:%s", arch);

    int64_t blocks = 0;
    KR_TRY(get_int(&c, "embedding_length", true, 1, &hp->hidden));
    KR_TRY(get_int(&c, "block_count", true, 1, &blocks));
    KR_TRY(get_int(&c, "attention.head_count", true, 1, &hp->n_heads));
    hp->n_kv_heads = hp->n_heads;
    KR_TRY(get_int(&c, "attention.head_count_kv", false, 1, &hp->n_kv_heads));
    KR_TRY(get_num(&c, "attention.layer_norm_rms_epsilon", true, &hp->rms_eps));
    if (!(hp->rms_eps > 0))
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' must be > 0", path, K(&c, "attention.layer_norm_rms_epsilon"));
    hp->mla_norm_eps = 1e-6;
    KR_TRY(get_int(&c, "context_length", false, 1, &hp->max_pos));
    KR_TRY(get_int(&c, "feed_forward_length", true, 1, &hp->intermediate));
    KR_TRY(get_int(&c, "nextn_predict_layers", false, 0, &hp->nextn_layers));
    if (hp->nextn_layers >= blocks)
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' %lld leaves no layers of the %lld blocks", path,
                       K(&c, "nextn_predict_layers"), (long long)hp->nextn_layers, (long long)blocks);
    /* GLM keeps its MTP blocks at the end (blk.N, N >= block_count - nextn); they are never run */
    hp->n_layers = blocks - hp->nextn_layers;

    const kr_gguf_tensor *emb = kr_gguf_set_find(set, "token_embd.weight", NULL);
    if (!emb)
        return kr_fail(KR_ERR_FORMAT, "%s: tensor 'token_embd.weight' not found", path);
    hp->vocab = emb->ne[1];
    int64_t vocab = hp->vocab;
    KR_TRY(get_int(&c, "vocab_size", false, 1, &vocab));
    if (vocab != hp->vocab)
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' is %lld but token_embd.weight has %lld rows", path,
                       K(&c, "vocab_size"), (long long)vocab, (long long)hp->vocab);
    hp->tie_embeddings = kr_gguf_set_find(set, "output.weight", NULL) == NULL;
    hp->layer_is_moe = calloc((size_t)hp->n_layers, 1);
    if (!hp->layer_is_moe)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    KR_TRY(token_ids(&c, hp));
    switch (hp->family) {
    case KR_FAMILY_DEEPSEEK2: return parse_deepseek2(&c, hp);
    case KR_FAMILY_QWEN3MOE: return parse_gqa(&c, hp, false);
    case KR_FAMILY_GLM4MOE: return parse_gqa(&c, hp, true);
    }
    return KR_OK;
}

kr_status kr_hparams_from_gguf(const kr_gguf_set *set, kr_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    kr_status s = parse(set, hp);
    if (s != KR_OK)
        kr_hparams_free(hp);
    return s;
}
