// MultiScaleDeformableAttn: the lanes of one (n, query, head) each own a packet of up to 16 bytes of the
// head's channels; sampling corners and weights are computed in fp32, values accumulate in fp32 registers.
#include "../common/cudaUtils.cuh"
#include "multiScaleDeformableAttn.h"

namespace fbocc
{
namespace
{

constexpr int kThreads = 256;

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

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packet
{
    T v[VEC];
};

// One thread per (n, query, head, group of VEC channels): the D / VEC lanes of a head read one value row
// together (coalesced), each lane computing the same sampling corners (cheap, and loads broadcast).
template <typename T, typename C, typename I, int VEC>
__global__ void __launch_bounds__(kThreads) msdaKernel(T const* __restrict__ value,
    I const* __restrict__ spatialShapes, I const* __restrict__ levelStart, C const* __restrict__ locations,
    C const* __restrict__ weights, T* __restrict__ output, int64_t threads, int32_t lanes, int32_t spatial,
    int32_t heads, int32_t levels, int32_t queries, int32_t points)
{
    int64_t const t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (t >= threads)
    {
        return;
    }
    int64_t const task = t / lanes; // (n, q, m)
    int32_t const lane = static_cast<int32_t>(t - task * lanes);
    int64_t const channels = static_cast<int64_t>(lanes) * VEC;
    int64_t const m = task % heads;
    int64_t const n = task / (static_cast<int64_t>(heads) * queries);
    T const* v = value + (n * spatial * heads + m) * channels + lane * VEC;
    int64_t const rowStride = heads * channels;
    C const* loc = locations + task * levels * points * 2;
    C const* wgt = weights + task * levels * points;
    using Vec = Packet<T, VEC>;
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k)
    {
        acc[k] = 0.f;
    }
    for (int32_t l = 0; l < levels; ++l)
    {
        int32_t const h = static_cast<int32_t>(spatialShapes[2 * l]);
        int32_t const w = static_cast<int32_t>(spatialShapes[2 * l + 1]);
        int32_t const start = static_cast<int32_t>(levelStart[l]);
#pragma unroll 2
        for (int32_t p = 0; p < points; ++p)
        {
            Corners c;
            if (!corners(toFloat(ldg(loc + 2 * p)), toFloat(ldg(loc + 2 * p + 1)), h, w, start, c))
            {
                continue;
            }
            float const a = toFloat(ldg(wgt + p));
            Vec x[4];
#pragma unroll
            for (int k = 0; k < 4; ++k)
            {
                x[k] = *reinterpret_cast<Vec const*>(v + c.offset[k] * rowStride);
            }
#pragma unroll
            for (int k = 0; k < 4; ++k)
            {
                float const cw = a * c.weight[k];
#pragma unroll
                for (int j = 0; j < VEC; ++j)
                {
                    acc[j] = fmaf(cw, toFloat(x[k].v[j]), acc[j]);
                }
            }
        }
        loc += 2 * points;
        wgt += points;
    }
    Vec o;
#pragma unroll
    for (int j = 0; j < VEC; ++j)
    {
        o.v[j] = fromFloat<T>(acc[j]);
    }
    *reinterpret_cast<Vec*>(output + task * channels + lane * VEC) = o;
}

bool aligned(void const* p, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <typename T, typename C, typename I>
cudaError_t launchTyped(void const* value, void const* shapes, void const* starts, void const* locations,
    void const* weights, void* output, MultiScaleDeformableAttnShape const& s, cudaStream_t stream)
{
    // Widest packet (at most 16 bytes) that divides the head width and suits both buffers' alignment.
    int vec = 16 / static_cast<int>(sizeof(T));
    while (vec > 1 && (s.channels % vec != 0 || !aligned(value, vec * sizeof(T)) || !aligned(output, vec * sizeof(T))))
    {
        vec /= 2;
    }
    int32_t const lanes = static_cast<int32_t>(s.channels / vec);
    int64_t const threads = s.batch * s.queries * s.heads * lanes;
    auto const run = [&](auto kernel) {
        kernel<<<static_cast<unsigned>(ceilDiv(threads, kThreads)), kThreads, 0, stream>>>(
            static_cast<T const*>(value), static_cast<I const*>(shapes), static_cast<I const*>(starts),
            static_cast<C const*>(locations), static_cast<C const*>(weights), static_cast<T*>(output), threads, lanes,
            static_cast<int32_t>(s.spatial), static_cast<int32_t>(s.heads), static_cast<int32_t>(s.levels),
            static_cast<int32_t>(s.queries), static_cast<int32_t>(s.points));
    };
    switch (vec)
    {
    case 8: run(msdaKernel<T, C, I, (sizeof(T) == 2 ? 8 : 4)>); break;
    case 4: run(msdaKernel<T, C, I, 4>); break;
    case 2: run(msdaKernel<T, C, I, 2>); break;
    default: run(msdaKernel<T, C, I, 1>); break;
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
