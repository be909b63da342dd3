// GridSampler3D: one thread per output point computes its 8 corner offsets and weights once (fp32), then
// streams a chunk of channels through them. Writes are coalesced; reads hit L1/L2 because neighbouring
// output points sample neighbouring voxels, so DRAM sees the input about once.
// fp16 trilinear stages each block's input box in shared memory (the staged kernel below); where it cannot
// (odd widths, unaligned buffers), it reads each point's x-corner pair as one 32-bit word pair shared with its
// neighbour (the pair kernel).
#include "../common/cudaUtils.cuh"
#include "gridSampler3D.h"

#include <cstdint>
#include <cstring>

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

// fp16 trilinear fast path: a thread samples two adjacent output points (flat index 2t, 2t+1). For each of the
// four (y, z) corner rows it reads the x-corner pair of both points with aligned 32-bit loads and funnel
// shifts: when the points' corners are x0, x0+1 and x0+1, x0+2 on the same rows (the usual case for a warp
// grid) two words serve both points, so a thread issues about a quarter of the scalar path's load
// instructions per output. Offsets and weights are computed once per point, in fp32.
struct CornerRows
{
    int32_t element[4]; // the pair's first element (within a channel), per (dy, dz) row
    float weight[8];  // [row][dx]
    int32_t xc, y0, z0;
};

__device__ __forceinline__ void cornerRows(float x, float y, float z, int32_t inD, int32_t inH, int32_t inW,
    CornerRows& r)
{
    float const fx = floorf(x), fy = floorf(y), fz = floorf(z);
    int const x0 = static_cast<int>(fx), y0 = static_cast<int>(fy), z0 = static_cast<int>(fz);
    float const tx = x - fx, ty = y - fy, tz = z - fz;
    // The pair read starts at xc (clamped so that xc, xc+1 are in the row); each element takes the weight of
    // the corner it is, zero if it is neither.
    int const xc = min(max(x0, 0), inW - 2);
    float wx[2];
#pragma unroll
    for (int j = 0; j < 2; ++j)
    {
        int const xe = xc + j;
        wx[j] = xe == x0 ? 1.f - tx : (xe == x0 + 1 ? tx : 0.f);
    }
    r.xc = xc;
    r.y0 = y0;
    r.z0 = z0;
#pragma unroll
    for (int k = 0; k < 4; ++k)
    {
        int const dy = k & 1, dz = k >> 1;
        int const yi = y0 + dy, zi = z0 + dz;
        bool const inside = yi >= 0 && yi < inH && zi >= 0 && zi < inD;
        int32_t const e = (inside ? (zi * inH + yi) * inW : 0) + xc;
        r.element[k] = e;
#pragma unroll
        for (int j = 0; j < 2; ++j)
        {
            float const w = wx[j] * (dy ? ty : 1.f - ty) * (dz ? tz : 1.f - tz);
            r.weight[k * 2 + j] = inside ? w : 0.f;
        }
    }
}

__device__ __forceinline__ float2 halfPair(uint32_t bits)
{
    __half2 h;
    static_assert(sizeof(h) == sizeof(bits), "half2 is 32 bits");
    memcpy(&h, &bits, sizeof(bits));
    return __half22float2(h);
}

// 64 registers (4 blocks of 256 per SM), one channel per iteration, and 128 channels a block (the coordinate work
// spread over more channels) measured best on H100; the timings are in docs/tuning/gridSampler3D.md.
constexpr int kHalfPairChannelsPerBlock = 128;
template <typename G>
__global__ void __launch_bounds__(kThreads, 4) gridSampler3DHalfPairKernel(__half const* __restrict__ input,
    G const* __restrict__ grid, __half* __restrict__ output, int32_t channels, int32_t inD, int32_t inH,
    int32_t inW, int64_t outVolume, int64_t pairs, GridSamplerPadding padding, bool alignCorners)
{
    int64_t const pair = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (pair >= pairs)
    {
        return;
    }
    int64_t const p0 = 2 * pair; // outVolume is even, so both points are in batch n
    int64_t const n = p0 / outVolume;
    int64_t const p = p0 - n * outVolume;
    G const* g = grid + n * 3 * outVolume + p;
    CornerRows a, b;
    cornerRows(sourceIndex(toFloat(ldg(g)), inW, padding, alignCorners),
        sourceIndex(toFloat(ldg(g + outVolume)), inH, padding, alignCorners),
        sourceIndex(toFloat(ldg(g + 2 * outVolume)), inD, padding, alignCorners), inD, inH, inW, a);
    cornerRows(sourceIndex(toFloat(ldg(g + 1)), inW, padding, alignCorners),
        sourceIndex(toFloat(ldg(g + 1 + outVolume)), inH, padding, alignCorners),
        sourceIndex(toFloat(ldg(g + 1 + 2 * outVolume)), inD, padding, alignCorners), inD, inH, inW, b);
    // Shared: b's pair is a's pair shifted by one element on the same rows, so a's two words hold both.
    bool const shared = b.xc == a.xc + 1 && b.y0 == a.y0 && b.z0 == a.z0;

    int64_t const inVolume = static_cast<int64_t>(inD) * inH * inW; // even: channel bases are word aligned
    int32_t const c0 = blockIdx.y * kHalfPairChannelsPerBlock;
    int32_t const c1 = min(channels, c0 + kHalfPairChannelsPerBlock);
    uint32_t const* in = reinterpret_cast<uint32_t const*>(input + (n * channels + c0) * inVolume);
    int64_t const inStride = inVolume / 2;
    __half2* out = reinterpret_cast<__half2*>(output + (n * channels + c0) * outVolume + p);
    int64_t const outStride = outVolume / 2;
#pragma unroll 1
    for (int32_t c = c0; c < c1; ++c)
    {
        // Every load first (predicated, no branch), so that all of a channel's reads are in flight together.
        uint32_t wa0[4], wa1[4], wb0[4], wb1[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
        {
            int32_t const aw = a.element[k] >> 1;
            int32_t const bw = b.element[k] >> 1;
            bool const aOdd = a.element[k] & 1;
            bool const bOdd = b.element[k] & 1;
            wa0[k] = __ldg(in + aw);
            wa1[k] = (shared || aOdd) ? __ldg(in + aw + 1) : 0u;
            wb0[k] = shared ? 0u : __ldg(in + bw);
            wb1[k] = (!shared && bOdd) ? __ldg(in + bw + 1) : 0u;
        }
        uint32_t pa[4], pb[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
        {
            // a's pair spans two words when it starts odd; b's too; when shared, b's pair is a's shifted by one.
            uint32_t const aShift = static_cast<uint32_t>(a.element[k] & 1) * 16u;
            uint32_t const bShift = static_cast<uint32_t>(b.element[k] & 1) * 16u;
            pa[k] = __funnelshift_r(wa0[k], wa1[k], aShift);
            pb[k] = shared ? __funnelshift_rc(wa0[k], wa1[k], aShift + 16u) : __funnelshift_r(wb0[k], wb1[k], bShift);
        }
        float accA = 0.f, accB = 0.f;
#pragma unroll
        for (int k = 0; k < 4; ++k)
        {
            float2 const va = halfPair(pa[k]);
            float2 const vb = halfPair(pb[k]);
            accA = fmaf(a.weight[2 * k], va.x, accA);
            accA = fmaf(a.weight[2 * k + 1], va.y, accA);
            accB = fmaf(b.weight[2 * k], vb.x, accB);
            accB = fmaf(b.weight[2 * k + 1], vb.y, accB);
        }
        *out = __floats2half2_rn(accA, accB);
        in += inStride;
        out += outStride;
    }
}

template <typename G>
bool launchHalfPair(void const* input, void const* grid, void* output, GridSampler3DShape const& s,
    GridSamplerInterpolation interpolation, GridSamplerPadding padding, bool alignCorners, cudaStream_t stream,
    cudaError_t& status)
{
    int64_t const inVolume = s.inD * s.inH * s.inW;
    int64_t const outVolume = s.outD * s.outH * s.outW;
    bool const fits = interpolation == GridSamplerInterpolation::kBILINEAR && s.inW >= 2 && inVolume % 2 == 0
        && outVolume % 2 == 0 && reinterpret_cast<uintptr_t>(input) % 4 == 0
        && reinterpret_cast<uintptr_t>(output) % 4 == 0;
    if (!fits)
    {
        return false;
    }
    int64_t const pairs = s.n * outVolume / 2;
    int64_t const blocksX = ceilDiv(pairs, kThreads);
    if (blocksX > INT32_MAX)
    {
        return false;
    }
    dim3 const blocks(static_cast<unsigned>(blocksX), static_cast<unsigned>(ceilDiv(s.c, kHalfPairChannelsPerBlock)));
    gridSampler3DHalfPairKernel<G><<<blocks, kThreads, 0, stream>>>(static_cast<__half const*>(input),
        static_cast<G const*>(grid), static_cast<__half*>(output), static_cast<int32_t>(s.c),
        static_cast<int32_t>(s.inD), static_cast<int32_t>(s.inH), static_cast<int32_t>(s.inW), outVolume, pairs,
        padding, alignCorners);
    status = cudaGetLastError();
    return true;
}

// fp16 trilinear, staged (voxel-major): a block owns a tile of output points (tz x ty x tx, one point per thread)
// and a chunk of channels, which it streams through shared memory 8 channels at a time. It reduces the box of input
// voxels its points' corners touch, with coordinates clamped into [-1, size] so that every corner lies in the volume
// or in its one-voxel margin; the box is staged with the margin reading zeros, so no corner needs a validity test.
// A box voxel holds its 8 channels as four half2 words (16 bytes): a thread reads each corner with one 16-byte
// shared load and accumulates 8 channels in fp32, weights and corner order as in the kernels above. Rows are padded
// to a multiple of 8 voxels, so the 8 consecutive points of a quarter warp read 8 distinct bank groups wherever the
// grid's rotation moves them across rows; staging stores keep a quarter warp on distinct bank groups too (each
// thread writes its unit's two voxels in the order that does). The next 8 channels' loads are in flight while the
// current ones are sampled (double buffer, one barrier per stage). A block whose box does not fit samples global
// memory. The 2 x 5 x 50 tile (500 threads, 2 blocks per SM) and 64 channels a block measured best on H100 at the
// FB-OCC shape (narrower tiles put more quarter warps across two rows, whose corner reads conflict). Timings,
// profiles and the variants measured and left out: docs/tuning/gridSampler3D.md.
constexpr GridSampler3DTile kStagedTile{2, 5, 50}; // z, y, x
constexpr int kStagedThreads = kStagedTile.z * kStagedTile.y * kStagedTile.x;
constexpr int kStagedChannelsPerBlock = 64;
constexpr int kStagedChannels = 8;           // channels per stage, one 16-byte voxel slot
constexpr int kStagedUnitsPerThread = 2;     // staging units (two voxels of a row) per thread at most
constexpr int kStagedCapacity = 2300;        // voxel slots per stage buffer (a larger box samples global memory)
constexpr int kStagedSharedBytes = 2 * kStagedCapacity * 16;

// A sampling position split into its floor corner and fractions.
struct Trilinear
{
    int x0, y0, z0;
    float tx, ty, tz;
};

__device__ __forceinline__ Trilinear trilinear(float x, float y, float z)
{
    float const fx = floorf(x), fy = floorf(y), fz = floorf(z);
    return {static_cast<int>(fx), static_cast<int>(fy), static_cast<int>(fz), x - fx, y - fy, z - fz};
}

// Corner k (= dx + 2 dy + 4 dz) of q: its weight, zero where the corner lies outside the volume (PyTorch's zero
// padding); `element` is its offset in a channel, or -1 outside. gridSampler3DKernel keeps its own inline copy of
// this arithmetic on purpose: calling these helpers there measured slower (docs/tuning/gridSampler3D.md). The
// staged kernel computes the same weights from coordinates clamped into the volume's one-voxel zero margin.
__device__ __forceinline__ float cornerWeight(Trilinear const& q, int k, int32_t inD, int32_t inH, int32_t inW,
    int32_t& element)
{
    int const dx = k & 1, dy = (k >> 1) & 1, dz = k >> 2;
    int const xi = q.x0 + dx, yi = q.y0 + dy, zi = q.z0 + dz;
    bool const inside = xi >= 0 && xi < inW && yi >= 0 && yi < inH && zi >= 0 && zi < inD;
    element = inside ? (zi * inH + yi) * inW + xi : -1;
    float const w = (dx ? q.tx : 1.f - q.tx) * (dy ? q.ty : 1.f - q.ty) * (dz ? q.tz : 1.f - q.tz);
    return inside ? w : 0.f;
}

// The staged kernel's path for a block whose box does not fit in shared memory: the point samples the channels'
// global memory (weights and order as the kernels above). Not inlined, so that it does not take registers from the
// staged loop.
__device__ __noinline__ void sampleGlobal(__half const* __restrict__ in, __half* __restrict__ out, int32_t count,
    int64_t inVolume, int64_t outVolume, int32_t inD, int32_t inH, int32_t inW, float x, float y, float z)
{
    Trilinear const q = trilinear(x, y, z);
    int32_t offset[8];
    float weight[8];
#pragma unroll
    for (int k = 0; k < 8; ++k)
    {
        int32_t element;
        weight[k] = cornerWeight(q, k, inD, inH, inW, element);
        offset[k] = max(element, 0); // outside: element 0, weight 0
    }
#pragma unroll 2 // two channels' loads in flight: faster on a uniformly random grid
    for (int32_t c = 0; c < count; ++c)
    {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < 8; ++k)
        {
            acc = fmaf(weight[k], toFloat(ldg(in + offset[k])), acc);
        }
        *out = __float2half_rn(acc);
        in += inVolume;
        out += outVolume;
    }
}

// A store marked evict-first (st.global.cs): the output is not read again, the input boxes of neighbouring tiles are
// (measured 1% faster at the FB-OCC shape). Inline PTX, so as not to depend on a CUDA version's __half overloads.
__device__ __forceinline__ void storeStreaming(__half* p, __half v)
{
    asm volatile("st.global.cs.b16 [%0], %1;" : : "l"(p), "h"(__half_as_ushort(v)) : "memory");
}

// n / d for 0 <= n < 2^22 from the float reciprocal of d: exact, since (n + 0.5) / d is at least 0.5 / d from an
// integer and the product's relative error is below 2^-23. Cheaper than integer division by a runtime value (the
// staged kernel's unit decode measured 0.8% faster at the FB-OCC shape).
__device__ __forceinline__ int32_t quotient(int32_t n, float reciprocal)
{
    return static_cast<int32_t>((static_cast<float>(n) + 0.5f) * reciprocal);
}

// acc[i] += w * channel i of a voxel slot (8 halves).
__device__ __forceinline__ void accumulateSlot(float (&acc)[kStagedChannels], float w, uint4 slot)
{
    float2 const a = halfPair(slot.x), b = halfPair(slot.y), c = halfPair(slot.z), d = halfPair(slot.w);
    acc[0] = fmaf(w, a.x, acc[0]);
    acc[1] = fmaf(w, a.y, acc[1]);
    acc[2] = fmaf(w, b.x, acc[2]);
    acc[3] = fmaf(w, b.y, acc[3]);
    acc[4] = fmaf(w, c.x, acc[4]);
    acc[5] = fmaf(w, c.y, acc[5]);
    acc[6] = fmaf(w, d.x, acc[6]);
    acc[7] = fmaf(w, d.y, acc[7]);
}

template <typename G>
__global__ void __launch_bounds__(kStagedThreads, 2) gridSampler3DHalfStagedKernel(__half const* __restrict__ input,
    G const* __restrict__ grid, __half* __restrict__ output, int32_t channels, int32_t inD, int32_t inH, int32_t inW,
    int32_t outD, int32_t outH, int32_t outW, int32_t tilesZ, int32_t zGroups, float invTilesZ, float invZGroups,
    GridSamplerPadding padding, bool alignCorners)
{
    extern __shared__ uint4 slots[]; // [2][kStagedCapacity] voxel slots of 8 channels
    __shared__ int32_t boxLow[3], boxHigh[3];

    // blockIdx: (x tile, y tile, z tile + tilesZ * (batch + batches * channel chunk)).
    int32_t const bx = blockIdx.x, by = blockIdx.y, zBlock = blockIdx.z;
    int32_t const chunk = quotient(zBlock, invZGroups);
    int32_t const zg = zBlock - chunk * zGroups;
    int32_t const batch = quotient(zg, invTilesZ);
    int32_t const bz = zg - batch * tilesZ;
    int64_t const n = batch;
    int32_t const t = threadIdx.x;
    int32_t const ox = bx * kStagedTile.x + t % kStagedTile.x;
    int32_t const oy = by * kStagedTile.y + (t / kStagedTile.x) % kStagedTile.y;
    int32_t const oz = bz * kStagedTile.z + t / (kStagedTile.x * kStagedTile.y);
    bool const valid = ox < outW && oy < outH && oz < outD;
    if (t < 3)
    {
        boxLow[t] = INT32_MAX;
        boxHigh[t] = INT32_MIN;
    }
    int64_t const outVolume = static_cast<int64_t>(outD) * outH * outW;
    int64_t const p = (static_cast<int64_t>(oz) * outH + oy) * outW + ox;
    float x = -1.f, y = -1.f, z = -1.f;
    if (valid)
    {
        G const* g = grid + n * 3 * outVolume + p;
        x = sourceIndex(toFloat(ldg(g)), inW, padding, alignCorners);
        y = sourceIndex(toFloat(ldg(g + outVolume)), inH, padding, alignCorners);
        z = sourceIndex(toFloat(ldg(g + 2 * outVolume)), inD, padding, alignCorners);
    }
    // Clamped into [-1, size] (NaN to -1): the corners then lie in the volume or its zero margin, with the weights
    // of the unclamped position wherever a corner is inside (a position past the margin samples only zeros).
    float const xc = fminf(fmaxf(x, -1.f), static_cast<float>(inW));
    float const yc = fminf(fmaxf(y, -1.f), static_cast<float>(inH));
    float const zc = fminf(fmaxf(z, -1.f), static_cast<float>(inD));
    int32_t const x0 = min(static_cast<int32_t>(floorf(xc)), inW - 1);
    int32_t const y0 = min(static_cast<int32_t>(floorf(yc)), inH - 1);
    int32_t const z0 = min(static_cast<int32_t>(floorf(zc)), inD - 1);
    __syncthreads();
    if (valid)
    {
        atomicMin(&boxLow[0], x0);
        atomicMax(&boxHigh[0], x0 + 1);
        atomicMin(&boxLow[1], y0);
        atomicMax(&boxHigh[1], y0 + 1);
        atomicMin(&boxLow[2], z0);
        atomicMax(&boxHigh[2], z0 + 1);
    }
    __syncthreads();
    int32_t const bx0 = boxLow[0] & ~1; // even: a staging unit is one 32-bit word, two voxels
    int32_t const by0 = boxLow[1], bz0 = boxLow[2];
    int32_t const rowWords = (boxHigh[0] - bx0) / 2 + 1;
    int32_t const rowSlots = (2 * rowWords + 7) & ~7; // a multiple of 8: slot = x (mod 8) on every row
    int32_t const boxH = boxHigh[1] - by0 + 1;
    int32_t const boxD = boxHigh[2] - bz0 + 1;
    int32_t const units = rowWords * boxH * boxD;
    bool const staged = units <= kStagedUnitsPerThread * kStagedThreads && rowSlots * boxH * boxD <= kStagedCapacity;

    int64_t const inVolume = static_cast<int64_t>(inD) * inH * inW;
    int32_t const c0 = chunk * kStagedChannelsPerBlock;
    int32_t const c1 = min(channels, c0 + kStagedChannelsPerBlock);
    if (!staged)
    {
        if (valid)
        {
            sampleGlobal(input + (n * channels + c0) * inVolume, output + (n * channels + c0) * outVolume + p,
                c1 - c0, inVolume, outVolume, inD, inH, inW, x, y, z);
        }
        return;
    }

    // Corners: byte offsets of the four (dy, dz) rows in a stage buffer (dx = 1 is the next slot), fp32 weights. A
    // thread past the output's edge reads slot 0 and writes nothing.
    float const tX = xc - static_cast<float>(x0), tY = yc - static_cast<float>(y0), tZ = zc - static_cast<float>(z0);
    int32_t const base = valid ? ((z0 - bz0) * boxH + (y0 - by0)) * rowSlots + (x0 - bx0) : 0;
    int32_t const plane = rowSlots * boxH;
    uint32_t row[4];
    float weight[8];
#pragma unroll
    for (int k = 0; k < 8; ++k)
    {
        int const dx = k & 1, dy = (k >> 1) & 1, dz = k >> 2;
        if (dx == 0)
        {
            row[k >> 1] = static_cast<uint32_t>(base + dz * plane + dy * rowSlots) * 16u;
        }
        float const w = (dx ? tX : 1.f - tX) * (dy ? tY : 1.f - tY) * (dz ? tZ : 1.f - tZ);
        weight[k] = valid ? w : 0.f;
    }

    // Staging unit u: one 32-bit word (two voxels) of a box row, for 8 channels. src: the word's index in a channel
    // (~0: outside the volume, zeros); dst, dst2: byte offsets of the slot written first and second (-1: no unit),
    // in the order that keeps a quarter warp's 16-byte stores on distinct bank groups; selA: the byte selector that
    // picks the first slot's halves. Kept per unit rather than rederived from one flip bit each stage (measured
    // faster).
    uint32_t const* in32 = reinterpret_cast<uint32_t const*>(input + n * channels * inVolume);
    int64_t const channelWords = inVolume / 2;
    float const invRowWords = 1.f / static_cast<float>(rowWords), invBoxH = 1.f / static_cast<float>(boxH);
    uint32_t src[kStagedUnitsPerThread];
    int32_t dst[kStagedUnitsPerThread];
    int32_t dst2[kStagedUnitsPerThread];
    uint32_t selA[kStagedUnitsPerThread];
#pragma unroll
    for (int j = 0; j < kStagedUnitsPerThread; ++j)
    {
        int32_t const u = t + j * kStagedThreads;
        int32_t const r = quotient(u, invRowWords);
        int32_t const xw = u - r * rowWords;
        int32_t const zz = quotient(r, invBoxH);
        int32_t const yy = r - zz * boxH;
        int32_t const gx = bx0 / 2 + xw, gy = by0 + yy, gz = bz0 + zz;
        bool const inside = gx >= 0 && gx < inW / 2 && gy >= 0 && gy < inH && gz >= 0 && gz < inD;
        src[j] = inside ? static_cast<uint32_t>((gz * inH + gy) * (inW / 2) + gx) : ~0u;
        int32_t const flip = (xw >> 2) & 1;
        dst[j] = u < units ? ((zz * boxH + yy) * rowSlots + 2 * xw + flip) * 16 : -1;
        dst2[j] = dst[j] + 16 - 32 * flip;
        selA[j] = 0x5410u + flip * 0x2222u;
    }
    // A stage's loads; a partial last stage repeats its last channel (not stored).
    uint32_t next[kStagedUnitsPerThread][kStagedChannels];
    auto fetch = [&](int32_t cs) {
        uint32_t const* stageIn = in32 + static_cast<int64_t>(cs) * channelWords;
        int32_t const last = min(kStagedChannels, c1 - cs) - 1;
#pragma unroll
        for (int j = 0; j < kStagedUnitsPerThread; ++j)
        {
            if (j == 0 || dst[j] >= 0)
            {
                bool const inside = src[j] != ~0u;
                uint32_t const* q = stageIn + (inside ? src[j] : 0u);
                if (last == kStagedChannels - 1)
                {
#pragma unroll
                    for (int i = 0; i < kStagedChannels; ++i)
                    {
                        next[j][i] = inside ? __ldg(q) : 0u;
                        q += channelWords;
                    }
                }
                else
                {
#pragma unroll
                    for (int i = 0; i < kStagedChannels; ++i)
                    {
                        next[j][i] = inside ? __ldg(q + static_cast<int64_t>(min(i, last)) * channelWords) : 0u;
                    }
                }
            }
        }
    };
    fetch(c0);
    int32_t stage = 0;
    __half* out = output + (n * channels + c0) * outVolume + p;
#pragma unroll 1
    for (int32_t cs = c0; cs < c1; cs += kStagedChannels, stage ^= 1)
    {
        char* buf = reinterpret_cast<char*>(slots + stage * kStagedCapacity);
#pragma unroll
        for (int j = 0; j < kStagedUnitsPerThread; ++j)
        {
            if (dst[j] >= 0)
            {
                // Low halves of the 8 channels' words are the unit's first voxel, high halves its second.
                uint32_t const first = selA[j], second = selA[j] ^ 0x2222u;
                uint32_t const* v = next[j];
                char* d = buf + dst[j];
                *reinterpret_cast<uint4*>(d) = make_uint4(__byte_perm(v[0], v[1], first),
                    __byte_perm(v[2], v[3], first), __byte_perm(v[4], v[5], first), __byte_perm(v[6], v[7], first));
                *reinterpret_cast<uint4*>(buf + dst2[j]) = make_uint4(
                    __byte_perm(v[0], v[1], second), __byte_perm(v[2], v[3], second), __byte_perm(v[4], v[5], second),
                    __byte_perm(v[6], v[7], second));
            }
        }
        __syncthreads();
        if (cs + kStagedChannels < c1)
        {
            fetch(cs + kStagedChannels);
        }
        float acc[kStagedChannels] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int k = 0; k < 8; ++k)
        {
            accumulateSlot(acc, weight[k], *reinterpret_cast<uint4 const*>(buf + row[k >> 1] + 16 * (k & 1)));
        }
        if (valid)
        {
            if (cs + kStagedChannels <= c1)
            {
#pragma unroll
                for (int i = 0; i < kStagedChannels; ++i)
                {
                    storeStreaming(out + i * outVolume, __float2half_rn(acc[i]));
                }
            }
            else
            {
#pragma unroll
                for (int i = 0; i < kStagedChannels; ++i)
                {
                    if (cs + i < c1)
                    {
                        storeStreaming(out + i * outVolume, __float2half_rn(acc[i]));
                    }
                }
            }
        }
        out += kStagedChannels * outVolume;
    }
}

template <typename G>
bool launchHalfStaged(void const* input, void const* grid, void* output, GridSampler3DShape const& s,
    GridSamplerInterpolation interpolation, GridSamplerPadding padding, bool alignCorners, cudaStream_t stream,
    cudaError_t& status)
{
    // inW even: a box row's units are whole 32-bit words and every channel starts word aligned.
    bool const fits = interpolation == GridSamplerInterpolation::kBILINEAR && s.inW % 2 == 0
        && reinterpret_cast<uintptr_t>(input) % 4 == 0;
    if (!fits)
    {
        return false;
    }
    int64_t const tilesX = ceilDiv(s.outW, kStagedTile.x);
    int64_t const tilesY = ceilDiv(s.outH, kStagedTile.y);
    int64_t const tilesZ = ceilDiv(s.outD, kStagedTile.z);
    int64_t const zGroups = tilesZ * s.n;
    int64_t const chunks = ceilDiv(s.c, kStagedChannelsPerBlock);
    if (tilesX > INT32_MAX || tilesY > 65535 || zGroups * chunks > 65535)
    {
        return false;
    }
    auto const kernel = gridSampler3DHalfStagedKernel<G>;
    // Above the default 48 KiB of dynamic shared memory (every CUDA_ARCHS target allows it); where the device
    // refuses, the other kernels run.
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kStagedSharedBytes) != cudaSuccess)
    {
        (void) cudaGetLastError();
        return false;
    }
    // Linear block order as tile-major, channel chunk last: concurrent blocks share their boxes' rows in L2.
    dim3 const blocks(static_cast<unsigned>(tilesX), static_cast<unsigned>(tilesY),
        static_cast<unsigned>(zGroups * chunks));
    kernel<<<blocks, kStagedThreads, kStagedSharedBytes, stream>>>(static_cast<__half const*>(input),
        static_cast<G const*>(grid), static_cast<__half*>(output), static_cast<int32_t>(s.c),
        static_cast<int32_t>(s.inD), static_cast<int32_t>(s.inH), static_cast<int32_t>(s.inW),
        static_cast<int32_t>(s.outD), static_cast<int32_t>(s.outH), static_cast<int32_t>(s.outW),
        static_cast<int32_t>(tilesZ), static_cast<int32_t>(zGroups), 1.f / static_cast<float>(tilesZ),
        1.f / static_cast<float>(zGroups), padding, alignCorners);
    status = cudaGetLastError();
    return true;
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

// fp16 features: the staged kernel where its box fits, else the pair kernel, else the general one; a tile
// override (tuning) always takes the general kernel.
template <typename G>
cudaError_t launchHalf(void const* input, void const* grid, void* output, GridSampler3DShape const& s,
    GridSamplerInterpolation interpolation, GridSamplerPadding padding, bool alignCorners, GridSampler3DTile tile,
    cudaStream_t stream)
{
    cudaError_t status = cudaSuccess;
    if (tile.x == 0
        && (launchHalfStaged<G>(input, grid, output, s, interpolation, padding, alignCorners, stream, status)
            || launchHalfPair<G>(input, grid, output, s, interpolation, padding, alignCorners, stream, status)))
    {
        return status;
    }
    return launch<__half, G>(input, grid, output, s, interpolation, padding, alignCorners, tile, stream);
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
        return launchHalf<__half>(input, grid, output, shape, interpolation, padding, alignCorners, tile, stream);
    }
    if (inputType == DType::kFLOAT16 && gridType == DType::kFLOAT32)
    {
        return launchHalf<float>(input, grid, output, shape, interpolation, padding, alignCorners, tile, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace fbocc
