// MultiScaleDeformableAttnTRT: the op as TensorRT sees it; the IPluginV3 and IPluginV2DynamicExt classes in
// common/ wrap it.
#pragma once

#include "../common/pluginCommon.h"

namespace fbocc
{
namespace plugin
{

struct MultiScaleDeformableAttnOp
{
    static constexpr char const* kName = "MultiScaleDeformableAttnTRT";
    // value [N,S,M,D], spatial_shapes [L,2], level_start_index [L], sampling_locations [N,Lq,M,L,P,2],
    // attention_weights [N,Lq,M,L,P]
    static constexpr int32_t kNbInputs = 5;
    static constexpr int32_t kNbAttributes = 0;
    static constexpr std::array<char const*, kNbAttributes> kAttributeNames{};
    static constexpr std::array<int32_t, kNbAttributes> kAttributeDefaults{};
    static constexpr std::array<bool, kNbAttributes> kAttributeRequired{};
    using Values = AttributeValues<kNbAttributes>;

    static char const* validate(Values const&) noexcept
    {
        return nullptr;
    }
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
