// Stand-in for TensorRT OSS's plugin/common/checkMacrosPlugin.h, used only when benchmarks/kernels.py compiles
// TensorRT's MultiscaleDeformableAttn kernel file (plugin/multiscaleDeformableAttnPlugin/) from a checkout given
// at run time. That kernel file needs exactly one thing from the real header: the error log
// nvinfer1::plugin::gLogError, to which its launcher reports a failed launch (after clearing the CUDA error with
// cudaGetLastError). Ours writes to stderr and remembers that something was reported, so the adapter
// (trt_msda_adapter.cu) can still return a failure. The real header would pull in TensorRT's runtime headers and
// its logger implementation, which a kernel timing does not need.
#pragma once

#include <iostream>

namespace nvinfer1 {
namespace plugin {

struct FboccErrorLog {
  bool reported = false;

  template <typename T> FboccErrorLog &operator<<(const T &value) {
    reported = true;
    std::cerr << value;
    return *this;
  }

  FboccErrorLog &operator<<(std::ostream &(*manipulator)(std::ostream &)) {
    std::cerr << manipulator;
    return *this;
  }
};

extern FboccErrorLog gLogError;  // defined in trt_msda_adapter.cu

} // namespace plugin
} // namespace nvinfer1
