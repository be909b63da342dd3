// BEVPoolV2 kernel: lift-splat pooling of depth-weighted camera features into a voxel grid.
#pragma once

#include "../common/kernelCommon.h"

namespace fbocc
{

struct BevPoolV2Shape
{
    int64_t channels;   //!< C, the last dimension of feat and of the output
    int64_t cells;      //!< B * out_depth * out_height * out_width
    int64_t intervals;  //!< Ni
    int64_t points;     //!< Np, the length of the rank arrays
};

//! depth [B,N,D,H,W] and feat [B,N,H,W,C] (dtype), five index arrays (indexType), output [cells, C] (dtype).
//! Intervals must be sorted by their voxel (`ranks_bev[interval_starts[i]]` non-decreasing), as
//! voxel_pooling_prepare_v2 makes them. Every output cell is written once, zeros where no interval lands:
//! no separate memset. Returns the launch's error; enqueues work on `stream` only.
FBOCC_API cudaError_t bevPoolV2Forward(void const* depth, void const* feat, DType dtype, void const* ranksDepth,
    void const* ranksFeat, void const* ranksBev, void const* intervalStarts, void const* intervalLengths,
    IndexType indexType, void* output, BevPoolV2Shape const& shape, cudaStream_t stream);

} // namespace fbocc
