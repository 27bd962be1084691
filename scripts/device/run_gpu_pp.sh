#!/usr/bin/env bash
# Run THERE (the GPU machine, through the device tool, carrying .devdeps): builds krasis with CUDA for
# sm_90 and runs the pipeline-parallel test (tests/test_gpu_pp.c: --pp 2 and 3 as stages on one GPU
# against the one-stage logits and greedy tokens, direct and host-bounced hand-offs, experts in VRAM per
# stage), then the demo model through `krasis run` and `krasis bench` with one and two stages, printing
# the start-up lines (the split, the hand-off path chosen after the test copy).
# With two or more GPUs (an nvidia-h200-x2 kind), KRASIS_PP_DEVICES=0,1 runs the same test with its
# stages on devices 0 and 1 (peer copies), and the benchmarks use --gpus 0,1; NCCL is not used.
# Optional: KRASIS_MEMCHECK=1 runs test_gpu_pp under compute-sanitizer memcheck too.
# Logs go to $OUT (or ./device-out); the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/device/devdeps_env.sh
krasis_device_init
krasis_step build build.log krasis_device_build krasis test_gpu_pp
krasis_step "test_gpu_pp" gpu_pp.log build-device/tests/test_gpu_pp
grep -E "check failed|checks,|SKIP|largest relative|pipeline stage" -A1 "$OUT/gpu_pp.log" | head -60
if [ "${KRASIS_MEMCHECK:-0}" = 1 ]; then
  krasis_step "memcheck test_gpu_pp" memcheck.log timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 \
    build-device/tests/test_gpu_pp
  grep -E "ERROR SUMMARY|checks," "$OUT/memcheck.log" | tail -3
fi
gpus=${KRASIS_PP_DEVICES:-0,0}
demo() {
  local k=build-device/krasis
  $k run -m models/tiny-moe -p "Once upon a time" -n 16 --gpu &&
    $k run -m models/tiny-moe -p "Once upon a time" -n 16 --gpus "$gpus" &&
    KRASIS_PP_BOUNCE=1 $k run -m models/tiny-moe -p "Once upon a time" -n 16 --gpus "$gpus" &&
    $k bench -m models/tiny-moe --gpu --decode 64 --prefill 128 --json &&
    $k bench -m models/tiny-moe --gpus "$gpus" --decode 64 --prefill 128 --json
}
krasis_step "demo model, one stage and --gpus $gpus" demo.log demo
grep -E "VRAM plan|pipeline stage|GPU forward|decode_tok_s|error" "$OUT/demo.log" | head -30
exit $failed
