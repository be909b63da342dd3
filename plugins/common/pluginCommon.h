// What every op's TensorRT glue shares: type mapping, attribute parsing, logging. TensorRT 8.6 and >= 10.
#pragma once

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "kernelCommon.h"

#if NV_TENSORRT_MAJOR >= 10
#define FBOCC_TRT_PLUGIN_V3 1 // IPluginV3 (64-bit Dims, int64 index inputs)
#else
#define FBOCC_TRT_PLUGIN_V3 0 // IPluginV2DynamicExt (32-bit Dims)
#endif

namespace fbocc
{
namespace plugin
{

constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";
constexpr int32_t kMaxIO = 16;

//! Logs through the logger TensorRT handed over by setLoggerFinder, else to stderr.
void logError(char const* op, char const* message) noexcept;

inline bool isFeatureType(nvinfer1::DataType t)
{
    return t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF;
}

inline bool isIndexType(nvinfer1::DataType t)
{
#if FBOCC_TRT_PLUGIN_V3
    return t == nvinfer1::DataType::kINT32 || t == nvinfer1::DataType::kINT64;
#else
    return t == nvinfer1::DataType::kINT32;
#endif
}

inline DType toDType(nvinfer1::DataType t)
{
    return t == nvinfer1::DataType::kHALF ? DType::kFLOAT16 : DType::kFLOAT32;
}

inline IndexType toIndexType(nvinfer1::DataType t)
{
#if FBOCC_TRT_PLUGIN_V3
    return t == nvinfer1::DataType::kINT64 ? IndexType::kINT64 : IndexType::kINT32;
#else
    (void) t;
    return IndexType::kINT32;
#endif
}

inline int64_t volume(nvinfer1::Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

//! The int attributes of an op, in the order of Op::kAttributeNames.
template <int N>
using AttributeValues = std::array<int32_t, N>;

//! Reads the op's int attributes from a field collection (unknown fields are ignored, as the ONNX parser
//! may pass extras); missing ones keep their defaults. Returns false (and logs) when a required one is
//! missing or a value has the wrong type.
template <class Op>
bool parseAttributes(nvinfer1::PluginFieldCollection const* fc, AttributeValues<Op::kNbAttributes>& values) noexcept
{
    std::array<bool, Op::kNbAttributes> seen{};
    for (int32_t a = 0; a < Op::kNbAttributes; ++a)
    {
        values[a] = Op::kAttributeDefaults[a];
    }
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& f = fc->fields[i];
        for (int32_t a = 0; a < Op::kNbAttributes; ++a)
        {
            if (f.name == nullptr || std::strcmp(f.name, Op::kAttributeNames[a]) != 0)
            {
                continue;
            }
            if (f.data == nullptr || f.length < 1)
            {
                logError(Op::kName, "an attribute has no value");
                return false;
            }
            if (f.type == nvinfer1::PluginFieldType::kINT32)
            {
                values[a] = *static_cast<int32_t const*>(f.data);
            }
#if FBOCC_TRT_PLUGIN_V3
            else if (f.type == nvinfer1::PluginFieldType::kINT64)
            {
                values[a] = static_cast<int32_t>(*static_cast<int64_t const*>(f.data));
            }
#endif
            else
            {
                logError(Op::kName, "an attribute is not an int");
                return false;
            }
            seen[a] = true;
        }
    }
    for (int32_t a = 0; a < Op::kNbAttributes; ++a)
    {
        if (Op::kAttributeRequired[a] && !seen[a])
        {
            char message[128];
            std::snprintf(message, sizeof(message), "required attribute %s is missing", Op::kAttributeNames[a]);
            logError(Op::kName, message);
            return false;
        }
    }
    char const* problem = Op::validate(values);
    if (problem != nullptr)
    {
        logError(Op::kName, problem);
        return false;
    }
    return true;
}

//! Types and formats of the tensors at positions 0..pos of a supportsFormatCombination query.
struct IOFormats
{
    std::array<nvinfer1::DataType, kMaxIO> type{};
    std::array<nvinfer1::TensorFormat, kMaxIO> format{};
};

} // namespace plugin
} // namespace fbocc
