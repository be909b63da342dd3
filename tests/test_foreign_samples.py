"""`fbocc samples --from-fbbev`: FB-BEV's own .dat folders (pth2onnx.py's flat --data_dir, preprocess_samples.py's
numbered --save_dir) become an fbocc samples directory; the input their trtexec scripts forget is carried, a
missing one is named. The folders here are written the way those scripts write them (numpy .tofile), beside
a small graph with upstream's 20 inputs in pth2onnx.py's order and dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fbocc.errors import ValidationError
from fbocc.export.foreign import samples_from_fbbev_folder
from fbocc.export.samples import load_manifest, read_tensor

# name, dtype, graph shape (str: dynamic, as pth2onnx.py's dynamic_axes), one sample's concrete shape
T = 2  # history frames
INPUTS = [
    ("imgs", "float32", [1, 6, 3, 4, 8], None), ("mlp_input", "float32", [1, 6, 27], None),
    ("ranks_depth", "int32", ["ranks_depth_shape_0"], [50]), ("ranks_feat", "int32", ["ranks_feat_shape_0"], [50]),
    ("ranks_bev", "int32", ["ranks_bev_shape_0"], [50]),
    ("interval_starts", "int32", ["interval_starts_shape_0"], [20]),
    ("interval_lengths", "int32", ["interval_lengths_shape_0"], [20]),
    ("ref_2d", "float32", [1, 16, 1, 2], None), ("bev_query_depth", "float32", [6, 1, 16, 4, 1], None),
    ("reference_points_cam", "float32", [6, 1, 16, 4, 2], None), ("per_cam_mask_list", "bool", [6, 1, 16, 4], None),
    ("indexes", "int64", [1, 6, "indexes_shape_0"], [1, 6, 7]),
    ("queries_rebatch", "float32", [1, 6, "queries_rebatch_shape_0", 80], [1, 6, 7, 80]),
    ("reference_points_rebatch", "float32", [1, 6, "reference_points_rebatch_shape_0", 4, 2], [1, 6, 7, 4, 2]),
    ("bev_query_depth_rebatch", "float32", [1, 6, "bev_query_depth_rebatch_shape_0", 4, 1], [1, 6, 7, 4, 1]),
    ("start_of_sequence", "bool", [1], None), ("grid", "float32", [1, 4, 4, 2, 3], None),
    ("history_bev", "float32", [1, 80 * T, 2, 4, 4], None), ("history_seq_ids", "int32", [1], None),
    ("history_sweep_time", "int32", [1, T], None),
]
OUTPUTS = [("pred_occupancy", "float32", [1, 19, 8, 8, 4]), ("output_history_bev", "float32", ["d0", "d1", 2, 4, 4]),
           ("output_history_seq_ids", "int32", [1]), ("output_history_sweep_time", "int32", [1, T])]
ONNX_TYPES = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
              "bool": TensorProto.BOOL}


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    """A graph with upstream's inputs/outputs (its body is irrelevant to the manifest)."""
    inputs = [helper.make_tensor_value_info(n, ONNX_TYPES[d], s) for n, d, s, _ in INPUTS]
    outputs = [helper.make_tensor_value_info(n, ONNX_TYPES[d], s) for n, d, s in OUTPUTS]
    nodes = [helper.make_node("Identity", [src], [dst]) for src, dst in (
        ("history_bev", "output_history_bev"), ("history_seq_ids", "output_history_seq_ids"),
        ("history_sweep_time", "output_history_sweep_time"))]
    nodes.append(helper.make_node("ConstantOfShape", ["occ_shape"], ["pred_occupancy"],
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])))
    init = helper.make_tensor("occ_shape", TensorProto.INT64, [5], [1, 19, 8, 8, 4])
    model = helper.make_model(helper.make_graph(nodes, "fbocc_trt", inputs, outputs, [init]))
    path = tmp_path / "fbocc-r50-cbgs_depth_16f_16x4_20e_trt.onnx"
    onnx.save(model, str(path))
    return path


def write_frame(folder: Path, rng: np.random.Generator, *, history_bev: bool, start: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, dtype, shape, concrete in INPUTS:
        if name == "history_bev" and not history_bev:
            continue
        dims = concrete or shape
        array = (rng.random(dims) > 0.5) if dtype == "bool" else (rng.random(dims) * 100).astype(dtype)
        if name == "start_of_sequence":
            array = np.array([start])
        array.tofile(folder / f"{name}.dat")  # as pth2onnx.py / preprocess_samples.py write them
        arrays[name] = array
        if name in ("ranks_bev", "interval_starts", "indexes"):
            np.save(folder / f"{name}.npy", array)
    return arrays


def test_pth2onnx_data_dir_becomes_a_one_frame_samples_set(graph: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "trt_inputs"
    arrays = write_frame(data_dir, np.random.default_rng(0), history_bev=True)
    result = samples_from_fbbev_folder(data_dir, graph, tmp_path / "samples")
    manifest = load_manifest(tmp_path / "samples", verify_hashes=True)
    assert result.layout == "pth2onnx" and result.frames == 1 and not result.references
    assert [t["name"] for t in manifest["inputs"]] == [n for n, *_ in INPUTS]
    frame = manifest["frames"][0]
    assert frame["inputs"]["indexes"]["shape"] == [1, 6, 7] and frame["inputs"]["indexes"]["dtype"] == "int64"
    assert frame["inputs"]["ranks_bev"]["shape"] == [50]
    for name, array in arrays.items():
        assert np.array_equal(read_tensor(tmp_path / "samples", frame["inputs"][name]), array), name
    assert manifest["profile"]["ranks_bev"] == {"min": [37], "opt": [50], "max": [63]}
    assert manifest["profile"]["queries_rebatch"]["opt"] == [1, 6, 7, 80]
    assert {"input": "history_bev", "output": "output_history_bev"} in manifest["history"]
    assert any(line.startswith("bev_query_depth: loaded") for line in result.supplied)


def test_preprocess_samples_frames_get_zero_history_and_references(graph: Path, tmp_path: Path) -> None:
    save_dir = tmp_path / "preproc_data"
    rng = np.random.default_rng(1)
    for k in (0, 1, 2, 10):  # numeric order, not lexical: 0, 1, 2, 10
        write_frame(save_dir / str(k), rng, history_bev=False)
    np.ones([1, 19, 8, 8, 4], np.float32).tofile(save_dir / "10" / "pred_occupancy.dat")
    np.zeros([1, 80 * T, 2, 4, 4], np.float32).tofile(save_dir / "10" / "output_history_bev.dat")
    result = samples_from_fbbev_folder(save_dir, graph, tmp_path / "samples")
    manifest = load_manifest(tmp_path / "samples", verify_hashes=True)
    assert result.layout == "preprocess_samples" and result.frames == 4 and result.references
    assert [f["source_dir"] for f in manifest["frames"]] == ["0", "1", "2", "10"]
    zeros = manifest["frames"][0]["inputs"]["history_bev"]
    assert zeros["shape"] == [1, 160, 2, 4, 4]
    assert not read_tensor(tmp_path / "samples", zeros).any()
    assert manifest["frames"][3]["outputs"]["pred_occupancy"]["shape"] == [1, 19, 8, 8, 4]
    # an output the graph leaves open takes its history input's shape
    assert manifest["frames"][3]["outputs"]["output_history_bev"]["shape"] == [1, 160, 2, 4, 4]
    assert any("start_of_sequence = 1" in note for note in result.notes)


def test_a_missing_input_is_named_and_nothing_is_written(graph: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "trt_inputs"
    write_frame(data_dir, np.random.default_rng(2), history_bev=True)
    (data_dir / "bev_query_depth.dat").unlink()
    with pytest.raises(ValidationError, match=r"lacks graph inputs: .*trt_inputs: bev_query_depth"):
        samples_from_fbbev_folder(data_dir, graph, tmp_path / "samples")
    assert not (tmp_path / "samples").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".samples")] == []


def test_a_file_of_the_wrong_size_names_the_file(graph: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "trt_inputs"
    write_frame(data_dir, np.random.default_rng(3), history_bev=True)
    np.zeros(5, np.float32).tofile(data_dir / "mlp_input.dat")
    with pytest.raises(ValidationError, match=r"mlp_input.dat: 20 bytes, but mlp_input is float32"):
        samples_from_fbbev_folder(data_dir, graph, tmp_path / "samples")


def test_cli_writes_the_samples_and_names_a_missing_input(graph: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fbocc.cli import run

    data_dir = tmp_path / "trt_inputs"
    write_frame(data_dir, np.random.default_rng(4), history_bev=True)
    assert run(["samples", "--from-fbbev", str(data_dir), "--onnx", str(graph), "--out", str(tmp_path / "s"),
                "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["frames"] == 1 and doc["layout"] == "pth2onnx"
    (data_dir / "grid.dat").unlink()
    assert run(["samples", "--from-fbbev", str(data_dir), "--onnx", str(graph), "--out", str(tmp_path / "s")]) == 7
    assert "lacks graph inputs" in capsys.readouterr().err and (tmp_path / "s" / "manifest.json").is_file()
