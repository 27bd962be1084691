#!/usr/bin/env bash
# Run THERE (the GPU machine): the GPU tests that scripts/device/prebuild.sh built here, carried in
# build-shot/ with .devdeps (their shared libraries), in the order that matters most when device time is
# short, each under its own time limit. Logs go to $OUT; the exit status is the number of failed tests.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/device/devdeps_env.sh
krasis_device_init
krasis_devdeps_unpack || exit 1
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
ln -sfn "$PWD" /tmp/krsrc # the source path compiled into the tests
nvidia-smi -L | head -2
krasis_step "test_cuda_gemm (GEMV and cuBLASLt)" cuda_gemm.log timeout 30 build-shot/tests/test_cuda_gemm --quick
grep -E "checks,|check failed" "$OUT/cuda_gemm.log" | head -8
krasis_step "test_gpu_forward" gpu_forward.log timeout 90 build-shot/tests/test_gpu_forward
grep -E "check failed|checks,|SKIP" -A1 "$OUT/gpu_forward.log" | head -30
# the GEMV kernel for every decode GEMM (KRASIS_GPU_GEMV=1): decides whether it becomes the default
KRASIS_GPU_GEMV=1 krasis_step "test_gpu_forward, GEMV on" gpu_forward_gemv.log timeout 60 build-shot/tests/test_gpu_forward
grep -E "check failed|checks,|SKIP" -A1 "$OUT/gpu_forward_gemv.log" | head -20
krasis_step "test_gpu_pp (two stages on one GPU)" gpu_pp.log timeout 40 build-shot/tests/test_gpu_pp
grep -E "check failed|checks,|SKIP" -A1 "$OUT/gpu_pp.log" | head -12
krasis_step "test_moe_residency" moe_residency.log timeout 40 build-shot/test_moe_residency --quick
grep -E "check failed|checks,|SKIP" "$OUT/moe_residency.log" | head -8
# the host CPU (AVX-512): CPU attention at every level it runs, and its speed with all cores
krasis_step "test_attention" attention.log timeout 30 build-shot/tests/test_attention
tail -1 "$OUT/attention.log"
krasis_step "cpu_attention_bench" attention_bench.log timeout 60 build-shot/cpu_attention_bench --ctx 4096,16384,32768
cat "$OUT/attention_bench.log"
exit $failed
