"""`fbocc export`: FB-OCC -> ONNX graph with the three plugin ops, sample inputs (.dat + manifest.json) and
PyTorch reference outputs for every sample, written atomically into one output directory.

Layout of OUT::

    OUT/<model name>.onnx
    OUT/samples/manifest.json, OUT/samples/frame_000/<input>.dat, .../<output>.dat
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbocc import __version__
from fbocc.errors import ConfigError

ONNX_OPSET = 16  # as FB-BEV's pth2onnx.py; GridSample-free (our ops), ScatterND without reduction
DYNAMIC_AXES: dict[str, dict[int, str]] = {  # as upstream: BEV-pool point/interval counts, per-camera queries
    "ranks_bev": {0: "ranks_bev_shape_0"},
    "ranks_depth": {0: "ranks_depth_shape_0"},
    "ranks_feat": {0: "ranks_feat_shape_0"},
    "interval_starts": {0: "interval_starts_shape_0"},
    "interval_lengths": {0: "interval_lengths_shape_0"},
    "indexes": {2: "indexes_shape_0"},
    "queries_rebatch": {2: "queries_rebatch_shape_0"},
    "reference_points_rebatch": {2: "reference_points_rebatch_shape_0"},
    "bev_query_depth_rebatch": {2: "bev_query_depth_rebatch_shape_0"},
}


@dataclass
class ExportOptions:
    """What to export and where; mirrors the command-line options of `fbocc export`."""

    out: Path
    preset: str = "fbocc-r50-16f"
    config_file: Path | None = None
    checkpoint: Path | None = None
    random_weights: bool = False
    seed: int = 0
    samples: int = 2
    dataroot: Path | None = None
    scene: str | None = None  # scene name or token in the dataroot; default: the first scene
    start: int = 0  # first keyframe of the scene to export
    info_file: Path | None = None  # default: DATAROOT/bevdetv2-nuscenes_infos_{val,train}.pkl
    occ_root: Path | None = None  # Occ3D gts/ folder; default: DATAROOT/gts (labels are then optional)
    index_dtype: str = "int32"  # int32 for TensorRT 8.6, int64 for TensorRT >= 10
    profile_margin: float = 0.25
    onnx_name: str | None = None
    fbbev: Path | None = None  # export through this FB-BEV tree's own code (fbocc/export/fbbev_export.py)
    fbbev_python: str | None = None  # the interpreter of that tree's environment (default: this one)
    precisions: tuple[str, ...] = ("fp32",)  # graphs to write: fp32 always, fp16 and int8 beside it
    calib_frames: int | None = None  # int8 calibration / sensitivity frames (default: every sample)


@dataclass
class ExportResult:
    """What `export` wrote."""

    out: Path
    onnx_path: Path
    samples_dir: Path
    source: str
    custom_ops: dict[str, int]
    inputs: list[str]
    outputs: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    graphs: list[dict[str, Any]] = field(default_factory=list)  # the manifest's `graphs` (docs/precision.md)


def resolve_model_config(options: ExportOptions) -> Any:
    """The ModelConfig of the preset, or of an FB-BEV config file read with mmengine (optional extra)."""
    from fbocc.model.config import PRESETS

    if options.preset not in PRESETS:
        raise ConfigError(f"unknown preset {options.preset!r}", fix=f"use one of: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[options.preset]
    if options.config_file is None:
        return cfg
    if not options.config_file.is_file():
        raise ConfigError(f"FB-BEV config {options.config_file} does not exist", fix="pass the path of the .py config")
    try:
        from mmengine.config import Config
    except ImportError as exc:
        raise ConfigError("reading an FB-BEV config file needs mmengine", where=str(options.config_file),
                          fix="pip install mmengine, or use --preset fbocc-r50-16f") from exc
    parsed = Config.fromfile(str(options.config_file))
    model = parsed.get("model", {})
    checks = {
        "history_cat_num": (model.get("history_cat_num"), cfg.history_cat_num),
        "single_bev_num_channels": (model.get("single_bev_num_channels"), cfg.embed_dims),
        "img_backbone.depth": (model.get("img_backbone", {}).get("depth"), 50),
        "occupancy_head.out_channel": (model.get("occupancy_head", {}).get("out_channel"), cfg.num_classes),
    }
    wrong = [f"{k}={got!r} (built: {want!r})" for k, (got, want) in checks.items() if got != want]
    if wrong:
        raise ConfigError(f"{options.config_file} describes a model this build does not implement: "
                          + ", ".join(wrong), fix="use the fbocc-r50-cbgs_depth_16f_16x4_20e config")
    return cfg


def _profile(shapes: list[list[int]], dynamic: dict[int, str], margin: float) -> dict[str, list[int]]:
    lo = [min(s[i] for s in shapes) for i in range(len(shapes[0]))]
    hi = [max(s[i] for s in shapes) for i in range(len(shapes[0]))]
    opt = list(shapes[-1])
    mn, mx = list(lo), list(hi)
    for axis in dynamic:
        mn[axis] = max(1, math.floor(lo[axis] * (1.0 - margin)))
        mx[axis] = math.ceil(hi[axis] * (1.0 + margin))
    return {"min": mn, "opt": opt, "max": mx}


def manifest_tensors(dtypes: dict[str, str], out_dtypes: dict[str, str], shapes: dict[str, list[list[int]]],
                     margin: float, frames: list[dict[str, Any]]) -> dict[str, Any]:
    """The tensor part of a samples manifest of the 20-input graph: inputs, outputs, optimization profile (min/opt/
    max per dynamic input), history pairs and frames. Our export and `export --fbbev` share it."""
    from fbocc.model.network import HISTORY_PAIRS, INPUT_NAMES, OUTPUT_NAMES

    return {
        "inputs": [{"name": n, "dtype": dtypes[n]} for n in INPUT_NAMES],
        "outputs": [{"name": n, "dtype": out_dtypes[n]} for n in OUTPUT_NAMES],
        "profile": {n: _profile(s, DYNAMIC_AXES[n], margin) for n, s in shapes.items()},
        "profile_margin": margin,
        "history": [{"input": i, "output": o} for i, o in HISTORY_PAIRS],
        "frames": frames,
    }




def export(options: ExportOptions, progress: Callable[[str], None] = lambda _m: None) -> ExportResult:
    """Build the model, write the ONNX graph and the samples into `options.out` (replaced atomically)."""
    if options.fbbev is not None:
        from fbocc.export.fbbev_export import export_fbbev

        return export_fbbev(options, progress)
    if options.index_dtype not in ("int32", "int64"):
        raise ConfigError(f"index dtype {options.index_dtype!r} is not int32 or int64",
                          fix="--index-dtype int32 (TensorRT 8.6) or int64 (TensorRT >= 10)")
    if options.samples < 1:
        raise ConfigError(f"--samples {options.samples}: need at least one sample", fix="--samples 2")
    if not 0.0 <= options.profile_margin < 1.0:
        raise ConfigError(f"profile margin {options.profile_margin} is outside [0, 1)", fix="e.g. 0.25")
    if (options.checkpoint is None) == (not options.random_weights):
        raise ConfigError("choose the weights: --checkpoint PTH or --random-weights",
                          fix="pass exactly one of --checkpoint and --random-weights")
    if options.dataroot is None and (options.scene is not None or options.start or options.info_file is not None
                                     or options.occ_root is not None):
        raise ConfigError("--scene, --start, --info-file and --occ-root choose samples of a dataset",
                          fix="add --dataroot NUSCENES")
    from fbocc.export.graphs import check_calib_frames
    from fbocc.export.precision import parse_precisions

    precisions = parse_precisions(options.precisions)
    check_calib_frames(options.calib_frames, options.samples)
    if "int8" in precisions:  # before minutes of export, not after
        from fbocc.export.quantize import require_modelopt

        require_modelopt()
    cfg = resolve_model_config(options)
    sequence = None
    if options.dataroot is not None:  # read (and check) the dataset before spending minutes on the model
        from fbocc.model.nuscenes import nuscenes_sequence

        progress(f"reading {options.samples} keyframes from {options.dataroot}")
        sequence = nuscenes_sequence(cfg, options.dataroot, options.samples, scene=options.scene,
                                     start=options.start, info_file=options.info_file, occ_root=options.occ_root)

    import numpy as np
    import torch

    from fbocc.export.samples import publish_dir, save_manifest, sha256_file, write_tensor
    from fbocc.model.checkpoint import load_checkpoint
    from fbocc.model.network import HISTORY_PAIRS, INPUT_NAMES, OUTPUT_NAMES, TraceRecorder, build_model
    from fbocc.model.preprocess import SequencePreprocessor
    from fbocc.model.synthetic import synthetic_sequence

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    index_dtype = torch.int32 if options.index_dtype == "int32" else torch.int64
    if options.random_weights:
        model = build_model(cfg, index_dtype=index_dtype, seed=options.seed)
        weights: dict[str, Any] = {"kind": "random", "seed": options.seed}
    else:
        assert options.checkpoint is not None
        model = build_model(cfg, index_dtype=index_dtype)
        load_checkpoint(model, options.checkpoint)
        weights = {"kind": "checkpoint", "file": options.checkpoint.name, "sha256": sha256_file(options.checkpoint)}
    timings["build"] = time.monotonic() - t0

    out = options.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would survive the rename
    try:
        samples_dir = staging / "samples"
        samples_dir.mkdir()
        if sequence is not None:
            frames = [s.frame for s in sequence.samples]
        else:
            frames = synthetic_sequence(cfg, options.samples, seed=options.seed)
        pre = SequencePreprocessor(cfg, options.index_dtype)
        history = pre.initial_history(frames[0].sequence_id)
        onnx_name = options.onnx_name or f"{cfg.name}.onnx"
        onnx_tmp = staging / onnx_name
        manifest_frames = []
        shapes: dict[str, list[list[int]]] = {n: [] for n in DYNAMIC_AXES}
        dtypes: dict[str, str] = {}
        out_dtypes: dict[str, str] = {}
        recorder = TraceRecorder(model)
        for i, frame in enumerate(frames):
            fid = f"{i:03d}"
            arrays = pre.inputs(frame)
            arrays.update(history)
            tensors = tuple(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in INPUT_NAMES)
            t1 = time.monotonic()
            if i == 0:
                # The trace runs the model once on frame 0: its outputs are frame 0's reference outputs.
                progress(f"sample {fid}: tracing and writing {onnx_name} (TorchScript exporter, opset {ONNX_OPSET})")
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
                    torch.onnx.export(
                        recorder, tensors, str(onnx_tmp), input_names=list(INPUT_NAMES),
                        output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES, opset_version=ONNX_OPSET,
                        do_constant_folding=True, dynamo=False)
                results = recorder.take()
                model.eval()  # whatever the exporter restored, references are computed in eval mode
                if any(m.training for m in model.modules()):
                    raise RuntimeError("the model left eval mode during export")
                timings["onnx"] = time.monotonic() - t1
            else:
                progress(f"sample {fid}: PyTorch reference forward")
                with torch.no_grad():
                    results = model(*tensors)
                timings[f"frame_{fid}"] = time.monotonic() - t1
            entry: dict[str, Any] = {"id": fid, "inputs": {}, "outputs": {}}
            for name in INPUT_NAMES:
                entry["inputs"][name] = write_tensor(samples_dir, f"frame_{fid}/{name}.dat", arrays[name])
                dtypes[name] = str(arrays[name].dtype)
                if name in shapes:
                    shapes[name].append(list(arrays[name].shape))
            out_arrays = {n: r.numpy() for n, r in zip(OUTPUT_NAMES, results, strict=True)}
            for name in OUTPUT_NAMES:
                entry["outputs"][name] = write_tensor(samples_dir, f"frame_{fid}/{name}.dat", out_arrays[name])
                out_dtypes[name] = str(out_arrays[name].dtype)
            history = {inp: out_arrays[outp] for inp, outp in HISTORY_PAIRS}
            if sequence is not None:
                sample = sequence.samples[i]
                entry["sample_token"] = sample.token
                entry["timestamp"] = sample.timestamp
                if sample.ground_truth is not None:  # Occ3D layout; validate maps predictions onto it
                    entry["ground_truth"] = {
                        name: write_tensor(samples_dir, f"frame_{fid}/gt_{name}.dat", array)
                        for name, array in sample.ground_truth.items()}
            manifest_frames.append(entry)

        from fbocc.export.onnx_graph import custom_op_counts, load_graph

        graph = load_graph(onnx_tmp)
        counts = custom_op_counts(graph)
        del graph
        manifest = {
            **manifest_tensors(dtypes, out_dtypes, shapes, options.profile_margin, manifest_frames),
            "model": {"name": cfg.name, "preset": options.preset, "weights": weights,
                      "onnx": {"file": f"../{onnx_name}", "sha256": sha256_file(onnx_tmp)}},
            "export": {"fbocc": __version__, "torch": torch.__version__, "opset": ONNX_OPSET,
                       "exporter": "torchscript", "index_dtype": options.index_dtype,
                       "custom_ops": counts},
        }
        if sequence is None:
            manifest["source"] = "synthetic"
            manifest["source_note"] = ("deterministic synthetic camera frames and nuScenes-like calibration "
                                       f"(seed {options.seed}); not real sensor data")
        else:
            manifest["source"] = "nuscenes"
            manifest["source_note"] = (f"{len(frames)} consecutive keyframes of nuScenes {sequence.scene_name} "
                                       f"from keyframe {sequence.start}, prepared as FB-BEV's test pipeline; "
                                       + ("Occ3D labels per frame" if sequence.has_ground_truth
                                          else "no Occ3D labels found"))
            manifest["dataset"] = {
                "scene_name": sequence.scene_name, "scene_token": sequence.scene_token, "start": sequence.start,
                "info_file": sequence.info_file.name, "sample_tokens": [s.token for s in sequence.samples],
                "ground_truth": "occ3d" if sequence.has_ground_truth else None,
                # FB-BEV's post-processing: drop the void channel 0, rotate the grid into Occ3D's layout
                "prediction_to_ground_truth": "fbbev-occ3d" if sequence.has_ground_truth else None,
            }
        save_manifest(samples_dir, manifest)
        from fbocc.export.graphs import make_graphs

        graphs = make_graphs(model, staging, onnx_name, samples_dir, manifest_frames, precisions,
                             options.calib_frames, weights["kind"], torch.__version__, ONNX_OPSET, progress, timings)
        manifest["graphs"] = graphs
        save_manifest(samples_dir, manifest)
        publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    timings["total"] = time.monotonic() - t0
    return ExportResult(out=out, onnx_path=out / onnx_name, samples_dir=out / "samples",
                        source="synthetic" if sequence is None else "nuscenes",
                        custom_ops=counts, inputs=list(INPUT_NAMES), outputs=list(OUTPUT_NAMES), seconds=timings,
                        graphs=graphs)
