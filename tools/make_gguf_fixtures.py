#!/usr/bin/env python3
"""GGUF versions of some HF fixtures of tests/fixtures (issue 6, item 5), for krasis' GGUF loader.

Each GGUF is written with the `gguf` package (pinned in tools/requirements-gguf.txt) using exactly the
tensor names, shapes, tensor types and metadata keys that llama.cpp's convert_hf_to_gguf.py writes for the
architecture (read from third_party/llama_cpp_python-*/vendor/llama.cpp/conversion/{base,deepseek,qwen,
glm}.py; not imported): 1-D tensors, *_norm.weight and ffn_gate_inp stay F32, 2-D/3-D weights take the
variant's type, experts are stacked into ffn_{gate,up,down}_exps {cols, rows, E}, deepseek2's kv_b_proj is
either kept (legacy attn_kv_b) or split into attn_k_b (transposed per head) / attn_v_b as current converters
do, deepseek2 drops MTP layers while glm4moe keeps them as blk.L (+ blk.L.nextn.*). A tiny byte-level BPE
vocabulary (300 tokens) and a chat template are added so the files are complete models.

Reference logits: when the GGUF holds exactly the fixture's values (F32 of an F32 fixture, BF16 of a BF16
one) the fixture's transformers logits are copied. Otherwise (F16 of F32 weights, Q8_0 / Q4_0 experts) the
script runs transformers on a checkpoint holding exactly the values the GGUF dequantizes to (rounded with
gguf.quants, verified against the written file read back by gguf.GGUFReader), so krasis is held to the same
float32 tolerance as test_fixtures; the fixture's original logits stay the reference for the loose check.

Run: python3 tools/make_gguf_fixtures.py [NAME ...]    (CPU, no network; writes tests/fixtures/gguf/)
     python3 tools/make_gguf_fixtures.py --fuzz-seeds  (tiny random models: fuzz/corpus/fuzz_gguf_model/)
"""

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

import gguf
from gguf import GGMLQuantizationType as QT

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402  (hf_load, run_reference, load_all_tensors)

ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")

# name: (source fixture, arch, weight type, expert type, kv_b style, shards, HF class, notes)
VARIANTS = {
    "dsv2_lite_f16": ("dsv2_lite", "deepseek2", QT.F16, QT.F16, "legacy", 1, "DeepseekV2ForCausalLM",
                      "legacy deepseek2 GGUF: unsplit attn_kv_b, key_length 24 / value_length 16, head_count_kv = "
                      "heads, no *_mla keys, no expert_gating_func (softmax); YaRN log multiplier 0.0707; F16 weights"),
    "kimi_k2_bf16": ("kimi_k2", "deepseek2", QT.BF16, QT.BF16, "split", 1, None,
                     "current deepseek2 GGUF: attn_k_b {16, 32, 4} / attn_v_b {32, 16, 4}, MQA view keys (head_count_kv "
                     "1, key_length 40, value_length 32, key_length_mla 24, value_length_mla 16), sigmoid gating, YaRN "
                     "factor 32 with beta_fast = beta_slow = 1 (llama.cpp ignores the beta keys; krasis reads them); "
                     "BF16 = the fixture's values"),
    "qwen3_moe_f32": ("qwen3_moe", "qwen3moe", QT.F32, QT.F32, None, 1, "Qwen3MoeForCausalLM",
                      "qwen3moe F32 (layer 0 dense: ffn_gate/up/down; llama.cpp itself has no dense qwen3moe layers)"),
    "qwen3_moe_q8_0": ("qwen3_moe", "qwen3moe", QT.F16, QT.Q8_0, None, 1, "Qwen3MoeForCausalLM",
                       "qwen3moe with ffn_*_exps in Q8_0 (gguf.quants), other weights F16, norms/router F32"),
    "qwen3_moe_q4_0": ("qwen3_moe", "qwen3moe", QT.F16, QT.Q4_0, None, 1, "Qwen3MoeForCausalLM",
                       "qwen3moe with ffn_*_exps in Q4_0 (gguf.quants), other weights F16, norms/router F32"),
    "glm4_moe_f16": ("glm4_moe_qknorm", "glm4moe", QT.F16, QT.F16, "fused", 2, "Glm4MoeForCausalLM",
                     "glm4moe F16 in 2 shards (gguf split: -00001-of-00002.gguf), MTP layer kept as blk.3 + "
                     "blk.3.nextn.* (block_count 4, nextn_predict_layers 1) and skipped by the loader; written as "
                     "the converter's --fuse-gate-up-exps --fuse-qkv do: ffn_gate_up_exps {D, 2 I_e, E} (gate rows "
                     "first) and attn_qkv.weight / .bias (q, k, v rows)"),
}


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def add_vocab(w, vocab_size):
    """300 tokens: the 256 byte symbols, 41 merges, 3 control tokens (ids 297-299)."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    pairs = [("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("i", "n"), ("e", "r"), ("o", "n"), ("Ġt", "he"), ("r", "e"),
             ("a", "t"), ("o", "r"), ("e", "n"), ("Ġ", "s"), ("Ġ", "w"), ("Ġ", "o"), ("i", "s"), ("a", "n"),
             ("Ġ", "c"), ("e", "s"), ("i", "t"), ("Ġ", "b"), ("l", "l"), ("Ġ", "f"), ("a", "r"), ("o", "u"),
             ("Ġ", "m"), ("Ġ", "p"), ("Ġ", "h"), ("e", "d"), ("Ġ", "d"), ("in", "g"), ("Ġ", "i"), ("l", "e"),
             ("Ġo", "f"), ("n", "d"), ("Ġa", "nd"), ("Ġ", "l"), ("Ġ", "n"), ("Ġw", "it"), ("a", "l"), ("s", "t"),
             ("Ġ", "T")]
    merges = []
    for a, b in pairs:
        assert a in tokens and b in tokens, (a, b)
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    tokens += ["<|bos|>", "<|eos|>", "<|pad|>"]
    assert len(tokens) == vocab_size == 300
    types = [gguf.TokenType.NORMAL] * 297 + [gguf.TokenType.CONTROL] * 3
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(297)
    w.add_eos_token_id(298)
    w.add_pad_token_id(299)
    w.add_add_bos_token(True)
    w.add_chat_template("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}assistant:{% endif %}")


def rope_params(c):
    return c.get("rope_parameters") or c.get("rope_scaling") or {}


def add_common(w, c, arch, block_count):
    """TextModel.set_gguf_parameters of the converter."""
    w.add_block_count(block_count)
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(1 if arch == "deepseek2" and c["__split__"] else c.get("num_key_value_heads", c["num_attention_heads"]))
    rp = rope_params(c)
    if (rp.get("rope_type") or rp.get("type")) == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rp["factor"])
        w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
        if rp.get("beta_fast") is not None:
            w.add_rope_scaling_yarn_beta_fast(rp["beta_fast"])
        if rp.get("beta_slow") is not None:
            w.add_rope_scaling_yarn_beta_slow(rp["beta_slow"])
    w.add_rope_freq_base(c.get("rope_theta", rp.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
    n_exp = c.get("num_experts", c.get("n_routed_experts"))
    w.add_expert_count(n_exp)
    w.add_expert_used_count(c["num_experts_per_tok"])
    if arch != "deepseek2" or c["__split__"]:  # old V2 GGUFs predate these keys
        if c.get("n_group") is not None:
            w.add_expert_group_count(c["n_group"])
        if c.get("topk_group") is not None:
            w.add_expert_group_used_count(c["topk_group"])
        if c.get("scoring_func") is not None:
            w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if c["scoring_func"] == "sigmoid"
                                     else gguf.ExpertGatingFuncType.SOFTMAX)
    if c.get("head_dim") is not None and arch != "deepseek2":
        w.add_key_length(c["head_dim"])
        w.add_value_length(c["head_dim"])


def add_arch(w, c, arch):
    if arch == "deepseek2":
        w.add_leading_dense_block_count(c.get("first_k_dense_replace", 0))
        w.add_vocab_size(c["vocab_size"])
        if c.get("q_lora_rank") is not None:
            w.add_q_lora_rank(c["q_lora_rank"])
        C, Dr, Dn, Dv = c["kv_lora_rank"], c["qk_rope_head_dim"], c["qk_nope_head_dim"], c["v_head_dim"]
        w.add_kv_lora_rank(C)
        if c["__split__"]:
            w.add_key_length(C + Dr)
            w.add_value_length(C)
            w.add_key_length_mla(Dn + Dr)
            w.add_value_length_mla(Dv)
        else:
            w.add_key_length(Dn + Dr)
            w.add_value_length(Dv)
        w.add_expert_feed_forward_length(c["moe_intermediate_size"])
        w.add_expert_shared_count(c.get("n_shared_experts", 0))
        if c.get("routed_scaling_factor") is not None:
            w.add_expert_weights_scale(c["routed_scaling_factor"])
        if c.get("norm_topk_prob"):
            w.add_expert_weights_norm(True)
        w.add_rope_dimension_count(Dr)
        if rope_params(c).get("mscale_all_dim") is not None:
            w.add_rope_scaling_yarn_log_mul(0.1 * rope_params(c)["mscale_all_dim"])
    elif arch == "qwen3moe":
        w.add_expert_feed_forward_length(c["moe_intermediate_size"])
    elif arch == "glm4moe":
        hd = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
        w.add_rope_dimension_count(int(hd * c.get("partial_rotary_factor", 0.5)))
        w.add_expert_feed_forward_length(c["moe_intermediate_size"])
        w.add_expert_shared_count(c.get("n_shared_experts", 1))
        w.add_leading_dense_block_count(c.get("first_k_dense_replace", 1))
        if c.get("scoring_func") is None:  # else already written by the common part (same value)
            w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        if c.get("routed_scaling_factor") is not None:
            w.add_expert_weights_scale(c["routed_scaling_factor"])
        if c.get("norm_topk_prob") is not None:
            w.add_expert_weights_norm(c["norm_topk_prob"])
        if c.get("num_nextn_predict_layers"):
            w.add_nextn_predict_layers(c["num_nextn_predict_layers"])


ATTN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output", "q_norm": "attn_q_norm",
        "k_norm": "attn_k_norm", "q_a_proj": "attn_q_a", "q_a_layernorm": "attn_q_a_norm", "q_b_proj": "attn_q_b",
        "kv_a_proj_with_mqa": "attn_kv_a_mqa", "kv_a_layernorm": "attn_kv_a_norm", "kv_b_proj": "attn_kv_b"}
NEXTN = {"eh_proj": "eh_proj", "enorm": "enorm", "hnorm": "hnorm", "embed_tokens": "embed_tokens",
         "shared_head.norm": "shared_head_norm", "shared_head.head": "shared_head_head"}


def gguf_name(n, arch):
    """HF name -> (GGUF name, expert index or None); None when the converter drops it."""
    if n == "model.embed_tokens.weight":
        return "token_embd.weight", None
    if n == "model.norm.weight":
        return "output_norm.weight", None
    if n == "lm_head.weight":
        return "output.weight", None
    p = n.split(".")
    assert p[0] == "model" and p[1] == "layers", n
    l, rest = int(p[2]), ".".join(p[3:])
    b = f"blk.{l}."
    for k, v in NEXTN.items():
        if rest == k + ".weight":
            return b + "nextn." + v + ".weight", None
    if rest == "input_layernorm.weight":
        return b + "attn_norm.weight", None
    if rest == "post_attention_layernorm.weight":
        return b + ("post_attention_norm.weight" if arch == "glm4moe" else "ffn_norm.weight"), None
    if rest.startswith("self_attn."):
        proj, suf = p[4], ".".join(p[5:])
        return b + ATTN[proj] + "." + suf, None
    if rest == "mlp.gate.weight":
        return b + "ffn_gate_inp.weight", None
    if rest == "mlp.gate.e_score_correction_bias":
        return b + "exp_probs_b.bias", None
    if rest.startswith("mlp.experts."):
        return b + f"ffn_{p[6].split('_')[0]}_exps.weight", int(p[5])
    if rest.startswith("mlp.shared_experts."):
        return b + f"ffn_{p[5].split('_')[0]}_shexp.weight", None
    if rest.startswith("mlp."):
        return b + f"ffn_{p[4].split('_')[0]}.weight", None
    raise KeyError(n)


def tensor_type(gname, ndim, wtype, etype):
    if ndim <= 1 or gname.endswith("_norm.weight") or ".ffn_gate_inp." in gname or not gname.endswith(".weight"):
        return QT.F32
    if "_exps." in gname:
        return etype
    return wtype


def roundtrip(x, qt):
    """the values a tensor of type qt holds: gguf.quants rounding along the contiguous (last) axis"""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if qt == QT.F32:
        return x
    return gguf.quants.dequantize(gguf.quants.quantize(x, qt), qt).reshape(x.shape).astype(np.float32)


def encode(x, qt):
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x if qt == QT.F32 else gguf.quants.quantize(x, qt)


def write_gguf(base, name, arch, c, out, wtype, etype, shards, block_count, vocab=True):
    n_tensors = len(out)
    w = gguf.GGUFWriter(base, arch, split_max_tensors=(n_tensors + shards - 1) // shards if shards > 1 else 0)
    w.add_name(name)
    w.add_file_type({QT.F32: 0, QT.F16: 1, QT.BF16: 32}[wtype] if etype == wtype else {QT.Q8_0: 7, QT.Q4_0: 2}[etype])
    add_common(w, c, arch, block_count)
    add_arch(w, c, arch)
    if vocab:
        add_vocab(w, c["vocab_size"])
    for g in sorted(out, key=lambda s: (s.split(".")[0] != "token_embd", s)):
        x, qt = out[g]
        data = encode(x, qt)
        w.add_tensor(g, data, raw_dtype=qt if qt != QT.F32 else None)  # byte shapes -> ggml shape from the type
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def fuzz_seeds():
    """Tiny random models (< 64 KiB, the fuzzer's max_len) for fuzz/fuzz_gguf_model: one per architecture,
    all dims multiples of 32 so Q4_0 / Q8_0 experts fit; no vocabulary (the fuzzer loads models only)."""
    out_dir = os.path.join(ROOT, "fuzz", "corpus", "fuzz_gguf_model")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    D, V, I, E = 32, 32, 32, 4
    specs = {
        "qwen3moe": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_experts=E),
        "glm4moe": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=16, n_routed_experts=E, n_shared_experts=1,
                        first_k_dense_replace=1, partial_rotary_factor=0.5, scoring_func="sigmoid",
                        routed_scaling_factor=2.5, norm_topk_prob=True, num_nextn_predict_layers=0),
        "deepseek2": dict(num_attention_heads=2, n_routed_experts=E, n_shared_experts=1, first_k_dense_replace=1,
                          q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                          scoring_func="sigmoid", n_group=1, topk_group=1, norm_topk_prob=True,
                          routed_scaling_factor=2.5, rope_scaling={"type": "yarn", "factor": 4.0, "beta_fast": 32,
                          "beta_slow": 1, "mscale_all_dim": 1.0, "original_max_position_embeddings": 64}),
    }
    for arch, extra in specs.items():
        c = dict(hidden_size=D, vocab_size=V, intermediate_size=I, moe_intermediate_size=I, num_hidden_layers=2,
                 num_experts_per_tok=2, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0, **extra)
        c["__split__"] = True
        H = c["num_attention_heads"]
        r = lambda *sh: rng.standard_normal(sh).astype(np.float32) * 0.1  # noqa: E731
        hf = {"model.embed_tokens.weight": r(V, D), "model.norm.weight": r(D) + 1, "lm_head.weight": r(V, D)}
        for l in range(2):
            p = f"model.layers.{l}."
            hf[p + "input_layernorm.weight"] = r(D) + 1
            hf[p + "post_attention_layernorm.weight"] = r(D) + 1
            if arch == "deepseek2":
                C, Dn, Dr, Dv = 32, 16, 16, 16
                hf[p + "self_attn.q_proj.weight"] = r(H * (Dn + Dr), D)
                hf[p + "self_attn.kv_a_proj_with_mqa.weight"] = r(C + Dr, D)
                hf[p + "self_attn.kv_a_layernorm.weight"] = r(C) + 1
                hf[p + "self_attn.kv_b_proj.weight"] = r(H * (Dn + Dv), C)
                hf[p + "self_attn.o_proj.weight"] = r(D, H * Dv)
            else:
                hd, kvh = 16, c["num_key_value_heads"]
                for n_, rows in (("q", H * hd), ("k", kvh * hd), ("v", kvh * hd)):
                    hf[p + f"self_attn.{n_}_proj.weight"] = r(rows, D)
                    if arch == "glm4moe":
                        hf[p + f"self_attn.{n_}_proj.bias"] = r(rows)
                hf[p + "self_attn.o_proj.weight"] = r(D, H * hd)
                if arch == "qwen3moe":
                    hf[p + "self_attn.q_norm.weight"] = r(hd) + 1
                    hf[p + "self_attn.k_norm.weight"] = r(hd) + 1
            if l == 0 and arch != "qwen3moe":
                for n_, sh in (("gate", (I, D)), ("up", (I, D)), ("down", (D, I))):
                    hf[p + f"mlp.{n_}_proj.weight"] = r(*sh)
                continue
            hf[p + "mlp.gate.weight"] = r(E, D)
            if arch != "qwen3moe":
                hf[p + "mlp.gate.e_score_correction_bias"] = r(E)
                for n_, sh in (("gate", (I, D)), ("up", (I, D)), ("down", (D, I))):
                    hf[p + f"mlp.shared_experts.{n_}_proj.weight"] = r(*sh)
            for e in range(E):
                for n_, sh in (("gate", (I, D)), ("up", (I, D)), ("down", (D, I))):
                    hf[p + f"mlp.experts.{e}.{n_}_proj.weight"] = r(*sh)
        if arch == "qwen3moe":
            c["mlp_only_layers"] = []
        for etype in (QT.Q4_0, QT.Q8_0):
            out, experts = {}, {}
            for n, x in hf.items():
                g, e = gguf_name(n, arch)
                qt = tensor_type(g, x.ndim, QT.F16, etype)
                if e is not None:
                    experts.setdefault(g, {})[e] = (x, qt)
                elif g.endswith("attn_kv_b.weight"):
                    kv = x.reshape(H, 32, x.shape[-1])
                    out[g.replace("attn_kv_b", "attn_k_b")] = (np.ascontiguousarray(kv[:, :16, :].transpose(0, 2, 1)), qt)
                    out[g.replace("attn_kv_b", "attn_v_b")] = (np.ascontiguousarray(kv[:, 16:, :]), qt)
                else:
                    out[g] = (x, qt)
            for g, d in experts.items():
                out[g] = (np.stack([d[e][0] for e in range(len(d))]), d[0][1])
            path = os.path.join(out_dir, f"{arch}-{etype.name}.gguf")
            write_gguf(path, f"seed-{arch}", arch, c, out, QT.F16, etype, 1, 2, vocab=False)
            print(f"{path}: {os.path.getsize(path)} bytes")


def build(name):
    src, arch, wtype, etype, kvb, shards, hf_cls, notes = VARIANTS[name]
    sdir = os.path.join(SRC, src)
    c = json.load(open(os.path.join(sdir, "config.json")))
    c["__split__"] = kvb == "split"
    L = c["num_hidden_layers"]
    nextn = c.get("num_nextn_predict_layers", 0) or 0
    keep_mtp = arch == "glm4moe"
    hf = {k: v.float().numpy() for k, v in mf.load_all_tensors(sdir).items()}
    if not keep_mtp:  # deepseek2's converter drops layers >= num_hidden_layers
        hf = {k: v for k, v in hf.items() if not (k.startswith("model.layers.") and int(k.split(".")[2]) >= L)}
    block_count = L + (nextn if keep_mtp else 0)

    # what the GGUF holds, in HF names (for the reference) and in GGUF names (to write)
    rounded, out, experts = {}, {}, {}
    for n, x in hf.items():
        g, e = gguf_name(n, arch)
        qt = tensor_type(g, x.ndim, wtype, etype)
        rounded[n] = roundtrip(x, qt)
        if e is not None:
            experts.setdefault(g, {})[e] = (x, qt)
        elif g.endswith("attn_kv_b.weight") and kvb == "split":
            H, Dn, Dv = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"]
            kv = x.reshape(H, Dn + Dv, x.shape[-1])
            kb = np.ascontiguousarray(kv[:, :Dn, :].transpose(0, 2, 1))  # [H, C, Dn]
            vb = np.ascontiguousarray(kv[:, Dn:, :])                     # [H, Dv, C]
            out[g.replace("attn_kv_b", "attn_k_b")] = (kb, qt)
            out[g.replace("attn_kv_b", "attn_v_b")] = (vb, qt)
        else:
            out[g] = (x, qt)
    for g, d in experts.items():
        out[g] = (np.stack([d[e][0] for e in range(len(d))]), d[0][1])
    if kvb == "fused":  # base.py modify_tensors with fuse_gate_up_exps / fuse_qkv
        for b in range(block_count):
            p = f"blk.{b}."
            if p + "ffn_gate_exps.weight" in out:
                (g, qt), (u, _) = out.pop(p + "ffn_gate_exps.weight"), out.pop(p + "ffn_up_exps.weight")
                out[p + "ffn_gate_up_exps.weight"] = (np.concatenate([g, u], axis=1), qt)
            for suf in ("weight", "bias"):
                if p + "attn_q." + suf in out:
                    parts = [out.pop(p + f"attn_{x}." + suf) for x in "qkv"]
                    out[p + "attn_qkv." + suf] = (np.concatenate([x for x, _ in parts], axis=0), parts[0][1])

    os.makedirs(os.path.join(OUT, name), exist_ok=True)
    base = os.path.join(OUT, name, f"{name}.gguf")
    for f in os.listdir(os.path.join(OUT, name)):
        if f.endswith(".gguf"):
            os.remove(os.path.join(OUT, name, f))
    write_gguf(base, name, arch, c, out, wtype, etype, shards, block_count)
    files = sorted(f for f in os.listdir(os.path.join(OUT, name)) if f.endswith(".gguf"))
    assert len(files) == shards, files

    # read back: every tensor dequantizes to the rounded values
    back = {}
    for f in files:
        r = gguf.GGUFReader(os.path.join(OUT, name, f))
        for t in r.tensors:
            v = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
            back[t.name] = np.asarray(v, dtype=np.float32)
    assert set(back) == set(out), set(back) ^ set(out)
    for g, (x, qt) in out.items():
        assert np.array_equal(back[g], roundtrip(x, qt)), g

    ref = json.load(open(os.path.join(sdir, "reference.json")))
    exact = all(np.array_equal(rounded[n], hf[n]) for n in hf)
    if exact:
        lp = np.load(os.path.join(sdir, "logits_prompt.npy"))
        ld = np.load(os.path.join(sdir, "logits_decode.npy"))
        how = "copied from the HF fixture (the GGUF holds exactly its weight values)"
    else:
        lp, ld = hf_reference(sdir, hf_cls, rounded, ref)
        how = "transformers on a checkpoint holding exactly the GGUF's dequantized values"
    np.save(os.path.join(OUT, name, "logits_prompt.npy"), lp.astype(np.float32))
    np.save(os.path.join(OUT, name, "logits_decode.npy"), ld.astype(np.float32))
    hf_lp = np.load(os.path.join(sdir, "logits_prompt.npy"))
    gap = float(np.abs(lp - hf_lp).max() / np.abs(hf_lp).max())
    meta = {"source_fixture": src, "arch": arch, "gguf": files, "weight_type": wtype.name, "expert_type": etype.name,
            "prompt_ids": ref["prompt_ids"], "decode_ids": ref["decode_ids"], "reference": how,
            "rel_gap_to_hf_fixture_logits": gap, "notes": notes,
            "versions": {"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
                         "numpy": np.__version__, "torch": torch.__version__}}
    json.dump(meta, open(os.path.join(OUT, name, "reference.json"), "w"), indent=2)
    size = sum(os.path.getsize(os.path.join(OUT, name, f)) for f in files)
    print(f"{name}: {files} {size / 1024:.0f} KiB, reference {'copied' if exact else 'recomputed'}, "
          f"gap to HF fixture logits {gap:.2e}")


def hf_reference(sdir, hf_cls, rounded, ref):
    import transformers
    from safetensors.torch import save_file
    cls = getattr(transformers, hf_cls)
    with tempfile.TemporaryDirectory() as d:
        for f in ("config.json", "generation_config.json"):
            if os.path.exists(os.path.join(sdir, f)):
                shutil.copy(os.path.join(sdir, f), d)
        save_file({k: torch.from_numpy(v).contiguous() for k, v in rounded.items()}, os.path.join(d, "model.safetensors"),
                  metadata={"format": "pt"})
        model = mf.hf_load(cls, d).eval()
        lp, ld, _, _ = mf.run_reference(model, ref["prompt_ids"], ref["decode_ids"])
    return lp.numpy(), ld.numpy()


def write_readme():
    lines = ["# GGUF fixtures (generated by tools/make_gguf_fixtures.py; do not edit by hand)", "",
             f"Versions: gguf {getattr(gguf, '__version__', '0.19.0')} (tools/requirements-gguf.txt), numpy {np.__version__}, "
             f"torch {torch.__version__}; the HF side as tests/fixtures/README.md.", "",
             "GGUF versions of some HF fixtures of tests/fixtures, written with the `gguf` package using the tensor "
             "names, tensor types and metadata keys of llama.cpp's convert_hf_to_gguf.py (1-D tensors, *_norm and "
             "ffn_gate_inp F32; experts stacked into ffn_*_exps; deepseek2 MTP layers dropped, glm4moe's kept).", "",
             "| fixture | from | arch | weights / experts | reference | rel gap to the HF fixture | notes |",
             "|---|---|---|---|---|---|---|"]
    for n in VARIANTS:
        r = json.load(open(os.path.join(OUT, n, "reference.json")))
        lines.append(f"| `{n}` | `{r['source_fixture']}` | {r['arch']} | {r['weight_type']} / {r['expert_type']} | "
                     f"{'copied' if r['reference'].startswith('copied') else 'recomputed'} | "
                     f"{r['rel_gap_to_hf_fixture_logits']:.2e} | {r['notes']} |")
    lines += ["", "Each directory: the GGUF file(s), `reference.json` (prompt_ids, decode_ids, how the reference was "
              "made, versions), `logits_prompt.npy` float32 [T,V] and `logits_decode.npy` float32 [N,V] as in "
              "tests/fixtures. `copied`: the GGUF holds exactly the fixture's weights, so its HF logits are the "
              "reference; `recomputed`: transformers run on a checkpoint holding exactly the values the GGUF "
              "dequantizes to (gguf.quants rounding, checked against the file read back with gguf.GGUFReader). "
              "The gap column is how far that reference is from the fixture's original logits (the rounding's own "
              "effect): test_gguf_model holds krasis to 1e-4 of the former and a per-type bound of the latter."]
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    if argv[1:] == ["--fuzz-seeds"]:
        fuzz_seeds()
        return
    names = argv[1:] or list(VARIANTS)
    torch.manual_seed(0)
    for n in names:
        build(n)
    write_readme()


if __name__ == "__main__":
    main(sys.argv)
