#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in fuzz/ (small, valid inputs the fuzzers mutate):
safetensors files written by the safetensors package, GGUF files written by the gguf package (every
metadata value type, arrays, tensors), the small templates of tests/reference/templates/features.json,
and the fixtures' config.json files.      python3 tools/make_fuzz_seeds.py   (safetensors 0.8.0, gguf 0.19.0)
"""
import glob
import json
import os

import gguf
import numpy as np
from safetensors.numpy import save

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    rng = np.random.default_rng(7)
    write("fuzz_safetensors", "two_tensors", save({"a": rng.standard_normal((2, 3)).astype(np.float32),
                                                  "b": np.arange(4, dtype=np.float16)},
                                                 metadata={"format": "pt"}))
    write("fuzz_safetensors", "bf16_like", save({"w": np.arange(8, dtype=np.uint16).reshape(2, 4)}))
    write("fuzz_safetensors", "empty", save({}))

    path = "/tmp/krasis_seed.gguf"
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_uint32("qwen3moe.block_count", 2)
    w.add_float32("qwen3moe.rope.freq_base", 1e6)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "ab", "<s>"])
    w.add_array("tokenizer.ggml.token_type", [1, 1, 1, 3])
    w.add_array("tokenizer.ggml.merges", ["a b"])
    w.add_uint64("general.big", 1 << 40)
    w.add_int8("general.i8", -3)
    w.add_float64("general.f64", 0.25)
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(8).astype(np.float32))
    w.add_tensor("token_embd.weight", rng.standard_normal((4, 8)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as f:
        write("fuzz_gguf", "small_qwen3moe", f.read())

    features = json.load(open(os.path.join(ROOT, "tests", "reference", "templates", "features.json")))
    cases = features["cases"]
    n = 0
    for case in cases:
        src = case.get("source")
        if isinstance(src, str) and len(src) < 2000:
            write("fuzz_template", f"feature_{n:03d}", src)
            n += 1
    for cfg in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "*", "config.json"))):
        write("fuzz_config", os.path.basename(os.path.dirname(cfg)), open(cfg, "rb").read())
    print({t: len(os.listdir(os.path.join(OUT, t))) for t in sorted(os.listdir(OUT))})


if __name__ == "__main__":
    main()
# fuzz/corpus/fuzz_openai_parse/ holds four hand-written request bodies (chat minimal and with every
# field, completion with a text and with a token-list prompt).
