#!/usr/bin/env python3
"""TEST DOUBLE of NVIDIA's trtexec -- not TensorRT. It exists so that `fbocc remote-bench` can be tested
end to end against a real sshd on loopback, where no TensorRT exists.

It is strict on purpose: every option must be one that trtexec of the emulated version parses, with a
well-formed value, else it fails as trtexec does (`Unknown option: --X`, `&&&& FAILED`); `--loadInputs`
must name EVERY network input of the samples manifest it finds above the input files, each file with the
manifest's byte size; the plugin library must exist and mention each custom op the ONNX uses (a real
library carries its creators' names); shapes must fall inside the profile the "engine" was built with. It
sleeps through warm-up and the timed run (`--duration` / `--iterations`), measures those sleeps, and prints
the performance-summary format of the emulated TensorRT version (env FBOCC_DOUBLE_TRT_VERSION, default
8.6.13) computed from them.

Option sets and defaults follow NVIDIA/TensorRT `samples/common/sampleOptions.cpp` (+ `sampleOptions.h`
for defaults, `samples/trtexec/trtexec.cpp` for unknown options) of each release branch:
- every version: an option left over after parsing is `Unknown option: --X` and a failed run
  (trtexec.cpp on release/8.6, release/10.8, release/11.0). `--staticPlugins` exists from 8.6.0; `--plugins`
  is deprecated with a warning from 8.6 through 11.1 (release/8.6 ... release/11.1 SystemOptions::parse).
- 8.6 (release/8.6): `--fp16 --int8 --best --fp8 --calib`; no `--stronglyTyped`, `--bf16` or `--int4`;
  `--workspace`, `--explicitBatch`, `--buildOnly` parse with a deprecation warning, `--maxBatch` parses.
- 10.x (release/10.0 ... 10.16): `--workspace --explicitBatch --buildOnly --maxBatch` removed; `--bf16`,
  `--stronglyTyped` (default off) added; `--int4` from 10.1; `--stronglyTyped` switches precision flags off
  with a warning (10.0) and refuses `--best` (10.8: "--best and --stronglyTyped cannot be both set").
- 11.0 (release/11.0): `--fp16 --int8 --best --bf16 --fp8 --int4 --calib` removed (unknown options);
  `--stronglyTyped` a no-op (always strongly typed); defaults: CUDA graph and spin wait on, data transfers
  off, separate profile run always (sampleOptions.h InferenceOptions); `--noDataTransfers --useSpinWait
  --useCudaGraph --separateProfileRun` parse with a deprecation warning; `--includeDataTransfers
  --noSpinWait --noCudaGraph` switch the defaults off.
- 11.1 (release/11.1): adds `--loadRefOutputs --refPair --accuracyThreshold`.
- 8.6/10.x defaults (sampleOptions.h): data transfers on, spin wait, CUDA graph, separate profiling off.
The log prints `Precision:` and the `=== Inference Options ===` switches as operator<< of each release
does, so a test can read what the run really did. The precision of an engine is what TensorRT would
run: the graph's own types when strongly typed (11.x always), else the builder flags.

The "engine" it writes is a small JSON file that says it comes from this double.
"""

import hashlib
import json
import os
import random
import re
import sys
import time
from datetime import datetime

DOUBLE_MARK = "FBOCC TEST DOUBLE of trtexec (not TensorRT)"
CUSTOM_OPS = ("GridSampler3DTRT", "BEVPoolV2TRT", "MultiScaleDeformableAttnTRT")
COMMON_VALUE = {
    "onnx", "saveEngine", "loadEngine", "plugins", "staticPlugins", "dynamicPlugins", "setPluginsToSerialize",
    "minShapes", "optShapes", "maxShapes", "shapes", "timingCacheFile", "memPoolSize", "profilingVerbosity",
    "loadInputs", "iterations", "duration", "warmUp", "exportTimes", "exportProfile", "exportLayerInfo",
}
COMMON_BOOL = {"skipInference", "verbose", "help", "dumpProfile"}
REPEATABLE = {"plugins", "staticPlugins", "dynamicPlugins", "setPluginsToSerialize"}
SHAPE_SPEC = re.compile(r"^(?:'[^']+'|[^,:']+):(?:\d+(?:x\d+)*|scalar)$")
PLUGINS_DEPRECATED = "--plugins flag has been deprecated, use --staticPlugins flag instead."


def option_set(v):
    """(value options, switch options, {option: deprecation warning}) of trtexec `v` (see the docstring)."""
    value, switch = set(COMMON_VALUE), set(COMMON_BOOL)
    warn = {"plugins": PLUGINS_DEPRECATED}
    if v[0] < 10:
        value |= {"calib", "workspace", "maxBatch"}
        switch |= {"fp16", "int8", "best", "fp8", "explicitBatch", "buildOnly",
                   "noDataTransfers", "useSpinWait", "useCudaGraph", "separateProfileRun"}
        warn.update({"workspace": "--workspace flag has been deprecated by --memPoolSize flag.",
                     "explicitBatch": "--explicitBatch flag has been deprecated and has no effect!",
                     "buildOnly": "--buildOnly flag has been deprecated by --skipInference flag."})
    elif v[0] == 10:
        value |= {"calib"}
        switch |= {"fp16", "int8", "best", "bf16", "fp8", "stronglyTyped",
                   "noDataTransfers", "useSpinWait", "useCudaGraph", "separateProfileRun"}
        if v[1] >= 1:
            switch.add("int4")
    else:
        switch |= {"stronglyTyped", "noDataTransfers", "useSpinWait", "useCudaGraph", "separateProfileRun",
                   "includeDataTransfers", "noSpinWait", "noCudaGraph"}
        warn.update({
            "noDataTransfers": "--noDataTransfers is deprecated. Data transfers are now disabled by default. "
                               "Use --includeDataTransfers to re-enable data transfers.",
            "useSpinWait": "--useSpinWait is deprecated. Spin wait is now enabled by default. "
                           "Use --noSpinWait to disable spin wait.",
            "useCudaGraph": "--useCudaGraph is deprecated. CUDA graph is now enabled by default. "
                            "Use --noCudaGraph to disable CUDA graph.",
            "separateProfileRun": "--separateProfileRun is deprecated. Separate profile run is now always enabled. "
                                  "This flag will be removed in a future release."})
        if (v[0], v[1]) >= (11, 1):
            value |= {"loadRefOutputs", "refPair", "accuracyThreshold"}
    return value, switch, warn


def timing_of(v, opts):
    """What the run does: data transfers, spin wait, CUDA graph, separate profile run (sampleOptions.h)."""
    if v[0] >= 11:
        return {"data_transfers": "includeDataTransfers" in opts, "spin_wait": "noSpinWait" not in opts,
                "cuda_graph": "noCudaGraph" not in opts, "separate_profile_run": True}
    return {"data_transfers": "noDataTransfers" not in opts, "spin_wait": "useSpinWait" in opts,
            "cuda_graph": "useCudaGraph" in opts, "separate_profile_run": "separateProfileRun" in opts}


def version():
    text = os.environ.get("FBOCC_DOUBLE_TRT_VERSION", "8.6.13")
    parts = [int(p) for p in text.split(".")[:3]] + [0, 0]
    return parts[0], parts[1], parts[2]


def tag(v):
    major, minor, patch = v
    return f"v{major}{minor}{patch:02d}" if major < 10 else f"v{major:02d}{minor:02d}{patch:02d}"


def stamp():
    return datetime.now().strftime("[%m/%d/%Y-%H:%M:%S]")


def say(level, text):
    sys.stdout.write(f"{stamp()} [{level}] {text}\n")
    sys.stdout.flush()


def fail(v, argv, *lines):
    for line in lines:
        say("E", line)
    sys.stdout.write("&&&& FAILED TensorRT.trtexec [TensorRT {}] # {}\n".format(tag(v), " ".join(argv)))
    sys.stdout.flush()
    sys.exit(1)


def split_specs(value):
    # commas separate specs; a quoted name may contain commas or colons
    out, cur, quoted = [], "", False
    for ch in value:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def name_and_rest(spec):
    if spec.startswith("'"):
        end = spec.index("'", 1)
        return spec[1:end], spec[end + 2:]
    name, _, rest = spec.partition(":")
    return name, rest


def parse_shapes(v, argv, flag, value):
    shapes = {}
    for spec in split_specs(value):
        if not SHAPE_SPEC.match(spec):
            fail(v, argv, f"Invalid {flag} spec {spec!r}: expected name:DxDxD")
        name, dims = name_and_rest(spec)
        shapes[name] = [] if dims == "scalar" else [int(d) for d in dims.split("x")]
    return shapes


def parse_args(v, argv):
    value_opts, switch_opts, deprecated = option_set(v)
    opts = {}
    unknown = []
    for arg in argv[1:]:
        if not arg.startswith("--"):
            unknown.append(arg)
            continue
        key, eq, value = arg[2:].partition("=")
        if key in switch_opts:
            if eq:
                fail(v, argv, f"Option --{key} takes no value (got {value!r})")
            opts[key] = True
        elif key in value_opts:
            if not eq or value == "":
                fail(v, argv, f"Option --{key} needs a value")
            if key in opts and key not in REPEATABLE:
                fail(v, argv, f"Option --{key} given twice")
            opts[key] = value
        else:
            unknown.append("--" + key)
    if unknown:  # trtexec.cpp: options left after parsing are each an error, and the run fails
        fail(v, argv, *[f"Unknown option: {u} " for u in unknown])
    for key in opts:
        if key in deprecated:
            say("W", deprecated[key])
    if v[0] == 10 and "stronglyTyped" in opts:
        if "best" in opts and v[1] >= 8:
            fail(v, argv, "--best and --stronglyTyped cannot be both set. --best enables implicit precisions, while "
                 "--stronglyTyped enforces explicit precisions.")
        for flag, kind in (("fp16", "kFP16"), ("int8", "kINT8"), ("bf16", "kBF16"), ("fp8", "kFP8")):
            if opts.pop(flag, None):
                say("W", f"Invalid usage, setting {flag} mode is not allowed if graph is strongly typed. "
                         f"Disabling BuilderFlag::{kind}.")
    for key in ("iterations", "warmUp"):
        if key in opts and not re.match(r"^\d+$", opts[key]):
            fail(v, argv, f"Option --{key} needs an integer, got {opts[key]!r}")
    if "duration" in opts and not re.match(r"^\d+(\.\d+)?$", opts["duration"]):
        fail(v, argv, "Option --duration needs a number of seconds, got {!r}".format(opts["duration"]))
    if "memPoolSize" in opts and not re.match(r"^(workspace|dlaSRAM|dlaLocalDRAM|dlaGlobalDRAM|tacticSharedMem)"
                                              r":\d+(\.\d+)?[KMG]?$", opts["memPoolSize"]):
        fail(v, argv, "Invalid --memPoolSize spec {!r}".format(opts["memPoolSize"]))
    if "profilingVerbosity" in opts and opts["profilingVerbosity"] not in ("layer_names_only", "detailed", "none"):
        fail(v, argv, "Unknown profilingVerbosity: {}".format(opts["profilingVerbosity"]))
    for key in ("minShapes", "optShapes", "maxShapes", "shapes"):
        if key in opts:
            parse_shapes(v, argv, "--" + key, opts[key])
    if ("onnx" in opts) == ("loadEngine" in opts) and "help" not in opts:
        fail(v, argv, "Exactly one of --onnx or --loadEngine is required")
    return opts


def graph_precision(path):
    """What the ONNX's own types say: int8 (Q/DQ nodes), fp16 (fp16 tensors), else fp32."""
    try:
        import onnx  # the double runs under the test environment's Python, which has it
    except ImportError:
        return None
    model = onnx.load(path, load_external_data=False)
    g = model.graph
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node):
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    typed = [t.type.tensor_type.elem_type for t in list(g.input) + list(g.output) + list(g.value_info)]
    if f16 in typed or any(i.data_type == f16 for i in g.initializer) or any(
            a.name == "to" and a.i == f16 for n in g.node for a in n.attribute):
        return "fp16"
    return "fp32"


def custom_ops(path, blob):
    """Our plugin ops the graph uses: by node op_type (the ONNX parser's view), by bytes without onnx."""
    try:
        import onnx
    except ImportError:
        return [op for op in CUSTOM_OPS if op.encode() in blob]
    used = {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
    return [op for op in CUSTOM_OPS if op in used]


def layer_names(path):
    """Engine layer names as TensorRT reports them: the ONNX node names (ops of one fused chain joined)."""
    try:
        import onnx
    except ImportError:
        return []
    nodes = onnx.load(path, load_external_data=False).graph.node
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast", "Constant")]


def plugin_path(opts):
    return opts.get("staticPlugins") or opts.get("plugins")


def check_plugin(v, argv, opts, ops_needed):
    path = plugin_path(opts)
    if path is None:
        if ops_needed:
            fail(v, argv, f"[TRT] 3: getPluginCreator could not find plugin: {ops_needed[0]} version: 1",
                 "Failed to parse onnx file")
        return
    say("I", f"Loading supplied plugin library: {path}")
    if not os.path.isfile(path):
        fail(v, argv, f"Could not load library {path}: cannot open shared object file: No such file or directory")
    with open(path, "rb") as fh:
        blob = fh.read()
    for op in ops_needed:
        if op.encode() not in blob:
            fail(v, argv, f"[TRT] 3: getPluginCreator could not find plugin: {op} version: 1",
                 '[TRT] Assertion failed: creator && "Plugin not found, are the plugin name, version, and '
                 'namespace correct?"', "Failed to parse onnx file", "Parsing model failed",
                 "Engine creation failed")


def build(v, argv, opts):
    onnx = opts["onnx"]
    if not os.path.isfile(onnx):
        fail(v, argv, f"Cannot open ONNX file {onnx}")
    with open(onnx, "rb") as fh:
        blob = fh.read()
    ops = custom_ops(onnx, blob)
    check_plugin(v, argv, opts, ops)
    profile = {}
    mins = parse_shapes(v, argv, "--minShapes", opts["minShapes"]) if "minShapes" in opts else {}
    opts_ = parse_shapes(v, argv, "--optShapes", opts["optShapes"]) if "optShapes" in opts else {}
    maxs = parse_shapes(v, argv, "--maxShapes", opts["maxShapes"]) if "maxShapes" in opts else {}
    if not (set(mins) == set(opts_) == set(maxs)):
        fail(v, argv, "min/opt/max shapes must name the same inputs")
    for name in mins:
        if not all(a <= b <= c for a, b, c in zip(mins[name], opts_[name], maxs[name], strict=False)):
            fail(v, argv, f"Invalid profile for {name}: need min <= opt <= max")
        profile[name] = {"min": mins[name], "opt": opts_[name], "max": maxs[name]}
    strong = v[0] >= 11 or "stronglyTyped" in opts
    flags = [f for f in ("fp16", "bf16", "int8", "fp8", "int4", "best") if f in opts]
    graph = graph_precision(onnx)
    if strong:
        say("I", "Precision: Strongly Typed")
        precision = graph or "fp32"
    else:
        say("I", "Precision: FP32" + "".join("+" + f.upper() for f in flags if f != "best"))
        precision = ("best" if "best" in flags else "int8" if "int8" in flags and graph == "int8"
                     else "fp16" if "fp16" in flags or "int8" in flags else "fp32")
    time.sleep(0.2)  # a build takes time; Ctrl-C tests may land here too
    doc = {"fbocc_test_double": DOUBLE_MARK, "tensorrt": "{}.{}.{}".format(*v), "precision": precision,
           "strongly_typed": strong, "builder_flags": flags, "graph_precision": graph, "profile": profile,
           "plugin": plugin_path(opts), "custom_ops": ops, "onnx_sha256": hashlib.sha256(blob).hexdigest(),
           "layers": layer_names(onnx)}
    engine = opts.get("saveEngine")
    if engine:
        with open(engine, "w") as fh:
            json.dump(doc, fh)
        say("I", "Engine built in 0.2 sec.")
        say("I", f"Engine saved to {engine}")
    if "timingCacheFile" in opts:
        with open(opts["timingCacheFile"], "a") as fh:
            fh.write("double timing cache entry\n")
    if "skipInference" in opts:
        say("I", "Skipped inference phase since --skipInference is added.")
        return None
    return doc


def find_manifest(path):
    d = os.path.dirname(os.path.abspath(path))
    for _ in range(4):
        cand = os.path.join(d, "manifest.json")
        if os.path.isfile(cand):
            return cand
        d = os.path.dirname(d)
    return None


def bench(v, argv, opts, engine):
    check_plugin(v, argv, opts, engine.get("custom_ops", []))
    if "loadInputs" not in opts:
        fail(v, argv, "The double requires --loadInputs for every network input (random data hides bugs)")
    loaded = {}
    for spec in split_specs(opts["loadInputs"]):
        name, path = name_and_rest(spec)
        if not name or not path:
            fail(v, argv, f"Invalid --loadInputs spec {spec!r}")
        if not os.path.isfile(path):
            fail(v, argv, f"Cannot open input file {path}")
        loaded[name] = path
    manifest_path = find_manifest(next(iter(loaded.values())))
    if manifest_path is None:
        fail(v, argv, f"test double: no samples manifest.json above {next(iter(loaded.values()))}")
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    names = [t["name"] for t in manifest["inputs"]]
    missing = [n for n in names if n not in loaded]
    if missing:
        fail(v, argv, "test double: network inputs not given in --loadInputs: {}".format(", ".join(missing)))
    extra = [n for n in loaded if n not in names]
    if extra:
        fail(v, argv, f"Cannot find input tensor with name \"{extra[0]}\" in the engine bindings!")
    frame = next((f for f in manifest["frames"] if os.path.abspath(
        os.path.join(os.path.dirname(manifest_path), f["inputs"][names[0]]["file"])) == os.path.abspath(
        loaded[names[0]])), None)
    if frame is None:
        fail(v, argv, f"test double: {loaded[names[0]]} is not a frame file of {manifest_path}")
    for n in names:
        size = os.path.getsize(loaded[n])
        if size != frame["inputs"][n]["bytes"]:
            fail(v, argv, f"Input {n} file {loaded[n]} has {size} bytes, expected {frame['inputs'][n]['bytes']}")
    shapes = parse_shapes(v, argv, "--shapes", opts["shapes"]) if "shapes" in opts else {}
    for name, prof in engine["profile"].items():
        if name not in shapes:
            fail(v, argv, f"Dynamic input {name} needs --shapes")
        shape = shapes[name]
        if len(shape) != len(prof["min"]) or any(
                d < lo or d > hi for d, lo, hi in zip(shape, prof["min"], prof["max"], strict=False)):
            fail(v, argv, "[TRT] 3: [executionContext.cpp::setInputShape::2309] Error Code 3: API Usage Error "
                 "(Parameter check failed at: runtime/api/executionContext.cpp::setInputShape::2309, condition: "
                 "satisfyProfile Runtime dimension does not satisfy any optimization profile.)")
    for n in names:
        say("I", f"Using values loaded from {loaded[n]} for input {n}")
    timing = timing_of(v, opts)
    say("I", "=== Inference Options ===")
    say("I", "Data transfers: {}".format("Enabled" if timing["data_transfers"] else "Disabled"))
    say("I", "Spin-wait: {}".format("Enabled" if timing["spin_wait"] else "Disabled"))
    say("I", "CUDA Graph: {}".format("Enabled" if timing["cuda_graph"] else "Disabled"))
    if v[0] < 11:  # 11.0 no longer prints it: always separate
        say("I", "Separate profiling: {}".format("Enabled" if timing["separate_profile_run"] else "Disabled"))
    say("I", "Starting inference")
    base_ms = {"fp32": 3.0, "fp16": 2.0, "int8": 1.4, "best": 1.6}[engine.get("precision", "fp32")]
    warm = int(opts.get("warmUp", "200"))
    t0 = time.perf_counter()
    while (time.perf_counter() - t0) * 1000 < warm:
        time.sleep(base_ms / 1000)
    iterations = int(opts.get("iterations", "10"))
    duration = float(opts.get("duration", "3"))
    times = []
    start = time.perf_counter()
    while len(times) < iterations or time.perf_counter() - start < duration:
        q0 = time.perf_counter()
        time.sleep(base_ms * random.uniform(0.9, 1.2) / 1000)
        q1 = time.perf_counter()
        times.append((q0 - start, q1 - start))
    wall = time.perf_counter() - start
    say("I", f"Warmup completed over {warm} ms")
    say("I", f"Timing trace has {len(times)} queries over {wall:.5g} s")
    report(v, argv, opts, times, wall, timing, engine.get("layers") or [])


def stats(values):
    s = sorted(values)
    n = len(s)

    def pct(p):
        return s[min(n - 1, int(n * p / 100))]

    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return s[0], s[-1], sum(s) / n, median, pct(90), pct(95), pct(99)


def fmt_metric(name, values):
    mn, mx, mean, med, p90, p95, p99 = stats(values)
    return (f"{name}: min = {mn:.6g} ms, max = {mx:.6g} ms, mean = {mean:.6g} ms, median = {med:.6g} ms, "
            f"percentile(90%) = {p90:.6g} ms, percentile(95%) = {p95:.6g} ms, percentile(99%) = {p99:.6g} ms")


def report(v, argv, opts, times, wall, timing, layers):
    compute = [(b - a) * 1000 for a, b in times]
    on = 1.0 if timing["data_transfers"] else 0.0  # no transfers: H2D/D2H read 0 ms, as trtexec 11 prints
    h2d = [(0.05 + c * 0.01) * on for c in compute]
    d2h = [(0.02 + c * 0.005) * on for c in compute]
    latency = [c + h + d for c, h, d in zip(compute, h2d, d2h, strict=False)]
    enqueue = [c * 0.1 for c in compute]
    say("I", "")
    say("I", "=== Performance summary ===")
    say("I", "Throughput: %.6g qps" % (len(times) / wall))
    for name, vals in (("Latency", latency), ("Enqueue Time", enqueue), ("H2D Latency", h2d),
                       ("GPU Compute Time", compute), ("D2H Latency", d2h)):
        say("I", fmt_metric(name, vals))
    say("I", f"Total Host Walltime: {wall:.6g} s")
    say("I", "Total GPU Compute Time: %.6g s" % (sum(compute) / 1000))
    mean = sum(compute) / len(compute)
    cv = (sum((c - mean) ** 2 for c in compute) / len(compute)) ** 0.5 / mean * 100
    if cv > 1.0:
        say("W", f"* GPU compute time is unstable, with coefficient of variance = {cv:.6g}%.")
        say("W", "  If not already in use, locking GPU clock frequency or adding --useSpinWait may improve the "
                 "stability.")
    say("I", "Explanations of the performance metrics are printed in the verbose logs.")
    if "exportTimes" in opts:
        with open(opts["exportTimes"], "w") as fh:
            json.dump([{"startComputeMs": a * 1000, "endComputeMs": b * 1000, "computeMs": c, "h2dMs": h,
                        "d2hMs": d, "latencyMs": lat} for (a, b), c, h, d, lat in
                       zip(times, compute, h2d, d2h, latency, strict=False)], fh)
    if "exportProfile" in opts:
        # the engine's layers (its ONNX node names) with a deterministic share each, largest first
        names = layers or ["double_backbone", "GridSampler3DTRT_0", "double_head"]
        weights = [len(names) - i for i in range(len(names))]
        layers = [(n, w / sum(weights)) for n, w in zip(names, weights, strict=False)]
        with open(opts["exportProfile"], "w") as fh:
            json.dump([{"count": len(times)}] + [{"name": n, "timeMs": mean * f * len(times), "averageMs": mean * f,
                                                  "medianMs": mean * f, "percentage": f * 100} for n, f in layers], fh)
    suffix = " [b99]" if v[0] >= 10 else ""
    sys.stdout.write("&&&& PASSED TensorRT.trtexec [TensorRT {}]{} # {}\n".format(tag(v), suffix, " ".join(argv)))
    sys.stdout.flush()


def main(argv):
    v = version()
    argv = ["trtexec", *argv[1:]]
    sys.stdout.write("&&&& RUNNING TensorRT.trtexec [TensorRT {}] # {}\n".format(tag(v), " ".join(argv)))
    say("I", DOUBLE_MARK)
    opts = parse_args(v, argv)
    if "help" in opts:
        say("I", "TensorRT version: {}.{}.{}".format(*v))
        return 0
    say("I", "TensorRT version: {}.{}.{}".format(*v))
    if "onnx" in opts:
        engine = build(v, argv, opts)
        if engine is None:
            sys.stdout.write("&&&& PASSED TensorRT.trtexec [TensorRT {}] # {}\n".format(tag(v), " ".join(argv)))
            return 0
    else:
        try:
            with open(opts["loadEngine"]) as fh:
                engine = json.load(fh)
        except (OSError, ValueError):
            fail(v, argv, "Error opening engine file: {}".format(opts["loadEngine"]),
                 "Failed to create engine from model or file.")
        if engine.get("fbocc_test_double") != DOUBLE_MARK:
            fail(v, argv, "{} is not an engine written by this test double".format(opts["loadEngine"]))
    bench(v, argv, opts, engine)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
