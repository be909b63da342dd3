"""`fbocc export --fbbev TREE`: a user's own FB-BEV code (their config, their modifications) exported to the same
artefacts as fbocc's own export: the ONNX graph with our plugin contract, samples (.dat + manifest.json) and
reference outputs of their PyTorch forward.

The model is theirs: FB-BEV builds it from their config, loads their checkpoint, prepares the inputs with its own
`prepare_*` methods and runs `forward_trt`. Only its three custom-op wrappers are bound to fbocc's contract ops
(`fbocc.model.trt_ops`: same math, our node names and attributes, `out_depth` from the config's grid), so the
graph loads into our plugins. Runs where mmcv/mmdet/mmdet3d import: this interpreter, or `--fbbev-python`
(a subprocess of `python -m fbocc.export.fbbev_export`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from fbocc import __version__
from fbocc.errors import ConfigError, EnvironmentCheckError, FboccError


def export_fbbev(options: Any, progress: Callable[[str], None] = lambda _m: None) -> Any:
    """Export through the FB-BEV tree `options.fbbev`; returns an ExportResult."""
    from fbocc.export.fbbev import check_tree
    from fbocc.export.pipeline import ExportResult

    if (options.checkpoint is None) == (not options.random_weights):
        raise ConfigError("choose the weights: --checkpoint PTH or --random-weights",
                          fix="pass exactly one of --checkpoint and --random-weights")
    if options.dataroot is not None:
        raise ConfigError("--fbbev exports synthetic frames prepared by FB-BEV's own code; --dataroot is not "
                          "supported with it", fix="drop --dataroot, or export with fbocc's model (no --fbbev)")
    if tuple(getattr(options, "precisions", ("fp32",))) != ("fp32",):
        raise ConfigError("--precision fp16/int8 graphs are made from fbocc's own model; with --fbbev only the "
                          "fp32 graph is written", fix="drop --precision, or export without --fbbev")
    check_tree(options.fbbev)
    python = options.fbbev_python or os.environ.get("FBOCC_FBBEV_PYTHON")
    if python and os.path.abspath(python) != os.path.abspath(sys.executable):  # venvs differ by path, not target
        return _in_subprocess(options, python, progress)
    result = _export(options, progress)
    return ExportResult(**result)


def _in_subprocess(options: Any, python: str, progress: Callable[[str], None]) -> Any:
    from fbocc.export.pipeline import ExportResult

    payload = {f.name: (str(v) if isinstance(v, Path) else v) for f in fields(options)
               for v in [getattr(options, f.name)]}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    progress(f"running FB-BEV's code with {python}")
    try:
        proc = subprocess.Popen([python, "-m", "fbocc.export.fbbev_export", json.dumps(payload)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise EnvironmentCheckError(f"cannot run {python}: {exc}", fix="pass the python of the FB-BEV "
                                    "environment with --fbbev-python (fbocc doctor --fbbev TREE checks it)") from exc
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if line.startswith("fbocc-progress: "):
            progress(line[len("fbocc-progress: "):].rstrip())
    answer = proc.stdout.read()
    proc.wait()
    try:
        doc = json.loads(answer.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise EnvironmentCheckError(f"{python} -m fbocc.export.fbbev_export failed (exit {proc.returncode})",
                                    fix="run `fbocc doctor --fbbev TREE --fbbev-python PY`") from exc
    if "error" in doc:
        cls = {"ConfigError": ConfigError, "EnvironmentCheckError": EnvironmentCheckError}.get(doc["kind"],
                                                                                               FboccError)
        raise cls(doc["error"], fix=doc.get("fix"), where=doc.get("where"))
    for key in ("out", "onnx_path", "samples_dir"):
        doc[key] = Path(doc[key])
    return ExportResult(**doc)


@contextlib.contextmanager
def contract_ops(model: Any, config: Any) -> Iterator[None]:
    """Bind the model's custom-op wrappers to fbocc's contract ops for the duration."""
    from fbocc.model import trt_ops

    _, _, z, h, w = config.grid_size
    msda_module: Any = importlib.import_module("mmdet3d.models.fbbev.view_transformation.backward_projection."
                                          "bevformer_utils.multi_scale_deformable_attn_function")

    def bev_pool(depth: Any, feat: Any, rd: Any, rf: Any, rb: Any, starts: Any, lengths: Any) -> Any:
        return trt_ops.bev_pool_v2(depth, feat, rd, rf, rb, starts, lengths, h, w, out_depth=z)

    def grid_sample(input: Any, grid: Any, align_corners: bool = False, interpolation_mode: str = "bilinear",
                    padding_mode: str = "zeros") -> Any:
        return trt_ops.grid_sampler3d(input, grid, interpolation_mode, padding_mode, align_corners)

    def msda(value: Any, shapes: Any, starts: Any, locations: Any, weights: Any) -> Any:
        out = trt_ops.multi_scale_deformable_attn(value, shapes, starts, locations, weights)
        return out.view(value.shape[0], out.shape[1], value.shape[2], value.shape[3])

    holders = [m for m in model.modules() if "multi_scale_deformable_attn" in m.__dict__]
    saved = {n: model.__dict__.get(n) for n in ("bev_pool_v2", "grid_sample")}
    saved_global = msda_module.multi_scale_deformable_attn
    model.bev_pool_v2, model.grid_sample = bev_pool, grid_sample
    for m in holders:
        m.multi_scale_deformable_attn = msda
    msda_module.multi_scale_deformable_attn = msda
    try:
        yield
    finally:
        msda_module.multi_scale_deformable_attn = saved_global
        for m in holders:
            m.multi_scale_deformable_attn = saved_global
        for n, v in saved.items():
            model.__dict__[n] = v


def _frame_config(config: Any) -> Any:
    """A ModelConfig for fbocc's synthetic frames at the config's camera count and image size."""
    from fbocc.model.config import ModelConfig

    data = config.get("data_config", {})
    cams = int(data.get("Ncams", 6))
    if cams != 6:
        raise ConfigError(f"the config's data_config has {cams} cameras; fbocc's synthetic rig has the 6 of "
                          "nuScenes", fix="export with a 6-camera config")
    return ModelConfig(input_size=tuple(data.get("input_size", (256, 704))),
                       src_size=tuple(data.get("src_size", (900, 1600))))


def _export(options: Any, progress: Callable[[str], None]) -> dict[str, Any]:
    import numpy as np
    import torch

    from fbocc.export import fbbev_model
    from fbocc.export.fbbev import activate, check_tree, cpu_as_cuda, tree_provenance
    from fbocc.export.onnx_graph import custom_op_counts, load_graph
    from fbocc.export.pipeline import DYNAMIC_AXES, ONNX_OPSET, manifest_tensors
    from fbocc.export.samples import publish_dir, save_manifest, sha256_file, write_tensor
    from fbocc.model.network import INDEX_INPUTS, INPUT_NAMES, OUTPUT_NAMES, _randomize
    from fbocc.model.synthetic import synthetic_sequence

    t0 = time.monotonic()
    tree = check_tree(options.fbbev)
    activate(tree)
    config = fbbev_model.load_config(tree, options.config_file)
    model = fbbev_model.build(tree, config, init_weights=options.random_weights, seed=options.seed)
    if options.random_weights:
        _randomize(model, options.seed)  # every weight, so no path of their model is left at a constant
        weights: dict[str, Any] = {"kind": "random", "seed": options.seed}
    else:
        from mmcv.runner import load_checkpoint

        with cpu_as_cuda():  # as pth2onnx.py loads it
            load_checkpoint(model, str(options.checkpoint), map_location="cpu",
                            revise_keys=[(r"^module\.", ""), (r"^teacher\.", "")])
        weights = {"kind": "checkpoint", "file": Path(options.checkpoint).name,
                   "sha256": sha256_file(Path(options.checkpoint))}
    model.eval()
    index_dtype = np.dtype(options.index_dtype)
    seconds = {"build": time.monotonic() - t0}
    frames = synthetic_sequence(_frame_config(config), options.samples, seed=options.seed)
    seq = fbbev_model.UpstreamSequence(model, config, history_age="deployment")
    name = Path(options.config_file).stem if options.config_file else Path(fbbev_model.TRT_CONFIG).stem
    onnx_name = options.onnx_name or f"{name}.onnx"
    out = Path(options.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)
    try:
        samples_dir = staging / "samples"
        samples_dir.mkdir()
        shapes: dict[str, list[list[int]]] = {n: [] for n in DYNAMIC_AXES}
        dtypes: dict[str, str] = {}
        out_dtypes: dict[str, str] = {}
        manifest_frames = []
        for i, frame in enumerate(frames):
            fid = f"{i:03d}"
            prepared = seq.prepare(frame)
            inputs = dict(prepared, **seq.history_inputs(frame))
            arrays = fbbev_model.numpy_inputs(inputs)
            for n in INDEX_INPUTS:
                arrays[n] = arrays[n].astype(index_dtype)
            fresh = lambda a=arrays: [torch.from_numpy(a[n].copy()) for n in INPUT_NAMES]  # noqa: E731
            t1 = time.monotonic()
            with contract_ops(model, config), torch.no_grad(), cpu_as_cuda():
                # forward_trt writes into the rebatch inputs: every call gets its own copies
                results = [o.detach().clone() for o in model(fresh())]
                if i == 0:
                    progress(f"sample {fid}: tracing {onnx_name} (TorchScript exporter, opset {ONNX_OPSET})")
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        torch.onnx.export(model, (fresh(),), str(staging / onnx_name), input_names=list(INPUT_NAMES),
                                          output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES,
                                          opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False)
            seconds[f"frame_{fid}"] = time.monotonic() - t1
            progress(f"sample {fid}: FB-BEV forward_trt {seconds[f'frame_{fid}']:.0f} s")
            seq._history = {"history_bev": results[1], "history_seq_ids": results[2],
                            "history_sweep_time": results[3].to(torch.int32)}
            entry: dict[str, Any] = {"id": fid, "inputs": {}, "outputs": {}}
            for n in INPUT_NAMES:
                entry["inputs"][n] = write_tensor(samples_dir, f"frame_{fid}/{n}.dat", arrays[n])
                dtypes[n] = str(arrays[n].dtype)
                if n in shapes:
                    shapes[n].append(list(arrays[n].shape))
            for n, r in zip(OUTPUT_NAMES, results, strict=True):
                value = r.numpy().astype(np.int32) if n in ("output_history_seq_ids",
                                                            "output_history_sweep_time") else r.numpy()
                entry["outputs"][n] = write_tensor(samples_dir, f"frame_{fid}/{n}.dat", value)
                out_dtypes[n] = str(value.dtype)
            manifest_frames.append(entry)
        counts = custom_op_counts(load_graph(staging / onnx_name))
        provenance = tree_provenance(tree)
        manifest = {
            **manifest_tensors(dtypes, out_dtypes, shapes, options.profile_margin, manifest_frames),
            "model": {"name": name, "fbbev": provenance, "weights": weights,
                      "config": str(options.config_file or fbbev_model.TRT_CONFIG),
                      "onnx": {"file": f"../{onnx_name}", "sha256": sha256_file(staging / onnx_name)}},
            "export": {"fbocc": __version__, "torch": torch.__version__, "opset": ONNX_OPSET,
                       "exporter": "torchscript", "index_dtype": options.index_dtype, "custom_ops": counts,
                       "model_code": "fbbev"},
            "source": "synthetic",
            "source_note": (f"deterministic synthetic camera frames (seed {options.seed}) prepared by FB-BEV's own "
                            "prepare_* methods; references from its forward_trt; history carried as its TensorRT "
                            "forward does (ages as output)"),
        }
        save_manifest(samples_dir, manifest)
        publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds["total"] = time.monotonic() - t0
    return {"out": out, "onnx_path": out / onnx_name, "samples_dir": out / "samples", "source": "synthetic",
            "custom_ops": counts, "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES), "seconds": seconds}


def _main(argv: list[str]) -> int:
    """Subprocess entry: one JSON of ExportOptions in, one JSON line of the result (or the error) out."""
    from fbocc.export.pipeline import ExportOptions

    raw: dict[str, Any] = json.loads(argv[0])
    paths = {"out", "config_file", "checkpoint", "dataroot", "info_file", "occ_root", "fbbev"}
    values: dict[str, Any] = {k: (Path(v) if k in paths and v is not None else v) for k, v in raw.items()}
    options = ExportOptions(**values)
    try:
        result = _export(options, lambda m: print(f"fbocc-progress: {m}", file=sys.stderr, flush=True))
    except FboccError as exc:
        print(json.dumps({"error": exc.message if hasattr(exc, "message") else str(exc),
                          "fix": getattr(exc, "fix", None), "where": getattr(exc, "where", None),
                          "kind": type(exc).__name__}))
        return 1
    print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

