"""`fbocc export --precision fp32,fp16,int8`: the fp16 and int8 graphs beside the fp32 one, each checked here.

Runs inside export, after the fp32 graph and the samples are written (into the staging directory, so a
failure leaves nothing behind). For each extra precision: measure the sensitivity, write the graph, then run
it in ONNX Runtime (our plugin ops as numpy ops; fp16 tensors where the graph has them) over the sample
sequence with its own history carried, and compare with the fp32 PyTorch reference outputs: the same table as
`fbocc validate`. The manifest's `graphs` section (docs/precision.md) lists every graph and how it was made.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fbocc import __version__
from fbocc.errors import ConfigError
from fbocc.export.precision import fp16_sensitivity, graph_file, write_typed_fp16

RANDOM_WEIGHTS_NOTE = ("random weights: agreement with fp32 here is a weak proxy for a trained checkpoint "
                       "(INT8 calibration ranges and fp16 headroom depend on the real activations)")


def check_calib_frames(calib_frames: int | None, samples: int) -> int:
    """The number of calibration frames: all samples by default; more than the samples is an error."""
    if calib_frames is None:
        return samples
    if calib_frames < 1 or calib_frames > samples:
        raise ConfigError(f"--calib-frames {calib_frames}: the export has {samples} sample frame(s) to calibrate on",
                          fix=f"use 1..{samples}, or export more frames with --samples {max(calib_frames, 1)}")
    return calib_frames


def comparison_markdown(comparison: Any, title: str) -> str:
    """A `fbocc validate` comparison as a markdown table."""
    rows = [f"{title}", "", "| output | max abs | mean abs | relative | cosine | within |",
            "| --- | --- | --- | --- | --- | --- |"]
    for t in comparison.tensors:
        rows.append(f"| {t.name} | {t.max_abs:.4g} | {t.mean_abs:.3g} | {t.rel_error:.3e} | {t.cosine:.6f} | "
                    f"{'yes' if t.within else 'no'} |")
    label = "-" if comparison.label_agreement is None else f"{comparison.label_agreement * 100:.3f} %"
    miou = "-" if comparison.miou is None else f"{comparison.miou:.2f}"
    rows += ["", f"occupancy label agreement {label}; mIoU {miou} against the "
             f"{'ground truth' if comparison.miou_against == 'ground-truth' else 'fp32 PyTorch prediction'}; "
             f"{comparison.frames} frames", ""]
    return "\n".join(rows)


def host_check(onnx_path: Path, samples_dir: Path, precision: str, weights_kind: str,
               progress: Callable[[str], None]) -> dict[str, Any]:
    """Run `onnx_path` over the samples in ONNX Runtime and compare with the fp32 PyTorch references."""
    from fbocc.export.onnx_run import run_onnx

    started = time.monotonic()
    ran = run_onnx(onnx_path, samples_dir, progress=lambda m: progress(f"{precision} host check: {m}"),
                   precision=precision)
    comp = ran.comparison
    assert comp is not None  # export always writes reference outputs
    result = {"backend": "onnxruntime (CPU, plugin ops as numpy ops)", "against": "fp32 PyTorch reference",
              "frames": comp.frames, "label_agreement": comp.label_agreement, "miou": comp.miou,
              "miou_against": comp.miou_against,
              "tensors": [t.as_dict() for t in comp.tensors],
              "within_fp16_tolerance": comp.passed, "seconds": round(time.monotonic() - started, 1)}
    if weights_kind == "random":
        result["note"] = RANDOM_WEIGHTS_NOTE
    result["markdown"] = comparison_markdown(comp, f"{precision} graph vs fp32 PyTorch (host check, ONNX Runtime)")
    return result


def _frames(samples_dir: Path, manifest_frames: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    from fbocc.export.samples import read_tensor

    return [{name: read_tensor(samples_dir, entry) for name, entry in f["inputs"].items()} for f in manifest_frames]


def _graph_entry(out: Path, name: str, precision: str, made_by: dict[str, Any]) -> dict[str, Any]:
    from fbocc.export.samples import sha256_file

    path = out / name
    return {"precision": precision, "file": f"../{name}", "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "strongly_typed": True, "made_by": made_by}


def _write_report(out: Path, stem: str, data: dict[str, Any], markdown: str) -> None:
    folder = out / "precision"
    folder.mkdir(exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (folder / f"{stem}.md").write_text(markdown)


def make_graphs(model: Any, out: Path, onnx_name: str, samples_dir: Path, manifest_frames: Sequence[dict[str, Any]],
                precisions: Sequence[str], calib_frames: int | None, weights_kind: str, torch_version: str,
                opset: int, progress: Callable[[str], None] = lambda _m: None,
                timings: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Write the extra precision graphs into `out` (beside `onnx_name`) and return the manifest's `graphs`."""
    timings = {} if timings is None else timings
    calib = check_calib_frames(calib_frames, len(manifest_frames))
    graphs = [_graph_entry(out, onnx_name, "fp32", {"tool": "torch.onnx.export", "exporter": "torchscript",
                                                    "torch": torch_version, "opset": opset})]
    if precisions == ("fp32",):
        return graphs
    frames = _frames(samples_dir, manifest_frames)
    ids = [f["id"] for f in manifest_frames]
    checks: dict[str, Any] = {}
    if "fp16" in precisions:
        t0 = time.monotonic()
        progress(f"fp16: per-stage sensitivity over frames {', '.join(ids[:calib])}")
        sens = fp16_sensitivity(model, frames[:calib], ids[:calib])
        _write_report(out, "fp16_sensitivity", sens.as_dict(), sens.markdown())
        name = graph_file(onnx_name, "fp16")
        progress(f"fp16: {name}: fp16 stages {', '.join(sens.fp16_stages) or '(none)'}; fp32 islands "
                 f"{', '.join(sens.fp32_islands) or '(none)'}")
        counts = write_typed_fp16(out / onnx_name, out / name, sens.fp16_stages)
        timings["fp16_graph"] = time.monotonic() - t0
        entry = _graph_entry(out, name, "fp16", {
            "tool": "fbocc retype", "fbocc": __version__, "from": f"../{onnx_name}", "fp16_stages": sens.fp16_stages,
            "fp32_islands": sens.fp32_islands, "sensitivity": "../precision/fp16_sensitivity.json",
            "frames": ids[:calib], "nodes": counts})
        t1 = time.monotonic()
        entry["host_check"] = checks["fp16"] = host_check(out / name, samples_dir, "fp16", weights_kind, progress)
        timings["fp16_host_check"] = time.monotonic() - t1
        graphs.append(entry)
    if "int8" in precisions:
        from fbocc.export.quantize import export_int8, qdq_summary, quantize_int8

        t0 = time.monotonic()
        qmodel, result = quantize_int8(model, frames[:calib], ids[:calib], progress=progress)
        _write_report(out, "int8_sensitivity", result.as_dict(), result.markdown())
        name = graph_file(onnx_name, "int8")
        progress(f"int8: {name}: {len(result.quantized)} layers with Q/DQ, {len(result.excluded)} left fp32; "
                 "tracing (TorchScript exporter)")
        export_int8(qmodel, frames[0], out / name)
        del qmodel
        import onnx

        summary = qdq_summary(onnx.load(str(out / name), load_external_data=False))
        timings["int8_graph"] = time.monotonic() - t0
        entry = _graph_entry(out, name, "int8", {
            "tool": "nvidia-modelopt", "version": result.modelopt,
            "api": "modelopt.torch.quantization.quantize + torch.onnx.export(dynamo=False)",
            "config": "INT8_DEFAULT_CFG", "algorithm": result.config["algorithm"],
            "calibration": {"frames": ids[:calib], "history": "carried"},
            "quantized_stages": result.stages, "quantized_layers": len(result.quantized),
            "excluded_layers": sorted(result.excluded), "unquantized_precision": "fp32",
            "sensitivity": "../precision/int8_sensitivity.json", "qdq": summary})
        t1 = time.monotonic()
        entry["host_check"] = checks["int8"] = host_check(out / name, samples_dir, "int8", weights_kind, progress)
        timings["int8_host_check"] = time.monotonic() - t1
        graphs.append(entry)
    _write_report(out, "host_checks", {p: {k: v for k, v in c.items() if k != "markdown"} for p, c in checks.items()},
                  "\n".join(c["markdown"] for c in checks.values())
                  + (f"\nNote: {RANDOM_WEIGHTS_NOTE}.\n" if weights_kind == "random" else ""))
    return graphs
