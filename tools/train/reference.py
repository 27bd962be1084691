#!/usr/bin/env python3
"""Reference values for the demo model (models/tiny-moe), computed with Hugging Face transformers in
float32 on the CPU (versions pinned in tools/requirements-fixtures.txt):

- held-out perplexity (sliding window, the definition `krasis perplexity` implements: windows of `ctx`
  tokens starting every `stride` tokens; each window scores only the tokens the previous window did not;
  the first token is never scored) on the whole held-out text and on an excerpt that the C test re-runs;
- greedy continuations of a few prompts (transformers' generate, do_sample=False) for the end-to-end test;
- three sampled continuations for the model card.

Writes models/tiny-moe/reference.json.   python3 tools/train/reference.py
"""
import json
import math
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from corpus import load_corpus, strip_gutenberg  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MODEL = os.path.join(ROOT, "models", "tiny-moe")
DATA = os.path.join(ROOT, "..", "shared", "data", "text")
EXCERPT_FILE = "pride_and_prejudice.txt"
EXCERPT_BYTES = 4000
PROMPTS = ["It is a truth universally acknowledged", "ROMEO:\nO, speak again", "Elizabeth looked at him and"]


@torch.no_grad()
def perplexity(model, ids, ctx, stride):
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + ctx, len(ids))
        logits = model(torch.tensor([ids[begin:end]])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        for j in range(max(prev_end, begin + 1), end):  # target ids[j] predicted at position j - 1
            nll -= logp[j - 1 - begin, ids[j]].item()
            count += 1
        prev_end = end
        if end == len(ids):
            break
    return math.exp(nll / count), count


def heldout_span(name):
    """(start, end) byte offsets in the original file of the held-out text (as load_corpus cuts it)."""
    with open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    _, heldout = load_corpus(DATA)
    names = sorted(n for n in os.listdir(DATA) if n.endswith(".txt"))
    piece = heldout[names.index(name)].rstrip("\n").encode()
    start = raw.find(piece)
    assert start >= 0, "held-out text not found verbatim in " + name
    return start, start + len(piece)


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(MODEL)
    out = {"generator": "tools/train/reference.py",
           "versions": {"transformers": transformers.__version__, "torch": torch.__version__}}

    names = sorted(n for n in os.listdir(DATA) if n.endswith(".txt"))
    _, heldout = load_corpus(DATA)
    full = {}
    for name, text in zip(names, heldout):
        ids = tok(text.rstrip("\n"))["input_ids"]
        ppl, n = perplexity(model, ids, 256, 128)
        full[name] = {"ppl": ppl, "tokens_scored": n, "ctx": 256, "stride": 128}
        print(f"held-out {name}: ppl {ppl:.3f} over {n} tokens")
    out["heldout"] = full

    start, end = heldout_span(EXCERPT_FILE)
    with open(os.path.join(DATA, EXCERPT_FILE), "rb") as f:
        raw = f.read()[start:start + EXCERPT_BYTES]
    excerpt = raw.decode("utf-8", errors="strict")
    ids = tok(excerpt)["input_ids"]
    ppl, n = perplexity(model, ids, 128, 64)
    out["excerpt"] = {"file": EXCERPT_FILE, "byte_start": start, "byte_len": EXCERPT_BYTES, "ctx": 128, "stride": 64,
                      "tokens": len(ids), "tokens_scored": n, "ppl": ppl}
    print(f"excerpt: ppl {ppl:.4f} over {n} tokens ({len(ids)} ids)")

    gens = []
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        g = model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False)[0].tolist()
        gens.append({"prompt": p, "prompt_ids": ids, "output_ids": g[len(ids):],
                     "output_text": tok.decode(g[len(ids):])})
        print(repr(p + gens[-1]["output_text"]))
    out["greedy"] = gens

    samples = []
    for i, p in enumerate(PROMPTS):
        torch.manual_seed(100 + i)
        ids = tok(p)["input_ids"]
        g = model.generate(torch.tensor([ids]), max_new_tokens=80, do_sample=True, temperature=0.8, top_k=40)[0]
        samples.append(p + tok.decode(g[len(ids):], skip_special_tokens=True))
    out["samples"] = samples
    with open(os.path.join(MODEL, "reference.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
