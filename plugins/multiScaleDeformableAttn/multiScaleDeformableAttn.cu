// MultiScaleDeformableAttn: one thread per (n, query, head) computes each sampling point's corners and
// weights once (fp32) and accumulates all D channels of the head in registers; the common head widths are
// compile-time so the channel loop unrolls. Other widths use one thread per output element.
#include "../common/cudaUtils.cuh"
#include "multiScaleDeformableAttn.h"

namespace fbocc
{
namespace
{

constexpr int kThreads = 128;

struct Corners
{
    int32_t offset[4]; // row of value (without the head/channel part); weight 0 where outside
    float weight[4];
};

// mmcv's bilinear sampling of a level at normalized (x, y): pixel = loc * size - 0.5, zeros outside.
__device__ __forceinline__ bool corners(float x, float y, int32_t h, int32_t w, int32_t levelStart, Corners& c)
{
    float const hIm = y * static_cast<float>(h) - 0.5f;
    float const wIm = x * static_cast<float>(w) - 0.5f;
    if (!(hIm > -1.f && wIm > -1.f && hIm < static_cast<float>(h) && wIm < static_cast<float>(w)))
    {
        return false;
    }
    float const fh = floorf(hIm), fw = floorf(wIm);
    int32_t const h0 = static_cast<int32_t>(fh), w0 = static_cast<int32_t>(fw);
    float const lh = hIm - fh, lw = wIm - fw;
#pragma unroll
    for (int k = 0; k < 4; ++k)
    {
        int32_t const dy = k >> 1, dx = k & 1;
        int32_t const yi = h0 + dy, xi = w0 + dx;
        bool const inside = yi >= 0 && yi < h && xi >= 0 && xi < w;
        c.weight[k] = inside ? (dy ? lh : 1.f - lh) * (dx ? lw : 1.f - lw) : 0.f;
        c.offset[k] = inside ? levelStart + yi * w + xi : levelStart;
    }
    return true;
}

template <typename T, typename C, typename I, int D>
__global__ void __launch_bounds__(kThreads) msdaHeadKernel(T const* __restrict__ value,
    I const* __restrict__ spatialShapes, I const* __restrict__ levelStart, C const* __restrict__ locations,
    C const* __restrict__ weights, T* __restrict__ output, int64_t tasks, int32_t spatial, int32_t heads,
    int32_t levels, int32_t queries, int32_t points)
{
    int64_t const task = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; // (n, q, m)
    if (task >= tasks)
    {
        return;
    }
    int64_t const m = task % heads;
    int64_t const n = task / (static_cast<int64_t>(heads) * queries);
    T const* v = value + (n * spatial * heads + m) * D;
    int64_t const rowStride = static_cast<int64_t>(heads) * D;
    C const* loc = locations + task * levels * points * 2;
    C const* wgt = weights + task * levels * points;
    float acc[D];
#pragma unroll
    for (int d = 0; d < D; ++d)
    {
        acc[d] = 0.f;
    }
    for (int32_t l = 0; l < levels; ++l)
    {
        int32_t const h = static_cast<int32_t>(spatialShapes[2 * l]);
        int32_t const w = static_cast<int32_t>(spatialShapes[2 * l + 1]);
        int32_t const start = static_cast<int32_t>(levelStart[l]);
        for (int32_t p = 0; p < points; ++p, loc += 2, ++wgt)
        {
            Corners c;
            if (!corners(toFloat(ldg(loc)), toFloat(ldg(loc + 1)), h, w, start, c))
            {
                continue;
            }
            float const a = toFloat(ldg(wgt));
#pragma unroll
            for (int k = 0; k < 4; ++k)
            {
                T const* row = v + c.offset[k] * rowStride;
                float const cw = a * c.weight[k];
#pragma unroll
                for (int d = 0; d < D; ++d)
                {
                    acc[d] = fmaf(cw, toFloat(ldg(row + d)), acc[d]);
                }
            }
        }
    }
    T* out = output + task * D;
#pragma unroll
    for (int d = 0; d < D; ++d)
    {
        out[d] = fromFloat<T>(acc[d]);
    }
}

// Any head width: one thread per output element (n, q, m, d).
template <typename T, typename C, typename I>
__global__ void __launch_bounds__(kThreads) msdaElementKernel(T const* __restrict__ value,
    I const* __restrict__ spatialShapes, I const* __restrict__ levelStart, C const* __restrict__ locations,
    C const* __restrict__ weights, T* __restrict__ output, int64_t elements, int32_t spatial, int32_t heads,
    int32_t channels, int32_t levels, int32_t queries, int32_t points)
{
    int64_t const e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (e >= elements)
    {
        return;
    }
    int64_t const d = e % channels;
    int64_t const task = e / channels;
    int64_t const m = task % heads;
    int64_t const n = task / (static_cast<int64_t>(heads) * queries);
    T const* v = value + (n * spatial * heads + m) * channels + d;
    int64_t const rowStride = static_cast<int64_t>(heads) * channels;
    C const* loc = locations + task * levels * points * 2;
    C const* wgt = weights + task * levels * points;
    float acc = 0.f;
    for (int32_t l = 0; l < levels; ++l)
    {
        int32_t const h = static_cast<int32_t>(spatialShapes[2 * l]);
        int32_t const w = static_cast<int32_t>(spatialShapes[2 * l + 1]);
        int32_t const start = static_cast<int32_t>(levelStart[l]);
        for (int32_t p = 0; p < points; ++p, loc += 2, ++wgt)
        {
            Corners c;
            if (!corners(toFloat(ldg(loc)), toFloat(ldg(loc + 1)), h, w, start, c))
            {
                continue;
            }
            float const a = toFloat(ldg(wgt));
#pragma unroll
            for (int k = 0; k < 4; ++k)
            {
                acc = fmaf(a * c.weight[k], toFloat(ldg(v + c.offset[k] * rowStride)), acc);
            }
        }
    }
    output[e] = fromFloat<T>(acc);
}

template <typename T, typename C, typename I>
cudaError_t launchTyped(void const* value, void const* shapes, void const* starts, void const* locations,
    void const* weights, void* output, MultiScaleDeformableAttnShape const& s, cudaStream_t stream)
{
    int64_t const tasks = s.batch * s.queries * s.heads;
    auto const head = [&](auto kernel) {
        kernel<<<static_cast<unsigned>(ceilDiv(tasks, kThreads)), kThreads, 0, stream>>>(
            static_cast<T const*>(value), static_cast<I const*>(shapes), static_cast<I const*>(starts),
            static_cast<C const*>(locations), static_cast<C const*>(weights), static_cast<T*>(output), tasks,
            static_cast<int32_t>(s.spatial), static_cast<int32_t>(s.heads), static_cast<int32_t>(s.levels),
            static_cast<int32_t>(s.queries), static_cast<int32_t>(s.points));
    };
    switch (s.channels)
    {
    case 8: head(msdaHeadKernel<T, C, I, 8>); break;
    case 10: head(msdaHeadKernel<T, C, I, 10>); break;
    case 16: head(msdaHeadKernel<T, C, I, 16>); break;
    case 32: head(msdaHeadKernel<T, C, I, 32>); break;
    default:
    {
        int64_t const elements = tasks * s.channels;
        msdaElementKernel<T, C, I><<<static_cast<unsigned>(ceilDiv(elements, kThreads)), kThreads, 0, stream>>>(
            static_cast<T const*>(value), static_cast<I const*>(shapes), static_cast<I const*>(starts),
            static_cast<C const*>(locations), static_cast<C const*>(weights), static_cast<T*>(output), elements,
            static_cast<int32_t>(s.spatial), static_cast<int32_t>(s.heads), static_cast<int32_t>(s.channels),
            static_cast<int32_t>(s.levels), static_cast<int32_t>(s.queries), static_cast<int32_t>(s.points));
    }
    }
    return cudaGetLastError();
}

template <typename T, typename C>
cudaError_t launchIndex(void const* value, void const* shapes, void const* starts, IndexType indexType,
    void const* locations, void const* weights, void* output, MultiScaleDeformableAttnShape const& s,
    cudaStream_t stream)
{
    if (indexType == IndexType::kINT32)
    {
        return launchTyped<T, C, int32_t>(value, shapes, starts, locations, weights, output, s, stream);
    }
    return launchTyped<T, C, int64_t>(value, shapes, starts, locations, weights, output, s, stream);
}

} // namespace

cudaError_t multiScaleDeformableAttnForward(void const* value, DType valueType, void const* spatialShapes,
    void const* levelStartIndex, IndexType indexType, void const* samplingLocations, void const* attentionWeights,
    DType coordType, void* output, MultiScaleDeformableAttnShape const& shape, cudaStream_t stream)
{
    int64_t const outCount = shape.batch * shape.queries * shape.heads * shape.channels;
    if (outCount == 0)
    {
        return cudaSuccess;
    }
    if (shape.levels * shape.points == 0 || shape.spatial == 0)
    {
        return cudaMemsetAsync(output, 0, static_cast<size_t>(outCount) * dtypeSize(valueType), stream);
    }
    if (shape.spatial * shape.heads * shape.channels > INT32_MAX)
    {
        return cudaErrorInvalidValue;
    }
    if (valueType == DType::kFLOAT32 && coordType == DType::kFLOAT32)
    {
        return launchIndex<float, float>(value, spatialShapes, levelStartIndex, indexType, samplingLocations,
            attentionWeights, output, shape, stream);
    }
    if (valueType == DType::kFLOAT16 && coordType == DType::kFLOAT16)
    {
        return launchIndex<__half, __half>(value, spatialShapes, levelStartIndex, indexType, samplingLocations,
            attentionWeights, output, shape, stream);
    }
    if (valueType == DType::kFLOAT16 && coordType == DType::kFLOAT32)
    {
        return launchIndex<__half, float>(value, spatialShapes, levelStartIndex, indexType, samplingLocations,
            attentionWeights, output, shape, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace fbocc
