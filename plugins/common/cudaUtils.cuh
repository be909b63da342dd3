// Device helpers shared by the kernels (included from .cu files only).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

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

inline int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

} // namespace fbocc
