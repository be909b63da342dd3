// GridSampler3DTRT: the op as TensorRT sees it (shapes, formats, attributes, enqueue); the IPluginV3 and
// IPluginV2DynamicExt classes in common/ wrap it.
#pragma once

#include "../common/pluginCommon.h"

namespace fbocc
{
namespace plugin
{

struct GridSampler3DOp
{
    static constexpr char const* kName = "GridSampler3DTRT";
    static constexpr int32_t kNbInputs = 2; // input [N,C,D,H,W], grid [N,3,Do,Ho,Wo] (x10)
    static constexpr int32_t kNbAttributes = 3;
    static constexpr std::array<char const*, kNbAttributes> kAttributeNames{
        "interpolation_mode", "padding_mode", "align_corners"};
    static constexpr std::array<int32_t, kNbAttributes> kAttributeDefaults{0, 0, 0};
    static constexpr std::array<bool, kNbAttributes> kAttributeRequired{false, false, false};
    using Values = AttributeValues<kNbAttributes>;

    static char const* validate(Values const& v) noexcept;
    static bool outputShape(
        nvinfer1::DimsExprs const* in, nvinfer1::IExprBuilder& builder, Values const& v, nvinfer1::DimsExprs& out) noexcept;
    static bool supportsFormat(int32_t pos, IOFormats const& io) noexcept;
    static nvinfer1::DataType outputType(nvinfer1::DataType const* inputTypes) noexcept
    {
        return inputTypes[0];
    }
    static cudaError_t enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out,
        void const* const* inputs, void* const* outputs, Values const& v, cudaStream_t stream) noexcept;
};

} // namespace plugin
} // namespace fbocc
