#!/usr/bin/env bash
# Run THERE (the GPU machine, through the device tool, carrying .devdeps): builds krasis with CUDA for
# sm_90, runs the whole-model GPU test (test_gpu_forward: fixtures against transformers, hybrid and
# VRAM-resident experts against the CPU path, the demo model's greedy tokens) and the CUDA kernel tests,
# then times the demo model on the CPU and on the GPU (`krasis bench -m models/tiny-moe`).
# Optional: KRASIS_MEMCHECK=1 runs test_gpu_forward under compute-sanitizer memcheck too;
# KRASIS_SYNTH=dsv2-lite|qwen3-30b-a3b writes that synthetic Q4_0 GGUF (tools/make_synthetic_gguf.py, with
# gguf-py and the vocab from .peer/llamacpp-src.tar.xz: carry .peer) and benchmarks it: CPU decode, hybrid
# GPU decode (experts on the CPU), experts in VRAM; KRASIS_GGUF=path.gguf benchmarks an existing file.
# KRASIS_KERNEL_TESTS="test_cuda_gemm ..." narrows the kernel tests (default: all); KRASIS_BENCH_SET=gguf
# skips the demo-model benchmarks and keeps the GGUF's hybrid, persistent and capped runs.
# Logs go to $OUT (or ./device-out); the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/device/devdeps_env.sh
krasis_device_init
krasis_step build build.log krasis_device_build krasis test_gpu_forward test_gpu_pp test_cuda_ops test_cuda_gemm \
  test_cuda_router test_cuda_attention test_moe_gpu test_moe_residency
krasis_step "test_gpu_forward" gpu_forward.log build-device/tests/test_gpu_forward
grep -E "check failed|checks,|SKIP" -A1 "$OUT/gpu_forward.log" | head -60
krasis_step "test_gpu_pp (two stages on one GPU)" gpu_pp.log build-device/tests/test_gpu_pp
grep -E "check failed|checks,|SKIP|pipeline stage" -A1 "$OUT/gpu_pp.log" | head -30
cuda_tests() {
  local rc=0 t
  for t in ${KRASIS_KERNEL_TESTS:-test_cuda_ops test_cuda_gemm test_cuda_router test_cuda_attention test_moe_gpu}; do
    if [ -x build-device/tests/$t ]; then build-device/tests/$t --quick || rc=1; else build-device/$t --quick || rc=1; fi
  done
  return $rc
}
krasis_step "CUDA kernel tests" cuda_tests.log cuda_tests
grep -E "checks,|check failed" "$OUT/cuda_tests.log" | head -20
if [ "${KRASIS_MEMCHECK:-0}" = 1 ]; then
  krasis_step "memcheck test_gpu_forward" memcheck.log timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 \
    build-device/tests/test_gpu_forward
  grep -E "ERROR SUMMARY|checks," "$OUT/memcheck.log" | tail -3
fi
bench() { # [VAR=value] bench NAME ARGS...: one JSON line per configuration
  local name=$1; shift
  echo "--- $name: $*"
  timeout 300 build-device/krasis bench "$@" --json
}
T=$(nproc)
synth() {
  mkdir -p /tmp/peer && tar -xJf .peer/llamacpp-src.tar.xz -C /tmp/peer &&
    PYTHONPATH=/tmp/peer/llama.cpp/gguf-py python3 tools/make_synthetic_gguf.py --model "$KRASIS_SYNTH" \
      --out "/tmp/$KRASIS_SYNTH.gguf" --vocab-dir /tmp/peer/llama.cpp/models
}
if [ -n "${KRASIS_SYNTH:-}" ]; then
  krasis_step "synthetic GGUF $KRASIS_SYNTH" synth.log synth && KRASIS_GGUF=/tmp/$KRASIS_SYNTH.gguf
  tail -2 "$OUT/synth.log"
fi
bench_all() {
  if [ "${KRASIS_BENCH_SET:-full}" = full ]; then
    bench "demo CPU" -m models/tiny-moe --threads "$T" --decode 64 --prefill 128
    bench "demo GPU, float experts on the CPU" -m models/tiny-moe --gpu --threads "$T" --decode 64 --prefill 128
    bench "demo GPU, INT8 experts in VRAM" -m models/tiny-moe --gpu --expert-bits 8 --group-size 32 \
      --expert-mode persistent --threads "$T" --decode 64 --prefill 128
  fi
  [ -n "${KRASIS_GGUF:-}" ] || return 0
  local g="-m $KRASIS_GGUF --cache-dir /tmp/krasis-cache --threads $T"
  [ "${KRASIS_BENCH_SET:-full}" = full ] && bench "GGUF CPU" $g --decode 32 --prefill 512
  KRASIS_GPU_PROFILE=1 bench "GGUF GPU hybrid (experts on the CPU)" $g --gpu --expert-mode cpu --decode 64 \
    --prefill 512
  KRASIS_GPU_PROFILE=1 bench "GGUF GPU persistent, 10K prompt" $g --gpu --expert-mode persistent --decode 64 \
    --prefill 10240
  bench "GGUF GPU auto under --vram 10G (grouped), 10K prompt" $g --gpu --vram 10G --decode 16 --prefill 10240
  if [ "${KRASIS_BENCH_SET:-full}" = full ]; then
    for p in 1024 32768; do
      bench "GGUF GPU persistent, $p-token prompt" $g --gpu --expert-mode persistent --decode 16 --prefill $p
    done
    bench "GGUF GPU chunked, 10K prompt" $g --gpu --expert-mode chunked --decode 16 --prefill 10240
  fi
}
krasis_step "benchmarks" bench.log bench_all
grep -E "^---|decode_tok_s|error|GPU profile|GPU forward|experts:" "$OUT/bench.log" | head -60
exit $failed
