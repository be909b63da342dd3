// IPluginV3 (OneCore/OneBuild/OneRuntime; TensorRT >= 10, 64-bit Dims) around an op description.
#pragma once

#include "pluginCommon.h"

#if FBOCC_TRT_PLUGIN_V3

#include <string>

namespace fbocc
{
namespace plugin
{

template <class Op>
class V3Plugin final : public nvinfer1::IPluginV3,
                       public nvinfer1::IPluginV3OneCore,
                       public nvinfer1::IPluginV3OneBuild,
                       public nvinfer1::IPluginV3OneRuntime
{
public:
    using Values = AttributeValues<Op::kNbAttributes>;

    explicit V3Plugin(Values const& values)
        : mValues(values)
    {
        for (int32_t a = 0; a < Op::kNbAttributes; ++a)
        {
            mFields[a] = nvinfer1::PluginField(
                Op::kAttributeNames[a], &mValues[a], nvinfer1::PluginFieldType::kINT32, 1);
        }
        mCollection.nbFields = Op::kNbAttributes;
        mCollection.fields = mFields.data();
    }

    V3Plugin(V3Plugin const&) = delete;
    V3Plugin& operator=(V3Plugin const&) = delete;

    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new V3Plugin(mValues);
        }
        catch (...)
        {
            return nullptr;
        }
    }

    // IPluginV3OneCore
    nvinfer1::AsciiChar const* getPluginName() const noexcept override
    {
        return Op::kName;
    }

    nvinfer1::AsciiChar const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }

    nvinfer1::AsciiChar const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const*, int32_t,
        nvinfer1::DynamicPluginTensorDesc const*, int32_t) noexcept override
    {
        return 0;
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (nbOutputs != 1 || nbInputs != Op::kNbInputs)
        {
            return -1;
        }
        outputTypes[0] = Op::outputType(inputTypes);
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const*,
        int32_t, nvinfer1::DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        if (nbInputs != Op::kNbInputs || nbOutputs != 1 || !Op::outputShape(inputs, exprBuilder, mValues, outputs[0]))
        {
            logError(Op::kName, "unexpected inputs: see the op's README for the expected ranks");
            return -1;
        }
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != Op::kNbInputs || nbOutputs != 1 || pos < 0 || pos > nbInputs)
        {
            return false;
        }
        IOFormats io;
        for (int32_t i = 0; i <= pos; ++i)
        {
            io.type[i] = inOut[i].desc.type;
            io.format[i] = inOut[i].desc.format;
        }
        return Op::supportsFormat(pos, io);
    }

    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const*, int32_t,
        nvinfer1::DynamicPluginTensorDesc const*, int32_t) const noexcept override
    {
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const*, int32_t, nvinfer1::PluginTensorDesc const*,
        int32_t) noexcept override
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
            return -1;
        }
        return 0;
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override
    {
        return clone();
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        return &mCollection;
    }

private:
    Values mValues;
    std::array<nvinfer1::PluginField, Op::kNbAttributes> mFields{};
    nvinfer1::PluginFieldCollection mCollection{};
};

template <class Op>
class V3Creator final : public nvinfer1::IPluginCreatorV3One
{
public:
    V3Creator()
    {
        for (int32_t a = 0; a < Op::kNbAttributes; ++a)
        {
            mFields[a] = nvinfer1::PluginField(Op::kAttributeNames[a], nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        }
        mCollection.nbFields = Op::kNbAttributes;
        mCollection.fields = mFields.data();
    }

    nvinfer1::IPluginV3* createPlugin(nvinfer1::AsciiChar const*, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase) noexcept override
    {
        typename V3Plugin<Op>::Values values{};
        if (!parseAttributes<Op>(fc, values))
        {
            return nullptr;
        }
        try
        {
            return new V3Plugin<Op>(values);
        }
        catch (...)
        {
            return nullptr;
        }
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mCollection;
    }

    nvinfer1::AsciiChar const* getPluginName() const noexcept override
    {
        return Op::kName;
    }

    nvinfer1::AsciiChar const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }

    nvinfer1::AsciiChar const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

private:
    std::array<nvinfer1::PluginField, Op::kNbAttributes> mFields{};
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace plugin
} // namespace fbocc

#endif // FBOCC_TRT_PLUGIN_V3
