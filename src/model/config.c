/* config.json -> kr_hparams: fields common to every family, RoPE (both the transformers-v4 spelling
 * rope_theta + rope_scaling and the v5 rope_parameters), quantization_config; then the family parser.
 * RoPE/YaRN follow transformers' modeling_rope_utils (_compute_default / _compute_yarn_parameters). */
#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"

const char *kr_family_name(kr_family f) {
    switch (f) {
    case KR_FAMILY_DEEPSEEK2: return "deepseek2 (MLA)";
    case KR_FAMILY_QWEN3MOE: return "qwen3moe";
    case KR_FAMILY_GLM4MOE: return "glm4moe";
    }
    return "?";
}

kr_status kr_parse_int_field(const json_t *cfg, const char *key, const char *where, bool required, int64_t min,
                             int64_t *out) {
    KR_TRY(required ? kr_json_req_int(cfg, key, where, out) : kr_json_opt_int(cfg, key, where, out));
    if (*out < min)
        return kr_fail(KR_ERR_FORMAT, "%s: field '%s' is %lld, must be >= %lld", where, key, (long long)*out,
                       (long long)min);
    /* every size in a real config is far below this; the cap keeps products of sizes inside int64 */
    if (*out > KR_MAX_CONFIG_INT)
        return kr_fail(KR_ERR_FORMAT, "%s: field '%s' is %lld, larger than any model could use (max %d)", where, key,
                       (long long)*out, KR_MAX_CONFIG_INT);
    return KR_OK;
}

double kr_yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

kr_status kr_parse_rope(const json_t *cfg, const char *where, int rotary_dim, bool interleaved, kr_rope_config *rope) {
    memset(rope, 0, sizeof *rope);
    rope->dim = rotary_dim;
    rope->interleaved = interleaved;
    rope->theta = 10000.0;
    rope->attention_factor = 1.0;
    if (rotary_dim <= 0 || rotary_dim % 2)
        return kr_fail(KR_ERR_FORMAT, "%s: rotary dimension %d must be positive and even", where, rotary_dim);

    json_t *params, *legacy;
    KR_TRY(kr_json_opt_obj(cfg, "rope_parameters", where, &params));
    KR_TRY(kr_json_opt_obj(cfg, "rope_scaling", where, &legacy));
    char pwhere[512];
    snprintf(pwhere, sizeof pwhere, "%s: %s", where, params ? "rope_parameters" : "rope_scaling");
    const json_t *p = params ? params : legacy;

    KR_TRY(kr_json_opt_num(cfg, "rope_theta", where, &rope->theta));
    if (p)
        KR_TRY(kr_json_opt_num(p, "rope_theta", pwhere, &rope->theta));
    if (!(rope->theta > 1.0))
        return kr_fail(KR_ERR_FORMAT, "%s: rope_theta must be > 1, got %g", where, rope->theta);

    const char *type = "default";
    if (p) {
        KR_TRY(kr_json_opt_str(p, "type", pwhere, &type));
        KR_TRY(kr_json_opt_str(p, "rope_type", pwhere, &type));
    }
    if (strcmp(type, "default") == 0)
        return KR_OK;
    if (strcmp(type, "yarn") != 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: rope type '%s' is not supported (supported: default, yarn)", pwhere,
                       type);

    rope->yarn = true;
    int64_t max_pos = 0;
    KR_TRY(kr_json_opt_int(cfg, "max_position_embeddings", where, &max_pos));
    rope->original_max_pos = max_pos;
    KR_TRY(kr_json_opt_int(cfg, "original_max_position_embeddings", where, &rope->original_max_pos));
    KR_TRY(kr_json_opt_int(p, "original_max_position_embeddings", pwhere, &rope->original_max_pos));
    if (rope->original_max_pos <= 0)
        return kr_fail(KR_ERR_FORMAT, "%s: YaRN needs original_max_position_embeddings (or max_position_embeddings)",
                       pwhere);
    rope->factor = 0;
    KR_TRY(kr_json_opt_num(p, "factor", pwhere, &rope->factor));
    if (rope->factor == 0 && max_pos > 0)
        rope->factor = (double)max_pos / (double)rope->original_max_pos;
    if (!(rope->factor > 0))
        return kr_fail(KR_ERR_FORMAT, "%s: YaRN 'factor' must be > 0", pwhere);
    /* transformers: `get("beta_fast") or 32`, so 0 means the default too */
    KR_TRY(kr_json_opt_num(p, "beta_fast", pwhere, &rope->beta_fast));
    KR_TRY(kr_json_opt_num(p, "beta_slow", pwhere, &rope->beta_slow));
    if (rope->beta_fast == 0)
        rope->beta_fast = 32;
    if (rope->beta_slow == 0)
        rope->beta_slow = 1;
    KR_TRY(kr_json_opt_num(p, "mscale", pwhere, &rope->mscale));
    KR_TRY(kr_json_opt_num(p, "mscale_all_dim", pwhere, &rope->mscale_all_dim));
    rope->truncate = true;
    KR_TRY(kr_json_opt_bool(p, "truncate", pwhere, &rope->truncate));
    double af = -1;
    KR_TRY(kr_json_opt_num(p, "attention_factor", pwhere, &af));
    if (af >= 0)
        rope->attention_factor = af;
    else if (rope->mscale != 0 && rope->mscale_all_dim != 0)
        rope->attention_factor = kr_yarn_mscale(rope->factor, rope->mscale) / kr_yarn_mscale(rope->factor, rope->mscale_all_dim);
    else
        rope->attention_factor = kr_yarn_mscale(rope->factor, 1.0);
    return KR_OK;
}

static kr_status parse_quantization(const json_t *cfg, const char *where, kr_hparams *hp) {
    json_t *q;
    KR_TRY(kr_json_opt_obj(cfg, "quantization_config", where, &q));
    if (!q)
        return KR_OK;
    char qwhere[512];
    snprintf(qwhere, sizeof qwhere, "%s: quantization_config", where);
    const char *method, *fmt = "e4m3";
    KR_TRY(kr_json_req_str(q, "quant_method", qwhere, &method));
    if (strcmp(method, "fp8") != 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: quant_method '%s' is not supported (supported: fp8)", qwhere, method);
    KR_TRY(kr_json_opt_str(q, "fmt", qwhere, &fmt));
    if (strcmp(fmt, "e4m3") != 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: fp8 fmt '%s' is not supported (supported: e4m3)", qwhere, fmt);
    hp->fp8 = true;
    hp->fp8_block_rows = hp->fp8_block_cols = 128;
    json_t *bs = json_object_get(q, "weight_block_size");
    if (bs && !json_is_null(bs)) {
        if (!json_is_array(bs) || json_array_size(bs) != 2 || !json_is_integer(json_array_get(bs, 0)) ||
            !json_is_integer(json_array_get(bs, 1)) || json_integer_value(json_array_get(bs, 0)) <= 0 ||
            json_integer_value(json_array_get(bs, 1)) <= 0 ||
            json_integer_value(json_array_get(bs, 0)) > KR_MAX_CONFIG_INT ||
            json_integer_value(json_array_get(bs, 1)) > KR_MAX_CONFIG_INT)
            return kr_fail(KR_ERR_FORMAT, "%s: 'weight_block_size' must be [rows, cols] of integers in [1, %d]", qwhere,
                           KR_MAX_CONFIG_INT);
        hp->fp8_block_rows = json_integer_value(json_array_get(bs, 0));
        hp->fp8_block_cols = json_integer_value(json_array_get(bs, 1));
    }
    return KR_OK;
}

static kr_status parse_token_ids(const json_t *cfg, const char *where, kr_hparams *hp) {
    hp->bos_id = -1;
    KR_TRY(kr_json_opt_int(cfg, "bos_token_id", where, &hp->bos_id));
    json_t *eos = json_object_get(cfg, "eos_token_id");
    if (!eos || json_is_null(eos))
        return KR_OK;
    if (json_is_integer(eos)) {
        hp->eos_ids[hp->n_eos++] = json_integer_value(eos);
        return KR_OK;
    }
    if (!json_is_array(eos))
        return kr_fail(KR_ERR_FORMAT, "%s: field 'eos_token_id' must be an integer or a list of integers", where);
    for (size_t i = 0; i < json_array_size(eos) && hp->n_eos < 8; i++) {
        json_t *v = json_array_get(eos, i);
        if (!json_is_integer(v))
            return kr_fail(KR_ERR_FORMAT, "%s: field 'eos_token_id' must be an integer or a list of integers", where);
        hp->eos_ids[hp->n_eos++] = json_integer_value(v);
    }
    return KR_OK;
}

static kr_status parse_common(const json_t *cfg, const char *where, kr_hparams *hp) {
    KR_TRY(kr_parse_int_field(cfg, "vocab_size", where, true, 1, &hp->vocab));
    KR_TRY(kr_parse_int_field(cfg, "hidden_size", where, true, 1, &hp->hidden));
    KR_TRY(kr_parse_int_field(cfg, "num_hidden_layers", where, true, 1, &hp->n_layers));
    KR_TRY(kr_parse_int_field(cfg, "num_attention_heads", where, true, 1, &hp->n_heads));
    hp->n_kv_heads = hp->n_heads;
    KR_TRY(kr_parse_int_field(cfg, "num_key_value_heads", where, false, 1, &hp->n_kv_heads));
    hp->rms_eps = 1e-6;
    KR_TRY(kr_json_opt_num(cfg, "rms_norm_eps", where, &hp->rms_eps));
    if (!(hp->rms_eps > 0))
        return kr_fail(KR_ERR_FORMAT, "%s: field 'rms_norm_eps' must be > 0", where);
    hp->mla_norm_eps = 1e-6;
    KR_TRY(kr_parse_int_field(cfg, "max_position_embeddings", where, false, 1, &hp->max_pos));
    KR_TRY(kr_json_opt_bool(cfg, "tie_word_embeddings", where, &hp->tie_embeddings));
    const char *act = "silu";
    KR_TRY(kr_json_opt_str(cfg, "hidden_act", where, &act));
    if (strcmp(act, "silu") != 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (supported: silu)", where, act);
    bool mlp_bias = false;
    KR_TRY(kr_json_opt_bool(cfg, "mlp_bias", where, &mlp_bias));
    if (mlp_bias)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: mlp_bias true is not supported", where);
    KR_TRY(kr_parse_int_field(cfg, "num_nextn_predict_layers", where, false, 0, &hp->nextn_layers));
    KR_TRY(kr_parse_int_field(cfg, "num_mtp_layers", where, false, 0, &hp->nextn_layers));
    hp->layer_is_moe = calloc((size_t)hp->n_layers, 1);
    if (!hp->layer_is_moe)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    KR_TRY(parse_quantization(cfg, where, hp));
    return parse_token_ids(cfg, where, hp);
}

static const struct {
    const char *model_type;
    kr_family family;
} families[] = {
    {"deepseek_v2", KR_FAMILY_DEEPSEEK2}, {"deepseek_v3", KR_FAMILY_DEEPSEEK2}, {"kimi_k2", KR_FAMILY_DEEPSEEK2},
    {"qwen3_moe", KR_FAMILY_QWEN3MOE},    {"glm4_moe", KR_FAMILY_GLM4MOE},
};

static kr_status parse_config(json_t *cfg, const char *where, kr_hparams *hp);

kr_status kr_hparams_from_json(json_t *cfg, const char *where, kr_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    kr_status s = parse_config(cfg, where, hp);
    if (s != KR_OK)
        kr_hparams_free(hp);
    return s;
}

static kr_status parse_config(json_t *cfg, const char *where, kr_hparams *hp) {
    const char *mt;
    KR_TRY(kr_json_req_str(cfg, "model_type", where, &mt));
    snprintf(hp->outer_model_type, sizeof hp->outer_model_type, "%s", mt);
    char inner_where[600];
    if (strcmp(mt, "kimi_k25") == 0) {
        /* Kimi-K2.5 wraps a DeepSeek-V3-architecture text model (plus a vision tower krasis ignores) */
        json_t *text;
        KR_TRY(kr_json_opt_obj(cfg, "text_config", where, &text));
        if (!text)
            return kr_fail(KR_ERR_FORMAT, "%s: model_type 'kimi_k25' needs a 'text_config' object", where);
        snprintf(inner_where, sizeof inner_where, "%s: text_config", where);
        where = inner_where;
        cfg = text;
        mt = "deepseek_v3";
        KR_TRY(kr_json_opt_str(cfg, "model_type", where, &mt));
    }
    snprintf(hp->model_type, sizeof hp->model_type, "%s", mt);
    size_t i = 0, n = sizeof families / sizeof families[0];
    while (i < n && strcmp(families[i].model_type, mt) != 0)
        i++;
    if (i == n)
        return kr_fail(KR_ERR_UNSUPPORTED,
                       "%s: model_type '%s' is not supported (supported: deepseek_v2, deepseek_v3, kimi_k2, kimi_k25, "
                       "qwen3_moe, glm4_moe)",
                       where, mt);
    hp->family = families[i].family;
    KR_TRY(parse_common(cfg, where, hp));
    switch (hp->family) {
    case KR_FAMILY_DEEPSEEK2: return kr_deepseek2_parse_config(cfg, where, hp);
    case KR_FAMILY_QWEN3MOE: return kr_qwen3moe_parse_config(cfg, where, hp);
    case KR_FAMILY_GLM4MOE: return kr_glm4moe_parse_config(cfg, where, hp);
    }
    return KR_OK;
}

kr_status kr_hparams_load(const char *dir, kr_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg;
    KR_TRY(kr_json_load_file(path, &cfg));
    kr_status s = kr_hparams_from_json(cfg, path, hp);
    json_decref(cfg);
    return s;
}

void kr_hparams_free(kr_hparams *hp) {
    free(hp->layer_is_moe);
    hp->layer_is_moe = NULL;
}

kr_status kr_gqa_parse_config(const json_t *cfg, const char *where, kr_hparams *hp) {
    hp->head_dim = hp->hidden / hp->n_heads;
    KR_TRY(kr_parse_int_field(cfg, "head_dim", where, false, 2, &hp->head_dim));
    KR_TRY(kr_parse_int_field(cfg, "intermediate_size", where, true, 1, &hp->intermediate));
    KR_TRY(kr_json_opt_bool(cfg, "attention_bias", where, &hp->attention_bias));
    if (hp->n_heads % hp->n_kv_heads)
        return kr_fail(KR_ERR_FORMAT, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                       where, (long long)hp->n_heads, (long long)hp->n_kv_heads);
    return KR_OK;
}
