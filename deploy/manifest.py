"""Sample manifest: the contract between export (host), push, engine build, benchmark and validation.

Runs on the target too: Python 3.8, standard library only (numpy is optional and used only by
`read_tensor`/`write_tensor`). The host imports this same module (`fbocc.export.samples` wraps it), and
its `sha256_file` is the one content hash of fbocc (samples, pushed files, engines).

Layout of a samples directory::

    manifest.json
    frame_000/<input_name>.dat   one raw file per network input: headerless, C-order, little-endian,
    frame_000/<output_name>.dat  in the tensor's own dtype (what trtexec --loadInputs reads);
    frame_001/...                reference outputs of the same frame beside them (under "outputs")

manifest.json::

    {
      "format": "fbocc-samples/1",
      "inputs":  [{"name": ..., "dtype": ...}, ...],        network inputs, in graph order
      "outputs": [{"name": ..., "dtype": ...}, ...],        network outputs, in graph order
      "profile": {"<input>": {"min": [...], "opt": [...], "max": [...]}},   dynamic inputs only
      "history": [{"input": "<history input>", "output": "<history output>"}],
      "frames": [{"id": "000", "inputs": {"<name>": TENSOR}, "outputs": {"<name>": TENSOR}}, ...],
      "model": {...}, "export": {...}, "source": "synthetic" | "nuscenes" | ...,
      "graphs": [{"precision": "fp32"|"fp16"|"int8", "file": "../M[.fp16|.int8].onnx", "sha256": ..., "bytes": N,
                  "strongly_typed": true, "made_by": {...}, "host_check": {...}}]   (docs/precision.md)
    }
    TENSOR = {"file": "frame_000/x.dat", "dtype": "float32", "shape": [..], "bytes": N, "sha256": "..."}

A run's outputs (deploy.run_sequence --out DIR) are a samples directory of the same format with
`"kind": "run-outputs"`, `"run": {"backend", "versions", "samples_sha256"}` and, per frame, besides
`inputs`/`outputs`:
    "latency_ms": [...]                  per repeat, in ms
    "history_fed_from": {input: "frame K output NAME"}
    "reference_stats": {output: STATS}   the output against the samples' reference, computed where it ran
                                         (deploy.compare.reference_stats: max_abs, sum_abs, count, ref_max,
                                         dot, norm_have, norm_want, exact, integer)
    "remote_only": [output, ...]         added by the host (fbocc validate) for outputs it left on the
                                         target: they have no file here and are judged by reference_stats
"""

import hashlib
import json
import os
from typing import Any, Dict, List, Optional

FORMAT = "fbocc-samples/1"
MANIFEST_NAME = "manifest.json"

ITEMSIZE = {
    "float32": 4, "float16": 2, "int32": 4, "int64": 8, "int8": 1, "uint8": 1, "bool": 1, "float64": 8,
}


class ManifestError(Exception):
    """The manifest or a file it names is wrong. `path` is the file at fault, `fix` says what to do."""

    def __init__(self, message, path=None, fix=None):
        # type: (str, Optional[str], Optional[str]) -> None
        super().__init__(message)
        self.message = message
        self.path = path
        self.fix = fix


def sha256_file(path, chunk=1 << 20, limit=None):
    # type: (str, int, Optional[int]) -> str
    """sha256 (hex) of a file's content, or of its first `limit` bytes when given."""
    digest = hashlib.sha256()
    left = limit
    with open(path, "rb") as fh:
        while left is None or left > 0:
            block = fh.read(chunk if left is None else min(chunk, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def tensor_bytes(dtype, shape):
    # type: (str, List[int]) -> int
    if dtype not in ITEMSIZE:
        raise ManifestError("unsupported dtype {!r}".format(dtype), fix="use one of " + ", ".join(sorted(ITEMSIZE)))
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * ITEMSIZE[dtype]


def load(samples_dir, verify_hashes=False):
    # type: (str, bool) -> Dict[str, Any]
    """Read `manifest.json` in `samples_dir` and check it against the files; return the manifest dict."""
    path = os.path.join(samples_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ManifestError("no {} in {}".format(MANIFEST_NAME, samples_dir), path=path,
                            fix="point to a samples directory written by `fbocc export`")
    try:
        with open(path, "r") as fh:
            manifest = json.load(fh)
    except ValueError as exc:
        raise ManifestError("{} is not valid JSON: {}".format(path, exc), path=path,
                            fix="re-run `fbocc export` to rewrite it")
    validate(manifest, samples_dir, verify_hashes=verify_hashes)
    return manifest


def validate(manifest, samples_dir, verify_hashes=False):
    # type: (Dict[str, Any], str, bool) -> None
    """Every tensor file exists and its size is product(shape) x itemsize (and its sha256 matches)."""
    check_structure(manifest, os.path.join(samples_dir, MANIFEST_NAME))
    for frame in manifest["frames"]:
        for group in ("inputs", "outputs"):
            for name, tensor in frame.get(group, {}).items():
                check_tensor(samples_dir, name, tensor, verify_hashes)


def check_structure(manifest, mpath):
    # type: (Dict[str, Any], str) -> None
    """The document alone (no files): format, the input/output/frame lists, every frame with every input,
    every tensor's byte count consistent with its shape. `mpath` names the file in messages."""
    if not isinstance(manifest, dict):
        raise ManifestError("{}: not a JSON object".format(mpath), path=mpath, fix="re-run `fbocc export`")
    if manifest.get("format") != FORMAT:
        raise ManifestError("{}: format is {!r}, expected {!r}".format(mpath, manifest.get("format"), FORMAT),
                            path=mpath, fix="re-export the samples with this fbocc version")
    for key in ("inputs", "outputs", "frames"):
        if not isinstance(manifest.get(key), list):
            raise ManifestError("{}: field {!r} is missing or not a list".format(mpath, key), path=mpath,
                                fix="re-run `fbocc export`")
    input_names = [t["name"] for t in manifest["inputs"]]
    for frame in manifest["frames"]:
        missing = [n for n in input_names if n not in frame.get("inputs", {})]
        if missing:
            raise ManifestError("{}: frame {} lacks inputs {}".format(mpath, frame.get("id"), ", ".join(missing)),
                                path=mpath, fix="every frame must carry every network input")
        for group in ("inputs", "outputs"):
            for tensor in frame.get(group, {}).values():
                _check_size_field(tensor, mpath)


def _check_size_field(tensor, mpath):
    # type: (Dict[str, Any], str) -> int
    for key in ("file", "dtype", "shape"):
        if key not in tensor:
            raise ManifestError("{}: a tensor entry lacks {!r}".format(mpath, key), path=mpath,
                                fix="re-run `fbocc export`; the manifest is damaged")
    expected = tensor_bytes(tensor["dtype"], tensor["shape"])
    if tensor.get("bytes") is not None and int(tensor["bytes"]) != expected:
        raise ManifestError(
            "{}: manifest says {} bytes but shape {} x {} is {} bytes".format(
                tensor["file"], tensor["bytes"], tensor["shape"], tensor["dtype"], expected),
            path=mpath, fix="re-run `fbocc export`; the manifest is inconsistent")
    return expected


def check_tensor(samples_dir, name, tensor, verify_hash=False):
    # type: (str, str, Dict[str, Any], bool) -> str
    """Check one tensor entry against its file and return the file's path."""
    path = os.path.join(samples_dir, tensor["file"])
    expected = _check_size_field(tensor, path)
    if not os.path.isfile(path):
        raise ManifestError("{} (tensor {!r}) is missing".format(path, name), path=path,
                            fix="re-run `fbocc export` or re-push the samples")
    actual = os.path.getsize(path)
    if actual != expected:
        raise ManifestError(
            "{} (tensor {!r}) has {} bytes, but its manifest entry {} {} needs {} bytes".format(
                path, name, actual, tensor["dtype"], tensor["shape"], expected),
            path=path, fix="the file is truncated or from another export: re-run `fbocc export`")
    if verify_hash and tensor.get("sha256") and sha256_file(path) != tensor["sha256"]:
        raise ManifestError("{} (tensor {!r}) does not match its sha256 in the manifest".format(path, name),
                            path=path, fix="the file changed after export: re-run `fbocc export`")
    return path


def tensor_entry(samples_dir, relfile, dtype, shape):
    # type: (str, str, str, List[int]) -> Dict[str, Any]
    """Describe a tensor file already written under `samples_dir` (size and sha256 from the file)."""
    path = os.path.join(samples_dir, relfile)
    return {"file": relfile.replace(os.sep, "/"), "dtype": dtype, "shape": [int(d) for d in shape],
            "bytes": os.path.getsize(path), "sha256": sha256_file(path)}


def write_tensor(samples_dir, relfile, array):
    # type: (str, str, Any) -> Dict[str, Any]
    """Write a numpy array as a raw little-endian .dat (atomically) and return its manifest entry."""
    import numpy as np

    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    path = os.path.join(samples_dir, relfile)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "wb") as fh:
        fh.write(arr.tobytes(order="C"))
    os.replace(tmp, path)
    return tensor_entry(samples_dir, relfile, str(arr.dtype), list(arr.shape))


def read_tensor(samples_dir, tensor):
    # type: (str, Dict[str, Any]) -> Any
    """Read a tensor entry's file as a numpy array of its dtype and shape (size checked first)."""
    import numpy as np

    path = check_tensor(samples_dir, tensor.get("file", "?"), tensor)
    return np.fromfile(path, dtype=np.dtype(tensor["dtype"]).newbyteorder("<")).reshape(tensor["shape"])


def save(samples_dir, manifest):
    # type: (str, Dict[str, Any]) -> str
    """Write manifest.json atomically (never a half-written manifest at the final path)."""
    manifest.setdefault("format", FORMAT)
    path = os.path.join(samples_dir, MANIFEST_NAME)
    tmp = path + ".part"
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path
