"""The `fbocc` command line. Each command module registers itself on `app`; commands parse options,
call the library, and render. Heavy imports (docker, torch, onnx) happen inside the commands so that
`fbocc --help` and `fbocc push-to-target` start fast.
"""

from __future__ import annotations

import sys

from fbocc.cli.app import app, run

# Command modules register on import; keep this list in the order of the README's command reference.
from fbocc.cli import config_cmd, cross_build_cmd, doctor_cmd, bench_cmd, report_cmd, export_cmd, validate_cmd  # noqa: F401  isort: skip
from fbocc.cli import samples_cmd  # noqa: F401  isort: skip
from fbocc.cli import push_cmd  # noqa: F401  isort: skip


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))


__all__ = ["app", "main", "run"]
