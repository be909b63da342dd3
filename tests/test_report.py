"""Results history and `fbocc report`: comparisons, regression flag, the seed's markdown table, the PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fbocc.errors import ValidationError
from fbocc.results.figure import write_png
from fbocc.results.history import (
    BenchResult,
    headline_ms,
    load_history,
    load_validations,
    new_run_id,
    record_validation,
    save_result,
)
from fbocc.results.report import compare, to_markdown, write_markdown
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


# --- precisions as graphs: the INT8 row, the timing of each run, and the picture's content ------------------

TIMING = {"data_transfers": False, "cuda_graph": True, "spin_wait": True, "separate_profile_run": True}
LAYERS = [  # exported node names as TensorRT reports them (fused chains joined by " + ")
    {"name": "/img_backbone/layer1/layer1.0/conv1/Conv + /img_backbone/layer1/layer1.0/relu/Relu", "average_ms": 30.0},
    {"name": "/img_neck/fpn_convs.0/conv/Conv", "average_ms": 8.0},
    {"name": "/depth_net/depth_conv/Conv", "average_ms": 12.0},
    {"name": "/forward_projection/BEVPoolV2TRT", "average_ms": 5.0},
    {"name": "/backward_projection/transformer/MultiScaleDeformableAttnTRT", "average_ms": 9.0},
    {"name": "/GridSampler3DTRT", "average_ms": 4.0},
    {"name": "/img_bev_encoder_backbone/layers.0/conv/Conv", "average_ms": 20.0},
    {"name": "/occupancy_head/occ_convs.0/Conv", "average_ms": 6.0},
    {"name": "Reformatting CopyNode for Input Tensor 0 to /img_backbone/conv1/Conv", "average_ms": 1.0},
]


def typed_run(target: str, precision: str, median: float, created: str, scale: float = 1.0) -> BenchResult:
    r = run(target, precision, median, created=created)
    r.summary["metrics_ms"]["GPU Compute Time"]["percentiles"]["99"] = median * 1.25
    r.options = {"iterations": 0, "duration_s": 10.0, "warmup_ms": 500, "rebuild": False, "timing": dict(TIMING)}
    r.engine = {"graph": precision, "typing": "strong", "cached": False, "sha256": f"{target}-{precision}-engine"}
    r.layers = [{**layer, "average_ms": layer["average_ms"] * scale} for layer in LAYERS]
    return r


def three_precisions() -> list[BenchResult]:
    return [typed_run("orin", "fp32", 200.0, "2026-03-01T08:00:00.000000Z"),
            typed_run("orin", "fp16", 140.0, "2026-03-01T08:05:00.000000Z", 0.7),
            typed_run("orin", "int8", 95.0, "2026-03-01T08:10:00.000000Z", 0.5),
            typed_run("orin", "fp16", 150.0, "2026-03-04T09:00:00.000000Z", 0.75),
            typed_run("thor", "fp16", 60.0, "2026-03-04T09:30:00.000000Z", 0.3)]


def test_markdown_has_the_int8_row_and_states_each_runs_timing(tmp_path: Path) -> None:
    history = three_precisions()
    record_validation(tmp_path, backend="tensorrt", precision="int8", miou=37.5, target="orin",
                      engine={"sha256": "orin-int8-engine"})
    report = compare(history, validations=load_validations(tmp_path))
    lines = to_markdown(report).splitlines()
    table = lines[lines.index("|  | Precision | mIoU | Latency (ms) on orin |"):]
    assert table[2:5] == ["| FB-OCC-TensorRT | FP32 | - | 200.00 |", "| FB-OCC-TensorRT | FP16 | - | 150.00 |",
                          "| FB-OCC-TensorRT | INT8 | 37.50 | 95.00 |"]
    assert "int8 speed-up over fp32: orin: 2.11x" in lines
    details = [ln for ln in lines if ln.startswith(f"| {history[2].run_id} |")]
    assert details and details[0].endswith("| int8 graph, strongly typed | transfers off, CUDA graph on, spin wait on, "
                                           "separate profile run on |")
    assert report.as_dict()["int8_speedup_over_fp32"] == {"orin": pytest.approx(200.0 / 95.0)}
    int8_row = next(row for row in report.as_dict()["rows"] if row["precision"] == "int8")
    assert (int8_row["graph"], int8_row["typing"], int8_row["timing"]) == ("int8", "strong", TIMING)
    assert "| orin | int8 | 19.00 | 6.00 | 7.00 (7.00) | 12.00 (2.00) | 3.00 | 0.50 |" in lines
    old = run("orin", "fp32", 1.0, created="2025-01-01T00:00:00.000000Z")
    assert "not recorded" in to_markdown(compare([old]))


def test_layers_map_to_stages_by_our_node_names() -> None:
    from fbocc.results.layers import plugin_op, stage_of, stage_totals

    assert [stage_of(layer["name"]) for layer in LAYERS] == [
        "backbone", "backbone", "depth", "view transform", "view transform", "BEV encoder", "BEV encoder", "head",
        "other"]
    assert stage_of("/img_view_transformer/depth_net/Relu") == "depth"
    # node names as `fbocc export` writes them (fbocc-tiny export, one per stage), TensorRT fusing two of them
    exported = {"/model/img_backbone/conv1/Conv": "backbone", "/model/img_neck/lateral_convs.0/conv/Conv": "backbone",
                "/model/depth_net/reduce_conv/reduce_conv.0/Conv": "depth",
                "/model/bev_pool/BEVPoolV2TRT": "view transform",
                "/model/backward_projection/attentions.0/MultiScaleDeformableAttnTRT": "view transform",
                "/model/history_sampler/GridSampler3DTRT": "BEV encoder",
                "/model/history_keyframe_time_conv/history_keyframe_time_conv.0/Conv": "BEV encoder",
                "/model/img_bev_encoder_backbone/input_proj/input_proj.0/Conv": "BEV encoder",
                "/model/img_bev_encoder_neck/lateral_convs.0/lateral_convs.0.0/conv/Conv": "BEV encoder",
                "/model/occupancy_head/occ_convs.0/occ_convs.0.0/Conv + /model/occupancy_head/Relu": "head",
                "/model/Reshape_1": "other"}
    assert {name: stage_of(name) for name in exported} == exported
    assert [plugin_op(layer["name"]) for layer in LAYERS[3:6]] == [
        "BEVPoolV2TRT", "MultiScaleDeformableAttnTRT", "GridSampler3DTRT"]
    assert stage_totals(LAYERS) == {"backbone": 38.0, "depth": 12.0, "view transform": 14.0, "BEV encoder": 24.0,
                                    "head": 6.0, "other": 1.0}


def test_figure_answers_latency_accuracy_history_and_where_the_time_goes(tmp_path: Path) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from fbocc.results.figure import build_figure

    history = three_precisions()
    record_validation(tmp_path, backend="tensorrt", precision="fp16", miou=38.1, target="orin",
                      engine={"sha256": "orin-fp16-engine"})
    record_validation(tmp_path, backend="tensorrt", precision="int8", miou=97.0, target="orin",
                      details={"miou_against": "pytorch"}, engine={"sha256": "orin-int8-engine"})
    fig = build_figure(compare(history, validations=load_validations(tmp_path)), history)
    latency, accuracy, dated, layers, stages = fig.axes

    # precisions side by side per target: one bar container per precision, whiskers up to p99
    assert [t.get_text() for t in latency.get_xticklabels()] == ["orin", "thor"]
    from matplotlib.container import BarContainer

    bars = {c.get_label(): [b.get_height() for b in c.patches] for c in latency.containers
            if isinstance(c, BarContainer)}
    assert bars == {"fp32": [200.0], "fp16": [150.0, 60.0], "int8": [95.0]}
    tops = sorted(float(y) for line in latency.lines for y in line.get_ydata())
    assert 150.0 * 1.25 in tops and 95.0 * 1.25 in tops
    assert "p99" in latency.get_title()

    heights = {c.get_label(): (c.patches[0].get_height(), c.patches[0].get_hatch()) for c in accuracy.containers}
    assert heights == {"fp16": (38.1, None), "int8 vs PyTorch": (97.0, "//")}

    # history on dated axes, not run indices
    assert dated.get_xlabel() == "run date (UTC)"
    assert isinstance(dated.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    orin_fp16 = next(line for line in dated.lines if line.get_label() == "orin fp16")
    assert [mdates.num2date(x).strftime("%Y-%m-%d %H:%M") for x in mdates.date2num(orin_fp16.get_xdata())] == [
        "2026-03-01 08:05", "2026-03-04 09:00"]

    # where the time goes: the latest profiled run, slowest first, stages coloured, plugins marked
    assert "thor fp16" in layers.get_title()
    names = [t.get_text() for t in layers.get_yticklabels()][::-1]
    assert names[0].startswith("/img_backbone/layer1") and names[-1].startswith("Reformatting")
    assert "/forward_projection/BEVPoolV2TRT [plugin BEVPoolV2TRT]" in names
    hatched = [p for p in layers.patches if p.get_hatch() == "xx"]
    assert len(hatched) == 3
    legend = [t.get_text() for t in layers.get_legend().get_texts()]
    assert legend == ["backbone", "depth", "view transform", "BEV encoder", "head", "other", "our plugin op"]

    # time per stage of each precision on that target (thor has fp16 only)
    assert [t.get_text() for t in stages.get_yticklabels()] == ["fp16"]
    widths = {c.get_label(): c.patches[0].get_width() for c in stages.containers}
    assert widths["backbone"] == pytest.approx(38.0 * 0.3) and widths["head"] == pytest.approx(6.0 * 0.3)
    plt.close(fig)


def test_every_module_stage_of_the_export_has_a_report_stage() -> None:
    """The export names nodes by the model's modules (fbocc.export.precision.STAGES); the report groups those
    modules into the five stages a user reads. A module added there and forgotten here would show as "other"."""
    from fbocc.export.precision import STAGES as MODULES
    from fbocc.results.layers import stage_of

    assert {m: stage_of(f"/model/{m}/Conv") for m in MODULES} == {
        "img_backbone": "backbone", "img_neck": "backbone", "depth_net": "depth", "bev_pool": "view transform",
        "backward_projection": "view transform", "history_sampler": "BEV encoder",
        "history_keyframe_time_conv": "BEV encoder", "history_keyframe_cat_conv": "BEV encoder",
        "img_bev_encoder_backbone": "BEV encoder", "img_bev_encoder_neck": "BEV encoder", "occupancy_head": "head"}
