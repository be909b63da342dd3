// Shared by the kernels and their callers: no TensorRT types here, so the kernels build without TensorRT.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

//! Exported from the kernel and plugin libraries (everything else is hidden).
#define FBOCC_API __attribute__((visibility("default")))

namespace fbocc
{

//! Element types the kernels take for feature tensors (and for coordinates, which may stay fp32 beside fp16).
enum class DType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

//! Element types of index tensors: int32 (TensorRT 8.6) or int64 (TensorRT >= 10, PyTorch's default).
enum class IndexType : int32_t
{
    kINT32 = 0,
    kINT64 = 1,
};

//! Bytes of one element of `t`.
inline int32_t dtypeSize(DType t)
{
    return t == DType::kFLOAT16 ? 2 : 4;
}

} // namespace fbocc
