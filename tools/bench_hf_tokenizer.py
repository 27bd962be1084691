#!/usr/bin/env python3
"""Encodes ../shared/data/text with the Hugging Face `tokenizers` Qwen3 tokenizer on one thread, prints
MB/s and tokens/s, and (given krasis's tokenizer_bench output or binary) the ratio krasis / HF.
Usage: tools/bench_hf_tokenizer.py [--krasis build/tokenizer_bench]   (tokenizers==0.23.3)"""
import os, sys, time, subprocess, re
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data = os.path.join(root, "..", "shared", "data")
tok = Tokenizer.from_file(os.path.join(data, "tokenizers", "qwen3", "tokenizer.json"))
files = [os.path.join(data, "text", f) for f in ("tinyshakespeare.txt", "pride_and_prejudice.txt")]
total_b = total_t = total_s = 0.0
for f in files:
    text = open(f, encoding="utf-8").read()
    nbytes = len(text.encode("utf-8"))
    best = 1e30
    for _ in range(3):
        t0 = time.perf_counter()
        n = len(tok.encode(text, add_special_tokens=False).ids)
        best = min(best, time.perf_counter() - t0)
    print(f"{os.path.basename(f):28s} {nbytes:9d} bytes {n:8d} tokens  {nbytes/best/1e6:7.2f} MB/s  {n/best:9.0f} tokens/s  (whole file, one call)")
    lines = text.splitlines(keepends=True)
    t0 = time.perf_counter()
    nl = sum(len(tok.encode(l, add_special_tokens=False).ids) for l in lines)
    dl = time.perf_counter() - t0
    print(f"{'':28s} {nbytes:9d} bytes {nl:8d} tokens  {nbytes/dl/1e6:7.2f} MB/s  {nl/dl:9.0f} tokens/s  (one call per line)")
    total_b += nbytes; total_t += n; total_s += best
hf = total_b / total_s / 1e6
print(f"HF tokenizers total: {hf:.2f} MB/s, {total_t/total_s:.0f} tokens/s")
if "--krasis" in sys.argv:
    exe = sys.argv[sys.argv.index("--krasis") + 1]
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    print(out, end="")
    kr = float(re.search(r"krasis total: ([0-9.]+) MB/s", out).group(1))
    print(f"ratio krasis/HF: {kr/hf:.2f}")
