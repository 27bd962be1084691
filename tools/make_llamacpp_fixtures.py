#!/usr/bin/env python3
"""GGUF fixtures made by llama.cpp's own converter and quantizer, with llama.cpp's logits (issue 6, item 5).

For every fixture this script
  1. builds a tiny random Hugging Face model (transformers, float32; weights rounded to float16 values so
     that the F16 GGUF holds exactly the reference weights) with a tiny byte-level BPE tokenizer,
     using the initialisation and routing checks of tools/make_fixtures.py;
  2. records the HF reference logits for a fixed token sequence (full forward, no cache, float32);
  3. converts it with llama.cpp's convert_hf_to_gguf.py to F16 (and to a scratch F32 file), and
     quantizes the F32 file with llama.cpp's llama-quantize to Q8_0, Q4_0 and Q4_K_M;
  4. runs llama.cpp (tools/llamacpp_logits.c, built here against the libllama of the sdist) on every
     GGUF for the same tokens and records its logits and how they compare with HF.

Output: tests/fixtures_gguf/<name>/
    <name>-<TYPE>.gguf            the GGUF files (F16, Q8_0, Q4_0, Q4_K_M; which ones: reference.json)
    hf_logits.npy                 float32 [T, V], transformers, weights as held by the F16 file
    llamacpp_<TYPE>.npy           float32 [T, V], llama.cpp on <name>-<TYPE>.gguf, one batch of T tokens
    hf_dequant_<TYPE>.npy         float32 [T, V], transformers with the weights as <name>-<TYPE>.gguf holds them
                                  (gguf-py's dequantization mapped back to HF names): exact math on the file,
                                  for the quantized types (for F16 it equals hf_logits.npy, asserted)
    reference.json                tokens, settings, versions, tensor types per file, llama.cpp-vs-HF stats,
                                  known llama.cpp departures from HF for this fixture
and tests/fixtures_gguf/README.md (provenance, commands, the departures, a table of the comparisons).

llama.cpp comes from the llama-cpp-python 0.3.36 sdist unpacked at third_party/llama_cpp_python-0.3.36/
(vendor/llama.cpp = ggml-org/llama.cpp@0c1e57098), built CPU-only into third_party/llama.cpp-build:

    cmake -S third_party/llama_cpp_python-0.3.36/vendor/llama.cpp -B third_party/llama.cpp-build \\
          -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \\
          -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \\
          -DBUILD_SHARED_LIBS=ON
    cmake --build third_party/llama.cpp-build -j2 --target llama-bench llama-quantize llama-perplexity

The converter runs as a library inside this script (a subprocess per conversion) with two patches, both
needed only because our tokenizers and layer counts are tiny and neither changes a tensor:
  * get_vocab_base_pre: the converter identifies the pre-tokenizer by hashing the token ids of a test
    string; our tiny BPE has an unknown hash, so the check returns the family's real name
    ("deepseek-llm", "deepseek-v3", "qwen2", "glm4") instead of raising.
  * DeepSeek without q_lora_rank ("lite", V2-Lite): llama.cpp decides "lite" from the layer count
    (26/27) and otherwise requires deepseek2.attention.q_lora_rank, so for our 2-layer lite fixtures the
    converter also writes q_lora_rank = 0 (what llama.cpp's loader then uses: no q_lora, attn_q).
Everything else is the converter's and llama-quantize's own output.

Run:  python3 tools/make_llamacpp_fixtures.py            (all fixtures)
      python3 tools/make_llamacpp_fixtures.py NAME ...   (some)
Needs tools/requirements-llamacpp.txt (pinned); CPU only; no network.
"""

import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
SDIST = os.path.join(ROOT, "third_party", "llama_cpp_python-0.3.36")
LLAMA_DIR = os.path.join(SDIST, "vendor", "llama.cpp")
BUILD = os.environ.get("LLAMACPP_BUILD", os.path.join(ROOT, "third_party", "llama.cpp-build"))
OUT_ROOT = os.path.join(ROOT, "tests", "fixtures_gguf")
LLAMACPP_COMMIT = "0c1e57098"  # CHANGELOG.md of llama-cpp-python 0.3.36


# --------------------------------------------------------------------------------------
# converter, library mode (runs in a child process: python3 this_script --convert ...)
# --------------------------------------------------------------------------------------
def convert_child(argv):
    hf_dir, outfile, outtype, tokpre, q_lora_zero = argv
    sys.path.insert(0, LLAMA_DIR)
    import convert_hf_to_gguf as conv  # noqa: E402  (llama.cpp's converter, puts its gguf-py first)
    from conversion import base, deepseek  # noqa: E402

    # patch 1: the pre-tokenizer hash check (see the module docstring)
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: tokpre
    if q_lora_zero == "1":
        # patch 2: a 2-layer model without q_lora must say q_lora_rank = 0 for llama.cpp to load it
        orig = deepseek.DeepseekV2Model.set_gguf_parameters

        def set_gguf_parameters(self):
            orig(self)
            if self.hparams.get("q_lora_rank") is None:
                self.gguf_writer.add_q_lora_rank(0)
        deepseek.DeepseekV2Model.set_gguf_parameters = set_gguf_parameters
    sys.argv = ["convert_hf_to_gguf.py", hf_dir, "--outfile", outfile, "--outtype", outtype]
    conv.main()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--convert":
    convert_child(sys.argv[2:])
    sys.exit(0)


# --------------------------------------------------------------------------------------
import make_fixtures as mf  # noqa: E402  (initialisation, routing checks, config spelling)
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    Glm4MoeConfig,
    Glm4MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

sys.path.insert(0, os.path.join(LLAMA_DIR, "gguf-py"))
import gguf  # noqa: E402  (the sdist's gguf-py, the one the converter uses)

N_TOKENS = 12
SPLIT = 8  # llama.cpp decode-path check: 8 tokens as one batch, then 4 one at a time
N_BPE = 280  # byte alphabet (256) + 24 merges; specials follow; the converter pads to vocab_size
VOCAB = 300
MIN_REL_GAP = 1e-3
MAX_LLAMACPP_REL = 0.05  # llama.cpp vs HF on the same weights: ~2% from its activation rounding, more = a flip
MAX_SEED_TRIES = 40
log = mf.log

VERSIONS = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "numpy": np.__version__,
    "gguf-py (sdist)": getattr(gguf, "__version__", None) or "0.19.0",
    "llama-cpp-python sdist": "0.3.36",
    "llama.cpp": LLAMACPP_COMMIT,
}

# --------------------------------------------------------------------------------------
# tokenizers: tiny byte-level BPE per family
# --------------------------------------------------------------------------------------
QWEN2_RX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GLM4_RX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

TOKENIZERS = {
    # (pre name, split regex or None = GPT-2 ByteLevel regex, NFC, specials, bos, eos, add_bos, template)
    "deepseek-llm": dict(rx=None, nfc=False,
                         specials=["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"],
                         bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", add_bos=True,
                         template="{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}User: "
                                  "{{ m['content'] }}\n\n{% else %}Assistant: {{ m['content'] }}{{ eos_token }}"
                                  "{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"),
    "deepseek-v3": dict(rx=None, nfc=False,
                        specials=["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"],
                        bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", add_bos=True,
                        template="{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>"
                                 "{{ m['content'] }}{% else %}<｜Assistant｜>{{ m['content'] }}{{ eos_token }}"
                                 "{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"),
    "qwen2": dict(rx=QWEN2_RX, nfc=True, specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                  bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
                  template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "glm4": dict(rx=GLM4_RX, nfc=False,
                 specials=["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                           "<|user|>", "<|assistant|>", "<|observation|>"],
                 bos=None, eos="<|endoftext|>", pad="<|endoftext|>", add_bos=False,
                 template="[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}"),
}

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Mixture-of-experts models route every token to a few experts; the router picks them.",
    "In the beginning there was the token, and the token was embedded in the model.",
    "Hello world! Hello there, how are you? I'm fine, thanks; and you?",
    "Numbers: 1 22 333 4444 55555 and 3.14159, 2.71828 -- the end of the line.\n",
]


def build_tokenizer(pre, out_dir):
    """Train (deterministically) a byte-level BPE of N_BPE tokens on CORPUS, append the family's special
    tokens, write tokenizer.json + tokenizer_config.json. Returns {special: id}."""
    t = TOKENIZERS[pre]
    tok = Tokenizer(models.BPE())
    if t["nfc"]:
        tok.normalizer = normalizers.NFC()
    if t["rx"]:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(t["rx"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=N_BPE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False, min_frequency=1)
    tok.train_from_iterator(CORPUS * 4, trainer)
    assert tok.get_vocab_size() == N_BPE, tok.get_vocab_size()
    tok.add_special_tokens(t["specials"])
    ids = {s: tok.token_to_id(s) for s in t["specials"]}
    assert sorted(ids.values()) == list(range(N_BPE, N_BPE + len(ids))), ids
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096,
           "bos_token": t["bos"], "eos_token": t["eos"], "pad_token": t.get("pad"),
           "add_bos_token": t["add_bos"], "add_eos_token": False, "clean_up_tokenization_spaces": False,
           "chat_template": t["template"]}
    mf.write_json(os.path.join(out_dir, "tokenizer_config.json"), cfg)
    return ids


# --------------------------------------------------------------------------------------
# fixture definitions (2 layers, small dims; one wide enough for the K-quants)
# --------------------------------------------------------------------------------------
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
             num_hidden_layers=2, hidden_act="silu", attn_implementation="eager", experts_implementation="eager",
             pad_token_id=None)
MLA = dict(num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=64, qk_nope_head_dim=32,
           qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=8)
GQA = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16)
TYPES_ALL = ["F16", "Q8_0", "Q4_0", "Q4_K_M"]  # small fixtures: Q4_K_M falls back to Q5_0/Q5_1/Q8_0


def ds_ids(pre):
    n = len(TOKENIZERS[pre]["specials"])
    return dict(bos_token_id=N_BPE, eos_token_id=N_BPE + 1) if n else {}


def v2_edit(c):
    return mf.to_v4_spelling(c, drop=("head_dim", "qk_head_dim", "rope_interleave"),
                             add={"scoring_func": "softmax", "moe_layer_freq": 1})


def v3_edit(c):
    return mf.to_v4_spelling(c, drop=("head_dim", "qk_head_dim", "rope_interleave"),
                             add={"topk_method": "noaux_tc", "scoring_func": "sigmoid", "moe_layer_freq": 1})


def fx_dsv2_lite():
    cfg = DeepseekV2Config(**SMALL, **MLA, **ds_ids("deepseek-llm"), q_lora_rank=None, n_shared_experts=2,
                           num_experts_per_tok=3, first_k_dense_replace=1, topk_method="greedy", n_group=1,
                           topk_group=1, norm_topk_prob=False, routed_scaling_factor=1.0, rms_norm_eps=1e-6,
                           max_position_embeddings=1024, rope_theta=10000.0,
                           rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                         "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707})
    return dict(cls=DeepseekV2ForCausalLM, cfg=cfg, family="deepseek_v2", pre="deepseek-llm", edit=v2_edit,
                q_lora_zero=True, types=TYPES_ALL, seed=21000,
                notes="DeepSeek-V2-Lite shape (deepseek2, no q_lora: attn_q), greedy softmax top-3 of 8, "
                      "norm_topk_prob false, x1.0, 2 shared experts, layer 0 dense, YaRN factor 4 (orig 256) "
                      "with mscale = mscale_all_dim = 0.707, beta 32/1 (= llama.cpp's defaults).",
                departures=["GGUF carries deepseek2.attention.q_lora_rank = 0, written by this script's "
                            "converter patch (llama.cpp needs it for a 2-layer lite model; real V2-Lite GGUFs "
                            "have 27 layers and no such key)."])


def fx_dsv2_group():
    cfg = DeepseekV2Config(**SMALL, **MLA, **ds_ids("deepseek-llm"), q_lora_rank=48, n_shared_experts=2,
                           num_experts_per_tok=3, first_k_dense_replace=1, topk_method="group_limited_greedy",
                           n_group=4, topk_group=2, norm_topk_prob=False, routed_scaling_factor=16.0,
                           rms_norm_eps=1e-6, max_position_embeddings=1024, rope_theta=10000.0)
    return dict(cls=DeepseekV2ForCausalLM, cfg=cfg, family="deepseek_v2", pre="deepseek-llm", edit=v2_edit,
                q_lora_zero=False, types=["F16"], seed=22000, need_v2_group_divergence=True,
                notes="DeepSeek-V2 shape with q_lora_rank 48, group_limited_greedy: 4 groups of 2 experts, HF "
                      "group score = max softmax prob in the group, top-2 groups, top-3 experts, x16, plain RoPE.",
                departures=["llama.cpp scores a group by the sum of its top-2 experts (V3's rule) whenever "
                            "expert_group_count > 1, HF V2 by the max: the seed is chosen so that at least one "
                            "token/layer selection differs (checks.v2_vs_v3_group_rule_differs); krasis must "
                            "follow HF here, so llama.cpp's logits are not the reference for this fixture."])


def fx_dsv3_group():
    cfg = DeepseekV3Config(**SMALL, **MLA, **ds_ids("deepseek-v3"), q_lora_rank=48, n_shared_experts=1,
                           num_experts_per_tok=3, first_k_dense_replace=1, n_group=4, topk_group=2,
                           norm_topk_prob=True, routed_scaling_factor=2.5, rms_norm_eps=1e-6,
                           max_position_embeddings=1024, num_nextn_predict_layers=0, rope_theta=10000.0,
                           rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})
    return dict(cls=DeepseekV3ForCausalLM, cfg=cfg, family="deepseek_v3", pre="deepseek-v3", edit=v3_edit,
                q_lora_zero=False, types=["F16", "Q8_0", "Q4_0"], seed=23000, bias_std=0.15,
                notes="DeepSeek-V3 shape: noaux_tc sigmoid router + random fp32 e_score_correction_bias, 4 groups "
                      "of 2 (group score = sum of top-2 biased scores), top-2 groups, top-3 experts, normalized, "
                      "x2.5, 1 shared, layer 0 dense, q_lora 48, YaRN factor 4 (orig 256), mscale 1/1, beta 32/1.",
                departures=[])


def fx_dsv3_kimi_rope():
    cfg = DeepseekV3Config(**SMALL, **dict(MLA, n_routed_experts=8), **ds_ids("deepseek-v3"), q_lora_rank=48,
                           n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, n_group=1,
                           topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.827, rms_norm_eps=1e-6,
                           max_position_embeddings=131072, num_nextn_predict_layers=0, rope_theta=50000.0,
                           rope_scaling={"type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                                         "beta_fast": 1.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0})
    return dict(cls=DeepseekV3ForCausalLM, cfg=cfg, family="deepseek_v3", pre="deepseek-v3", edit=v3_edit,
                q_lora_zero=False, types=["F16"], seed=24000, bias_std=0.15,
                notes="DeepSeek-V3 class with Kimi-K2's rope: theta 5e4, YaRN factor 32 (orig 4096), "
                      "beta_fast = beta_slow = 1, mscale 1/1; n_group 1, top-2, normalized, x2.827, 1 shared.",
                departures=["The converter writes rope.scaling.yarn_beta_fast/slow = 1/1, but llama.cpp's "
                            "deepseek2 loader ignores them and ramps with its defaults 32/1, so llama.cpp's rope "
                            "differs from HF (models.md §8): llama.cpp is not the reference here; krasis must "
                            "read the keys and match hf_logits.npy."])


def fx_qwen3_moe():
    cfg = Qwen3MoeConfig(**SMALL, **GQA, **{"bos_token_id": None, "eos_token_id": N_BPE + 2}, num_experts=8,
                         num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                         rms_norm_eps=1e-6, max_position_embeddings=1024, rope_theta=1000000.0,
                         tie_word_embeddings=False)

    def edit(c):
        return mf.to_v4_spelling(c, rename={"num_local_experts": "num_experts"}, rope_scaling_null=True,
                                 add={"max_window_layers": 2})
    return dict(cls=Qwen3MoeForCausalLM, cfg=cfg, family="qwen3_moe", pre="qwen2", edit=edit, types=TYPES_ALL,
                seed=25000,
                notes="Qwen3-MoE, every layer MoE (decoder_sparse_step 1, mlp_only_layers []): GQA 4/2, head_dim "
                      "16, q_norm/k_norm, NeoX rope theta 1e6, softmax top-2 of 8 with norm_topk_prob.",
                departures=[])


def fx_glm4_moe():
    cfg = Glm4MoeConfig(**SMALL, **GQA, **{"bos_token_id": None, "eos_token_id": N_BPE},
                        partial_rotary_factor=0.5, rope_theta=1000000.0, n_routed_experts=8, n_shared_experts=1,
                        num_experts_per_tok=2, first_k_dense_replace=1, n_group=1, topk_group=1,
                        norm_topk_prob=True, routed_scaling_factor=2.5, use_qk_norm=True, attention_bias=True,
                        rms_norm_eps=1e-5, max_position_embeddings=1024, num_nextn_predict_layers=1,
                        tie_word_embeddings=False)

    def edit(c):
        return mf.to_v4_spelling(c, partial_rotary_top_level=True,
                                 add={"scoring_func": "sigmoid", "topk_method": "noaux_tc"})
    return dict(cls=Glm4MoeForCausalLM, cfg=cfg, family="glm4_moe", pre="glm4", edit=edit, types=["F16", "Q8_0", "Q4_0"],
                seed=26000, bias_std=0.15, mtp=dict(embed_and_head=False),
                notes="GLM-4.5 shape: GQA 4/2, head_dim 16, q/k/v biases, use_qk_norm, partial_rotary 0.5 "
                      "(NeoX rope on 8 of 16 dims), sigmoid router + e_score_correction_bias, n_group 1, top-2, "
                      "normalized, x2.5, 1 shared, layer 0 dense, post_attention_norm; one MTP layer (blk.2.nextn.*"
                      " + a full MoE layer, block_count 3, nextn_predict_layers 1) that inference skips.",
                departures=[])


def fx_dsv2_lite_wide():
    cfg = DeepseekV2Config(**dict(SMALL, hidden_size=256, intermediate_size=256, moe_intermediate_size=256),
                           num_attention_heads=2, num_key_value_heads=2, kv_lora_rank=128, qk_nope_head_dim=64,
                           qk_rope_head_dim=32, v_head_dim=64, n_routed_experts=4, **ds_ids("deepseek-llm"),
                           q_lora_rank=None, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1,
                           topk_method="greedy", n_group=1, topk_group=1, norm_topk_prob=False,
                           routed_scaling_factor=1.0, rms_norm_eps=1e-6, max_position_embeddings=1024,
                           rope_theta=10000.0,
                           rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                         "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707})
    return dict(cls=DeepseekV2ForCausalLM, cfg=cfg, family="deepseek_v2", pre="deepseek-llm", edit=v2_edit,
                q_lora_zero=True, types=["Q4_K_M"], seed=27000,
                notes="DeepSeek-V2-Lite shape, 256 wide (hidden, dense and expert intermediate 256) so that "
                      "llama-quantize's Q4_K_M uses real K-quants (Q4_K, Q6_K, ...) on most matrices; 4 experts "
                      "top-2, 1 shared, layer 0 dense, 2 heads, kv_lora 128, Dn 64, Dr 32, Dv 64, YaRN as dsv2_lite.",
                departures=["GGUF carries deepseek2.attention.q_lora_rank = 0 (converter patch, as dsv2_lite)."])


FIXTURES = {
    "dsv2_lite": fx_dsv2_lite,
    "dsv2_group": fx_dsv2_group,
    "dsv3_group": fx_dsv3_group,
    "dsv3_kimi_rope": fx_dsv3_kimi_rope,
    "qwen3_moe": fx_qwen3_moe,
    "glm4_moe": fx_glm4_moe,
    "dsv2_lite_wide": fx_dsv2_lite_wide,
}


# --------------------------------------------------------------------------------------
# llama.cpp side
# --------------------------------------------------------------------------------------
def bin_path(name):
    for p in (os.path.join(BUILD, "bin", name), os.path.join(BUILD, name)):
        if os.path.exists(p):
            return p
    raise SystemExit(f"{name} not found under {BUILD}: build llama.cpp first (see this script's docstring)")


def lib_dir():
    for d in (os.path.join(BUILD, "bin"), os.path.join(BUILD, "src"), BUILD):
        if os.path.exists(os.path.join(d, "libllama.so")):
            return d
    raise SystemExit(f"libllama.so not found under {BUILD}")


def build_logits_tool():
    """Compile tools/llamacpp_logits.c against the built libllama (into the build folder, not the repo)."""
    src = os.path.join(TOOLS, "llamacpp_logits.c")
    exe = os.path.join(BUILD, "llamacpp_logits")
    if os.path.exists(exe) and os.path.getmtime(exe) > os.path.getmtime(src):
        return exe
    ld = lib_dir()
    cmd = ["cc", "-O2", "-std=c11", "-Wall", "-Wextra", "-I", os.path.join(LLAMA_DIR, "include"),
           "-I", os.path.join(LLAMA_DIR, "ggml", "include"), src, "-o", exe, "-L", ld, "-lllama",
           f"-Wl,-rpath,{ld}"]
    log("   " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    return exe


def run_converter(hf_dir, outfile, outtype, spec):
    cmd = [sys.executable, os.path.abspath(__file__), "--convert", hf_dir, outfile, outtype.lower(), spec["pre"],
           "1" if spec.get("q_lora_zero") else "0"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-8000:])
        raise SystemExit(f"convert_hf_to_gguf failed for {hf_dir} ({outtype})")


def run_quantize(src, dst, qtype):
    r = subprocess.run([bin_path("llama-quantize"), src, dst, qtype], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"llama-quantize {qtype} failed for {src}")
    text = r.stdout + r.stderr
    fallbacks = []
    for m in re.finditer(r"warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\)"
                         r"\s*(\(WARNING: must use F16 due to unusual shape\) )?-> falling back to\s+(\S+)", text):
        fallbacks.append({"tensor": m.group(1), "ncols": int(m.group(2)), "wanted": m.group(4),
                          "used": m.group(6)})
    return fallbacks


def run_llamacpp(exe, gguf_path, tokens, out_npy, split=0, threads=1):
    cmd = [exe, gguf_path, out_npy, "--tokens", ",".join(map(str, tokens)), "--threads", str(threads),
           "--split", str(split), "--kv", "f32", "--flash-attn", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-8000:])
        raise SystemExit(f"llamacpp_logits failed on {gguf_path}")
    return np.load(out_npy)


def gguf_tensor_types(path):
    rd = gguf.GGUFReader(path)
    out = {}
    for t in rd.tensors:
        out[t.name] = t.tensor_type.name
    return out


def gguf_keys(path):
    rd = gguf.GGUFReader(path)
    out = {}
    for k, f in rd.fields.items():
        if k.startswith("tokenizer.ggml.") and k.split(".")[-1] in ("tokens", "token_type", "merges"):
            out[k] = f"[{len(f.data)} items]"
            continue
        if k.startswith("GGUF."):
            continue
        try:
            v = f.contents()
        except Exception:  # pragma: no cover
            v = "?"
        if isinstance(v, list) and len(v) > 8:
            v = f"[{len(v)} items]"
        out[k] = v
    return out


def compare(ll, hf):
    d = np.abs(ll.astype(np.float64) - hf.astype(np.float64))
    return {
        "max_abs_diff": float(d.max()),
        "mean_abs_diff": float(d.mean()),
        "max_abs_hf": float(np.abs(hf).max()),
        "rel_max": float(d.max() / np.abs(hf).max()),
        "argmax_agree": int((ll.argmax(-1) == hf.argmax(-1)).sum()),
        "n_positions": int(hf.shape[0]),
        "min_cosine": float(min(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(ll, hf))),
    }


# --------------------------------------------------------------------------------------
# HF on the GGUF's own (dequantized) weights: the exact-math reference for a quantized file
# --------------------------------------------------------------------------------------
def gguf_to_hf_tensors(path, hf_names, n_layers):
    """Dequantize every tensor of a GGUF (gguf-py's reference dequantization) and map it back to the HF
    checkpoint names (the converter's naming inverted: stacked experts sliced, attn_k_b/attn_v_b re-joined into
    kv_b_proj, exp_probs_b -> e_score_correction_bias). MTP layers (index >= n_layers) are left out: HF
    ignores them. Returns {hf name: float32 torch tensor}."""
    from gguf.quants import dequantize
    rd = gguf.GGUFReader(path)
    arch_name = str(rd.fields["general.architecture"].contents())
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    n_blocks = int(rd.fields[f"{arch_name}.block_count"].contents())
    tmap = gguf.get_tensor_name_map(arch, n_blocks)
    deq = {}
    for t in rd.tensors:
        a = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        deq[t.name] = a.reshape(tuple(int(x) for x in reversed(t.shape)))
    out = {}
    for name in hf_names:
        m = re.match(r"model\.layers\.(\d+)\.", name)
        if m and int(m.group(1)) >= n_layers:
            continue
        if name.endswith("kv_b_proj.weight"):
            kb = deq[tmap.get_name(name.replace("kv_b_proj", "k_b_proj"), try_suffixes=(".weight",))]  # (H, C, Dn)
            vb = deq[tmap.get_name(name.replace("kv_b_proj", "v_b_proj"), try_suffixes=(".weight",))]  # (H, Dv, C)
            kv = np.concatenate([kb.transpose(0, 2, 1), vb], axis=1)
            out[name] = torch.from_numpy(kv.reshape(-1, kv.shape[-1]).copy())
            continue
        me = re.match(r"(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(\w+)\.weight$", name)
        if me:
            g = tmap.get_name(f"{me.group(1)}.{me.group(3)}.weight", try_suffixes=(".weight",))
            out[name] = torch.from_numpy(deq[g][int(me.group(2))].copy())
            continue
        key = name.replace("e_score_correction_bias", "e_score_correction.bias")
        g = tmap.get_name(key, try_suffixes=(".weight", ".bias"))
        if g is None or g not in deq:
            raise SystemExit(f"{path}: no GGUF tensor for HF tensor {name} (mapped to {g})")
        out[name] = torch.from_numpy(deq[g].copy())
    return out


def hf_on_gguf(spec, r, path, workdir, tag):
    """HF float32 logits (and routing margins) with the weights as the GGUF file holds them."""
    src = mf.load_all_tensors(r["hf_dir"])
    deq = gguf_to_hf_tensors(path, list(src), spec["cfg"].num_hidden_layers)
    for k, v in deq.items():
        assert tuple(v.shape) == tuple(src[k].shape), (k, v.shape, src[k].shape)
        src[k] = v
    d = os.path.join(workdir, "deq_" + tag)
    shutil.copytree(r["hf_dir"], d)
    mf.rewrite_single_file(d, src)
    model = mf.hf_load(spec["cls"], d).eval()
    tokens = r["tokens"]
    _, _, full, captured = mf.run_reference(model, tokens[:SPLIT], tokens[SPLIT:], capture=True)
    gaps = mf.routing_gaps(model, spec["cfg"], captured, spec["family"])
    shutil.rmtree(d)
    return full.numpy().astype(np.float32), gaps


# --------------------------------------------------------------------------------------
# HF side
# --------------------------------------------------------------------------------------
def v2_group_rule_divergence(model, cfg, captured):
    """Token/layer selections where HF V2's group_limited_greedy (group = max prob, mask 0) and llama.cpp's
    rule (group = sum of top-2 probs, mask -inf) pick different experts."""
    mods = dict(mf.router_modules(model))
    E, G, tg, K = cfg.n_routed_experts, cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok
    n_diff = n = 0
    for name, xs in captured.items():
        W = mods[name].weight.detach().double()
        X = torch.cat([x for x, _ in xs]).double()
        for row in X @ W.T:
            s = torch.softmax(row, -1).view(G, E // G)
            sel = []
            for gs, fill in ((s.max(-1).values, 0.0), (s.topk(2, -1).values.sum(-1), float("-inf"))):
                keep = torch.topk(gs, tg).indices
                m = torch.full((G, E // G), fill, dtype=s.dtype)
                m[keep] = s[keep]
                sel.append(set(torch.topk(m.flatten(), K).indices.tolist()))
            n += 1
            n_diff += sel[0] != sel[1]
    return n_diff, n


def build_hf(name, spec, seed, workdir):
    cfg = spec["cfg"]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = spec["cls"](cfg).eval()
    mf.reinit(model, gen, gate_gain=3.0, bias_std=spec.get("bias_std", 0.15))
    mf.round_params(model, torch.float16)  # the F16 GGUF then holds exactly these weights
    ids_gen = torch.Generator().manual_seed(seed + 12345)
    tokens = torch.randint(0, N_BPE, (N_TOKENS,), generator=ids_gen).tolist()
    _, _, full, captured = mf.run_reference(model, tokens[:SPLIT], tokens[SPLIT:], capture=True)
    gaps = mf.routing_gaps(model, cfg, captured, spec["family"])
    if spec.get("need_v2_group_divergence"):
        gaps["v2_vs_v3_group_rule_differs"], _ = v2_group_rule_divergence(model, cfg, captured)

    hf_dir = os.path.join(workdir, name)
    os.makedirs(hf_dir)
    model.save_pretrained(hf_dir)
    c = mf.read_json(os.path.join(hf_dir, "config.json"))
    mf.write_json(os.path.join(hf_dir, "config.json"), spec["edit"](c))
    if spec.get("mtp"):
        mspec = dict(spec, gate_gain=3.0)
        extra = mf.mtp_tensors(mspec, cfg, torch.Generator().manual_seed(seed + 777), torch.float16)
        extra = {k: (v if k.endswith("e_score_correction_bias") else v.float()) for k, v in extra.items()}
        allt = mf.load_all_tensors(hf_dir)
        allt.update(extra)
        mf.rewrite_single_file(hf_dir, allt)
    special_ids = build_tokenizer(spec["pre"], hf_dir)
    # HF re-reads what we wrote (edited config, MTP tensors) and reproduces the in-memory reference
    m2, info = mf.hf_load(spec["cls"], hf_dir, info=True)
    assert not info["missing_keys"], info
    L = cfg.num_hidden_layers
    assert all(k.startswith(f"model.layers.{L}.") for k in info["unexpected_keys"]), info
    with torch.no_grad():
        full2 = m2.eval()(input_ids=torch.tensor([tokens]), use_cache=False).logits[0].float()
    mf.assert_close("HF re-load of the written dir vs in-memory model", (full2,), (full,))
    AutoTokenizer.from_pretrained(hf_dir)  # the converter loads it this way
    return dict(model=model, tokens=tokens, hf=full.numpy().astype(np.float32), gaps=gaps, hf_dir=hf_dir,
                special_ids=special_ids)


def accept(spec, r):
    g = r["gaps"]
    ok = g["min_rel_gap_expert"] > MIN_REL_GAP and (g["min_rel_gap_group"] is None or g["min_rel_gap_group"] > MIN_REL_GAP)
    if spec["family"] in ("deepseek_v3", "glm4_moe"):
        ok = ok and g["bias_changed_selections"] > 0
    if spec.get("need_v2_group_divergence"):
        ok = ok and g["v2_vs_v3_group_rule_differs"] > 0
    ok = ok and float(np.std(r["hf"], -1).min()) > 1.0
    return ok


# --------------------------------------------------------------------------------------
def make_fixture(name, exe):
    spec = FIXTURES[name]()
    # fixtures whose departure from HF is in the math (not only in metadata) are exempt from the F16 check
    spec["departures_change_logits"] = name in ("dsv2_group", "dsv3_kimi_rope")
    log(f"== {name}")
    for attempt in range(MAX_SEED_TRIES):
        seed = spec["seed"] + attempt
        workdir = tempfile.mkdtemp(prefix=f"fxg_{name}_")
        try:
            r = build_hf(name, spec, seed, workdir)
            if not accept(spec, r):
                log(f"   seed {seed}: rejected {r['gaps']}")
                continue
            if finalize(name, spec, seed, r, workdir, exe):
                return
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    raise SystemExit(f"{name}: no seed in {MAX_SEED_TRIES} tries passed the checks")


def finalize(name, spec, seed, r, workdir, exe):
    dst = os.path.join(OUT_ROOT, name)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    tokens, hf = r["tokens"], r["hf"]
    np.save(os.path.join(dst, "hf_logits.npy"), hf)

    f32 = os.path.join(workdir, f"{name}-F32.gguf")
    run_converter(r["hf_dir"], f32, "F32", spec)
    files, results, fallbacks = {}, {}, {}
    # scratch F32 file (the same float16-representable weights, stored as F32): only llama.cpp's compute differs
    ll = run_llamacpp(exe, f32, tokens, os.path.join(workdir, "f32.npy"))
    results["F32"] = compare(ll, hf)
    for t in spec["types"]:
        path = os.path.join(dst, f"{name}-{t}.gguf")
        if t == "F16":
            run_converter(r["hf_dir"], path, "F16", spec)
        else:
            fallbacks[t] = run_quantize(f32, path, t)
        files[t] = os.path.basename(path)
        ll = run_llamacpp(exe, path, tokens, os.path.join(dst, f"llamacpp_{t}.npy"))
        results[t] = compare(ll, hf)
        # HF on exactly this file's weights (for F16: must reproduce hf_logits.npy bit for bit)
        hq, gq = hf_on_gguf(spec, r, path, workdir, t)
        if t == "F16":
            assert np.array_equal(hq, hf), f"{name}: HF on the F16 file's weights != hf_logits ({np.abs(hq - hf).max()})"
        else:
            np.save(os.path.join(dst, f"hf_dequant_{t}.npy"), hq)
            results[t]["vs_hf_dequant"] = compare(ll, hq)
            results[t]["hf_dequant_routing"] = gq
        # llama.cpp's own decode path: SPLIT tokens as a batch, then one at a time through its KV cache
        ll_split = run_llamacpp(exe, path, tokens, os.path.join(workdir, "split.npy"), split=SPLIT)
        results[t]["batch_vs_incremental_max_abs"] = float(np.abs(ll_split - ll).max())

    # llama.cpp must follow the same experts as exact math on each file, or a krasis-vs-llama.cpp test on that
    # file would compare two different routings: llama.cpp rounds activations (F16 / Q8 blocks), which can
    # flip a top-k choice whose margin is tiny. A flip shows as a large logit difference; reject the seed then.
    for t, res in results.items():
        q = res.get("vs_hf_dequant", res if (t in ("F32", "F16") and not spec["departures_change_logits"]) else None)
        if q is not None and (q["rel_max"] > MAX_LLAMACPP_REL or q["argmax_agree"] < q["n_positions"] - 1):
            log(f"   seed {seed}: rejected, llama.cpp {t} departs from exact math on its weights by "
                f"rel {q['rel_max']:.3f} (argmax {q['argmax_agree']}/{q['n_positions']}): a routing flip")
            return False

    first = os.path.join(dst, files[spec["types"][0]])
    cfg = spec["cfg"]
    ref = {
        "tokens": tokens,
        "n_vocab": int(hf.shape[1]),
        "special_token_ids": r["special_ids"],
        "tokenizer_pre": spec["pre"],
        "seed": seed,
        "notes": spec["notes"],
        "llamacpp_departures_from_hf": spec["departures"],
        "hf_reference": "transformers float32 forward of all tokens at once (use_cache=False), eager attention "
                        "and experts; weights = the F16 file's values (rounded to float16, held in float32); "
                        "e_score_correction_bias float32",
        "llamacpp_settings": {"tool": "tools/llamacpp_logits.c", "n_threads": 1, "kv_cache_type": "f32",
                              "flash_attn": False, "batch": f"all {N_TOKENS} tokens in one llama_decode, "
                              "logits for every position", "n_gpu_layers": 0,
                              "quantize_source": "F32 GGUF from convert_hf_to_gguf.py --outtype f32 "
                                                 "(not kept; F16 comes from --outtype f16)"},
        "files": files,
        "llamacpp_vs_hf": results,
        "quantize_fallbacks": fallbacks,
        "tensor_types": {t: gguf_tensor_types(os.path.join(dst, f)) for t, f in files.items()},
        "gguf_metadata": gguf_keys(first),
        "hf_config": {k: v for k, v in cfg.to_dict().items() if not isinstance(v, (dict, list)) or k in
                      ("rope_scaling", "rope_parameters", "mlp_only_layers")},
        "checks": r["gaps"],
        "versions": VERSIONS,
        "hf_argmax": hf.argmax(-1).tolist(),
    }
    mf.write_json(os.path.join(dst, "reference.json"), ref)
    size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
    log(f"   seed {seed} OK, {size / 1024:.0f} KiB, routing {r['gaps']}")
    for t, s in results.items():
        log(f"   {t:7s} vs HF: max|d| {s['max_abs_diff']:.3e} (max|hf| {s['max_abs_hf']:.2f}, rel "
            f"{s['rel_max']:.2e}), argmax {s['argmax_agree']}/{s['n_positions']}, min cos {s['min_cosine']:.6f}"
            + (f", batch-vs-incremental {s['batch_vs_incremental_max_abs']:.1e}" if "batch_vs_incremental_max_abs" in s else ""))
        if "vs_hf_dequant" in s:
            q = s["vs_hf_dequant"]
            log(f"           vs HF on the file's dequantized weights: max|d| {q['max_abs_diff']:.3e} (rel "
                f"{q['rel_max']:.2e}), argmax {q['argmax_agree']}/{q['n_positions']}; routing there "
                f"{s['hf_dequant_routing']}")
    for t, fb in fallbacks.items():
        if fb:
            log(f"   {t} fallbacks: " + ", ".join(f"{x['tensor']}({x['ncols']}) {x['wanted']}->{x['used']}" for x in fb))
    return True


README = """# GGUF fixtures from llama.cpp's own converter and quantizer (generated; do not edit by hand)

Made by `tools/make_llamacpp_fixtures.py` (issue 6, item 5); rerun it to regenerate everything here
(including this file): `python3 tools/make_llamacpp_fixtures.py`. Versions: @VERSIONS@.

## Provenance

1. A tiny random Hugging Face model per fixture (transformers, the initialisation and routing-margin checks of
   `tools/make_fixtures.py`: every top-k boundary has a relative gap > 1e-3 so that float rounding cannot flip an
   expert in HF or in an exact re-implementation). All weights are rounded to float16 values first, so the F16
   GGUF holds exactly the reference weights (the router bias `exp_probs_b` stays float32). A tiny byte-level BPE
   tokenizer (256 bytes + 24 merges + the family's special tokens, padded by the converter to vocab 300 with
   `[PADn]`) is written next to it; for qwen2 and glm4 its pre-tokenizer regex is the real one, for the DeepSeek
   fixtures it is GPT-2's (text tokenization of these files is not a reference: the logits are for token ids).
2. `hf_logits.npy` = transformers float32, eager attention and experts, all tokens in one forward without cache.
3. `convert_hf_to_gguf.py` (from the llama-cpp-python 0.3.36 sdist, vendor/llama.cpp = ggml-org/llama.cpp@0c1e57098),
   run as a library with two patches that change no tensor: the pre-tokenizer hash check returns the family's
   name (`deepseek-llm`, `deepseek-v3`, `qwen2`, `glm4`) instead of rejecting our unknown tokenizer, and for
   DeepSeek models without q_lora it also writes `deepseek2.attention.q_lora_rank = 0` (llama.cpp decides "lite"
   from n_layer 26/27 and otherwise requires the key). `--outtype f16` gives the F16 file; `--outtype f32` a
   scratch F32 file that is the input of `llama-quantize <f32> <out> Q8_0|Q4_0|Q4_K_M` (built from the same sdist).
4. `hf_dequant_<TYPE>.npy` (quantized types) = transformers float32 with the weights exactly as that file holds
   them (every tensor dequantized by gguf-py and mapped back to its HF name: stacked experts sliced,
   attn_k_b/attn_v_b re-joined into kv_b_proj). For F16 the same procedure reproduces `hf_logits.npy` bit for
   bit (asserted), which checks the mapping. This is the exact-math reference for krasis on a quantized file.
5. `llamacpp_<TYPE>.npy` = llama.cpp's logits on `<name>-<TYPE>.gguf` for the same tokens, from
   `tools/llamacpp_logits.c` (llama.h public API; all tokens in one `llama_decode` with logits at every
   position; 1 thread, F32 KV cache, flash attention off, CPU). reference.json also records llama.cpp's own
   batch-vs-incremental difference (first 8 tokens as a batch, then one at a time through its KV cache).
   A seed is kept only if llama.cpp stays within 5% (max |diff| / max |logit|) of exact math on every file's
   own weights (`llamacpp_vs_hf.<TYPE>.vs_hf_dequant`): llama.cpp rounds activations (F16, or Q8 blocks for
   quantized weights), about 2%, and a larger gap would mean it routed a token to other experts.

Each `reference.json`: `tokens`, `files`, `tensor_types` per file (what llama-quantize chose),
`quantize_fallbacks` (tensors whose row length does not fit the requested block type, and what was used),
`gguf_metadata`, `llamacpp_vs_hf` (per type, including the scratch F32), `llamacpp_departures_from_hf`,
`hf_config`, routing `checks`, `versions`.

## Fixtures

@FIXTURES@

## Known llama.cpp-vs-HF departures (../shared/specs/models.md §8)

* YaRN betas: the converter writes `rope.scaling.yarn_beta_fast/slow`, llama.cpp's deepseek2 loader ignores them
  (uses 32/1). Visible in `dsv3_kimi_rope` (Kimi-K2's betas 1/1): llama.cpp's logits differ from HF at every
  position > 0; krasis must read the keys and match `hf_logits.npy`.
* Group routing: with `expert_group_count > 1` llama.cpp always scores a group by the sum of its top-2 experts
  (V3's rule); DeepSeek-V2's `group_limited_greedy` uses the max. `dsv2_group` has selections where the two
  rules differ; krasis follows HF (choose the rule from the architecture / config, not from llama.cpp).
* Both ways llama.cpp departs, its logits there are not the reference: test krasis against `hf_logits.npy`
  with the F16 file and say so in the test.
* Elsewhere (F16 with F32 KV cache) llama.cpp agrees with HF up to float rounding: llama.cpp's CPU matmul
  rounds activations to F16 for F16 weights and to Q8 blocks for the quantized types, hence the differences
  below even for F16.

## llama.cpp vs HF (max |diff| of logits, relative to max |HF logit|, argmax agreement over positions)

| fixture | type | max abs diff | rel | argmax agree | min cosine |
|---|---|---|---|---|---|
@TABLE@

Use these to set test tolerances for krasis-vs-llama.cpp (same file) and krasis-vs-HF (F16 file).
For a quantized file, llama.cpp vs exact math on that file's weights (`hf_dequant_<TYPE>.npy`):

| fixture | type | max abs diff | rel | argmax agree |
|---|---|---|---|---|
@TABLE2@

So: krasis vs `hf_dequant_<TYPE>.npy` can be tight (both exact math on the same weights, up to krasis's own
activation handling); krasis vs `llamacpp_<TYPE>.npy` within about 5% of max |logit|; krasis vs `hf_logits.npy`
on a quantized file only as loose as the quantization error itself (the first table).
"""


def write_readme():
    rows = []
    for n in FIXTURES:
        p = os.path.join(OUT_ROOT, n, "reference.json")
        if not os.path.exists(p):
            continue
        ref = mf.read_json(p)
        for t, s in ref["llamacpp_vs_hf"].items():
            shown = t + ("" if t in ref["files"] else " (scratch, not kept)")
            rows.append(f"| `{n}` | {shown} | {s['max_abs_diff']:.2e} | {s['rel_max']:.1e} | "
                        f"{s['argmax_agree']}/{s['n_positions']} | {s['min_cosine']:.6f} |")
    tmpl = README
    tmpl = tmpl.replace("@VERSIONS@", ", ".join(f"{k} {v}" for k, v in VERSIONS.items()))
    tmpl = tmpl.replace("@TABLE@", "\n".join(rows))
    rows2 = []
    for n in FIXTURES:
        p = os.path.join(OUT_ROOT, n, "reference.json")
        if os.path.exists(p):
            for t, s in mf.read_json(p)["llamacpp_vs_hf"].items():
                if "vs_hf_dequant" in s:
                    q = s["vs_hf_dequant"]
                    rows2.append(f"| `{n}` | {t} | {q['max_abs_diff']:.2e} | {q['rel_max']:.1e} | "
                                 f"{q['argmax_agree']}/{q['n_positions']} |")
    tmpl = tmpl.replace("@TABLE2@", "\n".join(rows2))
    notes = []
    for n in FIXTURES:
        p = os.path.join(OUT_ROOT, n, "reference.json")
        if os.path.exists(p):
            ref = mf.read_json(p)
            notes.append(f"* `{n}` ({', '.join(ref['files'].values())}): {ref['notes']}"
                         + "".join(f" **Departure:** {d}" for d in ref["llamacpp_departures_from_hf"]))
    tmpl = tmpl.replace("@FIXTURES@", "\n".join(notes))
    with open(os.path.join(OUT_ROOT, "README.md"), "w") as f:
        f.write(tmpl)


def main(argv):
    names = argv[1:] or list(FIXTURES)
    for n in names:
        if n not in FIXTURES:
            raise SystemExit(f"unknown fixture {n}; known: {', '.join(FIXTURES)}")
    if not os.path.isdir(LLAMA_DIR):
        raise SystemExit(f"llama.cpp source not found at {LLAMA_DIR} (unpack llama_cpp_python-0.3.36.tar.gz "
                         "into third_party/)")
    os.makedirs(OUT_ROOT, exist_ok=True)
    exe = build_logits_tool()
    for n in names:
        make_fixture(n, exe)
    write_readme()
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT_ROOT) for f in fs)
    log(f"tests/fixtures_gguf: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv)
