#!/usr/bin/env bash
# Peer benchmarks on the device machine (issue 8 item 8, issue 9 item 5), in ONE device call:
#   (a) llama.cpp built with CUDA (sm_90) from the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp, carried
#       as .peer/llamacpp-src.tar.xz (tools/pack_llamacpp_src.sh), in the background;
#   (b) synthetic Q4_0 GGUFs at the real shapes (tools/make_synthetic_gguf.py), in the background;
#   (c) llama-bench fully on the GPU (-ngl 99: prefill at PEER_GPU_PP tokens, decode tg PEER_TG) and with its
#       experts in host RAM (-ngl 99 -ncmoe 99 -t THREADS: prefill PEER_HOST_PP, decode);
#   (d) transformers bf16 prefill (bench/hf_prefill_baseline.py), on the GPU while llama.cpp builds;
#   (e) krasis bench --synthetic (CPU decode, THREADS threads), and with --gpu when `krasis bench --help`
#       lists it: --expert-mode persistent (all in VRAM: prefill at PEER_GPU_PP, GPU-resident decode) and
#       --expert-mode cpu (hybrid: routed experts on the CPU; prefill PEER_HOST_PP, hybrid decode);
#   then one table (bench/peers_table.py): each number with its ratios to the others and to the rooflines.
# Run it through the device tool from the repository root, after ./scripts/device/fetch_deps.sh and
# ./tools/pack_llamacpp_src.sh here:   run  command="./scripts/device/peers.sh"  carry=[".devdeps", ".peer"]
#
# Settings (environment; defaults in brackets):
#   PEER_MODELS      models, any of dsv2-lite qwen3-30b-a3b                     [dsv2-lite qwen3-30b-a3b]
#   PEER_STEPS       steps to run, any of hf llama krasis                        [hf llama krasis]
#   PEER_GPU_PP      llama.cpp/krasis GPU prefill lengths; 32768 goes last       [1024 10240 32768]
#   PEER_HF_TOKENS   transformers prefill lengths                                [1024,10240,32768]
#   PEER_HOST_PP     llama.cpp prefill length with experts in host RAM          [4096]
#   PEER_TG PEER_REPS  decode tokens, llama-bench repetitions                   [64, 3]
#   PEER_THREADS PEER_JOBS  host threads for the benchmarks, build jobs          [nproc, nproc]
#   PEER_DEADLINE_S  seconds after start past which no new step starts          [540]
#   PEER_WORK        scratch: llama.cpp source/build, GGUFs (~26 GB), krasis build [build-peers-device]
#   KRASIS_GPU_ARGS  extra arguments for `krasis bench --gpu`                    []
#   PEER_LLAMA_ARGS  extra llama-bench arguments for every run, e.g. "-ub 2048"  [] (its defaults: -b 2048
#                    -ub 512, flash attention auto)
#   PEER_LLAMA_BENCH use this llama-bench instead of building one (skips (a))    []
#   PEER_KRASIS_BUILD krasis build folder (configured and built incrementally)   [$PEER_WORK/krasis]
#   PEER_TINY=1      a quick check of the whole flow on a CPU-only machine: 2-layer GGUFs, transformers on
#                    the CPU with --tiny configs, llama-bench -ngl 0 (give PEER_LLAMA_BENCH), short runs
# Everything goes to $OUT (default ./peers-out): peers.log (this output), raw.jsonl (one record per number, as
# soon as it is measured), peers.md / peers.csv / peers.json (the table), logs.tar.gz (every step's log).
# Each step has its own timeout; a failed step is reported and the others still run. Exit status: the
# number of failed steps.
set -uo pipefail
set -m # background jobs in their own process groups, so that a job past the deadline is ended with its children
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/peers-out}
mkdir -p "$OUT"
MODELS=${PEER_MODELS:-"dsv2-lite qwen3-30b-a3b"}
STEPS=${PEER_STEPS:-"hf llama krasis"}
GPU_PP=${PEER_GPU_PP:-"1024 10240 32768"}
HF_TOKENS=${PEER_HF_TOKENS:-"1024,10240,32768"}
HOST_PP=${PEER_HOST_PP:-4096}
TG=${PEER_TG:-64}
REPS=${PEER_REPS:-3}
THREADS=${PEER_THREADS:-$(nproc)}
JOBS=${PEER_JOBS:-$(nproc)}
DEADLINE=${PEER_DEADLINE_S:-540}
W=${PEER_WORK:-$ROOT/build-peers-device}
TINY=${PEER_TINY:-0}
KB=${PEER_KRASIS_BUILD:-$W/krasis}
LOGS=$W/logs
RAW=$OUT/raw.jsonl
rm -rf "$LOGS"; mkdir -p "$W" "$LOGS" # a warm machine keeps $W (builds, GGUFs); the logs are this run's
: >"$RAW"
exec > >(tee "$OUT/peers.log") 2>&1
export PYTHONUNBUFFERED=1 PATH=/usr/local/cuda/bin:$PATH
failed=0
summary=()

has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
left() { echo $((DEADLINE - SECONDS)); }
note() { echo "[$(printf '%4d' $SECONDS) s] $*"; }
config_of() { case $1 in dsv2-lite) echo configs/DeepSeek-V2-Lite.json ;; qwen3-30b-a3b) echo configs/Qwen3-30B-A3B.json ;; *) return 1 ;; esac; }
# krasis bench --synthetic builds the experts in RAM: in the tiny check, the test fixtures' small configs
krasis_config_of() {
  if [ "$TINY" = 1 ]; then case $1 in dsv2-lite) echo tests/fixtures/dsv2_lite/config.json ;; *) echo tests/fixtures/qwen3_moe/config.json ;; esac
  else config_of "$1"; fi
}
# step NAME LIMIT_S CMD...: runs CMD with a timeout (LIMIT_S, cut to the time left before the deadline), log in
# $LOGS/NAME.log; records ok / FAIL / TIMEOUT / SKIPPED with the seconds taken
step() {
  local name=$1 limit=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 10 ]; then
    summary+=("$(printf '%-34s %-10s' "$name" SKIPPED) (deadline)"); note "$name: skipped (deadline)"
    return 99
  fi
  [ "$limit" -gt $((l - 5)) ] && limit=$((l - 5))
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$? v=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then v="TIMEOUT(${limit}s)"; failed=$((failed + 1))
  elif [ $rc -ne 0 ]; then v="FAIL(rc=$rc)"; failed=$((failed + 1)); fi
  summary+=("$(printf '%-34s %-14s %4ss' "$name" "$v" $((SECONDS - t0)))")
  note "$name: $v ($((SECONDS - t0)) s)"
  [ "$v" = ok ] || tail -n 5 "$LOGS/$name.log" | sed 's/^/    | /'
  return $rc
}

for m in $MODELS; do config_of "$m" >/dev/null || { echo "peers.sh: unknown model '$m' in PEER_MODELS (dsv2-lite, qwen3-30b-a3b)"; exit 2; }; done
note "peers.sh: models [$MODELS], steps [$STEPS], GPU prefill [$GPU_PP], host-experts prefill $HOST_PP, tg $TG," \
     "threads $THREADS, deadline ${DEADLINE}s, tiny $TINY, work $W"

# ---------------------------------------------------------------- (a) llama.cpp build, background
LB=${PEER_LLAMA_BENCH:-}
LSRC=$W/llama-src/llama.cpp
GGUF_PY=$LSRC/gguf-py
build_llama() {
  [ -x "$W/llama-build/bin/llama-bench" ] && { echo "already built (warm machine)"; return 0; }
  [ -f .peer/llamacpp-src.tar.xz ] || { echo "no .peer/llamacpp-src.tar.xz: run ./tools/pack_llamacpp_src.sh here and carry .peer"; return 1; }
  # GIT_CEILING_DIRECTORIES: the source lies inside krasis' checkout, whose HEAD llama.cpp's build-info would
  # otherwise report as its own commit (the sdist's vendor/llama.cpp is ggml-org/llama.cpp@0c1e57098)
  GIT_CEILING_DIRECTORIES=$W/llama-src cmake -S "$LSRC" -B "$W/llama-build" $(command -v ninja >/dev/null && echo -G Ninja) -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DGGML_CUDA_NCCL=OFF \
    -DGGML_CUDA_FA_QUANTS=f16-f16 &&
    nice -n 5 cmake --build "$W/llama-build" --target llama-bench -j"$JOBS"
}
# the source (and gguf-py for (b)) is unpacked up front, whatever the build does
if [ ! -f "$LSRC/CMakeLists.txt" ] && [ -f .peer/llamacpp-src.tar.xz ]; then
  mkdir -p "$W/llama-src" && { tar -C "$W/llama-src" -xJf .peer/llamacpp-src.tar.xz ||
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .peer/llamacpp-src.tar.xz "$W/llama-src"; } ||
    echo "peers.sh: unpacking the llama.cpp source failed"
fi
llama_pid=
if has llama && [ -z "$LB" ]; then
  note "llama.cpp: building llama-bench (CUDA sm_90, -j$JOBS) in the background"
  t_llama0=$SECONDS
  build_llama >"$LOGS/llama_build.log" 2>&1 &
  llama_pid=$!
  LB=$W/llama-build/bin/llama-bench
fi

# ---------------------------------------------------------------- (b) GGUFs, background
declare -A gguf_pid gguf_file
if has llama; then
  for m in $MODELS; do
    f=$W/gguf/$m-synthetic-Q4_0$([ "$TINY" = 1 ] && echo -tiny).gguf
    gguf_file[$m]=$f
    [ -f "$f.done" ] && { note "gguf $m: present (warm machine)"; continue; }
    mkdir -p "$W/gguf"
    ( export PYTHONPATH=$GGUF_PY${PYTHONPATH:+:$PYTHONPATH}
      python3 tools/make_synthetic_gguf.py --model "$m" --out "$f" --vocab-dir "$LSRC/models" \
        $([ "$TINY" = 1 ] && echo --layers 2) && touch "$f.done" ) >"$LOGS/gguf_$m.log" 2>&1 &
    gguf_pid[$m]=$!
  done
fi

# ---------------------------------------------------------------- krasis build, background
krasis_pid=
if has krasis; then
  build_krasis() {
    . scripts/device/devdeps_env.sh
    if [ "$TINY" = 1 ] && command -v pkg-config >/dev/null && pkg-config --exists jansson; then
      KRASIS_PKGCFG=$(command -v pkg-config) # this machine has the -dev packages
    else
      krasis_devdeps_unpack || return 1
    fi
    cmake -S . -B "$KB" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DPKG_CONFIG_EXECUTABLE="$KRASIS_PKGCFG" $([ "$TINY" = 1 ] && echo -DKRASIS_CUDA=OFF) &&
      nice -n 5 cmake --build "$KB" --target krasis -j"$JOBS"
  }
  note "krasis: building (Release, CUDA sm_90) in the background"
  build_krasis >"$LOGS/krasis_build.log" 2>&1 &
  krasis_pid=$!
fi

# what the machine is (in the background: importing torch takes seconds the builds should not wait for)
{
  date -u; uname -srm; nproc; free -g | head -2; df -h "$W" | tail -1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,pcie.link.gen.current,pcie.link.width.current \
    --format=csv 2>&1 | tail -n +1
  lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)|Thread|NUMA node\(s\)"
  echo "cpu flags: $(grep -o -w -E 'avx2|avx512[a-z_0-9]*|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  nvcc --version 2>&1 | tail -1; cmake --version | head -1; gcc --version | head -1
  python3 -c "import torch, transformers, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__)"
} >"$OUT/env.txt" 2>&1 &
env_pid=$!

# ---------------------------------------------------------------- (d) transformers, on the GPU now
if has hf; then
  cfgs=(); for m in $MODELS; do cfgs+=("$(config_of "$m")"); done
  hf_args=(--tokens "$HF_TOKENS" --reps "$REPS" --warmup 1 --json-out "$W/hf.json" --measure-ceilings)
  [ "$TINY" = 1 ] && hf_args+=(--tiny --device cpu --dtype fp32)
  hf_limit=$((DEADLINE / 2)); [ "$TINY" = 1 ] && hf_limit=120
  note "transformers: ${cfgs[*]} at $HF_TOKENS tokens (limit ${hf_limit}s)"
  step hf_prefill "$hf_limit" python3 bench/hf_prefill_baseline.py "${cfgs[@]}" "${hf_args[@]}" --deadline-s $((hf_limit - 15))
  grep -E "tok/s|skipped|error|failed|ceiling" "$LOGS/hf_prefill.log" | sed 's/^/    /'
  [ -f "$W/hf.json" ] && python3 bench/peers_table.py add "$RAW" --engine transformers "$W/hf.json"
fi

wait "$env_pid"; sed 's/^/  env: /' "$OUT/env.txt" | head -16

# ---------------------------------------------------------------- waits
wait_job() { # wait_job NAME PID: waits at most until the deadline; kills the job past it
  local name=$1 pid=$2 t0=$SECONDS
  [ -n "$pid" ] || return 0
  while kill -0 "$pid" 2>/dev/null && [ "$(left)" -gt 20 ]; do sleep 2; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null # the job's process group (set -m): it and its children
    summary+=("$(printf '%-34s %-14s' "$name" "TIMEOUT(deadline)")"); failed=$((failed + 1)); note "$name: killed at the deadline"
    return 124
  fi
  wait "$pid"; local rc=$?
  local v=ok; [ $rc -eq 0 ] || { v="FAIL(rc=$rc)"; failed=$((failed + 1)); }
  summary+=("$(printf '%-34s %-14s %4ss waited' "$name" "$v" $((SECONDS - t0)))")
  note "$name: $v (waited $((SECONDS - t0)) s)"
  return $rc
}
krasis_ok=0
if has krasis; then
  wait_job krasis_build "$krasis_pid" && [ -x "$KB/krasis" ] && krasis_ok=1
  [ $krasis_ok = 1 ] || tail -n 8 "$LOGS/krasis_build.log" | sed 's/^/    | /'
fi
llama_ok=0
if has llama; then
  if [ -n "$llama_pid" ]; then
    wait_job llama_build "$llama_pid" && note "llama.cpp build took $((SECONDS - t_llama0)) s"
    tail -n 3 "$LOGS/llama_build.log" | sed 's/^/    | /'
  fi
  [ -x "$LB" ] && llama_ok=1
  for m in $MODELS; do
    [ -n "${gguf_pid[$m]:-}" ] && { wait_job "gguf_$m" "${gguf_pid[$m]}"; tail -n 1 "$LOGS/gguf_$m.log" | sed 's/^/    /'; }
  done
fi

# ---------------------------------------------------------------- (c) + (e), one model at a time
LB_NGL=99; [ "$TINY" = 1 ] && LB_NGL=0
llama_run() { # llama_run MODEL MODE LIMIT ARGS...: one llama-bench call, jsonl into raw.jsonl
  local m=$1 mode=$2 limit=$3; shift 3
  local f=${gguf_file[$m]} name="llama_${m}_${mode}"
  [ $llama_ok = 1 ] && [ -f "$f.done" ] || { summary+=("$(printf '%-34s %-14s' "$name" "SKIPPED(no build/gguf)")"); return 1; }
  step "$name" "$limit" "$LB" -m "$f" -r "$REPS" -t "$THREADS" -o jsonl "$@" ${PEER_LLAMA_ARGS:-}
  local rc=$?
  [ -f "$LOGS/$name.log" ] || return $rc
  python3 bench/peers_table.py add "$RAW" --engine llama.cpp --model "$m" --mode "$mode" "$LOGS/$name.log"
  grep -h '^{' "$LOGS/$name.log" | python3 -c "import json,sys
for l in sys.stdin:
    r = json.loads(l); print('    pp%d tg%d  %.1f tok/s +- %.1f  (runs %s)' % (r['n_prompt'], r['n_gen'], r['avg_ts'], r['stddev_ts'], r.get('samples_ts')))"
  return $rc
}
krasis_run() { # krasis_run MODEL MODE LIMIT ARGS...: one krasis bench --json call into raw.jsonl
  local m=$1 mode=$2 limit=$3; shift 3
  local name="krasis_${m}_${mode}"
  step "$name" "$limit" env LD_LIBRARY_PATH="${KRASIS_DEVDEPS_PREFIX:-/tmp/krasis-devdeps}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$KB/krasis" bench --synthetic "$(krasis_config_of "$m")" --threads "$THREADS" --json "$@"
  local rc=$?
  [ -f "$LOGS/$name.log" ] || return $rc
  python3 bench/peers_table.py add "$RAW" --engine krasis --model "$m" --mode "$mode" --args "$*" "$LOGS/$name.log"
  grep -h '^{' "$LOGS/$name.log" | cut -c1-220 | sed 's/^/    /'
  return $rc
}
# krasis' GPU path, where `krasis bench --help` lists it: "gpu" = everything in VRAM (--expert-mode persistent,
# against llama.cpp -ngl 99), "host" = hybrid, routed experts on the CPU (--expert-mode cpu, against -ncmoe 99)
krasis_gpu=0 gpu_mode_args=() host_mode_args=()
if [ $krasis_ok = 1 ]; then
  khelp=$(LD_LIBRARY_PATH="${KRASIS_DEVDEPS_PREFIX:-/tmp/krasis-devdeps}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$KB/krasis" bench --help 2>&1)
  grep -q -- "--gpu" <<<"$khelp" && krasis_gpu=1
  if grep -q -- "--expert-mode" <<<"$khelp"; then gpu_mode_args=(--expert-mode persistent); host_mode_args=(--expert-mode cpu); fi
  note "krasis bench --gpu: $([ $krasis_gpu = 1 ] && echo "listed (modes: ${gpu_mode_args[*]:-default} / ${host_mode_args[*]:-none})" || echo 'not listed (CPU decode only)')"
fi
short_pp=(); long_pp=()
for t in $GPU_PP; do if [ "$t" -ge 32768 ]; then long_pp+=("$t"); else short_pp+=("$t"); fi; done
join_c() { local IFS=,; echo "$*"; }
lim=150; [ "$TINY" = 1 ] && lim=60
for m in $MODELS; do
  if has llama; then
    [ ${#short_pp[@]} -gt 0 ] && llama_run "$m" gpu $lim -ngl $LB_NGL -p "$(join_c "${short_pp[@]}")" -n "$TG"
    llama_run "$m" host $lim -ngl $LB_NGL -ncmoe 99 -p "$HOST_PP" -n "$TG"
  fi
  if has krasis && [ $krasis_ok = 1 ]; then
    krasis_run "$m" cpu 120
    if [ $krasis_gpu = 1 ]; then
      for t in "${short_pp[@]}"; do krasis_run "$m" "gpu_pp$t" 120 --gpu "${gpu_mode_args[@]}" --prefill "$t" ${KRASIS_GPU_ARGS:-}; done
      [ ${#host_mode_args[@]} -gt 0 ] &&
        krasis_run "$m" "host_pp$HOST_PP" 120 --gpu "${host_mode_args[@]}" --prefill "$HOST_PP" ${KRASIS_GPU_ARGS:-}
    fi
  fi
done
# the long prompts last: they are the first thing to drop when time is short
for m in $MODELS; do
  for t in "${long_pp[@]}"; do
    has llama && llama_run "$m" "gpu_pp$t" $lim -ngl $LB_NGL -p "$t" -n 0
    has krasis && [ $krasis_gpu = 1 ] && krasis_run "$m" "gpu_pp$t" 150 --gpu "${gpu_mode_args[@]}" --prefill "$t" ${KRASIS_GPU_ARGS:-}
  done
done

# ---------------------------------------------------------------- table
cfg_args=(); for m in $MODELS; do cfg_args+=(--config "$m=$(config_of "$m")"); done
PYTHONPATH=$GGUF_PY${PYTHONPATH:+:$PYTHONPATH} python3 bench/peers_table.py table "$RAW" "${cfg_args[@]}" \
  --out-prefix "$OUT/peers" $([ "$TINY" = 1 ] && echo --tiny)
echo
echo "== steps"; printf '%s\n' "${summary[@]}"
note "done; $failed failed step(s)"
tar -C "$W" -czf "$OUT/logs.tar.gz" logs $( [ -f "$W/hf.json" ] && echo hf.json) 2>/dev/null
exit $failed
