"""`fbocc report`: the benchmark history compared, with the mIoU of the same engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fbocc.cli.app import app, emit_json, err, load_config, out


@app.command("report")
def report_cmd(
    results_dir: Annotated[Path | None, typer.Option("--results-dir", help="History directory "
                                                     "(default: [project] results_dir).")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Only this target's runs.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the markdown report here.")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Write the latency PNG here.")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Regression threshold as a fraction "
                                                    "(default: [bench] regression_threshold).")] = None,
    fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", help="Exit 7 when a run regressed.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare benchmark runs (fp32 vs fp16, this vs previous), flag regressions, export markdown/PNG."""
    from fbocc.errors import ConfigError, ValidationError
    from fbocc.results.figure import write_png
    from fbocc.results.history import load_history, load_validations
    from fbocc.results.report import compare, to_markdown, write_markdown

    cfg = load_config(**{"project.results_dir": str(results_dir) if results_dir else None,
                         "bench.regression_threshold": threshold})
    root = Path(cfg.project.results_dir)
    history = load_history(root)
    if target:
        history = [r for r in history if r.target == target]
    if not history:
        raise ConfigError(f"no benchmark results in {root}" + (f" for target {target!r}" if target else ""),
                          fix="run `fbocc remote-bench TARGET` first, or point --results-dir at the history")
    report = compare(history, threshold=cfg.bench.regression_threshold, validations=load_validations(root))
    written = []
    if markdown:
        written.append(write_markdown(report, markdown))
    if png:
        written.append(write_png(report, history, png))
    if as_json:
        emit_json({**report.as_dict(), "written": [str(p) for p in written]})
    else:
        out.print(to_markdown(report), markup=False, highlight=False, soft_wrap=True)  # a table row is one line
        for p in written:
            err.print(f"wrote {p}")
    if fail_on_regression and report.regressions:
        raise ValidationError("regression: " + ", ".join(
            f"{r.current.target} {r.current.precision} {r.change * 100:+.1f}%" for r in report.regressions
            if r.change is not None), fix=f"the median time grew by more than {report.threshold * 100:.0f}%")
