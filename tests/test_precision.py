"""`fbocc export --precision fp32,fp16,int8`: the typed fp16 graph and the INT8 Q/DQ graph beside the fp32 one.

One export of the `fbocc-tiny` preset (FB-OCC's structure at small sizes, two synthetic frames, random weights)
with all three precisions is shared by the tests below; it takes ~1.5 min of CPU on two cores (more when the
machine is shared), hence `slow`. The option checks at the top run in seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from fbocc.cli import run
from fbocc.errors import ConfigError
from fbocc.export.onnx_graph import check_onnx
from fbocc.export.precision import STAGES, graph_file, node_stage, parse_precisions, retype_fp16, tensor_types
from fbocc.export.quantize import INT8_STAGES
from fbocc.export.samples import load_manifest, sha256_file
from fbocc.ops.contract import CUSTOM_OPS

REPO = Path(__file__).resolve().parents[1]
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


# --- options: one clear error before any work -----------------------------------------------------


def test_precisions_parse_in_a_fixed_order_with_fp32_always_first() -> None:
    assert parse_precisions("int8,fp16") == ("fp32", "fp16", "int8")
    assert parse_precisions("fp32") == ("fp32",)
    assert graph_file("m.onnx", "fp16") == "m.fp16.onnx" and graph_file("m.onnx", "fp32") == "m.onnx"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        parse_precisions("fp32,fp8")


@pytest.mark.parametrize(("args", "message"), [
    (["--precision", "fp32,best"], "unknown precision 'best' in --precision"),
    (["--precision", "fp32,int8", "--calib-frames", "3"], "--calib-frames 3: the export has 2 sample frame(s)"),
])
def test_bad_precision_options_are_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   args: list[str], message: str) -> None:
    out = tmp_path / "x"
    code = run(["export", "--preset", "fbocc-tiny", "--random-weights", "--samples", "2", "--out", str(out), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int8_without_model_optimizer_says_how_to_install_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['modelopt'] = None; from fbocc.cli import run; "
            f"sys.exit(run(['export', '--preset', 'fbocc-tiny', '--random-weights', '--out', {str(tmp_path / 'x')!r}, "
            "'--precision', 'fp32,int8']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 3, result.stderr
    assert "--precision int8 needs NVIDIA Model Optimizer" in result.stderr
    assert "nvidia-modelopt==0.47.0" in result.stderr and "onnxruntime-gpu" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_check_onnx_names_fp16_attention_weights_beside_fp32_locations(tmp_path: Path) -> None:
    def vi(name: str, dtype: int, shape: list[int]) -> Any:
        return helper.make_tensor_value_info(name, dtype, shape)

    inputs = [vi("value", FLOAT16, [1, 4, 2, 8]), vi("shapes", TensorProto.INT32, [1, 2]),
              vi("starts", TensorProto.INT32, [1]), vi("loc", FLOAT, [1, 5, 2, 1, 4, 2]),
              vi("attn", FLOAT16, [1, 5, 2, 1, 4])]
    node = helper.make_node("MultiScaleDeformableAttnTRT", ["value", "shapes", "starts", "loc", "attn"], ["out"],
                            name="msda")
    graph = helper.make_graph([node], "g", inputs, [vi("out", FLOAT16, [1, 5, 16])])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)]), str(path))
    problems = check_onnx(path).problems
    assert any(p.startswith("node msda: MultiScaleDeformableAttnTRT input attention_weights (attn) is float16 but "
                            "sampling_locations is float32") for p in problems), problems


# --- the three graphs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("precision") / "tiny"
    code = run(["export", "--preset", "fbocc-tiny", "--random-weights", "--seed", "3", "--samples", "2",
                "--precision", "fp32,fp16,int8", "--out", str(out)])
    assert code == 0
    manifest = load_manifest(out / "samples", verify_hashes=True)
    graphs = {g["precision"]: g for g in manifest["graphs"]}
    return {"out": out, "samples": out / "samples", "manifest": manifest, "graphs": graphs,
            "paths": {p: out / "samples" / g["file"] for p, g in graphs.items()}}


def _types(path: Path) -> tuple[Any, dict[str, int]]:
    model = onnx.load(str(path))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.value_info) + list(model.graph.input)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return model, types


@pytest.mark.slow
def test_three_graphs_are_written_listed_and_accepted_by_check_onnx(exported: dict[str, Any]) -> None:
    assert [g["precision"] for g in exported["manifest"]["graphs"]] == ["fp32", "fp16", "int8"]
    assert sorted(p.name for p in exported["out"].glob("*.onnx")) == [
        "fbocc-tiny.fp16.onnx", "fbocc-tiny.int8.onnx", "fbocc-tiny.onnx"]
    for precision, path in exported["paths"].items():
        graph = exported["graphs"][precision]
        assert graph["sha256"] == sha256_file(path) and graph["bytes"] == path.stat().st_size
        assert graph["strongly_typed"] is True
        report = check_onnx(path, exported["samples"])
        assert report.problems == [], (precision, report.problems)
        assert report.precision == precision
        assert all(n >= 1 for n in report.custom_ops.values())
        assert run(["check-onnx", str(path), "--samples", str(exported["samples"])]) == 0
    assert exported["graphs"]["int8"]["made_by"]["version"] == "0.47.0"
    assert exported["graphs"]["int8"]["made_by"]["calibration"] == {"frames": ["000", "001"], "history": "carried"}


@pytest.mark.slow
def test_fp16_graph_is_fp16_where_the_sensitivity_report_says_and_fp32_at_the_boundary(
        exported: dict[str, Any]) -> None:
    report = json.loads((exported["out"] / "precision" / "fp16_sensitivity.json").read_text())
    assert set(report["stages"]) == set(STAGES)
    for stage, row in report["stages"].items():
        assert all(math.isfinite(row[k]) for k in ("rel_l2", "max_abs", "cosine")), stage
        assert row["precision"] == ("fp32" if stage in report["fp32_islands"] else "fp16")
    made = exported["graphs"]["fp16"]["made_by"]
    assert made["fp16_stages"] == report["fp16_stages"] and made["fp32_islands"] == report["fp32_islands"]
    model, types = _types(exported["paths"]["fp16"])
    conv_types: dict[str, set[int]] = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            conv_types.setdefault(node_stage(node) or "", set()).add(types[node.input[1]])
    for stage, seen in conv_types.items():
        assert seen == ({FLOAT} if stage in report["fp32_islands"] else {FLOAT16}), stage
    fp32 = onnx.load(str(exported["paths"]["fp32"]), load_external_data=False)
    graph_io = [(vi.name, vi.type.tensor_type.elem_type) for vi in list(model.graph.input) + list(model.graph.output)]
    fp32_io = [(vi.name, vi.type.tensor_type.elem_type) for vi in list(fp32.graph.input) + list(fp32.graph.output)]
    assert graph_io == fp32_io and FLOAT16 not in dict(graph_io).values()
    plugin = {n.op_type: [types.get(i) for i in n.input] for n in model.graph.node if n.op_type in CUSTOM_OPS}
    assert plugin["MultiScaleDeformableAttnTRT"][0] == FLOAT16  # features fp16, coordinates fp32
    assert plugin["MultiScaleDeformableAttnTRT"][3:] == [FLOAT, FLOAT]
    assert plugin["GridSampler3DTRT"] == [FLOAT16, FLOAT] and plugin["BEVPoolV2TRT"][:2] == [FLOAT16, FLOAT16]
    assert exported["paths"]["fp16"].stat().st_size < 0.6 * exported["paths"]["fp32"].stat().st_size


@pytest.mark.slow
def test_fp32_islands_keep_their_nodes_and_plugins_fp32(exported: dict[str, Any]) -> None:
    fp32 = onnx.load(str(exported["paths"]["fp32"]))
    islands = {"bev_pool", "occupancy_head"}
    typed, counts = retype_fp16(fp32, [s for s in STAGES if s not in islands])
    assert counts["casts"] > 0
    types = tensor_types(typed)
    for node in typed.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "BEVPoolV2TRT"):
            want = FLOAT if node_stage(node) in islands else FLOAT16
            assert types[node.input[0]] == want, node.name
    path = exported["out"].parent / "islands.onnx"
    onnx.save(typed, str(path))
    assert check_onnx(path, exported["samples"]).problems == []


def _module_name(node: Any) -> str:
    """`/model/img_backbone/layer2/layer2.0/downsample/downsample.0/Conv` -> `img_backbone.layer2.0.downsample.0`."""
    parts: list[str] = []
    for part in node.name.split("/")[2:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


@pytest.mark.slow
def test_int8_graph_has_qdq_on_the_named_stages_convs_and_none_on_plugin_inputs(exported: dict[str, Any]) -> None:
    model = onnx.load(str(exported["paths"]["int8"]))
    producer = {o: n for n in model.graph.node for o in n.output}
    excluded = set(exported["graphs"]["int8"]["made_by"]["excluded_layers"])
    quantized, plain = [], []
    for node in model.graph.node:
        fed = [producer[i].op_type == "DequantizeLinear" for i in node.input[:2] if i in producer]
        if node.op_type in CUSTOM_OPS:
            assert not any(producer[i].op_type == "DequantizeLinear" for i in node.input if i in producer), node.name
        if node.op_type in ("Conv", "Gemm", "MatMul") and fed and all(fed):
            quantized.append(node)
        elif node.op_type in ("Conv", "Gemm", "MatMul"):
            plain.append(node)
    assert quantized and {node_stage(n) for n in quantized} <= set(INT8_STAGES)
    assert {node_stage(n) for n in quantized} >= {"img_backbone", "img_neck", "depth_net", "img_bev_encoder_backbone"}
    # every conv/matmul of the named stages is quantized unless the sensitivity report left its layer fp32
    assert {_module_name(n) for n in plain if node_stage(n) in INT8_STAGES} == excluded
    report = json.loads((exported["out"] / "precision" / "int8_sensitivity.json").read_text())
    assert report["quantized_layers"] == len(quantized) and set(report["excluded"]) == excluded
    assert all(math.isfinite(row["rel_l2"]) for row in report["layers"].values())


@pytest.mark.slow
def test_host_checks_compare_each_graph_with_fp32_pytorch(exported: dict[str, Any]) -> None:
    # bounds a broken cast or a miscalibrated quantizer fails by orders of magnitude
    for precision, cosine_min, labels_min in (("fp16", 0.999, 0.99), ("int8", 0.99, 0.95)):
        check = exported["graphs"][precision]["host_check"]
        assert check["frames"] == 2 and "weak proxy" in check["note"]
        tensors = {t["name"]: t for t in check["tensors"]}
        assert set(tensors) == {"pred_occupancy", "output_history_bev", "output_history_seq_ids",
                                "output_history_sweep_time"}
        for t in tensors.values():
            assert all(math.isfinite(t[k]) for k in ("max_abs", "mean_abs", "rel_error", "cosine"))
        assert tensors["pred_occupancy"]["cosine"] >= cosine_min, (precision, tensors["pred_occupancy"])
        assert check["label_agreement"] >= labels_min, (precision, check["label_agreement"])
        assert tensors["output_history_seq_ids"]["exact"] and tensors["output_history_sweep_time"]["exact"]
        assert check["miou"] is not None and check["miou_against"] == "pytorch"
    text = (exported["out"] / "precision" / "host_checks.md").read_text()
    assert "fp16 graph vs fp32 PyTorch (host check" in text and "int8 graph vs fp32 PyTorch" in text
