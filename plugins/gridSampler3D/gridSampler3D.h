// GridSampler3D kernel: sample [N,C,D,H,W] at the points of a channel-first grid scaled by 10.
#pragma once

#include "../common/kernelCommon.h"

namespace fbocc
{

struct GridSampler3DShape
{
    int64_t n;
    int64_t c;
    int64_t inD, inH, inW;
    int64_t outD, outH, outW;
};

enum class GridSamplerInterpolation : int32_t
{
    kBILINEAR = 0,
    kNEAREST = 1,
};

enum class GridSamplerPadding : int32_t
{
    kZEROS = 0,
    kBORDER = 1,
    kREFLECTION = 2,
};

//! Output points one thread block covers: x == 0 is the default: 256 consecutive points a block, except fp16
//! trilinear, which stages 2 x 5 x 50 point tiles' input in shared memory (one point per thread) where the input
//! width is even and the input 4-byte aligned, else samples two adjacent points per thread where the volumes are
//! even and the buffers 4-byte aligned. Otherwise a z * y * x tile (at most 256 points, one point per thread)
//! whose corner reads overlap in L1.
struct GridSampler3DTile
{
    int32_t z = 0;
    int32_t y = 0;
    int32_t x = 0;
};

//! input [N,C,D,H,W] (inputType), grid [N,3,Do,Ho,Wo] (gridType; normalized coordinates x 10, channel 0 = x),
//! output [N,C,Do,Ho,Wo] (inputType). Coordinates and weights are computed in fp32 for every type.
//! Returns the launch's error; enqueues work on `stream` only.
FBOCC_API cudaError_t gridSampler3DForward(void const* input, DType inputType, void const* grid, DType gridType, void* output,
    GridSampler3DShape const& shape, GridSamplerInterpolation interpolation, GridSamplerPadding padding,
    bool alignCorners, cudaStream_t stream);

//! As gridSampler3DForward with an explicit block tile (for tuning: a tile always takes the general kernel).
FBOCC_API cudaError_t gridSampler3DForwardTiled(void const* input, DType inputType, void const* grid, DType gridType,
    void* output, GridSampler3DShape const& shape, GridSamplerInterpolation interpolation,
    GridSamplerPadding padding, bool alignCorners, GridSampler3DTile tile, cudaStream_t stream);

} // namespace fbocc
