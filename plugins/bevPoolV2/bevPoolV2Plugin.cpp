#include "bevPoolV2Plugin.h"

#include "bevPoolV2.h"

namespace fbocc
{
namespace plugin
{

char const* BevPoolV2Op::validate(Values const& v) noexcept
{
    if (v[0] <= 0 || v[1] <= 0 || v[2] <= 0)
    {
        return "out_height, out_width and out_depth must be positive";
    }
    return nullptr;
}

bool BevPoolV2Op::outputShape(
    nvinfer1::DimsExprs const* in, nvinfer1::IExprBuilder& builder, Values const& v, nvinfer1::DimsExprs& out) noexcept
{
    if (in[0].nbDims != 5 || in[1].nbDims != 5)
    {
        return false;
    }
    for (int32_t i = 2; i < kNbInputs; ++i)
    {
        if (in[i].nbDims != 1)
        {
            return false;
        }
    }
    out.nbDims = 5;
    out.d[0] = in[0].d[0];
    out.d[1] = builder.constant(v[2]);
    out.d[2] = builder.constant(v[0]);
    out.d[3] = builder.constant(v[1]);
    out.d[4] = in[1].d[4];
    return true;
}

bool BevPoolV2Op::supportsFormat(int32_t pos, IOFormats const& io) noexcept
{
    if (io.format[pos] != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return isFeatureType(io.type[0]);
    }
    if (pos == 1 || pos == kNbInputs)
    {
        return io.type[pos] == io.type[0];
    }
    return isIndexType(io.type[pos]) && io.type[pos] == io.type[2]; // one index type for all five
}

cudaError_t BevPoolV2Op::enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out,
    void const* const* inputs, void* const* outputs, Values const&, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& o = out[0].dims;
    BevPoolV2Shape const shape{o.d[4], static_cast<int64_t>(o.d[0]) * o.d[1] * o.d[2] * o.d[3], in[5].dims.d[0],
        in[4].dims.d[0]};
    return bevPoolV2Forward(inputs[0], inputs[1], toDType(in[1].type), inputs[2], inputs[3], inputs[4], inputs[5],
        inputs[6], toIndexType(in[2].type), outputs[0], shape, stream);
}

} // namespace plugin
} // namespace fbocc
