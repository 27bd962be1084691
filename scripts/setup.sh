#!/usr/bin/env bash
# Installs what krasis needs to build (Debian 12 packages; idempotent, as root or through sudo) and
# builds it into build/. Usage: ./scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# libmicrohttpd: the HTTP server; libnuma: expert placement on multi-socket machines;
# python3-venv + curl: the server tests (openai client, SSE framing);
# clang + its runtime: the libFuzzer targets that scripts/test.sh runs
packages=(build-essential cmake pkg-config libjansson-dev libpcre2-dev libutf8proc-dev libmicrohttpd-dev libnuma-dev python3
          python3-venv curl clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: built build/krasis"
