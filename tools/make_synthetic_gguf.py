#!/usr/bin/env python3
"""A GGUF with the real shapes of DeepSeek-V2-Lite (or Qwen3-30B-A3B) and random weights, for the
krasis-vs-llama.cpp benchmark (issue 6, item 6). Not a fixture: the file is big (DeepSeek-V2-Lite at Q4_0
is ~8.9 GB; Qwen3-30B-A3B ~17 GB) and is written outside the repository (default build-llamacpp/).

What a llama.cpp Q4_0 file of the model holds, with random contents:
  * shapes and metadata from configs/<model>.json, spelled the way llama.cpp's convert_hf_to_gguf.py writes
    them for that architecture (deepseek2: MLA split into attn_k_b / attn_v_b, head_count_kv 1,
    key_length = kv_lora_rank + rope dim, *_mla keys, yarn_log_multiplier = 0.1 * mscale_all_dim;
    qwen3moe: attn_q/k/v + q/k norms, 128 experts);
  * tensor types as llama-quantize's Q4_0 recipe picks them (checked on tests/fixtures_gguf/*/..-Q4_0.gguf):
    every 2D/3D weight Q4_0, output.weight Q6_K, norms and ffn_gate_inp F32;
  * Q4_0 blocks written directly with numpy: random 4-bit codes and a random float16 scale per 32 weights,
    scaled so that a matrix-vector product keeps unit-size activations (1/sqrt(fan_in)); Q6_K the same way
    (random 6-bit codes, int8 sub-block scales, f16 super-block scale). gguf.quants would take hours on
    2 cores for 15.7 B weights; random codes are as good for timing;
  * the real tokenizer of the family (tokenizer.ggml.* copied from llama.cpp's vocab files in
    ../shared/data/vocab: ggml-vocab-deepseek-llm.gguf for DeepSeek-V2, ggml-vocab-qwen2.gguf for Qwen3), so
    both llama.cpp and krasis load the file as they would a real one.

Run:  python3 tools/make_synthetic_gguf.py [--model dsv2-lite|qwen3-30b-a3b] [--out PATH] [--seed N]
      [--layers N]  (fewer layers for a quick check; the benchmark uses the full count) [--vocab-dir DIR]
Needs numpy and the gguf package (the llama-cpp-python 0.3.36 sdist's gguf-py 0.19.0 is used when present).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
GGUF_PY = os.path.join(ROOT, "third_party", "llama_cpp_python-0.3.36", "vendor", "llama.cpp", "gguf-py")
if os.path.isdir(GGUF_PY):
    sys.path.insert(0, GGUF_PY)
import gguf  # noqa: E402

# where the family's vocab GGUF is looked for (--vocab-dir first): ../shared/data/vocab, then the llama.cpp
# tree's models/ beside the gguf package in use (the same files; what the device machine has, where ../shared
# does not travel)
VOCAB_DIRS = [os.path.join(os.path.dirname(ROOT), "shared", "data", "vocab"), "/work/shared/data/vocab",
              os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(gguf.__file__))), "..", "models")]

Q = gguf.GGMLQuantizationType


# --------------------------------------------------------------------------------------
# block writers
# --------------------------------------------------------------------------------------
def q4_0_bytes(rng, ne0, rows, fan_in):
    """rows x ne0 weights as Q4_0 blocks (f16 d, 16 bytes of nibbles): w = d * (q - 8), q uniform 0..15
    (std 4.6), d ~ 1/(4.6 sqrt(fan_in)) x U(0.75, 1.25). Returns uint8 [rows, ne0/32*18]."""
    assert ne0 % 32 == 0, ne0
    nb = rows * (ne0 // 32)
    out = np.empty((nb, 18), dtype=np.uint8)
    out[:, 2:] = rng.integers(0, 256, size=(nb, 16), dtype=np.uint8)
    d = (rng.uniform(0.75, 1.25, size=nb) / (4.6 * math.sqrt(fan_in))).astype(np.float16)
    out[:, :2] = d.view(np.uint8).reshape(nb, 2)
    return out.reshape(rows, (ne0 // 32) * 18)


def q6_k_bytes(rng, ne0, rows, fan_in):
    """Q6_K super-blocks of 256: ql[128], qh[64], scales[16] int8, d f16 (210 bytes);
    w = d * scale[j] * (q - 32), q 6-bit uniform (std 18.5), scale in 8..23."""
    assert ne0 % 256 == 0, ne0
    nb = rows * (ne0 // 256)
    out = np.empty((nb, 210), dtype=np.uint8)
    out[:, :192] = rng.integers(0, 256, size=(nb, 192), dtype=np.uint8)
    out[:, 192:208] = rng.integers(8, 24, size=(nb, 16), dtype=np.uint8)
    d = (rng.uniform(0.75, 1.25, size=nb) / (18.5 * 15.5 * math.sqrt(fan_in))).astype(np.float16)
    out[:, 208:] = d.view(np.uint8).reshape(nb, 2)
    return out.reshape(rows, (ne0 // 256) * 210)


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------
def tensors_deepseek2(c, n_layers):
    """(name, ne (ggml order), kind) with kind in {"norm", "router", "w"}; "w" carries fan_in."""
    D, H = c["hidden_size"], c["num_attention_heads"]
    Dn, Dr, Dv, C = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    E, Ie, I, V = c["n_routed_experts"], c["moe_intermediate_size"], c["intermediate_size"], c["vocab_size"]
    S = c["n_shared_experts"]
    assert c.get("q_lora_rank") is None, "only the lite (no q_lora) shape is wired here"
    t = [("token_embd.weight", (D, V), "embd")]
    for i in range(n_layers):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", (D,), "norm"),
              (p + "attn_q.weight", (D, H * (Dn + Dr)), "w"),
              (p + "attn_kv_a_mqa.weight", (D, C + Dr), "w"),
              (p + "attn_kv_a_norm.weight", (C,), "norm"),
              (p + "attn_k_b.weight", (Dn, C, H), "w"),
              (p + "attn_v_b.weight", (C, Dv, H), "w"),
              (p + "attn_output.weight", (H * Dv, D), "w"),
              (p + "ffn_norm.weight", (D,), "norm")]
        if i < c["first_k_dense_replace"]:
            t += [(p + "ffn_gate.weight", (D, I), "w"), (p + "ffn_up.weight", (D, I), "w"),
                  (p + "ffn_down.weight", (I, D), "w")]
        else:
            t += [(p + "ffn_gate_inp.weight", (D, E), "router"),
                  (p + "ffn_gate_exps.weight", (D, Ie, E), "w"), (p + "ffn_up_exps.weight", (D, Ie, E), "w"),
                  (p + "ffn_down_exps.weight", (Ie, D, E), "w"),
                  (p + "ffn_gate_shexp.weight", (D, Ie * S), "w"), (p + "ffn_up_shexp.weight", (D, Ie * S), "w"),
                  (p + "ffn_down_shexp.weight", (Ie * S, D), "w")]
    t += [("output_norm.weight", (D,), "norm"), ("output.weight", (D, V), "out")]
    return t


def meta_deepseek2(w, c, n_layers):
    a = "deepseek2"
    rs = c["rope_scaling"]
    C, Dr = c["kv_lora_rank"], c["qk_rope_head_dim"]
    w.add_uint32(f"{a}.block_count", n_layers)
    w.add_uint32(f"{a}.context_length", c["max_position_embeddings"])
    w.add_uint32(f"{a}.embedding_length", c["hidden_size"])
    w.add_uint32(f"{a}.feed_forward_length", c["intermediate_size"])
    w.add_uint32(f"{a}.attention.head_count", c["num_attention_heads"])
    w.add_uint32(f"{a}.attention.head_count_kv", 1)
    w.add_string(f"{a}.rope.scaling.type", "yarn")
    w.add_float32(f"{a}.rope.scaling.factor", float(rs["factor"]))
    w.add_uint32(f"{a}.rope.scaling.original_context_length", rs["original_max_position_embeddings"])
    w.add_float32(f"{a}.rope.scaling.yarn_beta_fast", float(rs["beta_fast"]))
    w.add_float32(f"{a}.rope.scaling.yarn_beta_slow", float(rs["beta_slow"]))
    w.add_float32(f"{a}.rope.freq_base", float(c["rope_theta"]))
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", float(c["rms_norm_eps"]))
    w.add_uint32(f"{a}.expert_count", c["n_routed_experts"])
    w.add_uint32(f"{a}.expert_used_count", c["num_experts_per_tok"])
    w.add_uint32(f"{a}.expert_group_count", c["n_group"])
    w.add_uint32(f"{a}.expert_group_used_count", c["topk_group"])
    w.add_uint32(f"{a}.expert_gating_func", 1 if c.get("scoring_func", "softmax") == "softmax" else 2)
    w.add_uint32(f"{a}.attention.key_length", C + Dr)
    w.add_uint32(f"{a}.attention.value_length", C)
    w.add_uint32(f"{a}.leading_dense_block_count", c["first_k_dense_replace"])
    w.add_uint32(f"{a}.vocab_size", c["vocab_size"])
    w.add_uint32(f"{a}.attention.kv_lora_rank", C)
    w.add_uint32(f"{a}.attention.key_length_mla", c["qk_nope_head_dim"] + Dr)
    w.add_uint32(f"{a}.attention.value_length_mla", c["v_head_dim"])
    w.add_uint32(f"{a}.expert_feed_forward_length", c["moe_intermediate_size"])
    w.add_uint32(f"{a}.expert_shared_count", c["n_shared_experts"])
    w.add_float32(f"{a}.expert_weights_scale", float(c["routed_scaling_factor"]))
    if c.get("norm_topk_prob"):
        w.add_bool(f"{a}.expert_weights_norm", True)
    w.add_uint32(f"{a}.rope.dimension_count", Dr)
    w.add_float32(f"{a}.rope.scaling.yarn_log_multiplier", 0.1 * float(rs["mscale_all_dim"]))
    if n_layers not in (26, 27):
        # llama.cpp calls a deepseek2 model "lite" (no q_lora) only at 26/27 layers and otherwise requires
        # this key; a real V2-Lite file (27 layers) has none. Only --layers quick checks get here.
        w.add_uint32(f"{a}.attention.q_lora_rank", 0)


def tensors_qwen3moe(c, n_layers):
    D, H, KV, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    E, Ie, V = c["num_experts"], c["moe_intermediate_size"], c["vocab_size"]
    assert not c.get("mlp_only_layers") and c.get("decoder_sparse_step", 1) == 1
    t = [("token_embd.weight", (D, V), "embd")]
    for i in range(n_layers):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", (D,), "norm"),
              (p + "attn_q.weight", (D, H * hd), "w"), (p + "attn_k.weight", (D, KV * hd), "w"),
              (p + "attn_v.weight", (D, KV * hd), "w"), (p + "attn_output.weight", (H * hd, D), "w"),
              (p + "attn_q_norm.weight", (hd,), "norm"), (p + "attn_k_norm.weight", (hd,), "norm"),
              (p + "ffn_norm.weight", (D,), "norm"),
              (p + "ffn_gate_inp.weight", (D, E), "router"),
              (p + "ffn_gate_exps.weight", (D, Ie, E), "w"), (p + "ffn_up_exps.weight", (D, Ie, E), "w"),
              (p + "ffn_down_exps.weight", (Ie, D, E), "w")]
    t += [("output_norm.weight", (D,), "norm"), ("output.weight", (D, V), "out")]
    return t


def meta_qwen3moe(w, c, n_layers):
    a = "qwen3moe"
    w.add_uint32(f"{a}.block_count", n_layers)
    w.add_uint32(f"{a}.context_length", c["max_position_embeddings"])
    w.add_uint32(f"{a}.embedding_length", c["hidden_size"])
    w.add_uint32(f"{a}.feed_forward_length", c["intermediate_size"])
    w.add_uint32(f"{a}.attention.head_count", c["num_attention_heads"])
    w.add_uint32(f"{a}.attention.head_count_kv", c["num_key_value_heads"])
    w.add_float32(f"{a}.rope.freq_base", float(c["rope_theta"]))
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", float(c["rms_norm_eps"]))
    w.add_uint32(f"{a}.expert_count", c["num_experts"])
    w.add_uint32(f"{a}.expert_used_count", c["num_experts_per_tok"])
    w.add_uint32(f"{a}.attention.key_length", c["head_dim"])
    w.add_uint32(f"{a}.attention.value_length", c["head_dim"])
    w.add_uint32(f"{a}.expert_feed_forward_length", c["moe_intermediate_size"])


MODELS = {
    "dsv2-lite": dict(config="DeepSeek-V2-Lite.json", arch="deepseek2", vocab="ggml-vocab-deepseek-llm.gguf",
                      tensors=tensors_deepseek2, meta=meta_deepseek2, name="DeepSeek-V2-Lite (synthetic)"),
    "qwen3-30b-a3b": dict(config="Qwen3-30B-A3B.json", arch="qwen3moe", vocab="ggml-vocab-qwen2.gguf",
                          tensors=tensors_qwen3moe, meta=meta_qwen3moe, name="Qwen3-30B-A3B (synthetic)"),
}


def copy_tokenizer(w, vocab_path, n_vocab):
    """tokenizer.ggml.* (and the chat template if any) from one of llama.cpp's vocab GGUFs."""
    rd = gguf.GGUFReader(vocab_path)
    for k, f in rd.fields.items():
        if not k.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            vals = f.contents()
            if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
                assert len(vals) == n_vocab, f"{vocab_path}: {k} has {len(vals)} entries, model vocab {n_vocab}"
            w.add_array(k, vals)
        else:
            w.add_key_value(k, f.contents(), t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="dsv2-lite", choices=sorted(MODELS))
    ap.add_argument("--out", default=None, help="output path (default build-llamacpp/<model>-synthetic-Q4_0.gguf)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--layers", type=int, default=None, help="write only the first N layers (quick checks)")
    ap.add_argument("--vocab-dir", default=None, help="folder holding llama.cpp's ggml-vocab-*.gguf files")
    args = ap.parse_args()
    m = MODELS[args.model]
    dirs = ([args.vocab_dir] if args.vocab_dir else []) + VOCAB_DIRS
    vocab = next((os.path.join(d, m["vocab"]) for d in dirs if os.path.isfile(os.path.join(d, m["vocab"]))), None)
    if vocab is None:
        raise SystemExit(f"make_synthetic_gguf: {m['vocab']} not found in {' or '.join(dirs)} (give --vocab-dir)")
    with open(os.path.join(ROOT, "configs", m["config"])) as f:
        c = json.load(f)
    n_layers = args.layers or c["num_hidden_layers"]
    out = args.out or os.path.join(ROOT, "build-llamacpp", f"{args.model}-synthetic-Q4_0.gguf")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tl = m["tensors"](c, n_layers)

    # types and byte sizes up front (tensor infos precede the data)
    plan = []
    total = 0
    for name, ne, kind in tl:
        n = int(np.prod(ne))
        if kind in ("norm", "router"):
            plan.append((name, ne, kind, Q.F32, n * 4))
        elif kind == "out":
            plan.append((name, ne, kind, Q.Q6_K, n // 256 * 210))
        else:
            plan.append((name, ne, kind, Q.Q4_0, n // 32 * 18))
        total += plan[-1][4]
    need = total * 1.02 + (1 << 30)
    st = os.statvfs(os.path.dirname(os.path.abspath(out)))
    if st.f_bavail * st.f_frsize < need:
        raise SystemExit(f"not enough disk for {out}: need {need / 1e9:.1f} GB")
    print(f"{args.model}: {n_layers} layers, {len(plan)} tensors, {total / 1e9:.2f} GB -> {out}", flush=True)

    w = gguf.GGUFWriter(out, m["arch"])
    w.add_name(m["name"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    m["meta"](w, c, n_layers)
    copy_tokenizer(w, vocab, c["vocab_size"])
    w.add_string("general.description", "random weights with the real shapes; made by tools/make_synthetic_gguf.py "
                                        f"(seed {args.seed}) for benchmarks only")
    for name, ne, kind, qt, nbytes in plan:
        if qt == Q.F32:
            w.add_tensor_info(name, tuple(reversed(ne)), np.dtype(np.float32), nbytes)
        else:
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            byte_shape = tuple(reversed(ne[1:])) + (ne[0] // bs * ts,)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    done = 0
    for name, ne, kind, qt, nbytes in plan:
        rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
        if kind == "norm":
            data = (1.0 + 0.1 * rng.standard_normal(ne[0])).astype(np.float32)
        elif kind == "router":
            data = (rng.standard_normal((ne[1], ne[0])) * (3.0 / math.sqrt(ne[0]))).astype(np.float32)
        elif qt == Q.Q6_K:
            data = q6_k_bytes(rng, ne[0], rows, ne[0])
        else:
            # fan_in = ne[0] (the dot-product length); for the embedding, unit-scale rows instead
            data = q4_0_bytes(rng, ne[0], rows, 1 if kind == "embd" else ne[0])
        assert data.nbytes == nbytes, (name, data.nbytes, nbytes)
        w.write_tensor_data(data)
        done += nbytes
        if kind != "norm" and (done * 10 // total) != ((done - nbytes) * 10 // total):
            print(f"  {done / 1e9:6.2f} / {total / 1e9:.2f} GB  {time.time() - t0:5.0f} s", flush=True)
    w.close()
    print(f"wrote {out} ({os.path.getsize(out) / 1e9:.2f} GB) in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
