"""A STAND-IN for the `tensorrt` Python module, for tests only: no TensorRT binary can be had here.

It implements the slice of TensorRT's name-based runtime API that deploy/run_sequence.py uses (8.6 and
10 spell it the same way) and checks every call strictly: unknown tensor names, wrong ranks or shapes,
missing addresses or a null stream fail loudly. Its one "engine" is the tiny temporal test model of
tests/test_run_sequence.py, computed with deploy/ort_ops.py's numpy ops on tensors that really live in
CUDA device memory: inputs are copied device->host from the addresses the runner bound, outputs are
copied host->device to the addresses it bound (libcudart through ctypes, on the runner's stream).

An engine file for it is JSON: {"standin": "tiny_temporal", ...} (see `ENGINE`).

It also implements the builder slice deploy/create_engine.py uses, as the TensorRT version in
FBOCC_STANDIN_TRT_VERSION (unset: the 10.x API, `__version__` "0.0-standin") publishes it in
NVIDIA/TensorRT `python/src/infer/pyCore.cpp` of that release branch:
- NetworkDefinitionCreationFlag: 8.6 EXPLICIT_BATCH, EXPLICIT_PRECISION (no STRONGLY_TYPED); 10.x
  EXPLICIT_BATCH, STRONGLY_TYPED; 11.0 STRONGLY_TYPED ("Deprecated: always enabled"), no EXPLICIT_BATCH.
- BuilderFlag: FP16, INT8 (and BF16, FP8 from 10.0, INT4 from 10.1) until 10.x; 11.0 has none of them
  (weak typing removed), so `trt.BuilderFlag.FP16` is an AttributeError there, as with pybind11's enum.
- 8.6's ONNX parser needs an explicit-batch network (`1 << EXPLICIT_BATCH`); a strongly typed network
  refuses precision builder flags at build time (TensorRT 10: they are not allowed with strong typing).
The "engine" it serializes records what TensorRT would run: strongly typed (11.x always) runs the graph's
own types (int8 with Q/DQ nodes, fp16 with fp16 tensors, else fp32), weakly typed runs the flags.
"""

import ctypes
import json
import os
import sys

import numpy as np

from deploy import ort_ops  # the runner runs as `python3 -m deploy.run_sequence`: deploy is importable

_VERSION = os.environ.get("FBOCC_STANDIN_TRT_VERSION")
__version__ = _VERSION or "0.0-standin"
_V = tuple(int(p) for p in (_VERSION or "10.8.0").split(".")[:2])

ENGINE = b'{"standin": "tiny_temporal"}'

C, D, H, W = 2, 3, 4, 5
HIST = (1, C, 2, 2, 3)


class DataType:
    FLOAT = "float32"
    INT32 = "int32"


class TensorIOMode:
    INPUT = "input"
    OUTPUT = "output"


def nptype(dtype):
    return np.dtype(dtype).type


class Logger:
    WARNING = 2

    def __init__(self, severity=WARNING):
        self.severity = severity


def init_libnvinfer_plugins(logger, namespace):
    if not isinstance(logger, Logger) or namespace != "":
        raise TypeError("init_libnvinfer_plugins(logger, '') expected")
    return True


TENSORS = [  # name, mode, dtype, shape
    ("img", TensorIOMode.INPUT, DataType.FLOAT, (1, C, D, H, W)),
    ("grid", TensorIOMode.INPUT, DataType.FLOAT, (1, 3, *HIST[2:])),
    ("depth", TensorIOMode.INPUT, DataType.FLOAT, (1, 1, 2, 2, 2)),
    ("feat", TensorIOMode.INPUT, DataType.FLOAT, (1, 1, 2, 2, C)),
    ("ranks_depth", TensorIOMode.INPUT, DataType.INT32, (6,)),
    ("ranks_feat", TensorIOMode.INPUT, DataType.INT32, (6,)),
    ("ranks_bev", TensorIOMode.INPUT, DataType.INT32, (6,)),
    ("interval_starts", TensorIOMode.INPUT, DataType.INT32, (3,)),
    ("interval_lengths", TensorIOMode.INPUT, DataType.INT32, (3,)),
    ("hist_in", TensorIOMode.INPUT, DataType.FLOAT, HIST),
    ("occ_scores", TensorIOMode.OUTPUT, DataType.FLOAT, (1, *HIST[2:], C)),
    ("hist_out", TensorIOMode.OUTPUT, DataType.FLOAT, HIST),
]
_SPEC = dict((t[0], t) for t in TENSORS)


def _cudart():
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64", "libcudart.so"),
                 "/usr/local/cuda/lib64/libcudart.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise RuntimeError("tensorrt stand-in: libcudart not found")


class Runtime:
    def __init__(self, logger):
        if not isinstance(logger, Logger):
            raise TypeError("Runtime(logger) expected")

    def deserialize_cuda_engine(self, data):
        doc = json.loads(bytes(data).decode())
        if not isinstance(doc, dict) or doc.get("standin") != "tiny_temporal":
            raise ValueError(f"tensorrt stand-in: not a stand-in engine: {doc!r}")
        return Engine()


class Engine:
    num_io_tensors = len(TENSORS)

    def get_tensor_name(self, index):
        return TENSORS[index][0]

    def _spec(self, name):
        if name not in _SPEC:
            raise KeyError(f"tensorrt stand-in: no tensor named {name!r}")
        return _SPEC[name]

    def get_tensor_mode(self, name):
        return self._spec(name)[1]

    def get_tensor_dtype(self, name):
        return self._spec(name)[2]

    def create_execution_context(self):
        return Context(self)

    def serialize(self):
        return ENGINE


class Context:
    def __init__(self, engine):
        self.engine = engine
        self.shapes = {}
        self.addresses = {}
        self.cuda = _cudart()
        self.executions = 0

    def set_input_shape(self, name, shape):
        spec = self.engine._spec(name)
        if spec[1] != TensorIOMode.INPUT:
            raise ValueError(f"tensorrt stand-in: {name} is not an input")
        if tuple(shape) != spec[3]:
            raise ValueError(f"tensorrt stand-in: {name} shape {tuple(shape)} != {spec[3]}")
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        spec = self.engine._spec(name)
        return spec[3]

    def set_tensor_address(self, name, address):
        self.engine._spec(name)
        if not isinstance(address, int) or address == 0:
            raise ValueError(f"tensorrt stand-in: null or non-integer address for {name}")
        self.addresses[name] = address
        return True

    def _copy(self, dst, src, nbytes, kind):
        status = self.cuda.cudaMemcpy(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes), kind)
        if status != 0:
            raise RuntimeError(f"tensorrt stand-in: cudaMemcpy failed with {status}")

    def execute_async_v3(self, stream):
        if not isinstance(stream, int) or stream == 0:
            raise ValueError("tensorrt stand-in: execute_async_v3 needs the runner's CUDA stream handle")
        missing = [t[0] for t in TENSORS if t[0] not in self.addresses or
                   (t[1] == TensorIOMode.INPUT and t[0] not in self.shapes)]
        if missing:
            raise RuntimeError("tensorrt stand-in: tensors not bound: {}".format(", ".join(missing)))
        if self.cuda.cudaStreamSynchronize(ctypes.c_void_p(stream)) != 0:  # the runner's H2D copies
            raise RuntimeError("tensorrt stand-in: cudaStreamSynchronize failed")
        x = {}
        for name, mode, dtype, shape in TENSORS:
            if mode == TensorIOMode.INPUT:
                arr = np.empty(shape, dtype=dtype)
                self._copy(arr.ctypes.data, self.addresses[name], arr.nbytes, 2)
                x[name] = arr
        sampled = ort_ops.grid_sampler3d(x["img"], x["grid"])
        bev = ort_ops.bev_pool_v2(x["depth"], x["feat"], x["ranks_depth"], x["ranks_feat"], x["ranks_bev"],
                                  x["interval_starts"], x["interval_lengths"], 2, 3, 2)
        hist_out = (np.float32(0.5) * x["hist_in"] + sampled + bev.transpose(0, 4, 1, 2, 3)).astype(np.float32)
        outputs = {"hist_out": np.ascontiguousarray(hist_out),
                   "occ_scores": np.ascontiguousarray(hist_out.transpose(0, 2, 3, 4, 1))}
        for name, arr in outputs.items():
            self._copy(self.addresses[name], arr.ctypes.data, arr.nbytes, 1)
        self.executions += 1
        return True


# --- builder slice (versioned; see the module docstring) ---------------------------------------------


class _Enum:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return self.name


def _enum(cls_name, names):
    return type(cls_name, (object,), {n: _Enum(n, i) for i, n in enumerate(names)})


if _V[0] < 10:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"])
    BuilderFlag = _enum("BuilderFlag", ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "TF32", "FP8",
                                        "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"])
elif _V[0] == 10:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    BuilderFlag = _enum("BuilderFlag", ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "TF32", "BF16", "FP8"]
                        + (["INT4"] if _V[1] >= 1 else []) + ["OBEY_PRECISION_CONSTRAINTS",
                                                              "PREFER_PRECISION_CONSTRAINTS"])
else:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED",
                                                                            "PREFER_AOT_PYTHON_PLUGINS",
                                                                            "PREFER_JIT_PYTHON_PLUGINS"])
    BuilderFlag = _enum("BuilderFlag", ["DEBUG", "GPU_FALLBACK", "REFIT", "TF32", "STRIP_PLAN"])
_PRECISION_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4")
MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE"])


def _has(cls, name):
    return isinstance(getattr(cls, name, None), _Enum)


class Network:
    def __init__(self, flags):
        self.flags = flags
        self.explicit_batch = _has(NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and bool(
            flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)))
        self.strongly_typed = _V[0] >= 11 or (_has(NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and bool(
            flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))))
        self.graph_precision = None


class OnnxParser:
    def __init__(self, network, logger):
        if not isinstance(network, Network) or not isinstance(logger, Logger):
            raise TypeError("OnnxParser(network, logger) expected")
        self.network = network
        self.errors = []

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.errors[index]

    def parse_from_file(self, path):
        with open(path, "rb") as fh:
            return self.parse(fh.read())

    def parse(self, blob):
        if _V[0] < 10 and not self.network.explicit_batch:  # TensorRT 8's ONNX parser needs explicit batch
            self.errors.append("ModelImporter: the network must be created with the kEXPLICIT_BATCH flag")
            return False
        import onnx

        graph = onnx.load_from_string(bytes(blob)).graph
        f16 = onnx.TensorProto.FLOAT16
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
            self.network.graph_precision = "int8"
        elif any(a.name == "to" and a.i == f16 for n in graph.node for a in n.attribute) or any(
                i.data_type == f16 for i in graph.initializer):
            self.network.graph_precision = "fp16"
        else:
            self.network.graph_precision = "fp32"
        return True


class OptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max):
        ranks = len(min) == len(opt) == len(max)
        if not ranks or not all(a <= b <= c for a, b, c in zip(min, opt, max, strict=False)):
            raise ValueError(f"tensorrt stand-in: profile of {name} needs min <= opt <= max")
        self.shapes[name] = {"min": list(min), "opt": list(opt), "max": list(max)}


class TimingCache:
    def __init__(self, blob):
        self.blob = bytes(blob)

    def serialize(self):
        return self.blob + b"standin timing entry\n"


class BuilderConfig:
    def __init__(self):
        self.flags = []
        self.profiles = []
        self.pools = {}
        self.cache = None

    def set_flag(self, flag):
        if not isinstance(flag, _Enum):
            raise TypeError("set_flag(trt.BuilderFlag.X) expected")
        self.flags.append(flag.name)

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool.name] = int(size)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob):
        return TimingCache(blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class Builder:
    def __init__(self, logger):
        if not isinstance(logger, Logger):
            raise TypeError("Builder(logger) expected")
        self.logger = logger

    def create_network(self, flags=0):
        return Network(int(flags))

    def create_builder_config(self):
        return BuilderConfig()

    def create_optimization_profile(self):
        return OptimizationProfile()

    def build_serialized_network(self, network, config):
        precision_flags = [f for f in config.flags if f in _PRECISION_FLAGS]
        if network.graph_precision is None:
            sys.stderr.write("[E] tensorrt stand-in: the network is empty (nothing parsed)\n")
            return None
        if network.strongly_typed and precision_flags:
            sys.stderr.write(f"[E] tensorrt stand-in: BuilderFlag {precision_flags[0]} is not allowed with a "
                             "strongly typed network\n")
            return None
        if network.strongly_typed:
            precision = network.graph_precision
        else:
            precision = ("int8" if "INT8" in precision_flags and network.graph_precision == "int8"
                         else "fp16" if "FP16" in precision_flags else "fp32")
        doc = {"standin": "tiny_temporal", "tensorrt": __version__, "strongly_typed": network.strongly_typed,
               "builder_flags": precision_flags, "graph_precision": network.graph_precision, "precision": precision,
               "profiles": [p.shapes for p in config.profiles]}
        return json.dumps(doc).encode()
