#!/usr/bin/env python3
"""Hugging Face transformers prefill baseline (issue 9 item 5): a model built from a config.json with random
weights directly on the GPU in bf16 (nothing downloaded), transformers' default attention (sdpa) and default
experts implementation (transformers 5: grouped_mm where the model supports it), timing one forward pass over
T random tokens: CUDA events, warm-up passes first, median of --reps timed passes.

The pass is what a server's prefill does: all layers over the prompt with the KV cache filled (use_cache),
logits for the last position only (logits_to_keep=1, as llama.cpp and krasis compute them).

Usage:
  python3 bench/hf_prefill_baseline.py configs/DeepSeek-V2-Lite.json [configs/Qwen3-30B-A3B.json ...]
      [--tokens 1024,10240,32768] [--reps 3] [--warmup 1] [--json-out FILE] [--deadline-s S]
      [--device cuda] [--dtype bf16|fp32] [--tiny] [--measure-ceilings]
  --measure-ceilings first times a bf16 8192^3 GEMM and device / pinned host-to-device copies (the bounds).
  --tiny shrinks the config (2 layers, small widths, 8 experts) for a quick check on a CPU.
  --deadline-s: wall-clock seconds from the start after which no new length starts; a length is also skipped
  when the estimate from the previous one (time x T ratio^1.5, x (warm-up + reps)) would pass it.
Prints one line per (model, tokens) and, with --json-out, writes a JSON list of the same records
(one per model and length; status "ok", "skipped: ..." or "error: ...").
"""

import argparse
import json
import math
import os
import sys
import time

T_START = time.time()


def shrink(cfg):
    """A tiny version of the same family for a CPU check: same code paths, small widths."""
    c = dict(cfg)
    c.update(num_hidden_layers=2, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
             num_attention_heads=4, vocab_size=512, max_position_embeddings=4096)
    if c.get("model_type") == "deepseek_v2":
        c.update(n_routed_experts=8, num_experts_per_tok=2, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                 v_head_dim=16, num_key_value_heads=4, first_k_dense_replace=1, n_shared_experts=1)
    else:
        c.update(num_experts=8, num_experts_per_tok=2, num_key_value_heads=2, head_dim=32)
    c.pop("bos_token_id", None)
    c.pop("eos_token_id", None)
    return c


def build_model(cfg_dict, device, dtype):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    d = dict(cfg_dict)
    model_type = d.pop("model_type")
    config = AutoConfig.for_model(model_type, **d)
    t0 = time.time()
    # created on the device, initialised there by transformers' own _init_weights (random normal): no host copy
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    info = {
        "model_class": type(model).__name__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "experts_implementation": None,
        "params": sum(p.numel() for p in model.parameters()),
        "build_s": round(time.time() - t0, 2),
    }
    try:
        info["experts_implementation"] = model.get_experts_implementation()
    except Exception:  # older transformers: no such API
        info["experts_implementation"] = getattr(model.config, "_experts_implementation", None)
    if isinstance(info["experts_implementation"], dict):
        info["experts_implementation"] = info["experts_implementation"].get("", str(info["experts_implementation"]))
    return model, info


def time_prefill(model, vocab, T, reps, warmup, device):
    import torch

    g = torch.Generator(device="cpu").manual_seed(T)
    ids = torch.randint(0, vocab, (1, T), generator=g).to(device)
    cuda = device.startswith("cuda")

    def one():
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return out.logits

    for _ in range(warmup):
        one()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            logits = one()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            logits = one()
            times.append(time.perf_counter() - t0)
    finite = bool(torch.isfinite(logits.float()).all().item())
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return med, times, finite, peak


def measure_ceilings(device):
    """The GPU's own ceilings, measured now: bf16 8192^3 GEMM TFLOP/s on random data, device-to-device copy
    GB/s (bytes read + written), pinned host-to-device copy GB/s. Medians over 10 timed calls after 3 warm-ups."""
    import torch

    def timed(fn, n=10, warm=3):
        for _ in range(warm):
            fn()
        ts = []
        for _ in range(n):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) / 1e3)
        return sorted(ts)[n // 2]

    N = 8192
    x = torch.randn(N, N, device=device, dtype=torch.bfloat16)
    y = torch.randn(N, N, device=device, dtype=torch.bfloat16)
    gemm = 2 * N**3 / timed(lambda: x @ y) / 1e12
    del x, y
    src = torch.empty(2 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    d2d = 2 * src.numel() / timed(lambda: dst.copy_(src)) / 1e9
    del src, dst
    host = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    h2d = host.numel() / timed(lambda: dev.copy_(host, non_blocking=True), n=5, warm=2) / 1e9
    del host, dev
    torch.cuda.empty_cache()
    return {"kind": "ceilings", "bf16_gemm_tflops": gemm, "d2d_gbs": d2d, "h2d_pinned_gbs": h2d}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+", help="config.json files (configs/*.json)")
    ap.add_argument("--tokens", default="1024,10240,32768")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--tiny", action="store_true", help="shrink each config (CPU check)")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--deadline-s", type=float, default=None)
    ap.add_argument("--measure-ceilings", action="store_true",
                    help="first measure the bf16 GEMM rate and the copy bandwidths (CUDA only)")
    args = ap.parse_args()

    import torch
    import transformers

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("hf_prefill_baseline: --device cuda but torch sees no CUDA device (use --device cpu --tiny here)")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    lengths = [int(x) for x in args.tokens.split(",") if x]
    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"}
    print(f"hf_prefill_baseline: torch {env['torch']}, transformers {env['transformers']}, {env['gpu']}", flush=True)
    records = []

    def flush():
        if args.json_out:
            with open(args.json_out + ".tmp", "w") as f:
                json.dump(records, f, indent=1)
            os.replace(args.json_out + ".tmp", args.json_out)

    if args.measure_ceilings and args.device.startswith("cuda"):
        try:
            c = measure_ceilings(args.device)
            records.append(dict(c, engine="ceilings", **env))
            print(f"ceilings: bf16 GEMM {c['bf16_gemm_tflops']:.0f} TFLOP/s, device copy {c['d2d_gbs']:.0f} GB/s, "
                  f"pinned host-to-device {c['h2d_pinned_gbs']:.1f} GB/s", flush=True)
        except Exception as e:
            print(f"ceilings: measurement failed: {e}", flush=True)
        flush()
    for path in args.configs:
        with open(path) as f:
            cfg = json.load(f)
        if args.tiny:
            cfg = shrink(cfg)
        name = os.path.splitext(os.path.basename(path))[0]
        base = dict(model=name, config=path, engine="transformers", dtype=args.dtype, tiny=args.tiny, **env)
        if args.deadline_s and time.time() - T_START > args.deadline_s:
            records.append(dict(base, status="skipped: deadline before build"))
            flush()
            continue
        try:
            model, info = build_model(cfg, args.device, dtype)
        except Exception as e:  # one model failing must not hide the other's numbers
            records.append(dict(base, status=f"error: build: {type(e).__name__}: {e}"[:400]))
            print(f"{name}: build failed: {e}", flush=True)
            flush()
            continue
        base.update(info)
        print(f"{name}: {info['model_class']} {info['params'] / 1e9:.2f} B params, attention "
              f"{info['attn_implementation']}, experts {info['experts_implementation']}, built in {info['build_s']} s",
              flush=True)
        prev = None  # (T, seconds)
        for T in lengths:
            rec = dict(base, tokens=T)
            left = args.deadline_s - (time.time() - T_START) if args.deadline_s else math.inf
            if prev:
                est = prev[1] * (T / prev[0]) ** 1.5 * (args.warmup + args.reps)
                if est > left:
                    rec["status"] = f"skipped: estimated {est:.0f} s > {left:.0f} s left"
                    records.append(rec)
                    print(f"{name} T={T}: {rec['status']}", flush=True)
                    flush()
                    continue
            try:
                med, times, finite, peak = time_prefill(model, cfg["vocab_size"], T, args.reps, args.warmup, args.device)
            except torch.cuda.OutOfMemoryError as e:
                rec["status"] = f"error: out of memory: {str(e)[:200]}"
                records.append(rec)
                print(f"{name} T={T}: out of memory", flush=True)
                torch.cuda.empty_cache()
                flush()
                continue
            except Exception as e:
                rec["status"] = f"error: {type(e).__name__}: {e}"[:400]
                records.append(rec)
                print(f"{name} T={T}: {rec['status']}", flush=True)
                flush()
                continue
            prev = (T, med)
            rec.update(status="ok" if finite else "ok (non-finite logits)", seconds=med, all_seconds=times,
                       tok_s=T / med, peak_gib=peak, reps=args.reps, warmup=args.warmup,
                       loadavg_1m=os.getloadavg()[0])  # the host was building llama.cpp meanwhile: say how busy
            records.append(rec)
            print(f"{name} T={T}: {med * 1e3:.1f} ms  {T / med:,.0f} tok/s  (runs {[round(t * 1e3, 1) for t in times]} ms"
                  f"{', peak %.1f GiB' % peak if peak else ''}{'' if finite else ', NON-FINITE logits'})", flush=True)
            flush()
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    flush()


if __name__ == "__main__":
    main()
