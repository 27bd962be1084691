#!/usr/bin/env bash
# Runs the whole test suite twice: the release build (build/) and an AddressSanitizer +
# UndefinedBehaviorSanitizer build (build-asan/), where any sanitizer report fails the run.
# Usage: ./scripts/test.sh   (after ./scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

[ -d ../shared/data ] || echo "test: note: ../shared/data is absent; tests that need it will say so"

# The server tests drive `krasis serve` with the official openai client, pinned, in build/.venv
# (both builds use it).
venv=build/.venv
pin=$(sed -n 's/^openai==//p' tests/server/requirements.txt)
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$pin')" 2>/dev/null; then
  echo "test: creating $venv with openai==$pin"
  mkdir -p build
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/server/requirements.txt
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "== release build"
ctest --test-dir build --output-on-failure -j"$jobs"

# -O2 with sanitizers: the model tests do real arithmetic, and the checks are the same at any -O.
# CPU-only: the release build above already compiled the CUDA code, and its tests skip without a GPU.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKRASIS_SANITIZE=ON -DKRASIS_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs"
echo "== ASan + UBSan build"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"

echo "== fuzzing (libFuzzer, bounded)"
./scripts/fuzz.sh 12
