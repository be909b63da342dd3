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

// 64 registers (4 blocks of 256 per SM) and one channel per iteration measured best on H100 (0.346 ms at the
// FB-OCC shape against 0.352 ms unrolled by 2, 0.39 ms at 3 blocks, 0.50 ms at 5 blocks, which spill). A block
// streams 128 channels through its points (32: 0.345 ms, 64: 0.335, 128: 0.329, 256: 0.39): the coordinate
// work is spread over more channels. Warps mapped to single output rows were slower (0.41 ms).
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

// fp16 trilinear, staged: a block owns a tile of output points (tz x ty x tx, two points per thread, tx / 2 apart in x)
// and a chunk of channels. It reduces the box of input voxels its tile's corners touch; where the box fits in
// shared memory it copies the box of two channels at a time there with coalesced 32-bit loads (the next two
// channels' loads in flight while the current ones are sampled, double-buffered, one barrier per two channels)
// and samples it from shared memory, so every input byte crosses L1 once per block instead of once per corner
// row a warp touches. A block whose box does not fit (arbitrary grids) samples global memory with the same
// weights. Weights and summation order are those of the kernels above (fp32, corners in k = dx + 2 dy + 4 dz
// order), so the results are the same.
// Tuned on H100 at the FB-OCC shape (ego-motion warp, fp32 grid), 3 blocks per SM, 64 channels a block, 2 channels
// staged at a time. 2 x 6 x 50 points (300 threads, 3 box words each), corner offsets kept in bytes (each
// shared-memory read is one instruction, no address arithmetic), 32-bit staging offsets and the global path out of
// line: 0.279 ms against 0.291 for the previous 2 x 5 x 50 loop (same run; the pair kernel: 0.329). Grids whose
// boxes do not fit: a uniformly random grid 3.97 -> 2.45 ms, a 2.3x zoom-out of the FB-OCC warp 0.330 -> 0.365 ms
// (half of that from the tile, half from the out-of-line path; reading clamped corners there instead of element
// 0 was slower for both: 0.385 and 3.40 ms).
// Measured worse: 2x12x20 0.319, 4x4x20 0.316, 2x4x50 0.325, 1x5x100 0.370 (more box words per thread), 4
// channels staged 0.36+ (registers), 2 blocks per SM 0.35, 32 channels a block 0.304, 128 0.296; corners read as
// single halves instead of channel-interleaved words 0.43; other tiles with this loop (2x5..10x50, 4x4..6x50,
// 2x4..6x56..64, 2x6x100) 0.27-0.39.
// A thread's two points lie tx / 2 apart (x and x + 25), not side by side: a warp's shared-memory corner reads then hit
// consecutive words within a row. Measured and left out: points side by side with half2 stores, box rows split into
// even and odd voxels and padded to 32 words, this tile: 0.2775 against 0.2781 ms (medians of three alternating runs),
// slower for narrow outputs (36 wide: 0.144 against 0.138 ms) and random grids (2.54 against 2.45 ms). Correction: a 2
// x 5 x 64 version of it was recorded here as 0.269 ms, 4% faster, with Nsight Compute figures; that scratch kernel
// skipped the blocks whose box did not fit shared memory, a quarter of the output at this shape, so those figures do
// not hold. The scratch variants behind the "measured worse" tiles above skipped such blocks too; where a tile's boxes
// did not all fit, its time there is optimistic. No faster: the box copied with cp.async into a ring of 3-6 channel
// pairs and interleaved from there (0.308-0.346 ms); warps mapped to 3 x 10 point strips with padded rows (0.335-0.377
// ms); a thread owning the same (x, y) in both z-slices so that a shared plane is read once (19% fewer L1 wavefronts,
// same time); tensor cores (mma.sync m16n8k16, channels x window voxels times weights split into two halves for fp32
// accuracy, boxes staged 16 channels at a time with cp.async): 0.52-0.69 ms, because 16 staged channels force small
// tiles (5-6x the input in L2 read sectors) and per-block weight fragments cost more instructions than the FMAs they
// replace. Tensor cores, second design (A = 8 channels x a task's two z-planes by a 16-voxel x-window of one y-row, B =
// that row's x*y weights of a task's 8 points as hi and lo halves, held in registers for the block's life by the warp
// that owns the task; the two planes combined in fp32; 896-thread blocks, 2 x 4 x 50 tiles, 8 or 16 channels staged per
// step by cp.async): correct, 0.51-0.67 ms. Nsight Compute: 239 million warp instructions against this kernel's 173
// million (a task is only 8 points, so its setup and addressing outweigh the FMAs the MMAs replace) and 27.5 against
// 19.9 million L2 write sectors (16-byte runs per channel).
// Not issue-bound: trimming the loop from 171 to 151 instructions per iteration (8-byte staging loads through
// per-thread pointers, one conversion for both points of a channel, a second output pointer) measured 0.2749 against
// 0.2793 ms (medians of three alternating runs), 1.6%, but needs inW % 4 == 0 and was slower for random grids (2.51
// against 2.45 ms) and 36-wide outputs (0.142 against 0.139 ms), so it is left out: the L1 data pipe, not issue, sets
// the pace.
// Nsight Compute now: L1 data-pipe wavefronts 74% busy (27 of 47 million are the corner reads, half of them bank
// conflicts: the rotated grid moves a warp's corners across rows), issue 68%, L2 fabric 78% (2-byte stores write
// 3x the output's sectors), DRAM 40%.
constexpr GridSampler3DTile kStagedTile{2, 6, 50}; // z, y, x; x even
constexpr int kStagedHalfTx = kStagedTile.x / 2;
constexpr int kStagedThreads = kStagedTile.z * kStagedTile.y * kStagedHalfTx; // two points per thread
constexpr int kStagedChannelsPerBlock = 64;
constexpr int kStagedLoadsPerThread = 3;    // box words per thread at most (a larger box samples global memory)
constexpr int kStagedBoxWords = kStagedLoadsPerThread * kStagedThreads; // one channel's box, 32-bit words

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
// padding); `element` is its offset in a channel, or -1 outside. gridSampler3DKernel and the staged kernel's loop
// keep their own inline copy of this arithmetic on purpose: calling these helpers there changes their code
// (measured on H100: fp32 0.4380 -> 0.4394-0.4401 ms, staged fp16 0.280 -> 0.285 ms), and both are the fastest
// loops measured for their paths.
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

// The staged kernel's path for a block whose box does not fit in shared memory: its two points sample the
// channels' global memory (same offsets, weights and order as the kernels above). Not inlined, so that it does
// not take registers from the staged loop.
__device__ __noinline__ void sampleGlobalPair(__half const* __restrict__ in, __half* __restrict__ out,
    int32_t count, int64_t inVolume, int64_t outVolume, int32_t inD, int32_t inH, int32_t inW, float const* cx,
    float const* cy, float const* cz, bool valid, bool valid1)
{
    bool const pv[2] = {valid, valid1};
    int32_t offset[2][8];
    float weight[2][8];
#pragma unroll
    for (int i = 0; i < 2; ++i)
    {
        Trilinear const q = trilinear(pv[i] ? cx[i] : 0.f, pv[i] ? cy[i] : 0.f, pv[i] ? cz[i] : 0.f);
#pragma unroll
        for (int k = 0; k < 8; ++k)
        {
            int32_t element;
            weight[i][k] = pv[i] ? cornerWeight(q, k, inD, inH, inW, element) : 0.f;
            offset[i][k] = pv[i] ? max(element, 0) : 0; // outside: element 0, weight 0
        }
    }
    for (int32_t c = 0; c < count; ++c)
    {
        float acc[2];
#pragma unroll
        for (int i = 0; i < 2; ++i)
        {
            acc[i] = 0.f;
#pragma unroll
            for (int k = 0; k < 8; ++k)
            {
                acc[i] = fmaf(weight[i][k], toFloat(ldg(in + offset[i][k])), acc[i]);
            }
        }
        if (valid)
        {
            out[0] = __float2half_rn(acc[0]);
        }
        if (valid1)
        {
            out[kStagedHalfTx] = __float2half_rn(acc[1]);
        }
        in += inVolume;
        out += outVolume;
    }
}

template <typename G>
__global__ void __launch_bounds__(kStagedThreads, 3) gridSampler3DHalfStagedKernel(__half const* __restrict__ input,
    G const* __restrict__ grid, __half* __restrict__ output, int32_t channels, int32_t inD, int32_t inH, int32_t inW,
    int32_t outD, int32_t outH, int32_t outW, int32_t tilesX, int32_t tilesY, int32_t tilesZ,
    GridSamplerPadding padding, bool alignCorners)
{
    // [buffer][voxel]: a channel pair, interleaved (word v holds voxel v of both channels as half2).
    __shared__ uint32_t box[2][2 * kStagedBoxWords];
    __shared__ int32_t boxLow[3], boxHigh[3];

    int32_t tileIndex = blockIdx.x;
    int32_t const bx = tileIndex % tilesX;
    tileIndex /= tilesX;
    int32_t const by = tileIndex % tilesY;
    tileIndex /= tilesY;
    int32_t const bz = tileIndex % tilesZ;
    int64_t const n = tileIndex / tilesZ;
    int32_t const t = threadIdx.x;
    int32_t const ox = bx * kStagedTile.x + t % kStagedHalfTx; // this thread's points: ox and ox + kStagedHalfTx
    int32_t const oy = by * kStagedTile.y + (t / kStagedHalfTx) % kStagedTile.y;
    int32_t const oz = bz * kStagedTile.z + t / (kStagedHalfTx * kStagedTile.y);
    bool const valid = ox < outW && oy < outH && oz < outD;
    bool const valid1 = valid && ox + kStagedHalfTx < outW;
    bool const pv[2] = {valid, valid1};

    if (t < 3)
    {
        boxLow[t] = INT32_MAX;
        boxHigh[t] = INT32_MIN;
    }
    int64_t const outVolume = static_cast<int64_t>(outD) * outH * outW;
    int64_t const p = (static_cast<int64_t>(oz) * outH + oy) * outW + ox;
    float cx[2], cy[2], cz[2];
    int32_t lo[3] = {INT32_MAX, INT32_MAX, INT32_MAX}, hi[3] = {INT32_MIN, INT32_MIN, INT32_MIN};
    if (valid)
    {
        G const* g = grid + n * 3 * outVolume + p;
#pragma unroll
        for (int i = 0; i < 2; ++i)
        {
            if (!pv[i])
            {
                cx[i] = cy[i] = cz[i] = 0.f;
                continue;
            }
            cx[i] = sourceIndex(toFloat(ldg(g + i * kStagedHalfTx)), inW, padding, alignCorners);
            cy[i] = sourceIndex(toFloat(ldg(g + i * kStagedHalfTx + outVolume)), inH, padding, alignCorners);
            cz[i] = sourceIndex(toFloat(ldg(g + i * kStagedHalfTx + 2 * outVolume)), inD, padding, alignCorners);
            int const x0 = static_cast<int>(floorf(cx[i])), y0 = static_cast<int>(floorf(cy[i])),
                      z0 = static_cast<int>(floorf(cz[i]));
            lo[0] = min(lo[0], min(max(x0, 0), inW - 1));
            hi[0] = max(hi[0], min(max(x0 + 1, 0), inW - 1));
            lo[1] = min(lo[1], min(max(y0, 0), inH - 1));
            hi[1] = max(hi[1], min(max(y0 + 1, 0), inH - 1));
            lo[2] = min(lo[2], min(max(z0, 0), inD - 1));
            hi[2] = max(hi[2], min(max(z0 + 1, 0), inD - 1));
        }
    }
    __syncthreads();
    if (valid)
    {
#pragma unroll
        for (int d = 0; d < 3; ++d)
        {
            atomicMin(&boxLow[d], lo[d]);
            atomicMax(&boxHigh[d], hi[d]);
        }
    }
    __syncthreads();
    int32_t const bx0 = boxLow[0] & ~1; // word aligned: inW and the volume are even
    int32_t const by0 = boxLow[1], bz0 = boxLow[2];
    int32_t const rowWords = (boxHigh[0] - bx0) / 2 + 1;
    int32_t const boxH = boxHigh[1] - by0 + 1;
    int32_t const boxD = boxHigh[2] - bz0 + 1;
    int32_t const boxWords = rowWords * boxH * boxD;
    bool const staged = boxWords <= kStagedBoxWords;

    int64_t const inVolume = static_cast<int64_t>(inD) * inH * inW;
    int32_t const c0 = blockIdx.y * kStagedChannelsPerBlock;
    int32_t const c1 = min(channels, c0 + kStagedChannelsPerBlock);
    __half* out = output + (n * channels + c0) * outVolume + p;
    if (!staged)
    {
        sampleGlobalPair(input + (n * channels + c0) * inVolume, out, c1 - c0, inVolume, outVolume, inD, inH, inW, cx,
            cy, cz, valid, valid1);
        return;
    }

    // Corner offsets in bytes within a pair buffer, in k = dx + 2 dy + 4 dz order; a clamped corner (weight 0)
    // reads a valid neighbour, a thread past the output's edge reads word 0 and writes nothing.
    int32_t const strideY = 2 * rowWords, strideZ = 2 * rowWords * boxH;
    uint32_t offset[2][8];
    float weight[2][8];
#pragma unroll
    for (int i = 0; i < 2; ++i)
    {
        float const x = pv[i] ? cx[i] : 0.f, y = pv[i] ? cy[i] : 0.f, z = pv[i] ? cz[i] : 0.f;
        float const fx = floorf(x), fy = floorf(y), fz = floorf(z);
        int const x0 = static_cast<int>(fx), y0 = static_cast<int>(fy), z0 = static_cast<int>(fz);
        float const tX = x - fx, tY = y - fy, tZ = z - fz;
        int const xc[2] = {min(max(x0, 0), inW - 1), min(max(x0 + 1, 0), inW - 1)};
        int const yc[2] = {min(max(y0, 0), inH - 1), min(max(y0 + 1, 0), inH - 1)};
        int const zc[2] = {min(max(z0, 0), inD - 1), min(max(z0 + 1, 0), inD - 1)};
#pragma unroll
        for (int k = 0; k < 8; ++k)
        {
            int const dx = k & 1, dy = (k >> 1) & 1, dz = k >> 2;
            int const xi = x0 + dx, yi = y0 + dy, zi = z0 + dz;
            bool const inside = xi >= 0 && xi < inW && yi >= 0 && yi < inH && zi >= 0 && zi < inD;
            float const w = (dx ? tX : 1.f - tX) * (dy ? tY : 1.f - tY) * (dz ? tZ : 1.f - tZ);
            weight[i][k] = (pv[i] && inside) ? w : 0.f;
            int32_t const e = (zc[dz] - bz0) * strideZ + (yc[dy] - by0) * strideY + (xc[dx] - bx0);
            offset[i][k] = pv[i] ? static_cast<uint32_t>(e) * 4u : 0u;
        }
    }

    // This thread's share of the box: word j of the box (row-major z, y, x) comes from the channel's word src[j]
    // (32-bit offsets; a share past the box reads word 0 and stores nothing). Two channels are staged at a
    // time, interleaved; the next pair's loads are in flight while the current pair is sampled.
    uint32_t const* in = reinterpret_cast<uint32_t const*>(input + (n * channels + c0) * inVolume);
    uint32_t const inStride = static_cast<uint32_t>(inVolume / 2);
    uint32_t src[kStagedLoadsPerThread];
    bool mine[kStagedLoadsPerThread];
#pragma unroll
    for (int j = 0; j < kStagedLoadsPerThread; ++j)
    {
        int32_t const w = t + j * kStagedThreads;
        int32_t const xw = w % rowWords;
        int32_t const r = w / rowWords;
        int32_t const yy = r % boxH;
        int32_t const zz = r / boxH;
        mine[j] = w < boxWords;
        src[j] = mine[j] ? static_cast<uint32_t>(((bz0 + zz) * inH + by0 + yy) * (inW / 2) + bx0 / 2 + xw) : 0u;
    }
    uint32_t next[2][kStagedLoadsPerThread];
    bool const second = c0 + 1 < c1;
#pragma unroll
    for (int j = 0; j < kStagedLoadsPerThread; ++j)
    {
        next[0][j] = __ldg(in + src[j]);
        next[1][j] = second ? __ldg(in + inStride + src[j]) : 0u;
    }
    int32_t stage = 0;
#pragma unroll 1
    for (int32_t c = c0; c < c1; c += 2, stage ^= 1)
    {
        uint2* pairBuf = reinterpret_cast<uint2*>(&box[stage][0]);
#pragma unroll
        for (int j = 0; j < kStagedLoadsPerThread; ++j)
        {
            if (mine[j])
            {
                uint32_t const a = next[0][j], b = next[1][j];
                pairBuf[t + j * kStagedThreads] = make_uint2(__byte_perm(a, b, 0x5410), __byte_perm(a, b, 0x7632));
            }
        }
        __syncthreads();
        in += 2 * static_cast<uint64_t>(inStride);
        if (c + 2 < c1)
        {
            bool const more = c + 3 < c1;
#pragma unroll
            for (int j = 0; j < kStagedLoadsPerThread; ++j)
            {
                next[0][j] = __ldg(in + src[j]);
                next[1][j] = more ? __ldg(in + inStride + src[j]) : 0u;
            }
        }
        char const* buf = reinterpret_cast<char const*>(&box[stage][0]);
        float2 acc[2];
#pragma unroll
        for (int i = 0; i < 2; ++i)
        {
            float2 v[8];
#pragma unroll
            for (int k = 0; k < 8; ++k)
            {
                v[k] = halfPair(*reinterpret_cast<uint32_t const*>(buf + offset[i][k]));
            }
            acc[i] = make_float2(0.f, 0.f);
#pragma unroll
            for (int k = 0; k < 8; ++k)
            {
                acc[i].x = fmaf(weight[i][k], v[k].x, acc[i].x);
                acc[i].y = fmaf(weight[i][k], v[k].y, acc[i].y);
            }
        }
        bool const pair = c + 1 < c1;
        if (valid)
        {
            out[0] = __float2half_rn(acc[0].x);
            if (pair)
            {
                out[outVolume] = __float2half_rn(acc[0].y);
            }
        }
        if (valid1)
        {
            out[kStagedHalfTx] = __float2half_rn(acc[1].x);
            if (pair)
            {
                out[outVolume + kStagedHalfTx] = __float2half_rn(acc[1].y);
            }
        }
        out += 2 * outVolume;
    }
}

template <typename G>
bool launchHalfStaged(void const* input, void const* grid, void* output, GridSampler3DShape const& s,
    GridSamplerInterpolation interpolation, GridSamplerPadding padding, bool alignCorners, cudaStream_t stream,
    cudaError_t& status)
{
    // inW even: the box's rows are whole 32-bit words and every channel starts word aligned.
    bool const fits = interpolation == GridSamplerInterpolation::kBILINEAR && s.inW % 2 == 0 && s.outW % 2 == 0
        && reinterpret_cast<uintptr_t>(input) % 4 == 0 && reinterpret_cast<uintptr_t>(output) % 4 == 0;
    if (!fits)
    {
        return false;
    }
    int64_t const tilesX = ceilDiv(s.outW, kStagedTile.x);
    int64_t const tilesY = ceilDiv(s.outH, kStagedTile.y);
    int64_t const tilesZ = ceilDiv(s.outD, kStagedTile.z);
    int64_t const tiles = s.n * tilesX * tilesY * tilesZ;
    int64_t const chunks = ceilDiv(s.c, kStagedChannelsPerBlock);
    if (tiles > INT32_MAX || chunks > 65535)
    {
        return false;
    }
    dim3 const blocks(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
    gridSampler3DHalfStagedKernel<G><<<blocks, kStagedThreads, 0, stream>>>(static_cast<__half const*>(input),
        static_cast<G const*>(grid), static_cast<__half*>(output), static_cast<int32_t>(s.c),
        static_cast<int32_t>(s.inD), static_cast<int32_t>(s.inH), static_cast<int32_t>(s.inW),
        static_cast<int32_t>(s.outD), static_cast<int32_t>(s.outH), static_cast<int32_t>(s.outW),
        static_cast<int32_t>(tilesX), static_cast<int32_t>(tilesY), static_cast<int32_t>(tilesZ), padding,
        alignCorners);
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
