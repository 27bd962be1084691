/* GLM-4.5 / 4.6 / 4.7 (glm4_moe): config fields. Attention is gqa.c with q/k/v biases, partial rotary
 * and optional q/k norm; the router is DeepSeek-V3's (sigmoid, selection bias, top-2-sum groups). */
#include <math.h>
#include <stdlib.h>

#include "base/json.h"
#include "model/config.h"

kr_status kr_glm4moe_parse_config(const json_t *cfg, const char *where, kr_hparams *hp) {
    KR_TRY(kr_gqa_parse_config(cfg, where, hp));
    KR_TRY(kr_json_opt_bool(cfg, "use_qk_norm", where, &hp->qk_norm));

    int64_t n_experts = 128, top_k = 8, first_dense = 1, n_group = 1, topk_group = 1;
    hp->moe_intermediate = 1408;
    hp->n_shared = 1;
    KR_TRY(kr_parse_int_field(cfg, "n_routed_experts", where, false, 0, &n_experts));
    KR_TRY(kr_parse_int_field(cfg, "num_local_experts", where, false, 0, &n_experts)); /* v5 alias */
    KR_TRY(kr_parse_int_field(cfg, "num_experts_per_tok", where, false, 1, &top_k));
    KR_TRY(kr_parse_int_field(cfg, "moe_intermediate_size", where, false, 1, &hp->moe_intermediate));
    KR_TRY(kr_parse_int_field(cfg, "n_shared_experts", where, false, 0, &hp->n_shared));
    KR_TRY(kr_parse_int_field(cfg, "first_k_dense_replace", where, false, 0, &first_dense));
    KR_TRY(kr_parse_int_field(cfg, "n_group", where, false, 1, &n_group));
    KR_TRY(kr_parse_int_field(cfg, "topk_group", where, false, 1, &topk_group));
    bool norm = true;
    double scale = 1.0;
    KR_TRY(kr_json_opt_bool(cfg, "norm_topk_prob", where, &norm));
    KR_TRY(kr_json_opt_num(cfg, "routed_scaling_factor", where, &scale));
    if (n_experts > 0 && (n_experts % n_group || topk_group > n_group || top_k > n_experts / n_group * topk_group ||
                          (n_group > 1 && n_experts / n_group < 2)))
        return kr_fail(KR_ERR_FORMAT, "%s: n_group %lld / topk_group %lld / num_experts_per_tok %lld do not fit %lld experts",
                       where, (long long)n_group, (long long)topk_group, (long long)top_k, (long long)n_experts);
    hp->router = (kr_router_config){.n_experts = (int)n_experts, .top_k = (int)top_k, .scoring = KR_SCORE_SIGMOID,
                                    .use_bias = true, .group_rule = KR_GROUP_TOP2_SUM, .n_group = (int)n_group,
                                    .topk_group = (int)topk_group, .normalize = norm, .norm_eps = 1e-20f,
                                    .scale = (float)scale};
    for (int64_t l = 0; l < hp->n_layers; l++)
        hp->layer_is_moe[l] = n_experts > 0 && l >= first_dense;

    /* partial_rotary_factor: inside rope_parameters (transformers v5) wins over the top level (v4) */
    double partial = 0.5;
    json_t *params = json_object_get(cfg, "rope_parameters");
    KR_TRY(kr_json_opt_num(cfg, "partial_rotary_factor", where, &partial));
    if (json_is_object(params))
        KR_TRY(kr_json_opt_num(params, "partial_rotary_factor", where, &partial));
    int rotary = (int)(hp->head_dim * partial);
    if (!(partial > 0 && partial <= 1))
        return kr_fail(KR_ERR_FORMAT, "%s: partial_rotary_factor %g must be in (0, 1]", where, partial);
    KR_TRY(kr_parse_rope(cfg, where, rotary, false, &hp->rope));
    hp->attn_scale = 1.0 / sqrt((double)hp->head_dim);
    return KR_OK;
}
