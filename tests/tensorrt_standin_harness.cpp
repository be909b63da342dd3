// TensorRT STAND-IN (test double, not TensorRT): drives libfbocc_plugins.so through the public TensorRT
// plugin interfaces (OSS headers of 8.6, 10.x or 11.x; the registry follows each version's interface: 10.10
// added getAllCreatorsRecursive, 11 removed the legacy IPluginCreator methods and versioned the loggers) the
// way TensorRT does -- static registration at dlopen, setLoggerFinder, getPluginCreators/getCreators,
// createPlugin from ONNX attributes, output shapes through an expression builder, format negotiation,
// serialization round trip -- and checks every answer strictly. Like libnvinfer it exports
// getPluginRegistry(), getInferLibVersion() and getLogger() (linked with -rdynamic), and it rejects duplicate
// registrations as TensorRT does.
// Usage: tensorrt_standin_harness <libfbocc_plugins.so>                prints "OK <n> checks" or FAIL
//        tensorrt_standin_harness --expect-refusal [--no-global-logger] <lib built for another major>
//            prints "REFUSED <n> checks" and each logged line as "LOGGED: ..." or FAIL
#include <NvInfer.h>

#define STANDIN_AT_LEAST(major, minor)                                                                       \
    (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

int gChecks = 0;

void check(bool ok, std::string const& what)
{
    ++gChecks;
    if (!ok)
    {
        std::printf("FAIL: %s\n", what.c_str());
        std::exit(1);
    }
}

[[noreturn]] void unexpected(char const* call)
{
    std::printf("FAIL: the plugin library called %s, which TensorRT plugins must not need here\n", call);
    std::exit(1);
}

// --- logger -----------------------------------------------------------------------------------------------
class StandinLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        ++calls;
        if (severity <= Severity::kERROR)
        {
            errors.emplace_back(msg);
        }
    }
    bool logged(char const* fragment) const
    {
        for (auto const& e : errors)
        {
            if (e.find(fragment) != std::string::npos)
            {
                return true;
            }
        }
        return false;
    }
    std::vector<std::string> errors;
    int calls = 0;
};

class StandinLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        ++calls;
        return &logger;
    }
    int calls = 0;
    StandinLogger logger;
};

// --- registry: strict, rejects duplicates -----------------------------------------------------------------
#if NV_TENSORRT_MAJOR >= 10
using Creator = IPluginCreatorInterface;
#else
using Creator = IPluginCreator;
#endif

char const* creatorName(Creator const* c)
{
#if NV_TENSORRT_MAJOR >= 10
    return static_cast<IPluginCreatorV3One const*>(c)->getPluginName();
#else
    return c->getPluginName();
#endif
}

class StandinRegistry : public IPluginRegistry
{
public:
    std::vector<Creator*> creators;
    int duplicateAttempts = 0;
    int registrations = 0; // every registerCreator/deregisterCreator call

    bool add(Creator& c, AsciiChar const* ns)
    {
        ++registrations;
        check(ns != nullptr && std::strcmp(ns, "") == 0, "creators register in the empty namespace");
        for (auto* existing : creators)
        {
            if (std::strcmp(creatorName(existing), creatorName(&c)) == 0)
            {
                ++duplicateAttempts;
                return false;
            }
        }
        creators.push_back(&c);
        return true;
    }
    bool remove(Creator const& c)
    {
        ++registrations;
        for (auto it = creators.begin(); it != creators.end(); ++it)
        {
            if (*it == &c)
            {
                creators.erase(it);
                return true;
            }
        }
        return false;
    }

#if NV_TENSORRT_MAJOR >= 10
    bool registerCreator(IPluginCreatorInterface& c, AsciiChar const* const ns) noexcept override
    {
        return add(c, ns);
    }
    bool deregisterCreator(IPluginCreatorInterface const& c) noexcept override
    {
        return remove(c);
    }
#if NV_TENSORRT_MAJOR < 11
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        unexpected("the deprecated IPluginRegistry::registerCreator(IPluginCreator&)");
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override
    {
        unexpected("the deprecated IPluginRegistry::deregisterCreator(IPluginCreator const&)");
    }
#endif
    IPluginCreatorInterface* const* getAllCreators(int32_t* const) const noexcept override
    {
        unexpected("IPluginRegistry::getAllCreators");
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        unexpected("IPluginRegistry::getCreator");
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        unexpected("IPluginRegistry::acquirePluginResource");
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        unexpected("IPluginRegistry::releasePluginResource");
    }
#if STANDIN_AT_LEAST(10, 10)
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const) noexcept override
    {
        unexpected("IPluginRegistry::getAllCreatorsRecursive");
    }
#endif
#else
    bool registerCreator(IPluginCreator& c, AsciiChar const* const ns) noexcept override
    {
        return add(c, ns);
    }
    bool deregisterCreator(IPluginCreator const& c) noexcept override
    {
        return remove(c);
    }
#endif
#if NV_TENSORRT_MAJOR < 11
    IPluginCreator* const* getPluginCreatorList(int32_t* const) const noexcept override
    {
        unexpected("IPluginRegistry::getPluginCreatorList");
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        unexpected("IPluginRegistry::getPluginCreator");
    }
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override
    {
        unexpected("IPluginRegistry::setErrorRecorder");
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        unexpected("IPluginRegistry::getErrorRecorder");
    }
    bool isParentSearchEnabled() const override
    {
        unexpected("IPluginRegistry::isParentSearchEnabled");
    }
    void setParentSearchEnabled(bool const) override
    {
        unexpected("IPluginRegistry::setParentSearchEnabled");
    }
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override
    {
        unexpected("IPluginRegistry::loadLibrary");
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override
    {
        unexpected("IPluginRegistry::deregisterLibrary");
    }
};

StandinRegistry gRegistry;
int gRegistryLookups = 0;
StandinLogger gGlobalLogger; // what TensorRT's getLogger() returns
bool gHasGlobalLogger = true;

// --- expression builder over constants ----------------------------------------------------------------------
#if NV_TENSORRT_MAJOR >= 10
using DimValue = int64_t;
#else
using DimValue = int32_t;
#endif

class ConstantImpl : public apiv::VDimensionExpr
{
public:
    explicit ConstantImpl(DimValue v)
        : value(v)
    {
    }
    bool isConstant() const override
    {
        return true;
    }
    DimValue getConstantValue() const override
    {
        return value;
    }
#if NV_TENSORRT_MAJOR >= 10
    bool isSizeTensor() const override
    {
        return false;
    }
#endif
    DimValue value;
};

class Constant : public IDimensionExpr
{
public:
    explicit Constant(DimValue v)
        : impl(v)
    {
        mImpl = &impl;
    }
    ~Constant() noexcept override = default;
    ConstantImpl impl;
};

class BuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(DimValue value) override
    {
        made.push_back(std::make_unique<Constant>(value));
        return made.back().get();
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        check(op == DimensionOperation::kPROD, "only products of dimensions are expected");
        return constant(a.getConstantValue() * b.getConstantValue());
    }
#if NV_TENSORRT_MAJOR >= 10
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        unexpected("IExprBuilder::declareSizeTensor");
    }
#endif
    std::vector<std::unique_ptr<Constant>> made;
};

class Builder : public IExprBuilder
{
public:
    Builder()
    {
        mImpl = &impl;
    }
    ~Builder() noexcept override = default;
    DimsExprs dims(std::vector<DimValue> const& values)
    {
        DimsExprs d{};
        d.nbDims = static_cast<int32_t>(values.size());
        for (size_t i = 0; i < values.size(); ++i)
        {
            d.d[i] = impl.constant(values[i]);
        }
        return d;
    }
    BuilderImpl impl;
};

std::vector<DimValue> values(DimsExprs const& d)
{
    std::vector<DimValue> v;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        check(d.d[i] != nullptr && d.d[i]->isConstant(), "output dimensions are expressions TensorRT can evaluate");
        v.push_back(d.d[i]->getConstantValue());
    }
    return v;
}

// --- one op -------------------------------------------------------------------------------------------------
struct Case
{
    char const* name;
    std::vector<std::pair<char const*, int32_t>> attributes; // as the ONNX parser passes them (kINT32)
    std::vector<std::vector<DimValue>> inputShapes;
    std::vector<DimValue> outputShape;
    std::vector<DataType> fp32Types;                      // inputs then output
    std::vector<std::vector<DataType>> alsoSupported;     // mixed-precision combinations that must pass
    std::vector<std::vector<DataType>> rejected;          // combinations that must fail
};

struct Field
{
    std::vector<PluginField> fields;
    std::vector<int32_t> storage;
    PluginFieldCollection fc{};
};

std::unique_ptr<Field> fields(Case const& c)
{
    auto f = std::make_unique<Field>();
    f->storage.reserve(c.attributes.size());
    for (auto const& [name, value] : c.attributes)
    {
        f->storage.push_back(value);
        f->fields.emplace_back(name, &f->storage.back(), PluginFieldType::kINT32, 1);
    }
    f->fc.nbFields = static_cast<int32_t>(f->fields.size());
    f->fc.fields = f->fields.data();
    return f;
}

#if NV_TENSORRT_MAJOR >= 10
using Plugin = IPluginV3;
IPluginV3OneBuild* build(Plugin* p)
{
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
Plugin* create(Creator* creator, PluginFieldCollection const* fc, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    return static_cast<IPluginCreatorV3One*>(creator)->createPlugin("node", fc, phase);
}
std::vector<DimValue> shapeOf(Plugin* p, Case const& c)
{
    Builder b;
    std::vector<DimsExprs> in;
    for (auto const& s : c.inputShapes)
    {
        in.push_back(b.dims(s));
    }
    DimsExprs out{};
    check(build(p)->getOutputShapes(in.data(), static_cast<int32_t>(in.size()), nullptr, 0, &out, 1, b) == 0,
        std::string(c.name) + ": getOutputShapes succeeds");
    return values(out);
}
bool supports(Plugin* p, std::vector<DataType> const& types, TensorFormat format = TensorFormat::kLINEAR)
{
    std::vector<DynamicPluginTensorDesc> io(types.size());
    for (size_t i = 0; i < types.size(); ++i)
    {
        io[i].desc.type = types[i];
        io[i].desc.format = format;
    }
    int32_t const nbIn = static_cast<int32_t>(types.size()) - 1;
    for (int32_t pos = 0; pos <= nbIn; ++pos)
    {
        if (!build(p)->supportsFormatCombination(pos, io.data(), nbIn, 1))
        {
            return false;
        }
    }
    return true;
}
DataType outputType(Plugin* p, std::vector<DataType> const& types)
{
    DataType out{};
    check(build(p)->getOutputDataTypes(&out, 1, types.data(), static_cast<int32_t>(types.size()) - 1) == 0,
        "getOutputDataTypes succeeds");
    return out;
}
Plugin* roundTrip(Creator* creator, Plugin* p)
{
    auto* runtime = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    return create(creator, runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
}
void release(Plugin* p)
{
    delete p;
}
#else
using Plugin = IPluginV2DynamicExt;
Plugin* create(Creator* creator, PluginFieldCollection const* fc)
{
    return static_cast<IPluginV2DynamicExt*>(creator->createPlugin("node", fc));
}
std::vector<DimValue> shapeOf(Plugin* p, Case const& c)
{
    Builder b;
    std::vector<DimsExprs> in;
    for (auto const& s : c.inputShapes)
    {
        in.push_back(b.dims(s));
    }
    return values(p->getOutputDimensions(0, in.data(), static_cast<int32_t>(in.size()), b));
}
bool supports(Plugin* p, std::vector<DataType> const& types, TensorFormat format = TensorFormat::kLINEAR)
{
    std::vector<PluginTensorDesc> io(types.size());
    for (size_t i = 0; i < types.size(); ++i)
    {
        io[i].type = types[i];
        io[i].format = format;
    }
    int32_t const nbIn = static_cast<int32_t>(types.size()) - 1;
    for (int32_t pos = 0; pos <= nbIn; ++pos)
    {
        if (!p->supportsFormatCombination(pos, io.data(), nbIn, 1))
        {
            return false;
        }
    }
    return true;
}
DataType outputType(Plugin* p, std::vector<DataType> const& types)
{
    return p->getOutputDataType(0, types.data(), static_cast<int32_t>(types.size()) - 1);
}
Plugin* roundTrip(Creator* creator, Plugin* p)
{
    std::vector<char> blob(p->getSerializationSize());
    p->serialize(blob.data());
    return static_cast<IPluginV2DynamicExt*>(creator->deserializePlugin("node", blob.data(), blob.size()));
}
void release(Plugin* p)
{
    p->destroy();
}
#endif

Creator* findCreator(Creator* const* list, int32_t n, char const* name)
{
    for (int32_t i = 0; i < n; ++i)
    {
        if (std::strcmp(creatorName(list[i]), name) == 0)
        {
            return list[i];
        }
    }
    return nullptr;
}

void runCase(Creator* creator, Case const& c)
{
    std::string const op = c.name;
    auto f = fields(c);
    Plugin* p = create(creator, &f->fc);
    check(p != nullptr, op + ": createPlugin from the ONNX attributes");
    check(shapeOf(p, c) == c.outputShape, op + ": output shape");
    check(supports(p, c.fp32Types), op + ": all-fp32 (int32 indices) is supported");
    check(outputType(p, c.fp32Types) == DataType::kFLOAT, op + ": fp32 output type");
    for (auto const& types : c.alsoSupported)
    {
        check(supports(p, types), op + ": a mixed-precision combination is supported");
        check(outputType(p, types) == types.back(), op + ": output type follows the features");
    }
    for (auto const& types : c.rejected)
    {
        check(!supports(p, types), op + ": an invalid type combination is rejected");
    }
    check(!supports(p, c.fp32Types, TensorFormat::kCHW32), op + ": non-linear formats are rejected");
    Plugin* copy = roundTrip(creator, p);
    check(copy != nullptr && shapeOf(copy, c) == c.outputShape, op + ": serialization round trip");
    release(copy);
    release(p);
}

} // namespace

// What libnvinfer exports as plain C functions.
extern "C" IPluginRegistry* getPluginRegistry() noexcept
{
    ++gRegistryLookups;
    return &gRegistry;
}

extern "C" int32_t getInferLibVersion() noexcept
{
    return static_cast<int32_t>(NV_TENSORRT_VERSION);
}

extern "C" ILogger* getLogger() noexcept
{
    return gHasGlobalLogger ? &gGlobalLogger : nullptr;
}

namespace
{

//! A library built for another TensorRT major: nothing registered, no TensorRT method called but the
//! loggers' log(), one refusal line naming both versions, and an empty creator list.
int expectRefusal(char const* path)
{
    void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    check(lib != nullptr, std::string("dlopen: ") + (lib ? "" : dlerror()));
    check(gRegistryLookups == 0 && gRegistry.registrations == 0, "the refused library never touched the registry");
    check(gGlobalLogger.calls == (gHasGlobalLogger ? 1 : 0),
        "loading logs exactly one line through TensorRT's logger when it has one");
    auto setLoggerFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(lib, "setLoggerFinder"));
    check(setLoggerFinder != nullptr, "setLoggerFinder is exported");
    StandinLoggerFinder finder;
    setLoggerFinder(&finder);
    check(finder.logger.calls == (gHasGlobalLogger ? 0 : 1),
        "the finder's logger gets the refusal only when TensorRT's logger could not take it at load");
    auto* entry = dlsym(lib, "getCreators");
    if (entry == nullptr)
    {
        entry = dlsym(lib, "getPluginCreators");
    }
    check(entry != nullptr, "a creator list is exported");
    int32_t n = -1;
    reinterpret_cast<void* const* (*) (int32_t&)>(entry)(n);
    check(n == 0, "the creator list of a refused library is empty");
    check(gRegistryLookups == 0 && gRegistry.registrations == 0, "nothing was registered or deregistered");
    for (auto const* logger : {&gGlobalLogger, &finder.logger})
    {
        for (auto const& line : logger->errors)
        {
            std::printf("LOGGED: %s\n", line.c_str());
        }
    }
    std::printf("REFUSED %d checks (TensorRT %d.%d headers)\n", gChecks, NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<std::string> args(argv + 1, argv + argc);
    bool refusal = false;
    while (!args.empty() && args.front().rfind("--", 0) == 0)
    {
        refusal = refusal || args.front() == "--expect-refusal";
        gHasGlobalLogger = gHasGlobalLogger && args.front() != "--no-global-logger";
        check(args.front() == "--expect-refusal" || args.front() == "--no-global-logger",
            "options: --expect-refusal, --no-global-logger");
        args.erase(args.begin());
    }
    check(args.size() == 1, "usage: tensorrt_standin_harness [--expect-refusal [--no-global-logger]] <library>");
    if (refusal)
    {
        return expectRefusal(args[0].c_str());
    }
    void* lib = dlopen(args[0].c_str(), RTLD_NOW | RTLD_LOCAL);
    check(lib != nullptr, std::string("dlopen: ") + (lib ? "" : dlerror()));
    check(gGlobalLogger.calls == 0, "a library built for this TensorRT loads without logging");
    check(gRegistry.creators.size() == 3, "loading the library registers its 3 creators statically");
    for (auto* c : gRegistry.creators)
    {
#if NV_TENSORRT_MAJOR >= 10
        auto* v3 = static_cast<IPluginCreatorV3One*>(c);
        check(std::string(c->getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE", "creators are IPluginCreatorV3One");
        check(std::strcmp(v3->getPluginVersion(), "1") == 0 && std::strcmp(v3->getPluginNamespace(), "") == 0,
            "plugin version \"1\", namespace \"\"");
#else
        check(std::strcmp(c->getPluginVersion(), "1") == 0 && std::strcmp(c->getPluginNamespace(), "") == 0,
            "plugin version \"1\", namespace \"\"");
#endif
    }

    auto setLoggerFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(lib, "setLoggerFinder"));
    check(setLoggerFinder != nullptr, "setLoggerFinder is exported");
    StandinLoggerFinder finder;
    setLoggerFinder(&finder);

#if NV_TENSORRT_MAJOR >= 10
    char const* entry = "getCreators";
    check(dlsym(lib, "getPluginCreators") == nullptr, "a TensorRT 10 build exports no IPluginV2 creators");
#else
    char const* entry = "getPluginCreators";
#endif
    auto getCreators = reinterpret_cast<Creator* const* (*) (int32_t&)>(dlsym(lib, entry));
    check(getCreators != nullptr, std::string(entry) + " is exported");
    int32_t n = 0;
    Creator* const* list = getCreators(n);
    check(n == 3 && list != nullptr, std::string(entry) + " lists 3 creators");
    check(gRegistry.creators.empty(), std::string(entry) + " hands the static registrations over to the caller");
    for (int32_t i = 0; i < n; ++i)
    {
        check(gRegistry.registerCreator(*list[i], ""), "the caller (loadLibrary) registers each creator once");
    }
    check(gRegistry.duplicateAttempts == 0, "no creator was registered twice");

    DataType const F = DataType::kFLOAT, H = DataType::kHALF, I = DataType::kINT32;
    std::vector<Case> cases = {
        {"GridSampler3DTRT", {{"interpolation_mode", 0}, {"padding_mode", 0}, {"align_corners", 1}},
            {{1, 1280, 8, 100, 100}, {1, 3, 8, 100, 100}}, {1, 1280, 8, 100, 100}, {F, F, F},
            {{H, H, H}, {H, F, H}}, {{F, H, F}, {H, H, F}, {I, I, I}}},
        {"BEVPoolV2TRT", {{"out_height", 100}, {"out_width", 100}},
            {{1, 6, 80, 16, 44}, {1, 6, 16, 44, 80}, {200000}, {200000}, {200000}, {70000}, {70000}},
            {1, 8, 100, 100, 80}, {F, F, I, I, I, I, I, F},
            {{H, H, I, I, I, I, I, H}
#if NV_TENSORRT_MAJOR >= 10
                ,
                {F, F, DataType::kINT64, DataType::kINT64, DataType::kINT64, DataType::kINT64, DataType::kINT64, F}
#endif
            },
            {{F, H, I, I, I, I, I, F}, {F, F, I, I, F, I, I, F}, {F, F, I, I, I, I, I, H}}},
        {"MultiScaleDeformableAttnTRT", {},
            {{6, 704, 8, 10}, {1, 2}, {1}, {6, 4000, 8, 1, 8, 2}, {6, 4000, 8, 1, 8}}, {6, 4000, 80},
            {F, I, I, F, F, F}, {{H, I, I, H, H, H}, {H, I, I, F, F, H}}, {{F, F, I, F, F, F}, {F, I, I, F, H, F}}},
    };
    for (auto const& c : cases)
    {
        Creator* creator = findCreator(list, n, c.name);
        check(creator != nullptr, std::string("a creator named ") + c.name);
        runCase(creator, c);
    }

    // BEVPool's out_depth attribute (absent in the public ONNX files) changes the voxel layers.
    Case deeper = cases[1];
    deeper.attributes.emplace_back("out_depth", 4);
    deeper.outputShape = {1, 4, 100, 100, 80};
    runCase(findCreator(list, n, "BEVPoolV2TRT"), deeper);

    // User errors: one logged message each, and no plugin.
    Case missing = cases[1];
    missing.attributes = {{"out_width", 100}};
    auto f = fields(missing);
    check(create(findCreator(list, n, "BEVPoolV2TRT"), &f->fc) == nullptr, "BEVPool without out_height is refused");
    check(finder.logger.logged("BEVPoolV2TRT: required attribute out_height is missing"),
        "the refusal names the missing attribute");
    Case invalid = cases[0];
    invalid.attributes = {{"padding_mode", 5}};
    auto g = fields(invalid);
    check(create(findCreator(list, n, "GridSampler3DTRT"), &g->fc) == nullptr, "padding_mode 5 is refused");
    check(finder.logger.logged("padding_mode must be 0 (zeros), 1 (border) or 2 (reflection)"),
        "the refusal names the allowed padding modes");

    std::printf("OK %d checks (TensorRT %d.%d headers)\n", gChecks, NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR);
    return 0;
}
