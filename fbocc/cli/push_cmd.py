"""`fbocc push-to-target`: send ONNX, plugin, samples and deploy/ to one or more targets, verified."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fbocc.cli.app import DEFAULT_EXPORT_DIR, app, emit_json, err, load_config, out
from fbocc.errors import ConfigError, FboccError, TransferError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID



class RichPushProgress:
    """Per-target total and per-file bars (MB/s, ETA) on stderr; thread-safe like rich itself."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.totals: dict[str, TaskID] = {}
        self.files: dict[tuple[str, str], TaskID] = {}
        self.lock = threading.Lock()

    def planned(self, target: str, send_bytes: int, send_files: int, skipped: int) -> None:
        with self.lock:
            desc = f"{target}: {send_files} to send, {skipped} unchanged"
            if target in self.totals:
                self.progress.update(self.totals[target], total=send_bytes, completed=0, description=desc)
            else:
                self.totals[target] = self.progress.add_task(desc, total=send_bytes)

    def file_started(self, target: str, name: str, size: int, offset: int) -> None:
        with self.lock:
            label = f"  {name}" + (f" (resumed at {offset / 1e6:.1f} MB)" if offset else "")
            self.files[(target, name)] = self.progress.add_task(label, total=size, completed=offset)

    def advance(self, target: str, name: str, nbytes: int) -> None:
        with self.lock:
            task = self.files.get((target, name))
            total = self.totals.get(target)
        if task is not None:
            self.progress.advance(task, nbytes)
        if total is not None:
            self.progress.advance(total, nbytes)

    def file_done(self, target: str, name: str) -> None:
        with self.lock:
            task = self.files.pop((target, name), None)
        if task is not None:
            self.progress.remove_task(task)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@app.command("push-to-target")
def push_to_target(
    targets: Annotated[list[str] | None, typer.Argument(help="Target or group names ([targets]/[groups] or "
                                                              "ssh_config aliases).", show_default=False)] = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="Target or group (repeatable).",
                                                     show_default=False)] = None,
    export_dir: Annotated[Path, typer.Option(
        "--export-dir", help="Output of `fbocc export`: its *.onnx and samples/ are the defaults of --onnx and "
        "--samples.")] = DEFAULT_EXPORT_DIR,
    onnx: Annotated[Path | None, typer.Option(help="ONNX model [default: the *.onnx in --export-dir].")] = None,
    plugin: Annotated[Path | None, typer.Option(help="Plugin .so or cross-build output dir "
                                                     "[default: [build] out_dir].")] = None,
    samples: Annotated[Path | None, typer.Option(help="Samples directory [default: --export-dir/samples].")] = None,
    no_plugin: Annotated[bool, typer.Option("--no-plugin", help="Push without a plugin library.")] = False,
    no_samples: Annotated[bool, typer.Option("--no-samples", help="Push without samples.")] = False,
    accept_new: Annotated[bool, typer.Option("--accept-new", help="Trust and record the host key of a target "
                                                                  "not seen before.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the artefact sets on the target(s).")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Remove old sets, keeping --keep N and current.")] = False,
    keep: Annotated[int, typer.Option(help="Sets to keep with --prune.")] = 3,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Files in flight per target.")] = 4,
    retries: Annotated[int, typer.Option(help="Reconnects allowed per target before giving up.")] = 5,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash every file already on the target.")] = False,
    wait_lock: Annotated[float, typer.Option("--wait-lock", metavar="SECONDS",
                                             help="When another fbocc works in the target's workdir, wait up to "
                                             "this long for it instead of failing.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON results on stdout.")] = False,
) -> None:
    """Push the ONNX model, plugin, samples and deploy/ scripts to targets: verified, resumable, incremental."""
    from fbocc.target.artefacts import artefact_paths, collect_artefacts
    from fbocc.target.push import push_to_targets
    from fbocc.target.store import manage_sets

    cfg = load_config()
    names = [*(targets or []), *(target or [])]
    if not names:
        raise ConfigError("no target given", fix="name one: fbocc push-to-target orin (see [targets] in fbocc.toml)")
    resolved = cfg.resolve_targets(names)
    known_hosts = cfg.project.known_hosts
    if list_ or prune:
        outcomes = manage_sets(resolved, keep=keep if prune else None, known_hosts=known_hosts, accept_new=accept_new,
                               wait_lock_s=wait_lock)
        _render_manage(outcomes, prune, as_json)
        _raise_failures(outcomes)
        return
    paths = artefact_paths(export_dir, onnx=onnx, plugin=plugin, samples=samples, build_out=cfg.build.out_dir,
                           no_plugin=no_plugin, no_samples=no_samples)

    import rich.progress as rp

    err.print(f"push: hashing artefacts for {len(resolved)} target(s)")
    aset = collect_artefacts(onnx=paths.onnx, plugin=paths.plugin, samples=paths.samples)
    err.print(f"push: set {aset.set_hash}: {len(aset.files)} files, {_mb(aset.total_bytes)}")
    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.DownloadColumn(),
               rp.TransferSpeedColumn(), rp.TimeRemainingColumn())
    with rp.Progress(*columns, console=err, transient=True) as bar:
        outcomes = push_to_targets(resolved, aset, known_hosts=known_hosts, accept_new=accept_new,
                                   progress=RichPushProgress(bar), parallel=jobs, retries=retries, verify=verify,
                                   wait_lock_s=wait_lock, on_note=lambda line: err.print(f"push: {line}"))
    _render_push(aset, outcomes, as_json)
    _raise_failures(outcomes)


def _render_push(aset: Any, outcomes: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json({"set": aset.set_hash, "files": len(aset.files), "bytes": aset.total_bytes,
                   "targets": [{"target": o.target.name, "ok": o.ok,
                                **(o.value.as_dict() if o.value else {}),
                                **({"error": o.error.render(), "exit_code": o.error.exit_code} if o.error else {})}
                               for o in outcomes]})
    elif len(outcomes) > 1 or outcomes[0].ok:  # a single failure is reported as the error alone
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"push-to-target: set {aset.set_hash}")
        for col in ("target", "result", "sent", "skipped", "bytes sent", "MB/s", "seconds", "remote set"):
            table.add_column(col)
        for o in outcomes:
            r = o.value
            if r is None:
                assert o.error is not None
                table.add_row(o.target.name, f"[red]failed[/red]: {escape(o.error.message)}", "", "", "", "", "", "")
                continue
            note = "ok" + (f" ({r.resumed} resumed, {r.reconnects} reconnects)" if r.reconnects else "")
            table.add_row(o.target.name, note, str(r.files_sent), str(r.files_skipped), _mb(r.bytes_sent),
                          f"{r.mb_per_s:.1f}", f"{r.seconds:.2f}", r.remote_set_dir)
        out.print(table)


def _render_manage(outcomes: list[Any], prune: bool, as_json: bool) -> None:
    from dataclasses import asdict

    from rich.table import Table

    if as_json:
        emit_json([{"target": o.target.name, "ok": o.ok,
                    **({"result": asdict(o.value) if prune else [asdict(s) for s in o.value]} if o.ok else {}),
                    **({"error": o.error.render()} if o.error else {})} for o in outcomes])
        return
    for o in outcomes:
        if not o.ok:
            continue
        if prune:
            r = o.value
            out.print(f"{o.target.name}: removed {len(r.removed)} set(s) {' '.join(r.removed)}, "
                      f"kept {' '.join(r.kept) or 'none'}, freed {_mb(r.freed_bytes)}")
            continue
        table = Table(title=f"{o.target.name}: artefact sets")
        for col in ("set", "current", "created", "files", "size", "onnx"):
            table.add_column(col)
        for s in o.value:
            table.add_row(s.set_hash, "*" if s.current else "", s.created or "(incomplete)", str(s.files),
                          _mb(s.total_bytes), s.onnx or "")
        out.print(table)


def _raise_failures(outcomes: list[Any]) -> None:
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return
    if len(outcomes) == 1:
        raise failed[0].error
    from rich.text import Text

    for o in failed:
        err.print(Text(o.error.render(), style="red"))
    first: FboccError = failed[0].error
    raise TransferError(f"{len(failed)} of {len(outcomes)} targets failed: "
                        + ", ".join(o.target.name for o in failed), fix=first.fix)
