"""`fbocc check-onnx` on small hand-built graphs: what a user sees when a graph or a sample is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fbocc.cli import run
from fbocc.export.onnx_graph import check_onnx
from fbocc.export.samples import save_manifest, write_tensor


def _save(tmp_path: Path, nodes: list, inputs: list, outputs: list, name: str = "g.onnx") -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _grid_sampler_graph(tmp_path: Path, **attrs: int) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 3, 3])
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 3, 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 3, 3])
    node = helper.make_node("GridSampler3DTRT", ["x", "grid"], ["y"], name="warp", **attrs)
    return _save(tmp_path, [node], [x, grid], [y])


def _samples(tmp_path: Path, x_shape: tuple[int, ...]) -> Path:
    d = tmp_path / "samples"
    d.mkdir()
    frame = {
        "id": "000",
        "inputs": {"x": write_tensor(d, "frame_000/x.dat", np.zeros(x_shape, np.float32)),
                   "grid": write_tensor(d, "frame_000/grid.dat", np.zeros((1, 3, 2, 3, 3), np.float32))},
        "outputs": {"y": write_tensor(d, "frame_000/y.dat", np.zeros((1, 4, 2, 3, 3), np.float32))},
    }
    save_manifest(d, {"inputs": [{"name": "x", "dtype": "float32"}, {"name": "grid", "dtype": "float32"}],
                      "outputs": [{"name": "y", "dtype": "float32"}], "profile": {}, "history": [],
                      "frames": [frame], "source": "synthetic"})
    return d


def test_a_graph_that_fits_the_contract_passes(tmp_path: Path) -> None:
    path = _grid_sampler_graph(tmp_path, interpolation_mode=0, padding_mode=0, align_corners=1)
    report = check_onnx(path, _samples(tmp_path, (1, 4, 2, 3, 3)))
    assert report.ok, report.problems
    assert report.custom_ops["GridSampler3DTRT"] == 1
    assert [v.name for v in report.inputs] == ["x", "grid"]


def test_a_graph_without_the_custom_ops_is_rejected(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    report = check_onnx(path)
    assert not report.ok
    assert any("contains none of the plugin ops" in p for p in report.problems)
    assert run(["check-onnx", str(path)]) == 7  # ValidationError's exit code


def test_missing_required_attribute_and_bad_values_are_named(tmp_path: Path) -> None:
    depth = helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 6, 8, 4, 4])
    feat = helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 6, 4, 4, 16])
    idx = [helper.make_tensor_value_info(n, TensorProto.INT32, ["n"]) for n in
           ("rd", "rf", "rb", "starts", "lengths")]
    out = helper.make_tensor_value_info("bev", TensorProto.FLOAT, [1, 8, 10, 10, 16])
    node = helper.make_node("BEVPoolV2TRT", ["depth", "feat", "rd", "rf", "rb", "starts", "lengths"], ["bev"],
                            name="pool", out_width=10)
    path = _save(tmp_path, [node], [depth, feat, *idx], [out])
    problems = check_onnx(path).problems
    assert "node pool: BEVPoolV2TRT missing attribute out_height" in problems

    bad = _grid_sampler_graph(tmp_path, interpolation_mode=3, padding_mode=0, align_corners=1, mystery=1)
    problems = check_onnx(bad).problems
    assert any("interpolation_mode=3" in p for p in problems)
    assert "node warp: GridSampler3DTRT has unknown attribute mystery" in problems


def test_wrong_dtype_into_a_plugin_input_is_named(tmp_path: Path) -> None:
    depth = helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 6, 8, 4, 4])
    feat = helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 6, 4, 4, 16])
    idx = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n"]) for n in
           ("rd", "rf", "rb", "starts", "lengths")]
    out = helper.make_tensor_value_info("bev", TensorProto.FLOAT, [1, 8, 10, 10, 16])
    node = helper.make_node("BEVPoolV2TRT", ["depth", "feat", "rd", "rf", "rb", "starts", "lengths"], ["bev"],
                            name="pool", out_height=10, out_width=10)
    problems = check_onnx(_save(tmp_path, [node], [depth, feat, *idx], [out])).problems
    assert any(p.startswith("node pool: BEVPoolV2TRT input ranks_depth (rd) is float32") for p in problems)


def test_a_sample_whose_size_disagrees_with_its_manifest_is_named(tmp_path: Path) -> None:
    path = _grid_sampler_graph(tmp_path, interpolation_mode=0, padding_mode=0, align_corners=1)
    samples = _samples(tmp_path, (1, 4, 2, 3, 3))
    dat = samples / "frame_000" / "x.dat"
    dat.write_bytes(dat.read_bytes()[:-4])  # one float short
    report = check_onnx(path, samples)
    assert not report.ok
    assert any("x.dat" in p and "bytes" in p for p in report.problems), report.problems
    assert run(["check-onnx", str(path), "--samples", str(samples)]) == 7


def test_a_sample_shape_that_does_not_fit_the_graph_is_named(tmp_path: Path) -> None:
    path = _grid_sampler_graph(tmp_path, interpolation_mode=0, padding_mode=0, align_corners=1)
    report = check_onnx(path, _samples(tmp_path, (1, 5, 2, 3, 3)))
    assert any(p.startswith("frame 000 input x: shape [1, 5, 2, 3, 3]") for p in report.problems)


def test_a_missing_or_broken_file_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check-onnx", str(tmp_path / "absent.onnx")]) == 7
    assert "absent.onnx does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all")
    assert run(["check-onnx", str(broken)]) == 7
