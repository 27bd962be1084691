#!/usr/bin/env bash
# Run HERE: packs the part of llama.cpp's source (from the llama-cpp-python 0.3.36 sdist, unpacked at
# third_party/llama_cpp_python-0.3.36/vendor/llama.cpp; vendor/llama.cpp = ggml-org/llama.cpp@0c1e57098)
# that a CUDA build of llama-bench and llama-quantize needs, plus its gguf-py package and the two vocab
# GGUFs that tools/make_synthetic_gguf.py copies the tokenizer from, into .peer/llamacpp-src.tar.xz
# (git-ignored), for scripts/device/peers.sh. The device tool carries at most 64 MiB of working tree in
# all (the tracked tree is ~47 MB and .devdeps ~11 MB), so the whole 176 MB tree cannot travel: only the
# CMake skeleton, ggml (CPU + CUDA backends), src, include, common, vendor and the two tools are packed, and
# tools/CMakeLists.txt is replaced by one that adds only those two tools (the others need sources left out).
# Usage: ./tools/pack_llamacpp_src.sh [SRC_DIR]     (prints the tarball's size)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-third_party/llama_cpp_python-0.3.36/vendor/llama.cpp}
[ -f "$SRC/CMakeLists.txt" ] && [ -d "$SRC/ggml/src/ggml-cuda" ] || {
  echo "pack_llamacpp_src: $SRC is not a llama.cpp source tree (no CMakeLists.txt or ggml/src/ggml-cuda);" \
       "unpack the llama-cpp-python 0.3.36 sdist into third_party/ (see tools/requirements-llamacpp.txt)" >&2
  exit 1
}
grep -qx '/.peer/' .gitignore || { echo "pack_llamacpp_src: /.peer/ must be in .gitignore" >&2; exit 1; }
mkdir -p .peer
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
D=$STAGE/llama.cpp
mkdir -p "$D/ggml/src" "$D/tools" "$D/models"
cp -a "$SRC"/CMakeLists.txt "$SRC"/LICENSE "$SRC"/cmake "$SRC"/include "$SRC"/src "$SRC"/common "$SRC"/vendor "$D/"
cp -a "$SRC"/ggml/CMakeLists.txt "$SRC"/ggml/cmake "$SRC"/ggml/include "$D/ggml/"
# ggml/src: its own files, the CPU and CUDA backends; ggml_add_backend() only descends into enabled ones
find "$SRC/ggml/src" -maxdepth 1 -type f -exec cp -a {} "$D/ggml/src/" \;
cp -a "$SRC"/ggml/src/ggml-cpu "$SRC"/ggml/src/ggml-cuda "$D/ggml/src/"
cp -a "$SRC"/tools/llama-bench "$SRC"/tools/quantize "$D/tools/"
cp -a "$SRC"/gguf-py "$D/"
cp -a "$SRC"/models/ggml-vocab-deepseek-llm.gguf "$SRC"/models/ggml-vocab-qwen2.gguf "$D/models/"
cat >"$D/tools/CMakeLists.txt" <<'EOF'
# pruned by krasis tools/pack_llamacpp_src.sh: only the tools its peer benchmark builds
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
add_subdirectory(quantize)
EOF
find "$D" -name '__pycache__' -prune -exec rm -rf {} +
OUTF=.peer/llamacpp-src.tar.xz
tar -C "$STAGE" -cf - llama.cpp | xz -T2 -6 >"$OUTF.tmp"
mv "$OUTF.tmp" "$OUTF"
echo "pack_llamacpp_src: $OUTF $(stat -c %s "$OUTF") bytes ($(du -sh "$D" | cut -f1) unpacked)"
