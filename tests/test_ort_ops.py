"""The numpy versions of our three ops (deploy/ort_ops.py) agree with the PyTorch references in
fbocc.ops, directly and when ONNX Runtime runs them as custom ops inside a graph."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime_extensions")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from deploy import ort_ops  # noqa: E402
from fbocc import ops  # noqa: E402

RNG = np.random.default_rng(1234)


def _grid_case(n=2, c=3, d=4, h=5, w=6, out=(3, 4, 5), spread=1.3):
    inp = RNG.standard_normal((n, c, d, h, w)).astype(np.float32)
    grid = (RNG.uniform(-spread, spread, (n, 3, *out)) * 10).astype(np.float32)
    return inp, grid


@pytest.mark.parametrize("interpolation_mode", [0, 1])
@pytest.mark.parametrize("padding_mode", [0, 1, 2])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sampler3d_matches_reference(interpolation_mode: int, padding_mode: int, align_corners: int) -> None:
    inp, grid = _grid_case()
    want = ops.grid_sampler3d(torch.from_numpy(inp), torch.from_numpy(grid), interpolation_mode, padding_mode,
                              align_corners).numpy()
    got = ort_ops.grid_sampler3d(inp, grid, interpolation_mode, padding_mode, align_corners)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _bev_case(batch=1, cams=2, depth_bins=4, h=3, w=5, channels=6, out_hw=(4, 5), out_depth=3, points=150):
    depth = RNG.random((batch, cams, depth_bins, h, w)).astype(np.float32)
    feat = RNG.standard_normal((batch, cams, h, w, channels)).astype(np.float32)
    cells = batch * out_depth * out_hw[0] * out_hw[1]
    ranks_bev = np.sort(RNG.integers(0, cells, points)).astype(np.int32)
    ranks_depth = RNG.integers(0, depth.size, points).astype(np.int32)
    ranks_feat = RNG.integers(0, batch * cams * h * w, points).astype(np.int32)
    change = np.flatnonzero(np.diff(ranks_bev)) + 1
    starts = np.concatenate([[0], change]).astype(np.int32)
    lengths = np.diff(np.concatenate([starts, [points]])).astype(np.int32)
    # a second interval on the first interval's cell (must add up) and an empty interval
    starts = np.concatenate([starts, [starts[0], 7]]).astype(np.int32)
    lengths = np.concatenate([lengths, [lengths[0], 0]]).astype(np.int32)
    return depth, feat, ranks_depth, ranks_feat, ranks_bev, starts, lengths, out_hw, out_depth


def test_bev_pool_v2_matches_reference_including_repeated_cells() -> None:
    depth, feat, rd, rf, rb, starts, lengths, (oh, ow), od = _bev_case()
    want = ops.bev_pool_v2(*(torch.from_numpy(a) for a in (depth, feat, rd, rf, rb, starts, lengths)),
                           oh, ow, od).numpy()
    got = ort_ops.bev_pool_v2(depth, feat, rd, rf, rb, starts, lengths, oh, ow, od)
    assert got.shape == (1, od, oh, ow, feat.shape[-1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _msda_case(n=2, heads=4, dim=5, shapes=((6, 8), (3, 4)), queries=7, points=3):
    sizes = [h * w for h, w in shapes]
    value = RNG.standard_normal((n, sum(sizes), heads, dim)).astype(np.float32)
    spatial = np.array(shapes, dtype=np.int32)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    loc = RNG.uniform(-0.1, 1.1, (n, queries, heads, len(shapes), points, 2)).astype(np.float32)
    attn = RNG.random((n, queries, heads, len(shapes), points)).astype(np.float32)
    return value, spatial, start, loc, attn


def test_multi_scale_deformable_attn_matches_reference() -> None:
    args = _msda_case()
    want = ops.multi_scale_deformable_attn(*(torch.from_numpy(a) for a in args)).numpy()
    got = ort_ops.multi_scale_deformable_attn(*args)
    assert got.shape == want.shape == (2, 7, 20)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    prepared, count = ort_ops.prepare_model(model)
    assert count == sum(n.op_type in ort_ops.OP_TYPES for n in model.graph.node)
    options = ort.SessionOptions()
    options.register_custom_ops_library(ort_ops.register())
    return ort.InferenceSession(prepared.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _vi(name: str, elem: int, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def test_onnxruntime_runs_all_three_ops_from_domain_empty_nodes() -> None:
    """A graph as `fbocc export` writes it (custom nodes in domain "", int64 ranks as TensorRT 10 takes,
    no out_depth attribute) runs in ONNX Runtime after prepare_model and gives the references' answers."""
    inp, grid = _grid_case()
    depth, feat, rd, rf, rb, starts, lengths, (oh, ow), _ = _bev_case(out_depth=8)
    value, spatial, lsi, loc, attn = _msda_case()
    nodes = [
        helper.make_node("GridSampler3DTRT", ["inp", "grid"], ["gs"], interpolation_mode=0, padding_mode=1,
                         align_corners=0),
        helper.make_node("BEVPoolV2TRT", ["depth", "feat", "rd", "rf", "rb", "starts", "lengths"], ["bev"],
                         out_height=oh, out_width=ow),
        helper.make_node("MultiScaleDeformableAttnTRT", ["value", "spatial", "lsi", "loc", "attn"], ["msda"]),
    ]
    feeds = {"inp": inp, "grid": grid, "depth": depth, "feat": feat, "rd": rd.astype(np.int64),
             "rf": rf.astype(np.int64), "rb": rb.astype(np.int64), "starts": starts.astype(np.int64),
             "lengths": lengths.astype(np.int64), "value": value, "spatial": spatial, "lsi": lsi, "loc": loc,
             "attn": attn}
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
            np.dtype(np.int64): TensorProto.INT64}
    graph = helper.make_graph(
        nodes, "three_ops", [_vi(k, elem[v.dtype], v.shape) for k, v in feeds.items()],
        [_vi("gs", TensorProto.FLOAT, (2, 3, 3, 4, 5)), _vi("bev", TensorProto.FLOAT, (1, 8, oh, ow, 6)),
         _vi("msda", TensorProto.FLOAT, (2, 7, 20))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert all(n.domain == "" for n in model.graph.node)
    gs, bev, msda = _session(model).run(None, feeds)
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    np.testing.assert_allclose(gs, ops.grid_sampler3d(t["inp"], t["grid"], 0, 1, 0).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bev, ops.bev_pool_v2(t["depth"], t["feat"], t["rd"], t["rf"], t["rb"], t["starts"],
                                                    t["lengths"], oh, ow, 8).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(msda, ops.multi_scale_deformable_attn(t["value"], t["spatial"], t["lsi"], t["loc"],
                                                                     t["attn"]).numpy(), rtol=1e-5, atol=1e-5)


def test_float16_features_are_computed_in_float32_and_returned_as_float16() -> None:
    inp, grid = _grid_case()
    graph = helper.make_graph(
        [helper.make_node("GridSampler3DTRT", ["inp", "grid"], ["gs"])], "half",
        [_vi("inp", TensorProto.FLOAT16, inp.shape), _vi("grid", TensorProto.FLOAT, grid.shape)],
        [_vi("gs", TensorProto.FLOAT16, (2, 3, 3, 4, 5))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (gs,) = _session(model).run(None, {"inp": inp.astype(np.float16), "grid": grid})
    assert gs.dtype == np.float16
    want = ops.grid_sampler3d(torch.from_numpy(inp.astype(np.float16)), torch.from_numpy(grid)).numpy()
    np.testing.assert_allclose(gs.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_a_typed_fp16_chain_through_two_plugin_nodes_runs_without_value_info() -> None:
    """A typed graph without recorded intermediate types (as AutoCast or a hand edit leaves it): the second
    plugin node's fp16 input is only known through the first plugin's output type, which follows its input."""
    inp, grid = _grid_case()
    nodes = [helper.make_node("Cast", ["inp"], ["half"], to=TensorProto.FLOAT16),
             helper.make_node("GridSampler3DTRT", ["half", "grid"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("GridSampler3DTRT", ["r", "grid"], ["b"]),
             helper.make_node("Cast", ["b"], ["out"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "chain", [_vi("inp", TensorProto.FLOAT, inp.shape),
                                               _vi("grid", TensorProto.FLOAT, grid.shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (out,) = _session(model).run(None, {"inp": inp, "grid": grid})
    t_inp, t_grid = torch.from_numpy(inp), torch.from_numpy(grid)
    want = ops.grid_sampler3d(ops.grid_sampler3d(t_inp, t_grid).clamp(min=0), t_grid).numpy()
    np.testing.assert_allclose(out, want, rtol=5e-3, atol=5e-3)


def test_prepare_model_leaves_the_original_graph_untouched() -> None:
    graph = helper.make_graph(
        [helper.make_node("GridSampler3DTRT", ["a", "g"], ["o"])], "g",
        [_vi("a", TensorProto.FLOAT, (1, 1, 2, 2, 2)), _vi("g", TensorProto.FLOAT, (1, 3, 1, 1, 1))],
        [_vi("o", TensorProto.FLOAT, (1, 1, 1, 1, 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    prepared, count = ort_ops.prepare_model(model)
    assert count == 1
    assert model.graph.node[0].domain == ""
    assert prepared.graph.node[0].domain == ort_ops.CUSTOM_DOMAIN
    assert any(o.domain == ort_ops.CUSTOM_DOMAIN for o in prepared.opset_import)
