/* Qwen3-MoE (Qwen3-30B-A3B, 235B-A22B, Coder): config fields. Attention is gqa.c with q/k norm always on;
 * the router is softmax top-k, optionally renormalized (no epsilon, no scaling). */
#include <math.h>
#include <stdlib.h>

#include "base/json.h"
#include "model/config.h"

kr_status kr_qwen3moe_parse_config(const json_t *cfg, const char *where, kr_hparams *hp) {
    KR_TRY(kr_gqa_parse_config(cfg, where, hp));
    hp->o_bias = hp->attention_bias;
    hp->qk_norm = true;

    int64_t n_experts = 128, top_k = 8, step = 1;
    hp->moe_intermediate = 768;
    /* released checkpoints say num_experts; transformers v5 writes num_local_experts */
    KR_TRY(kr_parse_int_field(cfg, "num_experts", where, false, 0, &n_experts));
    KR_TRY(kr_parse_int_field(cfg, "num_local_experts", where, false, 0, &n_experts));
    KR_TRY(kr_parse_int_field(cfg, "num_experts_per_tok", where, false, 1, &top_k));
    KR_TRY(kr_parse_int_field(cfg, "moe_intermediate_size", where, false, 1, &hp->moe_intermediate));
    KR_TRY(kr_parse_int_field(cfg, "decoder_sparse_step", where, false, 1, &step));
    if (n_experts > 0 && top_k > n_experts)
        return kr_fail(KR_ERR_FORMAT, "%s: num_experts_per_tok %lld exceeds num_experts %lld", where,
                       (long long)top_k, (long long)n_experts);
    bool norm = false;
    KR_TRY(kr_json_opt_bool(cfg, "norm_topk_prob", where, &norm));
    hp->router = (kr_router_config){.n_experts = (int)n_experts, .top_k = (int)top_k, .scoring = KR_SCORE_SOFTMAX,
                                    .group_rule = KR_GROUP_NONE, .n_group = 1, .topk_group = 1,
                                    .normalize = norm, .norm_eps = 0, .scale = 1};

    for (int64_t l = 0; l < hp->n_layers; l++)
        hp->layer_is_moe[l] = n_experts > 0 && (l + 1) % step == 0;
    json_t *mlp_only = json_object_get(cfg, "mlp_only_layers");
    if (mlp_only && !json_is_null(mlp_only)) {
        if (!json_is_array(mlp_only))
            return kr_fail(KR_ERR_FORMAT, "%s: field 'mlp_only_layers' must be a list of layer indices", where);
        for (size_t i = 0; i < json_array_size(mlp_only); i++) {
            json_t *v = json_array_get(mlp_only, i);
            if (!json_is_integer(v))
                return kr_fail(KR_ERR_FORMAT, "%s: field 'mlp_only_layers' must be a list of layer indices", where);
            int64_t l = json_integer_value(v);
            if (l >= 0 && l < hp->n_layers)
                hp->layer_is_moe[l] = 0;
        }
    }

    KR_TRY(kr_parse_rope(cfg, where, (int)hp->head_dim, false, &hp->rope));
    hp->attn_scale = 1.0 / sqrt((double)hp->head_dim);
    return KR_OK;
}
