"""`fbocc report`'s picture: what a user asks first, in one PNG.

Top row: the precisions side by side per target (median time, whisker to p99), their accuracy beside it
(mIoU, or agreement with PyTorch where that is what was recorded), and the history over dated runs.
Bottom row: where the time goes in the latest profiled TensorRT run (slowest layers coloured by stage,
our plugin ops hatched and tagged) and the time per stage of each precision's latest run on that target.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from fbocc.results.history import BenchResult
from fbocc.results.layers import STAGES, stage_totals, staged
from fbocc.results.report import PRECISION_ORDER, Report, RunComparison

TOP_LAYERS = 15
STAGE_COLOURS = {"backbone": "#4c72b0", "depth": "#dd8452", "view transform": "#55a868", "BEV encoder": "#c44e52",
                 "head": "#8172b3", "other": "#999999"}
PRECISION_COLOURS = {"fp32": "#4c72b0", "fp16": "#55a868", "int8": "#c44e52"}


def _label(r: BenchResult) -> str:
    return r.precision if r.backend == "tensorrt" else f"{r.precision} (ORT)"


def _p99(r: BenchResult) -> float | None:
    key = "GPU Compute Time" if r.backend == "tensorrt" else "Latency"
    value = r.summary.get("metrics_ms", {}).get(key, {}).get("percentiles", {}).get("99")
    return float(value) if value is not None else None


def _when(r: BenchResult) -> datetime:
    return datetime.fromisoformat(r.created.replace("Z", "+00:00"))  # UTC, with or without microseconds


def _grouped(rows: list[RunComparison]) -> tuple[list[str], list[str], dict[tuple[str, str], RunComparison]]:
    targets = sorted({r.current.target for r in rows})
    labels = sorted({_label(r.current) for r in rows}, key=lambda p: (PRECISION_ORDER.get(p.split()[0], 9), p))
    return targets, labels, {(r.current.target, _label(r.current)): r for r in rows}


def _precision_bars(ax: Any, report: Report) -> None:
    targets, labels, cell = _grouped(report.rows)
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        xs, heights, errs = [], [], []
        for i, tgt in enumerate(targets):
            row = cell.get((tgt, label))
            value = row.current.headline_ms() if row else None
            if value is None or row is None:
                continue
            p99 = _p99(row.current)
            xs.append(i + (j - (len(labels) - 1) / 2) * width)
            heights.append(value)
            errs.append(max(0.0, p99 - value) if p99 is not None else 0.0)
        if xs:
            ax.bar(xs, heights, width, yerr=[[0.0] * len(errs), errs], capsize=3, label=label,
                   color=PRECISION_COLOURS.get(label.split()[0]))
    ax.set_xticks(range(len(targets)), targets)
    ax.set_title("Latency by precision (median, whisker to p99)")
    ax.set_ylabel("ms per frame (TensorRT: GPU compute)")
    if labels:
        ax.legend(fontsize=8)


def _accuracy_bars(ax: Any, report: Report) -> None:
    targets, labels, cell = _grouped(report.rows)
    width = 0.8 / max(1, len(labels))
    drew = False
    for j, label in enumerate(labels):
        for i, tgt in enumerate(targets):
            row = cell.get((tgt, label))
            if row is None or row.miou is None:
                continue
            vs_pytorch = row.miou_against == "pytorch"
            ax.bar(i + (j - (len(labels) - 1) / 2) * width, row.miou, width,
                   color=PRECISION_COLOURS.get(label.split()[0]), hatch="//" if vs_pytorch else None,
                   label=f"{label}{' vs PyTorch' if vs_pytorch else ''}")
            drew = True
    ax.set_xticks(range(len(targets)), targets)
    ax.set_title("mIoU by precision (hatched: agreement with PyTorch)")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    if drew:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no validation recorded (fbocc validate)", ha="center", va="center",
                transform=ax.transAxes)


def _history(ax: Any, report: Report, history: list[BenchResult]) -> None:
    import matplotlib.dates as mdates

    series: dict[str, list[tuple[datetime, float]]] = {}
    for run in history:
        value = run.headline_ms()
        if value is not None:
            series.setdefault(f"{run.target} {_label(run)}", []).append((_when(run), value))
    for label, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    regressed = {r.current.run_id for r in report.regressions}
    for run in history:
        value = run.headline_ms()
        if run.run_id in regressed and value is not None:
            ax.annotate("regression", (mdates.date2num(_when(run)), value), color="red", fontsize=8)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_title("History (median per run)")
    ax.set_xlabel("run date (UTC)")
    ax.set_ylabel("ms")
    if series:
        ax.legend(fontsize=8)


def profiled_run(report: Report) -> BenchResult | None:
    """The run whose layers are shown: the latest TensorRT run with a per-layer profile."""
    runs = [r.current for r in report.rows if r.current.backend == "tensorrt" and staged(r.current.layers)]
    return max(runs, key=lambda r: (r.created, r.run_id)) if runs else None


def _top_layers(ax: Any, run: BenchResult | None) -> None:
    if run is None:
        ax.text(0.5, 0.5, "no per-layer profile recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Slowest layers")
        return
    top = staged(run.layers)[:TOP_LAYERS][::-1]  # slowest at the top
    names = [(layer.name if len(layer.name) <= 48 else layer.name[:47] + "…")
             + (f" [plugin {layer.plugin}]" if layer.plugin else "") for layer in top]
    bars = ax.barh(range(len(top)), [layer.average_ms for layer in top],
                   color=[STAGE_COLOURS[layer.stage] for layer in top])
    for bar, layer in zip(bars, top, strict=True):
        if layer.plugin:
            bar.set_hatch("xx")
            bar.set_edgecolor("black")
    ax.set_yticks(range(len(top)), names, fontsize=7)
    ax.set_xlabel("ms per frame (average)")
    ax.set_title(f"Slowest layers: {run.target} {run.precision} ({run.summary.get('tensorrt_version') or '?'})")
    from matplotlib.patches import Patch

    present = [s for s in STAGES if any(layer.stage == s for layer in top)]
    handles = [Patch(color=STAGE_COLOURS[s], label=s) for s in present]
    if any(layer.plugin for layer in top):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="xx", label="our plugin op"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")


def _stages(ax: Any, report: Report, run: BenchResult | None) -> None:
    ax.set_title("Time per stage (latest run of each precision)")
    ax.set_xlabel("ms per frame (sum of profiled layers)")
    if run is None:
        ax.text(0.5, 0.5, "no per-layer profile recorded", ha="center", va="center", transform=ax.transAxes)
        return
    runs = sorted((r.current for r in report.rows if r.current.target == run.target
                   and r.current.backend == "tensorrt" and staged(r.current.layers)),
                  key=lambda r: PRECISION_ORDER.get(r.precision, 9))
    totals = [stage_totals(r.layers) for r in runs]
    left = [0.0] * len(runs)
    for stage in STAGES:
        widths = [t[stage] for t in totals]
        if any(widths):
            ax.barh(range(len(runs)), widths, left=left, color=STAGE_COLOURS[stage], label=stage)
            left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(runs)), [r.precision for r in runs])
    ax.legend(fontsize=7)


def build_figure(report: Report, history: list[BenchResult]) -> Any:
    """The report's matplotlib Figure (axes: latency, accuracy, history, slowest layers, stages)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(18, 10))
    grid = fig.add_gridspec(2, 3)
    run = profiled_run(report)
    _precision_bars(fig.add_subplot(grid[0, 0]), report)
    _accuracy_bars(fig.add_subplot(grid[0, 1]), report)
    _history(fig.add_subplot(grid[0, 2]), report, history)
    _top_layers(fig.add_subplot(grid[1, 0:2]), run)
    _stages(fig.add_subplot(grid[1, 2]), report, run)
    fig.tight_layout()
    return fig


def write_png(report: Report, history: list[BenchResult], path: Path) -> Path:
    """Draw `build_figure` into `path` atomically."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = build_figure(report, history)
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
