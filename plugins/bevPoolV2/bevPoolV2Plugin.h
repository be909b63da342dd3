// BEVPoolV2TRT: the op as TensorRT sees it; the IPluginV3 and IPluginV2DynamicExt classes in common/ wrap it.
#pragma once

#include "../common/pluginCommon.h"

namespace fbocc
{
namespace plugin
{

struct BevPoolV2Op
{
    static constexpr char const* kName = "BEVPoolV2TRT";
    // depth [B,N,D,H,W], feat [B,N,H,W,C], ranks_depth, ranks_feat, ranks_bev [Np],
    // interval_starts, interval_lengths [Ni]
    static constexpr int32_t kNbInputs = 7;
    static constexpr int32_t kNbAttributes = 3;
    static constexpr std::array<char const*, kNbAttributes> kAttributeNames{"out_height", "out_width", "out_depth"};
    static constexpr std::array<int32_t, kNbAttributes> kAttributeDefaults{0, 0, 8};
    static constexpr std::array<bool, kNbAttributes> kAttributeRequired{true, true, false};
    using Values = AttributeValues<kNbAttributes>;

    static char const* validate(Values const& v) noexcept;
    static bool outputShape(
        nvinfer1::DimsExprs const* in, nvinfer1::IExprBuilder& builder, Values const& v, nvinfer1::DimsExprs& out) noexcept;
    static bool supportsFormat(int32_t pos, IOFormats const& io) noexcept;
    static nvinfer1::DataType outputType(nvinfer1::DataType const* inputTypes) noexcept
    {
        return inputTypes[1];
    }
    static cudaError_t enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out,
        void const* const* inputs, void* const* outputs, Values const& v, cudaStream_t stream) noexcept;
};

} // namespace plugin
} // namespace fbocc
