"""`fbocc export` (checkpoint -> ONNX + samples) and `fbocc check-onnx` (graph vs plugin contract)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from fbocc.cli.app import app, emit_json, err, out
from fbocc.errors import ValidationError


@app.command("export")
def export_cmd(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory (replaced atomically).")] = Path(
        "fbocc-export"),
    preset: Annotated[str, typer.Option("--preset", help="Built-in model preset.")] = "fbocc-r50-16f",
    config: Annotated[Path | None, typer.Option(
        "--config", help="FB-BEV config .py to check against the preset (needs mmengine).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="FB-BEV checkpoint .pth.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Deterministic random weights.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of random weights and synthetic samples.")] = 0,
    samples: Annotated[int, typer.Option("--samples", help="Number of consecutive frames to write.")] = 2,
    dataroot: Annotated[Path | None, typer.Option(
        "--dataroot", help="nuScenes root (FB-BEV layout, Occ3D gts/ optional): real keyframes instead of "
        "synthetic frames.")] = None,
    scene: Annotated[str | None, typer.Option(
        "--scene", help="With --dataroot: scene name or token (default: the first scene).")] = None,
    start: Annotated[int, typer.Option("--start", help="With --dataroot: first keyframe of the scene.")] = 0,
    info_file: Annotated[Path | None, typer.Option(
        "--info-file", help="With --dataroot: info .pkl (default: bevdetv2-nuscenes_infos_val.pkl there).")] = None,
    occ_root: Annotated[Path | None, typer.Option(
        "--occ-root", help="With --dataroot: Occ3D gts/ folder (default: DATAROOT/gts, used when present).")] = None,
    index_dtype: Annotated[str, typer.Option(
        "--index-dtype", help="int32 (TensorRT 8.6) or int64 (TensorRT >= 10) index inputs.")] = "int32",
    profile_margin: Annotated[float, typer.Option(
        "--profile-margin", help="Min/max of dynamic shapes: sample range widened by this fraction.")] = 0.25,
    fbbev: Annotated[Path | None, typer.Option(
        "--fbbev", help="Export through this NVlabs/FB-BEV tree's own code (its --config, default its _trt "
        "config) instead of fbocc's model.")] = None,
    fbbev_python: Annotated[str | None, typer.Option(
        "--fbbev-python", help="With --fbbev: python of the environment that imports it (mmcv 1.7.0).",
        envvar="FBOCC_FBBEV_PYTHON")] = None,
    precision: Annotated[str, typer.Option(
        "--precision", help="Graphs to write, comma-separated: fp32 (always), fp16 (typed, fp32 islands by "
        "measured sensitivity), int8 (Q/DQ by NVIDIA Model Optimizer).")] = "fp32",
    calib_frames: Annotated[int | None, typer.Option(
        "--calib-frames", help="Frames (in sequence order) for INT8 calibration and the sensitivity "
        "measurements (default: every sample).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export FB-OCC to ONNX with the plugin ops, sample .dat inputs and reference outputs."""
    from fbocc.export.pipeline import ExportOptions, export

    options = ExportOptions(out=out_dir, preset=preset, config_file=config, checkpoint=checkpoint,
                            random_weights=random_weights, seed=seed, samples=samples, dataroot=dataroot,
                            scene=scene, start=start, info_file=info_file, occ_root=occ_root,
                            index_dtype=index_dtype, profile_margin=profile_margin,
                            precisions=tuple(precision.split(",")), calib_frames=calib_frames,
                            fbbev=fbbev, fbbev_python=fbbev_python)
    result = export(options, progress=lambda msg: err.print(f"export: {msg}"))
    if as_json:
        data = asdict(result)
        emit_json({k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()})
        return
    out.print(f"ONNX     {result.onnx_path}")
    out.print(f"samples  {result.samples_dir} ({options.samples} frames, source: {result.source})")
    out.print("plugin ops " + ", ".join(f"{k} x{v}" for k, v in result.custom_ops.items()))
    for graph in result.graphs[1:]:
        made = graph["made_by"]
        how = (f"fp32 islands: {', '.join(made['fp32_islands']) or 'none'}" if graph["precision"] == "fp16" else
               f"{made['quantized_layers']} layers INT8, {len(made['excluded_layers'])} left fp32, calibrated on "
               f"{len(made['calibration']['frames'])} frame(s)")
        out.print(f"{graph['precision']:<8} {result.out / graph['file'][3:]} ({how})")
        check = graph.get("host_check")
        if check:
            out.print(check["markdown"])
            if check.get("note"):
                out.print(f"note: {check['note']}")
    out.print(f"took {result.seconds.get('total', 0.0):.0f} s")


@app.command("check-onnx")
def check_onnx_cmd(
    model: Annotated[Path, typer.Argument(help="The ONNX file to check.")],
    samples: Annotated[Path | None, typer.Option("--samples", help="Samples directory (manifest.json).")] = None,
    run: Annotated[bool, typer.Option("--run", help="Also run the graph in ONNX Runtime over the samples and "
                                      "compare with their reference outputs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check an ONNX graph against the plugin contract (and a samples manifest)."""
    from fbocc.export.onnx_graph import check_onnx

    report = check_onnx(model, samples)
    ran = None
    if run:
        if samples is None:
            raise ValidationError("--run needs the samples to feed the graph", fix="add --samples DIR")
        if report.ok:
            from fbocc.export.onnx_run import run_onnx

            ran = run_onnx(model, samples, progress=lambda msg: err.print(f"check-onnx --run: {msg}"),
                           precision=report.precision)
    if as_json:
        emit_json({"onnx": str(report.onnx_path), "ok": report.ok, "problems": report.problems,
                   "precision": report.precision,
                   "custom_ops": report.custom_ops, "tensorrt_ops": report.tensorrt_ops,
                   "inputs": [asdict(v) for v in report.inputs], "outputs": [asdict(v) for v in report.outputs]}
                  | ({"run": ran.as_dict()} if ran else {}))
    else:
        ops = ", ".join(f"{k} x{v}" for k, v in report.custom_ops.items())
        out.print(f"{report.onnx_path} ({report.precision} graph): plugin ops {ops}")
        if report.tensorrt_ops:
            out.print("TensorRT's own plugins " + ", ".join(f"{k} x{v}" for k, v in report.tensorrt_ops.items()))
        for title, values in (("inputs", report.inputs), ("outputs", report.outputs)):
            out.print(f"{title} ({len(values)}): " + ", ".join(f"{v.name}:{v.dtype}{v.shape}" for v in values))
        for problem in report.problems:
            out.print(f"  problem: {problem}")
        if report.ok:
            out.print("ok: the graph fits the plugin contract" + (" and the samples" if samples else ""))
    if not report.ok:
        raise ValidationError(f"{model}: {len(report.problems)} problem(s) found by check-onnx",
                              fix="re-export with `fbocc export`, or fix the graph as each problem says")
    if ran is not None:
        from fbocc.cli.validate_cmd import render_comparison

        if not as_json:
            out.print(f"ONNX Runtime ran {ran.frames} frames ({ran.custom_nodes} plugin nodes as numpy ops) in "
                      f"{ran.seconds:.1f} s")
            if ran.comparison is not None:
                render_comparison(ran.comparison, title=f"check-onnx --run {model.name} vs PyTorch")
        if not ran.passed:
            raise ValidationError(f"{model}: ONNX Runtime outputs differ from the export's reference outputs",
                                  fix="the graph does not compute what PyTorch did: see the table; re-export")
