"""Benchmark and validation results: one JSON document per run in `[project] results_dir` (the history).

The schema is documented in docs/results-schema.md. Two kinds of documents live side by side:

- `bench-<run_id>.json`, schema `fbocc-bench-result/1`: one `fbocc remote-bench` run of one precision on
  one target (TensorRT via trtexec, or ONNX Runtime via deploy/run_sequence.py).
- `validation-<id>.json`, schema `fbocc-validation/1`: accuracy of one backend/precision, written by
  `fbocc validate` through `record_validation(...)`; `fbocc report` puts its mIoU in the table.

Documents are written atomically (temporary name, then rename): a crash never leaves half a result.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fbocc import __version__
from fbocc.errors import ValidationError

BENCH_SCHEMA = "fbocc-bench-result/1"
VALIDATION_SCHEMA = "fbocc-validation/1"
BACKENDS = ("tensorrt", "onnxruntime")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id(target: str, precision: str, backend: str = "tensorrt") -> str:
    """Sortable, unique, file-name safe: `20261123T231000Z-orin-a-fp16-trt-1a2b3c`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", target)
    return f"{stamp}-{safe}-{precision}-{'trt' if backend == 'tensorrt' else 'ort'}-{secrets.token_hex(3)}"


@dataclass
class BenchResult:
    """One benchmark run (see docs/results-schema.md for every field)."""

    run_id: str
    target: str
    backend: str
    precision: str
    summary: dict[str, Any]  # TrtexecSummary.as_dict() shape: metrics_ms, throughput_qps, ...
    created: str = field(default_factory=_now)
    address: str | None = None
    builder: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    per_query_ms: dict[str, list[float]] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    tegrastats: dict[str, Any] = field(default_factory=dict)
    fbocc_version: str = __version__

    def headline_ms(self) -> float | None:
        """The number runs are compared on: median GPU compute time (TensorRT) or median latency (ORT)."""
        return headline_ms(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": BENCH_SCHEMA, "run_id": self.run_id, "created": self.created,
            "fbocc_version": self.fbocc_version, "target": {"name": self.target, "address": self.address},
            "backend": self.backend, "precision": self.precision, "builder": self.builder,
            "engine": self.engine, "samples": self.samples, "options": self.options, "command": self.command,
            "summary": self.summary, "per_query_ms": self.per_query_ms, "layers": self.layers,
            "environment": self.environment, "tegrastats": self.tegrastats,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BenchResult:
        check_bench_document(doc, "<document>")
        return cls(run_id=doc["run_id"], target=doc["target"]["name"], backend=doc["backend"],
                   precision=doc["precision"], summary=doc["summary"], created=doc["created"],
                   address=doc["target"].get("address"), builder=doc.get("builder"), engine=doc.get("engine", {}),
                   samples=doc.get("samples", {}), options=doc.get("options", {}), command=doc.get("command", []),
                   per_query_ms=doc.get("per_query_ms", {}), layers=doc.get("layers", []),
                   environment=doc.get("environment", {}), tegrastats=doc.get("tegrastats", {}),
                   fbocc_version=doc.get("fbocc_version", "?"))


def headline_ms(doc: dict[str, Any]) -> float | None:
    """Median GPU compute time for TensorRT runs, median latency for ONNX Runtime runs (ms)."""
    metrics = doc.get("summary", {}).get("metrics_ms", {})
    key = "GPU Compute Time" if doc.get("backend") == "tensorrt" else "Latency"
    value = metrics.get(key, {}).get("median")
    return float(value) if value is not None else None


def check_bench_document(doc: Any, where: str) -> None:
    """Raise ValidationError naming the file and field when `doc` is not a bench result."""
    if not isinstance(doc, dict) or doc.get("schema") != BENCH_SCHEMA:
        raise ValidationError(f"{where} is not a {BENCH_SCHEMA} document",
                              fix="remove it from the results directory or re-run fbocc remote-bench")
    for key in ("run_id", "created", "target", "backend", "precision", "summary"):
        if key not in doc:
            raise ValidationError(f"{where}: field {key!r} is missing", fix="the file is damaged; remove it")
    if doc["backend"] not in BACKENDS:
        raise ValidationError(f"{where}: backend {doc['backend']!r} is not one of {', '.join(BACKENDS)}")


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w") as fh:
        json.dump(doc, fh, indent=2, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def save_result(results_dir: Path, result: BenchResult) -> Path:
    """Write `bench-<run_id>.json` atomically and return its path."""
    return _write_json(Path(results_dir) / f"bench-{result.run_id}.json", result.as_dict())


def load_history(results_dir: Path) -> list[BenchResult]:
    """Every bench result in the directory, oldest first; a damaged file is an error naming it."""
    results = []
    root = Path(results_dir)
    if not root.is_dir():
        return []
    for path in sorted(root.glob("bench-*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValidationError(f"{path} is not readable JSON: {exc}",
                                  fix="remove or repair the file; the other runs are kept") from exc
        check_bench_document(doc, str(path))
        results.append(BenchResult.from_dict(doc))
    results.sort(key=lambda r: (r.created, r.run_id))
    return results


@dataclass
class ValidationRecord:
    """Accuracy of one backend/precision (mIoU in percent, as FB-OCC reports it)."""

    backend: str
    precision: str
    miou: float
    created: str
    target: str | None = None
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)


def same_engine(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two result documents' `engine` fields name the same engine file: equal sha256 when both
    have one, else equal cache key and path."""
    if not a or not b:
        return False
    if a.get("sha256") and b.get("sha256"):
        return bool(a["sha256"] == b["sha256"])
    return bool(a.get("key")) and a.get("key") == b.get("key") and a.get("path") == b.get("path")


def record_validation(results_dir: Path, *, backend: str, precision: str, miou: float,
                      target: str | None = None, run_id: str | None = None,
                      details: dict[str, Any] | None = None, engine: dict[str, Any] | None = None) -> Path:
    """The slot for `fbocc validate`: store an mIoU (percent) for `fbocc report`'s mIoU column.

    `engine` names the engine the outputs came from (TensorRT: fbocc.target.contract.EngineRecord);
    `run_id` may name a bench run; `details` holds anything else (per-class IoU, frames, max abs error).
    Returns the written `validation-*.json` path.
    """
    if backend not in BACKENDS:
        raise ValidationError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if not 0.0 <= float(miou) <= 100.0:
        raise ValidationError(f"mIoU {miou} is outside 0..100", fix="pass mIoU in percent (FB-OCC reports 38.90)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"schema": VALIDATION_SCHEMA, "created": _now(), "backend": backend, "precision": precision,
           "miou": float(miou), "target": target, "run_id": run_id, "engine": engine or {},
           "details": details or {}}
    return _write_json(Path(results_dir) / f"validation-{stamp}-{backend}-{precision}-{secrets.token_hex(3)}.json",
                       doc)


def load_validations(results_dir: Path) -> list[ValidationRecord]:
    """Every validation record, oldest first (files of other schemas are skipped: not ours to judge)."""
    out = []
    root = Path(results_dir)
    if not root.is_dir():
        return []
    for path in sorted(root.glob("validation-*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValidationError(f"{path} is not readable JSON: {exc}", fix="remove or repair the file") from exc
        if doc.get("schema") != VALIDATION_SCHEMA:
            continue
        out.append(ValidationRecord(doc["backend"], doc["precision"], float(doc["miou"]), doc["created"],
                                    doc.get("target"), doc.get("run_id"), doc.get("details", {}),
                                    doc.get("engine") or {}))
    out.sort(key=lambda v: v.created)
    return out
