#!/bin/bash
# GPU MoE kernel: build (nvcc, CUDA runtime + cuBLAS only, no Debian -dev packages), test and benchmark
# in one go, for the device machine (README of the device tool: one call does everything).
#   scripts/device/run_moe.sh --build-only   # here: compile into build-gpumoe/dev (carry it to skip the
#                                            # compile there; it is rebuilt there if a library is missing)
#   scripts/device/run_moe.sh                # there: test_moe_gpu, memcheck on the quick test, bench
# Logs and results go to $OUT (default /tmp/moe_out).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/moe_out}
B=${MOE_BUILD:-build-gpumoe/dev}
CUDA=${CUDA_HOME:-/usr/local/cuda}
export PATH=$CUDA/bin:$PATH
export LD_LIBRARY_PATH=$CUDA/lib64:${LD_LIBRARY_PATH:-}
mkdir -p "$OUT" "$B"

build() {
    local cc="gcc -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -Isrc -Itests -I$CUDA/include"
    set -e
    nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo -Isrc -Xptxas -v \
        -c src/backend/cuda/moe_gemm.cu -o "$B/moe_gemm.o" 2> "$B/ptxas.txt"
    for f in src/backend/cuda/moe_layout.c src/backend/cpu/quant.c src/base/status.c; do
        $cc -Wno-format-truncation -c "$f" -o "$B/$(basename "$f" .c).o"
    done
    $cc -DKRASIS_SOURCE_DIR="\".\"" -c tests/test_moe_gpu.c -o "$B/test_moe_gpu.o"
    $cc -c bench/gpu_moe_bench.c -o "$B/gpu_moe_bench.o"
    local objs="$B/moe_gemm.o $B/moe_layout.o $B/quant.o $B/status.o"
    local libs="-L$CUDA/lib64 -lcudart_static -lstdc++ -lm -ldl -lpthread -lrt"
    g++ "$B/test_moe_gpu.o" $objs $libs -o "$B/test_moe_gpu"
    g++ "$B/gpu_moe_bench.o" $objs -lcublas $libs -o "$B/gpu_moe_bench"
    set +e
}

if [ "${1:-}" = "--build-only" ]; then build; exit $?; fi

date -u > "$OUT/info.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv >> "$OUT/info.txt" 2>&1
if [ ! -x "$B/gpu_moe_bench" ] || ldd "$B/gpu_moe_bench" | grep -q "not found"; then
    echo "building on the device machine" | tee -a "$OUT/info.txt"
    build || { echo "build failed"; exit 1; }
fi
cp "$B/ptxas.txt" "$OUT/" 2>/dev/null
set -o pipefail
"$B/test_moe_gpu" 2>&1 | tee "$OUT/test.txt"; trc=$?
echo "test_moe_gpu exit $trc"
msan=skipped
if command -v compute-sanitizer >/dev/null; then
    timeout 150 compute-sanitizer --tool memcheck --print-limit 20 "$B/test_moe_gpu" --quick > "$OUT/memcheck.txt" 2>&1
    msan="exit $?"; tail -n 3 "$OUT/memcheck.txt"
fi
echo "memcheck (quick test): $msan"
"$B/gpu_moe_bench" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt"; brc=$?
echo "== summary: test exit $trc, memcheck $msan, bench exit $brc"
grep -h "failed\|checks" "$OUT/test.txt" | tail -n 5
