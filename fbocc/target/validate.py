"""`fbocc validate`: run the pushed sequence on a target, pull the outputs back, compare with PyTorch.

What is compared (per output tensor, over every frame of the sequence):

- max-abs error, relative error (max-abs / max |reference|) and cosine similarity against the PyTorch
  reference outputs that `fbocc export` stored in the samples;
- occupancy label agreement: the fraction of voxels whose argmax class equals PyTorch's;
- Occ3D mIoU (fbocc.results.metrics, FB-BEV's definition) against ground-truth labels when the samples carry
  them (frame `ground_truth`: `semantics` + `mask_camera` tensors), otherwise against PyTorch's own
  prediction, labelled `"miou_against": "pytorch"` so nobody mistakes it for dataset accuracy;
- fp16 against fp32 when both precisions run.

Tolerances (documented in TOLERANCES; a check passes when every output is within them):

| precision | cosine >= | relative error <= | label agreement >= |
| --- | --- | --- | --- |
| fp32 | 0.9999 | 1e-3 | 0.999 |
| fp16 | 0.999 | 2e-2 | 0.99 |

The fp32 bounds hold an engine to PyTorch up to float re-association (different kernels, fused
convolutions); fp16 bounds follow the seed's result (mIoU 38.86 fp16 vs 38.90 fp32: ~0.1 % of labels).
Integer outputs (sequence ids, sweep counters) must match exactly.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fbocc.errors import Interrupted, RemoteError, TransferError, ValidationError
from fbocc.export.samples import load_manifest, read_tensor
from fbocc.results.metrics import NUM_CLASSES, OccupancyMIoU

RESULT_TAG = "FBOCC_RESULT "
ERROR_TAG = "FBOCC_ERROR "
ENGINE_TAG = "FBOCC_ENGINE "


@dataclass(frozen=True)
class Tolerance:
    """Bounds one precision must meet against the PyTorch reference."""

    cosine_min: float
    rel_error_max: float
    label_agreement_min: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(cosine_min=0.9999, rel_error_max=1e-3, label_agreement_min=0.999),
    "fp16": Tolerance(cosine_min=0.999, rel_error_max=2e-2, label_agreement_min=0.99),
}


@dataclass
class TensorComparison:
    """One output over the whole sequence."""

    name: str
    max_abs: float
    mean_abs: float
    rel_error: float
    cosine: float  # the lowest per-frame cosine similarity
    exact: bool  # integer outputs: every value identical
    within: bool
    history: bool = False
    compared_on: str = "host"  # "target": a big tensor compared there by deploy/run_sequence.py, not pulled

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_abs": self.max_abs, "mean_abs": self.mean_abs, "rel_error": self.rel_error,
                "cosine": self.cosine, "exact": self.exact, "within_tolerance": self.within,
                "history": self.history, "compared_on": self.compared_on}


@dataclass
class Comparison:
    """Outputs of one run (backend, precision) against a reference (PyTorch, or the fp32 run)."""

    precision: str
    against: str  # "pytorch" or "fp32"
    tensors: list[TensorComparison]
    frames: int
    occupancy_output: str | None = None
    label_agreement: float | None = None
    miou: float | None = None
    miou_reference: float | None = None  # PyTorch's own mIoU vs ground truth (when there is ground truth)
    miou_against: str | None = None  # "ground-truth" or "pytorch"
    per_class_iou: dict[str, float | None] = field(default_factory=dict)
    tolerance: Tolerance | None = None

    @property
    def passed(self) -> bool:
        ok = all(t.within for t in self.tensors)
        if self.tolerance is not None and self.label_agreement is not None:
            ok = ok and self.label_agreement >= self.tolerance.label_agreement_min
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "against": self.against, "frames": self.frames,
                "passed": self.passed, "tensors": [t.as_dict() for t in self.tensors],
                "occupancy_output": self.occupancy_output, "label_agreement": self.label_agreement,
                "miou": self.miou, "miou_reference": self.miou_reference, "miou_against": self.miou_against,
                "per_class_iou": self.per_class_iou,
                "tolerance": None if self.tolerance is None else vars(self.tolerance)}


def _cosine_of(stats: dict[str, Any]) -> float:
    na, nb = float(stats["norm_have"]), float(stats["norm_want"])
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(stats["dot"]) / (float(np.sqrt(na)) * float(np.sqrt(nb)))


def load_runner() -> Any:
    """deploy/run_sequence.py as a module: the target's own runner and comparison code, run on the host."""
    import importlib.util
    import sys

    from fbocc.assets import asset_dir

    name = "fbocc_deploy_run_sequence"
    if name in sys.modules:
        return sys.modules[name]
    deploy = asset_dir("deploy")
    if str(deploy) not in sys.path:
        sys.path.insert(0, str(deploy))  # the runner imports its siblings (manifest, ort_ops) by name
    spec = importlib.util.spec_from_file_location(name, deploy / "run_sequence.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def occupancy_output(manifest: dict[str, Any]) -> str | None:
    """The output holding class scores: the manifest's `model.occupancy_output`, else `pred_occupancy`."""
    named = manifest.get("model", {}).get("occupancy_output")
    names = [o["name"] for o in manifest.get("outputs", [])]
    if named:
        return str(named)
    return "pred_occupancy" if "pred_occupancy" in names else None


def occupancy_labels(scores: np.ndarray, layout: str = "BKXYZ") -> np.ndarray:
    """Class labels [X,Y,Z] from scores [1,K,X,Y,Z] (layout BKXYZ, FB-OCC's head) or [1,X,Y,Z,K] (BXYZK)."""
    if scores.dtype.kind in "iu" and scores.ndim <= 4:
        return scores.reshape(scores.shape[-3:])
    if layout == "BXYZK":
        return scores[0].argmax(axis=-1)
    return scores[0].argmax(axis=0)


def fbbev_occ3d_labels(scores: np.ndarray) -> np.ndarray:
    """Labels [200,200,16] in Occ3D's layout from FB-OCC's raw scores [1,19,200,200,16], as FB-BEV's
    `post_process` makes them: drop the void channel 0 (fix_void), argmax, and rotate the grid from
    BEVDet's layout back to Occ3D's (permute, flip, rot90 -1). Argmax commutes with the softmax and moves."""
    labels = scores[0, 1:].argmax(axis=0)  # [A, B, Z]: Occ3D classes 0..17
    labels = labels.transpose(2, 0, 1)  # [Z, A, B]
    labels = np.flip(labels, axis=1)
    labels = np.rot90(labels, -1, axes=(1, 2))
    return np.ascontiguousarray(labels.transpose(1, 2, 0))


def _frame_arrays(root: Path, frame: dict[str, Any], group: str) -> dict[str, np.ndarray]:
    return {name: read_tensor(root, entry) for name, entry in frame.get(group, {}).items()}


def compare_runs(reference_dir: Path, run_dir: Path, precision: str, *, against: str = "pytorch",
                 reference_group: str = "outputs") -> Comparison:
    """Compare the outputs in `run_dir` (run_sequence's manifest) with `reference_dir`'s `reference_group`.

    `reference_dir` is the export's samples directory (reference outputs per frame) or another run's
    output directory (fp16 vs fp32).
    """
    ref_manifest = load_manifest(reference_dir)
    run_manifest = load_manifest(run_dir)
    ref_frames = {f["id"]: f for f in ref_manifest["frames"]}
    run_frames = run_manifest["frames"]
    missing = [f["id"] for f in run_frames if f["id"] not in ref_frames]
    if missing or not run_frames:
        raise ValidationError(f"{run_dir}: frames {missing or '(none)'} have no reference in {reference_dir}",
                              fix="validate against the samples this run was made from")
    history_outputs = {p["output"] for p in ref_manifest.get("history", [])}
    tolerance = TOLERANCES.get(precision, TOLERANCES["fp16"])
    occ_name = occupancy_output(ref_manifest)
    layout = ref_manifest.get("model", {}).get("occupancy_layout", "BKXYZ")
    stats: dict[str, dict[str, Any]] = {}
    agree = total = 0
    metric = OccupancyMIoU()
    ref_metric = OccupancyMIoU()
    has_gt = all("ground_truth" in ref_frames[f["id"]] for f in run_frames)
    to_gt = ref_manifest.get("dataset", {}).get("prediction_to_ground_truth")
    stats_of = load_runner().reference_stats
    for frame in run_frames:
        ref_entries = ref_frames[frame["id"]].get(reference_group, {})
        ref_occ = got_occ = None
        for name, ref_entry in ref_entries.items():
            if name in frame.get("outputs", {}):
                have = read_tensor(run_dir, frame["outputs"][name])
                want = read_tensor(reference_dir, ref_entry)
                if have.shape != want.shape:
                    raise ValidationError(f"output {name!r} of frame {frame['id']} has shape {list(have.shape)}, "
                                          f"the reference {list(want.shape)}", fix="re-export and push the samples")
                frame_stats = stats_of(have, want)
                if name == occ_name:
                    ref_occ, got_occ = want, have
            elif name in frame.get("remote_only", []) and name in frame.get("reference_stats", {}):
                frame_stats = frame["reference_stats"][name]  # compared on the target, not pulled back
            else:
                raise ValidationError(f"{run_dir}: frame {frame['id']} lacks output {name!r}",
                                      fix="the run and the reference come from different models: re-export and push")
            s = stats.setdefault(name, {"max_abs": 0.0, "sum_abs": 0.0, "count": 0, "ref_max": 0.0,
                                        "cos": 1.0, "exact": True, "int": bool(frame_stats["integer"]),
                                        "on_target": False})
            s["max_abs"] = max(s["max_abs"], frame_stats["max_abs"])
            s["sum_abs"] += frame_stats["sum_abs"]
            s["count"] += frame_stats["count"]
            s["ref_max"] = max(s["ref_max"], frame_stats["ref_max"])
            s["cos"] = min(s["cos"], _cosine_of(frame_stats))
            s["exact"] = s["exact"] and bool(frame_stats["exact"])
            s["on_target"] = s["on_target"] or name in frame.get("remote_only", [])
        if ref_occ is not None and got_occ is not None:
            want_labels = occupancy_labels(ref_occ, layout)
            have_labels = occupancy_labels(got_occ, layout)
            agree += int((want_labels == have_labels).sum())
            total += want_labels.size
            # FB-OCC's head has a void channel 0 and BEVDet's grid orientation: score in Occ3D's classes
            # (as FB-BEV's post_process does) whether the other side is ground truth or PyTorch.
            have_cls, want_cls = have_labels, want_labels
            if got_occ.ndim == 5 and got_occ.shape[1] == NUM_CLASSES + 1 and (to_gt == "fbbev-occ3d" or not has_gt):
                have_cls, want_cls = fbbev_occ3d_labels(got_occ), fbbev_occ3d_labels(ref_occ)
            if has_gt:
                gt = _frame_arrays(reference_dir, ref_frames[frame["id"]], "ground_truth")
                mask = gt.get("mask_camera")
                mask = None if mask is None else mask.astype(bool)
                have_gt, want_gt = have_cls, want_cls
                if have_gt.shape != gt["semantics"].shape:
                    raise ValidationError(f"frame {frame['id']}: prediction labels {list(have_gt.shape)} and ground "
                                          f"truth {list(gt['semantics'].shape)} differ in shape",
                                          fix="re-export the samples with this fbocc version")
                metric.add(have_gt, gt["semantics"], mask)
                ref_metric.add(want_gt, gt["semantics"], mask)
            else:
                metric.add(have_cls, want_cls)
    tensors = []
    for name, s in stats.items():
        rel = s["max_abs"] / s["ref_max"] if s["ref_max"] > 0 else (0.0 if s["max_abs"] == 0 else float("inf"))
        within = s["exact"] if s["int"] else (s["cos"] >= tolerance.cosine_min and rel <= tolerance.rel_error_max)
        tensors.append(TensorComparison(name, s["max_abs"], s["sum_abs"] / max(1, s["count"]), rel, s["cos"],
                                        s["exact"], within, history=name in history_outputs,
                                        compared_on="target" if s["on_target"] else "host"))
    result = Comparison(precision=precision, against=against, tensors=tensors, frames=len(run_frames),
                        occupancy_output=occ_name if total else None, tolerance=tolerance)
    if total:
        result.label_agreement = agree / total
        miou = metric.result()
        result.miou = None if np.isnan(miou.miou) else round(miou.miou, 4)
        result.per_class_iou = miou.per_class
        result.miou_against = "ground-truth" if has_gt else against
        if has_gt:
            ref_miou = ref_metric.result()
            result.miou_reference = None if np.isnan(ref_miou.miou) else round(ref_miou.miou, 4)
    return result


# --- remote ---------------------------------------------------------------------------------------


def parse_tagged(stdout: str, tag: str) -> dict[str, Any] | None:
    """The JSON of the last `TAG {...}` line of a target-side script's stdout."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(tag):
            try:
                doc = json.loads(line[len(tag):])
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None


@dataclass
class ValidationRun:
    """One backend/precision on one target: the runner's result and where its outputs were pulled to."""

    precision: str
    backend: str
    result: dict[str, Any]
    outputs_dir: Path
    seconds: float


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
                      "versions": r.result.get("versions")} for r in self.runs],
            "comparisons": [c.as_dict() for c in self.comparisons],
            "records": [str(p) for p in self.records], "notes": self.notes,
            "tolerances": {k: vars(v) for k, v in TOLERANCES.items()},
        }


def _remote_current(session: Any) -> dict[str, str]:
    """Paths of the pushed set under `<workdir>/current/` (push-to-target's layout, read by remote-bench)."""
    from fbocc.target.bench import locate_artifacts

    arts = locate_artifacts(session)
    return {"current": arts.root, "samples": arts.samples, "deploy": arts.deploy, "onnx": arts.onnx,
            "plugin": arts.plugin or ""}


def _fetch(session: Any, remote: str, local: Path) -> None:
    """One remote file to `local` through a temporary name, with SFTP read-ahead.

    TargetSession.get reads at ~1.6 MB/s on loopback here; paramiko's prefetch with a bounded number of
    requests in flight reaches ~22 MB/s on the same link (measured), which matters for 50 MB outputs.
    """
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.fbocc-tmp")
    try:
        session.sftp().get(remote, str(tmp), max_concurrent_prefetch_requests=64)
        tmp.replace(local)
    except FileNotFoundError as exc:
        tmp.unlink(missing_ok=True)
        raise TransferError(f"{remote} does not exist on {session.label}", where=session.label,
                            fix="check that the remote step produced it (see the output above)") from exc
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        raise Interrupted(f"interrupted while pulling {remote} from {session.label}; nothing half-written kept",
                          fix="re-run the same command") from None
    except Exception as exc:  # paramiko's SFTPError/SSHException as well as OSError
        tmp.unlink(missing_ok=True)
        if isinstance(exc.__context__, KeyboardInterrupt):  # paramiko failed while closing after Ctrl-C
            raise Interrupted(f"interrupted while pulling {remote} from {session.label}",
                              fix="re-run the same command") from None
        raise TransferError(f"copying {session.label}:{remote} to {local} failed: {exc}", where=session.label,
                            fix="check the connection and local free space") from exc


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


def _pull_run(session: Any, remote_dir: str, local_dir: Path, *, keep: set[str], limit: int = PULL_LIMIT) -> None:
    """Fetch a run_sequence output directory atomically: its manifest, the outputs named in `keep`, and
    every other output up to `limit` bytes; bigger ones are listed under the frame's `remote_only` and
    judged by the statistics the target computed (`reference_stats`)."""
    with _staged_dir(local_dir) as part:
        _fetch(session, f"{remote_dir}/manifest.json", part / "manifest.json")
        manifest = json.loads((part / "manifest.json").read_text())
        for frame in manifest.get("frames", []):
            for name, entry in list(frame.get("outputs", {}).items()):
                if name in keep or int(entry.get("bytes", 0)) <= limit or name not in frame.get("reference_stats", {}):
                    _fetch(session, f"{remote_dir}/{entry['file']}", part / entry["file"])
                else:
                    frame.setdefault("remote_only", []).append(name)
                    del frame["outputs"][name]
            frame["inputs"] = {}  # fed history inputs (--save-history-inputs) are a test aid; not pulled
        (part / "manifest.json").write_text(json.dumps(manifest, indent=2))
        load_manifest(part, verify_hashes=True)


def _pull_samples_reference(session: Any, remote_samples: str, local_dir: Path) -> None:
    """Fetch the pushed samples' manifest and reference outputs (+ ground truth), not the inputs."""
    with _staged_dir(local_dir) as part:
        _fetch(session, f"{remote_samples}/manifest.json", part / "manifest.json")
        manifest = json.loads((part / "manifest.json").read_text())
        for frame in manifest.get("frames", []):
            for entry in frame.get("outputs", {}).values():
                _fetch(session, f"{remote_samples}/{entry['file']}", part / entry["file"])
            try:
                for entry in frame.get("ground_truth", {}).values():
                    _fetch(session, f"{remote_samples}/{entry['file']}", part / entry["file"])
            except TransferError:  # ground truth not pushed: mIoU falls back to "against PyTorch"
                frame.pop("ground_truth", None)
            frame["inputs"] = {}  # inputs stay on the target: only the reference side is needed here
        manifest["inputs"] = []
        (part / "manifest.json").write_text(json.dumps(manifest, indent=2))


def run_remote_sequence(session: Any, *, backend: str, precision: str, remote_out: str,
                        python: str = "python3", repeat: int = 1, timeout: float = 3600.0,
                        on_line: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run deploy/run_sequence.py on the target; return its FBOCC_RESULT document."""
    from fbocc.target.transport import quote

    layout = _remote_current(session)
    argv = [python, f"{layout['deploy']}/run_sequence.py", "--backend", backend, "--precision", precision,
            "--set-dir", layout["samples"], "--out", remote_out, "--repeat", str(repeat)]
    if layout["onnx"]:
        argv += ["--onnx", layout["onnx"]]
    if backend == "tensorrt":
        if not layout["plugin"]:
            raise RemoteError(f"no plugin library (*.so) in {session.label}:{layout['current']}", where=session.label,
                              fix=f"build it (fbocc cross-build) and push it (fbocc push-to-target {session.label})")
        engine_cmd = [python, f"{layout['deploy']}/create_engine.py", "--onnx", layout["onnx"], "--plugin",
                      layout["plugin"], "--samples", layout["samples"], "--precision", precision,
                      "--engine-dir", f"{session.workdir()}/engines"]
        built = session.run(f"mkdir -p {quote(session.workdir() + '/engines')} && "
                            + " ".join(quote(a) for a in engine_cmd), check=False, timeout=timeout, on_line=on_line)
        engine = parse_tagged(built.stdout, ENGINE_TAG)
        if built.exit_code != 0 or not engine:
            tail = "\n".join(built.stderr.strip().splitlines()[-8:])
            raise RemoteError(f"building the {precision} engine on {session.label} failed (exit {built.exit_code})"
                              + (f":\n{tail}" if tail else ""), where=session.label,
                              fix="see the TensorRT messages above; `fbocc remote-bench` shows the full build log")
        argv += ["--plugin", layout["plugin"], "--engine", str(engine["engine"])]
    done = session.run(" ".join(quote(a) for a in argv), check=False, timeout=timeout, on_line=on_line)
    error = parse_tagged(done.stdout, ERROR_TAG)
    if error:
        raise RemoteError(f"run_sequence on {session.label}: {error.get('message')}", where=session.label,
                          fix=error.get("fix") or "see the remote output above")
    result = parse_tagged(done.stdout, RESULT_TAG)
    if done.exit_code != 0 or result is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise RemoteError(f"run_sequence on {session.label} failed with exit code {done.exit_code}"
                          + (f":\n{tail}" if tail else ""), where=session.label, fix="see the remote output above")
    return result


def validate_target(session: Any, *, backend: str, precisions: list[str], local_dir: Path,
                    samples_dir: Path | None = None, python: str = "python3", results_dir: Path | None = None,
                    progress: Callable[[str], None] | None = None, pull_limit: int = PULL_LIMIT) -> ValidationReport:
    """Run each precision remotely, pull outputs into `local_dir`, compare, and record the mIoU.

    `samples_dir` is the local export (reference outputs); without it the reference outputs are pulled
    from the pushed samples.
    """
    from fbocc.results.history import record_validation

    say = progress or (lambda text: None)
    report = ValidationReport(target=session.label, backend=backend, runs=[], comparisons=[])
    if samples_dir is None:
        samples_dir = local_dir / "reference"
        say(f"pulling reference outputs from {session.label}")
        _pull_samples_reference(session, f"{_remote_current(session)['samples']}", samples_dir)
    occ = occupancy_output(load_manifest(samples_dir))
    keep = {occ} if occ else set()
    for precision in precisions:
        started = time.monotonic()
        remote_out = f"{session.workdir()}/runs/validate-{backend}-{precision}"
        say(f"running the sequence on {session.label} ({backend}, {precision})")
        result = run_remote_sequence(session, backend=backend, precision=precision, remote_out=remote_out,
                                     python=python)
        local_out = local_dir / f"{backend}-{precision}"
        say(f"pulling {result.get('frames')} frames of outputs to {local_out} (tensors over "
            f"{pull_limit / 2**20:g} MiB were compared on the target and stay there)")
        _pull_run(session, remote_out, local_out, keep=keep, limit=pull_limit)
        report.runs.append(ValidationRun(precision, backend, result, local_out, time.monotonic() - started))
        comparison = compare_runs(samples_dir, local_out, precision)
        report.comparisons.append(comparison)
    by_precision = {r.precision: r.outputs_dir for r in report.runs}
    if "fp32" in by_precision and "fp16" in by_precision:
        report.comparisons.append(compare_runs(by_precision["fp32"], by_precision["fp16"], "fp16", against="fp32"))
    if results_dir is not None:
        for comparison in report.comparisons:
            if comparison.against != "pytorch":
                continue
            if comparison.miou is None:
                report.notes.append(f"{comparison.precision}: no mIoU (no occupancy output or no scored class); "
                                    "not recorded in the history")
                continue
            details = comparison.as_dict()
            details["miou_against"] = comparison.miou_against
            report.records.append(record_validation(results_dir, backend=backend, precision=comparison.precision,
                                                    miou=comparison.miou, target=session.label, details=details))
    return report
