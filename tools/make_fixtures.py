#!/usr/bin/env python3
"""Create the tiny reference checkpoints under tests/fixtures/ (issue 2, item 5).

Every fixture is a random, tiny model of one supported family, written to disk
the way Hugging Face writes it (save_pretrained: real tensor names, real file
layout, real config.json), plus the reference logits that HF transformers
computes for it:

  tests/fixtures/<name>/
      config.json, generation_config.json, model.safetensors (or shards +
      model.safetensors.index.json)              -- the checkpoint
      reference.json                             -- prompt/decode ids, dtype, notes, versions
      logits_prompt.npy   float32 [T, V]          -- full forward of prompt_ids (no cache)
      logits_decode.npy   float32 [N, V]          -- row i: logits after feeding decode_ids[i]
                                                     one at a time on top of the prompt's KV cache

All reference math is float32. Fixtures stored in BF16/F16 have their weights
rounded to that dtype first; the reference model holds exactly the rounded
values. The FP8 fixture's reference holds exactly the dequantized weights.
Reference logits always come from a model loaded back from the written files
(or, for layouts HF cannot load itself, from a model loaded from an
HF-layout copy of exactly the same values), and the script asserts that the
loaded model reproduces the in-memory model bit-for-bit.

Run:  python3 tools/make_fixtures.py            (all fixtures)
      python3 tools/make_fixtures.py NAME ...   (some)
Needs the pinned versions of tools/requirements-fixtures.txt; CPU only; no network.
"""

import copy
import json
import math
import os
import platform
import shutil
import sys
import tempfile

import numpy as np
import safetensors
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    Glm4MoeConfig,
    Glm4MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

transformers.logging.set_verbosity_error()
try:  # silence the "Writing model shards" progress bars
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(ROOT, "tests", "fixtures")

PROMPT_LEN = 8
DECODE_LEN = 4
MIN_REL_GAP = 1e-3  # required relative gap at every routing decision
MAX_SEED_TRIES = 40

VERSIONS = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
}

torch.set_num_threads(1)  # bit-reproducible CPU reductions


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def log(*a):
    print(*a, flush=True)


def read_json(p):
    with open(p) as f:
        return json.load(f)


def write_json(p, obj):
    with open(p, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def st_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))


def st_header_dtypes(d):
    """{tensor name: safetensors dtype string} over all files of a checkpoint dir."""
    out = {}
    for fn in st_files(d):
        with open(os.path.join(d, fn), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            hdr = json.loads(f.read(n))
        for k, v in hdr.items():
            if k != "__metadata__":
                out[k] = v["dtype"]
    return out


def load_all_tensors(d):
    out = {}
    for fn in st_files(d):
        with safe_open(os.path.join(d, fn), "pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


def rewrite_single_file(d, tensors):
    """Replace the checkpoint of dir d by a single model.safetensors (HF metadata)."""
    for fn in st_files(d):
        os.remove(os.path.join(d, fn))
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        os.remove(idx)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})


def yarn_low_high(d, theta, l0, beta_fast, beta_slow):
    """Spec §1.3 / HF _compute_yarn_parameters (truncate=True) correction range."""
    def corr(r):
        return d * math.log(l0 / (2 * math.pi * r)) / (2 * math.log(theta))
    low = max(math.floor(corr(beta_fast)), 0)
    high = min(math.ceil(corr(beta_slow)), d - 1)
    return low, high


def yarn_mscale(s, k):
    return 1.0 if s <= 1 else 0.1 * k * math.log(s) + 1.0


# --------------------------------------------------------------------------------------
# initialisation: far-from-uniform logits, decisive routing
# --------------------------------------------------------------------------------------
def reinit(model, gen, *, gate_gain, bias_std=0.15, lm_gain=2.0, emb_std=1.0, attn_bias_std=0.3):
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)  # U(0.5, 1.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * emb_std)
            elif name == "lm_head.weight":
                p.copy_(torch.randn(p.shape, generator=gen) * (lm_gain / math.sqrt(p.shape[1])))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * (gate_gain / math.sqrt(p.shape[1])))
            elif name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
                # fused [E, out, in]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[2]))
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * attn_bias_std)
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            else:
                raise RuntimeError(f"no init rule for {name} {tuple(p.shape)}")
    for name, b in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            with torch.no_grad():
                b.copy_(torch.randn(b.shape, generator=gen) * bias_std)


def round_params(model, dtype, keep_fp32=("e_score_correction_bias",)):
    """Round every parameter (and non-fp32-kept buffer) to dtype, keep holding float32."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(p.to(dtype).float())
        for name, b in model.named_buffers():
            if b.is_floating_point() and not any(k in name for k in keep_fp32) and "inv_freq" not in name:
                b.copy_(b.to(dtype).float())


# --------------------------------------------------------------------------------------
# reference computation + routing instrumentation
# --------------------------------------------------------------------------------------
def router_modules(model):
    return [(n, m) for n, m in model.named_modules() if type(m).__name__.lower().endswith("topkrouter")]


def run_reference(model, prompt_ids, decode_ids, capture=False):
    """Returns (logits_prompt [T,V], logits_decode [N,V], full_nocache [T+N,V], captured router inputs)."""
    captured = {}
    hooks = []
    if capture:
        for n, m in router_modules(model):
            captured[n] = []
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, n=n: captured[n].append(
                    (inp[0].detach().reshape(-1, inp[0].shape[-1]).clone(), out[2].detach().clone()))))
    with torch.no_grad():
        lp = model(input_ids=torch.tensor([prompt_ids]), use_cache=False).logits[0].float().clone()
        out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        cache = out.cache
        rows = []
        for t in decode_ids:
            o = model(input_ids=torch.tensor([[t]]), cache=cache, use_cache=True)
            cache = o.cache
            rows.append(o.logits[0, -1].float().clone())
        ld = torch.stack(rows)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        full = model(input_ids=torch.tensor([prompt_ids + decode_ids]), use_cache=False).logits[0].float()
    return lp, ld, full, captured


def rel_gap(a, b):
    return float((a - b) / max(abs(a), abs(b), 1e-30))


def routing_gaps(model, cfg, captured, family):
    """Minimum relative gaps over every token and MoE layer: expert top-K boundary and
    (where n_group>1) group top-topk_group boundary. Also counts (for biased routers)
    how many token/layer selections differ from the selection without the bias."""
    mods = dict(router_modules(model))
    min_expert = float("inf")
    min_group = float("inf")
    n_dec = 0
    bias_changed = 0
    K = cfg.num_experts_per_tok
    for name, xs in captured.items():
        m = mods[name]
        W = m.weight.detach().double()
        X = torch.cat([x for x, _ in xs]).double()
        hf_sel = torch.cat([i for _, i in xs])
        logits = X @ W.T
        E = W.shape[0]
        for row, hf_idx in zip(logits, hf_sel):
            n_dec += 1
            hf_set = set(hf_idx.tolist())
            if family == "qwen3_moe":
                s = torch.softmax(row, -1)
                v = torch.sort(s, descending=True).values
                min_expert = min(min_expert, rel_gap(v[K - 1].item(), v[K].item()))
                assert set(torch.topk(s, K).indices.tolist()) == hf_set
                continue
            if family == "deepseek_v2":
                s = torch.softmax(row, -1)
                if cfg.topk_method == "greedy":
                    v = torch.sort(s, descending=True).values
                    min_expert = min(min_expert, rel_gap(v[K - 1].item(), v[K].item()))
                    assert set(torch.topk(s, K).indices.tolist()) == hf_set
                else:  # group_limited_greedy: group score = max, mask -> 0.0
                    G, tg = cfg.n_group, cfg.topk_group
                    gs = s.view(G, E // G).max(-1).values
                    gv = torch.sort(gs, descending=True).values
                    min_group = min(min_group, rel_gap(gv[tg - 1].item(), gv[tg].item()))
                    keep = torch.topk(gs, tg).indices
                    mask = torch.zeros(G, dtype=torch.bool)
                    mask[keep] = True
                    sm = s.masked_fill(~mask.repeat_interleave(E // G), 0.0)
                    v = torch.sort(sm, descending=True).values
                    min_expert = min(min_expert, rel_gap(v[K - 1].item(), v[K].item()))
                    assert set(torch.topk(sm, K).indices.tolist()) == hf_set
                continue
            # deepseek_v3 / glm4_moe: sigmoid + bias, group score = sum of top-2, mask -inf
            s = torch.sigmoid(row)
            bias = m.e_score_correction_bias.detach().double()

            def select(choice):
                G, tg = cfg.n_group, cfg.topk_group
                gs = choice.view(G, E // G).topk(2, -1).values.sum(-1)
                gap_g = None
                if G > 1:
                    gv = torch.sort(gs, descending=True).values
                    gap_g = rel_gap(gv[tg - 1].item(), gv[tg].item())
                keep = torch.topk(gs, tg).indices
                mask = torch.zeros(G, dtype=torch.bool)
                mask[keep] = True
                cm = choice.masked_fill(~mask.repeat_interleave(E // G), float("-inf"))
                v = torch.sort(cm, descending=True).values
                gap_e = rel_gap(v[K - 1].item(), v[K].item())
                return set(torch.topk(cm, K).indices.tolist()), gap_e, gap_g

            sel_b, gap_e, gap_g = select(s + bias)
            assert sel_b == hf_set
            sel_nb, _, _ = select(s)
            if sel_b != sel_nb:
                bias_changed += 1
            min_expert = min(min_expert, gap_e)
            if gap_g is not None:
                min_group = min(min_group, gap_g)
    return {
        "decisions": n_dec,
        "min_rel_gap_expert": min_expert,
        "min_rel_gap_group": (None if min_group == float("inf") else min_group),
        "bias_changed_selections": bias_changed,
    }


# --------------------------------------------------------------------------------------
# config.json spelling edits
# --------------------------------------------------------------------------------------
def to_v4_spelling(cfg_json, *, rope_scaling_type_key="type", drop=(), rename=None, add=None,
                   partial_rotary_top_level=False, rope_scaling_null=False):
    """Rewrite a transformers-5 config dict into the transformers-4 spelling that the
    published checkpoints carry: top-level rope_theta (+ partial_rotary_factor) and
    rope_scaling {"type": ...} instead of rope_parameters; torch_dtype instead of dtype."""
    c = dict(cfg_json)
    rp = dict(c.pop("rope_parameters"))
    c["rope_theta"] = rp.pop("rope_theta")
    prf = rp.pop("partial_rotary_factor", None)
    if prf is not None:
        assert partial_rotary_top_level
        c["partial_rotary_factor"] = prf
    rtype = rp.pop("rope_type")
    rp.pop("type", None)
    if rtype == "default":
        if rope_scaling_null:
            c["rope_scaling"] = None
    else:
        c["rope_scaling"] = {rope_scaling_type_key: rtype, **rp}
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    for k in drop:
        c.pop(k, None)
    for a, b in (rename or {}).items():
        c[b] = c.pop(a)
    for k, v in (add or {}).items():
        c[k] = v
    return c


# --------------------------------------------------------------------------------------
# fixture definitions
# --------------------------------------------------------------------------------------
COMMON = dict(vocab_size=300, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
              num_hidden_layers=3, hidden_act="silu", attn_implementation="eager", experts_implementation="eager",
              bos_token_id=0, eos_token_id=1, pad_token_id=None)
MLA = dict(num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=32, qk_nope_head_dim=16,
           qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8)
GQA = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def fx_dsv2_lite():
    cfg = DeepseekV2Config(**COMMON, **MLA, q_lora_rank=None, n_shared_experts=2, num_experts_per_tok=3,
                           first_k_dense_replace=1, topk_method="greedy", n_group=1, topk_group=1,
                           norm_topk_prob=False, routed_scaling_factor=1.0, rms_norm_eps=1e-6,
                           max_position_embeddings=1024, rope_theta=10000.0,
                           rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                         "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707})

    def edit(c):
        return to_v4_spelling(c, drop=("head_dim", "qk_head_dim", "rope_interleave"),
                              add={"scoring_func": "softmax", "moe_layer_freq": 1, "aux_loss_alpha": 0.001,
                                   "seq_aux": True})
    return dict(cls=DeepseekV2ForCausalLM, cfg=cfg, family="deepseek_v2", dtype="float32", gate_gain=3.0,
                edit=edit, spelling="v4",
                notes="DeepSeek-V2-Lite shape: q_lora_rank null (q_proj), greedy softmax top-3 routing, "
                      "norm_topk_prob false, routed_scaling_factor 1.0, 2 shared experts, layer 0 dense, "
                      "YaRN factor 4 (orig 256, max 1024), mscale=mscale_all_dim=0.707 -> attention_factor 1.0 "
                      "and softmax scale (24^-0.5)*m^2, m=0.1*0.707*ln4+1. config in transformers-v4 spelling "
                      "(rope_theta + rope_scaling{type:yarn}), torch_dtype, no head_dim/qk_head_dim keys.")


def fx_dsv2_qlora_group():
    cfg = DeepseekV2Config(**COMMON, **MLA, q_lora_rank=48, n_shared_experts=2, num_experts_per_tok=3,
                           first_k_dense_replace=1, topk_method="group_limited_greedy", n_group=4, topk_group=2,
                           norm_topk_prob=False, routed_scaling_factor=16.0, rms_norm_eps=1e-6,
                           max_position_embeddings=1024,
                           rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                            "original_max_position_embeddings": 128, "mscale": 1.0,
                                            "mscale_all_dim": 1.0})
    return dict(cls=DeepseekV2ForCausalLM, cfg=cfg, family="deepseek_v2", dtype="bfloat16", gate_gain=3.0,
                edit=None, spelling="v5",
                notes="DeepSeek-V2 shape with q_lora_rank 48 (q_a_proj/q_a_layernorm/q_b_proj), "
                      "group_limited_greedy: 4 groups of 2 experts, group score = max softmax prob in group, "
                      "top-2 groups kept (others masked to 0.0), top-3 experts, routed_scaling_factor 16 "
                      "(always multiplied in HF V2), norm_topk_prob false. YaRN factor 8 (orig 128, max 1024), "
                      "mscale=mscale_all_dim=1.0, beta_fast/beta_slow ABSENT (defaults 32/1). "
                      "config exactly as transformers 5 writes it (rope_parameters, head_dim, qk_head_dim). "
                      "Weights stored BF16.")


def fx_dsv2_bias():
    cfg = DeepseekV2Config(**COMMON, **MLA, q_lora_rank=48, n_shared_experts=1, num_experts_per_tok=2,
                           first_k_dense_replace=2, topk_method="greedy", n_group=1, topk_group=1,
                           norm_topk_prob=False, routed_scaling_factor=1.5, rms_norm_eps=1e-6,
                           attention_bias=True, max_position_embeddings=4096,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return dict(cls=DeepseekV2ForCausalLM, cfg=cfg, family="deepseek_v2", dtype="bfloat16", gate_gain=3.0,
                edit=None, spelling="v5",
                notes="DeepSeek-V2 with attention_bias true (random biases on q_a_proj, kv_a_proj_with_mqa and "
                      "o_proj, as transformers defines them; q_b_proj/kv_b_proj have none), plain RoPE (no "
                      "YaRN: softmax scale 24^-0.5), layers 0-1 dense (first_k_dense_replace 2), 1 shared "
                      "expert, greedy top-2 x1.5. Weights stored BF16.")


def fx_dsv3_group():
    cfg = DeepseekV3Config(**COMMON, **MLA, q_lora_rank=48, n_shared_experts=1, num_experts_per_tok=3,
                           first_k_dense_replace=1, n_group=4, topk_group=2, norm_topk_prob=True,
                           routed_scaling_factor=2.5, rms_norm_eps=1e-6, max_position_embeddings=1024,
                           num_nextn_predict_layers=1, rope_theta=10000.0,
                           rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})

    def edit(c):
        return to_v4_spelling(c, drop=("head_dim", "qk_head_dim", "rope_interleave"),
                              add={"topk_method": "noaux_tc", "scoring_func": "sigmoid", "moe_layer_freq": 1})
    return dict(cls=DeepseekV3ForCausalLM, cfg=cfg, family="deepseek_v3", dtype="float32", gate_gain=3.0,
                bias_std=0.15, edit=edit, spelling="v4", mtp=dict(embed_and_head=True),
                notes="DeepSeek-V3 shape: noaux_tc sigmoid router with random fp32 e_score_correction_bias "
                      "(used for selection only), 4 groups of 2 experts, group score = sum of top-2 biased scores, "
                      "top-2 groups kept (others -inf), top-3 experts, weights = unbiased sigmoid, normalized "
                      "(norm_topk_prob) then x2.5. Layer 0 dense. YaRN factor 4 (orig 256), mscale=mscale_all_dim=1. "
                      "Checkpoint carries an MTP layer model.layers.3.* (num_nextn_predict_layers 1: full MoE "
                      "decoder layer + embed_tokens, enorm, hnorm, eh_proj, shared_head.norm, shared_head.head) "
                      "that must be skipped. v4 spelling.")


def kimi_cfg(**over):
    kw = dict(COMMON, **MLA)
    kw.update(q_lora_rank=48, qk_rope_head_dim=16, n_shared_experts=1, num_experts_per_tok=2,
              first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True,
              routed_scaling_factor=2.827, rms_norm_eps=1e-6, max_position_embeddings=131072,
              num_nextn_predict_layers=0, rope_theta=50000.0,
              rope_scaling={"type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                            "beta_fast": 1.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0})
    kw.update(over)
    return DeepseekV3Config(**kw)


def fx_kimi_k2():
    cfg = kimi_cfg()

    def edit(c):
        c = to_v4_spelling(c, drop=("head_dim", "qk_head_dim", "rope_interleave"),
                           add={"topk_method": "noaux_tc", "scoring_func": "sigmoid", "moe_layer_freq": 1})
        c["model_type"] = "kimi_k2"
        c["architectures"] = ["DeepseekV3ForCausalLM"]
        return c
    return dict(cls=DeepseekV3ForCausalLM, cfg=cfg, family="deepseek_v3", dtype="bfloat16", gate_gain=3.0,
                bias_std=0.15, edit=edit, spelling="v4", hf_loads_edited=False,
                notes="Kimi-K2 shape: config.json model_type 'kimi_k2', architectures DeepseekV3ForCausalLM "
                      "(reference computed with the HF DeepseekV3 class before the model_type edit). n_group 1, "
                      "topk_group 1, top-2, norm_topk_prob, routed_scaling_factor 2.827, rope_theta 50000, "
                      "qk_rope_head_dim 16, YaRN factor 32 = 131072/4096, beta_fast = beta_slow = 1.0, "
                      "mscale = mscale_all_dim = 1.0. Weights BF16, e_score_correction_bias F32. v4 spelling.")


def fx_kimi_k25():
    # rms_norm_eps 1e-5 as Kimi-K2.5; q_a_layernorm/kv_a_layernorm use the class default 1e-6 in HF.
    cfg = kimi_cfg(rms_norm_eps=1e-5)
    return dict(cls=DeepseekV3ForCausalLM, cfg=cfg, family="deepseek_v3", dtype="float16", gate_gain=3.0,
                bias_std=0.15, edit=None, spelling="v4", k25=True, small_latent=0.01,
                notes="Kimi-K2.5 layout: config.json is the multimodal wrapper {model_type kimi_k25, "
                      "architectures [KimiK25ForConditionalGeneration], text_config{model_type kimi_k2, ...}, "
                      "vision_config}; tensors prefixed 'language_model.' (language_model.model.*, "
                      "language_model.lm_head.weight) plus dummy mm_projector.* tensors that must be ignored. "
                      "Weights F16 (e_score_correction_bias F32). Math = kimi_k2 with rms_norm_eps 1e-5. "
                      "q_a_proj and the latent rows (0..kv_lora_rank-1) of kv_a_proj_with_mqa are scaled down "
                      "(x0.01) so that mean(x^2) at q_a_layernorm/kv_a_layernorm is ~1e-4: the logits then depend "
                      "visibly on HF using eps 1e-6 (class default) there, not config rms_norm_eps 1e-5 "
                      "(checks.layernorm_eps_sensitivity = max|dlogit|/max|logit| if 1e-5 were used).")


def fx_qwen3_moe():
    cfg = Qwen3MoeConfig(**COMMON, **GQA, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                         decoder_sparse_step=1, mlp_only_layers=[0], rms_norm_eps=1e-6,
                         max_position_embeddings=1024, rope_theta=1000000.0, tie_word_embeddings=False)

    def edit(c):
        return to_v4_spelling(c, rename={"num_local_experts": "num_experts"}, rope_scaling_null=True,
                              add={"max_window_layers": 3})
    return dict(cls=Qwen3MoeForCausalLM, cfg=cfg, family="qwen3_moe", dtype="float32", gate_gain=3.0,
                edit=edit, spelling="v4",
                notes="Qwen3-MoE: GQA 4 q heads / 2 kv heads, head_dim 16 explicit, q_norm/k_norm per head "
                      "before RoPE, NeoX rotate_half over the full head_dim, theta 1e6, scale 16^-0.5. "
                      "softmax top-2 with norm_topk_prob (no epsilon). mlp_only_layers [0] -> layer 0 dense "
                      "(intermediate_size 96), layers 1,2 MoE. v4 spelling: rope_theta + rope_scaling null, "
                      "'num_experts' (transformers 5 itself writes 'num_local_experts').")


def fx_qwen3_moe_yarn():
    cfg = Qwen3MoeConfig(**dict(COMMON, num_hidden_layers=4), **GQA, num_experts=8, num_experts_per_tok=2,
                         norm_topk_prob=False, decoder_sparse_step=2, mlp_only_layers=[], rms_norm_eps=1e-6,
                         max_position_embeddings=1024,
                         rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                          "original_max_position_embeddings": 256})
    return dict(cls=Qwen3MoeForCausalLM, cfg=cfg, family="qwen3_moe", dtype="bfloat16", gate_gain=3.0,
                edit=None, spelling="v5",
                notes="Qwen3-MoE with user-added YaRN (factor 4, orig 256, max 1024, no mscale keys -> "
                      "attention_factor = 0.1*ln(4)+1 multiplies cos and sin, i.e. q and k), 4 layers, "
                      "decoder_sparse_step 2 -> layers 1 and 3 MoE, 0 and 2 dense; norm_topk_prob false "
                      "(raw softmax probs of the top-2). config exactly as transformers 5 writes it "
                      "(rope_parameters, num_local_experts). Weights BF16.")


def fx_glm4_moe_qknorm():
    cfg = Glm4MoeConfig(**COMMON, **GQA, partial_rotary_factor=0.5, rope_theta=1000000.0,
                        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1,
                        n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                        use_qk_norm=True, attention_bias=True, rms_norm_eps=1e-5, max_position_embeddings=1024,
                        num_nextn_predict_layers=1, tie_word_embeddings=False)

    def edit(c):
        return to_v4_spelling(c, partial_rotary_top_level=True, add={"scoring_func": "sigmoid",
                                                                       "topk_method": "noaux_tc"})
    return dict(cls=Glm4MoeForCausalLM, cfg=cfg, family="glm4_moe", dtype="float32", gate_gain=3.0,
                bias_std=0.15, edit=edit, spelling="v4", mtp=dict(embed_and_head=False),
                notes="GLM-4.5 shape: GQA 4/2, head_dim 16, q/k/v biases (random, non-zero; o_proj no bias), "
                      "use_qk_norm (q_norm/k_norm before RoPE), partial_rotary_factor 0.5 -> NeoX RoPE on dims "
                      "0..7 of each head (pairs j, j+4), dims 8..15 pass through; scale 16^-0.5. Sigmoid noaux_tc "
                      "router with random fp32 e_score_correction_bias, n_group 1, top-2, norm_topk_prob, x2.5, "
                      "1 shared expert, layer 0 dense. MTP layer model.layers.3.* (num_nextn_predict_layers 1; "
                      "full MoE layer + enorm, hnorm, eh_proj, shared_head.norm) must be skipped. v4 spelling "
                      "(rope_theta and partial_rotary_factor top-level).")


def fx_glm4_moe_tied():
    cfg = Glm4MoeConfig(**COMMON, **GQA,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
                        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1,
                        n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=1.0,
                        use_qk_norm=False, attention_bias=True, rms_norm_eps=1e-5, max_position_embeddings=1024,
                        num_nextn_predict_layers=0, tie_word_embeddings=True)
    return dict(cls=Glm4MoeForCausalLM, cfg=cfg, family="glm4_moe", dtype="bfloat16", gate_gain=3.0,
                bias_std=0.15, edit=None, spelling="v5", shard="120KB", emb_std=0.5,
                notes="GLM-4.5-Air-like: use_qk_norm false, attention_bias true, partial_rotary_factor 0.5 "
                      "inside rope_parameters (theta 1e4), tie_word_embeddings true (no lm_head.weight: logits "
                      "use model.embed_tokens.weight), routed_scaling_factor 1.0. Saved sharded by save_pretrained "
                      "(model-0000k-of-0000n.safetensors + model.safetensors.index.json). Weights BF16, "
                      "e_score_correction_bias F32. config exactly as transformers 5 writes it.")


def fx_dsv3_fp8():
    cfg = DeepseekV3Config(**dict(COMMON, hidden_size=192, intermediate_size=160), **MLA, q_lora_rank=160,
                           n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, n_group=2,
                           topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5, rms_norm_eps=1e-6,
                           max_position_embeddings=163840, num_nextn_predict_layers=0, rope_theta=10000.0,
                           rope_scaling={"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})
    return dict(cls=DeepseekV3ForCausalLM, cfg=cfg, family="deepseek_v3", dtype="fp8", gate_gain=3.0,
                bias_std=0.15, edit=None, spelling="v4", fp8=True,
                notes="Official DeepSeek-V3 FP8 layout: hidden 192 (ragged 128x128 blocks), every attention / "
                      "dense-MLP / expert / shared-expert Linear weight is F8_E4M3 with a companion F32 "
                      "'<name>_scale_inv' [ceil(out/128), ceil(in/128)]; W = fp8 * scale_inv[i//128, j//128]. "
                      "Embeddings, lm_head, norms, router gate BF16; e_score_correction_bias F32. "
                      "quantization_config fp8/e4m3/[128,128]/dynamic. 3 shards + index.json written with "
                      "safetensors directly. Reference = HF model holding the dequantized weights in float32. "
                      "n_group 2, topk_group 1, top-2. YaRN factor 40 (orig 4096, max 163840), mscale 1/1. v4 spelling.")


FIXTURES = {
    "dsv2_lite": (fx_dsv2_lite, 1000),
    "dsv2_qlora_group": (fx_dsv2_qlora_group, 2000),
    "dsv3_group": (fx_dsv3_group, 3000),
    "dsv2_bias": (fx_dsv2_bias, 11000),
    "kimi_k2": (fx_kimi_k2, 4000),
    "kimi_k25": (fx_kimi_k25, 5000),
    "qwen3_moe": (fx_qwen3_moe, 6000),
    "qwen3_moe_yarn": (fx_qwen3_moe_yarn, 7000),
    "glm4_moe_qknorm": (fx_glm4_moe_qknorm, 8000),
    "glm4_moe_tied": (fx_glm4_moe_tied, 9000),
    "dsv3_fp8": (fx_dsv3_fp8, 10000),
}

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ST_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


# --------------------------------------------------------------------------------------
# writers for the special layouts
# --------------------------------------------------------------------------------------
def mtp_tensors(spec, cfg, gen, storage_dtype):
    """Tensors of an MTP ('nextn') layer at index L = num_hidden_layers, with HF names:
    a full MoE decoder layer (taken from a random (L+1)-layer model of the same class,
    saved by save_pretrained so the per-expert names are HF's) plus enorm, hnorm,
    eh_proj, shared_head.norm (and for DeepSeek-V3 also embed_tokens, shared_head.head)."""
    L = cfg.num_hidden_layers
    c2 = copy.deepcopy(cfg)
    c2.num_hidden_layers = L + 1
    m2 = spec["cls"](c2)
    reinit(m2, gen, gate_gain=spec["gate_gain"], bias_std=spec.get("bias_std", 0.15))
    with tempfile.TemporaryDirectory() as td:
        m2.save_pretrained(td)
        allt = load_all_tensors(td)
    pre = f"model.layers.{L}."
    out = {k: v for k, v in allt.items() if k.startswith(pre)}
    D, V = cfg.hidden_size, cfg.vocab_size
    out[pre + "enorm.weight"] = torch.rand(D, generator=gen) + 0.5
    out[pre + "hnorm.weight"] = torch.rand(D, generator=gen) + 0.5
    out[pre + "eh_proj.weight"] = torch.randn(D, 2 * D, generator=gen) / math.sqrt(2 * D)
    out[pre + "shared_head.norm.weight"] = torch.rand(D, generator=gen) + 0.5
    if spec["mtp"]["embed_and_head"]:
        out[pre + "embed_tokens.weight"] = torch.randn(V, D, generator=gen)
        out[pre + "shared_head.head.weight"] = torch.randn(V, D, generator=gen) / math.sqrt(D)
    for k in list(out):
        if not k.endswith("e_score_correction_bias"):
            out[k] = out[k].to(storage_dtype)
        else:
            out[k] = out[k].float()
    return out


def fp8_quantize(w):
    """Block 128x128 e4m3 quantization as in the DeepSeek-V3 checkpoints.
    Returns (q float8_e4m3fn [out,in], scale_inv f32 [ceil(out/128), ceil(in/128)], dequant f32)."""
    out_f, in_f = w.shape
    bo, bi = math.ceil(out_f / 128), math.ceil(in_f / 128)
    scale = torch.empty(bo, bi, dtype=torch.float32)
    q = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn)
    deq = torch.empty(out_f, in_f, dtype=torch.float32)
    for i in range(bo):
        for j in range(bi):
            blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].float()
            s = (blk.abs().max() / 448.0).float()
            scale[i, j] = s
            qb = (blk / s).to(torch.float8_e4m3fn)
            q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = qb
            deq[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = qb.float() * s
    return q, scale, deq


def is_fp8_linear(name):
    if not name.endswith(".weight"):
        return False
    if "embed_tokens" in name or name == "lm_head.weight" or "norm" in name or name.endswith("mlp.gate.weight"):
        return False
    return any(t in name for t in (".self_attn.", ".mlp."))


# --------------------------------------------------------------------------------------
# one fixture
# --------------------------------------------------------------------------------------
def build_once(name, spec, seed, workdir):
    cfg = spec["cfg"]
    dtype_name = spec["dtype"]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = spec["cls"](cfg).eval()
    reinit(model, gen, gate_gain=spec["gate_gain"], bias_std=spec.get("bias_std", 0.15),
           emb_std=spec.get("emb_std", 1.0))
    if spec.get("small_latent"):
        f = spec["small_latent"]
        C = cfg.kv_lora_rank
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_a_proj.weight.mul_(f)
                layer.self_attn.kv_a_proj_with_mqa.weight[:C].mul_(f)

    ids_gen = torch.Generator().manual_seed(seed + 12345)
    ids = torch.randint(0, cfg.vocab_size, (PROMPT_LEN + DECODE_LEN,), generator=ids_gen).tolist()
    prompt_ids, decode_ids = ids[:PROMPT_LEN], ids[PROMPT_LEN:]

    fp8_store = None
    if spec.get("fp8"):
        # dequantized FP8 linears; BF16 for embeddings, lm_head, norms, gate; fp32 bias
        fp8_store = {}
        with torch.no_grad():
            # expand fused experts into HF per-expert names first, via a save/load round trip
            with tempfile.TemporaryDirectory() as td:
                model.save_pretrained(td)
                hf_t = load_all_tensors(td)
            for k, v in hf_t.items():
                if k.endswith("e_score_correction_bias"):
                    fp8_store[k] = ("F32", v.float())
                elif is_fp8_linear(k):
                    q, s, deq = fp8_quantize(v.float())
                    fp8_store[k] = ("F8", q, s, deq)
                else:
                    fp8_store[k] = ("BF16", v.to(torch.bfloat16))
            # HF-layout f32 copy of exactly these values -> loaded model is the reference
            f32 = {}
            for k, e in fp8_store.items():
                f32[k] = e[3] if e[0] == "F8" else e[1].float()
        ref_dir = os.path.join(workdir, "hf_f32_copy")
        model.save_pretrained(ref_dir)
        rewrite_single_file(ref_dir, f32)
        model = hf_load(spec["cls"], ref_dir).eval()
    elif dtype_name != "float32":
        round_params(model, TORCH_DTYPES[dtype_name])

    # ---- reference from the in-memory model
    lp0, ld0, full0, captured = run_reference(model, prompt_ids, decode_ids, capture=True)
    gaps = routing_gaps(model, cfg, captured, spec["family"])

    # ---- write the checkpoint
    out_dir = os.path.join(workdir, name)
    os.makedirs(out_dir)
    if spec.get("fp8"):
        write_fp8_checkpoint(out_dir, model, fp8_store)
    else:
        sdt = TORCH_DTYPES[dtype_name]
        if sdt != torch.float32:
            mcopy = copy.deepcopy(model).to(sdt)
            for mod_name, mod in mcopy.named_modules():
                if hasattr(mod, "e_score_correction_bias"):
                    mod.e_score_correction_bias = mod.e_score_correction_bias.float()
        else:
            mcopy = model
        kw = {}
        if spec.get("shard"):
            kw["max_shard_size"] = spec["shard"]
        mcopy.save_pretrained(out_dir, **kw)
        del mcopy

    # ---- checks that HF loads what we wrote and reproduces the in-memory model exactly
    check_dir = out_dir
    if spec.get("edit"):
        c = read_json(os.path.join(out_dir, "config.json"))
        write_json(os.path.join(out_dir, "config.json"), spec["edit"](c))
    if spec.get("fp8") or spec.get("k25") or spec.get("hf_loads_edited") is False:
        check_dir = None  # HF cannot load the final layout directly; checked separately below
    if check_dir:
        m_loaded, info = hf_load(spec["cls"], check_dir, info=True)
        m_loaded.eval()
        assert not info["missing_keys"], info
        assert not info["unexpected_keys"], info
        assert_same_config(model.config, m_loaded.config)
        lp, ld, full, _ = run_reference(m_loaded, prompt_ids, decode_ids)
        assert_close("HF re-load of the written dir vs in-memory model", (lp, ld), (lp0, ld0))
    else:
        lp, ld, full = lp0, ld0, full0

    # MTP layer, appended after the check (then re-checked: HF must ignore it)
    if spec.get("mtp"):
        sdt = TORCH_DTYPES[dtype_name]
        extra = mtp_tensors(spec, cfg, torch.Generator().manual_seed(seed + 777), sdt)
        allt = load_all_tensors(out_dir)
        allt.update(extra)
        rewrite_single_file(out_dir, allt)
        m_loaded, info = hf_load(spec["cls"], out_dir, info=True)
        m_loaded.eval()
        assert not info["missing_keys"], info
        L = cfg.num_hidden_layers
        assert all(k.startswith(f"model.layers.{L}.") for k in info["unexpected_keys"]), info
        lp, ld, full, _ = run_reference(m_loaded, prompt_ids, decode_ids)
        assert_close("HF load with MTP layer vs in-memory model", (lp, ld), (lp0, ld0))

    if spec.get("hf_loads_edited") is False:
        # kimi_k2: HF-native check on the pre-edit layout (same tensors, only model_type differs)
        tmp = os.path.join(workdir, "pre_edit")
        shutil.copytree(out_dir, tmp)
        c = read_json(os.path.join(tmp, "config.json"))
        c["model_type"] = "deepseek_v3"
        write_json(os.path.join(tmp, "config.json"), c)
        m_loaded = hf_load(spec["cls"], tmp).eval()
        assert_same_config(model.config, m_loaded.config)
        lp, ld, full, _ = run_reference(m_loaded, prompt_ids, decode_ids)
        assert_close("HF load (model_type deepseek_v3) vs in-memory model", (lp, ld), (lp0, ld0))

    if spec.get("k25"):
        write_k25_layout(out_dir, cfg, torch.Generator().manual_seed(seed + 555))
        lp, ld, full = verify_k25(out_dir, spec, model, prompt_ids, decode_ids, lp0, ld0, workdir)
    if spec.get("fp8"):
        lp, ld, full = verify_fp8(out_dir, spec, model, prompt_ids, decode_ids, lp0, ld0, workdir)

    # ---- stored dtypes are what we claim
    hdr = st_header_dtypes(out_dir)
    if dtype_name in ST_DTYPES:
        want = ST_DTYPES[dtype_name]
        bad = {k: v for k, v in hdr.items() if v != want and not k.endswith("e_score_correction_bias")}
        assert not bad, bad

    stats = dict(
        logits_std_min=float(torch.cat([lp, ld]).std(-1).min()),
        logits_std_mean=float(torch.cat([lp, ld]).std(-1).mean()),
        decode_vs_full_max_abs=float((full[PROMPT_LEN:] - ld).abs().max()),
        prompt_vs_full_max_abs=float((full[:PROMPT_LEN] - lp).abs().max()),
        argmax_prompt=lp.argmax(-1).tolist(),
        argmax_decode=ld.argmax(-1).tolist(),
    )
    return dict(out_dir=out_dir, prompt_ids=prompt_ids, decode_ids=decode_ids, lp=lp, ld=ld, gaps=gaps,
                stats=stats, model=model)


def hf_load(cls, d, info=False):
    """from_pretrained in float32 with the plain (eager) attention and experts code paths."""
    return cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
                               output_loading_info=info)


def assert_close(what, got, want, rtol=1e-5):
    """Same weights, different memory layout (mmap alignment picks other BLAS kernels for M=1):
    equal up to float32 rounding."""
    for g, w in zip(got, want):
        d = float((g - w).abs().max())
        lim = rtol * float(w.abs().max())
        assert d <= lim, f"{what}: max |diff| {d:.3e} > {lim:.3e}"
    log(f"    ok: {what} (max |diff| {max(float((g - w).abs().max()) for g, w in zip(got, want)):.2e})")


def assert_same_config(a, b):
    for k in ("rope_parameters", "num_hidden_layers", "hidden_size", "vocab_size", "tie_word_embeddings"):
        assert getattr(a, k, None) == getattr(b, k, None), (k, getattr(a, k, None), getattr(b, k, None))


def write_fp8_checkpoint(out_dir, model, store):
    cfg = model.config
    # config.json: v4 spelling + quantization_config, as the official V3 checkpoints
    tmp = tempfile.mkdtemp()
    model.config.save_pretrained(tmp)
    c = read_json(os.path.join(tmp, "config.json"))
    shutil.rmtree(tmp)
    c = to_v4_spelling(c, drop=("head_dim", "qk_head_dim", "rope_interleave"),
                       add={"topk_method": "noaux_tc", "scoring_func": "sigmoid", "moe_layer_freq": 1})
    c["torch_dtype"] = "bfloat16"
    c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "weight_block_size": [128, 128]}
    write_json(os.path.join(out_dir, "config.json"), c)
    gc = model.generation_config.to_dict() if model.generation_config is not None else {}
    write_json(os.path.join(out_dir, "generation_config.json"),
               {k: v for k, v in gc.items() if k in ("bos_token_id", "eos_token_id", "transformers_version")})

    tensors = {}
    for k, e in store.items():
        if e[0] == "F8":
            tensors[k] = e[1]
            tensors[k + "_scale_inv"] = e[2]
        else:
            tensors[k] = e[1]
    # 3 shards: [embed + layer 0], [layer 1], [layer 2 + final norm + lm_head]
    def shard_of(k):
        if k.startswith("model.embed_tokens") or k.startswith("model.layers.0."):
            return 0
        if k.startswith("model.layers.1."):
            return 1
        return 2
    shards = [{}, {}, {}]
    for k in sorted(tensors):
        shards[shard_of(k)][k] = tensors[k].contiguous()
    n = len(shards)
    weight_map = {}
    total = 0
    for i, sh in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(sh, os.path.join(out_dir, fn), metadata={"format": "pt"})
        for k, v in sh.items():
            weight_map[k] = fn
            total += v.numel() * v.element_size()
    write_json(os.path.join(out_dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def verify_fp8(out_dir, spec, ref_model, prompt_ids, decode_ids, lp0, ld0, workdir):
    """Re-read the FP8 files, dequantize, load into HF, compare."""
    idx = read_json(os.path.join(out_dir, "model.safetensors.index.json"))
    allt = load_all_tensors(out_dir)
    assert set(idx["weight_map"]) == set(allt)
    assert idx["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in allt.values())
    deq = {}
    n_fp8 = 0
    for k, v in allt.items():
        if k.endswith("_scale_inv"):
            continue
        if v.dtype == torch.float8_e4m3fn:
            s = allt[k + "_scale_inv"]
            out_f, in_f = v.shape
            assert tuple(s.shape) == (math.ceil(out_f / 128), math.ceil(in_f / 128)) and s.dtype == torch.float32
            full_s = s.repeat_interleave(128, 0)[:out_f].repeat_interleave(128, 1)[:, :in_f]
            deq[k] = v.float() * full_s
            n_fp8 += 1
        else:
            deq[k] = v.float()
    tmp = os.path.join(workdir, "fp8_check")
    ref_model.save_pretrained(tmp)
    rewrite_single_file(tmp, deq)
    m = hf_load(spec["cls"], tmp).eval()
    lp, ld, full, _ = run_reference(m, prompt_ids, decode_ids)
    assert_close("dequantized FP8 files vs in-memory model", (lp, ld), (lp0, ld0))
    hdr = st_header_dtypes(out_dir)
    for k, dt in hdr.items():
        if k.endswith("_scale_inv") or k.endswith("e_score_correction_bias"):
            assert dt == "F32", (k, dt)
        elif is_fp8_linear(k):
            assert dt == "F8_E4M3" and k + "_scale_inv" in hdr, (k, dt)
        else:
            assert dt == "BF16", (k, dt)
    log(f"    fp8: {n_fp8} F8_E4M3 weights with _scale_inv; dequantized re-load reproduces the reference")
    return lp, ld, full


def write_k25_layout(out_dir, cfg, gen):
    """Turn a saved DeepseekV3 checkpoint into the Kimi-K2.5 layout (wrapper config, language_model.* names)."""
    c = read_json(os.path.join(out_dir, "config.json"))
    text = to_v4_spelling(c, drop=("head_dim", "qk_head_dim", "rope_interleave"),
                          add={"topk_method": "noaux_tc", "scoring_func": "sigmoid", "moe_layer_freq": 1})
    text["model_type"] = "kimi_k2"
    text["architectures"] = ["DeepseekV3ForCausalLM"]
    text.pop("transformers_version", None)
    wrapper = {
        "architectures": ["KimiK25ForConditionalGeneration"],
        "model_type": "kimi_k25",
        "bos_token_id": text.get("bos_token_id"),
        "eos_token_id": text.get("eos_token_id"),
        "pad_token_id": cfg.vocab_size - 1,
        "media_placeholder_token_id": cfg.vocab_size - 2,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "use_unified_vision_chunk": True,
        "text_config": text,
        "vision_config": {"model_type": "moonvit3d", "hidden_size": 16, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 32, "patch_size": 14,
                          "merge_kernel_size": [2, 2], "mm_hidden_size": 16, "text_hidden_size": cfg.hidden_size},
        "transformers_version": c.get("transformers_version"),
    }
    write_json(os.path.join(out_dir, "config.json"), wrapper)
    allt = load_all_tensors(out_dir)
    new = {}
    for k, v in allt.items():
        new["language_model." + k] = v
    # dummy multimodal projector (names as in vLLM's KimiK25 weights mapper); must be ignored
    D = cfg.hidden_size
    new["mm_projector.proj.0.weight"] = (torch.randn(16 * 4, 16 * 4, generator=gen) * 0.1).half()
    new["mm_projector.proj.0.bias"] = torch.zeros(16 * 4).half()
    new["mm_projector.proj.2.weight"] = (torch.randn(D, 16 * 4, generator=gen) * 0.1).half()
    new["mm_projector.proj.2.bias"] = torch.zeros(D).half()
    rewrite_single_file(out_dir, new)


def verify_k25(out_dir, spec, ref_model, prompt_ids, decode_ids, lp0, ld0, workdir):
    allt = load_all_tensors(out_dir)
    lm = {k[len("language_model."):]: v.float() for k, v in allt.items() if k.startswith("language_model.")}
    wrapper = read_json(os.path.join(out_dir, "config.json"))
    tmp = os.path.join(workdir, "k25_check")
    os.makedirs(tmp)
    text = dict(wrapper["text_config"])
    text["model_type"] = "deepseek_v3"
    write_json(os.path.join(tmp, "config.json"), text)
    rewrite_single_file(tmp, lm)
    m = hf_load(spec["cls"], tmp).eval()
    assert_same_config(ref_model.config, m.config)
    lp, ld, full, _ = run_reference(m, prompt_ids, decode_ids)
    assert_close("K2.5 layout (prefix stripped) vs in-memory model", (lp, ld), (lp0, ld0))
    # sensitivity of this fixture to the q_a/kv_a layernorm eps (HF: 1e-6 class default)
    m2 = copy.deepcopy(m)
    for layer in m2.model.layers:
        layer.self_attn.q_a_layernorm.variance_epsilon = m2.config.rms_norm_eps
        layer.self_attn.kv_a_layernorm.variance_epsilon = m2.config.rms_norm_eps
    lp2, _, _, _ = run_reference(m2, prompt_ids, decode_ids)
    rel = float(((lp2 - lp).abs().max() / lp.abs().max()))
    log(f"    k25: q_a/kv_a layernorm eps 1e-6 (HF) vs rms_norm_eps {m2.config.rms_norm_eps}: "
        f"max |dlogit| / max|logit| = {rel:.3e}")
    assert rel > 1e-3, "kimi_k25 does not discriminate the q_a/kv_a layernorm eps"
    spec["eps_sensitivity"] = rel
    return lp, ld, full


# --------------------------------------------------------------------------------------
def rope_info(model, cfg):
    rp = cfg.rope_parameters
    info = {"rope_type": rp.get("rope_type"), "rope_theta": rp.get("rope_theta")}
    rot = model.model.rotary_emb
    info["attention_scaling_cos_sin"] = float(rot.attention_scaling)
    info["inv_freq"] = [float(x) for x in rot.inv_freq]
    attn = model.model.layers[0].self_attn
    info["softmax_scale"] = float(attn.scaling)
    if rp.get("rope_type") == "yarn":
        d = cfg.qk_rope_head_dim if hasattr(cfg, "qk_rope_head_dim") else int(cfg.head_dim * rp.get("partial_rotary_factor", 1.0))
        low, high = yarn_low_high(d, rp["rope_theta"], rp["original_max_position_embeddings"],
                                  rp.get("beta_fast") or 32, rp.get("beta_slow") or 1)
        info.update(yarn_dim=d, yarn_low=low, yarn_high=high)
    return info


def make_fixture(name):
    fn, base_seed = FIXTURES[name]
    spec = fn()
    log(f"== {name}")
    last = None
    for attempt in range(MAX_SEED_TRIES):
        seed = base_seed + attempt
        workdir = tempfile.mkdtemp(prefix=f"fx_{name}_")
        try:
            r = build_once(name, spec, seed, workdir)
            g = r["gaps"]
            ok = g["min_rel_gap_expert"] > MIN_REL_GAP and (g["min_rel_gap_group"] is None or
                                                            g["min_rel_gap_group"] > MIN_REL_GAP)
            if spec["family"] in ("deepseek_v3", "glm4_moe"):
                ok = ok and g["bias_changed_selections"] > 0
            ok = ok and r["stats"]["logits_std_min"] > 1.0
            if not ok:
                log(f"   seed {seed}: rejected {g} std_min={r['stats']['logits_std_min']:.3f}")
                last = r
                continue
            finalize(name, spec, seed, r)
            return
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    raise SystemExit(f"{name}: no seed in {MAX_SEED_TRIES} tries passed the checks (last: {last and last['gaps']})")


def finalize(name, spec, seed, r):
    dst = os.path.join(OUT_ROOT, name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(r["out_dir"], dst)
    np.save(os.path.join(dst, "logits_prompt.npy"), r["lp"].numpy().astype(np.float32))
    np.save(os.path.join(dst, "logits_decode.npy"), r["ld"].numpy().astype(np.float32))
    model, cfg = r["model"], spec["cfg"]
    ri = rope_info(model, cfg)
    checks = dict(r["gaps"])
    checks.update({k: v for k, v in r["stats"].items() if not k.startswith("argmax")})
    if "eps_sensitivity" in spec:
        checks["layernorm_eps_sensitivity"] = spec["eps_sensitivity"]
    ref = {
        "prompt_ids": r["prompt_ids"],
        "decode_ids": r["decode_ids"],
        "dtype": spec["dtype"],
        "notes": spec["notes"] + f" seed {seed}; config spelling {spec['spelling']}.",
        "versions": VERSIONS,
        "seed": seed,
        "rope": ri,
        "checks": checks,
        "argmax_prompt": r["stats"]["argmax_prompt"],
        "argmax_decode": r["stats"]["argmax_decode"],
    }
    write_json(os.path.join(dst, "reference.json"), ref)
    size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
    g = r["gaps"]
    log(f"   seed {seed} OK  size {size / 1024:.0f} KiB  files {sorted(os.listdir(dst))}")
    log(f"   routing: {g['decisions']} decisions, min rel gap expert {g['min_rel_gap_expert']:.4g}, "
        f"group {g['min_rel_gap_group']}, bias-changed selections {g['bias_changed_selections']}")
    log(f"   logits std min {r['stats']['logits_std_min']:.3f} mean {r['stats']['logits_std_mean']:.3f}; "
        f"decode vs full-forward max|d| {r['stats']['decode_vs_full_max_abs']:.2e}")
    extra = {k: v for k, v in ri.items() if k != "inv_freq"}
    log(f"   rope: {extra}")


def main(argv):
    names = argv[1:] or list(FIXTURES)
    for n in names:
        if n not in FIXTURES:
            raise SystemExit(f"unknown fixture {n}; known: {', '.join(FIXTURES)}")
    os.makedirs(OUT_ROOT, exist_ok=True)
    for n in names:
        make_fixture(n)
    if not argv[1:]:
        write_index()


def write_index():
    lines = ["# Reference fixtures (generated by tools/make_fixtures.py; do not edit by hand)", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in VERSIONS.items()), "",
             "| fixture | dtype | notes |", "|---|---|---|"]
    for n in FIXTURES:
        ref = read_json(os.path.join(OUT_ROOT, n, "reference.json"))
        lines.append(f"| `{n}` | {ref['dtype']} | {ref['notes']} |")
    lines += ["", "Each directory: the checkpoint as written (config.json, *.safetensors, index), "
              "`reference.json` (prompt_ids, decode_ids, dtype, notes, versions, seed, rope, checks), "
              "`logits_prompt.npy` float32 [T,V] (full forward of prompt_ids, no cache), "
              "`logits_decode.npy` float32 [N,V] (row i = logits after feeding decode_ids[i] on top of the "
              "prompt's KV cache, one token at a time)."]
    with open(os.path.join(OUT_ROOT, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv)
