#!/usr/bin/env bash
# Run HERE (the development machine): builds the GPU tests and krasis for sm_90 in build-shot/, so that a
# device call spends no device time compiling. The source path compiled into the tests (KRASIS_SOURCE_DIR,
# where they find fixtures and models) is /tmp/krsrc, a link to this checkout here and to the repository
# copy there (scripts/device/run_prebuilt.sh makes it). Then run, carrying .devdeps and the binaries:
#   device run "bash scripts/device/run_prebuilt.sh"  carry: .devdeps build-shot/tests/test_cuda_gemm
#     build-shot/tests/test_gpu_forward build-shot/tests/test_gpu_pp build-shot/test_moe_residency
#     build-shot/tests/test_attention build-shot/cpu_attention_bench
set -euo pipefail
cd "$(dirname "$0")/../.."
ln -sfn "$PWD" /tmp/krsrc
cmake -S /tmp/krsrc -B build-shot -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build build-shot -j"$(nproc)" --target test_cuda_gemm test_gpu_forward test_gpu_pp test_moe_residency \
  test_attention cpu_attention_bench
