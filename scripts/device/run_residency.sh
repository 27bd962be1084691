#!/bin/bash
# Expert residency (moe_residency, moe_cache): build with nvcc + gcc only (CUDA runtime, no Debian -dev
# packages), run test_moe_residency and the residency benchmark, in one go for the device machine.
#   scripts/device/run_residency.sh --build-only   # here: compile into build-gpumoe/res (carry it; it is
#                                                  # rebuilt there if a library is missing)
#   scripts/device/run_residency.sh                # there: test (+ memcheck on it), bench
# Logs go to $OUT (default /tmp/residency_out). BENCH_ARGS=--quick for a smoke run, NO_BENCH=1 for none.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/residency_out}
B=${RES_BUILD:-build-gpumoe/res}
CUDA=${CUDA_HOME:-/usr/local/cuda}
export PATH=$CUDA/bin:$PATH
export LD_LIBRARY_PATH=$CUDA/lib64:${LD_LIBRARY_PATH:-}
mkdir -p "$OUT" "$B"

build() {
    local cc="gcc -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -Isrc -Itests -I$CUDA/include"
    local nv="nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -Isrc -Iinclude --expt-relaxed-constexpr"
    set -e
    for f in moe_gemm moe_residency backend ops; do
        $nv -c src/backend/cuda/$f.cu -o "$B/$f.o" &
    done
    # the C side: the GPU cache and its helpers, the CPU quantizer and (for the shared cache helpers of
    # weights/expert_cache.c) the CPU MoE pieces it links against
    for f in src/backend/cuda/moe_layout.c src/backend/cuda/moe_cache.c src/backend/cuda/expert_mode.c \
             src/weights/expert_cache.c src/base/mapfile.c src/base/status.c src/backend/cpu/quant.c \
             src/backend/cpu/moe.c src/backend/cpu/isa.c src/backend/cpu/kernels_scalar.c \
             src/backend/cpu/threadpool.c src/backend/cpu/numa.c; do
        $cc -c "$f" -o "$B/$(basename "$f" .c).o"
    done
    $cc -mavx2 -mfma -c src/backend/cpu/kernels_avx2.c -o "$B/kernels_avx2.o"
    $cc -DKRASIS_SOURCE_DIR="\".\"" -c tests/test_moe_residency.c -o "$B/test_moe_residency.o"
    $cc -c bench/gpu_experts_bench.c -o "$B/gpu_experts_bench.o"
    wait
    local objs=""
    for o in moe_gemm moe_residency backend ops moe_layout moe_cache expert_mode expert_cache mapfile status quant \
             moe isa kernels_scalar kernels_avx2 threadpool numa; do objs="$objs $B/$o.o"; done
    local libs="-L$CUDA/lib64 -lcudart_static -lstdc++ -lm -ldl -lpthread -lrt"
    g++ "$B/test_moe_residency.o" $objs $libs -o "$B/test_moe_residency"
    g++ "$B/gpu_experts_bench.o" $objs $libs -o "$B/gpu_experts_bench"
    set +e
}

if [ "${1:-}" = "--build-only" ]; then build; exit $?; fi

date -u > "$OUT/info.txt"
nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.current,pcie.link.width.current,clocks.sm,clocks.mem \
    --format=csv >> "$OUT/info.txt" 2>&1
cat "$OUT/info.txt"
if [ ! -x "$B/gpu_experts_bench" ] || ldd "$B/gpu_experts_bench" | grep -q "not found"; then
    echo "building on the device machine" | tee -a "$OUT/info.txt"
    build || { echo "build failed"; exit 1; }
fi
set -o pipefail
"$B/test_moe_residency" 2>&1 | tee "$OUT/test.txt"; trc=$?
echo "test_moe_residency exit $trc"
msan=skipped
if command -v compute-sanitizer >/dev/null; then
    timeout 60 compute-sanitizer --tool memcheck --print-limit 20 "$B/test_moe_residency" > "$OUT/memcheck.txt" 2>&1
    msan="exit $?"; tail -n 3 "$OUT/memcheck.txt"
fi
echo "memcheck: $msan"
brc=skipped
[ -n "${NO_BENCH:-}" ] || { "$B/gpu_experts_bench" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt"; brc=$?; }
echo "== summary: test exit $trc, memcheck $msan, bench exit $brc"
grep -h "failed\|checks" "$OUT/test.txt" | tail -n 5
