// Launchers of the MSDA data-movement floors (msda_floors.cu); benchmark only. Raw pointers, sizes and a stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fbocc_floors
{

struct FloorShape
{
    int64_t n, spatial, heads, channels, queries, points, h, w; // one level of h x w = spatial pixels
};

// value [n, spatial, heads, channels] -> out [n, queries, heads, channels] (fp16 when half, else fp32)
cudaError_t gatherFloor(void const* value, bool half, void* out, FloorShape const& shape, int cols, int rows,
    bool local, uint32_t seed, cudaStream_t stream);
// locations [n, queries, heads, 1, points, 2], weights [..., points] -> out, all fp16 when half, else fp32
cudaError_t streamFloor(void const* locations, void const* weights, bool half, void* out, FloorShape const& shape,
    cudaStream_t stream);
cudaError_t emptyLaunch(cudaStream_t stream);

} // namespace fbocc_floors
