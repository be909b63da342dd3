"""`fbocc cross-build`: the plugin library for a build profile, built in its container and verified."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer

from fbocc.cli.app import app, emit_json, err, load_config, out, state


@app.command("cross-build")
def cross_build_cmd(
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Build profile (`fbocc config show`).")] = None,
    trt_deb: Annotated[Path | None, typer.Option("--trt-deb", help="TensorRT cross repo .deb (or its folder).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder: .so files + manifest.")] = None,
    sources: Annotated[Path | None, typer.Option("--sources", help="Plugin sources (default: plugins/).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cache has this build.")] = False,
    keep_container: Annotated[bool | None, typer.Option("--keep-container/--no-keep-container",
                                                        help="Keep the build container (debugging).")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Parallel compile jobs (0: all cores).")] = None,
    transfer: Annotated[str, typer.Option("--transfer", help="auto | mount | archive (archive: remote daemons).",
                                          hidden=True)] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the build manifest as JSON.")] = False,
) -> None:
    """Cross-compile the plugin library in the profile's build container and verify the ELF."""
    from fbocc.build.cross_build import CrossBuildRequest, cross_build
    from fbocc.build.profile_image import resolve_trt_deb

    cfg = load_config(**{"build.profile": profile, "build.out_dir": out_dir, "build.trt_deb": trt_deb,
                         "build.jobs": jobs, "build.keep_container": keep_container})
    prof = cfg.profile()
    request = CrossBuildRequest(
        profile=prof, out_dir=cfg.build.out_dir, sources=sources,
        trt_deb=resolve_trt_deb(cfg.build.trt_deb, prof), force=force,
        keep_container=cfg.build.keep_container, jobs=cfg.build.jobs, transfer=transfer)
    verbose = state().verbose
    started = time.monotonic()
    def on_step(step: str) -> None:
        err.print(f"[bold cyan]▸[/] {step} [dim](+{time.monotonic() - started:.1f}s)[/]")

    def on_line(line: str) -> None:
        # Compiler and image-build output is shown live; debootstrap's per-package chatter only with -v.
        if verbose or not line.startswith(("I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking",
                                           "I: Configuring")):
            err.out(f"  {line}", style="dim", highlight=False)

    result = cross_build(request, on_step=on_step, on_line=on_line)
    m = result.manifest
    if as_json:
        emit_json(dataclasses.asdict(m) | {"manifest_path": str(result.manifest_path)})
        return
    verdict = "cache hit, no container started" if result.cache_hit else "built"
    out.print(f"[green]{prof.name}[/]: {verdict} in {m.duration_s:.1f}s -> {result.manifest_path.parent}")
    for art in m.artefacts:
        archs = ", ".join(f"sm_{a}" for a in art.cubin_archs) or "none"
        regs = ", ".join(art.registration_symbols) or "none (kernels only)"
        out.print(f"  {art.file}  {art.machine}  device code: {archs}  registration: {regs}  sha256 {art.sha256[:16]}")
    out.print(f"  manifest: {result.manifest_path}")
    if result.container:
        out.print(f"  kept container: {result.container} (remove with: docker rm -f {result.container})")
