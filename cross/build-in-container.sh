#!/bin/sh
# The cross-compilation recipe that `fbocc cross-build` runs inside the build container.
# No network, runs as the invoking uid:gid. Inputs (set by fbocc from the build profile):
#   FBOCC_TARGET_ARCH   aarch64 | x86_64           FBOCC_CUDA_ARCHS   e.g. "87" (space separated)
#   FBOCC_CUDA_HOME     /usr/local/cuda-<ver>      FBOCC_CUDA_TARGET_DIR  .../targets/<arch>-linux
#   FBOCC_CXX           host compiler for the target
#   FBOCC_TRT_INCLUDE_DIR / FBOCC_TRT_LIB_DIR      empty: kernels only (no TensorRT glue)
#   FBOCC_JOBS          parallel make jobs
# Sources are mounted read-only at /fbocc/src; artefacts go to /fbocc/out (and nothing else does).
# Lines starting with "::step::" tell the host which step runs; "::info::" lines are facts for the
# build manifest (toolchain versions, flags).
set -eu

SRC=/fbocc/src
OUT=/fbocc/out
WORK=$(mktemp -d /tmp/fbocc-build.XXXXXX)
export HOME="$WORK"

step() { echo "::step:: $*"; }
info() { echo "::info:: $1=$2"; }
fail() { echo "fbocc-recipe: $*" >&2; exit 2; }

step "toolchain"
NVCC="$FBOCC_CUDA_HOME/bin/nvcc"
[ -x "$NVCC" ] || fail "nvcc not found at $NVCC (profile cuda_home is wrong for this image)"
[ -d "$FBOCC_CUDA_TARGET_DIR" ] || fail "CUDA target directory $FBOCC_CUDA_TARGET_DIR does not exist in this image"
command -v "$FBOCC_CXX" >/dev/null 2>&1 || fail "compiler $FBOCC_CXX not found in this image"
info cuda_version "$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
info nvcc "$("$NVCC" --version | tail -n 1)"
info cxx_version "$("$FBOCC_CXX" --version | head -n 1)"
TRT_VERSION=""
if [ -n "${FBOCC_TRT_INCLUDE_DIR:-}" ]; then
  # The headers' TensorRT goes into the build manifest: the library registers only in a TensorRT of its major.
  TRT_VERSION=$(sh "$(dirname "$0")/tensorrt-version.sh" "$FBOCC_TRT_INCLUDE_DIR") || exit 2
fi
info tensorrt_version "$TRT_VERSION"

step "sources"
[ -f "$SRC/Makefile" ] || fail "no Makefile in the plugin sources ($SRC)"
# Sources are read-only: build in a scratch copy so the Makefile may write wherever it likes.
cp -R "$SRC" "$WORK/src"
mkdir -p "$WORK/out"

step "compile"
set -- -C "$WORK/src" \
  "TARGET=$FBOCC_TARGET_ARCH" "CUDA_ARCHS=$FBOCC_CUDA_ARCHS" "CUDA_HOME=$FBOCC_CUDA_HOME" \
  "CUDA_TARGET_DIR=$FBOCC_CUDA_TARGET_DIR" "CXX=$FBOCC_CXX" "OUT=$WORK/out"
if [ -n "${FBOCC_TRT_INCLUDE_DIR:-}" ]; then
  set -- "$@" "TENSORRT_INCLUDE_DIR=$FBOCC_TRT_INCLUDE_DIR" "TENSORRT_LIB_DIR=${FBOCC_TRT_LIB_DIR:-}"
fi
info make_args "$*"
make -j "${FBOCC_JOBS:-2}" "$@"

step "collect"
found=0
for so in "$WORK"/out/*.so; do
  [ -f "$so" ] || continue
  cp "$so" "$OUT/"
  found=$((found + 1))
done
[ "$found" -gt 0 ] || fail "the build finished but produced no .so in OUT"
rm -rf "$WORK"
step "done"
