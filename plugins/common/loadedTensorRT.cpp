// The version check behind the ABI guard (see loadedTensorRT.h) and the logger calls it may make.
#include "loadedTensorRT.h"

#include <cstdio>

// Weak references: resolved in this library's own lookup scope (the process's global scope, then its
// NEEDED libnvinfer when TENSORRT_LIB_DIR linked one) -- the scope getPluginRegistry() is resolved in,
// so the version read is that of the TensorRT whose registry would be called. Absent -> null, no load error.
#pragma weak getInferLibVersion
#pragma weak getLogger

namespace fbocc
{
namespace plugin
{
constexpr int32_t kErrorSeverity = 1; // ILogger::Severity::kERROR in every major

// The logger layouts of the majors this library knows, written out (Itanium C++ ABI, a virtual
// destructor takes two slots). Never used for the major of the headers: those types are used directly.
// External linkage on purpose: in an anonymous namespace GCC sees that nothing implements them and
// replaces the calls with __cxa_pure_virtual.
namespace foreign_abi
{
// TensorRT 8.x-10.x: ILogger {log, ~} and ILoggerFinder {findLogger, ~}.
class PlainLogger
{
public:
    virtual void log(int32_t severity, char const* msg) noexcept = 0;

protected:
    virtual ~PlainLogger() = default;
};
class PlainLoggerFinder
{
public:
    virtual PlainLogger* findLogger() = 0;

protected:
    virtual ~PlainLoggerFinder() = default;
};

// TensorRT 11.x: both derive from IVersionedInterface {getAPILanguage, getInterfaceInfo, ~}.
struct InterfaceInfo
{
    char const* kind;
    int32_t major;
    int32_t minor;
};
class Versioned
{
public:
    virtual int32_t getAPILanguage() const noexcept = 0;
    virtual InterfaceInfo getInterfaceInfo() const noexcept = 0;

protected:
    virtual ~Versioned() noexcept = default;
};
class VersionedLogger : public Versioned
{
public:
    virtual void log(int32_t severity, char const* msg) noexcept = 0;
};
class VersionedLoggerFinder : public Versioned
{
public:
    virtual VersionedLogger* findLogger() = 0;
};
} // namespace foreign_abi

namespace
{

enum class Layout
{
    kUnknown,
    kPlain,
    kVersioned
};

Layout layoutOf(int32_t major) noexcept
{
    if (major >= 8 && major <= 10)
    {
        return Layout::kPlain;
    }
    return major == 11 ? Layout::kVersioned : Layout::kUnknown;
}

} // namespace

LoadedTensorRT loadedTensorRT() noexcept
{
    if (&getInferLibVersion == nullptr)
    {
        return {false, 0, 0, 0};
    }
    int32_t const v = getInferLibVersion();
    // 8.x and older: MAJOR*1000 + MINOR*100 + PATCH; 10.x and newer: MAJOR*10000 + MINOR*100 + PATCH.
    if (v >= 10000)
    {
        return {true, v / 10000, (v / 100) % 100, v % 100};
    }
    return {true, v / 1000, (v / 100) % 10, v % 100};
}

bool interfacesMatch(LoadedTensorRT const& trt) noexcept
{
    return trt.found && trt.major == NV_TENSORRT_MAJOR;
}

void refusalMessage(LoadedTensorRT const& trt, char* text, std::size_t size) noexcept
{
    if (!trt.found)
    {
        std::snprintf(text, size,
            "fbocc plugins: built with TensorRT %d.%d.%d headers, but the loading process has no TensorRT "
            "(no getInferLibVersion): plugins not registered; load the library through TensorRT %d "
            "(trtexec --staticPlugins/--dynamicPlugins, IPluginRegistry::loadLibrary)",
            NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH, NV_TENSORRT_MAJOR);
        return;
    }
    std::snprintf(text, size,
        "fbocc plugins: built with TensorRT %d.%d.%d headers, loaded into TensorRT %d.%d.%d: plugins not "
        "registered (the plugin interfaces of TensorRT %d and %d differ); rebuild for this TensorRT: "
        "fbocc cross-build --profile <a TensorRT %d profile> (fbocc doctor --target NAME names it)",
        NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH, trt.major, trt.minor, trt.patch,
        NV_TENSORRT_MAJOR, trt.major, trt.major);
}

void* findLoggerOf(void* finder, int32_t major) noexcept
{
    if (finder == nullptr)
    {
        return nullptr;
    }
    switch (layoutOf(major))
    {
    case Layout::kPlain: return static_cast<foreign_abi::PlainLoggerFinder*>(finder)->findLogger();
    case Layout::kVersioned: return static_cast<foreign_abi::VersionedLoggerFinder*>(finder)->findLogger();
    case Layout::kUnknown: break;
    }
    return nullptr;
}

bool logErrorThrough(void* logger, int32_t major, char const* text) noexcept
{
    if (logger == nullptr)
    {
        return false;
    }
    switch (layoutOf(major))
    {
    case Layout::kPlain: static_cast<foreign_abi::PlainLogger*>(logger)->log(kErrorSeverity, text); return true;
    case Layout::kVersioned: static_cast<foreign_abi::VersionedLogger*>(logger)->log(kErrorSeverity, text); return true;
    case Layout::kUnknown: break;
    }
    return false;
}

void* globalLogger() noexcept
{
    return &getLogger == nullptr ? nullptr : static_cast<void*>(getLogger());
}

} // namespace plugin
} // namespace fbocc
