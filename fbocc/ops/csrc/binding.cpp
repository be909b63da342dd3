// PyTorch binding of the plugin kernels (plugins/*/*.cu), so tests and benchmarks call exactly the code
// the TensorRT plugins run. Shapes and dtypes are checked here; the kernels trust them.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <string>

#include "bevPoolV2/bevPoolV2.h"
#include "gridSampler3D/gridSampler3D.h"
#include "multiScaleDeformableAttn/multiScaleDeformableAttn.h"

namespace
{

fbocc::DType floatType(torch::Tensor const& t, char const* name)
{
    TORCH_CHECK(t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat16, name,
        " must be float32 or float16, got ", t.scalar_type());
    return t.scalar_type() == torch::kFloat16 ? fbocc::DType::kFLOAT16 : fbocc::DType::kFLOAT32;
}

fbocc::IndexType indexType(torch::Tensor const& t, char const* name)
{
    TORCH_CHECK(t.scalar_type() == torch::kInt32 || t.scalar_type() == torch::kInt64, name,
        " must be int32 or int64, got ", t.scalar_type());
    return t.scalar_type() == torch::kInt64 ? fbocc::IndexType::kINT64 : fbocc::IndexType::kINT32;
}

void checkCuda(torch::Tensor const& t, char const* name)
{
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// "[1, 3, 80]", built with std::to_string: a TORCH_CHECK that streams integers into its message crashed the
// process (segmentation fault) on the H100 machine's toolchain instead of raising; strings and dtypes stream fine.
std::string shapeText(c10::IntArrayRef sizes)
{
    std::string text = "[";
    for (size_t i = 0; i < sizes.size(); ++i)
    {
        text += (i ? ", " : "") + std::to_string(sizes[i]);
    }
    return text + "]";
}

torch::Tensor outputOrNew(c10::optional<torch::Tensor> const& out, std::vector<int64_t> const& shape,
    torch::TensorOptions const& options)
{
    if (!out.has_value())
    {
        return torch::empty(shape, options);
    }
    torch::Tensor const& o = *out;
    TORCH_CHECK(o.sizes() == c10::IntArrayRef(shape),
        "out has shape " + shapeText(o.sizes()) + ", expected " + shapeText(shape));
    TORCH_CHECK(o.scalar_type() == options.dtype().toScalarType() && o.is_cuda() && o.is_contiguous(),
        "out must be a contiguous CUDA tensor of the feature dtype");
    return o;
}

void checkLaunch(cudaError_t status, char const* op)
{
    TORCH_CHECK(status == cudaSuccess, op, " kernel launch failed: ", cudaGetErrorString(status));
}

torch::Tensor gridSampler3D(torch::Tensor input, torch::Tensor grid, int64_t interpolation, int64_t padding,
    bool alignCorners, c10::optional<torch::Tensor> out, c10::optional<std::vector<int64_t>> tile)
{
    checkCuda(input, "input");
    checkCuda(grid, "grid");
    TORCH_CHECK(input.dim() == 5 && grid.dim() == 5 && grid.size(1) == 3 && grid.size(0) == input.size(0),
        "input must be [N,C,D,H,W] and grid [N,3,Do,Ho,Wo]");
    TORCH_CHECK(interpolation == 0 || interpolation == 1, "interpolation_mode must be 0 or 1");
    TORCH_CHECK(padding >= 0 && padding <= 2, "padding_mode must be 0, 1 or 2");
    fbocc::DType const inType = floatType(input, "input");
    fbocc::DType const gridType = floatType(grid, "grid");
    c10::cuda::CUDAGuard guard(input.device());
    fbocc::GridSampler3DShape const s{input.size(0), input.size(1), input.size(2), input.size(3), input.size(4),
        grid.size(2), grid.size(3), grid.size(4)};
    torch::Tensor output = outputOrNew(out, {s.n, s.c, s.outD, s.outH, s.outW}, input.options());
    fbocc::GridSampler3DTile blockTile{};
    if (tile.has_value())
    {
        TORCH_CHECK(tile->size() == 3, "tile must be (z, y, x)");
        blockTile = fbocc::GridSampler3DTile{static_cast<int32_t>((*tile)[0]), static_cast<int32_t>((*tile)[1]),
            static_cast<int32_t>((*tile)[2])};
    }
    checkLaunch(fbocc::gridSampler3DForwardTiled(input.data_ptr(), inType, grid.data_ptr(), gridType,
                    output.data_ptr(), s, static_cast<fbocc::GridSamplerInterpolation>(interpolation),
                    static_cast<fbocc::GridSamplerPadding>(padding), alignCorners, blockTile,
                    c10::cuda::getCurrentCUDAStream().stream()),
        "GridSampler3D");
    return output;
}

torch::Tensor bevPoolV2(torch::Tensor depth, torch::Tensor feat, torch::Tensor ranksDepth, torch::Tensor ranksFeat,
    torch::Tensor ranksBev, torch::Tensor intervalStarts, torch::Tensor intervalLengths, int64_t outHeight,
    int64_t outWidth, int64_t outDepth, c10::optional<torch::Tensor> out)
{
    for (auto const& [t, name] : {std::pair<torch::Tensor const&, char const*>{depth, "depth"}, {feat, "feat"},
             {ranksDepth, "ranks_depth"}, {ranksFeat, "ranks_feat"}, {ranksBev, "ranks_bev"},
             {intervalStarts, "interval_starts"}, {intervalLengths, "interval_lengths"}})
    {
        checkCuda(t, name);
    }
    TORCH_CHECK(depth.dim() == 5 && feat.dim() == 5, "depth must be [B,N,D,H,W] and feat [B,N,H,W,C]");
    fbocc::DType const dtype = floatType(feat, "feat");
    TORCH_CHECK(depth.scalar_type() == feat.scalar_type(), "depth and feat must have the same dtype");
    fbocc::IndexType const itype = indexType(ranksDepth, "ranks_depth");
    for (auto const* t : {&ranksFeat, &ranksBev, &intervalStarts, &intervalLengths})
    {
        TORCH_CHECK(t->scalar_type() == ranksDepth.scalar_type(), "all index tensors must share one dtype");
        TORCH_CHECK(t->dim() == 1, "index tensors must be 1-D");
    }
    TORCH_CHECK(ranksFeat.numel() == ranksDepth.numel() && ranksBev.numel() == ranksDepth.numel(),
        "ranks_depth, ranks_feat and ranks_bev must have the same length");
    TORCH_CHECK(intervalStarts.numel() == intervalLengths.numel(), "interval arrays must have the same length");
    c10::cuda::CUDAGuard guard(feat.device());
    int64_t const batch = depth.size(0), channels = feat.size(4);
    fbocc::BevPoolV2Shape const s{channels, batch * outDepth * outHeight * outWidth, intervalStarts.numel(),
        ranksBev.numel()};
    torch::Tensor output = outputOrNew(out, {batch, outDepth, outHeight, outWidth, channels}, feat.options());
    checkLaunch(fbocc::bevPoolV2Forward(depth.data_ptr(), feat.data_ptr(), dtype, ranksDepth.data_ptr(),
                    ranksFeat.data_ptr(), ranksBev.data_ptr(), intervalStarts.data_ptr(), intervalLengths.data_ptr(),
                    itype, output.data_ptr(), s, c10::cuda::getCurrentCUDAStream().stream()),
        "BEVPoolV2");
    return output;
}

torch::Tensor multiScaleDeformableAttn(torch::Tensor value, torch::Tensor spatialShapes, torch::Tensor levelStart,
    torch::Tensor locations, torch::Tensor weights, c10::optional<torch::Tensor> out)
{
    for (auto const& [t, name] : {std::pair<torch::Tensor const&, char const*>{value, "value"},
             {spatialShapes, "spatial_shapes"}, {levelStart, "level_start_index"}, {locations, "sampling_locations"},
             {weights, "attention_weights"}})
    {
        checkCuda(t, name);
    }
    TORCH_CHECK(value.dim() == 4 && locations.dim() == 6 && locations.size(5) == 2 && weights.dim() == 5,
        "value [N,S,M,D], sampling_locations [N,Lq,M,L,P,2], attention_weights [N,Lq,M,L,P] expected");
    fbocc::DType const vtype = floatType(value, "value");
    fbocc::DType const ctype = floatType(locations, "sampling_locations");
    TORCH_CHECK(weights.scalar_type() == locations.scalar_type(),
        "sampling_locations and attention_weights must share one dtype");
    fbocc::IndexType const itype = indexType(spatialShapes, "spatial_shapes");
    TORCH_CHECK(levelStart.scalar_type() == spatialShapes.scalar_type(),
        "spatial_shapes and level_start_index must share one dtype");
    int64_t const levels = locations.size(3);
    TORCH_CHECK(spatialShapes.numel() == 2 * levels && levelStart.numel() == levels,
        "spatial_shapes must be [L,2] and level_start_index [L]");
    c10::cuda::CUDAGuard guard(value.device());
    fbocc::MultiScaleDeformableAttnShape const s{value.size(0), value.size(1), value.size(2), value.size(3), levels,
        locations.size(1), locations.size(4)};
    torch::Tensor output = outputOrNew(out, {s.batch, s.queries, s.heads * s.channels}, value.options());
    checkLaunch(fbocc::multiScaleDeformableAttnForward(value.data_ptr(), vtype, spatialShapes.data_ptr(),
                    levelStart.data_ptr(), itype, locations.data_ptr(), weights.data_ptr(), ctype, output.data_ptr(),
                    s, c10::cuda::getCurrentCUDAStream().stream()),
        "MultiScaleDeformableAttn");
    return output;
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("grid_sampler3d", &gridSampler3D, "GridSampler3DTRT kernel");
    m.def("bev_pool_v2", &bevPoolV2, "BEVPoolV2TRT kernel");
    m.def("multi_scale_deformable_attn", &multiScaleDeformableAttn, "MultiScaleDeformableAttnTRT kernel");
}
