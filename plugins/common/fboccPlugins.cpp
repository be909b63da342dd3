// The one registration file: every creator of the library, registered statically (trtexec --plugins /
// --staticPlugins) and listed by the exported getCreators (TensorRT >= 10) / getPluginCreators (8.6) for
// --dynamicPlugins and IPluginRegistry::loadLibrary, which register the creators themselves.
#include "../bevPoolV2/bevPoolV2Plugin.h"
#include "../gridSampler3D/gridSampler3DPlugin.h"
#include "../multiScaleDeformableAttn/multiScaleDeformableAttnPlugin.h"
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
        fbocc::plugin::gLogger.store(finder == nullptr ? nullptr : finder->findLogger());
    }

#if FBOCC_TRT_PLUGIN_V3
    FBOCC_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
#else
    FBOCC_API nvinfer1::IPluginCreator* const* getPluginCreators(int32_t& nbCreators)
#endif
    {
        fbocc::plugin::gStaticRegistration.release();
        nbCreators = fbocc::plugin::kNbCreators;
        return fbocc::plugin::gCreators;
    }
}
