#!/usr/bin/env python3
"""CPU decode benchmark recorded in docs/BENCHMARKS.md: synthetic DeepSeek-V2-Lite, INT4 g32 experts,
1 and 2 threads, several runs each. The machine may be shared, so every run also records how much CPU
other processes used while it ran (from /proc/stat minus krasis's own rusage); runs where others used
more than 10% of the machine are reported separately as "contended".
Usage: bench/cpu_decode.py [KRASIS_BINARY] [RUNS] [extra krasis bench flags...]"""
import json, os, resource, statistics, subprocess, sys, time

here = os.path.dirname(os.path.abspath(__file__))
binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "build", "krasis")
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
extra = sys.argv[3:]
cfg = os.path.join(here, "..", "configs", "DeepSeek-V2-Lite.json")
ncpu = os.cpu_count()


def busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


rows = []
for threads in (1, 2):
    for _ in range(runs):
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        b0, t0 = busy_s(), time.time()
        out = subprocess.run([binary, "bench", "--synthetic", cfg, "--expert-bits", "4", "--group-size", "32",
                              "--threads", str(threads), "--decode", "32", "--prefill", "64", "--json"] + extra,
                             capture_output=True, text=True, check=True).stdout
        b1, t1 = busy_s(), time.time()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        r = json.loads(out)
        r.setdefault("other_load_pct", round(100 * max(0.0, (b1 - b0) - own) / ((t1 - t0) * ncpu), 1))
        rows.append(r)
        print(json.dumps(r), flush=True)


def summary(label, rs):
    for t in (1, 2):
        s = [r for r in rs if r["threads"] == t]
        if not s:
            continue
        d = [r["decode_tok_s"] for r in s]
        print(f"{label:10s} threads {t}: decode tok/s median {statistics.median(d):6.2f} (best {max(d):6.2f}) | "
              f"roofline % median {statistics.median(r['roofline_pct'] for r in s):5.1f} | read_bw GB/s median "
              f"{statistics.median(r['read_bw_gbs'] for r in s):5.2f} | prefill tok/s median "
              f"{statistics.median(r['prefill_tok_s'] for r in s):6.2f} | {len(s)} runs")


summary("all", rows)
summary("quiet", [r for r in rows if r["other_load_pct"] <= 10])
summary("contended", [r for r in rows if r["other_load_pct"] > 10])
