"""`fbocc report`: compare benchmark runs from the history, flag regressions, export markdown and a PNG.

Comparisons:
- this run vs the previous run of the same (target, backend, precision): change of the headline time
  (median GPU compute time for TensorRT, median latency for ONNX Runtime); a regression when it grows
  by more than `[bench] regression_threshold` (a fraction: 0.05 = 5 %);
- fp32 vs fp16 on each target (speed-up of the latest runs).

The markdown reproduces the seed's table (FB-OCC-TRT deployment README): model, precision, mIoU,
latency on the target; the details follow below it. A TensorRT row shows an mIoU only when `fbocc
validate` recorded it for the very engine file the latency was timed on (same sha256); otherwise the
row says that the validated engine is another one (or that the record names none). The PNG is drawn by
fbocc/results/figure.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbocc.results.history import BenchResult, ValidationRecord, same_engine
from fbocc.results.layers import STAGES, stage_totals, staged

TIMING_NAMES = (("data_transfers", "transfers"), ("cuda_graph", "CUDA graph"), ("spin_wait", "spin wait"),
                ("separate_profile_run", "separate profile run"))
MODEL_LABEL = {"tensorrt": "FB-OCC-TensorRT", "onnxruntime": "FB-OCC-ONNXRuntime"}
PRECISION_ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "best": 3}  # best: runs from before 11


@dataclass
class RunComparison:
    """The latest run of one (target, backend, precision) against the one before it."""

    current: BenchResult
    previous: BenchResult | None
    change: float | None  # (current - previous) / previous of the headline time
    regression: bool
    miou: float | None = None
    miou_against: str | None = None  # "ground-truth", or "pytorch" (agreement with PyTorch, not accuracy)
    miou_note: str | None = None  # why a recorded mIoU is not shown in this row (another engine)


@dataclass
class Report:
    """Everything `fbocc report` shows."""

    rows: list[RunComparison]
    speedups: dict[str, float] = field(default_factory=dict)  # target -> fp32 / fp16 headline
    int8_speedups: dict[str, float] = field(default_factory=dict)  # target -> fp32 / int8 headline
    threshold: float = 0.05
    pytorch_miou: float | None = None  # PyTorch's own mIoU vs ground truth, from `fbocc validate`

    @property
    def regressions(self) -> list[RunComparison]:
        return [r for r in self.rows if r.regression]

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "rows": [{
                "target": r.current.target, "backend": r.current.backend, "precision": r.current.precision,
                "run_id": r.current.run_id, "headline_ms": r.current.headline_ms(),
                "previous_run_id": r.previous.run_id if r.previous else None,
                "previous_headline_ms": r.previous.headline_ms() if r.previous else None,
                "change": r.change, "regression": r.regression, "miou": r.miou,
                "miou_against": r.miou_against, "miou_note": r.miou_note,
                "engine": (r.current.engine or {}).get("sha256"),
                "graph": (r.current.engine or {}).get("graph"), "typing": (r.current.engine or {}).get("typing"),
                "timing": (r.current.options or {}).get("timing"),
            } for r in self.rows],
            "fp16_speedup_over_fp32": self.speedups, "int8_speedup_over_fp32": self.int8_speedups,
            "pytorch_miou": self.pytorch_miou,
            "regressions": [r.current.run_id for r in self.regressions],
        }


def compare(history: list[BenchResult], *, threshold: float = 0.05,
            validations: list[ValidationRecord] | None = None, target: str | None = None) -> Report:
    """Latest run per (target, backend, precision) vs its predecessor; fp16 speed-up per target."""
    groups: dict[tuple[str, str, str], list[BenchResult]] = {}
    for r in history:
        if target is None or r.target == target:
            groups.setdefault((r.target, r.backend, r.precision), []).append(r)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], PRECISION_ORDER.get(k[2], 9), k[2])):
        runs = groups[key]
        current = runs[-1]
        previous = runs[-2] if len(runs) > 1 else None
        change = None
        now, before = current.headline_ms(), previous.headline_ms() if previous else None
        if now is not None and before:
            change = (now - before) / before
        record = _validation(validations or [], current)
        note = _engine_mismatch(record, current)
        shown = record if record is not None and note is None else None
        rows.append(RunComparison(current, previous, change, change is not None and change > threshold,
                                  shown.miou if shown else None,
                                  shown.details.get("miou_against") if shown else None, note))
    speedups: dict[str, dict[str, float]] = {"fp16": {}, "int8": {}}
    for tgt in sorted({k[0] for k in groups}):
        fp32 = groups.get((tgt, "tensorrt", "fp32"))
        for precision, found in speedups.items():
            other = groups.get((tgt, "tensorrt", precision))
            if fp32 and other:
                a, b = fp32[-1].headline_ms(), other[-1].headline_ms()
                if a and b:
                    found[tgt] = a / b
    pytorch = None
    for v in reversed(validations or []):
        ref = v.details.get("miou_reference")
        if ref is not None and v.details.get("miou_against") == "ground-truth":
            pytorch = float(ref)
            break
    return Report(rows, speedups["fp16"], speedups["int8"], threshold, pytorch)


def _validation(validations: list[ValidationRecord], run: BenchResult) -> ValidationRecord | None:
    # a record naming this run wins; then the latest of the same engine; else the latest for the same
    # target, backend and precision (shown only if it names the same engine: see _engine_mismatch)
    for v in reversed(validations):
        if v.run_id == run.run_id:
            return v
    candidates = [v for v in validations if v.backend == run.backend and v.precision == run.precision
                  and v.target in (None, run.target)]
    for v in reversed(candidates):
        if run.backend == "tensorrt" and same_engine(v.engine, run.engine):
            return v
    return candidates[-1] if candidates else None


def _engine_mismatch(record: ValidationRecord | None, run: BenchResult) -> str | None:
    """Why `record`'s mIoU may not stand beside `run`'s latency; None when it may (or there is none)."""
    if record is None or run.backend != "tensorrt":
        return None
    if not record.engine:
        return "validation names no engine"
    if not same_engine(record.engine, run.engine):
        have = (record.engine.get("sha256") or record.engine.get("key") or "?")[:12]
        timed = (run.engine.get("sha256") or run.engine.get("key") or "?")[:12]
        return f"validated engine {have} is not the timed engine {timed}"
    return None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _device_label(run: BenchResult) -> str:
    release = run.environment.get("release", {}) if run.environment else {}
    if isinstance(release, dict) and release.get("nv_tegra_release"):
        return f"{run.target} (NVIDIA Orin, {release['nv_tegra_release'].split(',')[0].strip('# ')})"
    return run.target


def _typing(engine: dict[str, Any]) -> str:
    if not engine.get("graph"):
        return "-"
    return f"{engine['graph']} graph, {engine.get('typing', '?')}ly typed"


def timing_label(run: BenchResult) -> str:
    """The four timing switches of a run as set (`options.timing`), or why they are unknown."""
    timing = run.options.get("timing") if run.options else None
    if run.backend != "tensorrt":
        return "ONNX Runtime"
    if not isinstance(timing, dict):
        return "not recorded (run before timings were set explicitly)"
    return ", ".join(f"{name} {'on' if timing.get(key) else 'off'}" for key, name in TIMING_NAMES)


def _stage_table(report: Report) -> list[str]:
    runs = [r.current for r in report.rows if r.current.backend == "tensorrt" and staged(r.current.layers)]
    if not runs:
        return []
    lines = ["", "### Where the time goes (ms per frame, sum of profiled layers; plugin ops in brackets)", "",
             "| Target | Precision | " + " | ".join(STAGES) + " |", "|---|---|" + "---|" * len(STAGES)]
    for run in runs:
        totals = stage_totals(run.layers)
        plugins = {s: sum(layer.average_ms for layer in staged(run.layers) if layer.stage == s and layer.plugin)
                   for s in STAGES}
        cells = [_fmt(totals[s]) + (f" ({_fmt(plugins[s])})" if plugins[s] else "") for s in STAGES]
        lines.append(f"| {run.target} | {run.precision} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(report: Report) -> str:
    """The seed's table (model | precision | mIoU | latency on the target), then comparison and details."""
    lines: list[str] = []
    targets = sorted({r.current.target for r in report.rows})
    for tgt in targets:
        rows = [r for r in report.rows if r.current.target == tgt]
        device = _device_label(rows[0].current)
        lines += [f"|  | Precision | mIoU | Latency (ms) on {device} |",
                  "|---|---|---|---|"]
        if report.pytorch_miou is not None:
            lines.append(f"| FB-OCC-PyTorch | FP32 | {_fmt(report.pytorch_miou)} | - |")
        for r in rows:
            c = r.current
            miou = _fmt(r.miou) + (" (vs PyTorch)" if r.miou is not None and r.miou_against == "pytorch" else "")
            if r.miou_note:
                miou = f"- ({r.miou_note})"
            lines.append(f"| {MODEL_LABEL.get(c.backend, c.backend)} | {c.precision.upper()} | {miou} "
                         f"| {_fmt(c.headline_ms())} |")
        lines.append("")
    lines += ["Latency: median GPU compute time per frame from trtexec (TensorRT rows), median end-to-end "
              "latency from deploy/run_sequence.py (ONNX Runtime rows; not a TensorRT number). "
              "mIoU from `fbocc validate` where recorded, else `-`. Every TensorRT run sets data transfers, "
              "CUDA graph, spin wait and separate profile run explicitly (Timing column below), so runs on "
              "TensorRT 10 and 11 measure the same thing.", ""]
    lines += ["### This run vs the previous run", "",
              "| Target | Backend | Precision | Now (ms) | Before (ms) | Change | Regression |",
              "|---|---|---|---|---|---|---|"]
    for r in report.rows:
        c = r.current
        change = "-" if r.change is None else f"{r.change * 100:+.1f}%"
        flag = f"YES (> {report.threshold * 100:.0f}%)" if r.regression else "no"
        lines.append(f"| {c.target} | {c.backend} | {c.precision} | {_fmt(c.headline_ms(), 3)} | "
                     f"{_fmt(r.previous.headline_ms() if r.previous else None, 3)} | {change} | {flag} |")
    if report.speedups:
        lines += ["", "fp16 speed-up over fp32: " + ", ".join(f"{t}: {s:.2f}x" for t, s in report.speedups.items())]
    if report.int8_speedups:
        lines += ["", "int8 speed-up over fp32: "
                  + ", ".join(f"{t}: {s:.2f}x" for t, s in report.int8_speedups.items())]
    lines += _stage_table(report)
    lines += ["", "### Details", "",
              "| Run | Throughput (qps) | GPU compute mean / p99 (ms) | Latency median (ms) | CV (%) | TensorRT "
              "| Engine | Graph, typing | Timing |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        s = r.current.summary
        gpu = s.get("metrics_ms", {}).get("GPU Compute Time", {})
        lat = s.get("metrics_ms", {}).get("Latency", {})
        engine = r.current.engine
        cached = "cached" if engine.get("cached") else ("built" if engine else "-")
        lines.append(f"| {r.current.run_id} | {_fmt(s.get('throughput_qps'))} | "
                     f"{_fmt(gpu.get('mean'), 3)} / {_fmt(gpu.get('percentiles', {}).get('99'), 3)} | "
                     f"{_fmt(lat.get('median'), 3)} | {_fmt(s.get('gpu_compute_cv_percent'))} | "
                     f"{s.get('tensorrt_version') or '-'} | {cached} | {_typing(engine)} | {timing_label(r.current)} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: Report, path: Path) -> Path:
    """Write the markdown atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(to_markdown(report))
    os.replace(tmp, path)
    return path
