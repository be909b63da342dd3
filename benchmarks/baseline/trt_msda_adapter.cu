// Our adapter around TensorRT's own MultiscaleDeformableAttn kernel (NVIDIA/TensorRT OSS,
// plugin/multiscaleDeformableAttnPlugin/, the plugin "MultiscaleDeformableAttnPlugin_TRT"): one C entry point
// taking raw device pointers, sizes and a stream, so the benchmark can time TensorRT's kernel through ctypes on
// the same tensors as ours. Their sources are never in this repository: benchmarks/baseline/tensorrt_msda.py
// compiles this file together with their multiscaleDeformableAttn.cu from a checkout given at run time
// (--trt-src), in a build directory outside the checkout, with trt_shim/ standing in for their
// common/checkMacrosPlugin.h.
//
// The call is the one their plugin's enqueue makes: value [batch,spatial_size,num_heads,channels],
// spatial_shapes [num_levels,2] and level_start_index [num_levels] int32, sampling_locations
// [batch,num_query,num_heads,num_levels,num_point,2] and attention_weights [...,num_point] in value's dtype (their
// supportsFormatCombination requires it), output [batch,num_query,num_heads,channels]. Their kernel writes every
// output element, so there is no memset.
//
// Returns a CUDA error left pending by earlier work (without calling them), else 0, or cudaErrorLaunchFailure when
// their launcher reported a failed launch to gLogError (it clears the CUDA error itself).

#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/checkMacrosPlugin.h"
#include "multiscaleDeformableAttn.h"

namespace nvinfer1 {
namespace plugin {
FboccErrorLog gLogError;
} // namespace plugin
} // namespace nvinfer1

extern "C" {

int fbocc_trt_msda(int half, void *output, const void *value, const int32_t *spatial_shapes,
                   const int32_t *level_start_index, const void *sampling_locations, const void *attention_weights,
                   int batch, int spatial_size, int num_heads, int channels, int num_levels, int num_query,
                   int num_point, cudaStream_t stream) {
  if (int earlier = static_cast<int>(cudaGetLastError())) {
    return earlier;
  }
  nvinfer1::plugin::gLogError.reported = false;
  if (half) {
    ms_deform_attn_cuda_forward(stream, static_cast<const __half *>(value), spatial_shapes, level_start_index,
                                static_cast<const __half *>(sampling_locations),
                                static_cast<const __half *>(attention_weights), static_cast<__half *>(output),
                                batch, spatial_size, num_heads, channels, num_levels, num_query, num_point);
  } else {
    ms_deform_attn_cuda_forward(stream, static_cast<const float *>(value), spatial_shapes, level_start_index,
                                static_cast<const float *>(sampling_locations),
                                static_cast<const float *>(attention_weights), static_cast<float *>(output),
                                batch, spatial_size, num_heads, channels, num_levels, num_query, num_point);
  }
  if (nvinfer1::plugin::gLogError.reported) {
    return static_cast<int>(cudaErrorLaunchFailure);
  }
  return static_cast<int>(cudaGetLastError());
}

} // extern "C"
