// Data-movement floors for MultiScaleDeformableAttn (benchmark only; not part of the plugins). Two kernels that
// each do one half of the memory traffic of the plugin kernel (plugins/multiScaleDeformableAttn) with the same
// thread mapping (one thread per (n, query, head, channel pair): 2-element packets, 512 threads, 3 blocks per SM),
// and nothing else:
//   gatherFloor: each (n, query, head) reads the head's channels at 4 x points value rows (the four bilinear
//     corners of `points` sampling points) and writes their sum as its output; no locations or weights are read.
//     Each point's pixel comes from a hash of (task, point): "local" puts it within 3 pixels (std 1.6, a little
//     tighter than the workload's 2) of the query's reference pixel (queries in raster order over the level, as
//     benchmarks.workloads lays them out), "uniform" anywhere in the level. The sum of the corners, unweighted.
//   streamFloor: each thread reads its task's sampling locations and attention weights (with the plugin kernel's
//     vector loads for 4 and 8 points) and writes its output packet; no value rows are read.
// Index math is compiled down as in the plugin kernel (FB-OCC's head width, head count and point counts compiled
// in), so neither floor carries more instructions than the plugin kernel for the same traffic.
// The plugin kernel does both, plus the corner and weight arithmetic. Launchers here; checks and the PyTorch
// binding in msda_floors.cpp.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../plugins/common/cudaUtils.cuh" // the plugin kernels' load helpers: the same loads as theirs
#include "msda_floors.h"

namespace
{

using fbocc::ldg;
using fbocc::loadPair;
using fbocc::loadVector;
using fbocc::toFloat;

constexpr int kThreads = 512;

__device__ __forceinline__ uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

__device__ __forceinline__ void store2(float* p, float a, float b)
{
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
__device__ __forceinline__ void store2(__half* p, float a, float b)
{
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}

// floor(num / den) for den > 0 given inv = 1 / den in float: exact while |num| < 2^23 and num / den stays below
// 2^23 / den^2 or so (the margin 0.5 / den dwarfs the rounding); FB-OCC's sizes are far inside that.
__device__ __forceinline__ int floorDiv(int num, float inv)
{
    return static_cast<int>(floorf((static_cast<float>(num) + 0.5f) * inv));
}

struct Raster
{
    int cols, rows;             // the workload's raster of queries over the level (benchmarks.workloads.msda_inputs)
    float invCols, inv2Cols, inv2Rows;
};

// The pixel (px, py) of one sampling point (its top-left corner, clamped so that the 2x2 corners stay inside) from
// a 32-bit hash r. Local: the query's reference pixel floor((q % cols + 0.5) / cols * w - 0.5) (likewise y) plus an
// offset of two 2-bit fields minus 3 per axis (-3..3, std 1.6 pixels: a little tighter than the workload's 2, so
// the floor errs on the fast side). Uniform: anywhere, from 16 bits per axis.
__device__ __forceinline__ void pointPixel(uint32_t r, uint32_t q, int h, int w, Raster const& g, bool local,
    int& px, int& py)
{
    if (local)
    {
        int const qy = floorDiv(static_cast<int>(q), g.invCols);
        int const qx = static_cast<int>(q) - qy * g.cols;
        px = floorDiv((2 * qx + 1) * w - g.cols, g.inv2Cols) + static_cast<int>((r & 3u) + ((r >> 2) & 3u)) - 3;
        py = floorDiv((2 * qy + 1) * h - g.rows, g.inv2Rows) + static_cast<int>(((r >> 4) & 3u) + ((r >> 6) & 3u))
            - 3;
    }
    else
    {
        px = static_cast<int>(((r & 0xFFFFu) * static_cast<uint32_t>(w)) >> 16);
        py = static_cast<int>(((r >> 16) * static_cast<uint32_t>(h)) >> 16);
    }
    px = min(max(px, 0), max(w - 2, 0));
    py = min(max(py, 0), max(h - 2, 0));
}

// LANES, HEADS, POINTS: FB-OCC's sizes compiled in (the plugin kernel compiles its index math down to
// multiply-shifts too), or 0 for run-time values. blockIdx.y is the batch index.
template <typename T, int LANES, int HEADS, int POINTS>
__global__ void __launch_bounds__(kThreads, 3) gatherFloorKernel(T const* __restrict__ value, T* __restrict__ out,
    uint32_t batchThreads, int runtimeLanes, int runtimeHeads, int queries, int spatial, int h, int w, Raster raster,
    int runtimePoints, bool local, uint32_t seed)
{
    int const lanes = LANES > 0 ? LANES : runtimeLanes;
    int const heads = HEADS > 0 ? HEADS : runtimeHeads;
    int const points = POINTS > 0 ? POINTS : runtimePoints;
    uint32_t const t = blockIdx.x * kThreads + threadIdx.x;
    if (t >= batchThreads)
    {
        return;
    }
    uint32_t const n = blockIdx.y;
    uint32_t const inBatch = t / static_cast<uint32_t>(lanes); // (q, m) within the batch
    int const lane = static_cast<int>(t - inBatch * lanes);
    uint32_t const m = inBatch % static_cast<uint32_t>(heads);
    uint32_t const q = inBatch / static_cast<uint32_t>(heads);
    uint32_t const task = n * static_cast<uint32_t>(queries * heads) + inBatch;
    int const channels = 2 * lanes;
    T const* v = value + (static_cast<size_t>(n) * spatial * heads + m) * channels + 2 * lane;
    uint32_t const rowStride = static_cast<uint32_t>(heads * channels);
    int const dy = h > 1 ? w : 0, dx = w > 1 ? 1 : 0; // corner offsets, 0 on a level one pixel wide or high
    float a = 0.f, b = 0.f;
#pragma unroll
    for (int p0 = 0; p0 < points; p0 += 2)
    {
        float2 x[2][4];
#pragma unroll
        for (int k = 0; k < 2; ++k)
        {
            int px = 0, py = 0;
            uint32_t const p = static_cast<uint32_t>(min(p0 + k, points - 1));
            pointPixel(mix(task * static_cast<uint32_t>(points) + p + seed), q, h, w, raster, local, px, py);
            uint32_t const r = static_cast<uint32_t>(py * w + px);
            uint32_t const corner[4] = {r, r + dx, r + dy, r + dy + dx};
#pragma unroll
            for (int c = 0; c < 4; ++c)
            {
                x[k][c] = loadPair(v + corner[c] * rowStride);
            }
        }
#pragma unroll
        for (int k = 0; k < 2; ++k)
        {
            float const keep = p0 + k < points ? 1.f : 0.f; // an odd count's last pair repeats its point, unsummed
#pragma unroll
            for (int c = 0; c < 4; ++c)
            {
                a = fmaf(keep, x[k][c].x, a);
                b = fmaf(keep, x[k][c].y, b);
            }
        }
    }
    store2(out + static_cast<size_t>(task) * channels + 2 * lane, a, b);
}

// POINTS compiled in (FB-OCC's 4 and 8: vector loads, as the plugin kernel) or 0 (run time: one point at a time).
template <typename T, int POINTS>
__global__ void __launch_bounds__(kThreads, 3) streamFloorKernel(T const* __restrict__ locations,
    T const* __restrict__ weights, T* __restrict__ out, uint32_t threads, int lanes, int runtimePoints)
{
    uint32_t const t = blockIdx.x * kThreads + threadIdx.x;
    if (t >= threads)
    {
        return;
    }
    uint32_t const task = t / static_cast<uint32_t>(lanes);
    int const lane = static_cast<int>(t - task * lanes);
    int const points = POINTS > 0 ? POINTS : runtimePoints;
    T const* loc = locations + static_cast<size_t>(task) * points * 2;
    T const* wgt = weights + static_cast<size_t>(task) * points;
    float a = 0.f, b = 0.f;
    if constexpr (POINTS > 0)
    {
        T xy[2 * POINTS];
        T w[POINTS];
        loadVector(loc, xy);
        loadVector(wgt, w);
#pragma unroll
        for (int p = 0; p < POINTS; ++p)
        {
            a = fmaf(toFloat(w[p]), toFloat(xy[2 * p]), a);
            b = fmaf(toFloat(w[p]), toFloat(xy[2 * p + 1]), b);
        }
    }
    else
    {
        for (int p = 0; p < points; ++p)
        {
            float2 const xy = loadPair(loc + 2 * p);
            float const wt = toFloat(ldg(wgt + p));
            a = fmaf(wt, xy.x, a);
            b = fmaf(wt, xy.y, b);
        }
    }
    store2(out + static_cast<size_t>(task) * 2 * lanes + 2 * lane, a, b);
}

__global__ void emptyKernel() {}

uint32_t blocksFor(int64_t threads)
{
    return static_cast<uint32_t>(fbocc::ceilDiv(threads, kThreads));
}

} // namespace

namespace fbocc_floors
{

template <typename T>
cudaError_t gatherFloor(T const* value, T* out, FloorShape const& s, int cols, int rows, bool local, uint32_t seed,
    cudaStream_t stream)
{
    int64_t const lanes = s.channels / 2;
    int64_t const batchThreads = s.queries * s.heads * lanes;
    if (batchThreads == 0 || s.n == 0)
    {
        return cudaGetLastError();
    }
    Raster const raster{cols, rows, 1.f / static_cast<float>(cols), 1.f / static_cast<float>(2 * cols),
        1.f / static_cast<float>(2 * rows)};
    dim3 const grid(blocksFor(batchThreads), static_cast<uint32_t>(s.n));
    auto const run = [&](auto kernel) {
        kernel<<<grid, kThreads, 0, stream>>>(value, out, static_cast<uint32_t>(batchThreads), static_cast<int>(lanes),
            static_cast<int>(s.heads), static_cast<int>(s.queries), static_cast<int>(s.spatial), static_cast<int>(s.h),
            static_cast<int>(s.w), raster, static_cast<int>(s.points), local, seed);
    };
    if (lanes == 5 && s.heads == 8 && s.points == 4)
    {
        run(gatherFloorKernel<T, 5, 8, 4>); // BEV self-attention
    }
    else if (lanes == 5 && s.heads == 8 && s.points == 8)
    {
        run(gatherFloorKernel<T, 5, 8, 8>); // image cross-attention
    }
    else
    {
        run(gatherFloorKernel<T, 0, 0, 0>);
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t streamFloor(T const* locations, T const* weights, T* out, FloorShape const& s, cudaStream_t stream)
{
    int64_t const lanes = s.channels / 2;
    int64_t const threads = s.n * s.queries * s.heads * lanes;
    if (threads > 0)
    {
        auto const run = [&](auto kernel) {
            kernel<<<blocksFor(threads), kThreads, 0, stream>>>(locations, weights, out,
                static_cast<uint32_t>(threads), static_cast<int>(lanes), static_cast<int>(s.points));
        };
        bool const aligned = reinterpret_cast<uintptr_t>(locations) % 16 == 0
            && reinterpret_cast<uintptr_t>(weights) % 16 == 0;
        if (aligned && s.points == 4)
        {
            run(streamFloorKernel<T, 4>);
        }
        else if (aligned && s.points == 8)
        {
            run(streamFloorKernel<T, 8>);
        }
        else
        {
            run(streamFloorKernel<T, 0>);
        }
    }
    return cudaGetLastError();
}

cudaError_t gatherFloor(void const* value, bool half, void* out, FloorShape const& s, int cols, int rows, bool local,
    uint32_t seed, cudaStream_t stream)
{
    return half ? gatherFloor(static_cast<__half const*>(value), static_cast<__half*>(out), s, cols, rows, local, seed,
                      stream)
                : gatherFloor(static_cast<float const*>(value), static_cast<float*>(out), s, cols, rows, local, seed,
                      stream);
}

cudaError_t streamFloor(void const* locations, void const* weights, bool half, void* out, FloorShape const& s,
    cudaStream_t stream)
{
    return half ? streamFloor(static_cast<__half const*>(locations), static_cast<__half const*>(weights),
                      static_cast<__half*>(out), s, stream)
                : streamFloor(static_cast<float const*>(locations), static_cast<float const*>(weights),
                      static_cast<float*>(out), s, stream);
}

cudaError_t emptyLaunch(cudaStream_t stream)
{
    emptyKernel<<<1, 32, 0, stream>>>();
    return cudaGetLastError();
}

} // namespace fbocc_floors
