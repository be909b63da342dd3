"""`fbocc validate`: engine (or ONNX Runtime) outputs on the target vs the PyTorch reference, with mIoU."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fbocc.cli.app import DEFAULT_EXPORT_DIR, app, emit_json, err, load_config, out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(comparisons: list[Any], title: str) -> None:
    table = Table(title=title)
    for col in ("precision", "vs", "output", "max abs", "rel err", "cosine", "ok"):
        table.add_column(col)
    for comp in comparisons:
        for t in comp.tensors:
            table.add_row(comp.precision, comp.against, t.name + (" (history)" if t.history else ""),
                          f"{t.max_abs:.3g}", f"{t.rel_error:.3g}", f"{t.cosine:.6f}",
                          "yes" if t.within else "[red]NO[/]")
    out.print(table)
    for comp in comparisons:
        if comp.label_agreement is not None:
            against = "ground truth" if comp.miou_against == "ground-truth" else \
                f"the {comp.against if comp.against != 'pytorch' else 'PyTorch'} prediction (no ground truth)"
            line = (f"{comp.precision} vs {comp.against}: occupancy labels agree on {comp.label_agreement * 100:.3f}% "
                    f"of voxels; mIoU {_fmt(comp.miou, '.2f')} against {against}")
            if comp.miou_reference is not None:
                line += f" (PyTorch: {comp.miou_reference:.2f})"
            out.print(line)


def render_comparison(comparison: Any, title: str) -> None:
    """Print one comparison (used by `check-onnx --run`)."""
    _table([comparison], title)
    out.print("[green]PASS[/]: within the documented tolerances" if comparison.passed else
              "[red]FAIL[/]: outputs differ from the reference beyond the documented tolerances")


def render_report(report: Any) -> None:
    """Print a validation report as tables (shared with the demo)."""
    _table(report.comparisons, f"fbocc validate {report.target} ({report.backend})")
    for note in report.notes:
        out.print(f"note: {escape(note)}")
    for path in report.records:
        out.print(f"recorded: {path}")
    out.print("[green]PASS[/]: within the documented tolerances" if report.passed else
              "[red]FAIL[/]: outputs differ from the reference beyond the documented tolerances")


@app.command("validate")
def validate_cmd(
    target: Annotated[str, typer.Argument(help="Target from [targets] (or an ssh_config host).")],
    precision: Annotated[str | None, typer.Option("--precision", help="Comma list: fp32,fp16,int8 "
                                                  "(default: [bench] precisions; fp32 for onnxruntime).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="tensorrt or onnxruntime.")] = "tensorrt",
    builder: Annotated[str, typer.Option("--builder", help="Engine builder, as for remote-bench: trtexec or "
                                                           "python; the engine is the one remote-bench times.")]
    = "trtexec",
    export_dir: Annotated[Path, typer.Option("--export-dir", help="Output of `fbocc export`: its samples/ hold "
                                                                   "the reference outputs.")] = DEFAULT_EXPORT_DIR,
    samples: Annotated[Path | None, typer.Option("--samples", help="Samples dir with the reference outputs "
                                                 "[default: --export-dir/samples; pulled from the target when "
                                                 "that is not the pushed export].")] = None,
    accept_new: Annotated[bool, typer.Option("--accept-new", help="Record an unknown target host key.")] = False,
    wait_lock: Annotated[float, typer.Option("--wait-lock", metavar="SECONDS",
                                             help="When another fbocc works in the target's workdir, wait up to "
                                             "this long for it instead of failing.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the pushed sequence on the target and compare its outputs with PyTorch (errors, labels, mIoU)."""
    from fbocc.errors import ValidationError
    from fbocc.target.transport import TargetSession
    from fbocc.target.validate import ValidateOptions, validate_target

    cfg = load_config()
    if precision:
        precisions = tuple(p.strip() for p in precision.split(",") if p.strip())
    else:
        precisions = ("fp32",) if backend == "onnxruntime" else tuple(p for p in cfg.bench.precisions if p != "best")
    ValidateOptions(backend=backend, precisions=precisions, builder=builder).check()
    tgt = cfg.target(target)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    local_dir = Path(cfg.project.results_dir) / "validation" / f"{stamp}-{tgt.name}"
    started = time.monotonic()
    with TargetSession(tgt, known_hosts=cfg.project.known_hosts, accept_new=accept_new) as session:
        report = validate_target(session, backend=backend, precisions=list(precisions), builder=builder,
                                 local_dir=local_dir, samples_dir=samples or export_dir / "samples",
                                 results_dir=Path(cfg.project.results_dir), timeout_s=cfg.bench.timeout_s,
                                 wait_lock_s=wait_lock,
                                 progress=lambda text: err.print(f"[bold cyan]▸[/] {escape(text)} "
                                                                 f"[dim](+{time.monotonic() - started:.1f}s)[/]"))
    if as_json:
        emit_json(report.as_dict())
    else:
        render_report(report)
    if not report.passed:
        raise ValidationError(f"{tgt.name}: {report.backend} outputs differ from the reference beyond the tolerances",
                              fix="see the table above; `fbocc check-onnx --run` checks the graph on the host")
