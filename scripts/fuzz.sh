#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each for a bounded time over
# its committed corpus (fuzz/corpus/<target>/). New inputs go to a scratch folder, so the repository is
# not changed; a crash fails the run and leaves the input in build-fuzz/. Usage: ./scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
# CPU-only: with the CUDA library in, targets would link through nvcc, whose g++ host rejects -fsanitize=fuzzer
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKRASIS_FUZZ=ON -DKRASIS_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_safetensors fuzz_gguf fuzz_template fuzz_config fuzz_openai_parse fuzz_gguf_model
for target in fuzz_safetensors fuzz_gguf fuzz_template fuzz_config fuzz_openai_parse fuzz_gguf_model; do
  scratch=$(mktemp -d)
  echo "== $target (${seconds}s)"
  (cd build-fuzz && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 \
    "./fuzz/$target" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
    "$scratch" "../fuzz/corpus/$target" 2>&1 | tail -n 3)
  rm -rf "$scratch"
done
