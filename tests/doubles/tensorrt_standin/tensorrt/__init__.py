"""A STAND-IN for the `tensorrt` Python module, for tests only: no TensorRT binary can be had here.

It implements the slice of TensorRT's name-based runtime API that deploy/run_sequence.py uses (8.6 and
10 spell it the same way) and checks every call strictly: unknown tensor names, wrong ranks or shapes,
missing addresses or a null stream fail loudly. Its one "engine" is the tiny temporal test model of
tests/test_run_sequence.py, computed with deploy/ort_ops.py's numpy ops on tensors that really live in
CUDA device memory: inputs are copied device->host from the addresses the runner bound, outputs are
copied host->device to the addresses it bound (libcudart through ctypes, on the runner's stream).

An engine file for it is JSON: {"standin": "tiny_temporal"} (see `ENGINE`).
"""

import ctypes
import json
import os

import numpy as np

__version__ = "0.0-standin"

from deploy import ort_ops  # the runner runs as `python3 -m deploy.run_sequence`: deploy is importable

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
        if doc != json.loads(ENGINE):
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
