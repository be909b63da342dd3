#include "gridSampler3DPlugin.h"

#include "gridSampler3D.h"

namespace fbocc
{
namespace plugin
{

char const* GridSampler3DOp::validate(Values const& v) noexcept
{
    if (v[0] != 0 && v[0] != 1)
    {
        return "interpolation_mode must be 0 (bilinear) or 1 (nearest)";
    }
    if (v[1] < 0 || v[1] > 2)
    {
        return "padding_mode must be 0 (zeros), 1 (border) or 2 (reflection)";
    }
    if (v[2] != 0 && v[2] != 1)
    {
        return "align_corners must be 0 or 1";
    }
    return nullptr;
}

bool GridSampler3DOp::outputShape(
    nvinfer1::DimsExprs const* in, nvinfer1::IExprBuilder&, Values const&, nvinfer1::DimsExprs& out) noexcept
{
    if (in[0].nbDims != 5 || in[1].nbDims != 5)
    {
        return false;
    }
    out.nbDims = 5;
    out.d[0] = in[0].d[0];
    out.d[1] = in[0].d[1];
    out.d[2] = in[1].d[2];
    out.d[3] = in[1].d[3];
    out.d[4] = in[1].d[4];
    return true;
}

bool GridSampler3DOp::supportsFormat(int32_t pos, IOFormats const& io) noexcept
{
    if (io.format[pos] != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return isFeatureType(io.type[0]);
    case 1: return io.type[1] == nvinfer1::DataType::kFLOAT || io.type[1] == io.type[0]; // fp32 grid beside fp16
    default: return io.type[pos] == io.type[0];
    }
}

cudaError_t GridSampler3DOp::enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, Values const& v, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& x = in[0].dims;
    nvinfer1::Dims const& g = in[1].dims;
    GridSampler3DShape const shape{x.d[0], x.d[1], x.d[2], x.d[3], x.d[4], g.d[2], g.d[3], g.d[4]};
    return gridSampler3DForward(inputs[0], toDType(in[0].type), inputs[1], toDType(in[1].type), outputs[0], shape,
        static_cast<GridSamplerInterpolation>(v[0]), static_cast<GridSamplerPadding>(v[1]), v[2] != 0, stream);
}

} // namespace plugin
} // namespace fbocc
