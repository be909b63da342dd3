"""`fbocc doctor`: checks this machine (and targets) and says how to fix what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fbocc.cli.app import app, emit_json, load_config, out

STYLE = {"ok": "green", "missing": "red", "warning": "yellow", "skipped": "dim"}


@app.command("doctor")
def doctor(
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Build profile to check.")] = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="Target (or group) to check.")] = None,
    accept_new: Annotated[bool, typer.Option("--accept-new", help="Record an unknown target host key.")] = False,
    fbbev: Annotated[Path | None, typer.Option(
        "--fbbev", help="Also check this FB-BEV tree and its environment (export --fbbev, parity tools).")] = None,
    fbbev_python: Annotated[str | None, typer.Option(
        "--fbbev-python", help="Python of the FB-BEV environment (default: this one).",
        envvar="FBOCC_FBBEV_PYTHON")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Check Docker, build image, TensorRT .deb, compilers, SSH, and targets; exit 1 if anything required is missing."""
    from fbocc.doctor import run_doctor

    cfg = load_config(**{"build.profile": profile})
    report = run_doctor(cfg, profile=profile, targets=target, accept_new=accept_new, fbbev=fbbev,
                        fbbev_python=fbbev_python)
    if as_json:
        emit_json(report.as_dict())
    else:
        table = Table(title="fbocc doctor")
        for column in ("where", "check", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        for c in report.checks:
            status = c.status if c.required or c.status != "missing" else "missing (optional)"
            table.add_row(escape(c.area), escape(c.name), f"[{STYLE[c.status]}]{status}[/]", escape(c.detail),
                          escape(c.fix or ""))
        out.print(table)
        out.print("[green]all required checks passed[/]" if report.ok else "[red]required checks failed[/]")
    if not report.ok:
        raise typer.Exit(1)
