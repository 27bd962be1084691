#!/usr/bin/env python3
"""Sanity check of tests/fixtures_gguf/ (made by tools/make_llamacpp_fixtures.py).

For every fixture: the files reference.json lists exist and parse with gguf-py; their tensor types are the
ones recorded; the .npy shapes are [len(tokens), n_vocab]; the recorded llama.cpp-vs-HF numbers (against
hf_logits.npy and, for quantized files, hf_dequant_<TYPE>.npy) follow from the stored arrays; and, when the llama.cpp build and tools/llamacpp_logits are there, llama.cpp run again on
each file reproduces llamacpp_<TYPE>.npy exactly (same build, same settings: deterministic).
Prints the llama.cpp-vs-HF table. Exit status 1 on any mismatch.

Run: python3 tools/check_llamacpp_fixtures.py [--no-rerun]
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
FX = os.path.join(ROOT, "tests", "fixtures_gguf")
LLAMA_DIR = os.path.join(ROOT, "third_party", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
BUILD = os.environ.get("LLAMACPP_BUILD", os.path.join(ROOT, "third_party", "llama.cpp-build"))
sys.path.insert(0, os.path.join(LLAMA_DIR, "gguf-py"))
import gguf  # noqa: E402


def main():
    rerun = "--no-rerun" not in sys.argv
    exe = os.path.join(BUILD, "llamacpp_logits")
    if rerun and not os.path.exists(exe):
        print(f"note: {exe} absent (run tools/make_llamacpp_fixtures.py once); not re-running llama.cpp")
        rerun = False
    bad = 0

    def fail(msg):
        nonlocal bad
        bad += 1
        print("FAIL " + msg)

    names = sorted(d for d in os.listdir(FX) if os.path.isfile(os.path.join(FX, d, "reference.json")))
    print("| fixture | type | max abs diff | rel | argmax agree |")
    print("|---|---|---|---|---|")
    for n in names:
        d = os.path.join(FX, n)
        ref = json.load(open(os.path.join(d, "reference.json")))
        T = len(ref["tokens"])
        hf = np.load(os.path.join(d, "hf_logits.npy"))
        if hf.shape != (T, ref["n_vocab"]) or hf.dtype != np.float32:
            fail(f"{n}: hf_logits.npy {hf.shape} {hf.dtype}")
        for t, fn in ref["files"].items():
            path = os.path.join(d, fn)
            rd = gguf.GGUFReader(path)
            types = {x.name: x.tensor_type.name for x in rd.tensors}
            if types != ref["tensor_types"][t]:
                fail(f"{n}/{fn}: tensor types differ from reference.json")
            ll = np.load(os.path.join(d, f"llamacpp_{t}.npy"))
            if ll.shape != hf.shape:
                fail(f"{n}: llamacpp_{t}.npy shape {ll.shape}")
                continue
            diff = float(np.abs(ll.astype(np.float64) - hf).max())
            rec = ref["llamacpp_vs_hf"][t]
            if abs(diff - rec["max_abs_diff"]) > 1e-9 * max(1.0, diff):
                fail(f"{n}/{t}: max abs diff {diff} != recorded {rec['max_abs_diff']}")
            agree = int((ll.argmax(-1) == hf.argmax(-1)).sum())
            if agree != rec["argmax_agree"]:
                fail(f"{n}/{t}: argmax agreement {agree} != recorded {rec['argmax_agree']}")
            if "vs_hf_dequant" in rec:
                hq = np.load(os.path.join(d, f"hf_dequant_{t}.npy"))
                dq = float(np.abs(ll.astype(np.float64) - hq).max())
                if hq.shape != hf.shape or abs(dq - rec["vs_hf_dequant"]["max_abs_diff"]) > 1e-9 * max(1.0, dq):
                    fail(f"{n}/{t}: hf_dequant_{t}.npy {hq.shape} / diff {dq} != recorded")
            if rerun:
                with tempfile.TemporaryDirectory() as td:
                    out = os.path.join(td, "x.npy")
                    subprocess.run([exe, path, out, "--tokens", ",".join(map(str, ref["tokens"])), "--threads", "1",
                                    "--kv", "f32", "--flash-attn", "0"], check=True, capture_output=True)
                    again = np.load(out)
                if not np.array_equal(again, ll):
                    fail(f"{n}/{t}: llama.cpp rerun differs from llamacpp_{t}.npy by {np.abs(again - ll).max():.3e}")
            print(f"| {n} | {t} | {diff:.2e} | {diff / float(np.abs(hf).max()):.1e} | {agree}/{T} |")
    print(f"{len(names)} fixtures, {'ok' if not bad else f'{bad} failures'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
