"""The target's engine cache and its one Python-API engine builder (the alternative to trtexec).

Runs on the target: Python 3.8, numpy and tensorrt only; imports nothing from fbocc. The plugin library
is loaded with ctypes (its static registration adds the creators), the optimization profile comes from
the samples' manifest, the timing cache persists between builds, and built engines are cached under a
key of (ONNX sha256, plugin sha256, precision, TensorRT version, profile, builder): the same inputs
never build twice. Works on TensorRT 8.6 and 10.x. `deploy.run_sequence` builds through `build_engine`
when it is handed no engine; the host decides the engine (fbocc.target.contract.ensure_engine).

    python3 -m deploy.create_engine --onnx M.onnx --plugin libfbocc.so --samples samples/ --precision fp16 \
        --engine-dir engines/ [--timing-cache engines/timing.cache] [--rebuild] [--workspace-mib N]

Prints one final line `FBOCC_ENGINE {"engine": ..., "key": ..., "cached": true|false, "sha256": ...}`.
Exit codes: 0 built or cached, 2 bad arguments, 3 tensorrt not importable, 4 build failed.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from . import manifest as samples_manifest
from . import protocol

PRECISIONS = ("fp32", "fp16", "int8")
TYPINGS = ("strong", "weak")
BUILDERS = ("trtexec", "python")


class UsageError(Exception):
    """An argument is wrong; the message names it and says what to do."""


def engine_identity(path):
    # type: (str) -> Dict[str, Any]
    """{"engine", "bytes", "sha256"} of an engine file; the digest is kept beside it in `<engine>.sha256`
    (valid while size and mtime match), so a cached engine is hashed once, not per command."""
    st = os.stat(path)
    stamp = "{} {}".format(st.st_size, st.st_mtime_ns)
    side = path + ".sha256"
    try:
        with open(side) as fh:
            digest, _, seen = fh.read().strip().partition(" ")
        if seen == stamp and len(digest) == 64:
            return {"engine": path, "bytes": st.st_size, "sha256": digest}
    except OSError:
        pass
    digest = samples_manifest.sha256_file(path)
    try:
        with open(side + ".part", "w") as fh:
            fh.write("{} {}\n".format(digest, stamp))
        os.replace(side + ".part", side)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return {"engine": path, "bytes": st.st_size, "sha256": digest}


def profile_from_manifest(manifest):
    # type: (Dict[str, Any]) -> Dict[str, Dict[str, List[int]]]
    """The optimization profile (min/opt/max per dynamic input), checked for min <= opt <= max."""
    profile = manifest.get("profile") or {}
    inputs = [t["name"] for t in manifest.get("inputs", [])]
    out = {}  # type: Dict[str, Dict[str, List[int]]]
    for name, p in profile.items():
        if name not in inputs:
            raise UsageError("profile names {!r}, which is not a network input ({})".format(name, ", ".join(inputs)))
        dims = [list(map(int, p[k])) for k in ("min", "opt", "max")]
        if not (len(dims[0]) == len(dims[1]) == len(dims[2])):
            raise UsageError("profile of {!r}: min/opt/max have different ranks".format(name))
        if not all(a <= b <= c for a, b, c in zip(*dims)):
            raise UsageError("profile of {!r}: need min <= opt <= max in every dimension, got {}".format(name, dims))
        out[name] = {"min": dims[0], "opt": dims[1], "max": dims[2]}
    return out


def engine_cache_key(onnx_sha256, plugin_sha256, precision, trt_version, profile, builder="trtexec", typing=None):
    # type: (str, Optional[str], str, str, Dict[str, Any], str, Optional[str]) -> str
    """The engine cache key: equal inputs give an equal key, any change gives another (16 hex digits)."""
    if precision not in PRECISIONS:
        raise UsageError("precision {!r} is not one of {}".format(precision, ", ".join(PRECISIONS)))
    if builder not in BUILDERS:
        raise UsageError("builder {!r} is not one of {}".format(builder, ", ".join(BUILDERS)))
    doc = {"onnx": onnx_sha256, "plugin": plugin_sha256 or "", "precision": precision,
           "tensorrt": trt_version, "profile": profile, "builder": builder}
    if typing:  # the same graph built weakly or strongly typed is another engine
        doc["typing"] = typing
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def precision_switches(trt, precision, typing=None):
    # type: (Any, str, Optional[str]) -> Tuple[int, List[str], str]
    """(create_network flags, BuilderFlag names, typing) for `precision` on this tensorrt module.

    The same rules as the host's trtexec command lines (fbocc.target.trtexec_commands.precision_plan): strongly
    typed wherever NetworkDefinitionCreationFlag.STRONGLY_TYPED exists (10.x; 11.x where it is the only
    mode), the graph carrying the precision; weakly typed (FP16/INT8 builder flags) on 8.6, or on request
    before 10.12. TensorRT 11 has no BuilderFlag.FP16/INT8 at all (python/src/infer/pyCore.cpp, 11.0)."""
    if precision not in PRECISIONS:
        raise UsageError("precision {!r} is not one of {}".format(precision, ", ".join(PRECISIONS)))
    creation = trt.NetworkDefinitionCreationFlag
    version = str(trt.__version__)
    strong_flag = getattr(creation, "STRONGLY_TYPED", None)
    typing = typing or ("strong" if strong_flag is not None else "weak")
    if typing not in TYPINGS:
        raise UsageError("typing {!r} is not one of {}".format(typing, ", ".join(TYPINGS)))
    if typing == "strong":
        if strong_flag is None:
            raise UsageError("TensorRT {} has no strongly typed networks: build it weakly typed "
                             "(--typing weak, the default there)".format(version))
        return 1 << int(strong_flag), [], "strong"
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    if not hasattr(trt.BuilderFlag, "FP16") or (len(parts) == 2 and tuple(parts) >= (10, 12)):
        raise UsageError("TensorRT {} builds precision from the graph only (weak typing is deprecated since 10.12 "
                         "and removed in 11.0): use the typed graph (drop --typing weak)".format(version))
    batch = getattr(creation, "EXPLICIT_BATCH", None)
    flags = 1 << int(batch) if batch is not None and parts and parts[0] < 10 else 0
    names = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}[precision]
    return flags, names, "weak"


def check_args(args):
    # type: (argparse.Namespace) -> None
    if args.precision == "best":  # implicit fp16/int8 per layer: weak typing, removed in TensorRT 11
        raise UsageError("--precision 'best' needs weak typing, which TensorRT 11 removed: build the fp16 or int8 "
                         "graph (--precision fp16|int8 --onnx <that graph>)")
    if args.precision not in PRECISIONS:
        raise UsageError("--precision {!r}: use one of {}".format(args.precision, ", ".join(PRECISIONS)))
    for flag, path in (("--onnx", args.onnx), ("--plugin", args.plugin)):
        if path is not None and not os.path.isfile(path):
            raise UsageError("{} {}: no such file".format(flag, path))
    if not os.path.isfile(os.path.join(args.samples, samples_manifest.MANIFEST_NAME)):
        raise UsageError("--samples {}: no {} there".format(args.samples, samples_manifest.MANIFEST_NAME))
    if args.workspace_mib is not None and args.workspace_mib <= 0:
        raise UsageError("--workspace-mib must be positive")


def build_engine(trt, onnx, precision, profile, timing_cache=None, workspace_mib=None, typing=None):
    # type: (Any, str, str, Dict[str, Dict[str, List[int]]], Optional[str], Optional[int], Optional[str]) -> Any
    """Serialized engine from the ONNX (the plugin library must be loaded already); RuntimeError on failure,
    UsageError when `precision`/`typing` cannot be built on this TensorRT (`precision_switches`)."""
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network_flags, builder_flags, _ = precision_switches(trt, precision, typing)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT cannot parse {}:\n{}".format(onnx, "\n".join(errors)))
    config = builder.create_builder_config()
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for name in builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if profile:
        opt_profile = builder.create_optimization_profile()
        for name, p in profile.items():
            opt_profile.set_shape(name, p["min"], p["opt"], p["max"])
        config.add_optimization_profile(opt_profile)
    cache = None
    if timing_cache:
        blob = b""
        if os.path.isfile(timing_cache):
            with open(timing_cache, "rb") as fh:
                blob = fh.read()
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT returned no engine for {} (see the builder messages above)".format(onnx))
    if cache is not None and timing_cache:
        _write_atomically(timing_cache, config.get_timing_cache().serialize())
    return serialized


def _write_atomically(path, data):
    # type: (str, Any) -> None
    tmp = path + ".part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--plugin")
    ap.add_argument("--samples", required=True)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--typing", choices=TYPINGS, help="default: strong where TensorRT has it")
    ap.add_argument("--engine-dir", required=True)
    ap.add_argument("--timing-cache")
    ap.add_argument("--workspace-mib", type=int)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)
    try:
        check_args(args)
        manifest = samples_manifest.load(args.samples)
        profile = profile_from_manifest(manifest)
    except (UsageError, samples_manifest.ManifestError) as exc:
        sys.stderr.write("create_engine: {}\n".format(getattr(exc, "message", exc)))
        return 2
    try:
        import tensorrt as trt  # type: ignore
    except ImportError as exc:
        sys.stderr.write("create_engine: the tensorrt Python module is not importable on this target ({}); "
                         "install python3-libnvinfer or use the trtexec builder (the default)\n".format(exc))
        return 3
    if args.plugin:
        import ctypes
        ctypes.CDLL(args.plugin, mode=ctypes.RTLD_GLOBAL)  # static registration adds our creators
    try:
        typing = precision_switches(trt, args.precision, args.typing)[2]
    except UsageError as exc:
        sys.stderr.write("create_engine: {}\n".format(exc))
        return 2
    sha = samples_manifest.sha256_file
    key = engine_cache_key(sha(args.onnx), sha(args.plugin) if args.plugin else None,
                           args.precision, trt.__version__, profile, builder="python", typing=typing)
    os.makedirs(args.engine_dir, exist_ok=True)
    engine_path = os.path.join(args.engine_dir, protocol.engine_file_name(args.precision, key))
    cached = os.path.isfile(engine_path) and not args.rebuild
    started = time.time()
    if not cached:
        try:
            _write_atomically(engine_path, build_engine(trt, args.onnx, args.precision, profile,
                                                        args.timing_cache, args.workspace_mib, typing))
        except RuntimeError as exc:
            sys.stderr.write("create_engine: {}\n".format(exc))
            return 4
    doc = engine_identity(engine_path)
    doc.update({"key": key, "cached": cached, "tensorrt": trt.__version__,
                "seconds": round(time.time() - started, 3)})
    protocol.emit(protocol.ENGINE, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
