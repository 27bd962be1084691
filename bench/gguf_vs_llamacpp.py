#!/usr/bin/env python3
"""krasis vs llama.cpp on the same GGUF file (issue 6, item 6).

For each thread count (default 1 and 2) and each round (default 3), alternately:
    llama-bench -m F -p 0 -n 64 -t T -r 1 -o json         (decode: 64 generated tokens)
    llama-bench -m F -p 512 -n 0 -t T -r 1 -o json        (prefill: a 512-token prompt)
    krasis bench -m F --threads T --decode 64 --prefill 512 --json  + --krasis-args (default: the Q4_0
                                                                      file's layout, see KRASIS_ARGS)
so that machine noise (the VM is shared) hits both engines alike; medians over the rounds. With --depth N,
the decode runs of both go over an N-token cache (llama-bench -d N, krasis bench --depth N).
Prints a table with decode / prefill tok/s of both, the krasis/llama.cpp ratios, and the roofline numbers:
bytes read per generated token (from the GGUF's tensor sizes: every non-expert weight once, the routed
experts x top_k / n_experts, one embedding row), achieved GB/s, and the machine's read bandwidth as krasis
bench measures it. Writes all raw runs as JSON (--out).

Usage: bench/gguf_vs_llamacpp.py -m FILE.gguf [--krasis PATH] [--llama-bench PATH] [--threads 1,2]
                                 [--rounds 3] [--decode 64] [--prefill 512] [--depth 0] [--no-krasis]
                                 [--out runs.json]
The GGUF: tools/make_synthetic_gguf.py (random weights, real DeepSeek-V2-Lite shapes, Q4_0 experts).
llama-bench: the llama-cpp-python 0.3.36 sdist's llama.cpp built as in tools/make_llamacpp_fixtures.py.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GGUF_PY = os.path.join(ROOT, "third_party", "llama_cpp_python-0.3.36", "vendor", "llama.cpp", "gguf-py")


# What a llama.cpp Q4_0 file holds, in krasis's layouts: Q4_0 -> INT4 g32 (an exact re-encoding) for
# experts, shared experts, attention and dense layers; the Q6_K output matrix -> INT8 (g32).
KRASIS_ARGS = "--expert-bits 4 --shared-bits 4 --attention-bits 4 --dense-bits 4 --lm-head-bits 8 --group-size 32"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def timed(cmd):
    """Run cmd; return (stdout, wall seconds, % of the machine that other processes used meanwhile)."""
    import resource
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, t0 = busy_s(), time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    b1, t1 = busy_s(), time.time()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}")
    own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    other = 100 * max(0.0, (b1 - b0) - own) / ((t1 - t0) * os.cpu_count())
    return r.stdout, t1 - t0, round(other, 1)


def gguf_bytes_per_token(path):
    """Bytes a decode step reads: all weights once, except routed experts (x top_k / n_experts) and the
    token embedding (one row)."""
    if os.path.isdir(GGUF_PY):
        sys.path.insert(0, GGUF_PY)
    import gguf
    rd = gguf.GGUFReader(path)
    arch = str(rd.fields["general.architecture"].contents())
    E = int(rd.fields[f"{arch}.expert_count"].contents())
    K = int(rd.fields[f"{arch}.expert_used_count"].contents())
    total = per_tok = 0
    for t in rd.tensors:
        nb = int(t.n_bytes)
        total += nb
        if "_exps." in t.name:
            per_tok += nb * K / E
        elif t.name == "token_embd.weight":
            per_tok += nb / int(t.shape[-1])
        else:
            per_tok += nb
    return per_tok, total, arch, E, K


def llama_bench(exe, model, threads, p, n, depth=0):
    cmd = [exe, "-m", model, "-p", str(p), "-n", str(n), "-t", str(threads), "-r", "1", "-o", "json"]
    if depth:
        cmd += ["-d", str(depth)]
    out, wall, other = timed(cmd)
    j = json.loads(out)
    assert len(j) == 1, j
    j = j[0]
    return {"engine": "llama.cpp", "kind": "decode" if n else "prefill", "threads": threads,
            "depth": depth, "tok_s": float(j["avg_ts"]), "wall_s": round(wall, 1), "other_load_pct": other,
            "build_commit": j.get("build_commit"), "cpu_info": j.get("cpu_info"), "cmd": " ".join(cmd)}


def krasis_bench(exe, model, threads, n_decode, n_prefill, extra, depth=0):
    cmd = [exe, "bench", "-m", model, "--threads", str(threads), "--decode", str(n_decode), "--prefill",
           str(n_prefill), "--json"] + (["--depth", str(depth)] if depth else []) + extra
    out, wall, other = timed(cmd)
    line = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    j = json.loads(line)
    j.update({"engine": "krasis", "wall_s": round(wall, 1), "other_load_pct_outer": other, "cmd": " ".join(cmd)})
    return j


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description="krasis vs llama.cpp on one GGUF")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--krasis", default=os.path.join(ROOT, "build-llamacpp", "krasis"))
    ap.add_argument("--llama-bench", default=os.path.join(ROOT, "third_party", "llama.cpp-build", "bin", "llama-bench"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--depth", type=int, default=0, help="decode over a cache of this many tokens (both engines)")
    ap.add_argument("--no-krasis", action="store_true", help="llama.cpp half only")
    ap.add_argument("--krasis-args", default=KRASIS_ARGS,
                    help=f"quantization flags for krasis bench (default: '{KRASIS_ARGS}')")
    ap.add_argument("--no-prefill", action="store_true")
    ap.add_argument("--out", default=None, help="write all runs as JSON here")
    ap.add_argument("--summarize", default=None, metavar="LOG",
                    help="print the table from the JSON lines of an earlier (possibly interrupted) run's output")
    a = ap.parse_args()
    threads = [int(x) for x in a.threads.split(",")]
    bpt, total, arch, E, K = gguf_bytes_per_token(a.model)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {started}, {cpu_model()}, {os.cpu_count()} CPUs; {a.model} ({arch}, {total / 1e9:.2f} GB, "
          f"{E} experts top-{K}; {bpt / 1e6:.0f} MB read per decoded token)", flush=True)
    runs = []
    if a.summarize:
        with open(a.summarize) as f:
            runs = [json.loads(ln) for ln in f if ln.startswith("{")]
        a.rounds = 0
    for rnd in range(a.rounds):
        for t in threads:
            r = llama_bench(a.llama_bench, a.model, t, 0, a.decode, a.depth)
            runs.append(r)
            print(json.dumps(r), flush=True)
            if not a.no_prefill:
                r = llama_bench(a.llama_bench, a.model, t, a.prefill, 0)
                runs.append(r)
                print(json.dumps(r), flush=True)
            if not a.no_krasis:
                r = krasis_bench(a.krasis, a.model, t, a.decode, 0 if a.no_prefill else a.prefill,
                                 a.krasis_args.split(), a.depth)
                runs.append(r)
                print(json.dumps(r), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"started": started, "model": a.model, "cpu": cpu_model(), "bytes_per_token": bpt,
                       "runs": runs}, f, indent=1)

    print()
    print(f"| threads | llama.cpp decode tok/s | krasis decode tok/s | decode ratio | llama.cpp prefill tok/s | "
          f"krasis prefill tok/s | prefill ratio | llama.cpp GB/s (roofline %) | krasis GB/s (roofline %) | "
          f"read bw GB/s | other load % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in threads:
        ld = med([r["tok_s"] for r in runs if r["engine"] == "llama.cpp" and r["kind"] == "decode" and r["threads"] == t])
        lp = med([r["tok_s"] for r in runs if r["engine"] == "llama.cpp" and r["kind"] == "prefill" and r["threads"] == t])
        ks = [r for r in runs if r["engine"] == "krasis" and r["threads"] == t]
        kd = med([r["decode_tok_s"] for r in ks])
        kp = med([r["prefill_tok_s"] for r in ks if r.get("prefill_tokens", 1) > 1])
        bw = med([r["read_bw_gbs"] for r in ks])
        kg = med([r["achieved_gbs"] for r in ks])
        lg = bpt * ld / 1e9
        oth = med([r["other_load_pct"] for r in runs if r["engine"] == "llama.cpp" and r["threads"] == t] +
                  [r["other_load_pct"] for r in ks])

        def f(x, d=2):
            return "n/a" if x != x else f"{x:.{d}f}"
        print(f"| {t} | {f(ld)} | {f(kd)} | {f(kd / ld)}x | {f(lp)} | {f(kp)} | {f(kp / lp)}x | "
              f"{f(lg)} ({f(100 * lg / bw, 0)}%) | {f(kg)} ({f(med([r['roofline_pct'] for r in ks]), 0)}%) | "
              f"{f(bw)} | {f(oth, 0)} |")
    for t in threads:
        n = {e: len([r for r in runs if r["engine"] == e and r["threads"] == t]) for e in ("llama.cpp", "krasis")}
        print(f"threads {t}: {n['llama.cpp']} llama-bench runs (decode + prefill), {n['krasis']} krasis runs")
    print("alternating rounds, medians; llama-bench -r 1 per invocation; "
          "targets (issue 6): decode >= 1.3x, prefill >= 1.5x.")


if __name__ == "__main__":
    main()
