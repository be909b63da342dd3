"""`fbocc remote-bench` and `fbocc report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fbocc.cli.app import app, emit_json, err, load_config, out


@app.command("remote-bench")
def remote_bench_cmd(
    targets: Annotated[list[str], typer.Argument(help="Target(s) or group(s) from [targets]/[groups].")],
    precision: Annotated[str | None, typer.Option("--precision", help="Comma list: fp32,fp16,int8.")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", help="Timed iterations (overrides --duration).")]
    = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Timed seconds per precision.")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Warm-up in milliseconds.")] = None,
    cuda_graph: Annotated[bool | None, typer.Option("--cuda-graph/--no-cuda-graph", help="Launch through a CUDA graph "
                                                    "(default on).")] = None,
    spin_wait: Annotated[bool | None, typer.Option("--spin-wait/--no-spin-wait", help="Spin on GPU events "
                                                   "(default on).")] = None,
    data_transfers: Annotated[bool | None, typer.Option("--data-transfers/--no-data-transfers",
                                                        help="Time H2D/D2H copies with each query (default off).")]
    = None,
    typing: Annotated[str | None, typer.Option("--typing", help="auto, strong (typed graphs), or weak (fp32 graph + "
                                               "precision flags; TensorRT < 10.12).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build the engines even when cached.")] = False,
    backend: Annotated[str, typer.Option("--backend", help="tensorrt (trtexec) or onnxruntime (run_sequence.py).")]
    = "tensorrt",
    builder: Annotated[str, typer.Option("--builder", help="trtexec, or python (deploy/create_engine.py).")]
    = "trtexec",
    frame: Annotated[int, typer.Option("--frame", help="Which sample frame's inputs to load.")] = 0,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds per remote step.")] = None,
    accept_new: Annotated[bool, typer.Option("--accept-new", help="Record an unknown target host key.")] = False,
    keep_remote_run: Annotated[bool, typer.Option("--keep-remote-run", help="Keep runs/<id>/ on the target.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result documents as JSON.")] = False,
) -> None:
    """Build (or reuse) the engines on the target, benchmark them, and keep the results."""
    from fbocc.errors import FboccError
    from fbocc.target.bench import BenchOptions, remote_bench
    from fbocc.target.trtexec import TimingMode

    cfg = load_config(**{"bench.iterations": iterations, "bench.duration_s": duration, "bench.warmup_ms": warmup,
                         "bench.cuda_graph": cuda_graph, "bench.spin_wait": spin_wait,
                         "bench.data_transfers": data_transfers, "bench.typing": typing, "bench.timeout_s": timeout})
    precisions = tuple(p.strip() for p in precision.split(",") if p.strip()) if precision else \
        tuple(cfg.bench.precisions)
    if backend == "onnxruntime" and not precision:
        precisions = ("fp32",)
    options = BenchOptions(precisions=precisions, iterations=cfg.bench.iterations, duration_s=cfg.bench.duration_s,
                           warmup_ms=cfg.bench.warmup_ms, rebuild=rebuild,
                           timing=TimingMode(data_transfers=cfg.bench.data_transfers, cuda_graph=cfg.bench.cuda_graph,
                                             spin_wait=cfg.bench.spin_wait),
                           typing=None if cfg.bench.typing == "auto" else cfg.bench.typing,
                           timeout_s=cfg.bench.timeout_s, backend=backend, builder=builder, frame=frame,
                           keep_remote_run=keep_remote_run)
    options.check()
    resolved = cfg.resolve_targets(targets)
    outcomes = remote_bench(resolved, options, cfg.project.results_dir, known_hosts=cfg.project.known_hosts,
                            accept_new=accept_new, on_line=lambda line: err.print(escape(line), highlight=False))
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        emit_json({"results": [r.as_dict() for o in outcomes if o.value for r in o.value.results],
                   "saved": [str(p) for o in outcomes if o.value for p in o.value.paths],
                   "failed": {o.target.name: o.error.render() for o in failed if o.error}})
    else:
        table = Table(title="fbocc remote-bench")
        for col in ("target", "backend", "precision", "median (ms)", "p99 (ms)", "throughput (qps)", "engine",
                    "result"):
            table.add_column(col, overflow="fold")
        for o in outcomes:
            if o.value is None:
                continue
            for r in o.value.results:
                key = "GPU Compute Time" if r.backend == "tensorrt" else "Latency"
                m = r.summary.get("metrics_ms", {}).get(key, {})
                engine = "cached" if r.engine.get("cached") else ("built" if r.engine else "-")
                table.add_row(r.target, r.backend, r.precision, f"{m.get('median', float('nan')):.3f}",
                              f"{m.get('percentiles', {}).get('99', float('nan')):.3f}",
                              f"{r.summary.get('throughput_qps') or float('nan'):.2f}", engine,
                              str(next(p for p in o.value.paths if r.run_id in p.name)))
        out.print(table)
        for o in failed:
            err.print(f"[red]{o.target.name}: {escape(o.error.render() if o.error else 'failed')}[/]")
    if failed:
        first = failed[0].error
        if len(failed) == len(outcomes) and isinstance(first, FboccError):
            raise first
        raise typer.Exit(6)


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
        out.print(to_markdown(report), markup=False, highlight=False)
        for p in written:
            err.print(f"wrote {p}")
    if fail_on_regression and report.regressions:
        raise ValidationError("regression: " + ", ".join(
            f"{r.current.target} {r.current.precision} {r.change * 100:+.1f}%" for r in report.regressions
            if r.change is not None), fix=f"the median time grew by more than {report.threshold * 100:.0f}%")
