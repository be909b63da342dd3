// Our adapter around the kernels users have today (DerryHub/BEVFormer_tensorrt @303d314, as FB-OCC-TRT deploys
// them): C entry points taking raw device pointers, sizes and a stream, so the benchmark can call their launchers
// through ctypes on the same tensors as ours. Their sources are never in this repository: benchmarks/kernels.py
// compiles this file together with their kernel .cu files from a checkout given at run time
// (--baseline-src), in a build directory outside the checkout.
//
// Each entry point makes the call their TensorRT plugin's enqueue makes for the ONNX op FB-OCC exports
// (GridSampler3DTRT, BEVPoolV2TRT, MultiScaleDeformableAttnTRT: the "use_h2 = false" variants), with the
// dimensions their plugin reads from the tensor descriptors. It returns a CUDA error left pending by earlier work
// (without calling them), else that of their launch (0 = none; their MSDA launcher prints and clears its own).
// Their launchers zero BEVPool's and MSDA's outputs with cudaMemset on the legacy default stream; that memset is
// part of what they cost and is timed with them.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bevPoolKernel.h"
#include "gridSamplerKernel.h"
#if FBOCC_BASELINE_MSDA
#include "multiScaleDeformableAttnKernel.h"
#endif

namespace {

// Their plugin's attribute mapping (gridSamplerPlugin.cpp): 0 bilinear, 1 nearest; 0 zeros, 1 border, 2 reflection.
bool interpolation(int mode, GridSamplerInterpolation *out) {
  switch (mode) {
  case 0: *out = GridSamplerInterpolation::Bilinear; return true;
  case 1: *out = GridSamplerInterpolation::Nearest; return true;
  default: return false;
  }
}

bool padding(int mode, GridSamplerPadding *out) {
  switch (mode) {
  case 0: *out = GridSamplerPadding::Zeros; return true;
  case 1: *out = GridSamplerPadding::Border; return true;
  case 2: *out = GridSamplerPadding::Reflection; return true;
  default: return false;
  }
}

int launch_status() { return static_cast<int>(cudaGetLastError()); }

// Their BEVPool launcher ends in cudaCheckError(), which calls exit(0) on any pending CUDA error: the benchmark
// would vanish with status 0 and no table. So nothing may be pending when we call it, and its launch must be valid.
int pending_error() { return static_cast<int>(cudaGetLastError()); }

} // namespace

extern "C" {

// 1 when the checkout's MSDA kernel is the mmcv-style op FB-OCC exports (value, spatial_shapes, level_start_index,
// sampling_locations, attention_weights); 0 for 303d314's original (reference points + offsets, softmax inside).
int fbocc_today_has_msda() { return FBOCC_BASELINE_MSDA; }

// GridSampler3DTRT: input [n,c,d,h,w], grid [n,3,out_d,out_h,out_w] channel-first and scaled by 10, both in the
// same dtype (their plugin requires it), output [n,c,out_d,out_h,out_w]. half: 0 float32, 1 float16.
int fbocc_today_grid_sampler3d(int half, void *output, const void *input, const void *grid, int n, int c, int d,
                               int h, int w, int out_d, int out_h, int out_w, int interpolation_mode,
                               int padding_mode, int align_corners, cudaStream_t stream) {
  if (int earlier = pending_error()) {
    return earlier;
  }
  GridSamplerInterpolation interp;
  GridSamplerPadding pad;
  if (!interpolation(interpolation_mode, &interp) || !padding(padding_mode, &pad)) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  int input_dims[5] = {n, c, d, h, w};
  int grid_dims[5] = {n, 3, out_d, out_h, out_w};
  int output_dims[5] = {n, c, out_d, out_h, out_w};
  if (half) {
    grid_sample<__half>(static_cast<__half *>(output), static_cast<const __half *>(input),
                        static_cast<const __half *>(grid), output_dims, input_dims, grid_dims, 5, interp, pad,
                        align_corners != 0, stream);
  } else {
    grid_sample<float>(static_cast<float *>(output), static_cast<const float *>(input),
                       static_cast<const float *>(grid), output_dims, input_dims, grid_dims, 5, interp, pad,
                       align_corners != 0, stream);
  }
  return launch_status();
}

// BEVPoolV2TRT as FB-OCC-TRT's plugin calls it: channels = feat's last dimension, output_elements = the element
// count of the [b,8,out_h,out_w,c] output (their launcher zeroes that many elements first). int32 indices only.
int fbocc_today_bev_pool_v2(int half, void *output, const void *depth, const void *feat, const int *ranks_depth,
                            const int *ranks_feat, const int *ranks_bev, const int *interval_starts,
                            const int *interval_lengths, int channels, int n_intervals, int output_elements,
                            cudaStream_t stream) {
  if (int earlier = pending_error()) {
    return earlier;
  }
  if (n_intervals <= 0 || channels <= 0 || output_elements <= 0) {
    return static_cast<int>(cudaErrorInvalidValue);  // a zero-block launch would fail inside their exit(0) check
  }
  if (half) {
    bev_pool_v2<__half>(channels, n_intervals, output_elements, static_cast<const __half *>(depth),
                        static_cast<const __half *>(feat), ranks_depth, ranks_feat, ranks_bev, interval_starts,
                        interval_lengths, static_cast<__half *>(output), stream);
  } else {
    bev_pool_v2<float>(channels, n_intervals, output_elements, static_cast<const float *>(depth),
                       static_cast<const float *>(feat), ranks_depth, ranks_feat, ranks_bev, interval_starts,
                       interval_lengths, static_cast<float *>(output), stream);
  }
  return launch_status();
}

// MultiScaleDeformableAttnTRT (FB-OCC-TRT's mmcv-style kernel): value [batch,spatial_size,num_heads,channels],
// spatial_shapes [num_levels,2] and level_start_index [num_levels] int32, sampling_locations
// [batch,num_query,num_heads,num_levels,num_point,2] and attention_weights [...,num_point] in value's dtype,
// output [batch,num_query,num_heads*channels].
int fbocc_today_msda(int half, void *output, const void *value, const int *spatial_shapes,
                     const int *level_start_index, const void *sampling_locations, const void *attention_weights,
                     int batch, int spatial_size, int num_heads, int channels, int num_levels, int num_query,
                     int num_point, cudaStream_t stream) {
#if FBOCC_BASELINE_MSDA
  if (int earlier = pending_error()) {
    return earlier;
  }
  if (half) {
    ms_deformable_im2col_cuda<__half>(static_cast<const __half *>(value), spatial_shapes, level_start_index,
                                      static_cast<const __half *>(sampling_locations),
                                      static_cast<const __half *>(attention_weights), batch, spatial_size,
                                      num_heads, channels, num_levels, num_query, num_point,
                                      static_cast<__half *>(output), stream);
  } else {
    ms_deformable_im2col_cuda<float>(static_cast<const float *>(value), spatial_shapes, level_start_index,
                                     static_cast<const float *>(sampling_locations),
                                     static_cast<const float *>(attention_weights), batch, spatial_size,
                                     num_heads, channels, num_levels, num_query, num_point,
                                     static_cast<float *>(output), stream);
  }
  return launch_status();
#else
  (void)half; (void)output; (void)value; (void)spatial_shapes; (void)level_start_index; (void)sampling_locations;
  (void)attention_weights; (void)batch; (void)spatial_size; (void)num_heads; (void)channels; (void)num_levels;
  (void)num_query; (void)num_point; (void)stream;
  return static_cast<int>(cudaErrorNotSupported);
#endif
}

} // extern "C"
