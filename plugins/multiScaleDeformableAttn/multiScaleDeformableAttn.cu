// MultiScaleDeformableAttn: the lanes of one (n, query, head) each own a packet of up to 16 bytes of the
// head's channels; sampling corners and weights are computed in fp32, values accumulate in fp32 registers.
// fp16 with FB-OCC's head width (10 channels) and small levels (image cross-attention) takes the staged kernel
// instead: a block copies its heads' whole value into shared memory and a thread owns a task's 10 channels.
#include "../common/cudaUtils.cuh"
#include "multiScaleDeformableAttn.h"

#include <algorithm>
#include <climits>
#include <type_traits>

namespace fbocc
{
namespace
{

// Gather kernel blocks: 512 threads for packets of up to 8 bytes (FB-OCC's 10-channel heads), 256 for wider ones.
// Two-element packets, 32-bit indices and a compile-time point count (FB-OCC's case) also cap registers at 40 so
// that 3 blocks stay resident per SM; there that spills nothing (other variants would), and with two points' loads
// in flight it measured best on H100 at both FB-OCC sites. At the BEV site the kernel is latency-bound on L1
// (about one L1 wavefront per task and corner): it misses the 2x-TensorRT bar there, close to the data-movement
// floor of benchmarks/msda_floors.cu. Timings, profiles and the variants measured and left out (lane widths, block
// sizes, task orders, prefetching, a shared-memory window): docs/tuning/multiScaleDeformableAttn.md.
template <typename T, int VEC>
__host__ __device__ constexpr int gatherThreads()
{
    return sizeof(T) * VEC <= 8 ? 512 : 256;
}
template <typename Idx, int VEC, int POINTS>
__host__ __device__ constexpr int gatherMinBlocks()
{
    return sizeof(Idx) == 4 && VEC <= 2 && POINTS > 0 ? 3 : 1;
}
constexpr int kGatherBatch = 2; // points whose corner loads a thread issues before using any
constexpr int kStagedThreads = 256;

struct Corners
{
    int32_t row[4];  // value row of each corner (clamped into the level where the corner is outside)
    float weight[4]; // bilinear weight x attention weight; 0 where the corner is outside
};

// mmcv's bilinear sampling of a level at normalized (x, y): pixel = loc * size - 0.5, zeros outside.
// Branch-free: an outside corner gets weight 0 and a valid row, so the loads of several points overlap. The
// pixel position is clamped to [-2, size + 1] first (NaN becomes -2: outside, as mmcv skips it), which keeps
// the integer conversion defined; validity is two unsigned compares per axis.
__device__ __forceinline__ void corners(float x, float y, float attention, int32_t h, int32_t w, int32_t levelStart,
    Corners& c)
{
    float const hIm = fminf(fmaxf(y * static_cast<float>(h) - 0.5f, -2.f), static_cast<float>(h) + 1.f);
    float const wIm = fminf(fmaxf(x * static_cast<float>(w) - 0.5f, -2.f), static_cast<float>(w) + 1.f);
    float const fh = floorf(hIm), fw = floorf(wIm);
    int32_t const y0 = static_cast<int32_t>(fh), x0 = static_cast<int32_t>(fw);
    float const lh = hIm - fh, lw = wIm - fw;
    bool const y0In = static_cast<uint32_t>(y0) < static_cast<uint32_t>(h);
    bool const y1In = static_cast<uint32_t>(y0 + 1) < static_cast<uint32_t>(h);
    bool const x0In = static_cast<uint32_t>(x0) < static_cast<uint32_t>(w);
    bool const x1In = static_cast<uint32_t>(x0 + 1) < static_cast<uint32_t>(w);
    float const wy0 = y0In ? (1.f - lh) * attention : 0.f, wy1 = y1In ? lh * attention : 0.f;
    float const wx0 = x0In ? 1.f - lw : 0.f, wx1 = x1In ? lw : 0.f;
    int32_t const ya = min(max(y0, 0), h - 1), yb = min(max(y0 + 1, 0), h - 1);
    int32_t const xa = min(max(x0, 0), w - 1), xb = min(max(x0 + 1, 0), w - 1);
    int32_t const r0 = levelStart + ya * w, r1 = levelStart + yb * w;
    c.row[0] = r0 + xa;
    c.row[1] = r0 + xb;
    c.row[2] = r1 + xa;
    c.row[3] = r1 + xb;
    c.weight[0] = wy0 * wx0;
    c.weight[1] = wy0 * wx1;
    c.weight[2] = wy1 * wx0;
    c.weight[3] = wy1 * wx1;
}

template <typename V>
__device__ __forceinline__ V loadPacket(V const* p)
{
    V out;
    loadBytes<sizeof(V)>(p, &out);
    return out;
}

// Calls sample(corners[B]) for each (level, group of B points) of one task, in order. FB-OCC's point counts
// (POINTS > 0) are compile-time: a level's locations and weights come in with vector loads (the launch checks
// alignment) and BATCH points at a time are handed over, so that the caller can issue all their loads before
// using any. A run-time count samples one point at a time.
template <int POINTS, int BATCH, typename C, typename I, typename Sample>
__device__ __forceinline__ void forEachSample(I const* spatialShapes, I const* levelStart, C const* loc,
    C const* wgt, int32_t levels, int32_t runtimePoints, Sample&& sample)
{
    int32_t const points = POINTS > 0 ? POINTS : runtimePoints;
    for (int32_t l = 0; l < levels; ++l)
    {
        int32_t const h = static_cast<int32_t>(spatialShapes[2 * l]);
        int32_t const w = static_cast<int32_t>(spatialShapes[2 * l + 1]);
        int32_t const start = static_cast<int32_t>(levelStart[l]);
        if constexpr (POINTS > 0)
        {
            static_assert(POINTS % BATCH == 0, "whole batches");
            C xy[2 * POINTS];
            C attention[POINTS];
            loadVector(loc, xy);
            loadVector(wgt, attention);
#pragma unroll
            for (int p0 = 0; p0 < POINTS; p0 += BATCH)
            {
                Corners c[BATCH];
#pragma unroll
                for (int b = 0; b < BATCH; ++b)
                {
                    corners(toFloat(xy[2 * (p0 + b)]), toFloat(xy[2 * (p0 + b) + 1]), toFloat(attention[p0 + b]), h, w,
                        start, c[b]);
                }
                sample(c);
            }
        }
        else
        {
            for (int32_t p = 0; p < points; ++p)
            {
                Corners c[1];
                float2 const xy = loadPair(loc + 2 * p);
                corners(xy.x, xy.y, toFloat(ldg(wgt + p)), h, w, start, c[0]);
                sample(c);
            }
        }
        loc += 2 * points;
        wgt += points;
    }
}

// n / d for the kernel's index math. 32-bit: (umulhi(n, mul) + n) >> shift with mul and shift from the host
// (Granlund-Montgomery; exact for n < 2^31, which the launch guarantees); 64-bit: plain division.
template <typename Idx>
struct Divider;
template <>
struct Divider<uint32_t>
{
    uint32_t mul, shift;
    explicit Divider(int64_t d)
        : mul(0)
        , shift(0)
    {
        uint64_t const divisor = static_cast<uint64_t>(d);
        while ((uint64_t{1} << shift) < divisor)
        {
            ++shift;
        }
        mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
    }
    __device__ __forceinline__ uint32_t operator()(uint32_t n) const
    {
        return (__umulhi(n, mul) + n) >> shift;
    }
};
template <>
struct Divider<int64_t>
{
    int64_t d;
    explicit Divider(int64_t divisor)
        : d(divisor)
    {
    }
    __device__ __forceinline__ int64_t operator()(int64_t n) const
    {
        return n / d;
    }
};

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packet
{
    T v[VEC];
};

// One thread per (n, query, head, group of VEC channels): the D / VEC lanes of a head read one value row
// together (coalesced), each lane computing the same sampling corners (cheap, and loads broadcast).
// Idx is uint32_t whenever every element offset fits (32-bit index math is much cheaper).
template <typename T, typename C, typename I, typename Idx, int VEC, int POINTS>
__global__ void __launch_bounds__(gatherThreads<T, VEC>(), gatherMinBlocks<Idx, VEC, POINTS>()) msdaKernel(
    T const* __restrict__ value, I const* __restrict__ spatialShapes, I const* __restrict__ levelStart,
    C const* __restrict__ locations, C const* __restrict__ weights, T* __restrict__ output, Idx threads,
    int32_t lanes, int32_t spatial, int32_t heads, int32_t levels, int32_t queries, int32_t runtimePoints,
    Divider<Idx> byLanes, Divider<Idx> byHeads, Divider<Idx> byBatch)
{
    int32_t const points = POINTS > 0 ? POINTS : runtimePoints;
    Idx const t = static_cast<Idx>(blockIdx.x) * gatherThreads<T, VEC>() + threadIdx.x;
    if (t >= threads)
    {
        return;
    }
    Idx const task = byLanes(t); // (n, q, m)
    int32_t const lane = static_cast<int32_t>(t - task * lanes);
    Idx const channels = static_cast<Idx>(lanes) * VEC;
    Idx const m = task - byHeads(task) * heads;
    Idx const n = byBatch(task); // task / (heads * queries)
    T const* v = value + (n * spatial * heads + m) * channels + lane * VEC;
    uint32_t const rowStride = static_cast<uint32_t>(heads * channels); // a batch's value fits 32-bit offsets
    C const* loc = locations + task * levels * points * 2;
    C const* wgt = weights + task * levels * points;
    using Vec = Packet<T, VEC>;
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k)
    {
        acc[k] = 0.f;
    }
    forEachSample<POINTS, POINTS % kGatherBatch == 0 ? kGatherBatch : 1>(spatialShapes, levelStart, loc, wgt, levels,
        runtimePoints, [&](auto const& c) {
            constexpr int kB = sizeof(c) / sizeof(c[0]);
            Vec x[kB][4];
#pragma unroll
            for (int b = 0; b < kB; ++b)
            {
#pragma unroll
                for (int k = 0; k < 4; ++k)
                {
                    x[b][k] = loadPacket(reinterpret_cast<Vec const*>(v + static_cast<uint32_t>(c[b].row[k]) * rowStride));
                }
            }
#pragma unroll
            for (int b = 0; b < kB; ++b)
            {
#pragma unroll
                for (int k = 0; k < 4; ++k)
                {
#pragma unroll
                    for (int j = 0; j < VEC; ++j)
                    {
                        acc[j] = fmaf(c[b].weight[k], toFloat(x[b][k].v[j]), acc[j]);
                    }
                }
            }
        });
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

// FB-OCC's point counts get kernels with the count compiled in, which read a task's locations and weights with
// 16-byte loads: they need 16-byte aligned tensors (TensorRT's are); others take the run-time count kernel (0).
int compileTimePoints(void const* locations, void const* weights, int64_t points)
{
    bool const vectorOk = aligned(locations, 16) && aligned(weights, 16);
    return vectorOk && (points == 4 || points == 8) ? static_cast<int>(points) : 0;
}

// ---- staged fp16 kernel -------------------------------------------------------------------------------------
// The kernel above spends an L1 lookup on every corner read of a 20-byte fp16 head row (its own cache line).
// Where hpb heads' whole value rows fit in shared memory (image cross-attention: 704 rows x 2 heads x 20 bytes =
// 28 KB), a block (n, head group, chunk of tasks) copies them there with cp.async and reads corners from shared
// memory; a thread owns one task's kStagedChannels channels (no lane redundancy in the corner math). Same
// corners, weights and summation order as msdaKernel, so the results are bit-identical. Faster than msdaKernel at
// FB-OCC's cross-attention site in fp16. It stays within the default 48 KiB of shared memory: more needs an opt-in
// attribute call, which we keep out of enqueue. fp32 (bank conflicts of random 40-byte rows) and the BEV level
// (10000 rows do not fit) stay on msdaKernel. Timings and the variants left out:
// docs/tuning/multiScaleDeformableAttn.md.
constexpr int kStagedChannels = 10;
constexpr int kStagedBytes = 48 * 1024;  // without cudaFuncSetAttribute
constexpr int kStagedBlocksPerSm = 4;

__device__ __forceinline__ void cpAsync4(void* smem, void const* gmem)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned const d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(gmem));
#else
    *static_cast<uint32_t*>(smem) = *static_cast<uint32_t const*>(gmem);
#endif
}

__device__ __forceinline__ void cpAsyncWaitAll()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
#endif
}

template <typename C, typename I, int POINTS>
__global__ void __launch_bounds__(kStagedThreads) msdaStagedHalfKernel(__half const* __restrict__ value,
    I const* __restrict__ spatialShapes, I const* __restrict__ levelStart, C const* __restrict__ locations,
    C const* __restrict__ weights, __half* __restrict__ output, int32_t spatial, int32_t heads, int32_t levels,
    int32_t queries, int32_t runtimePoints, int32_t hpb, int32_t chunkTasks, int32_t chunks)
{
    constexpr int kPairs = kStagedChannels / 2;
    extern __shared__ __align__(16) unsigned char stagedRaw[];
    int32_t const points = POINTS > 0 ? POINTS : runtimePoints;
    int32_t const lp = levels * points;
    int32_t bid = blockIdx.x;
    int32_t const groups = heads / hpb;
    int32_t const m0 = (bid % groups) * hpb;
    bid /= groups;
    int32_t const chunk = bid % chunks;
    int64_t const n = bid / chunks;

    // Rows of the group's heads (hpb * 10 halves = hpb * 5 words each) into shared memory, all copies in flight.
    int32_t const rowWords = hpb * kPairs;
    int32_t const words = spatial * rowWords;
    uint32_t const* src = reinterpret_cast<uint32_t const*>(value + (n * spatial * heads + m0) * kStagedChannels);
    int32_t const srcStride = heads * kPairs;
    uint32_t* staged = reinterpret_cast<uint32_t*>(stagedRaw);
    for (int32_t e = threadIdx.x; e < words; e += blockDim.x)
    {
        int32_t const r = e / rowWords;
        cpAsync4(staged + e, src + static_cast<int64_t>(r) * srcStride + (e - r * rowWords));
    }
    cpAsyncWaitAll();
    __syncthreads();

    int64_t const groupTasks = static_cast<int64_t>(queries) * hpb;
    int64_t const end = min(groupTasks, static_cast<int64_t>(chunk + 1) * chunkTasks);
    __half2 const* rows = reinterpret_cast<__half2 const*>(stagedRaw);
    for (int64_t ti = static_cast<int64_t>(chunk) * chunkTasks + threadIdx.x; ti < end; ti += blockDim.x)
    {
        int64_t const q = ti / hpb;
        int32_t const mi = static_cast<int32_t>(ti - q * hpb);
        int64_t const task = (n * queries + q) * heads + m0 + mi;
        __half2 const* head = rows + mi * kPairs;
        C const* loc = locations + task * lp * 2;
        C const* wgt = weights + task * lp;
        float acc[kStagedChannels];
#pragma unroll
        for (int k = 0; k < kStagedChannels; ++k)
        {
            acc[k] = 0.f;
        }
        forEachSample<POINTS, 1>(spatialShapes, levelStart, loc, wgt, levels, runtimePoints,
            [&](Corners const (&c)[1]) {
                __half2 x[4][kPairs];
#pragma unroll
                for (int k = 0; k < 4; ++k)
                {
#pragma unroll
                    for (int j = 0; j < kPairs; ++j)
                    {
                        x[k][j] = head[c[0].row[k] * rowWords + j];
                    }
                }
#pragma unroll
                for (int k = 0; k < 4; ++k)
                {
#pragma unroll
                    for (int j = 0; j < kPairs; ++j)
                    {
                        float2 const v = __half22float2(x[k][j]);
                        acc[2 * j] = fmaf(c[0].weight[k], v.x, acc[2 * j]);
                        acc[2 * j + 1] = fmaf(c[0].weight[k], v.y, acc[2 * j + 1]);
                    }
                }
            });
        __half2* out = reinterpret_cast<__half2*>(output + task * kStagedChannels);
#pragma unroll
        for (int j = 0; j < kPairs; ++j)
        {
            out[j] = __floats2half2_rn(acc[2 * j], acc[2 * j + 1]);
        }
    }
}

// Launches the staged kernel when it applies (fp16 values, 10 channels a head, a head group's rows fit);
// returns false to leave the launch to msdaKernel.
template <typename C, typename I>
bool launchStagedHalf(void const* value, void const* shapes, void const* starts, void const* locations,
    void const* weights, void* output, MultiScaleDeformableAttnShape const& s, cudaStream_t stream, cudaError_t& status)
{
    int64_t const headBytes = s.spatial * kStagedChannels * static_cast<int64_t>(sizeof(__half));
    if (s.channels != kStagedChannels || !aligned(value, 4) || !aligned(output, 4) || headBytes > kStagedBytes)
    {
        return false;
    }
    int32_t hpb = 1;
    for (int64_t g = s.heads; g >= 1; --g)
    {
        if (s.heads % g == 0 && g * headBytes <= kStagedBytes)
        {
            hpb = static_cast<int32_t>(g);
            break;
        }
    }
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    {
        return false;
    }
    // About kStagedBlocksPerSm blocks per SM in all: each block copies its heads once, then works a chunk.
    int64_t const groups = s.batch * (s.heads / hpb);
    int64_t const groupTasks = s.queries * hpb;
    int64_t const perGroup = std::max<int64_t>(1, static_cast<int64_t>(sms) * kStagedBlocksPerSm / groups);
    int64_t const chunkTasks = std::max<int64_t>(1, ceilDiv(groupTasks, perGroup));
    int64_t const chunks = ceilDiv(groupTasks, chunkTasks);
    int64_t const blocks = groups * chunks;
    if (blocks > INT32_MAX || chunkTasks > INT32_MAX)
    {
        return false;
    }
    size_t const smem = static_cast<size_t>(hpb * headBytes);
    auto const run = [&](auto kernel) {
        kernel<<<static_cast<unsigned>(blocks), kStagedThreads, smem, stream>>>(static_cast<__half const*>(value),
            static_cast<I const*>(shapes), static_cast<I const*>(starts), static_cast<C const*>(locations),
            static_cast<C const*>(weights), static_cast<__half*>(output), static_cast<int32_t>(s.spatial),
            static_cast<int32_t>(s.heads), static_cast<int32_t>(s.levels), static_cast<int32_t>(s.queries),
            static_cast<int32_t>(s.points), hpb, static_cast<int32_t>(chunkTasks), static_cast<int32_t>(chunks));
    };
    switch (compileTimePoints(locations, weights, s.points))
    {
    case 4: run(msdaStagedHalfKernel<C, I, 4>); break;
    case 8: run(msdaStagedHalfKernel<C, I, 8>); break;
    default: run(msdaStagedHalfKernel<C, I, 0>); break;
    }
    status = cudaGetLastError();
    return true;
}

template <typename T, typename C, typename I>
cudaError_t launchTyped(void const* value, void const* shapes, void const* starts, void const* locations,
    void const* weights, void* output, MultiScaleDeformableAttnShape const& s, cudaStream_t stream)
{
    if (!aligned(locations, 2 * sizeof(C)))
    {
        return cudaErrorMisalignedAddress; // (x, y) pairs are read as one 2-element load
    }
    if constexpr (std::is_same<T, __half>::value)
    {
        cudaError_t status = cudaSuccess;
        if (launchStagedHalf<C, I>(value, shapes, starts, locations, weights, output, s, stream, status))
        {
            return status;
        }
    }
    // Widest packet (at most 16 bytes) that divides the head width and suits both buffers' alignment.
    int vec = 16 / static_cast<int>(sizeof(T));
    while (vec > 1 && (s.channels % vec != 0 || !aligned(value, vec * sizeof(T)) || !aligned(output, vec * sizeof(T))))
    {
        vec /= 2;
    }
    int32_t const lanes = static_cast<int32_t>(s.channels / vec);
    int64_t const threads = s.batch * s.queries * s.heads * lanes;
    int64_t const largest = std::max({threads * vec, s.batch * s.spatial * s.heads * s.channels,
        s.batch * s.queries * s.heads * s.levels * s.points * 2});
    auto const run = [&](auto kernel, auto idx, int block) {
        using Idx = decltype(idx);
        kernel<<<static_cast<unsigned>(ceilDiv(threads, block)), block, 0, stream>>>(
            static_cast<T const*>(value), static_cast<I const*>(shapes), static_cast<I const*>(starts),
            static_cast<C const*>(locations), static_cast<C const*>(weights), static_cast<T*>(output),
            static_cast<Idx>(threads), lanes, static_cast<int32_t>(s.spatial), static_cast<int32_t>(s.heads),
            static_cast<int32_t>(s.levels), static_cast<int32_t>(s.queries), static_cast<int32_t>(s.points),
            Divider<Idx>(lanes), Divider<Idx>(s.heads), Divider<Idx>(s.heads * s.queries));
    };
    auto const byVec = [&](auto idx, auto points) {
        using Idx = decltype(idx);
        constexpr int P = decltype(points)::value;
        switch (vec)
        {
        case 8:
        {
            constexpr int V = sizeof(T) == 2 ? 8 : 4;
            run(msdaKernel<T, C, I, Idx, V, P>, idx, gatherThreads<T, V>());
            break;
        }
        case 4: run(msdaKernel<T, C, I, Idx, 4, P>, idx, gatherThreads<T, 4>()); break;
        case 2: run(msdaKernel<T, C, I, Idx, 2, P>, idx, gatherThreads<T, 2>()); break;
        default: run(msdaKernel<T, C, I, Idx, 1, P>, idx, gatherThreads<T, 1>()); break;
        }
    };
    auto const byIndex = [&](auto idx) {
        switch (compileTimePoints(locations, weights, s.points))
        {
        case 4: byVec(idx, std::integral_constant<int, 4>{}); break;
        case 8: byVec(idx, std::integral_constant<int, 8>{}); break;
        default: byVec(idx, std::integral_constant<int, 0>{}); break;
        }
    };
    if (largest < INT32_MAX)
    {
        byIndex(uint32_t{0}); // every index below 2^31: Divider<uint32_t> is exact
    }
    else
    {
        byIndex(int64_t{0});
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
    if (shape.spatial * shape.heads * shape.channels > INT32_MAX || shape.levels > INT32_MAX)
    {
        return cudaErrorInvalidValue; // one value row offset must fit the int32 corner offsets
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
