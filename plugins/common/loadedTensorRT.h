// Which TensorRT this library is loaded into, and what is safe to call in it.
//
// The plugin interfaces (IPluginRegistry, ILogger, ILoggerFinder) have other vtable layouts in each TensorRT
// major (11 removed the legacy registry methods and made the loggers versioned interfaces), so a library
// built with one major's headers must not call a single virtual method of another major's objects. The
// check reads libnvinfer's getInferLibVersion(), a plain C function with the same ABI in every major.
#pragma once

#include <NvInfer.h>

#include <cstddef>
#include <cstdint>

namespace fbocc
{
namespace plugin
{

//! The TensorRT of the loading process; found is false when it exports no getInferLibVersion (not TensorRT).
struct LoadedTensorRT
{
    bool found;
    int32_t major;
    int32_t minor;
    int32_t patch;
};

//! Reads the loaded TensorRT's version (no virtual call).
LoadedTensorRT loadedTensorRT() noexcept;

//! True when the loaded TensorRT has the major of the headers this library was compiled with.
bool interfacesMatch(LoadedTensorRT const& trt) noexcept;

//! The one-line refusal: both versions and the fix.
void refusalMessage(LoadedTensorRT const& trt, char* text, std::size_t size) noexcept;

//! The logger behind an ILoggerFinder handed over by a TensorRT of `major`, called with that major's layout;
//! nullptr when the layout of that major is not known to this library.
void* findLoggerOf(void* finder, int32_t major) noexcept;

//! Logs an error through a logger of a TensorRT of `major`, with that major's layout; false when unknown.
bool logErrorThrough(void* logger, int32_t major, char const* text) noexcept;

//! TensorRT's process-wide logger (libnvinfer's getLogger(), a C function), or nullptr.
void* globalLogger() noexcept;

} // namespace plugin
} // namespace fbocc
