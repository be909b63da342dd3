// The one registration file: every creator of the library, registered statically (trtexec --plugins /
// --staticPlugins) and listed by the exported getCreators (TensorRT >= 10) / getPluginCreators (8.6) for
// --dynamicPlugins and IPluginRegistry::loadLibrary, which register the creators themselves.
// Every entry point first checks that the loading TensorRT has the major of our headers (loadedTensorRT.h):
// in another major not one virtual method of TensorRT's objects is called, and the refusal is logged once.
#include "../bevPoolV2/bevPoolV2Plugin.h"
#include "../gridSampler3D/gridSampler3DPlugin.h"
#include "../multiScaleDeformableAttn/multiScaleDeformableAttnPlugin.h"
#include "loadedTensorRT.h"
#include "pluginLegacy.h"
#include "pluginV3.h"

#include <atomic>
#include <cstdio>

namespace fbocc
{
namespace plugin
{
namespace
{

std::atomic<nvinfer1::ILogger*> gLogger{nullptr};
// How the refusal (another TensorRT major) was reported: not yet, on stderr only, or through TensorRT's logger.
enum Reported : int32_t
{
    kNotYet,
    kOnStderr,
    kThroughLogger
};
std::atomic<int32_t> gRefusal{kNotYet};

//! One line through TensorRT's logger (its own major's layout) when one is reachable, else on stderr.
void reportRefusal(LoadedTensorRT const& trt, void* logger) noexcept
{
    char text[640];
    refusalMessage(trt, text, sizeof(text));
    if (trt.found && logErrorThrough(logger, trt.major, text))
    {
        gRefusal.store(kThroughLogger);
        return;
    }
    std::fprintf(stderr, "%s\n", text);
    gRefusal.store(kOnStderr);
}

#if FBOCC_TRT_PLUGIN_V3
using CreatorBase = nvinfer1::IPluginCreatorInterface;
template <class Op>
using Creator = V3Creator<Op>;
#else
using CreatorBase = nvinfer1::IPluginCreator;
template <class Op>
using Creator = LegacyCreator<Op>;
#endif

Creator<GridSampler3DOp> gGridSampler3D;
Creator<BevPoolV2Op> gBevPoolV2;
Creator<MultiScaleDeformableAttnOp> gMultiScaleDeformableAttn;
constexpr int32_t kNbCreators = 3;
CreatorBase* gCreators[kNbCreators] = {&gGridSampler3D, &gBevPoolV2, &gMultiScaleDeformableAttn};

//! Registers every creator when the library is loaded; a later loadLibrary (getCreators) takes them over.
class StaticRegistration
{
public:
    StaticRegistration()
    {
        LoadedTensorRT const trt = loadedTensorRT();
        if (!interfacesMatch(trt))
        {
            // Before any registry call: TensorRT's process-wide logger is the only one reachable at load time.
            reportRefusal(trt, trt.found ? globalLogger() : nullptr);
            return;
        }
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        for (int32_t i = 0; registry != nullptr && i < kNbCreators; ++i)
        {
            mRegistered[i] = registry->registerCreator(*gCreators[i], kPluginNamespace);
        }
    }

    //! Deregisters what the constructor registered, so that the caller of getCreators can register the
    //! same creators without a duplicate-name error.
    void release() noexcept
    {
        if (gRefusal.load() != kNotYet)
        {
            return; // nothing was registered
        }
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        for (int32_t i = 0; registry != nullptr && i < kNbCreators; ++i)
        {
            if (mRegistered[i].exchange(false))
            {
                registry->deregisterCreator(*gCreators[i]);
            }
        }
    }

private:
    std::atomic<bool> mRegistered[kNbCreators]{};
};

StaticRegistration gStaticRegistration;

} // namespace

void logError(char const* op, char const* message) noexcept
{
    char text[512];
    std::snprintf(text, sizeof(text), "fbocc plugin %s: %s", op, message);
    nvinfer1::ILogger* logger = gLogger.load();
    if (logger != nullptr)
    {
        logger->log(nvinfer1::ILogger::Severity::kERROR, text);
    }
    else
    {
        std::fprintf(stderr, "%s\n", text);
    }
}

} // namespace plugin
} // namespace fbocc

extern "C"
{
    FBOCC_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
    {
        using namespace fbocc::plugin;
        LoadedTensorRT const trt = loadedTensorRT();
        if (!interfacesMatch(trt))
        {
            // The finder has the layout of the loading major. Report here only what went to stderr alone.
            void* logger = trt.found ? findLoggerOf(finder, trt.major) : nullptr;
            if (gRefusal.load() != kThroughLogger && logger != nullptr)
            {
                reportRefusal(trt, logger);
            }
            return;
        }
        gLogger.store(finder == nullptr ? nullptr : finder->findLogger());
    }

#if FBOCC_TRT_PLUGIN_V3
    FBOCC_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
#else
    FBOCC_API nvinfer1::IPluginCreator* const* getPluginCreators(int32_t& nbCreators)
#endif
    {
        fbocc::plugin::gStaticRegistration.release();
        // Refused (another major): no creator, so the caller's registry is never handed objects it cannot use.
        nbCreators = fbocc::plugin::gRefusal.load() == fbocc::plugin::kNotYet ? fbocc::plugin::kNbCreators : 0;
        return fbocc::plugin::gCreators;
    }
}
