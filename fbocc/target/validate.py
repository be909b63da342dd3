"""`fbocc validate`: run the pushed sequence on a target, pull the outputs back, compare with PyTorch.

The TensorRT backend runs THE engine of (pushed set, precision, builder, TensorRT version, profile)
that fbocc.target.contract.ensure_engine gives (the one `fbocc remote-bench` times), and the
validation record names it, so `fbocc report` pairs an mIoU with a latency only when both come from
the same engine file. The references are the host's own export when it is what was pushed; only what
the host lacks is pulled. What is compared and the tolerances: fbocc.results.comparison and
deploy.compare. Outputs over PULL_LIMIT stay on the target, judged by the statistics computed there.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deploy import protocol
from deploy.compare import TOLERANCES
from fbocc.errors import ConfigError, RemoteError, TransferError
from fbocc.export.samples import MANIFEST_NAME, load_manifest, sha256_file
from fbocc.results.comparison import Comparison, compare_runs, occupancy_output
from fbocc.target.bench import BenchOptions
from fbocc.target.contract import (
    RUNS,
    EngineRecord,
    PushedSet,
    deploy_command,
    engine_plan,
    ensure_engine,
    locate_pushed_set,
    probe_target,
    require_tensorrt,
    run_dir,
    tagged,
)
from fbocc.target.supervision import MARKER_SUFFIX, clean_leftovers, workdir_lock
from fbocc.target.transport import TargetSession

VALIDATED_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ValidateOptions:
    """What `fbocc validate` was asked to do; `check` raises ConfigError naming the wrong option."""

    backend: str = "tensorrt"
    precisions: tuple[str, ...] = ("fp32",)
    builder: str = "trtexec"

    def check(self) -> None:
        BenchOptions(precisions=self.precisions, backend=self.backend, builder=self.builder).check()
        bad = [p for p in self.precisions if p not in VALIDATED_PRECISIONS]
        if bad:
            raise ConfigError(f"--precision {','.join(bad)}: validate runs fp32, fp16 and/or int8",
                              fix="e.g. --precision fp32,fp16,int8")
        if self.backend == "onnxruntime" and set(self.precisions) - {"fp32"}:
            raise ConfigError("the onnxruntime backend runs fp32 only",
                              fix="use --precision fp32, or --backend tensorrt")


@dataclass
class ValidationRun:
    """One backend/precision on one target: the runner's result, the engine, where outputs were pulled to."""

    precision: str
    backend: str
    result: dict[str, Any]
    outputs_dir: Path
    seconds: float
    engine: EngineRecord | None = None


@dataclass
class ValidationReport:
    """Everything `fbocc validate` found for one target."""

    target: str
    backend: str
    runs: list[ValidationRun]
    comparisons: list[Comparison]
    records: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "backend": self.backend, "passed": self.passed,
            "runs": [{"precision": r.precision, "backend": r.backend, "seconds": round(r.seconds, 3),
                      "outputs": str(r.outputs_dir), "latency_ms": r.result.get("latency_ms"),
                      "versions": r.result.get("versions"),
                      "engine": r.engine.as_dict() if r.engine else None} for r in self.runs],
            "comparisons": [c.as_dict() for c in self.comparisons],
            "records": [str(p) for p in self.records], "notes": self.notes,
            "tolerances": {k: v.as_dict() for k, v in TOLERANCES.items()},
        }


PULL_LIMIT = 64 << 20  # outputs bigger than this stay on the target, compared there (history: 400 MB/frame)


@contextmanager
def _staged_dir(local_dir: Path) -> Iterator[Path]:
    """A `<dir>.part` to fill; it replaces `local_dir` only when the block succeeds, else it is removed."""
    part = local_dir.with_name(local_dir.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        yield part
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    shutil.rmtree(local_dir, ignore_errors=True)
    part.rename(local_dir)


def _pull_run(session: TargetSession, remote_dir: str, local_dir: Path, *, keep: set[str],
              limit: int = PULL_LIMIT) -> None:
    """Fetch a run_sequence output directory atomically: its manifest, the outputs named in `keep`, and
    every other output up to `limit` bytes; bigger ones are listed under the frame's `remote_only` and
    judged by the statistics the target computed (`reference_stats`)."""
    with _staged_dir(local_dir) as part:
        session.get(f"{remote_dir}/manifest.json", part / "manifest.json")
        manifest = json.loads((part / "manifest.json").read_text())
        for frame in manifest.get("frames", []):
            for name, entry in list(frame.get("outputs", {}).items()):
                if name in keep or int(entry.get("bytes", 0)) <= limit or name not in frame.get("reference_stats", {}):
                    session.get(f"{remote_dir}/{entry['file']}", part / entry["file"])
                else:
                    frame.setdefault("remote_only", []).append(name)
                    del frame["outputs"][name]
            frame["inputs"] = {}  # fed history inputs (--save-history-inputs) are a test aid; not pulled
        (part / "manifest.json").write_text(json.dumps(manifest, indent=2))
        load_manifest(part, verify_hashes=True)


def _pull_samples_reference(session: TargetSession, remote_samples: str, local_dir: Path) -> None:
    """Fetch the pushed samples' manifest and reference outputs (+ ground truth), not the inputs."""
    with _staged_dir(local_dir) as part:
        session.get(f"{remote_samples}/manifest.json", part / "manifest.json")
        manifest = json.loads((part / "manifest.json").read_text())
        for frame in manifest.get("frames", []):
            for entry in frame.get("outputs", {}).values():
                session.get(f"{remote_samples}/{entry['file']}", part / entry["file"])
            try:
                for entry in frame.get("ground_truth", {}).values():
                    session.get(f"{remote_samples}/{entry['file']}", part / entry["file"])
            except TransferError:  # ground truth not pushed: mIoU falls back to "against PyTorch"
                frame.pop("ground_truth", None)
            frame["inputs"] = {}  # inputs stay on the target: only the reference side is needed here
        manifest["inputs"] = []
        (part / "manifest.json").write_text(json.dumps(manifest, indent=2))


def run_remote_sequence(session: TargetSession, pushed: PushedSet, *, backend: str, precision: str,
                        remote_out: str, engine: EngineRecord | None = None, repeat: int = 1,
                        timeout: float = 3600.0, on_line: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run deploy.run_sequence on the target (the TensorRT backend on `engine`); its FBOCC_RESULT document."""
    args = ["--backend", backend, "--precision", precision, "--set-dir", pushed.samples, "--out", remote_out,
            "--repeat", str(repeat), "--onnx", pushed.onnx]
    if engine is not None:
        args += ["--engine", engine.path, *(["--plugin", pushed.plugin] if pushed.plugin else [])]
    done = session.run(deploy_command(session, pushed, "run_sequence", args), check=False, timeout=timeout,
                       on_line=on_line, marker=remote_out + MARKER_SUFFIX, remove=(remote_out, remote_out + ".part"))
    error = tagged(done.stdout, protocol.ERROR)
    if error:
        raise RemoteError(f"run_sequence on {session.label}: {error.get('message')}", where=session.label,
                          fix=error.get("fix") or "see the remote output above")
    result = tagged(done.stdout, protocol.RESULT)
    if done.exit_code != 0 or result is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise RemoteError(f"run_sequence on {session.label} failed with exit code {done.exit_code}"
                          + (f":\n{tail}" if tail else ""), where=session.label, fix="see the remote output above")
    return result


def reference_samples(session: TargetSession, pushed: PushedSet, local_samples: Path | None, pull_to: Path,
                      say: Callable[[str], None]) -> Path:
    """Where the reference outputs are: the host's export when it is what was pushed (same manifest sha256),
    else the pushed samples' manifest and reference outputs pulled into `pull_to`."""
    if local_samples is not None and (Path(local_samples) / MANIFEST_NAME).is_file():
        wanted = pushed.samples_manifest_sha256
        if wanted is None or sha256_file(Path(local_samples) / MANIFEST_NAME) == wanted:
            return Path(local_samples)
        say(f"{local_samples} is not the export pushed to {session.label}; pulling its references instead")
    say(f"pulling reference outputs from {session.label}")
    _pull_samples_reference(session, pushed.samples, pull_to)
    return pull_to


def validate_target(session: TargetSession, *, backend: str, precisions: list[str], local_dir: Path,
                    samples_dir: Path | None = None, builder: str = "trtexec", rebuild: bool = False,
                    results_dir: Path | None = None, progress: Callable[[str], None] | None = None,
                    pull_limit: int = PULL_LIMIT, timeout_s: float = 3600.0,
                    wait_lock_s: float = 0.0) -> ValidationReport:
    """Run each precision remotely, pull outputs into `local_dir`, compare, and record the mIoU.

    `samples_dir` is the host's export (reference outputs), used when it is the one pushed; otherwise
    the reference outputs are pulled from the pushed samples. The TensorRT backend runs the engine
    `ensure_engine` gives for `builder` (built there when missing).
    """

    ValidateOptions(backend=backend, precisions=tuple(precisions), builder=builder).check()
    say = progress or (lambda text: None)
    with session.doing("validating"), workdir_lock(session, "validating", wait_lock_s, say):
        clean_leftovers(session, str(PurePosixPath(session.workdir()) / RUNS), say)
        return _validate_target(session, backend, precisions, local_dir, samples_dir, builder, rebuild, results_dir,
                                say, pull_limit, timeout_s)


def _validate_target(session: TargetSession, backend: str, precisions: list[str], local_dir: Path,
                     samples_dir: Path | None, builder: str, rebuild: bool, results_dir: Path | None,
                     say: Callable[[str], None], pull_limit: int, timeout_s: float) -> ValidationReport:
    from fbocc.results.history import record_validation

    report = ValidationReport(target=session.label, backend=backend, runs=[], comparisons=[])
    pushed = locate_pushed_set(session)
    if backend == "tensorrt" and not pushed.plugin:
        raise RemoteError(f"no plugin library (*.so) in {session.label}:{pushed.root}", where=session.label,
                          fix=f"build it (fbocc cross-build) and push it (fbocc push-to-target {session.label})")
    samples_dir = reference_samples(session, pushed, samples_dir, local_dir / "reference", say)
    occ = occupancy_output(load_manifest(samples_dir))
    keep = {occ} if occ else set()
    probe = probe_target(session, pushed, precisions=precisions, builder=builder) if backend == "tensorrt" else None
    if probe is not None:  # every precision's graph is there and buildable on this TensorRT, before the first run
        version = require_tensorrt(session, probe, trtexec=builder == "trtexec", pushed=pushed)
        for precision in precisions:
            engine_plan(session, pushed, probe, version, precision)
    for precision in precisions:
        started = time.monotonic()
        engine = None
        if probe is not None:
            engine = ensure_engine(session, pushed, probe, precision, rebuild=rebuild, timeout_s=timeout_s,
                                   on_line=say)
        remote_out = run_dir(session, f"validate-{backend}-{precision}")
        say(f"running the sequence on {session.label} ({backend}, {precision}"
            + (f", engine {engine.path}" if engine else "") + ")")
        result = run_remote_sequence(session, pushed, backend=backend, precision=precision, remote_out=remote_out,
                                     engine=engine, timeout=timeout_s)
        local_out = local_dir / f"{backend}-{precision}"
        say(f"pulling {result.get('frames')} frames of outputs to {local_out} (tensors over "
            f"{pull_limit / 2**20:g} MiB were compared on the target and stay there)")
        _pull_run(session, remote_out, local_out, keep=keep, limit=pull_limit)
        report.runs.append(ValidationRun(precision, backend, result, local_out, time.monotonic() - started, engine))
        comparison = compare_runs(samples_dir, local_out, precision)
        report.comparisons.append(comparison)
    by_precision = {r.precision: r.outputs_dir for r in report.runs}
    for lower in ("fp16", "int8"):
        if "fp32" in by_precision and lower in by_precision:
            report.comparisons.append(compare_runs(by_precision["fp32"], by_precision[lower], lower, against="fp32"))
    if results_dir is not None:
        for comparison in report.comparisons:
            if comparison.against != "pytorch":
                continue
            if comparison.miou is None:
                report.notes.append(f"{comparison.precision}: no mIoU (no occupancy output or no scored class); "
                                    "not recorded in the history")
                continue
            run = next(r for r in report.runs if r.precision == comparison.precision)
            report.records.append(record_validation(
                results_dir, backend=backend, precision=comparison.precision, miou=comparison.miou,
                target=session.label, details=comparison.as_dict(),
                engine=run.engine.as_dict() if run.engine else None))
    return report
