#!/usr/bin/env python3
"""Reference RoPE / YaRN values from Hugging Face transformers for the real configs of the supported
families (values from ../shared/specs/models.md section 7), for tests/test_rope.c.

Writes tests/reference/rope_reference.json: for each case the config.json dict krasis parses, and what
transformers computes from it: inv_freq (the rotary embedding's buffer), attention_scaling (multiplies
cos/sin) and, for DeepSeek, the attention softmax scale including the YaRN mscale^2.

Run with the versions in tools/requirements-fixtures.txt:  python3 tools/make_rope_reference.py
"""
import json
import os

import torch
import transformers
from transformers import DeepseekV2Config, DeepseekV3Config, Glm4MoeConfig, Qwen3MoeConfig
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as ds2
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds3
from transformers.models.glm4_moe import modeling_glm4_moe as glm
from transformers.models.qwen3_moe import modeling_qwen3_moe as qwen

COMMON_MOE = dict(vocab_size=1000, num_hidden_layers=2, intermediate_size=256, moe_intermediate_size=64,
                  num_experts_per_tok=2)


def ds_case(name, v3, hidden, heads, theta, rope_scaling, **extra):
    cfg = dict(model_type="deepseek_v3" if v3 else "deepseek_v2", hidden_size=hidden, num_attention_heads=heads,
               num_key_value_heads=heads, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
               qk_rope_head_dim=64, v_head_dim=128, n_routed_experts=8, n_shared_experts=1, n_group=1, topk_group=1,
               max_position_embeddings=int(rope_scaling["factor"] * rope_scaling["original_max_position_embeddings"]),
               rope_theta=theta, rope_scaling=rope_scaling, **COMMON_MOE, **extra)
    if not v3:
        cfg["topk_method"] = "greedy"
    hf_cfg = (DeepseekV3Config if v3 else DeepseekV2Config)(**{k: v for k, v in cfg.items() if k != "model_type"})
    mod = ds3 if v3 else ds2
    rot = mod.DeepseekV3RotaryEmbedding(hf_cfg) if v3 else mod.DeepseekV2RotaryEmbedding(hf_cfg)
    scale = mod.yarn_apply_mscale(hf_cfg.rope_parameters, (128 + 64) ** -0.5)
    return dict(name=name, config=cfg, inv_freq=rot.inv_freq.tolist(), attention_factor=rot.attention_scaling,
                softmax_scale=scale)


def gqa_case(name, family, cfg):
    cfg = dict(cfg, **COMMON_MOE)
    args = {k: v for k, v in cfg.items() if k != "model_type"}
    if family == "qwen3_moe":
        hf_cfg = Qwen3MoeConfig(**args)
        rot = qwen.Qwen3MoeRotaryEmbedding(hf_cfg)
    else:
        hf_cfg = Glm4MoeConfig(**args)
        rot = glm.Glm4MoeRotaryEmbedding(hf_cfg)
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    return dict(name=name, config=cfg, inv_freq=rot.inv_freq.tolist(), attention_factor=rot.attention_scaling,
                softmax_scale=head_dim ** -0.5)


def main():
    yarn_v2 = dict(type="yarn", factor=40, original_max_position_embeddings=4096, beta_fast=32, beta_slow=1,
                   mscale=0.707, mscale_all_dim=0.707)
    yarn_v3 = dict(yarn_v2, mscale=1.0, mscale_all_dim=1.0)
    yarn_kimi = dict(type="yarn", factor=32, original_max_position_embeddings=4096, beta_fast=1.0, beta_slow=1.0,
                     mscale=1.0, mscale_all_dim=1.0)
    cases = [
        ds_case("deepseek_v2", False, 5120, 128, 10000, yarn_v2),
        ds_case("deepseek_v3", True, 7168, 128, 10000, yarn_v3),
        ds_case("kimi_k2", True, 7168, 64, 50000.0, yarn_kimi),
        ds_case("kimi_k2_0905", True, 7168, 64, 50000.0, dict(yarn_kimi, factor=64)),
        # mscale != mscale_all_dim: attention_factor != 1 (cos/sin scaled)
        ds_case("deepseek_v2_mscale_ratio", False, 2048, 16, 10000, dict(yarn_v2, mscale=1.0)),
        gqa_case("qwen3_moe_default", "qwen3_moe",
                 dict(model_type="qwen3_moe", hidden_size=2048, num_attention_heads=32, num_key_value_heads=4,
                      head_dim=128, num_experts=8, max_position_embeddings=40960, rope_theta=1e6)),
        gqa_case("qwen3_moe_yarn", "qwen3_moe",
                 dict(model_type="qwen3_moe", hidden_size=2048, num_attention_heads=32, num_key_value_heads=4,
                      head_dim=128, num_experts=8, max_position_embeddings=131072, rope_theta=1e6,
                      rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32768))),
        gqa_case("qwen3_moe_yarn_no_truncate", "qwen3_moe",
                 dict(model_type="qwen3_moe", hidden_size=2048, num_attention_heads=32, num_key_value_heads=4,
                      head_dim=128, num_experts=8, max_position_embeddings=131072, rope_theta=1e6,
                      rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32768,
                                        truncate=False))),
        gqa_case("glm4_moe_partial", "glm4_moe",
                 dict(model_type="glm4_moe", hidden_size=5120, num_attention_heads=96, num_key_value_heads=8,
                      head_dim=128, n_routed_experts=8, partial_rotary_factor=0.5, max_position_embeddings=131072,
                      rope_theta=1e6)),
    ]
    out = dict(generator="tools/make_rope_reference.py", transformers=transformers.__version__,
               torch=torch.__version__, cases=cases)
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "reference", "rope_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    for c in cases:
        print(f"{c['name']:28s} dims {2 * len(c['inv_freq']):3d} attention_factor {c['attention_factor']:.6f} "
              f"softmax_scale {c['softmax_scale']:.6f}")


if __name__ == "__main__":
    main()
