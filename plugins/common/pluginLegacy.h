// IPluginV2DynamicExt (TensorRT 8.6, 32-bit Dims) around an op description (see gridSampler3DPlugin.h).
#pragma once

#include "pluginCommon.h"

#if !FBOCC_TRT_PLUGIN_V3

#include <string>

namespace fbocc
{
namespace plugin
{

template <class Op>
class LegacyPlugin final : public nvinfer1::IPluginV2DynamicExt
{
public:
    using Values = AttributeValues<Op::kNbAttributes>;

    explicit LegacyPlugin(Values const& values)
        : mValues(values)
    {
    }

    nvinfer1::IPluginV2DynamicExt* clone() const noexcept override
    {
        try
        {
            auto* copy = new LegacyPlugin(mValues);
            copy->mNamespace = mNamespace;
            return copy;
        }
        catch (...)
        {
            return nullptr;
        }
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
        int32_t nbInputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        nvinfer1::DimsExprs out{};
        if (outputIndex != 0 || nbInputs != Op::kNbInputs || !Op::outputShape(inputs, exprBuilder, mValues, out))
        {
            logError(Op::kName, "unexpected inputs: see the op's README for the expected ranks");
        }
        return out;
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != Op::kNbInputs || nbOutputs != 1 || pos < 0 || pos > nbInputs)
        {
            return false;
        }
        IOFormats io;
        for (int32_t i = 0; i <= pos; ++i)
        {
            io.type[i] = inOut[i].type;
            io.format[i] = inOut[i].format;
        }
        return Op::supportsFormat(pos, io);
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const*, int32_t, nvinfer1::DynamicPluginTensorDesc const*,
        int32_t) noexcept override
    {
    }

    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const*, int32_t, nvinfer1::PluginTensorDesc const*,
        int32_t) const noexcept override
    {
        return 0;
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        cudaError_t const status = Op::enqueue(inputDesc, outputDesc, inputs, outputs, mValues, stream);
        if (status != cudaSuccess)
        {
            logError(Op::kName, cudaGetErrorString(status));
            return 1;
        }
        return 0;
    }

    nvinfer1::DataType getOutputDataType(
        int32_t, nvinfer1::DataType const* inputTypes, int32_t) const noexcept override
    {
        return Op::outputType(inputTypes);
    }

    nvinfer1::AsciiChar const* getPluginType() const noexcept override
    {
        return Op::kName;
    }

    nvinfer1::AsciiChar const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }

    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    int32_t initialize() noexcept override
    {
        return 0;
    }

    void terminate() noexcept override {}

    size_t getSerializationSize() const noexcept override
    {
        return sizeof(int32_t) * Op::kNbAttributes;
    }

    void serialize(void* buffer) const noexcept override
    {
        if (Op::kNbAttributes > 0)
        {
            std::memcpy(buffer, mValues.data(), sizeof(int32_t) * Op::kNbAttributes);
        }
    }

    void destroy() noexcept override
    {
        delete this;
    }

    void setPluginNamespace(nvinfer1::AsciiChar const* pluginNamespace) noexcept override
    {
        try
        {
            mNamespace = pluginNamespace == nullptr ? "" : pluginNamespace;
        }
        catch (...)
        {
        }
    }

    nvinfer1::AsciiChar const* getPluginNamespace() const noexcept override
    {
        return mNamespace.c_str();
    }

private:
    Values mValues;
    std::string mNamespace;
};

template <class Op>
class LegacyCreator final : public nvinfer1::IPluginCreator
{
public:
    LegacyCreator()
    {
        for (int32_t a = 0; a < Op::kNbAttributes; ++a)
        {
            mFields[a] = nvinfer1::PluginField(Op::kAttributeNames[a], nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        }
        mCollection.nbFields = Op::kNbAttributes;
        mCollection.fields = mFields.data();
    }

    nvinfer1::AsciiChar const* getPluginName() const noexcept override
    {
        return Op::kName;
    }

    nvinfer1::AsciiChar const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mCollection;
    }

    nvinfer1::IPluginV2* createPlugin(
        nvinfer1::AsciiChar const*, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        typename LegacyPlugin<Op>::Values values{};
        if (!parseAttributes<Op>(fc, values))
        {
            return nullptr;
        }
        return make(values);
    }

    nvinfer1::IPluginV2* deserializePlugin(
        nvinfer1::AsciiChar const*, void const* serialData, size_t serialLength) noexcept override
    {
        typename LegacyPlugin<Op>::Values values{};
        if (serialLength != sizeof(int32_t) * Op::kNbAttributes || (Op::kNbAttributes > 0 && serialData == nullptr))
        {
            logError(Op::kName, "serialized plugin data has the wrong size: rebuild the engine");
            return nullptr;
        }
        if constexpr (Op::kNbAttributes > 0) // a run-time if still instantiates memcpy(nullptr, ...): g++-9 -Wnonnull
        {
            std::memcpy(values.data(), serialData, serialLength);
        }
        return make(values);
    }

    void setPluginNamespace(nvinfer1::AsciiChar const* pluginNamespace) noexcept override
    {
        try
        {
            mNamespace = pluginNamespace == nullptr ? "" : pluginNamespace;
        }
        catch (...)
        {
        }
    }

    nvinfer1::AsciiChar const* getPluginNamespace() const noexcept override
    {
        return mNamespace.c_str();
    }

private:
    nvinfer1::IPluginV2* make(typename LegacyPlugin<Op>::Values const& values) noexcept
    {
        try
        {
            auto* plugin = new LegacyPlugin<Op>(values);
            plugin->setPluginNamespace(mNamespace.c_str());
            return plugin;
        }
        catch (...)
        {
            return nullptr;
        }
    }

    std::array<nvinfer1::PluginField, Op::kNbAttributes> mFields{};
    nvinfer1::PluginFieldCollection mCollection{};
    std::string mNamespace;
};

} // namespace plugin
} // namespace fbocc

#endif // !FBOCC_TRT_PLUGIN_V3
