#!/bin/sh
# Prints the TensorRT version of the headers in directory $1 (MAJOR.MINOR.PATCH from NvInferVersion.h), for the
# build manifest. 10.16 and later define NV_TENSORRT_* through TRT_*_ENTERPRISE: take whichever is numeric.
# Exit 2 with a message when $1 has no NvInferVersion.h.
set -eu
HDR="$1/NvInferVersion.h"
[ -f "$HDR" ] || { echo "fbocc-recipe: TensorRT headers not found: $HDR is missing: install TensorRT in the build image (the cross .deb), or set tensorrt_include_dir of the profile in fbocc.toml to where its headers are (FB-BEV: \$TRT_PATH/include)" >&2; exit 2; }
ver() { sed -n "s/^#define $1 \([0-9][0-9]*\).*/\1/p" "$HDR" | head -n 1; }
MAJOR=$(ver NV_TENSORRT_MAJOR); [ -n "$MAJOR" ] || MAJOR=$(ver TRT_MAJOR_ENTERPRISE)
MINOR=$(ver NV_TENSORRT_MINOR); [ -n "$MINOR" ] || MINOR=$(ver TRT_MINOR_ENTERPRISE)
PATCH=$(ver NV_TENSORRT_PATCH); [ -n "$PATCH" ] || PATCH=$(ver TRT_PATCH_ENTERPRISE)
[ -n "$MAJOR" ] && [ -n "$MINOR" ] && [ -n "$PATCH" ] || { echo "fbocc-recipe: no TensorRT version in $HDR" >&2; exit 2; }
echo "$MAJOR.$MINOR.$PATCH"
