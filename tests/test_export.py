"""`fbocc export --preset fbocc-r50-16f --random-weights`: the full-size model, exported on the CPU.

One export (two consecutive synthetic frames) is shared by every test of this module; it takes a few
minutes on two cores and about 4 GB of memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from fbocc.cli import run
from fbocc.export.onnx_graph import check_onnx
from fbocc.export.samples import load_manifest, read_tensor
from fbocc.model.network import HISTORY_PAIRS, INPUT_NAMES, OUTPUT_NAMES
from fbocc.ops.contract import CUSTOM_OPS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("export") / "fbocc"
    code = run(["export", "--preset", "fbocc-r50-16f", "--random-weights", "--seed", "7", "--samples", "2",
                "--out", str(out)])
    assert code == 0
    onnx_files = list(out.glob("*.onnx"))
    assert len(onnx_files) == 1
    return {"out": out, "onnx": onnx_files[0], "samples": out / "samples"}


def test_export_writes_only_the_final_directory(exported: dict[str, Any]) -> None:
    out: Path = exported["out"]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no .partial/.old left behind
    assert sorted(p.name for p in out.iterdir()) == sorted([exported["onnx"].name, "samples"])


def test_graph_uses_exactly_the_three_plugin_ops_and_passes_check_onnx(exported: dict[str, Any]) -> None:
    report = check_onnx(exported["onnx"], exported["samples"])
    assert report.problems == []
    assert set(report.custom_ops) == set(CUSTOM_OPS)
    assert all(n >= 1 for n in report.custom_ops.values()), report.custom_ops
    model = onnx.load(str(exported["onnx"]), load_external_data=False)
    nonstandard = {n.op_type for n in model.graph.node if not onnx.defs.has(n.op_type)}
    assert nonstandard == set(CUSTOM_OPS)
    assert {n.domain for n in model.graph.node if n.op_type in CUSTOM_OPS} == {""}
    assert run(["check-onnx", str(exported["onnx"]), "--samples", str(exported["samples"])]) == 0


def test_graph_inputs_and_outputs_are_the_models_in_order_and_all_used(exported: dict[str, Any]) -> None:
    model = onnx.load(str(exported["onnx"]), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in inits]
    assert inputs == list(INPUT_NAMES)
    assert [v.name for v in model.graph.output] == list(OUTPUT_NAMES)
    consumed = {name for node in model.graph.node for name in node.input}
    assert [n for n in inputs if n not in consumed] == []
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert dims["ranks_bev"] == ["ranks_bev_shape_0"]
    assert dims["indexes"] == [1, 6, "indexes_shape_0"]
    assert dims["history_bev"] == [1, 1280, 8, 100, 100]
    attrs = {n.op_type: {a.name: a.i for a in n.attribute} for n in model.graph.node if n.op_type in CUSTOM_OPS}
    assert attrs["BEVPoolV2TRT"] == {"out_height": 100, "out_width": 100, "out_depth": 8}
    assert attrs["GridSampler3DTRT"] == {"interpolation_mode": 0, "padding_mode": 0, "align_corners": 1}


def test_manifest_describes_frames_history_profile_and_provenance(exported: dict[str, Any]) -> None:
    manifest = load_manifest(exported["samples"], verify_hashes=True)
    assert [t["name"] for t in manifest["inputs"]] == list(INPUT_NAMES)
    assert [t["name"] for t in manifest["outputs"]] == list(OUTPUT_NAMES)
    assert [(h["input"], h["output"]) for h in manifest["history"]] == list(HISTORY_PAIRS)
    assert manifest["source"] == "synthetic" and "synthetic" in manifest["source_note"]
    assert manifest["export"]["index_dtype"] == "int32" and manifest["export"]["opset"] == 16
    assert manifest["model"]["weights"] == {"kind": "random", "seed": 7}
    frames = manifest["frames"]
    assert [f["id"] for f in frames] == ["000", "001"]
    for name, prof in manifest["profile"].items():
        shapes = [f["inputs"][name]["shape"] for f in frames]
        for shape in shapes:
            assert all(lo <= s <= hi for lo, s, hi in zip(prof["min"], shape, prof["max"], strict=True)), name
        assert prof["opt"] in shapes
    pred = read_tensor(exported["samples"], frames[0]["outputs"]["pred_occupancy"])
    assert pred.shape == (1, 19, 200, 200, 16) and np.isfinite(pred).all() and pred.std() > 0


def test_history_outputs_of_one_frame_are_the_next_frames_inputs(exported: dict[str, Any]) -> None:
    samples = exported["samples"]
    manifest = json.loads((samples / "manifest.json").read_text())
    first, second = manifest["frames"]
    for inp, outp in HISTORY_PAIRS:  # byte-identical files (load_manifest checked every sha256 above)
        assert first["outputs"][outp]["sha256"] == second["inputs"][inp]["sha256"], inp
    assert read_tensor(samples, first["inputs"]["start_of_sequence"]).tolist() == [True]
    assert read_tensor(samples, second["inputs"]["start_of_sequence"]).tolist() == [False]
    # the newest stored frame has age 0; the network ages every stored frame by one step per call
    assert read_tensor(samples, first["outputs"]["output_history_sweep_time"]).tolist() == [[0] * 16]
    assert read_tensor(samples, second["outputs"]["output_history_sweep_time"]).tolist() == [[0] + [1] * 15]


def test_export_refuses_bad_options_with_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x"
    assert run(["export", "--out", str(out)]) == 2
    assert "--checkpoint PTH or --random-weights" in capsys.readouterr().err
    assert run(["export", "--random-weights", "--preset", "nope", "--out", str(out)]) == 2
    assert run(["export", "--random-weights", "--index-dtype", "int16", "--out", str(out)]) == 2
    assert run(["export", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out)]) == 2
    assert "missing.pth does not exist" in capsys.readouterr().err
    assert run(["export", "--random-weights", "--dataroot", str(tmp_path), "--out", str(out)]) == 2
    assert "has no info file (bevdetv2-nuscenes_infos_val.pkl" in capsys.readouterr().err  # read before the model
    fbbev_config = tmp_path / "fbocc-r50-cbgs_depth_16f_16x4_20e_trt.py"
    fbbev_config.write_text("model = dict(history_cat_num=16)\n")
    code = run(["export", "--random-weights", "--config", str(fbbev_config), "--out", str(out)])
    try:
        import mmengine  # noqa: F401
    except ImportError:
        assert code == 2
        assert "needs mmengine" in capsys.readouterr().err
    else:  # the parsed config lacks the backbone: refused as a different model
        assert code == 2
    assert not out.exists()
