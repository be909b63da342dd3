// Device helpers shared by the kernels (included from .cu files only).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace fbocc
{

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

// Read-only loads through the non-coherent cache: inputs never alias outputs in these kernels.
template <typename T>
__device__ __forceinline__ T ldg(T const* p)
{
    return __ldg(p);
}
template <>
__device__ __forceinline__ __half ldg<__half>(__half const* p)
{
    unsigned short const raw = __ldg(reinterpret_cast<unsigned short const*>(p));
    return __ushort_as_half(raw);
}

// Two consecutive elements (8- or 4-byte aligned) through the read-only cache, as fp32.
__device__ __forceinline__ float2 loadPair(float const* p)
{
    return __ldg(reinterpret_cast<float2 const*>(p));
}
__device__ __forceinline__ float2 loadPair(__half const* p)
{
    unsigned const raw = __ldg(reinterpret_cast<unsigned const*>(p));
    return __half22float2(*reinterpret_cast<__half2 const*>(&raw));
}

// BYTES (2, 4, 8 or 16, aligned to that) from global memory through the read-only cache, as one load.
template <int BYTES>
__device__ __forceinline__ void loadBytes(void const* p, void* out)
{
    static_assert(BYTES == 2 || BYTES == 4 || BYTES == 8 || BYTES == 16, "one load of 2, 4, 8 or 16 bytes");
    if constexpr (BYTES == 2)
    {
        unsigned short const r = __ldg(static_cast<unsigned short const*>(p));
        memcpy(out, &r, sizeof(r));
    }
    else if constexpr (BYTES == 4)
    {
        unsigned const r = __ldg(static_cast<unsigned const*>(p));
        memcpy(out, &r, sizeof(r));
    }
    else if constexpr (BYTES == 8)
    {
        uint2 const r = __ldg(static_cast<uint2 const*>(p));
        memcpy(out, &r, sizeof(r));
    }
    else
    {
        uint4 const r = __ldg(static_cast<uint4 const*>(p));
        memcpy(out, &r, sizeof(r));
    }
}

// N elements with 16-byte loads (8-byte where N elements are 8 bytes short of a multiple of 16); the caller
// guarantees that alignment.
template <typename C, int N>
__device__ __forceinline__ void loadVector(C const* p, C (&out)[N])
{
    constexpr int kBytes = N * static_cast<int>(sizeof(C));
    static_assert(kBytes % 8 == 0, "8-byte multiple");
    constexpr int kStep = kBytes % 16 == 0 ? 16 : 8;
#pragma unroll
    for (int i = 0; i < kBytes / kStep; ++i)
    {
        loadBytes<kStep>(reinterpret_cast<unsigned char const*>(p) + i * kStep, &out[i * kStep / sizeof(C)]);
    }
}

inline int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

} // namespace fbocc
