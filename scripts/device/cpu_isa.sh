#!/usr/bin/env bash
# Run THERE (the GPU machine's host CPU, carrying .devdeps): the CPU kernels at every SIMD level the
# host has (AVX-512 VNNI included, which the development machine lacks), and the synthetic
# DeepSeek-V2-Lite CPU decode/prefill benchmark on all cores at each level. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
PREFIX=/tmp/krasis-devdeps
rm -rf "$PREFIX" && mkdir -p "$PREFIX"
for f in .devdeps/*.deb; do dpkg -x "$f" "$PREFIX"; done
LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
export PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$PREFIX
export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{ lscpu; grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo; } >"$OUT/cpu.txt" 2>&1
grep -E "Model name|^CPU\(s\)|Thread|NUMA node" "$OUT/cpu.txt"
cmake -S . -B build-device-cpu -DCMAKE_BUILD_TYPE=Release -DKRASIS_CUDA=OFF >"$OUT/build.log" 2>&1 &&
  cmake --build build-device-cpu -j"$(nproc)" --target krasis test_kernels test_forward_alloc >>"$OUT/build.log" 2>&1 ||
  { tail -30 "$OUT/build.log"; exit 1; }
./build-device-cpu/tests/test_kernels 2>&1 | tee "$OUT/test_kernels.txt" | tail -6
KRASIS_FAKE_NUMA=2 ./build-device-cpu/tests/test_kernels 2>&1 | tail -1
./build-device-cpu/tests/test_forward_alloc 2>&1 | grep test_forward_alloc | tail -5
for isa in avx2 avx512; do
  echo "== KRASIS_ISA=$isa"
  KRASIS_ISA=$isa ./build-device-cpu/krasis bench --synthetic configs/DeepSeek-V2-Lite.json --expert-bits 4 \
    --group-size 32 --decode 16 --prefill 128 --json 2>"$OUT/bench_$isa.err" | tee "$OUT/bench_$isa.json"
done
