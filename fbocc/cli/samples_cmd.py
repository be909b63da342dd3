"""`fbocc samples`: an fbocc samples directory from a folder of .dat inputs written by FB-BEV's own scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fbocc.cli.app import app, emit_json, err, out


@app.command("samples")
def samples_cmd(
    from_fbbev: Annotated[Path, typer.Option(
        "--from-fbbev", help="The --data_dir of FB-BEV's deployment/pth2onnx.py, or the --save_dir of its "
        "eval_orin/preprocess_samples.py (numbered frame folders).")],
    onnx: Annotated[Path, typer.Option("--onnx", help="The ONNX graph those inputs belong to.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Samples directory to write (replaced atomically).")
                       ] = Path("fbocc-samples"),
    profile_margin: Annotated[float, typer.Option(
        "--profile-margin", help="Min/max of dynamic shapes: sample range widened by this fraction.")] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write manifest.json + frame_NNN/*.dat from FB-BEV's .dat folder, for push-to-target and remote-bench."""
    from fbocc.export.foreign import samples_from_fbbev_folder

    result = samples_from_fbbev_folder(from_fbbev, onnx, out_dir, profile_margin=profile_margin,
                                       progress=lambda msg: err.print(f"samples: {msg}"))
    if as_json:
        emit_json({"out": str(result.out), "layout": result.layout, "frames": result.frames,
                   "supplied": result.supplied, "notes": result.notes, "references": result.references})
        return
    out.print(f"samples  {result.out} ({result.frames} frames from FB-BEV's {result.layout} layout"
              + (", with reference outputs)" if result.references else ", no reference outputs)"))
    for line in result.supplied:
        out.print(f"supplied {line}")
    for line in result.notes:
        out.print(f"note     {line}")
