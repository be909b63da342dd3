#!/usr/bin/env python3
"""Run a samples set as the car does: one engine, frames in order, temporal history carried by name.

    python3 -m deploy.run_sequence --backend tensorrt|onnxruntime --set-dir DIR --out DIR
        [--precision fp32|fp16|int8] [--onnx PATH] [--engine PATH] [--plugin PATH] [--repeat N]
        [--save-history-inputs]

- The model is loaded once (a TensorRT engine, deserialized, or built from the ONNX with the samples'
  min/opt/max profile by deploy.create_engine's builder; or the ONNX graph in ONNX Runtime with our ops
  as numpy custom ops).
- Frames run in manifest order. For each `history` pair of the manifest, frame k's history *input* is
  frame k-1's history *output* of that name (frame 0 takes its sample file: start of sequence).
- Every output of every frame is written as `<out>/frame_XXX/<name>.dat` with a `manifest.json`
  (schema of deploy/manifest.py; `"kind": "run-outputs"`); with --save-history-inputs the history
  inputs actually fed are written too, so a reader can check the carry byte for byte.
- Outputs with a reference in the samples are also compared here (deploy.compare.reference_stats):
  the statistics go into the frame's `reference_stats`, so the host need not pull big tensors back.
- The last stdout line is `FBOCC_RESULT <json>` (per-frame latencies, backend, versions, manifest);
  a failure the user can fix prints `FBOCC_ERROR <json>` (message, fix, path) and exits 2.

Python 3.8; numpy + tensorrt (+ctypes for CUDA memory) for the tensorrt backend; numpy + onnx +
onnxruntime + onnxruntime-extensions for the onnxruntime backend. Imports nothing from fbocc.
"""

import argparse
import os
import platform
import shutil
import sys
import time
from typing import Any, Dict, List, Optional  # noqa: F401  (names for the type comments)

from . import compare, create_engine, protocol
from . import manifest as sample_manifest

EXIT_USER_ERROR = 2


class RunError(Exception):
    """A failure the user can fix; `fix` says how, `path` names the file at fault."""

    def __init__(self, message, fix=None, path=None):
        # type: (str, Optional[str], Optional[str]) -> None
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.path = path


# --- backends ------------------------------------------------------------------------------------


class OnnxRuntimeBackend(object):
    """The ONNX graph itself in ONNX Runtime (CPU), our three ops as numpy custom ops."""

    name = "onnxruntime"

    def __init__(self, onnx_path, precision):
        # type: (str, str) -> None
        if precision != "fp32":
            raise RunError("the onnxruntime backend runs fp32 only (asked for {})".format(precision),
                           fix="use --precision fp32 with --backend onnxruntime; fp16 is a TensorRT build option")
        from . import ort_ops

        try:
            import onnxruntime as ort
            import onnx  # noqa: F401

            onnxruntime_extensions = ort_ops.import_extensions()
        except ImportError as exc:
            raise RunError("the onnxruntime backend needs onnx, onnxruntime and onnxruntime-extensions: {}".format(exc),
                           fix="pip install onnx onnxruntime onnxruntime-extensions on this machine "
                               "(or use --backend tensorrt)")

        if not os.path.isfile(onnx_path):
            raise RunError("ONNX file {} does not exist".format(onnx_path), path=onnx_path,
                           fix="push the model again (fbocc push-to-target) or pass --onnx")
        model, rewritten = ort_ops.prepare_model(onnx_path)
        options = ort.SessionOptions()
        options.register_custom_ops_library(ort_ops.register())
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise RunError("ONNX Runtime cannot load {}: {}".format(onnx_path, str(exc).splitlines()[0]),
                           path=onnx_path, fix="check the graph with `fbocc check-onnx`")
        self.custom_nodes = rewritten
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.versions = {"onnxruntime": ort.__version__, "onnxruntime_extensions": onnxruntime_extensions.__version__}

    def infer(self, feeds):
        # type: (Dict[str, Any]) -> Dict[str, Any]
        results = self.session.run(None, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, results))

    def close(self):
        # type: () -> None
        self.session = None


class _Cuda(object):
    """The few CUDA runtime calls the TensorRT backend needs, through ctypes (no pycuda on the car)."""

    def __init__(self):
        # type: () -> None
        import ctypes
        import ctypes.util

        self.ctypes = ctypes
        names = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.13", "libcudart.so.12",
                 "libcudart.so.11.0"]
        for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):  # not always on the loader path
            if home:
                names.append(os.path.join(home, "lib64", "libcudart.so"))
        self.lib = None
        for name in names:
            if not name:
                continue
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if self.lib is None:
            raise RunError("libcudart (CUDA runtime) not found", fix="run on a machine with CUDA (the Orin), "
                           "or add its lib directory to LD_LIBRARY_PATH")
        self.stream = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(self.stream)), "cudaStreamCreate")

    def _check(self, status, what):
        # type: (int, str) -> None
        if status != 0:
            raise RuntimeError("{} failed with CUDA error {}".format(what, status))

    def malloc(self, nbytes):
        # type: (int) -> int
        ptr = self.ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(self.ctypes.byref(ptr), self.ctypes.c_size_t(max(1, nbytes))), "cudaMalloc")
        return int(ptr.value or 0)

    def free(self, ptr):
        # type: (int) -> None
        self.lib.cudaFree(self.ctypes.c_void_p(ptr))

    def h2d(self, dst, array):
        # type: (int, Any) -> None
        self._check(self.lib.cudaMemcpyAsync(self.ctypes.c_void_p(dst), self.ctypes.c_void_p(array.ctypes.data),
                                             self.ctypes.c_size_t(array.nbytes), 1, self.stream), "cudaMemcpy H2D")

    def d2h(self, array, src):
        # type: (Any, int) -> None
        self._check(self.lib.cudaMemcpyAsync(self.ctypes.c_void_p(array.ctypes.data), self.ctypes.c_void_p(src),
                                             self.ctypes.c_size_t(array.nbytes), 2, self.stream), "cudaMemcpy D2H")

    def sync(self):
        # type: () -> None
        self._check(self.lib.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


class TensorRTBackend(object):
    """A TensorRT engine, loaded once; tensors bound by name (TensorRT 8.6 and 10 name-based API)."""

    name = "tensorrt"

    def __init__(self, engine_path, onnx_path, plugin_path, precision, profile):
        # type: (Optional[str], Optional[str], Optional[str], str, Dict[str, Any]) -> None
        try:
            import tensorrt as trt
        except ImportError:
            raise RunError("the tensorrt Python module is not importable here",
                           fix="run on the target (DRIVE OS / JetPack ship python3-libnvinfer), "
                               "or use --backend onnxruntime on a machine without TensorRT")
        import ctypes

        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        if plugin_path:
            if not os.path.isfile(plugin_path):
                raise RunError("plugin library {} does not exist".format(plugin_path), path=plugin_path,
                               fix="push the plugin again (fbocc push-to-target) or fix --plugin")
            try:
                ctypes.CDLL(plugin_path, mode=ctypes.RTLD_GLOBAL)  # static registration runs on load
            except OSError as exc:
                raise RunError("cannot load plugin {}: {}".format(plugin_path, exc), path=plugin_path,
                               fix="rebuild it for this target's TensorRT/CUDA (fbocc cross-build --profile ...)")
        trt.init_libnvinfer_plugins(self.logger, "")
        runtime = trt.Runtime(self.logger)
        if engine_path and os.path.isfile(engine_path):
            with open(engine_path, "rb") as fh:
                engine = runtime.deserialize_cuda_engine(fh.read())
            if engine is None:
                raise RunError("TensorRT cannot deserialize {}".format(engine_path), path=engine_path,
                               fix="the engine was built by another TensorRT version or device: rebuild it "
                                   "(delete it and re-run; it is rebuilt from the ONNX)")
        elif onnx_path:
            engine = runtime.deserialize_cuda_engine(self._build(onnx_path, precision, profile))
        else:
            raise RunError("no engine and no ONNX to build one from", fix="pass --engine PATH or --onnx PATH")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.cuda = _Cuda()
        self.input_names = []  # type: List[str]
        self.output_names = []  # type: List[str]
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_names.append(name)
            else:
                self.output_names.append(name)
        self.buffers = {}  # type: Dict[str, Any]
        self.versions = {"tensorrt": trt.__version__}

    def _build(self, onnx_path, precision, profile):
        # type: (str, str, Dict[str, Any]) -> Any
        try:
            return create_engine.build_engine(self.trt, onnx_path, precision, profile)
        except RuntimeError as exc:
            raise RunError("TensorRT could not build an engine from {}: {}".format(onnx_path, exc), path=onnx_path,
                           fix="check the graph with `fbocc check-onnx` and that --plugin names our plugin library")

    def _buffer(self, name, shape, dtype):
        # type: (str, Any, Any) -> int
        import numpy as np

        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        have = self.buffers.get(name)
        if have is None or have[1] < nbytes:
            if have is not None:
                self.cuda.free(have[0])
            self.buffers[name] = (self.cuda.malloc(nbytes), nbytes)
        return self.buffers[name][0]

    def infer(self, feeds):
        # type: (Dict[str, Any]) -> Dict[str, Any]
        import numpy as np

        trt = self.trt
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name].astype(trt.nptype(self.engine.get_tensor_dtype(name)), copy=False))
            self.context.set_input_shape(name, tuple(array.shape))
            ptr = self._buffer(name, array.shape, array.dtype)
            self.cuda.h2d(ptr, array)
            self.context.set_tensor_address(name, ptr)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            outputs[name] = np.empty(shape, dtype=dtype)
            self.context.set_tensor_address(name, self._buffer(name, shape, dtype))
        if not self.context.execute_async_v3(self.cuda.stream.value):
            raise RuntimeError("TensorRT execute_async_v3 reported failure")
        for name, array in outputs.items():
            self.cuda.d2h(array, self.buffers[name][0])
        self.cuda.sync()
        return outputs

    def save_engine(self, path):
        # type: (str) -> None
        tmp = path + ".part"
        with open(tmp, "wb") as fh:
            fh.write(self.engine.serialize())
        os.replace(tmp, path)

    def close(self):
        # type: () -> None
        for ptr, _ in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers = {}


# --- the sequence --------------------------------------------------------------------------------


def carried_inputs(history):
    # type: (List[Dict[str, str]]) -> Dict[str, str]
    """{history input name: history output name} from the manifest's `history` pairs."""
    return dict((pair["input"], pair["output"]) for pair in history)


def run_sequence(backend, set_dir, out_dir, repeat=1, save_history_inputs=False, log=None):
    # type: (Any, str, str, int, bool, Any) -> Dict[str, Any]
    """Run every frame of `set_dir` through `backend` in order, carrying history; write `out_dir`.

    Returns the result document (what FBOCC_RESULT prints). `out_dir` appears only when complete.
    """
    import numpy as np

    log = log or (lambda text: None)
    samples = sample_manifest.load(set_dir)
    carry = carried_inputs(samples.get("history", []))
    missing = [n for n in backend.input_names if n not in [t["name"] for t in samples["inputs"]]]
    if missing:
        raise RunError("the model's inputs {} are not in the samples manifest".format(", ".join(missing)),
                       path=os.path.join(set_dir, "manifest.json"),
                       fix="push samples exported from this same model (fbocc export writes both)")
    for inp, outp in carry.items():
        if inp not in backend.input_names or outp not in backend.output_names:
            raise RunError("history pair {} -> {} does not name a model input and output".format(inp, outp),
                           path=os.path.join(set_dir, "manifest.json"),
                           fix="re-export: the manifest's history pairs must match the graph's tensor names")
    part = out_dir.rstrip("/") + ".part"
    if os.path.exists(part):
        shutil.rmtree(part)
    os.makedirs(part)
    out_manifest = {
        "format": sample_manifest.FORMAT, "kind": "run-outputs", "inputs": [],
        "outputs": [], "history": samples.get("history", []), "frames": [],
    }  # type: Dict[str, Any]
    try:
        per_frame = _run_frames(backend, samples, set_dir, part, out_manifest, carry, repeat,
                                save_history_inputs, log)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)  # nothing half-written stays behind
        raise
    out_manifest["run"] = {"backend": backend.name, "versions": backend.versions,
                           "samples_sha256": sample_manifest.sha256_file(os.path.join(set_dir, "manifest.json"))}
    sample_manifest.save(part, out_manifest)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(part, out_dir)
    return {
        "backend": backend.name, "frames": len(per_frame), "per_frame": per_frame,
        "latency_ms": [min(f["latency_ms"]) for f in per_frame],
        "history": samples.get("history", []), "manifest": os.path.join(os.path.abspath(out_dir), "manifest.json"),
        "versions": dict(backend.versions, python=platform.python_version(), numpy=np.__version__),
        "host": platform.node(), "machine": platform.machine(),
    }


def _run_frames(backend, samples, set_dir, part, out_manifest, carry, repeat, save_history_inputs, log):
    # type: (Any, Dict[str, Any], str, str, Dict[str, Any], Dict[str, str], int, bool, Any) -> List[Dict[str, Any]]
    import numpy as np

    per_frame = []
    previous = None  # type: Optional[Dict[str, Any]]
    for index, frame in enumerate(samples["frames"]):
        feeds = {}
        fed_from = {}
        for name in backend.input_names:
            if previous is not None and name in carry:
                feeds[name] = previous[carry[name]]
                fed_from[name] = "frame {} output {}".format(samples["frames"][index - 1]["id"], carry[name])
            else:
                feeds[name] = sample_manifest.read_tensor(set_dir, frame["inputs"][name])
        latencies = []
        outputs = None
        for _ in range(max(1, repeat)):
            start = time.perf_counter()
            result = backend.infer(feeds)
            latencies.append((time.perf_counter() - start) * 1000.0)
            if outputs is None:
                outputs = result
        assert outputs is not None
        entry = {"id": frame["id"], "outputs": {}, "inputs": {}, "latency_ms": latencies,
                 "history_fed_from": fed_from}  # type: Dict[str, Any]
        for name in backend.output_names:
            entry["outputs"][name] = sample_manifest.write_tensor(
                part, "frame_{}/{}.dat".format(frame["id"], name), outputs[name])
        references = frame.get("outputs", {})
        if references:  # compared here too, so big tensors need not travel back to the host
            entry["reference_stats"] = dict(
                (name, _reference_stats(outputs[name], sample_manifest.read_tensor(set_dir, references[name])))
                for name in backend.output_names if name in references)
        if save_history_inputs:
            for name in carry:
                if name in feeds:
                    entry["inputs"][name] = sample_manifest.write_tensor(
                        part, "frame_{}/fed_{}.dat".format(frame["id"], name), feeds[name])
        if index == 0:
            out_manifest["outputs"] = [{"name": n, "dtype": str(np.asarray(outputs[n]).dtype)}
                                       for n in backend.output_names]
        out_manifest["frames"].append(entry)
        per_frame.append({"id": frame["id"], "latency_ms": latencies})
        log("frame {} ({}/{}): {:.1f} ms".format(frame["id"], index + 1, len(samples["frames"]), min(latencies)))
        previous = outputs
    return per_frame


def _reference_stats(have, want):
    # type: (Any, Any) -> Dict[str, Any]
    try:
        return compare.reference_stats(have, want)
    except ValueError as exc:
        raise RunError(str(exc), fix="the samples come from another model: re-export and push")


def _find_onnx(set_dir):
    # type: (str) -> Optional[str]
    """The one *.onnx beside the samples (in the set dir or its parent: the pushed `current/` layout)."""
    for folder in (set_dir, os.path.dirname(os.path.abspath(set_dir))):
        found = sorted(f for f in os.listdir(folder) if f.endswith(".onnx")) if os.path.isdir(folder) else []
        if len(found) == 1:
            return os.path.join(folder, found[0])
        if len(found) > 1:
            raise RunError("several ONNX files in {}: {}".format(folder, ", ".join(found)),
                           fix="name one with --onnx")
    return None


def make_backend(args, samples):
    # type: (Any, Dict[str, Any]) -> Any
    if args.backend == "onnxruntime":
        onnx_path = args.onnx or _find_onnx(args.set_dir)
        if not onnx_path:
            raise RunError("no ONNX file beside {}".format(args.set_dir), fix="pass --onnx PATH")
        return OnnxRuntimeBackend(onnx_path, args.precision)
    onnx_path = args.onnx or (None if args.engine and os.path.isfile(args.engine) else _find_onnx(args.set_dir))
    backend = TensorRTBackend(args.engine, onnx_path, args.plugin, args.precision, samples.get("profile", {}))
    if args.engine and not os.path.isfile(args.engine):
        backend.save_engine(args.engine)
    return backend


def parse_args(argv):
    # type: (Optional[List[str]]) -> Any
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("tensorrt", "onnxruntime"), default="tensorrt")
    parser.add_argument("--set-dir", required=True, help="samples directory (manifest.json + frame_*/)")
    parser.add_argument("--out", required=True, help="directory for the outputs (replaced when complete)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    parser.add_argument("--onnx", help="ONNX model (default: the one *.onnx beside the samples)")
    parser.add_argument("--engine", help="TensorRT engine; built from the ONNX and saved here if missing")
    parser.add_argument("--plugin", help="plugin library to load (TensorRT backend)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per frame for timing (first one's outputs kept)")
    parser.add_argument("--save-history-inputs", action="store_true",
                        help="also write the history inputs actually fed to each frame")
    return parser.parse_args(argv)


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    args = parse_args(argv)
    try:
        samples = sample_manifest.load(args.set_dir)
        backend = make_backend(args, samples)
        try:
            result = run_sequence(backend, args.set_dir, args.out, repeat=args.repeat,
                                  save_history_inputs=args.save_history_inputs,
                                  log=lambda text: sys.stderr.write(text + "\n"))
        finally:
            backend.close()
        result["precision"] = args.precision
        if getattr(backend, "custom_nodes", None) is not None:
            result["custom_nodes"] = backend.custom_nodes
    except (RunError, sample_manifest.ManifestError) as exc:
        protocol.emit(protocol.ERROR, {"message": exc.message, "fix": exc.fix, "path": exc.path})
        return EXIT_USER_ERROR
    protocol.emit(protocol.RESULT, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
