// BEVPoolV2: block b owns intervals [b*K, (b+1)*K) and every voxel from the first voxel of its intervals up
// to the first voxel of the next block's, so it writes its pooled voxels and the empty ones in that gap:
// each output cell is written exactly once, in one pass, with no memset and no search.
#include "../common/cudaUtils.cuh"
#include "bevPoolV2.h"

#include <climits>

namespace fbocc
{
namespace
{

constexpr int kThreads = 256;
constexpr int kIntervalsPerBlock = 64;
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

template <typename T, typename I, int VEC>
__global__ void __launch_bounds__(kThreads) bevPoolV2Kernel(T const* __restrict__ depth, T const* __restrict__ feat,
    I const* __restrict__ ranksDepth, I const* __restrict__ ranksFeat, I const* __restrict__ ranksBev,
    I const* __restrict__ starts, I const* __restrict__ lengths, T* __restrict__ output, int32_t channels,
    int64_t cells, int64_t intervals, int64_t points)
{
    __shared__ int32_t firstInterval[kMapCells];
    __shared__ int64_t range[2];
    int64_t const i0 = static_cast<int64_t>(blockIdx.x) * kIntervalsPerBlock;
    int64_t const i1 = min(i0 + kIntervalsPerBlock, intervals);
    if (threadIdx.x == 0)
    {
        range[0] = blockIdx.x == 0 ? 0 : boundaryCell(ranksBev, starts, lengths, i0, intervals, points, cells);
    }
    else if (threadIdx.x == 32)
    {
        range[1] = boundaryCell(ranksBev, starts, lengths, i1, intervals, points, cells);
    }
    __syncthreads();
    int64_t const cellBegin = range[0];
    int64_t const cellEnd = range[1];
    int32_t const vecsPerCell = channels / VEC;
    using Vec = Packet<T, VEC>;

    for (int64_t chunk = cellBegin; chunk < cellEnd; chunk += kMapCells)
    {
        int64_t const chunkCells = min(static_cast<int64_t>(kMapCells), cellEnd - chunk);
        for (int t = threadIdx.x; t < kMapCells; t += kThreads)
        {
            firstInterval[t] = kNoInterval;
        }
        __syncthreads();
        for (int64_t i = i0 + threadIdx.x; i < i1; i += kThreads)
        {
            int64_t const start = starts[i];
            if (lengths[i] > 0 && start >= 0 && start < points)
            {
                int64_t const local = static_cast<int64_t>(ranksBev[start]) - chunk;
                if (local >= 0 && local < chunkCells)
                {
                    atomicMin(&firstInterval[local], static_cast<int32_t>(i - i0));
                }
            }
        }
        __syncthreads();
        for (int64_t task = threadIdx.x; task < chunkCells * vecsPerCell; task += kThreads)
        {
            int64_t const local = task / vecsPerCell;
            int32_t const lane = static_cast<int32_t>(task - local * vecsPerCell);
            int64_t const cell = chunk + local;
            float acc[VEC];
#pragma unroll
            for (int k = 0; k < VEC; ++k)
            {
                acc[k] = 0.f;
            }
            if (firstInterval[local] != kNoInterval)
            {
                int64_t first = i0 + firstInterval[local];
                if (cell == cellBegin)
                {
                    // Intervals of this voxel may start in the previous block (which does not own it).
                    while (first > 0 && (lengths[first - 1] <= 0 || static_cast<int64_t>(ranksBev[starts[first - 1]]) == cell))
                    {
                        --first;
                    }
                }
                for (int64_t i = first; i < intervals; ++i)
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
                    int64_t const stop = min(start + length, points);
                    for (int64_t p = start; p < stop; ++p)
                    {
                        float const d = toFloat(depth[ranksDepth[p]]);
                        Vec const f = reinterpret_cast<Vec const*>(feat + static_cast<int64_t>(ranksFeat[p]) * channels)[lane];
#pragma unroll
                        for (int k = 0; k < VEC; ++k)
                        {
                            acc[k] = fmaf(d, toFloat(f.v[k]), acc[k]);
                        }
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

template <typename T, typename I>
cudaError_t launchTyped(void const* depth, void const* feat, void const* rd, void const* rf, void const* rb,
    void const* starts, void const* lengths, void* output, BevPoolV2Shape const& s, cudaStream_t stream)
{
    unsigned const blocks = static_cast<unsigned>(s.intervals > 0 ? ceilDiv(s.intervals, kIntervalsPerBlock) : 1);
    int32_t const channels = static_cast<int32_t>(s.channels);
    auto const args = [&](auto kernel) {
        kernel<<<blocks, kThreads, 0, stream>>>(static_cast<T const*>(depth), static_cast<T const*>(feat),
            static_cast<I const*>(rd), static_cast<I const*>(rf), static_cast<I const*>(rb),
            static_cast<I const*>(starts), static_cast<I const*>(lengths), static_cast<T*>(output), channels,
            s.cells, s.intervals, s.points);
    };
    // 16-byte packets when the channel count allows (feature rows are then 16-byte aligned too).
    constexpr int kWide = 16 / sizeof(T);
    if (channels % kWide == 0)
    {
        args(bevPoolV2Kernel<T, I, kWide>);
    }
    else if (channels % 2 == 0)
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
    if (shape.channels > INT32_MAX || shape.intervals < 0 || shape.points < 0)
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
