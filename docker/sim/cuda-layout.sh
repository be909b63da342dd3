#!/bin/sh
# Lay out CUDA from PyPI wheels the way the CUDA toolkit (and the DRIVE OS build image) does:
#   $CUDA/bin, $CUDA/nvvm            x86_64 compiler (nvcc, cicc, ptxas, ...)
#   $CUDA/targets/x86_64-linux       host headers and libraries ($CUDA/include and $CUDA/lib64 link here)
#   $CUDA/targets/aarch64-linux      target headers and the aarch64 libcudart
# Usage: cuda-layout.sh WHEEL_DIR CUDA_HOME   (WHEEL_DIR holds x86_64/*.whl and aarch64/*.whl)
set -eu
WHEELS=$1
CUDA=$2
TMP=$(mktemp -d)

unpack() {  # merge every wheel's nvidia/<component>/ tree (cu13: one "cu13" dir, cu12: one per component)
  arch=$1
  mkdir -p "$TMP/$arch/merged"
  for whl in "$WHEELS/$arch"/*.whl; do
    unzip -q -o "$whl" 'nvidia/*' -d "$TMP/$arch/raw"
  done
  for comp in "$TMP/$arch/raw/nvidia"/*/; do
    cp -R "$comp". "$TMP/$arch/merged/"
  done
}
unpack x86_64
unpack aarch64
X=$TMP/x86_64/merged
A=$TMP/aarch64/merged

mkdir -p "$CUDA/targets/x86_64-linux" "$CUDA/targets/aarch64-linux"
cp -R "$X/bin" "$CUDA/bin"
cp -R "$X/nvvm" "$CUDA/nvvm"
cp -R "$X/include" "$CUDA/targets/x86_64-linux/include"
cp -R "$X/lib" "$CUDA/targets/x86_64-linux/lib"
ln -s targets/x86_64-linux/include "$CUDA/include"
ln -s targets/x86_64-linux/lib "$CUDA/lib64"
ln -s targets/x86_64-linux/lib "$CUDA/lib"
# Target headers: the same toolkit headers (crt, cccl) plus the aarch64 runtime's own.
cp -R "$X/include" "$CUDA/targets/aarch64-linux/include"
cp -R "$A/include/." "$CUDA/targets/aarch64-linux/include/"
cp -R "$A/lib" "$CUDA/targets/aarch64-linux/lib"
for lib in "$CUDA/targets/x86_64-linux/lib" "$CUDA/targets/aarch64-linux/lib"; do
  so=$(ls "$lib"/libcudart.so.* | head -n 1)
  ln -sf "$(basename "$so")" "$lib/libcudart.so"
done
rm -rf "$TMP"
# Wheels carry owner-only modes (0744); the build runs as the invoking uid, not root.
chmod -R a+rX "$CUDA"
"$CUDA/bin/nvcc" --version
