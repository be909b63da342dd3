#include "multiScaleDeformableAttnPlugin.h"

#include "multiScaleDeformableAttn.h"

namespace fbocc
{
namespace plugin
{

bool MultiScaleDeformableAttnOp::outputShape(
    nvinfer1::DimsExprs const* in, nvinfer1::IExprBuilder& builder, Values const&, nvinfer1::DimsExprs& out) noexcept
{
    if (in[0].nbDims != 4 || in[1].nbDims != 2 || in[2].nbDims != 1 || in[3].nbDims != 6 || in[4].nbDims != 5)
    {
        return false;
    }
    out.nbDims = 3;
    out.d[0] = in[0].d[0];
    out.d[1] = in[3].d[1];
    out.d[2] = builder.operation(nvinfer1::DimensionOperation::kPROD, *in[0].d[2], *in[0].d[3]);
    return true;
}

bool MultiScaleDeformableAttnOp::supportsFormat(int32_t pos, IOFormats const& io) noexcept
{
    if (io.format[pos] != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return isFeatureType(io.type[0]);
    case 1: return isIndexType(io.type[1]);
    case 2: return io.type[2] == io.type[1];
    case 3: return io.type[3] == nvinfer1::DataType::kFLOAT || io.type[3] == io.type[0]; // fp32 coordinates
    case 4: return io.type[4] == io.type[3];
    default: return io.type[pos] == io.type[0];
    }
}

cudaError_t MultiScaleDeformableAttnOp::enqueue(nvinfer1::PluginTensorDesc const* in,
    nvinfer1::PluginTensorDesc const*, void const* const* inputs, void* const* outputs, Values const&,
    cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& value = in[0].dims;
    nvinfer1::Dims const& loc = in[3].dims;
    MultiScaleDeformableAttnShape const shape{
        value.d[0], value.d[1], value.d[2], value.d[3], loc.d[3], loc.d[1], loc.d[4]};
    return multiScaleDeformableAttnForward(inputs[0], toDType(in[0].type), inputs[1], inputs[2],
        toIndexType(in[1].type), inputs[3], inputs[4], toDType(in[3].type), outputs[0], shape, stream);
}

} // namespace plugin
} // namespace fbocc
