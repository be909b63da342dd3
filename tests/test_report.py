"""Results history and `fbocc report`: comparisons, regression flag, the seed's markdown table, the PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fbocc.errors import ValidationError
from fbocc.results.history import (
    BenchResult,
    headline_ms,
    load_history,
    load_validations,
    new_run_id,
    record_validation,
    save_result,
)
from fbocc.results.report import compare, to_markdown, write_markdown, write_png
from fbocc.target.trtexec import parse_summary

DATA = Path(__file__).parent / "data" / "trtexec"


def run(target: str, precision: str, median: float, *, created: str, backend: str = "tensorrt",
        engine: dict[str, str] | None = None) -> BenchResult:
    # a real 8.6 summary, with the GPU compute median set to the value under test
    summary = parse_summary((DATA / "trt8.6.3_fp16_summary.log").read_text()).as_dict()
    metric = "GPU Compute Time" if backend == "tensorrt" else "Latency"
    summary["metrics_ms"][metric]["median"] = median
    return BenchResult(run_id=new_run_id(target, precision, backend), target=target, backend=backend,
                       precision=precision, summary=summary, created=created, engine=engine or {},
                       per_query_ms={"compute": [median * f for f in (0.9, 1.0, 1.0, 1.1, 1.3)]})


def engine(name: str) -> dict[str, str]:
    return {"key": name * 16, "path": f"/w/engines/fp16-{name * 16}.engine", "sha256": name * 64}


def test_history_roundtrip_is_atomic_and_ordered(tmp_path: Path) -> None:
    a = run("orin", "fp32", 200.0, created="2026-01-01T00:00:00.000000Z")
    b = run("orin", "fp32", 190.0, created="2026-01-02T00:00:00.000000Z")
    for r in (b, a):
        save_result(tmp_path, r)
    assert not list(tmp_path.glob(".*part*"))
    history = load_history(tmp_path)
    assert [r.run_id for r in history] == [a.run_id, b.run_id]
    assert history[1].headline_ms() == 190.0
    assert json.loads(next(tmp_path.glob("bench-*.json")).read_text())["schema"] == "fbocc-bench-result/1"


def test_damaged_result_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bench-broken.json").write_text("{not json")
    with pytest.raises(ValidationError, match=r"bench-broken\.json"):
        load_history(tmp_path)


def test_regression_flag_uses_the_threshold_on_median_gpu_compute() -> None:
    history = [run("orin", "fp16", 100.0, created="2026-01-01T00:00:00.000000Z"),
               run("orin", "fp16", 104.0, created="2026-01-02T00:00:00.000000Z"),
               run("orin", "fp32", 150.0, created="2026-01-01T00:00:00.000000Z"),
               run("orin", "fp32", 165.0, created="2026-01-02T00:00:00.000000Z")]
    report = compare(history, threshold=0.05)
    by = {r.current.precision: r for r in report.rows}
    assert by["fp16"].change == pytest.approx((104.0 - 100.0) / 100.0) and not by["fp16"].regression
    assert by["fp32"].change == pytest.approx((165.0 - 150.0) / 150.0) and by["fp32"].regression
    assert report.speedups["orin"] == pytest.approx(165.0 / 104.0)
    assert [r.current.run_id for r in report.regressions] == [history[3].run_id]


def test_markdown_has_the_seed_table_and_miou_from_validation(tmp_path: Path) -> None:
    history = [run("orin-a", "fp32", 197.0, created="2026-01-01T00:00:00.000000Z", engine=engine("b")),
               run("orin-a", "fp16", 138.0, created="2026-01-01T00:00:01.000000Z", engine=engine("a")),
               run("orin-a", "fp32", 12.0, created="2026-01-01T00:00:02.000000Z", backend="onnxruntime")]
    record_validation(tmp_path, backend="tensorrt", precision="fp16", miou=38.86, target="orin-a",
                      details={"miou_against": "ground-truth", "miou_reference": 39.1}, engine=engine("a"))
    record_validation(tmp_path, backend="onnxruntime", precision="fp32", miou=99.5, target="orin-a",
                      details={"miou_against": "pytorch"})
    vals = load_validations(tmp_path)
    md = to_markdown(compare(history, validations=vals))
    lines = md.splitlines()
    assert lines[0] == "|  | Precision | mIoU | Latency (ms) on orin-a |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| FB-OCC-PyTorch | FP32 | 39.10 | - |"  # the seed's reference row
    assert "| FB-OCC-TensorRT | FP32 | - | 197.00 |" in lines
    assert "| FB-OCC-TensorRT | FP16 | 38.86 | 138.00 |" in lines
    assert "| FB-OCC-ONNXRuntime | FP32 | 99.50 (vs PyTorch) | 12.00 |" in lines
    out = write_markdown(compare(history, validations=vals), tmp_path / "report.md")
    assert out.read_text() == md
    with pytest.raises(ValidationError, match=r"0\.\.100"):
        record_validation(tmp_path, backend="tensorrt", precision="fp16", miou=0.3886 * 1000)


def test_an_miou_stands_beside_a_latency_only_for_the_same_engine(tmp_path: Path) -> None:
    history = [run("orin-a", "fp16", 138.0, created="2026-01-01T00:00:01.000000Z", engine=engine("a"))]
    record_validation(tmp_path, backend="tensorrt", precision="fp16", miou=38.86, target="orin-a",
                      details={"miou_against": "ground-truth"}, engine=engine("c"))
    (row,) = compare(history, validations=load_validations(tmp_path)).rows
    assert row.miou is None and row.miou_note == f"validated engine {'c' * 12} is not the timed engine {'a' * 12}"
    assert f"| FB-OCC-TensorRT | FP16 | - (validated engine {'c' * 12} is not the timed engine {'a' * 12}) | " \
        "138.00 |" in to_markdown(compare(history, validations=load_validations(tmp_path)))
    record_validation(tmp_path, backend="tensorrt", precision="fp16", miou=12.5, target="orin-a")  # no engine
    (row,) = compare(history, validations=load_validations(tmp_path)).rows
    assert row.miou is None and row.miou_note == "validation names no engine"


def test_png_is_a_real_png(tmp_path: Path) -> None:
    history = [run("orin", "fp16", 100.0, created="2026-01-01T00:00:00.000000Z"),
               run("orin", "fp16", 120.0, created="2026-01-02T00:00:00.000000Z")]
    path = write_png(compare(history), history, tmp_path / "out" / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_headline_is_latency_for_onnxruntime() -> None:
    r = run("x", "fp32", 42.0, created="2026-01-01T00:00:00.000000Z", backend="onnxruntime")
    assert headline_ms(r.as_dict()) == 42.0
