#!/usr/bin/env python3
"""Reference dequantization of ggml block formats by the `gguf` Python package (pinned below), on random
blocks, for tests/test_ggml_quants.c. Random bytes everywhere, except that the float16 block scales are
set to random finite values (random bytes would make NaN/inf scales, which tell nothing).

Writes tests/reference/ggml_quants/{NAME}.raw (the blocks), {NAME}.f32 (the expected float32 values,
little-endian) and index.json.      gguf==0.19.0, numpy 2.4.6:  python3 tools/make_ggml_quant_reference.py
"""
import json
import os
from importlib.metadata import version

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "reference", "ggml_quants")
# byte offsets of the float16 scales inside one block
SCALES = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q2_K: [80, 82], T.Q3_K: [108],
          T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_NL: [0], T.IQ4_XS: [0]}
BLOCKS = 6


def main():
    rng = np.random.default_rng(2026)
    os.makedirs(OUT, exist_ok=True)
    index = {"generator": "tools/make_ggml_quant_reference.py", "gguf": version("gguf"), "numpy": np.__version__,
             "types": []}
    for t, offs in SCALES.items():
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for o in offs:
            scale = (rng.standard_normal(BLOCKS) * 0.02).astype(np.float16)
            raw[:, o:o + 2] = scale.view(np.uint8).reshape(BLOCKS, 2)
        want = dequantize(raw.reshape(-1), t).astype(np.float32).reshape(-1)
        assert want.size == BLOCKS * block_elems and np.isfinite(want).all()
        add(index, t.name, int(t), raw.tobytes(), want)
    for t, dtype in ((T.F16, np.float16), (T.F32, np.float32)):
        raw = (rng.standard_normal(96) * 3).astype(dtype).view(np.uint8).reshape(-1)
        add(index, t.name, int(t), raw.tobytes(), dequantize(raw, t))
    bf = ((rng.standard_normal(96).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)).view(np.uint8)
    add(index, "BF16", int(T.BF16), bf.tobytes(), dequantize(bf, T.BF16))
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


def add(index, name, tid, raw, want):
    with open(os.path.join(OUT, name + ".raw"), "wb") as f:
        f.write(raw)
    with open(os.path.join(OUT, name + ".f32"), "wb") as f:
        f.write(np.asarray(want, dtype="<f4").tobytes())
    index["types"].append({"name": name, "type": tid, "elements": int(np.asarray(want).size)})
    print(f"{name:7s} {len(raw):5d} bytes -> {np.asarray(want).size} values")


if __name__ == "__main__":
    main()
