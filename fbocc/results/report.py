"""`fbocc report`: compare benchmark runs from the history, flag regressions, export markdown and a PNG.

Comparisons:
- this run vs the previous run of the same (target, backend, precision): change of the headline time
  (median GPU compute time for TensorRT, median latency for ONNX Runtime); a regression when it grows
  by more than `[bench] regression_threshold` (a fraction: 0.05 = 5 %);
- fp32 vs fp16 on each target (speed-up of the latest runs).

The markdown reproduces the seed's table (FB-OCC-TRT deployment README): model, precision, mIoU,
latency on the target; the details follow below it. A TensorRT row shows an mIoU only when `fbocc
validate` recorded it for the very engine file the latency was timed on (same sha256); otherwise the
row says that the validated engine is another one (or that the record names none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbocc.results.history import BenchResult, ValidationRecord, same_engine

MODEL_LABEL = {"tensorrt": "FB-OCC-TensorRT", "onnxruntime": "FB-OCC-ONNXRuntime"}
PRECISION_ORDER = {"fp32": 0, "fp16": 1, "best": 2}


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
            } for r in self.rows],
            "fp16_speedup_over_fp32": self.speedups, "pytorch_miou": self.pytorch_miou,
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
    speedups = {}
    for tgt in sorted({k[0] for k in groups}):
        fp32 = groups.get((tgt, "tensorrt", "fp32"))
        fp16 = groups.get((tgt, "tensorrt", "fp16"))
        if fp32 and fp16:
            a, b = fp32[-1].headline_ms(), fp16[-1].headline_ms()
            if a and b:
                speedups[tgt] = a / b
    pytorch = None
    for v in reversed(validations or []):
        ref = v.details.get("miou_reference")
        if ref is not None and v.details.get("miou_against") == "ground-truth":
            pytorch = float(ref)
            break
    return Report(rows, speedups, threshold, pytorch)


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
              "mIoU from `fbocc validate` where recorded, else `-`.", ""]
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
    lines += ["", "### Details", "",
              "| Run | Throughput (qps) | GPU compute mean / p99 (ms) | Latency median (ms) | CV (%) | TensorRT "
              "| Engine |",
              "|---|---|---|---|---|---|---|"]
    for r in report.rows:
        s = r.current.summary
        gpu = s.get("metrics_ms", {}).get("GPU Compute Time", {})
        lat = s.get("metrics_ms", {}).get("Latency", {})
        engine = r.current.engine
        cached = "cached" if engine.get("cached") else ("built" if engine else "-")
        lines.append(f"| {r.current.run_id} | {_fmt(s.get('throughput_qps'))} | "
                     f"{_fmt(gpu.get('mean'), 3)} / {_fmt(gpu.get('percentiles', {}).get('99'), 3)} | "
                     f"{_fmt(lat.get('median'), 3)} | {_fmt(s.get('gpu_compute_cv_percent'))} | "
                     f"{s.get('tensorrt_version') or '-'} | {cached} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: Report, path: Path) -> Path:
    """Write the markdown atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(to_markdown(report))
    os.replace(tmp, path)
    return path


def write_png(report: Report, history: list[BenchResult], path: Path) -> Path:
    """Latency histogram of the latest runs (left) and the headline time of every run (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (hist_ax, runs_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    drew = False
    for r in report.rows:
        key = "compute" if r.current.backend == "tensorrt" else "latency"
        values = r.current.per_query_ms.get(key) or []
        if values:
            hist_ax.hist(values, bins=min(50, max(5, len(values) // 5)), alpha=0.6,
                         label=f"{r.current.target} {r.current.backend} {r.current.precision}")
            drew = True
    hist_ax.set_title("Per-query time, latest runs")
    hist_ax.set_xlabel("ms (GPU compute for TensorRT, latency for ONNX Runtime)")
    hist_ax.set_ylabel("queries")
    if drew:
        hist_ax.legend(fontsize=8)
    else:
        hist_ax.text(0.5, 0.5, "no per-query times recorded", ha="center", va="center", transform=hist_ax.transAxes)
    series: dict[str, list[tuple[int, float]]] = {}
    for i, run in enumerate(history):
        value = run.headline_ms()
        if value is not None:
            series.setdefault(f"{run.target} {run.backend} {run.precision}", []).append((i, value))
    for label, points in series.items():
        runs_ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    regressed = {r.current.run_id for r in report.regressions}
    for i, run in enumerate(history):
        value = run.headline_ms()
        if run.run_id in regressed and value is not None:
            runs_ax.annotate("regression", (i, value), color="red", fontsize=8)
    runs_ax.set_title("Median time per run (history)")
    runs_ax.set_xlabel("run (oldest first)")
    runs_ax.set_ylabel("ms")
    if series:
        runs_ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
