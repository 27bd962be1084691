#!/usr/bin/env bash
# Run HERE (a Debian 12 machine with apt): downloads the Debian 12 packages krasis builds against into
# .devdeps/ (git-ignored), so that scripts/device/run.sh can unpack them on the GPU machine, which has the
# CUDA toolkit but none of these -dev packages and no network. Carry .devdeps with the device call.
# Usage: ./scripts/device/fetch_deps.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. /etc/os-release
[ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ] || echo "fetch_deps: warning: this is ${PRETTY_NAME:-unknown}, not Debian 12" >&2
# The -dev packages krasis uses, the runtime libraries they link, and (through Requires.private of
# libmicrohttpd.pc) GnuTLS's -dev chain so that pkg-config resolves; pkgconf in case the device has none.
# glibc, libgcc, libstdc++ are the device's own (Debian 12 needs glibc >= 2.36 of it; run.sh checks).
pkgs=(libjansson-dev libjansson4 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
      libutf8proc-dev libutf8proc2 libmicrohttpd-dev libmicrohttpd12
      libgnutls28-dev libgnutls30 libgnutls-dane0 libgnutls-openssl27 libgnutlsxx30 libunbound8 libevent-2.1-7
      nettle-dev libnettle8 libhogweed6 libgmp-dev libgmp10 libgmpxx4ldbl libtasn1-6-dev libtasn1-6
      libidn2-dev libidn2-0 libunistring2 libp11-kit-dev libp11-kit0 libffi8
      pkgconf pkgconf-bin libpkgconf3 pkg-config)
mkdir -p .devdeps
grep -qx '/.devdeps/' .gitignore 2>/dev/null || echo "fetch_deps: note: .devdeps/ should be in .gitignore" >&2
cd .devdeps
rm -f ./*.deb
apt-get download "${pkgs[@]}" >/dev/null
ls -1 ./*.deb | wc -l | xargs echo "fetch_deps: downloaded .deb files:"
du -sh . | cut -f1 | xargs echo "fetch_deps: size:"
