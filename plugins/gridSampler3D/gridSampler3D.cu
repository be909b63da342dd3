// GridSampler3D: one thread per output point computes its 8 corner offsets and weights once (fp32), then
// streams a chunk of channels through them. Writes are coalesced; reads hit L1/L2 because neighbouring
// output points sample neighbouring voxels, so DRAM sees the input about once.
#include "../common/cudaUtils.cuh"
#include "gridSampler3D.h"

namespace fbocc
{
namespace
{

constexpr int kThreads = 256;
constexpr int kChannelsPerBlock = 32;
constexpr float kGridScale = 10.f; // the ONNX grid carries normalized coordinates x 10

__device__ __forceinline__ float reflect(float x, float twiceLow, float twiceHigh)
{
    if (twiceLow == twiceHigh)
    {
        return 0.f;
    }
    float const low = twiceLow * 0.5f;
    float const span = (twiceHigh - twiceLow) * 0.5f;
    x = fabsf(x - low);
    float const extra = fmodf(x, span);
    int const flips = static_cast<int>(floorf(x / span));
    return (flips % 2 == 0) ? extra + low : span - extra + low;
}

// PyTorch's grid_sampler_compute_source_index, from the x10 coordinate.
__device__ __forceinline__ float sourceIndex(float scaled, int size, GridSamplerPadding padding, bool alignCorners)
{
    float const coord = scaled / kGridScale;
    float x = alignCorners ? (coord + 1.f) * 0.5f * static_cast<float>(size - 1)
                           : ((coord + 1.f) * static_cast<float>(size) - 1.f) * 0.5f;
    if (padding == GridSamplerPadding::kBORDER)
    {
        x = fminf(static_cast<float>(size - 1), fmaxf(x, 0.f));
    }
    else if (padding == GridSamplerPadding::kREFLECTION)
    {
        x = alignCorners ? reflect(x, 0.f, 2.f * static_cast<float>(size - 1))
                         : reflect(x, -1.f, 2.f * static_cast<float>(size) - 1.f);
        x = fminf(static_cast<float>(size - 1), fmaxf(x, 0.f));
    }
    // Far outside (or NaN) reads zeros anyway; clamping keeps the integer conversion defined.
    return fminf(fmaxf(x, -2.f), static_cast<float>(size) + 1.f);
}

template <typename T, typename G>
__global__ void __launch_bounds__(kThreads) gridSampler3DKernel(T const* __restrict__ input,
    G const* __restrict__ grid, T* __restrict__ output, int32_t channels, int32_t inD, int32_t inH, int32_t inW,
    int32_t outD, int32_t outH, int32_t outW, GridSampler3DTile tile, int32_t tilesX, int32_t tilesY,
    int32_t tilesZ, GridSamplerInterpolation interpolation, GridSamplerPadding padding, bool alignCorners)
{
    int32_t ox, oy, oz;
    int64_t n;
    if (tile.x == 0)
    {
        // Flat: a block covers consecutive output points (full-line, coalesced writes).
        int64_t const point = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
        int64_t const perBatch = static_cast<int64_t>(outD) * outH * outW;
        n = point / perBatch;
        int64_t const rest = point - n * perBatch;
        ox = static_cast<int32_t>(rest % outW);
        oy = static_cast<int32_t>((rest / outW) % outH);
        oz = static_cast<int32_t>(rest / (static_cast<int64_t>(outW) * outH));
        if (n >= tilesZ) // tilesZ carries N in flat mode
        {
            return;
        }
    }
    else
    {
        // A block covers a tile (tile.z x tile.y x tile.x) so that its corner reads overlap in L1.
        int32_t tileIndex = blockIdx.x;
        int32_t const bx = tileIndex % tilesX;
        tileIndex /= tilesX;
        int32_t const by = tileIndex % tilesY;
        tileIndex /= tilesY;
        int32_t const bz = tileIndex % tilesZ;
        n = tileIndex / tilesZ;
        int32_t const t = threadIdx.x;
        ox = bx * tile.x + t % tile.x;
        oy = by * tile.y + (t / tile.x) % tile.y;
        oz = bz * tile.z + t / (tile.x * tile.y);
        if (ox >= outW || oy >= outH || oz >= outD)
        {
            return;
        }
    }
    int64_t const outVolume = static_cast<int64_t>(outD) * outH * outW;
    int64_t const p = (static_cast<int64_t>(oz) * outH + oy) * outW + ox;
    G const* g = grid + n * 3 * outVolume + p;
    float const x = sourceIndex(toFloat(ldg(g)), inW, padding, alignCorners);
    float const y = sourceIndex(toFloat(ldg(g + outVolume)), inH, padding, alignCorners);
    float const z = sourceIndex(toFloat(ldg(g + 2 * outVolume)), inD, padding, alignCorners);

    int64_t const inVolume = static_cast<int64_t>(inD) * inH * inW;
    int32_t const c0 = blockIdx.y * kChannelsPerBlock;
    int32_t const c1 = min(channels, c0 + kChannelsPerBlock);
    T const* in = input + (n * channels + c0) * inVolume;
    T* out = output + (n * channels + c0) * outVolume + p;

    if (interpolation == GridSamplerInterpolation::kNEAREST)
    {
        int const xi = static_cast<int>(rintf(x)); // round half to even, as std::nearbyint in PyTorch
        int const yi = static_cast<int>(rintf(y));
        int const zi = static_cast<int>(rintf(z));
        bool const inside = xi >= 0 && xi < inW && yi >= 0 && yi < inH && zi >= 0 && zi < inD;
        int32_t const offset = inside ? (zi * inH + yi) * inW + xi : 0;
        float const keep = inside ? 1.f : 0.f;
#pragma unroll 4
        for (int32_t c = c0; c < c1; ++c)
        {
            *out = fromFloat<T>(keep * toFloat(ldg(in + offset)));
            in += inVolume;
            out += outVolume;
        }
        return;
    }

    float const fx = floorf(x), fy = floorf(y), fz = floorf(z);
    int const x0 = static_cast<int>(fx), y0 = static_cast<int>(fy), z0 = static_cast<int>(fz);
    float const tx = x - fx, ty = y - fy, tz = z - fz;
    int32_t offset[8];
    float weight[8];
#pragma unroll
    for (int k = 0; k < 8; ++k)
    {
        int const dx = k & 1, dy = (k >> 1) & 1, dz = k >> 2;
        int const xi = x0 + dx, yi = y0 + dy, zi = z0 + dz;
        bool const inside = xi >= 0 && xi < inW && yi >= 0 && yi < inH && zi >= 0 && zi < inD;
        float const w = (dx ? tx : 1.f - tx) * (dy ? ty : 1.f - ty) * (dz ? tz : 1.f - tz);
        weight[k] = inside ? w : 0.f;
        offset[k] = inside ? (zi * inH + yi) * inW + xi : 0; // a valid address; its weight is zero
    }
#pragma unroll 2
    for (int32_t c = c0; c < c1; ++c)
    {
        float v[8];
#pragma unroll
        for (int k = 0; k < 8; ++k)
        {
            v[k] = toFloat(ldg(in + offset[k]));
        }
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < 8; ++k)
        {
            acc = fmaf(weight[k], v[k], acc);
        }
        *out = fromFloat<T>(acc);
        in += inVolume;
        out += outVolume;
    }
}

template <typename T, typename G>
cudaError_t launch(void const* input, void const* grid, void* output, GridSampler3DShape const& s,
    GridSamplerInterpolation interpolation, GridSamplerPadding padding, bool alignCorners, GridSampler3DTile tile,
    cudaStream_t stream)
{
    bool const flat = tile.x == 0;
    int64_t const tilesX = flat ? 1 : ceilDiv(s.outW, tile.x);
    int64_t const tilesY = flat ? 1 : ceilDiv(s.outH, tile.y);
    int64_t const tilesZ = flat ? s.n : ceilDiv(s.outD, tile.z);
    int32_t const threads = flat ? kThreads : tile.x * tile.y * tile.z;
    int64_t const tiles = flat ? ceilDiv(s.n * s.outD * s.outH * s.outW, kThreads) : s.n * tilesX * tilesY * tilesZ;
    if (tiles > INT32_MAX)
    {
        return cudaErrorInvalidValue;
    }
    dim3 const blocks(static_cast<unsigned>(tiles), static_cast<unsigned>(ceilDiv(s.c, kChannelsPerBlock)));
    gridSampler3DKernel<T, G><<<blocks, threads, 0, stream>>>(static_cast<T const*>(input),
        static_cast<G const*>(grid), static_cast<T*>(output), static_cast<int32_t>(s.c), static_cast<int32_t>(s.inD),
        static_cast<int32_t>(s.inH), static_cast<int32_t>(s.inW), static_cast<int32_t>(s.outD),
        static_cast<int32_t>(s.outH), static_cast<int32_t>(s.outW), tile, static_cast<int32_t>(tilesX),
        static_cast<int32_t>(tilesY), static_cast<int32_t>(tilesZ), interpolation, padding, alignCorners);
    return cudaGetLastError();
}

} // namespace

cudaError_t gridSampler3DForward(void const* input, DType inputType, void const* grid, DType gridType, void* output,
    GridSampler3DShape const& shape, GridSamplerInterpolation interpolation, GridSamplerPadding padding,
    bool alignCorners, cudaStream_t stream)
{
    return gridSampler3DForwardTiled(input, inputType, grid, gridType, output, shape, interpolation, padding,
        alignCorners, GridSampler3DTile{}, stream);
}

cudaError_t gridSampler3DForwardTiled(void const* input, DType inputType, void const* grid, DType gridType,
    void* output, GridSampler3DShape const& shape, GridSamplerInterpolation interpolation,
    GridSamplerPadding padding, bool alignCorners, GridSampler3DTile tile, cudaStream_t stream)
{
    if (tile.x != 0 && (tile.x < 0 || tile.y <= 0 || tile.z <= 0 || tile.x * tile.y * tile.z > kThreads))
    {
        return cudaErrorInvalidValue;
    }
    int64_t const outVolume = shape.outD * shape.outH * shape.outW;
    int64_t const outCount = shape.n * shape.c * outVolume;
    if (outCount == 0)
    {
        return cudaSuccess;
    }
    if (shape.inD * shape.inH * shape.inW == 0)
    {
        // An empty volume: every sample falls outside it and reads the zero padding.
        return cudaMemsetAsync(output, 0, static_cast<size_t>(outCount) * dtypeSize(inputType), stream);
    }
    if (shape.inD * shape.inH * shape.inW > INT32_MAX || shape.c > INT32_MAX)
    {
        return cudaErrorInvalidValue;
    }
    if (inputType == DType::kFLOAT32 && gridType == DType::kFLOAT32)
    {
        return launch<float, float>(input, grid, output, shape, interpolation, padding, alignCorners, tile, stream);
    }
    if (inputType == DType::kFLOAT16 && gridType == DType::kFLOAT16)
    {
        return launch<__half, __half>(input, grid, output, shape, interpolation, padding, alignCorners, tile, stream);
    }
    if (inputType == DType::kFLOAT16 && gridType == DType::kFLOAT32)
    {
        return launch<__half, float>(input, grid, output, shape, interpolation, padding, alignCorners, tile, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace fbocc
