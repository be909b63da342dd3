"""The typer application, global options, and the one place that turns errors into exit codes."""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.exceptions import TyperException

from fbocc import __version__
from fbocc.errors import FboccError

app = typer.Typer(
    name="fbocc",
    help="FB-OCC from PyTorch checkpoint to a benchmarked TensorRT engine on NVIDIA DRIVE AGX Orin.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

DEFAULT_EXPORT_DIR = Path("fbocc-export")  # where `fbocc export` writes <model>.onnx and samples/

# Results go to stdout, progress and diagnostics to stderr, so `--json` output stays machine-readable.
# Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class CliState:
    """Global options, available to every command through `state()`."""

    config_file: Path | None = None
    verbose: bool = False


_STATE = CliState()


def state() -> CliState:
    """The global options of this invocation."""
    return _STATE


def load_config(**cli: Any) -> Any:
    """Load the layered configuration with this command's options as the top layer."""
    from fbocc.config import load_config as _load

    return _load(_STATE.config_file, cli=cli)


def emit_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _version(value: bool) -> None:
    if value:
        out.print(f"fbocc {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Project config file (default: ./fbocc.toml).",
                                                envvar="FBOCC_CONFIG")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug output.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Global options."""
    _STATE.config_file = config
    _STATE.verbose = verbose


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user errors print one message, bugs a traceback."""
    global _STATE
    _STATE = CliState()
    try:
        # Without standalone mode, typer returns the code of a `typer.Exit` instead of raising it.
        code = app(args=argv, prog_name="fbocc", standalone_mode=False)
        if code == 130:  # typer turns a KeyboardInterrupt that escaped the command into Exit(130)
            err.print("interrupted: stopped by Ctrl-C", style="red")
        return code if isinstance(code, int) else 0
    except FboccError as exc:
        err.print(Text.assemble((f"{exc.kind}: ", "bold red"), exc.render()), soft_wrap=True)
        if _STATE.verbose:
            traceback.print_exc()
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except TyperException as exc:  # usage errors: typer prints them the way click did
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {exc.format_message()}")
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted", style="red")
        return 130
