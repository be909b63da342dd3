// BEVPoolV2: block b owns intervals [b*K, (b+1)*K) and every voxel from the first voxel of its intervals up
// to the first voxel of the next block's, so it writes its pooled voxels and the empty ones in that gap:
// each output cell is written exactly once, in one pass, with no memset and no search.
#include "../common/cudaUtils.cuh"
#include "bevPoolV2.h"

#include <algorithm>
#include <climits>

namespace fbocc
{
namespace
{

constexpr int kThreads = 256;
constexpr int kMinIntervalsPerBlock = 32;
constexpr int kMaxIntervalsPerBlock = 256; // = kThreads: one thread loads each interval's bounds
constexpr int kMapCells = 512; // voxels handled per pass through a block's range
constexpr int kNoInterval = INT_MAX;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packet
{
    T v[VEC];
};

// The voxel of the first non-empty interval at or after i (cells when none): a block boundary.
template <typename I>
__device__ int64_t boundaryCell(
    I const* ranksBev, I const* starts, I const* lengths, int64_t i, int64_t intervals, int64_t points, int64_t cells)
{
    for (; i < intervals; ++i)
    {
        int64_t const start = starts[i];
        if (lengths[i] > 0 && start >= 0 && start < points)
        {
            int64_t const cell = ranksBev[start];
            return cell < 0 ? 0 : (cell > cells ? cells : cell);
        }
    }
    return cells;
}

// Adds the depth-weighted feature packets of points [start, start + length) to acc.
template <typename T, typename I, int VEC>
__device__ __forceinline__ void accumulate(T const* __restrict__ depth, T const* __restrict__ feat,
    I const* __restrict__ ranksDepth, I const* __restrict__ ranksFeat, int64_t start, int64_t stop,
    int32_t channels, int32_t lane, float (&acc)[VEC])
{
    using Vec = Packet<T, VEC>;
    int64_t p = start;
    for (; p + 1 < stop; p += 2) // two points at a time: twice the loads in flight
    {
        int64_t const d0 = ranksDepth[p], d1 = ranksDepth[p + 1];
        int64_t const f0 = ranksFeat[p], f1 = ranksFeat[p + 1];
        float const w0 = toFloat(depth[d0]), w1 = toFloat(depth[d1]);
        Vec const a = reinterpret_cast<Vec const*>(feat + f0 * channels)[lane];
        Vec const b = reinterpret_cast<Vec const*>(feat + f1 * channels)[lane];
#pragma unroll
        for (int k = 0; k < VEC; ++k)
        {
            acc[k] = fmaf(w1, toFloat(b.v[k]), fmaf(w0, toFloat(a.v[k]), acc[k]));
        }
    }
    if (p < stop)
    {
        float const w0 = toFloat(depth[ranksDepth[p]]);
        Vec const a = reinterpret_cast<Vec const*>(feat + static_cast<int64_t>(ranksFeat[p]) * channels)[lane];
#pragma unroll
        for (int k = 0; k < VEC; ++k)
        {
            acc[k] = fmaf(w0, toFloat(a.v[k]), acc[k]);
        }
    }
}

template <typename T, typename I, int VEC>
__global__ void __launch_bounds__(kThreads) bevPoolV2Kernel(T const* __restrict__ depth, T const* __restrict__ feat,
    I const* __restrict__ ranksDepth, I const* __restrict__ ranksFeat, I const* __restrict__ ranksBev,
    I const* __restrict__ starts, I const* __restrict__ lengths, T* __restrict__ output, int32_t channels,
    int64_t cells, int64_t intervals, int64_t points, int32_t intervalsPerBlock)
{
    __shared__ int32_t firstInterval[kMapCells];
    __shared__ int64_t sStart[kMaxIntervalsPerBlock];
    __shared__ int32_t sLength[kMaxIntervalsPerBlock];
    __shared__ int64_t sCell[kMaxIntervalsPerBlock]; // -1 for empty or invalid intervals
    __shared__ int64_t range[2];
    int64_t const i0 = static_cast<int64_t>(blockIdx.x) * intervalsPerBlock;
    int64_t const i1 = min(i0 + intervalsPerBlock, intervals);
    if (threadIdx.x < intervalsPerBlock)
    {
        int32_t const k = threadIdx.x;
        int64_t const i = i0 + k;
        int64_t start = 0, length = 0, cell = -1;
        if (i < i1)
        {
            start = starts[i];
            length = lengths[i];
            if (length > 0 && start >= 0 && start < points)
            {
                cell = ranksBev[start];
                length = min(length, points - start);
            }
        }
        sStart[k] = start;
        sLength[k] = cell < 0 ? 0 : static_cast<int32_t>(length);
        sCell[k] = cell;
    }
    // The block's voxel range: from its first interval's voxel to the next block's (two warps, in parallel).
    if (threadIdx.x == kThreads - 64)
    {
        range[0] = blockIdx.x == 0 ? 0 : boundaryCell(ranksBev, starts, lengths, i0, intervals, points, cells);
    }
    else if (threadIdx.x == kThreads - 32)
    {
        range[1] = boundaryCell(ranksBev, starts, lengths, i1, intervals, points, cells);
    }
    __syncthreads();
    int64_t const cellBegin = range[0];
    int64_t const cellEnd = range[1];
    int32_t const vecsPerCell = channels / VEC;
    int32_t const blockIntervals = static_cast<int32_t>(i1 - i0);
    using Vec = Packet<T, VEC>;

    for (int64_t chunk = cellBegin; chunk < cellEnd; chunk += kMapCells)
    {
        int64_t const chunkCells = min(static_cast<int64_t>(kMapCells), cellEnd - chunk);
        for (int t = threadIdx.x; t < kMapCells; t += kThreads)
        {
            firstInterval[t] = kNoInterval;
        }
        __syncthreads();
        for (int32_t k = threadIdx.x; k < blockIntervals; k += kThreads)
        {
            int64_t const local = sCell[k] - chunk;
            if (sCell[k] >= 0 && local >= 0 && local < chunkCells)
            {
                atomicMin(&firstInterval[local], k);
            }
        }
        __syncthreads();
        int32_t const tasks = static_cast<int32_t>(chunkCells) * vecsPerCell; // < kMapCells * channels
        for (int32_t task = threadIdx.x; task < tasks; task += kThreads)
        {
            int32_t const local = task / vecsPerCell; // 32-bit: the kernel is instruction-bound
            int32_t const lane = task - local * vecsPerCell;
            int64_t const cell = chunk + local;
            float acc[VEC];
#pragma unroll
            for (int k = 0; k < VEC; ++k)
            {
                acc[k] = 0.f;
            }
            int32_t const first = firstInterval[local];
            if (first != kNoInterval)
            {
                // Later blocks start at a different voxel, so this voxel's intervals end inside this block.
                for (int32_t k = first; k < blockIntervals && (sCell[k] == cell || sLength[k] == 0); ++k)
                {
                    accumulate<T, I, VEC>(depth, feat, ranksDepth, ranksFeat, sStart[k], sStart[k] + sLength[k],
                        channels, lane, acc);
                }
                if (cell == cellBegin && blockIdx.x > 0)
                {
                    // Intervals of this voxel may also start in the previous block, which does not own it.
                    for (int64_t i = i0 - 1; i >= 0; --i)
                    {
                        int64_t const start = starts[i];
                        int64_t const length = lengths[i];
                        if (length <= 0)
                        {
                            continue;
                        }
                        if (start < 0 || start >= points || static_cast<int64_t>(ranksBev[start]) != cell)
                        {
                            break;
                        }
                        accumulate<T, I, VEC>(depth, feat, ranksDepth, ranksFeat, start,
                            min(start + length, points), channels, lane, acc);
                    }
                }
            }
            Vec o;
#pragma unroll
            for (int k = 0; k < VEC; ++k)
            {
                o.v[k] = fromFloat<T>(acc[k]);
            }
            reinterpret_cast<Vec*>(output + cell * channels)[lane] = o;
        }
        __syncthreads();
    }
}

bool aligned(void const* p, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <typename T, typename I>
cudaError_t launchTyped(void const* depth, void const* feat, void const* rd, void const* rf, void const* rb,
    void const* starts, void const* lengths, void* output, BevPoolV2Shape const& s, cudaStream_t stream)
{
    int32_t const channels = static_cast<int32_t>(s.channels);
    auto const args = [&](auto kernel) {
        // One wave of blocks: each block's latency chain is long, so fewer, fuller blocks finish sooner.
        int device = 0, sms = 1, perSm = 1;
        cudaGetDevice(&device);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, kernel, kThreads, 0);
        int64_t const slots = static_cast<int64_t>(std::max(sms, 1)) * std::max(perSm, 1);
        int64_t const perBlock
            = std::min<int64_t>(kMaxIntervalsPerBlock, std::max<int64_t>(kMinIntervalsPerBlock, ceilDiv(s.intervals, slots)));
        unsigned const blocks = static_cast<unsigned>(s.intervals > 0 ? ceilDiv(s.intervals, perBlock) : 1);
        kernel<<<blocks, kThreads, 0, stream>>>(static_cast<T const*>(depth), static_cast<T const*>(feat),
            static_cast<I const*>(rd), static_cast<I const*>(rf), static_cast<I const*>(rb),
            static_cast<I const*>(starts), static_cast<I const*>(lengths), static_cast<T*>(output), channels,
            s.cells, s.intervals, s.points, static_cast<int32_t>(perBlock));
    };
    // 16-byte packets when the channel count allows (feature rows are then 16-byte aligned too).
    constexpr int kWide = 16 / sizeof(T);
    bool const wide = aligned(feat, 16) && aligned(output, 16);
    bool const pair = aligned(feat, 2 * sizeof(T)) && aligned(output, 2 * sizeof(T));
    if (channels % kWide == 0 && wide)
    {
        args(bevPoolV2Kernel<T, I, kWide>);
    }
    else if (channels % 2 == 0 && pair)
    {
        args(bevPoolV2Kernel<T, I, 2>);
    }
    else
    {
        args(bevPoolV2Kernel<T, I, 1>);
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t launchIndex(void const* depth, void const* feat, void const* rd, void const* rf, void const* rb,
    void const* starts, void const* lengths, IndexType indexType, void* output, BevPoolV2Shape const& s,
    cudaStream_t stream)
{
    if (indexType == IndexType::kINT32)
    {
        return launchTyped<T, int32_t>(depth, feat, rd, rf, rb, starts, lengths, output, s, stream);
    }
    return launchTyped<T, int64_t>(depth, feat, rd, rf, rb, starts, lengths, output, s, stream);
}

} // namespace

cudaError_t bevPoolV2Forward(void const* depth, void const* feat, DType dtype, void const* ranksDepth,
    void const* ranksFeat, void const* ranksBev, void const* intervalStarts, void const* intervalLengths,
    IndexType indexType, void* output, BevPoolV2Shape const& shape, cudaStream_t stream)
{
    if (shape.cells == 0 || shape.channels == 0)
    {
        return cudaSuccess;
    }
    if (shape.channels > INT32_MAX / kMapCells || shape.intervals < 0 || shape.points < 0)
    {
        return cudaErrorInvalidValue;
    }
    if (dtype == DType::kFLOAT32)
    {
        return launchIndex<float>(depth, feat, ranksDepth, ranksFeat, ranksBev, intervalStarts, intervalLengths,
            indexType, output, shape, stream);
    }
    return launchIndex<__half>(depth, feat, ranksDepth, ranksFeat, ranksBev, intervalStarts, intervalLengths,
        indexType, output, shape, stream);
}

} // namespace fbocc
