#!/usr/bin/env python3
"""TEST DOUBLE of NVIDIA's trtexec -- not TensorRT. It exists so that `fbocc remote-bench` can be tested
end to end against a real sshd on loopback, where no TensorRT exists.

It is strict on purpose: every flag must be one trtexec of the emulated version knows, with a
well-formed value; `--loadInputs` must name EVERY network input of the samples manifest it finds above
the input files, each file with the manifest's byte size; the plugin library must exist and mention
each custom op the ONNX uses (a real library carries its creators' names); shapes must fall inside the
profile the "engine" was built with. It sleeps through warm-up and the timed run (`--duration` /
`--iterations`), measures those sleeps, and prints the real performance-summary format of the emulated
TensorRT version (env FBOCC_DOUBLE_TRT_VERSION, default 8.6.13) computed from them.

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
VALUE_FLAGS = {
    "onnx", "saveEngine", "loadEngine", "plugins", "staticPlugins", "dynamicPlugins", "minShapes", "optShapes",
    "maxShapes", "shapes", "timingCacheFile", "memPoolSize", "profilingVerbosity", "loadInputs", "iterations",
    "duration", "warmUp", "exportTimes", "exportProfile", "setPluginsToSerialize",
}
BOOL_FLAGS = {"fp16", "best", "skipInference", "useCudaGraph", "useSpinWait", "separateProfileRun", "verbose", "help"}
SHAPE_SPEC = re.compile(r"^(?:'[^']+'|[^,:']+):(?:\d+(?:x\d+)*|scalar)$")


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
    opts = {}
    for arg in argv[1:]:
        if not arg.startswith("--"):
            fail(v, argv, f"Unknown option: {arg}")
        key, eq, value = arg[2:].partition("=")
        if key in BOOL_FLAGS:
            if eq:
                fail(v, argv, f"Option --{key} takes no value (got {value!r})")
            opts[key] = True
        elif key in VALUE_FLAGS:
            if not eq or value == "":
                fail(v, argv, f"Option --{key} needs a value")
            if key in opts and key != "plugins":
                fail(v, argv, f"Option --{key} given twice")
            opts[key] = value
        else:
            fail(v, argv, f"Unknown option: --{key}")
    major = v[0]
    if "staticPlugins" in opts and major < 10:
        fail(v, argv, f"Unknown option: --staticPlugins (TensorRT {v[0]}.{v[1]} has --plugins)")
    if "plugins" in opts and major >= 11:
        fail(v, argv, "Unknown option: --plugins (removed; use --staticPlugins)")
    if "plugins" in opts and major == 10:
        say("W", "--plugins flag has been deprecated, use --staticPlugins flag instead.")
    for key in ("iterations", "warmUp"):
        if key in opts and not re.match(r"^\d+$", opts[key]):
            fail(v, argv, f"Option --{key} needs an integer, got {opts[key]!r}")
    if "duration" in opts and not re.match(r"^\d+(\.\d+)?$", opts["duration"]):
        fail(v, argv, "Option --duration needs a number of seconds, got {!r}".format(opts["duration"]))
    if "memPoolSize" in opts and not re.match(r"^(workspace|dlaSRAM|dlaLocalDRAM|dlaGlobalDRAM|tacticSharedMem)"
                                              r":\d+(\.\d+)?[KMG]?$", opts["memPoolSize"]):
        fail(v, argv, "Invalid --memPoolSize spec {!r}".format(opts["memPoolSize"]))
    if "profilingVerbosity" in opts and opts["profilingVerbosity"] not in ("layer_names_only", "detailed", "none"):
        fail(v, argv, "Invalid --profilingVerbosity {!r}".format(opts["profilingVerbosity"]))
    for key in ("minShapes", "optShapes", "maxShapes", "shapes"):
        if key in opts:
            parse_shapes(v, argv, "--" + key, opts[key])
    if ("onnx" in opts) == ("loadEngine" in opts) and "help" not in opts:
        fail(v, argv, "Exactly one of --onnx or --loadEngine is required")
    return opts


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
    ops = [op for op in CUSTOM_OPS if op.encode() in blob]
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
    precision = "best" if "best" in opts else "fp16" if "fp16" in opts else "fp32"
    time.sleep(0.2)  # a build takes time; Ctrl-C tests may land here too
    engine = opts.get("saveEngine")
    if engine:
        doc = {"fbocc_test_double": DOUBLE_MARK, "tensorrt": "{}.{}.{}".format(*v), "precision": precision,
               "profile": profile, "plugin": plugin_path(opts), "custom_ops": ops,
               "onnx_sha256": hashlib.sha256(blob).hexdigest()}
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
    say("I", "Starting inference")
    base_ms = {"fp32": 3.0, "fp16": 2.0, "best": 1.6}[engine.get("precision", "fp32")]
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
    report(v, argv, opts, times, wall)


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


def report(v, argv, opts, times, wall):
    compute = [(b - a) * 1000 for a, b in times]
    h2d = [0.05 + c * 0.01 for c in compute]
    d2h = [0.02 + c * 0.005 for c in compute]
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
        layers = [("double_backbone", 0.6), ("GridSampler3DTRT_0", 0.3), ("double_head", 0.1)]
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
