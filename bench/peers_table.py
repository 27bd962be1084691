#!/usr/bin/env python3
"""Collects the peer-benchmark numbers of scripts/device/peers.sh and prints one table with ratios.

  peers_table.py add RAW.jsonl --engine transformers HF.json
  peers_table.py add RAW.jsonl --engine llama.cpp --model M --mode gpu|host|gpu_ppT LOG   (llama-bench -o jsonl)
  peers_table.py add RAW.jsonl --engine krasis --model M --mode cpu|gpu_ppT [--args A] LOG (krasis bench --json)
      append normalized records (one per measured number) to RAW.jsonl
  peers_table.py table RAW.jsonl --config M=configs/X.json ... --out-prefix P [--tiny]
      prints the table and writes P.md, P.csv, P.json

Bounds (the "roofline" column), per token, from the config's shapes (the tensor list of
tools/make_synthetic_gguf.py, i.e. what the Q4_0 GGUF holds):
  * prefill on the GPU: FLOPs = 2 x (weights a token multiplies: attention projections, router, dense FFN,
    shared experts, top_k/E of the routed experts; not the embedding or lm_head) + causal attention
    2 x layers x heads x (d_qk + d_v) x (T+1)/2 (DeepSeek's MLA in its prefill form: d_qk 192, d_v 128),
    at the measured bf16 GEMM rate (default 790 TFLOP/s);
  * prefill with the experts in host RAM: every routed expert crosses the bus once per prompt, at the measured
    pinned host-to-device rate (no bound printed without that measurement), or the FLOP bound if lower;
  * decode on the GPU: Q4_0/Q6_K bytes a token reads (all non-routed weights, top_k/E of the routed experts)
    at the measured device copy rate (default 4300 GB/s);
  * decode with experts in host RAM: the routed-expert bytes at the host read bandwidth that krasis bench
    measured in the same run (its read_bw_gbs); for krasis' CPU-only decode, its own expert bytes per token
    (int4 layout, shared experts included) at that bandwidth, as krasis bench's roofline_pct.
"""

import argparse
import csv
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TFLOPS, DEFAULT_HBM_GBS = 790.0, 4300.0
HF_NAMES = {"DeepSeek-V2-Lite": "dsv2-lite", "Qwen3-30B-A3B": "qwen3-30b-a3b"}


# ------------------------------------------------------------------------------------------ add
def add(args):
    out = []
    if args.engine == "transformers":
        with open(args.file) as f:
            for r in json.load(f):
                if r.get("engine") == "ceilings":
                    out.append(dict(r, engine="ceilings"))
                    continue
                m = HF_NAMES.get(r.get("model"), r.get("model"))
                rec = dict(engine="transformers", model=m, mode="gpu", test=f"pp{r.get('tokens', 0)}",
                           tokens=r.get("tokens"), tok_s=r.get("tok_s"), status=r.get("status"),
                           detail={k: r.get(k) for k in ("attn_implementation", "experts_implementation", "dtype",
                                                          "transformers", "torch", "all_seconds", "peak_gib",
                                                          "loadavg_1m", "tiny")})
                out.append(rec)
    else:
        if not os.path.exists(args.file):
            return
        with open(args.file, errors="replace") as f:
            lines = [l for l in f if l.startswith("{")]
        for l in lines:
            try:
                r = json.loads(l)
            except json.JSONDecodeError:
                continue
            if args.engine == "llama.cpp":
                n_p, n_g = r.get("n_prompt", 0), r.get("n_gen", 0)
                test = f"pp{n_p}" if n_p else f"tg{n_g}"
                # the median of llama-bench's runs (its avg_ts is a mean, which one slow first run pulls down)
                samples = sorted(r.get("samples_ts") or [])
                med = samples[len(samples) // 2] if len(samples) % 2 else (
                    0.5 * (samples[len(samples) // 2 - 1] + samples[len(samples) // 2]) if samples else r.get("avg_ts"))
                out.append(dict(engine="llama.cpp", model=args.model, mode=args.mode.split("_")[0], test=test,
                                tokens=n_p or n_g, tok_s=med, mean_tok_s=r.get("avg_ts"), stddev=r.get("stddev_ts"),
                                status="ok",
                                detail={k: r.get(k) for k in ("build_commit", "gpu_info", "cpu_info", "n_gpu_layers",
                                                               "n_cpu_moe", "n_threads", "flash_attn", "n_batch",
                                                               "n_ubatch", "model_size", "samples_ts")}))
            else:  # krasis bench --json: one object with decode_tok_s and prefill_tok_s
                mode = args.mode.split("_")[0]
                d = {k: v for k, v in r.items() if k not in ("decode_tok_s", "prefill_tok_s")}
                d["args"] = args.args
                status = "ok"
                # `--gpu` is parsed by every command that takes the quantization flags; a bench whose JSON names
                # no GPU ran on the CPU, and its numbers must not stand in the GPU rows
                if mode in ("gpu", "host") and not any(("gpu" in k or "cuda" in k or "device" in k or "vram" in k)
                                             or (isinstance(v, str) and ("gpu" in v.lower() or "cuda" in v.lower()))
                                             for k, v in r.items() if k != "args"):
                    status = "ran with --gpu but its JSON names no GPU (CPU numbers?): left out of the table"
                out.append(dict(engine="krasis", model=args.model, mode=mode, test="decode", tokens=r.get("decode_steps"),
                                tok_s=r.get("decode_tok_s"), status=status, detail=d))
                if r.get("prefill_tokens"):
                    t = r["prefill_tokens"]
                    out.append(dict(engine="krasis", model=args.model, mode=mode, test=f"pp{t}", tokens=t,
                                    tok_s=r.get("prefill_tok_s"), status=status, detail=d))
        if not out:
            out.append(dict(engine=args.engine, model=args.model, mode=args.mode.split("_")[0], test=args.mode,
                            status="no result (see the step's log)"))
    with open(args.raw, "a") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")


# ------------------------------------------------------------------------------------------ bounds
def load_shapes():
    """make_synthetic_gguf's tensor lists (needs the gguf package on PYTHONPATH); None when unavailable."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import make_synthetic_gguf as g  # noqa: F401
        return g
    except Exception as e:  # no gguf package: bounds that need bytes are left out
        print(f"peers_table: no tensor shapes ({e}); byte bounds left out", file=sys.stderr)
        return None


def model_costs(g, key, cfg):
    """Per token: matmul FLOPs (without attention), attention FLOPs per unit of context, Q4_0 bytes read
    at decode (total, routed-expert part), and all routed-expert bytes of the model."""
    if cfg["model_type"] == "deepseek_v2":
        tl = g.tensors_deepseek2(cfg, cfg["num_hidden_layers"])
        E, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        H, dqk, dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    else:
        tl = g.tensors_qwen3moe(cfg, cfg["num_hidden_layers"])
        E, K = cfg["num_experts"], cfg["num_experts_per_tok"]
        H, dqk, dv = cfg["num_attention_heads"], cfg["head_dim"], cfg["head_dim"]
    flops = bytes_tok = bytes_routed_tok = bytes_routed_all = 0.0
    for name, ne, kind in tl:
        n = math.prod(ne)
        b = n * 4 if kind in ("norm", "router") else (n / 256 * 210 if kind == "out" else n / 32 * 18)
        frac = K / E if "_exps" in name else 1.0
        if kind in ("w", "router"):
            flops += 2 * n * frac
        if kind != "embd":
            bytes_tok += b * frac
        if "_exps" in name:
            bytes_routed_tok += b * frac
            bytes_routed_all += b
    attn_per_ctx = 2 * cfg["num_hidden_layers"] * H * (dqk + dv)  # x (T+1)/2 for a causal T-token prompt
    return dict(flops=flops, attn_per_ctx=attn_per_ctx, bytes_tok=bytes_tok, bytes_routed_tok=bytes_routed_tok,
                bytes_routed_all=bytes_routed_all)


# ------------------------------------------------------------------------------------------ table
def fmt(v, pct=False):
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.0f} %" if v >= 0.01 else f"{100 * v:.1f} %"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a, b):
    return a / b if a and b else None


def table(args):
    recs = []
    with open(args.raw) as f:
        for l in f:
            if l.strip():
                recs.append(json.loads(l))
    ceil = next((r for r in recs if r.get("engine") == "ceilings"), {})
    tflops = ceil.get("bf16_gemm_tflops") or DEFAULT_TFLOPS
    hbm = ceil.get("d2d_gbs") or DEFAULT_HBM_GBS
    h2d = ceil.get("h2d_pinned_gbs")
    g = load_shapes()
    cfgs = dict(c.split("=", 1) for c in args.config)

    def get(engine, model, mode, test):
        for r in recs:
            if ((r.get("engine"), r.get("model"), r.get("mode"), r.get("test")) == (engine, model, mode, test)
                    and r.get("tok_s") and str(r.get("status", "")).startswith("ok")):
                return r["tok_s"]
        return None

    host_bw = {r["model"]: r["detail"].get("read_bw_gbs") for r in recs
               if r.get("engine") == "krasis" and r.get("mode") == "cpu" and r.get("detail")}
    rows = []
    for model, cpath in cfgs.items():
        with open(cpath) as f:
            cfg = json.load(f)
        costs = model_costs(g, model, cfg) if (g and not args.tiny) else None
        tests = sorted({r["test"] for r in recs if r.get("model") == model and r.get("test", "").startswith("pp")
                        and r.get("mode") == "gpu"}, key=lambda t: int(t[2:]))
        for t in tests:
            T = int(t[2:])
            hf, ll, kr = get("transformers", model, "gpu", t), get("llama.cpp", model, "gpu", t), get("krasis", model, "gpu", t)
            bound = tflops * 1e12 / (costs["flops"] + costs["attn_per_ctx"] * (T + 1) / 2) if costs else None
            rows.append(dict(model=model, what=f"prefill {T} tok, all on GPU", transformers=hf, llama=ll, krasis=kr,
                             bound=bound, bound_kind=f"bf16 FLOPs at {tflops:.0f} TFLOP/s"))
        for t in sorted({r["test"] for r in recs if r.get("model") == model and r.get("mode") == "host"
                         and r.get("test", "").startswith("pp")}, key=lambda t: int(t[2:])):
            T = int(t[2:])
            ll, kr = get("llama.cpp", model, "host", t), get("krasis", model, "host", t)
            bound = None
            if costs and h2d:
                bus = T / (costs["bytes_routed_all"] / (h2d * 1e9))
                fl = tflops * 1e12 / (costs["flops"] + costs["attn_per_ctx"] * (T + 1) / 2)
                bound = min(bus, fl)
            rows.append(dict(model=model, what=f"prefill {T} tok, experts in host RAM", transformers=None, llama=ll,
                             krasis=kr, bound=bound,
                             bound_kind=f"Q4_0 experts once over the bus at {h2d:.0f} GB/s" if h2d else ""))
        tg = next((r["test"] for r in recs if r.get("model") == model and r.get("engine") == "llama.cpp"
                   and r.get("test", "").startswith("tg")), None)
        ll_gpu = get("llama.cpp", model, "gpu", tg) if tg else None
        rows.append(dict(model=model, what="decode, all on GPU", transformers=None, llama=ll_gpu,
                         krasis=get("krasis", model, "gpu", "decode"),
                         bound=hbm * 1e9 / costs["bytes_tok"] if costs else None,
                         bound_kind=f"Q4_0 bytes/token at {hbm:.0f} GB/s"))
        ll_host = get("llama.cpp", model, "host", tg) if tg else None
        kr_cpu = get("krasis", model, "cpu", "decode")
        kr_hybrid = get("krasis", model, "host", "decode")
        bw = host_bw.get(model)
        bound = bw * 1e9 / costs["bytes_routed_tok"] if (costs and bw) else None
        bk = f"Q4_0 routed-expert bytes/token at host {bw:.0f} GB/s" if bw else ""
        rows.append(dict(model=model, what="decode, experts in host RAM (krasis: hybrid)", transformers=None,
                         llama=ll_host, krasis=kr_hybrid, bound=bound, bound_kind=bk))
        # krasis alone on the CPU reads its own int4 layout, shared experts included: its bytes at its probe
        kd = next((r["detail"] for r in recs if (r.get("engine"), r.get("model"), r.get("mode"), r.get("test"))
                   == ("krasis", model, "cpu", "decode") and r.get("detail")), {})
        kb = kd.get("read_bw_gbs") * 1e9 / kd["bytes_per_token"] if kd.get("read_bw_gbs") and kd.get("bytes_per_token") else None
        rows.append(dict(model=model, what="decode, CPU only (krasis) vs llama.cpp experts in host RAM",
                         transformers=None, llama=ll_host, krasis=kr_cpu, bound=kb,
                         bound_kind=(f"krasis int{kd.get('expert_bits')} g{kd.get('group_size')} expert bytes/token "
                                     f"({kd['bytes_per_token'] / 1e9:.2f} GB) at its probe {kd['read_bw_gbs']:.0f} GB/s")
                         if kb else ""))
    for r in rows:
        r["krasis_vs_llama"] = ratio(r["krasis"], r["llama"])
        r["krasis_vs_hf"] = ratio(r["krasis"], r["transformers"])
        r["llama_vs_hf"] = ratio(r["llama"], r["transformers"])
        best = max([v for v in (r["krasis"], r["llama"], r["transformers"]) if v] or [0])
        r["best_of_bound"] = ratio(best, r["bound"])
        r["krasis_of_bound"] = ratio(r["krasis"], r["bound"])
    hdr = ["model", "measure (tok/s)", "transformers", "llama.cpp", "krasis", "bound", "krasis/llama", "krasis/HF",
           "llama/HF", "krasis of bound", "best of bound"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        x = lambda v: f"{v:.2f}x" if v else "-"  # noqa: E731
        lines.append("| " + " | ".join([r["model"], r["what"], fmt(r["transformers"]), fmt(r["llama"]), fmt(r["krasis"]),
                                        fmt(r["bound"]), x(r["krasis_vs_llama"]), x(r["krasis_vs_hf"]),
                                        x(r["llama_vs_hf"]), fmt(r["krasis_of_bound"], True),
                                        fmt(r["best_of_bound"], True)]) + " |")
    notes = [f"bounds: prefill bf16 FLOPs at {tflops:.0f} TFLOP/s{' (measured)' if ceil else ' (assumed)'}; "
             f"GPU decode Q4_0 bytes at {hbm:.0f} GB/s{' (measured)' if ceil else ' (assumed)'}; "
             + (f"host-to-device {h2d:.1f} GB/s (measured, pinned)" if h2d else "no host-to-device measurement")]
    bad = [r for r in recs if r.get("status") and not str(r["status"]).startswith("ok")]
    for r in bad:
        notes.append(f"{r.get('engine')} {r.get('model')} {r.get('mode', '')} {r.get('test', '')}: {r['status']}")
    text = "\n".join(lines + [""] + notes)
    print(text)
    with open(args.out_prefix + ".md", "w") as f:
        f.write(text + "\n")
    with open(args.out_prefix + ".csv", "w", newline="") as f:
        keys = ["model", "what", "transformers", "llama", "krasis", "bound", "bound_kind", "krasis_vs_llama",
                "krasis_vs_hf", "llama_vs_hf", "krasis_of_bound", "best_of_bound"]
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in keys})
    with open(args.out_prefix + ".json", "w") as f:
        json.dump({"rows": rows, "ceilings": ceil, "records": recs}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("raw")
    a.add_argument("file")
    a.add_argument("--engine", required=True, choices=["transformers", "llama.cpp", "krasis"])
    a.add_argument("--model", default=None)
    a.add_argument("--mode", default="gpu")
    a.add_argument("--args", default="")
    t = sub.add_parser("table")
    t.add_argument("raw")
    t.add_argument("--config", action="append", default=[], help="MODEL=configs/X.json")
    t.add_argument("--out-prefix", required=True)
    t.add_argument("--tiny", action="store_true", help="the configs were shrunk: no bounds")
    args = ap.parse_args()
    add(args) if args.cmd == "add" else table(args)


if __name__ == "__main__":
    main()
