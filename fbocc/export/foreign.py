"""Samples from a folder of raw `.dat` inputs written by NVlabs/FB-BEV's deployment scripts, turned into an fbocc
samples directory (manifest.json + frame_NNN/*.dat) for `push-to-target`, `remote-bench` and `check-onnx --run`.

Layouts read (both headerless raw arrays, what `trtexec --loadInputs` takes):
- `deployment/pth2onnx.py --data_dir D`: one frame, `D/<input>.dat` for all 20 inputs (+ `.npy` of ranks_bev,
  interval_starts, indexes);
- `deployment/eval_orin/preprocess_samples.py --save_dir D`: `D/0/`, `D/1/`, ... one frame each, every input
  but `history_bev` (its `run_data_trt.sh` starts the history at zeros).
Dtypes and static dimensions come from the ONNX graph, the one dynamic dimension of an input from its file
size. `<output>.dat` files beside the inputs become the frame's reference outputs.

What upstream's scripts leave out is supplied or named: `bev_query_depth` is written by both scripts but loaded
by neither `create_trt_engine.sh` nor `run_data_trt.sh` (trtexec then feeds it random values); fbocc loads it.
A missing history input starts at zeros (as `run_data_trt.sh` does); any other missing input is an error that
names it.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbocc import __version__
from fbocc.errors import ValidationError

HISTORY_PAIRS = (("history_bev", "output_history_bev"), ("history_seq_ids", "output_history_seq_ids"),
                 ("history_sweep_time", "output_history_sweep_time"))
FORGOTTEN_BY_UPSTREAM_SCRIPTS = ("bev_query_depth",)  # written to .dat, never passed to trtexec --loadInputs
_ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "int64": 8, "bool": 1, "uint8": 1, "int8": 1, "float64": 8}


@dataclass
class ForeignSamples:
    """What `samples_from_fbbev_folder` wrote and what it had to supply."""

    out: Path
    layout: str
    frames: int
    supplied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    references: bool = False


@dataclass
class GraphTensor:
    name: str
    dtype: str
    shape: list[int | str]


def graph_tensors(onnx_path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """The graph's (inputs, outputs) with dtype and shape (str for a symbolic dimension)."""
    from fbocc.export.onnx_graph import graph_io

    inputs, outputs = graph_io(onnx_path)
    return ([GraphTensor(v.name, v.dtype or "?", list(v.shape or [])) for v in inputs],
            [GraphTensor(v.name, v.dtype or "?", list(v.shape or [])) for v in outputs])


def frame_dirs(folder: Path) -> tuple[str, list[Path]]:
    """("pth2onnx", [folder]) or ("preprocess_samples", numbered subfolders in numeric order)."""
    if not folder.is_dir():
        raise ValidationError(f"{folder} is not a directory", where=str(folder),
                              fix="pass the --data_dir of pth2onnx.py or the --save_dir of preprocess_samples.py")
    if any(folder.glob("*.dat")):
        return "pth2onnx", [folder]
    numbered = sorted((p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)),
                      key=lambda p: int(p.name))
    if not numbered:
        raise ValidationError(f"{folder} holds neither <input>.dat files nor numbered frame folders (0/, 1/, ...)",
                              where=str(folder), fix="point to the folder FB-BEV's deployment scripts wrote")
    return "preprocess_samples", numbered


def infer_shape(tensor: GraphTensor, nbytes: int, where: Path) -> list[int]:
    """The graph shape with its one symbolic dimension solved from the file size."""
    item = _ITEMSIZE.get(tensor.dtype)
    if item is None:
        raise ValidationError(f"graph input {tensor.name} has dtype {tensor.dtype}, which fbocc cannot read",
                              where=str(where))
    dims = [d if isinstance(d, int) and d > 0 else None for d in tensor.shape]
    static = math.prod(d for d in dims if d is not None) * item
    unknown = [i for i, d in enumerate(dims) if d is None]
    if not unknown:
        if nbytes != static:
            raise ValidationError(f"{where}: {nbytes} bytes, but {tensor.name} is {tensor.dtype} {tensor.shape} "
                                  f"({static} bytes)", where=str(where),
                                  fix="the .dat files must come from the same export as the ONNX graph")
        return [int(d) for d in dims if d is not None]
    if len(unknown) > 1 or static == 0 or nbytes % static:
        raise ValidationError(f"{where}: {nbytes} bytes do not fit {tensor.name} {tensor.dtype} {tensor.shape}",
                              where=str(where), fix="the .dat files must come from the same export as the graph")
    dims[unknown[0]] = nbytes // static
    return [int(d) for d in dims if d is not None]


def _output_shape(t: GraphTensor, frame_dir: Path, inputs: dict[str, Any]) -> list[int] | None:
    """An output's shape: the graph's when fixed, else its `.npy` (FB-BEV's way of keeping shapes), else the
    shape of the history input it feeds."""
    if t.shape and all(isinstance(x, int) and x > 0 for x in t.shape):
        return [int(x) for x in t.shape]
    npy = frame_dir / f"{t.name}.npy"
    if npy.is_file():
        import numpy as np

        return list(np.load(npy, mmap_mode="r").shape)
    paired = {o: i for i, o in HISTORY_PAIRS}.get(t.name)
    if paired and paired in inputs:
        return list(inputs[paired]["shape"])
    return None


def _profile(shapes: list[list[int]], dynamic: list[int], margin: float) -> dict[str, list[int]]:
    lo = [min(s[i] for s in shapes) for i in range(len(shapes[0]))]
    hi = [max(s[i] for s in shapes) for i in range(len(shapes[0]))]
    mn, mx = list(lo), list(hi)
    for axis in dynamic:
        mn[axis] = max(1, math.floor(lo[axis] * (1.0 - margin)))
        mx[axis] = math.ceil(hi[axis] * (1.0 + margin))
    return {"min": mn, "opt": list(shapes[-1]), "max": mx}


def samples_from_fbbev_folder(folder: Path, onnx_path: Path, out: Path, *, profile_margin: float = 0.25,
                              progress: Callable[[str], None] = lambda _m: None) -> ForeignSamples:
    """Write an fbocc samples directory at `out` (replaced atomically) from FB-BEV's .dat folder."""
    import numpy as np

    from fbocc.export.samples import publish_dir, save_manifest, sha256_file, write_tensor

    folder, onnx_path, out = Path(folder), Path(onnx_path), Path(out).resolve()
    layout, dirs = frame_dirs(folder)
    inputs, outputs = graph_tensors(onnx_path)
    history_inputs = {i for i, _ in HISTORY_PAIRS}
    missing = {}
    for d in dirs:
        lacking = [t.name for t in inputs if not (d / f"{t.name}.dat").is_file() and t.name not in history_inputs]
        if lacking:
            missing[str(d)] = lacking
    if missing:
        listing = "; ".join(f"{d}: {', '.join(names)}" for d, names in missing.items())
        raise ValidationError(f"FB-BEV sample folder lacks graph inputs: {listing}", where=str(folder),
                              fix="re-run FB-BEV's deployment/pth2onnx.py or eval_orin/preprocess_samples.py "
                                  "(both write every input but history_bev); fbocc computes none of them itself")
    result = ForeignSamples(out=out, layout=layout, frames=len(dirs))
    for name in FORGOTTEN_BY_UPSTREAM_SCRIPTS:
        if any(t.name == name for t in inputs):
            result.supplied.append(f"{name}: loaded from the folder; upstream's create_trt_engine.sh and "
                                   "run_data_trt.sh leave it out of --loadInputs (trtexec then feeds random values)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)
    try:
        frames, shapes = [], {t.name: [] for t in inputs}  # type: ignore[var-annotated]
        zeros_entries: dict[str, dict[str, Any]] = {}
        for k, d in enumerate(dirs):
            fid = f"{k:03d}"
            progress(f"frame {fid}: {d}")
            entry: dict[str, Any] = {"id": fid, "inputs": {}, "outputs": {}, "source_dir": d.name}
            for t in inputs:
                path = d / f"{t.name}.dat"
                if not path.is_file():  # a history input: zeros, as run_data_trt.sh starts it
                    if t.name not in zeros_entries:
                        shape = [int(x) if isinstance(x, int) and x > 0 else 1 for x in t.shape]
                        zeros_entries[t.name] = write_tensor(staging, f"{t.name}.zeros.dat",
                                                             np.zeros(shape, dtype=t.dtype))
                        result.supplied.append(f"{t.name}: zeros {shape} (absent from the folder; "
                                               "run_data_trt.sh starts the history at zeros)")
                    entry["inputs"][t.name] = zeros_entries[t.name]
                    shapes[t.name].append(zeros_entries[t.name]["shape"])
                    continue
                shape = infer_shape(t, path.stat().st_size, path)
                array = np.fromfile(path, dtype=t.dtype).reshape(shape)
                entry["inputs"][t.name] = write_tensor(staging, f"frame_{fid}/{t.name}.dat", array)
                shapes[t.name].append(shape)
            for t in outputs:
                path = d / f"{t.name}.dat"
                if not path.is_file():
                    continue
                out_shape = _output_shape(t, d, entry["inputs"])
                if out_shape is None:
                    result.notes.append(f"{path}: the graph leaves its shape open {t.shape} and no {t.name}.npy "
                                        "gives it; not used as a reference")
                    continue
                array = np.fromfile(path, dtype=t.dtype)
                if array.size != math.prod(out_shape):
                    raise ValidationError(f"{path}: {array.size} values, {t.name} is {out_shape}", where=str(path),
                                          fix="the reference outputs must come from the same export")
                entry["outputs"][t.name] = write_tensor(staging, f"frame_{fid}/{t.name}.dat",
                                                        array.reshape(out_shape))
            result.references = result.references or bool(entry["outputs"])
            frames.append(entry)
        starts = [bool(np.fromfile(d / "start_of_sequence.dat", dtype=np.bool_)[0]) for d in dirs
                  if (d / "start_of_sequence.dat").is_file()]
        if len(starts) > 1 and all(starts):
            result.notes.append("every frame has start_of_sequence = 1 (preprocess_samples.py sets it for every "
                                "sample): the temporal history is never used")
        dynamic = {t.name: [i for i, x in enumerate(t.shape) if not (isinstance(x, int) and x > 0)] for t in inputs}
        names = {t.name for t in inputs} | {t.name for t in outputs}
        manifest = {
            "inputs": [{"name": t.name, "dtype": t.dtype} for t in inputs],
            "outputs": [{"name": t.name, "dtype": t.dtype} for t in outputs],
            "profile": {n: _profile(shapes[n], axes, profile_margin) for n, axes in dynamic.items() if axes},
            "profile_margin": profile_margin,
            "history": [{"input": i, "output": o} for i, o in HISTORY_PAIRS if i in names and o in names],
            "frames": frames,
            "model": {"name": onnx_path.stem, "onnx": {"file": onnx_path.name, "sha256": sha256_file(onnx_path)}},
            "export": {"fbocc": __version__, "exporter": "FB-BEV deployment/pth2onnx.py",
                       "samples_from": layout},
            "source": "fbbev-dat",
            "source_note": (f"{len(dirs)} frame(s) of FB-BEV's {layout} .dat folder {folder.name}; "
                            + "; ".join(result.supplied + result.notes)),
        }
        save_manifest(staging, manifest)
        publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
