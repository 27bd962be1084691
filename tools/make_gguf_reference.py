#!/usr/bin/env python3
"""A small GGUF file written by the `gguf` package (0.19.0) with tensors of several ggml types, and the
package's own dequantization of each, for tests/test_gguf.c: tests/reference/gguf/tiny.gguf and
tests/reference/gguf/<tensor>.f32 (float32 little-endian, in ggml element order).
    python3 tools/make_gguf_reference.py
"""
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

K_SCALES = {T.Q6_K: [208], T.Q4_K: [0, 2]}  # byte offsets of the float16 scales in a block
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "reference", "gguf")


def main():
    rng = np.random.default_rng(11)
    os.makedirs(OUT, exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(OUT, "tiny.gguf"), "qwen3moe")
    w.add_uint32("qwen3moe.block_count", 1)
    w.add_string("general.name", "tiny")
    tensors = {
        "token_embd.weight": (T.F16, (6, 64)),      # torch [vocab, hidden] -> ggml ne {64, 6}
        "output_norm.weight": (T.F32, (64,)),
        "blk.0.attn_q.weight": (T.Q8_0, (32, 64)),
        "blk.0.ffn_up_exps.weight": (T.Q4_0, (2, 16, 64)),
        "blk.0.ffn_down_exps.weight": (T.Q6_K, (2, 4, 256)),
        "blk.0.attn_k.weight": (T.Q4_K, (3, 256)),
        "blk.0.attn_v.weight": (T.BF16, (5, 32)),
    }
    for name, (qt, shape) in tensors.items():
        x = rng.standard_normal(shape).astype(np.float32)
        if qt in (T.F32,):
            data = x
        elif qt == T.F16:
            data = x.astype(np.float16)
        elif qt in K_SCALES:  # the package cannot quantize K-quants: random blocks with finite scales
            block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qt]
            rows = int(np.prod(shape[:-1]))
            data = rng.integers(0, 256, size=(rows * shape[-1] // block_elems, block_bytes), dtype=np.uint8)
            for o in K_SCALES[qt]:
                data[:, o:o + 2] = (rng.standard_normal(len(data)) * 0.02).astype(np.float16).view(np.uint8).reshape(-1, 2)
            data = data.reshape(*shape[:-1], shape[-1] // block_elems * block_bytes)
        else:
            data = quantize(x, qt)
        w.add_tensor(name, data, raw_dtype=None if qt in (T.F32, T.F16) else qt)
        want = dequantize(np.asarray(data).view(np.uint8).reshape(-1) if qt not in (T.F32, T.F16) else data, qt)
        np.asarray(want, dtype="<f4").reshape(-1).tofile(os.path.join(OUT, name + ".f32"))
        print(f"{name:28s} {qt.name:5s} torch shape {shape}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", os.path.join(OUT, "tiny.gguf"), os.path.getsize(os.path.join(OUT, "tiny.gguf")), "bytes")


if __name__ == "__main__":
    main()
