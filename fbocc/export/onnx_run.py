"""Run an exported ONNX graph in ONNX Runtime on the host, over a samples directory, against its references.

The check a user makes before spending ten minutes building an engine on the car (`fbocc check-onnx
--run`). It runs the very same runner the target runs (deploy.run_sequence, onnxruntime backend:
frames in order, history carried by name, our ops as numpy custom ops), then compares with
fbocc.results.comparison, the comparison `fbocc validate` makes.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy import run_sequence as runner
from fbocc.errors import EnvironmentCheckError, ValidationError
from fbocc.export.samples import load_manifest
from fbocc.results.comparison import Comparison, compare_runs


@dataclass
class OnnxRunResult:
    """What the host-side ONNX Runtime run did and how it compares with the export's references."""

    onnx: Path
    samples: Path
    outputs: Path
    frames: int
    custom_nodes: int
    latency_ms: list[float]
    seconds: float
    comparison: Comparison | None
    versions: dict[str, str]

    @property
    def passed(self) -> bool:
        return self.comparison is None or self.comparison.passed

    def as_dict(self) -> dict[str, Any]:
        return {"onnx": str(self.onnx), "samples": str(self.samples), "outputs": str(self.outputs),
                "frames": self.frames, "custom_nodes": self.custom_nodes, "latency_ms": self.latency_ms,
                "seconds": round(self.seconds, 3), "versions": self.versions, "passed": self.passed,
                "comparison": None if self.comparison is None else self.comparison.as_dict()}


def run_onnx(onnx_path: Path, samples_dir: Path, out_dir: Path | None = None,
             progress: Callable[[str], None] | None = None, precision: str = "fp32") -> OnnxRunResult:
    """Run every frame of `samples_dir` through `onnx_path` in ONNX Runtime and compare with its references
    (with the tolerances of `precision`: the fp16 and int8 graphs are held to fp16's)."""
    samples_dir = Path(samples_dir)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ValidationError(f"ONNX file {onnx_path} does not exist", fix="pass the file `fbocc export` wrote")
    manifest = load_manifest(samples_dir)
    started = time.monotonic()
    try:
        backend = runner.OnnxRuntimeBackend(str(onnx_path), "fp32")
    except runner.RunError as exc:
        cls = EnvironmentCheckError if "needs onnx" in exc.message else ValidationError
        raise cls(exc.message, fix=exc.fix) from exc
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fbocc-onnx-run-")
        out_dir = Path(tmp.name) / "outputs"
    try:
        try:
            result = runner.run_sequence(backend, str(samples_dir), str(out_dir), log=progress)
        except runner.RunError as exc:
            raise ValidationError(exc.message, fix=exc.fix) from exc
        finally:
            backend.close()
        has_reference = any(frame.get("outputs") for frame in manifest["frames"])
        comparison = compare_runs(samples_dir, Path(out_dir), precision) if has_reference else None
    finally:
        if tmp is not None:
            tmp.cleanup()
    return OnnxRunResult(onnx=onnx_path, samples=samples_dir, outputs=Path(out_dir), frames=result["frames"],
                         custom_nodes=backend.custom_nodes, latency_ms=result["latency_ms"],
                         seconds=time.monotonic() - started, comparison=comparison,
                         versions=result["versions"])
