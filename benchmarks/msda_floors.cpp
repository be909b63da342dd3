// PyTorch binding of the MSDA data-movement floors (msda_floors.cu); benchmark only. Shapes and dtypes are checked
// here, the launchers trust them; msda_floors.py checks first and says more. The messages here are plain strings:
// on the H100 machine's toolchain a TORCH_CHECK that joins several parts into its message crashed the process
// (segmentation fault) instead of raising, while one-string messages raise RuntimeError.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cmath>

#include "msda_floors.h"

namespace
{

using fbocc_floors::FloorShape;

FloorShape check(torch::Tensor const& value, torch::Tensor const& locations, torch::Tensor const& out)
{
    TORCH_CHECK(value.is_cuda() && value.is_contiguous() && value.dim() == 4,
        "value must be a contiguous CUDA [N, S, M, D] tensor");
    TORCH_CHECK(value.scalar_type() == torch::kFloat32 || value.scalar_type() == torch::kFloat16,
        "value must be float32 or float16");
    TORCH_CHECK(locations.is_cuda() && locations.is_contiguous() && locations.dim() == 6 && locations.size(3) == 1
            && locations.size(5) == 2,
        "sampling_locations must be a contiguous CUDA [N, Lq, M, 1, P, 2] tensor (one level)");
    FloorShape s{value.size(0), value.size(1), value.size(2), value.size(3), locations.size(1), locations.size(4), 0,
        0};
    TORCH_CHECK(s.channels % 2 == 0, "the floors read channel pairs: D must be even");
    TORCH_CHECK(locations.size(0) == s.n && locations.size(2) == s.heads,
        "sampling_locations [N, Lq, M, ...] must match value's N and M");
    TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.scalar_type() == value.scalar_type()
            && out.numel() == s.n * s.queries * s.heads * s.channels,
        "out must be a contiguous CUDA tensor of value's dtype with N * Lq * M * D elements");
    TORCH_CHECK(s.n * s.queries * s.heads * s.channels < INT32_MAX && s.n * s.spatial * s.heads * s.channels < INT32_MAX,
        "the floors use 32-bit indices");
    return s;
}

void launched(cudaError_t status)
{
    TORCH_CHECK(status == cudaSuccess, cudaGetErrorString(status)); // one string: see the file comment
}

void gatherFloor(torch::Tensor value, torch::Tensor locations, int64_t h, int64_t w, bool local, int64_t seed,
    torch::Tensor out)
{
    FloorShape s = check(value, locations, out);
    TORCH_CHECK(h > 0 && w > 0 && h * w == s.spatial, "the level (h, w) must cover value's S rows: h * w == S");
    s.h = h;
    s.w = w;
    // the workload's raster of queries over the level (benchmarks.workloads.msda_inputs)
    int64_t const cols = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(
        static_cast<double>(s.queries) * static_cast<double>(w) / static_cast<double>(h)))));
    int64_t const rows = std::max<int64_t>(1, (s.queries + cols - 1) / cols);
    c10::cuda::CUDAGuard guard(value.device());
    launched(fbocc_floors::gatherFloor(value.data_ptr(), value.scalar_type() == torch::kFloat16, out.data_ptr(), s,
                 static_cast<int>(cols), static_cast<int>(rows), local, static_cast<uint32_t>(seed),
                 c10::cuda::getCurrentCUDAStream()));
}

void streamFloor(torch::Tensor value, torch::Tensor locations, torch::Tensor weights, torch::Tensor out)
{
    FloorShape const s = check(value, locations, out);
    TORCH_CHECK(locations.scalar_type() == value.scalar_type() && weights.scalar_type() == value.scalar_type(),
        "sampling_locations and attention_weights must have value's dtype");
    TORCH_CHECK(weights.is_cuda() && weights.is_contiguous() && weights.numel() * 2 == locations.numel(),
        "attention_weights must be a contiguous CUDA tensor with half the elements of sampling_locations");
    c10::cuda::CUDAGuard guard(value.device());
    launched(fbocc_floors::streamFloor(locations.data_ptr(), weights.data_ptr(),
                 value.scalar_type() == torch::kFloat16, out.data_ptr(), s, c10::cuda::getCurrentCUDAStream()));
}

void empty()
{
    launched(fbocc_floors::emptyLaunch(c10::cuda::getCurrentCUDAStream()));
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("gather_floor", &gatherFloor, "value gathers of MSDA's access pattern, no locations/weights read");
    m.def("stream_floor", &streamFloor, "MSDA's location/weight reads and output write, no value gathers");
    m.def("empty", &empty, "an empty kernel: the timing method's fixed cost");
}
