"""FB-BEV's own deployment graph writes MSDA as TensorRT's plugin `trt::MultiscaleDeformableAttnPlugin_TRT`
(libnvinfer_plugin) with int64 spatial shapes: check-onnx accepts the node as that plugin's contract, and
ONNX Runtime runs it (our numpy MSDA, output [N,Lq,M,D]) with the reference's answer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime_extensions")

import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from fbocc import ops  # noqa: E402
from fbocc.export.onnx_graph import CheckReport, check_custom_nodes, run_onnx_checker, skeleton  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(21)


def _ort_ops():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("deploy_ort_ops_h21", REPO / "deploy" / "ort_ops.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _graph(shapes=((6, 8), (3, 4)), n=1, heads=4, dim=5, queries=7, points=3):  # type: ignore[no-untyped-def]
    sizes = [h * w for h, w in shapes]
    feeds = {
        "value": RNG.standard_normal((n, sum(sizes), heads, dim)).astype(np.float32),
        "spatial": np.array(shapes, dtype=np.int64),
        "lsi": np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        "loc": RNG.uniform(-0.1, 1.1, (n, queries, heads, len(shapes), points, 2)).astype(np.float32),
        "attn": RNG.random((n, queries, heads, len(shapes), points)).astype(np.float32),
    }
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
    node = helper.make_node("MultiscaleDeformableAttnPlugin_TRT", list(feeds), ["out"], domain="trt")
    graph = helper.make_graph([node], "msda", [helper.make_tensor_value_info(k, elem[v.dtype], list(v.shape))
                                               for k, v in feeds.items()],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [n, queries, heads, dim])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16), helper.make_opsetid("trt", 1)])
    return model, feeds


def test_check_onnx_accepts_tensorrts_msda_plugin_node() -> None:
    model, _ = _graph()
    report = CheckReport(onnx_path=Path("x.onnx"))
    check_custom_nodes(model, report)
    run_onnx_checker(skeleton(model), report)
    assert report.problems == []


def test_check_onnx_names_a_wrong_rank_on_that_node() -> None:
    model, _ = _graph()
    model.graph.input[3].type.tensor_type.shape.dim.pop()  # sampling_locations rank 5 instead of 6
    report = CheckReport(onnx_path=Path("x.onnx"))
    check_custom_nodes(model, report)
    assert any("MultiscaleDeformableAttnPlugin_TRT input sampling_locations" in p and "rank 5" in p
               for p in report.problems)


def test_onnxruntime_runs_it_with_the_references_answer() -> None:
    ort_ops = _ort_ops()
    model, feeds = _graph()
    prepared, count = ort_ops.prepare_model(model)
    assert count == 1
    options = ort.SessionOptions()
    options.register_custom_ops_library(ort_ops.register())
    session = ort.InferenceSession(prepared.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, feeds)
    want = ops.multi_scale_deformable_attn(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    assert got.shape == (1, 7, 4, 5)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)
