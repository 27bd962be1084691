# shellcheck shell=bash
# Source THERE (the GPU machine): unpacks the Debian 12 build dependencies carried in .devdeps/ (from
# scripts/device/fetch_deps.sh) into $KRASIS_DEVDEPS_PREFIX (default /tmp/krasis-devdeps) and exports what a
# krasis CMake configure needs to find them: PKG_CONFIG_LIBDIR / PKG_CONFIG_SYSROOT_DIR / LD_LIBRARY_PATH,
# and KRASIS_PKGCFG (the machine's pkg-config, or the unpacked pkgconf) for -DPKG_CONFIG_EXECUTABLE.
# The same steps as scripts/device/run.sh's unpack, as a function other device scripts can share.
#   . scripts/device/devdeps_env.sh && krasis_devdeps_unpack && cmake ... -DPKG_CONFIG_EXECUTABLE="$KRASIS_PKGCFG"
# Returns non-zero (does not exit) when .devdeps is missing or a package does not unpack.

KRASIS_DEVDEPS_PREFIX=${KRASIS_DEVDEPS_PREFIX:-/tmp/krasis-devdeps}

krasis_devdeps_unpack() {
  local p=$KRASIS_DEVDEPS_PREFIX f d
  ls .devdeps/*.deb >/dev/null 2>&1 || {
    echo "devdeps_env: no .devdeps/*.deb here: run scripts/device/fetch_deps.sh on the dev machine and carry .devdeps" >&2
    return 1
  }
  if [ ! -f "$p/.unpacked" ]; then # a warm machine keeps /tmp: unpack once
    rm -rf "$p" && mkdir -p "$p" || return 1
    for f in .devdeps/*.deb; do
      if command -v dpkg >/dev/null; then
        dpkg -x "$f" "$p" || return 1
      else # ar + tar where dpkg is absent
        d=$(mktemp -d) && (cd "$d" && ar x "$OLDPWD/$f" && tar -xf data.tar.* -C "$p") || { rm -rf "$d"; return 1; }
        rm -rf "$d"
      fi
    done
    touch "$p/.unpacked"
  fi
  local lib=$p/usr/lib/x86_64-linux-gnu
  export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$p/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$p
  export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  KRASIS_PKGCFG=$(command -v pkg-config || echo "$p/usr/bin/pkgconf") # Debian's pkgconf, its lib via LD_LIBRARY_PATH
  export KRASIS_PKGCFG
}

# krasis_device_build TARGET...: the deps unpacked, build-device configured (CUDA for sm_90, Release) and
# the named targets built with every core.
krasis_device_build() {
  krasis_devdeps_unpack &&
    cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DPKG_CONFIG_EXECUTABLE="$KRASIS_PKGCFG" &&
    cmake --build build-device -j"$(nproc)" --target "$@"
}

# krasis_device_init: the opening of a device script run from the repository root: $OUT (default
# ./device-out) exists, nvcc is on PATH, the failed-step count ($failed, see krasis_step) is 0.
krasis_device_init() {
  OUT=${OUT:-$PWD/device-out}
  mkdir -p "$OUT"
  export PATH=/usr/local/cuda/bin:$PATH
  failed=0
}

# krasis_step NAME LOG COMMAND...: runs COMMAND with its output in $OUT/LOG, counts a failure in $failed
# and prints one line with the exit status and the seconds taken.
krasis_step() {
  local name=$1 log=$2 t0=$SECONDS; shift 2
  "$@" >"$OUT/$log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || failed=$((failed + 1))
  echo "== $name: rc $rc ($((SECONDS - t0)) s, $log)"
}
