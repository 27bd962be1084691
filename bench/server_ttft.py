#!/usr/bin/env python3
"""Time to first token with and without the prefix cache, through `krasis serve` (not a test).

Starts the server on a free loopback port, sends a long system prompt + question (cold: a fresh
prefix), then the same conversation with one more user turn (warm: the prefix is in the KV cache),
and prints both TTFTs, the ratio, and the cached_tokens the server reported. Standard library only.
Usage: bench/server_ttft.py [--krasis build/krasis] [--model models/tiny-moe] [--rounds 5]"""
import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ttft(port, messages):
    """(seconds to the first content chunk, cached_tokens from the usage chunk)"""
    body = json.dumps({"messages": messages, "max_tokens": 4, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    first, cached = None, None
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        o = json.loads(line[6:])
        if first is None and o["choices"] and o["choices"][0]["delta"].get("content"):
            first = time.perf_counter() - t0
        if o.get("usage"):
            cached = o["usage"]["prompt_tokens_details"]["cached_tokens"]
    c.close()
    return first, cached


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--krasis", default=os.path.join(ROOT, "build", "krasis"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-moe"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--system-words", type=int, default=600)
    a = ap.parse_args()
    log = tempfile.NamedTemporaryFile(prefix="krasis-bench-", suffix=".log", delete=False)
    p = subprocess.Popen([a.krasis, "serve", "-m", a.model, "--port", "0"], stdout=log, stderr=log)
    try:
        port = None
        while port is None:
            if p.poll() is not None:
                raise SystemExit(open(log.name).read())
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(log.name).read())
            port = int(m.group(1)) if m else time.sleep(0.05)
        words = ("It is a truth universally acknowledged that a single man in possession of a good fortune "
                 "must be in want of a wife. ").split()
        cold, warm = [], []
        for r in range(a.rounds):
            system = f"Round {r}. " + " ".join(words[i % len(words)] for i in range(a.system_words))
            conv = [{"role": "system", "content": system}, {"role": "user", "content": "Tell me a story."}]
            t_cold, c_cold = ttft(port, conv)
            conv2 = conv + [{"role": "assistant", "content": "Once upon a time."}, {"role": "user", "content": "More."}]
            t_warm, c_warm = ttft(port, conv2)
            cold.append(t_cold)
            warm.append(t_warm)
            print(f"round {r}: cold TTFT {t_cold * 1e3:7.1f} ms ({c_cold} cached), "
                  f"warm TTFT {t_warm * 1e3:7.1f} ms ({c_warm} cached)")
        med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        print(f"median TTFT: cold {med(cold) * 1e3:.1f} ms, warm {med(warm) * 1e3:.1f} ms: "
              f"the prefix cache makes the first token {med(cold) / med(warm):.1f}x sooner")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        os.unlink(log.name)


if __name__ == "__main__":
    main()
