"""`fbocc remote-bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fbocc.cli.app import DEFAULT_EXPORT_DIR, app, emit_json, err, load_config, out


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
    backend: Annotated[str, typer.Option("--backend", help="tensorrt (trtexec) or onnxruntime (run_sequence).")]
    = "tensorrt",
    builder: Annotated[str, typer.Option("--builder", help="trtexec, or python (deploy.create_engine).")]
    = "trtexec",
    export_dir: Annotated[Path, typer.Option("--export-dir", help="Output of `fbocc export`: its samples/ "
                                                                   "manifest is read here when it is the pushed "
                                                                   "one.")] = DEFAULT_EXPORT_DIR,
    frame: Annotated[int, typer.Option("--frame", help="Which sample frame's inputs to load.")] = 0,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds per remote step.")] = None,
    accept_new: Annotated[bool, typer.Option("--accept-new", help="Record an unknown target host key.")] = False,
    keep_remote_run: Annotated[bool, typer.Option("--keep-remote-run", help="Keep runs/<id>/ on the target.")]
    = False,
    wait_lock: Annotated[float, typer.Option("--wait-lock", metavar="SECONDS",
                                             help="When another fbocc works in the target's workdir, wait up to "
                                             "this long for it instead of failing.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result documents as JSON.")] = False,
) -> None:
    """Build (or reuse) the engines on the target, benchmark them, and keep the results."""
    from fbocc.errors import FboccError
    from fbocc.target.bench import BenchOptions, remote_bench
    from fbocc.target.trtexec_commands import TimingMode

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
                           keep_remote_run=keep_remote_run, wait_lock_s=wait_lock)
    options.check()
    resolved = cfg.resolve_targets(targets)
    outcomes = remote_bench(resolved, options, cfg.project.results_dir, known_hosts=cfg.project.known_hosts,
                            accept_new=accept_new, on_line=lambda line: err.print(escape(line), highlight=False),
                            samples_dir=export_dir / "samples")
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        emit_json({"results": [r.as_dict() for o in outcomes if o.value for r in o.value.results],
                   "saved": [str(p) for o in outcomes if o.value for p in o.value.paths],
                   "failed": {o.target.name: o.error.render() for o in failed if o.error}})
    else:
        table = Table(title="fbocc remote-bench")
        for col in ("target", "backend", "precision", "graph", "median (ms)", "p99 (ms)", "throughput (qps)",
                    "engine", "result"):
            table.add_column(col, overflow="fold")
        for o in outcomes:
            if o.value is None:
                continue
            for r in o.value.results:
                key = "GPU Compute Time" if r.backend == "tensorrt" else "Latency"
                m = r.summary.get("metrics_ms", {}).get(key, {})
                engine = "cached" if r.engine.get("cached") else ("built" if r.engine else "-")
                graph = f"{r.engine.get('graph')} ({r.engine.get('typing')})" if r.engine.get("graph") else "-"
                table.add_row(r.target, r.backend, r.precision, graph, f"{m.get('median', float('nan')):.3f}",
                              f"{m.get('percentiles', {}).get('99', float('nan')):.3f}",
                              f"{r.summary.get('throughput_qps') or float('nan'):.2f}", engine,
                              str(next(p for p in o.value.paths if r.run_id in p.name)))
        out.print(table)
        if options.backend == "tensorrt":
            from fbocc.results.report import TIMING_NAMES

            out.print("timing set on every run: " + ", ".join(
                f"{name} {'on' if options.timing.as_dict()[key] else 'off'}" for key, name in TIMING_NAMES))
        for o in failed:
            err.print(f"[red]{o.target.name}: {escape(o.error.render() if o.error else 'failed')}[/]")
    if failed:
        first = failed[0].error
        if len(failed) == len(outcomes) and isinstance(first, FboccError):
            raise first
        raise typer.Exit(6)
