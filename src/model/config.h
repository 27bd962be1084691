/* Model hyper-parameters: everything in config.json that changes the math, for every supported family.
 * kr_hparams_load reads config.json (following model_type to the family's parser); a field of the wrong
 * type, a missing required field or a value krasis does not implement is an error naming it. */
#ifndef KR_MODEL_CONFIG_H
#define KR_MODEL_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

typedef enum {
    KR_FAMILY_DEEPSEEK2, /* deepseek_v2, deepseek_v3, kimi_k2, kimi_k25: MLA attention */
    KR_FAMILY_QWEN3MOE,  /* qwen3_moe: GQA + q/k norm */
    KR_FAMILY_GLM4MOE,   /* glm4_moe: GQA + bias + partial rotary (+ q/k norm) */
} kr_family;

typedef enum { KR_SCORE_SOFTMAX, KR_SCORE_SIGMOID } kr_scoring;

/* How expert groups are ranked before top-k (DeepSeek's group-limited routing). */
typedef enum {
    KR_GROUP_NONE,     /* plain top-k over all experts */
    KR_GROUP_MAX,      /* group score = its best expert (DeepSeek-V2 group_limited_greedy) */
    KR_GROUP_TOP2_SUM, /* group score = sum of its 2 best biased scores (DeepSeek-V3 noaux_tc) */
} kr_group_rule;

typedef struct {
    int n_experts, top_k;
    kr_scoring scoring;
    bool use_bias;           /* e_score_correction_bias added for selection only */
    kr_group_rule group_rule;
    int n_group, topk_group;
    bool normalize;          /* w /= sum(w) + norm_eps */
    float norm_eps;
    float scale;             /* routed_scaling_factor, applied last */
} kr_router_config;

typedef struct {
    int dim;           /* rotated dimensions per head (<= head dim) */
    bool interleaved;  /* pairs (2i, 2i+1) (DeepSeek) instead of (i, i + dim/2) (NeoX) */
    double theta;
    bool yarn;
    double factor, beta_fast, beta_slow, mscale, mscale_all_dim;
    double attention_factor; /* multiplies cos/sin; 1 without YaRN */
    int64_t original_max_pos;
    bool truncate;
} kr_rope_config;

typedef struct {
    kr_family family;
    char model_type[32];      /* as written in config.json (the inner one for kimi_k25) */
    char outer_model_type[32];
    int64_t vocab, hidden, n_layers, n_heads, n_kv_heads, head_dim;
    double rms_eps;
    double mla_norm_eps;      /* q_a_layernorm / kv_a_layernorm (HF: class default 1e-6) */
    int64_t max_pos;
    bool tie_embeddings;

    /* MLA (deepseek2) */
    int64_t q_lora_rank;      /* 0: plain q_proj */
    int64_t kv_lora_rank, qk_nope_dim, qk_rope_dim, v_head_dim;

    /* GQA (qwen3moe, glm4moe) */
    bool qk_norm;
    bool attention_bias;      /* q/k/v biases (deepseek2: q_a/kv_a/o biases) */
    bool o_bias;              /* o_proj bias (qwen3moe with attention_bias) */

    double attn_scale;        /* softmax scale, including DeepSeek's YaRN mscale^2 */
    kr_rope_config rope;

    /* FFN */
    int64_t intermediate, moe_intermediate, n_shared;
    uint8_t *layer_is_moe;    /* [n_layers] */
    kr_router_config router;

    /* FP8 block-quantized checkpoint (quantization_config.quant_method == "fp8") */
    bool fp8;
    int64_t fp8_block_rows, fp8_block_cols;

    int64_t nextn_layers;     /* MTP layers in the checkpoint, never run */
    int64_t bos_id;           /* -1 when none */
    int64_t eos_ids[8];
    int n_eos;
} kr_hparams;

/* dir: a model directory holding config.json. */
kr_status kr_hparams_load(const char *dir, kr_hparams *hp);
/* Same, from an already parsed config object; `where` names it in errors. On failure nothing is left
 * to free. */
kr_status kr_hparams_from_json(json_t *cfg, const char *where, kr_hparams *hp);
void kr_hparams_free(kr_hparams *hp);

const char *kr_family_name(kr_family f);

/* Shared by the family parsers (config.c). Integer fields must lie in [min, KR_MAX_CONFIG_INT]. */
#define KR_MAX_CONFIG_INT (1 << 24)
/* YaRN's magnitude correction 0.1 * m * ln(scale) + 1 (1 when scale <= 1), as transformers defines it. */
double kr_yarn_mscale(double scale, double m);
kr_status kr_parse_rope(const json_t *cfg, const char *where, int rotary_dim, bool interleaved, kr_rope_config *rope);
kr_status kr_parse_int_field(const json_t *cfg, const char *key, const char *where, bool required, int64_t min,
                             int64_t *out);

/* Family parsers (model/<family>.c): fill the family-specific fields from cfg. */
kr_status kr_deepseek2_parse_config(const json_t *cfg, const char *where, kr_hparams *hp);
/* The fields every grouped-query-attention family shares: head_dim (default hidden / heads),
 * intermediate_size, attention_bias, and heads divisible by kv heads. */
kr_status kr_gqa_parse_config(const json_t *cfg, const char *where, kr_hparams *hp);
kr_status kr_qwen3moe_parse_config(const json_t *cfg, const char *where, kr_hparams *hp);
kr_status kr_glm4moe_parse_config(const json_t *cfg, const char *where, kr_hparams *hp);

#endif
