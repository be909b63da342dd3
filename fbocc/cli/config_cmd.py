"""`fbocc config show`: the merged configuration and where each value came from."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fbocc.cli.app import app, emit_json, load_config, out

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show every setting, its value, and which layer set it."""
    cfg = load_config()
    if as_json:
        emit_json({"files": [str(p) for p in cfg.files], "settings": cfg.as_dict()})
        return
    table = Table(title="fbocc configuration", show_lines=False)
    table.add_column("key")
    table.add_column("value")
    table.add_column("from")
    for key, value, origin in cfg.value_rows():
        table.add_row(key, "" if value is None else str(value), origin)
    out.print(table)
    out.print("files read: " + (", ".join(str(p) for p in cfg.files) or "none (built-in defaults only)"))
