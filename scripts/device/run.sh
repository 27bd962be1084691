#!/usr/bin/env bash
# Run THERE (the GPU machine, through the device tool, carrying .devdeps from fetch_deps.sh):
#   unpack the Debian 12 build dependencies into a prefix, configure and build krasis with CUDA for sm_90,
#   run the CUDA tests (verbose errors), the CPU test suite, compute-sanitizer memcheck on the CUDA tests,
#   a CPU-only build (KRASIS_CUDA=OFF) with its tests (in the background), and the GPU attention benchmark;
#   print a short table.
# Logs and the benchmark table go to $OUT (or ./device-out). Every step runs even if an earlier one fails;
# the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
JOBS=$(nproc)
PREFIX=/tmp/krasis-devdeps
results=()
failed=0
step() { # step NAME LOGFILE COMMAND...: runs, records pass/fail and the seconds taken
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  "$@" >"$OUT/$log" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -eq 0 ] || { verdict="FAIL(rc=$rc)"; failed=$((failed + 1)); }
  results+=("$(printf '%-34s %-12s %4ss  %s' "$name" "$verdict" $((SECONDS - t0)) "$log")")
  echo "== $name: $verdict ($((SECONDS - t0)) s)"
}

{
  echo "date: $(date -u)"; uname -a; cat /etc/os-release 2>/dev/null | head -2
  ldd --version 2>&1 | head -1; gcc --version | head -1; cmake --version | head -1
  nvcc --version | tail -2; nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current,clocks.sm,clocks.mem --format=csv
  command -v pkg-config || echo "no system pkg-config"; command -v compute-sanitizer || ls /usr/local/cuda/bin | grep -i sanit
  ldconfig -p | grep -E "jansson|pcre2-8|utf8proc|microhttpd|gnutls" || echo "none of the deps in ldconfig"
} >"$OUT/env.txt" 2>&1
head -20 "$OUT/env.txt"

# 1. the Debian 12 packages, unpacked into a prefix (dpkg -x, or ar + tar where dpkg is absent)
unpack() {
  rm -rf "$PREFIX"; mkdir -p "$PREFIX"
  ls .devdeps/*.deb >/dev/null || { echo "no .devdeps/*.deb: run scripts/device/fetch_deps.sh here and carry .devdeps"; return 1; }
  for f in .devdeps/*.deb; do
    if command -v dpkg >/dev/null; then dpkg -x "$f" "$PREFIX" || return 1
    else (d=$(mktemp -d); cd "$d" && ar x "$OLDPWD/$f" && tar -xf data.tar.* -C "$PREFIX"; rm -rf "$d") || return 1
    fi
  done
  # the newest glibc symbol version the unpacked libraries need, against what this machine has
  objdump -T "$PREFIX"/usr/lib/x86_64-linux-gnu/*.so.* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 |
    xargs echo "newest GLIBC symbol needed by the unpacked libraries:"
  ldd --version | head -1
}
step "unpack Debian 12 deps" unpack.log unpack

LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
export PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$PREFIX
export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
PKGCFG=$(command -v pkg-config || true)
if [ -z "$PKGCFG" ]; then
  PKGCFG=$PREFIX/usr/bin/pkgconf # Debian's, with its libpkgconf3 from the prefix (LD_LIBRARY_PATH)
fi
export PATH=/usr/local/cuda/bin:$PATH

# 2. CUDA build for sm_90 (the H200), Release
configure_cuda() {
  cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DPKG_CONFIG_EXECUTABLE="$PKGCFG" &&
    cmake --build build-device -j"$JOBS" -- -k # keep going: one broken target must not hide the others' results
}
step "build (CUDA, sm_90)" build.log configure_cuda

# a CPU-only build with this machine's compiler, and its tests: in the background while the GPU is tested
cpu_only() {
  cmake -S . -B build-device-cpu -DCMAKE_BUILD_TYPE=Release -DKRASIS_CUDA=OFF -DPKG_CONFIG_EXECUTABLE="$PKGCFG" &&
    nice cmake --build build-device-cpu -j"$JOBS" && ctest --test-dir build-device-cpu --output-on-failure -j4
}
cpu_t0=$SECONDS
cpu_only >"$OUT/cpu_only.log" 2>&1 &
cpu_pid=$!

# 3. tests: CUDA kernels (verbose: every relative error), then the CPU suite
step "CUDA tests" cuda_tests.log env KR_TEST_VERBOSE=1 ctest --test-dir build-device -L cuda --output-on-failure -V
step "CPU test suite (CUDA build)" cpu_tests.log ctest --test-dir build-device -LE cuda --output-on-failure -j"$JOBS"

# 4. compute-sanitizer memcheck over each CUDA test binary
memcheck() {
  local rc=0
  for t in build-device/tests/test_cuda_*; do
    [ -x "$t" ] || continue
    echo "--- $t"
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 --leak-check full "$t" || rc=1
  done
  return $rc
}
step "compute-sanitizer memcheck" memcheck.log memcheck

wait $cpu_pid
rc=$?
v=ok; [ $rc -eq 0 ] || { v="FAIL(rc=$rc)"; failed=$((failed + 1)); }
results+=("$(printf '%-34s %-12s %4ss  %s' "CPU-only build + tests" "$v" $((SECONDS - cpu_t0)) cpu_only.log)")
echo "== CPU-only build + tests: $v"

# 5. the benchmark (the CPU-only build has finished: nothing else runs)
step "attention benchmark" bench.log build-device/krasis_cuda_attention_bench configs/DeepSeek-V2-Lite.json \
  configs/Qwen3-30B-A3B.json --out "$OUT/bench.md"


echo
echo "== CUDA test lines"
grep -E "rel err|checks,|SKIP|check failed" "$OUT/cuda_tests.log" | sed 's/^[0-9]*: //' | tail -80
echo "== memcheck"; grep -E "ERROR SUMMARY|LEAK SUMMARY|^---" "$OUT/memcheck.log" | tail -20
echo "== CPU suite"; grep -E "tests passed|tests failed|Failed|\*\*\*" "$OUT/cpu_tests.log" "$OUT/cpu_only.log" | tail -20
echo "== benchmark"; cat "$OUT/bench.md" 2>/dev/null || tail -20 "$OUT/bench.log"
echo "== steps"; printf '%s\n' "${results[@]}"
exit $failed
